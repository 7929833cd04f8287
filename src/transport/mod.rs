//! Transports: where a built notice goes, and what the answer means.
//!
//! - SMTP through a small pool of lettre connections over sockets the pool opens itself with
//!   `TCP_NODELAY` ([`pool`]): STARTTLS required by default, implicit TLS, or plain for a loopback
//!   relay, with an optional private CA ([`tls`]); optional AUTH; one recipient per envelope; the
//!   transaction pipelined when the relay offers it ([`pipelining`]).
//! - A file outbox ([`outbox`]): one `.eml` per notice, written atomically, so that a new user runs
//!   everything with no server. A full or read-only disk is a temporary failure: the recipient stays
//!   pending, never lost.
//!
//! This file owns [`Transport`] and the classification of every answer into a [`SendResult`]: 2xx
//! sent, 4xx and connection failures transient, 5xx permanent, and a timeout (which may strike after
//! the relay took the message) ambiguous. The relay's reply text (with its queue id) is kept as
//! evidence.
//!
//! **Layer: transport.** Owns the way out: SMTP and the outbox, and what each answer means. Uses the
//! built message (campaigns) and the store's outcome type; used by the dispatcher, `test-send` and
//! `/readyz`.

mod outbox;
mod pipelining;
mod pool;
mod tls;

use std::path::PathBuf;
use std::sync::Arc;

use lettre::transport::smtp::response::Response;

pub use pool::SmtpPool;

use crate::campaign::message::Outgoing;
use crate::config::{TransportKind, TransportSettings};
use crate::store::AttemptOutcome;

/// What the transport said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResult {
    pub outcome: AttemptOutcome,
    /// The SMTP reply code, when there was a reply.
    pub code: Option<i32>,
    /// The reply text, or the error.
    pub reply: String,
}

impl SendResult {
    fn sent(code: i32, reply: String) -> Self {
        SendResult {
            outcome: AttemptOutcome::Sent,
            code: Some(code),
            reply,
        }
    }

    /// A failure with no SMTP reply: nothing was sent, so it is retried.
    fn transient(reply: String) -> Self {
        SendResult {
            outcome: AttemptOutcome::Transient,
            code: None,
            reply,
        }
    }
}

/// Why a send through the pool failed.
#[derive(Debug, thiserror::Error)]
pub enum SmtpFailure {
    /// The relay answered, or the connection failed, as lettre reports it.
    #[error(transparent)]
    Smtp(#[from] lettre::transport::smtp::Error),
    /// The TCP connection to the relay could not be made.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake of an implicit-TLS connection failed (certificate, protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// No answer within the timeout: the relay may or may not have the message.
    #[error("no answer within the timeout")]
    TimedOut,
}

/// A configured transport. Cheap to clone.
#[derive(Clone)]
pub enum Transport {
    Smtp(Arc<SmtpPool>),
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
            TransportKind::Smtp => Ok(Transport::Smtp(Arc::new(SmtpPool::new(&settings.smtp)?))),
        }
    }

    /// Checks the transport can work: the relay answers, or the outbox is a writable directory.
    pub async fn check(&self) -> anyhow::Result<()> {
        match self {
            Transport::Smtp(pool) => pool.check().await.map_err(|e| {
                let text = e.to_string();
                // The two TLS refusals an operator meets when setting up a relay, with the fix.
                let hint = if text.contains("certificate") {
                    " (a relay whose certificate comes from a private CA needs transport.smtp.ca_file = \"CA.pem\")"
                } else if text.contains("STARTTLS") {
                    " (TLS is required: use transport.smtp.tls = \"implicit\" for a relay that speaks TLS from the start, e.g. port 465)"
                } else {
                    ""
                };
                let (host, port) = pool.relay();
                anyhow::anyhow!("the SMTP relay {host}:{port} cannot be used: {text}{hint}")
            }),
            Transport::File(dir) => outbox::check(dir).await,
        }
    }

    /// Hands one message over and classifies the answer. Never panics, never returns an error: every
    /// failure is an outcome to record.
    pub async fn send(&self, out: &Outgoing, file_name: &str) -> SendResult {
        match self {
            Transport::Smtp(pool) => classify(pool.send(&out.envelope, &out.bytes).await),
            Transport::File(dir) => match outbox::write(dir, file_name, &out.bytes).await {
                Ok(path) => SendResult::sent(250, format!("written to {}", path.display())),
                Err(e) => SendResult::transient(format!("outbox {}: {e}", dir.display())),
            },
        }
    }
}

/// What an SMTP send's answer means.
fn classify(answer: Result<Response, SmtpFailure>) -> SendResult {
    match answer {
        Ok(response) => {
            let code = response.code().to_string().parse().unwrap_or(250);
            SendResult::sent(code, response.message().collect::<Vec<_>>().join(" "))
        }
        Err(SmtpFailure::Smtp(e)) => classify_error(&e),
        Err(SmtpFailure::Connect(e)) => {
            SendResult::transient(format!("cannot connect to the relay: {e}"))
        }
        // Nothing was sent: a certificate problem is fixed by an operator, then retried.
        Err(SmtpFailure::Tls(e)) => {
            SendResult::transient(format!("TLS handshake with the relay failed: {e}"))
        }
        Err(SmtpFailure::TimedOut) => SendResult {
            outcome: AttemptOutcome::Ambiguous,
            code: None,
            reply: "no answer from the relay within the timeout".into(),
        },
    }
}

/// A refusal or failure as lettre reports it: 5xx permanent, 4xx transient, a timeout ambiguous, and
/// anything else (a connection that failed) transient.
fn classify_error(e: &lettre::transport::smtp::Error) -> SendResult {
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
    SendResult {
        outcome,
        code,
        reply: e.to_string(),
    }
}
