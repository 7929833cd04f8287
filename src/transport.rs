//! Transports: where a built notice goes, and what the answer means.
//!
//! - SMTP through lettre's pooled async transport: STARTTLS required by default, implicit TLS, or plain
//!   for a loopback relay; optional private CA and AUTH; one recipient per envelope.
//! - A file outbox: one `.eml` per notice, written atomically (temporary file, fsync, rename), so that a
//!   new user runs everything with no server. A full or read-only disk is a temporary failure: the
//!   recipient stays pending, never lost.
//!
//! Every answer is classified into an [`AttemptOutcome`]: 2xx sent, 4xx and connection failures
//! transient, 5xx permanent, and a timeout (which may strike after the relay took the message)
//! ambiguous. The relay's reply text (with its queue id) is kept as evidence.

use std::path::PathBuf;
use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;

use crate::config::{SmtpTls, TransportKind, TransportSettings};
use crate::message::Outgoing;
use crate::store::AttemptOutcome;

/// What the transport said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub outcome: AttemptOutcome,
    /// The SMTP reply code, when there was a reply.
    pub code: Option<i32>,
    /// The reply text, or the error.
    pub reply: String,
}

impl Delivery {
    fn sent(code: i32, reply: String) -> Self {
        Delivery {
            outcome: AttemptOutcome::Sent,
            code: Some(code),
            reply,
        }
    }
}

/// A configured transport. Cheap to clone.
#[derive(Clone)]
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(PathBuf),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Smtp(_) => f.write_str("Transport::Smtp"),
            Transport::File(dir) => write!(f, "Transport::File({})", dir.display()),
        }
    }
}

impl Transport {
    /// Builds the transport the configuration describes (no connection is made yet).
    pub fn from_settings(settings: &TransportSettings) -> anyhow::Result<Self> {
        match settings.kind {
            TransportKind::File => Ok(Transport::File(settings.file.dir.clone())),
            TransportKind::Smtp => {
                let s = &settings.smtp;
                let tls_parameters = || -> anyhow::Result<TlsParameters> {
                    let mut builder = TlsParameters::builder(s.host.clone());
                    if let Some(ca) = &s.ca_file {
                        let pem = std::fs::read(ca).map_err(|e| {
                            anyhow::anyhow!(
                                "transport.smtp.ca_file {}: cannot read it ({e})",
                                ca.display()
                            )
                        })?;
                        let cert = Certificate::from_pem(&pem).map_err(|e| {
                            anyhow::anyhow!(
                                "transport.smtp.ca_file {}: not a PEM certificate ({e})",
                                ca.display()
                            )
                        })?;
                        builder = builder.add_root_certificate(cert);
                    }
                    builder
                        .build_rustls()
                        .map_err(|e| anyhow::anyhow!("TLS set-up for {}: {e}", s.host))
                };
                let tls = match s.tls {
                    SmtpTls::Starttls => Tls::Required(tls_parameters()?),
                    SmtpTls::Implicit => Tls::Wrapper(tls_parameters()?),
                    SmtpTls::None => Tls::None,
                };
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
                        .port(s.port)
                        .tls(tls)
                        .timeout(Some(Duration::from_secs(s.timeout_secs)))
                        .pool_config(
                            PoolConfig::new()
                                .max_size(s.pool_size)
                                .idle_timeout(Duration::from_secs(60)),
                        );
                if let (Some(user), Some(password)) = (&s.username, &s.password) {
                    builder = builder.credentials(Credentials::new(
                        user.clone(),
                        password.expose_secret().to_string(),
                    ));
                }
                Ok(Transport::Smtp(builder.build()))
            }
        }
    }

    /// Checks the transport can work: the relay answers, or the outbox is a writable directory.
    pub async fn check(&self) -> anyhow::Result<()> {
        match self {
            Transport::Smtp(t) => match t.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => anyhow::bail!("the SMTP relay did not accept a connection test"),
                Err(e) => anyhow::bail!("the SMTP relay cannot be reached: {e}"),
            },
            Transport::File(dir) => {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    anyhow::anyhow!("the outbox {} cannot be created ({e})", dir.display())
                })?;
                let probe = dir.join(".breach-notifier-write-test");
                tokio::fs::write(&probe, b"ok").await.map_err(|e| {
                    anyhow::anyhow!("the outbox {} is not writable ({e})", dir.display())
                })?;
                let _ = tokio::fs::remove_file(&probe).await;
                Ok(())
            }
        }
    }

    /// Hands one message over and classifies the answer. Never panics, never returns an error: every
    /// failure is an outcome to record.
    pub async fn send(&self, out: &Outgoing, file_name: &str) -> Delivery {
        match self {
            Transport::Smtp(t) => match t.send_raw(&out.envelope, &out.bytes).await {
                Ok(response) => {
                    let code = response.code().to_string().parse().unwrap_or(250);
                    Delivery::sent(code, response.message().collect::<Vec<_>>().join(" "))
                }
                Err(e) => classify(&e),
            },
            Transport::File(dir) => match write_eml(dir, file_name, &out.bytes).await {
                Ok(path) => Delivery::sent(250, format!("written to {}", path.display())),
                Err(e) => Delivery {
                    outcome: AttemptOutcome::Transient,
                    code: None,
                    reply: format!("outbox {}: {e}", dir.display()),
                },
            },
        }
    }
}

fn classify(e: &lettre::transport::smtp::Error) -> Delivery {
    let code = e.status().and_then(|c| c.to_string().parse::<i32>().ok());
    let outcome = if e.is_permanent() {
        AttemptOutcome::Permanent
    } else if e.is_transient() {
        AttemptOutcome::Transient
    } else if e.is_timeout() {
        AttemptOutcome::Ambiguous
    } else {
        AttemptOutcome::Transient
    };
    Delivery {
        outcome,
        code,
        reply: e.to_string(),
    }
}

/// Writes `dir/name.eml` so that a reader never sees half a file and a crash never leaves one.
async fn write_eml(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(format!("{name}.eml"));
    let tmp = dir.join(format!(".{name}.eml.tmp"));
    let mut f = tokio::fs::File::create(&tmp).await?;
    f.write_all(bytes).await?;
    f.sync_all().await?;
    drop(f);
    tokio::fs::rename(&tmp, &path).await?;
    Ok(path)
}
