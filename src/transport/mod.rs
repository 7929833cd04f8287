//! Transports: where a built notice goes, and what the answer means.
//!
//! - SMTP through a small pool of lettre `AsyncSmtpConnection`s over sockets the pool opens itself
//!   with `TCP_NODELAY` (see [`SmtpPool`] for why): STARTTLS required by default, implicit TLS (the
//!   handshake done here with tokio-rustls), or plain for a loopback relay; optional private CA and
//!   AUTH; one recipient per envelope.
//! - A file outbox: one `.eml` per notice, written atomically (temporary file, fsync, rename), so that a
//!   new user runs everything with no server. A full or read-only disk is a temporary failure: the
//!   recipient stays pending, never lost.
//!
//! Every answer is classified into an [`AttemptOutcome`]: 2xx sent, 4xx and connection failures
//! transient, 5xx permanent, and a timeout (which may strike after the relay took the message)
//! ambiguous. The relay's reply text (with its queue id) is kept as evidence.
//!
//! **Layer: transport.** Owns the way out: SMTP and the outbox, and what each answer means. Uses the
//! built message (campaigns) and the store's outcome type; used by the dispatcher, `test-send` and
//! `/readyz`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use crate::campaign::message::Outgoing;
use crate::config::{SmtpSettings, SmtpTls, TransportKind, TransportSettings};
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
    Smtp(Arc<SmtpPool>),
    File(PathBuf),
}

/// Why a send through the pool failed.
#[derive(Debug)]
pub enum SmtpFailure {
    /// The relay answered, or the connection failed, as lettre reports it.
    Smtp(lettre::transport::smtp::Error),
    /// The TCP connection to the relay could not be made.
    Connect(std::io::Error),
    /// The TLS handshake of an implicit-TLS connection failed (certificate, protocol).
    Tls(std::io::Error),
    /// No answer within the timeout: the relay may or may not have the message.
    TimedOut,
}

impl From<lettre::transport::smtp::Error> for SmtpFailure {
    fn from(e: lettre::transport::smtp::Error) -> Self {
        SmtpFailure::Smtp(e)
    }
}

impl std::fmt::Display for SmtpFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SmtpFailure::Smtp(e) => write!(f, "{e}"),
            SmtpFailure::Connect(e) => write!(f, "cannot connect: {e}"),
            SmtpFailure::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            SmtpFailure::TimedOut => f.write_str("no answer within the timeout"),
        }
    }
}

/// SMTP connections kept open and reused, at most `pool_size` at once.
///
/// lettre's own pool cannot set `TCP_NODELAY`, and lettre writes the message and the closing
/// `.` as two writes: with Nagle's algorithm on, the second waits for the relay's delayed ACK (40 ms
/// on Linux), which capped a connection at about 25 messages per second. Connecting the socket here
/// lets us turn Nagle off and hand it to lettre's connection, which still does EHLO, STARTTLS, AUTH
/// and the transaction. For implicit TLS the pool also does the TLS handshake itself (tokio-rustls,
/// the same rustls lettre uses), because lettre's own implicit-TLS connect opens a socket we cannot
/// reach: measured with the test relay, 40 notices on one connection took 1.86 s that way against
/// 0.12 s with STARTTLS.
pub struct SmtpPool {
    settings: SmtpSettings,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    slots: Semaphore,
    idle: Mutex<Vec<(Connection, Instant)>>,
}

/// A relay connection and whether the relay offered PIPELINING (RFC 2920) in its EHLO reply.
struct Connection {
    smtp: AsyncSmtpConnection,
    pipelining: bool,
}

/// How the pool's connections are secured, decided once from `transport.smtp.tls`.
enum Security {
    /// Plain SMTP (a loopback relay, or `allow_insecure`).
    Plain,
    /// STARTTLS, required: a relay that does not offer it is an error, never a plain fallback.
    Starttls(TlsParameters),
    /// TLS from the first byte; the handshake is done here (see [`SmtpPool`]).
    Implicit(tokio_rustls::TlsConnector),
}

impl SmtpPool {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.settings.timeout_secs.max(1))
    }

    async fn connect(&self) -> Result<Connection, SmtpFailure> {
        let s = &self.settings;
        // Bounded here for every mode, `check` included (a send is bounded as a whole as well).
        let stream = tokio::time::timeout(
            self.timeout(),
            tokio::net::TcpStream::connect((s.host.as_str(), s.port)),
        )
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
        .map_err(SmtpFailure::Connect)?;
        let _ = stream.set_nodelay(true);
        let mut conn = match &self.security {
            Security::Implicit(connector) => {
                let name = rustls_server_name(&s.host).map_err(SmtpFailure::Tls)?;
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(SmtpFailure::Tls)?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(ImplicitTls(stream)),
                    &self.hello,
                )
                .await?
            }
            Security::Starttls(params) => {
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                        .await?;
                conn.starttls(params.clone(), &self.hello).await?;
                conn
            }
            Security::Plain => {
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        // lettre keeps only the EHLO keywords it uses itself, and PIPELINING is not one of them: ask
        // again (a second EHLO is allowed at any time and changes nothing), once per connection.
        let ehlo = conn.command(Ehlo::new(self.hello.clone())).await?;
        let pipelining = ehlo
            .message()
            .any(|line| line.trim().eq_ignore_ascii_case("PIPELINING"));
        Ok(Connection {
            smtp: conn,
            pipelining,
        })
    }

    /// A connection from the pool (checked with NOOP when it sat idle a while) or a new one.
    async fn checkout(&self) -> Result<Connection, SmtpFailure> {
        loop {
            let candidate = self.idle.lock().expect("pool lock").pop();
            match candidate {
                None => return self.connect().await,
                Some((conn, _)) if conn.smtp.has_broken() => continue,
                Some((mut conn, since)) => {
                    if since.elapsed() < Duration::from_secs(5) || conn.smtp.test_connected().await
                    {
                        return Ok(conn);
                    }
                }
            }
        }
    }

    /// Sends one message on a pooled connection.
    pub async fn send(&self, envelope: &Envelope, bytes: &[u8]) -> Result<Response, SmtpFailure> {
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the pool semaphore is never closed");
        let attempt = async {
            let mut conn = self.checkout().await?;
            let result = if conn.pipelining {
                send_pipelined(&mut conn.smtp, envelope, bytes).await
            } else {
                conn.smtp.send(envelope, bytes).await
            };
            if !conn.smtp.has_broken() {
                self.idle
                    .lock()
                    .expect("pool lock")
                    .push((conn, Instant::now()));
            }
            Ok::<_, SmtpFailure>(result?)
        };
        // Connect, greeting, transaction: one bound for all of it.
        match tokio::time::timeout(self.timeout() * 3, attempt).await {
            Ok(result) => result,
            Err(_) => Err(SmtpFailure::TimedOut),
        }
    }

    /// Opens one connection (greeting, EHLO, STARTTLS, AUTH) and closes it.
    pub async fn check(&self) -> Result<(), SmtpFailure> {
        let mut conn = self.connect().await?;
        let _ = conn.smtp.quit().await;
        Ok(())
    }
}

/// The message as it goes after DATA: a `.` that begins a line (after CRLF, or the first byte) gets
/// another, exactly as lettre's codec does, then the closing `CRLF . CRLF`. Written straight into
/// the command buffer (one copy of the message, not two).
struct DotStuffed<'a>(&'a str);

impl std::fmt::Display for DotStuffed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        let text = self.0;
        if text.starts_with('.') {
            f.write_char('.')?;
        }
        let mut from = 0;
        for (at, _) in text.match_indices("\r\n.") {
            f.write_str(&text[from..at + 3])?;
            f.write_char('.')?;
            from = at + 3;
        }
        f.write_str(&text[from..])?;
        f.write_str("\r\n.\r\n")
    }
}

/// One SMTP transaction as lettre's `send` makes it (the same MAIL parameters, the same checks, the
/// same bytes on the wire, the connection closed after any refusal), but pipelined (RFC 2920): MAIL,
/// RCPT and DATA go out in one write and their answers are read together, then the message and its
/// closing dot go out in one write. Two round trips and two writes instead of four and five: on a
/// loopback relay at thousands of messages per second, the writes, reads and task wake-ups were the
/// largest part of the daemon's own CPU (docs/benchmarks.md). Anything this path does not handle
/// (a message that is not UTF-8) goes through lettre's `send`.
async fn send_pipelined(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    bytes: &[u8],
) -> Result<Response, lettre::transport::smtp::Error> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return conn.send(envelope, bytes).await;
    };
    let mut options = Vec::new();
    let non_ascii = envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .any(|a| !AsRef::<str>::as_ref(a).is_ascii());
    if non_ascii {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            // lettre's own refusal, word for word.
            return conn.send(envelope, bytes).await;
        }
        options.push(MailParameter::SmtpUtfEight);
    }
    if !bytes.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            return conn.send(envelope, bytes).await;
        }
        options.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let mut commands = Mail::new(envelope.from().cloned(), options).to_string();
    for to in envelope.to() {
        commands.push_str(&Rcpt::new(to.clone(), vec![]).to_string());
    }
    commands.push_str(&Data.to_string());

    // One answer per command, in order; all of them are read (they are on their way whatever
    // happened), and the first refusal is the transaction's answer.
    let mut refusal = None;
    let mut data_accepted = false;
    let answers = 2 + envelope.to().len();
    for i in 0..answers {
        let answer = if i == 0 {
            conn.command(&commands).await
        } else {
            conn.read_response().await
        };
        match answer {
            Ok(_) if i + 1 == answers => data_accepted = true,
            Ok(_) => {}
            Err(e) => {
                let broken = e.is_transient() || e.is_permanent();
                refusal.get_or_insert(e);
                if !broken {
                    // The connection failed (not a refusal): no more answers will come.
                    break;
                }
            }
        }
    }
    if let Some(e) = refusal {
        if data_accepted {
            // A relay that took DATA after refusing the sender or every recipient: end the empty
            // message so that the connection can be closed cleanly.
            let _ = conn.message(b"").await;
        }
        conn.abort().await;
        return Err(e);
    }

    match conn.command(DotStuffed(text)).await {
        Ok(response) => Ok(response),
        Err(e) => {
            conn.abort().await;
            Err(e)
        }
    }
}

/// The rustls client configuration for implicit TLS: Mozilla's roots (as lettre's `webpki-roots`
/// feature gives STARTTLS) plus the private CA of `ca_file`, TLS 1.2 and 1.3.
fn implicit_tls_connector(s: &SmtpSettings) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(ca) = &s.ca_file {
        let pem = read_ca_file(ca)?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                anyhow::anyhow!(
                    "transport.smtp.ca_file {}: not a PEM certificate ({e})",
                    ca.display()
                )
            })?;
            roots.add(cert).map_err(|e| {
                anyhow::anyhow!(
                    "transport.smtp.ca_file {}: not a usable CA certificate ({e})",
                    ca.display()
                )
            })?;
            added += 1;
        }
        if added == 0 {
            anyhow::bail!(
                "transport.smtp.ca_file {}: no PEM certificate in it",
                ca.display()
            );
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS set-up for {}: {e}", s.host))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The bytes of `transport.smtp.ca_file`, or an error naming the setting.
fn read_ca_file(ca: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(ca).map_err(|e| {
        anyhow::anyhow!(
            "transport.smtp.ca_file {}: cannot read it ({e})",
            ca.display()
        )
    })
}

fn rustls_server_name(
    host: &str,
) -> std::io::Result<tokio_rustls::rustls::pki_types::ServerName<'static>> {
    tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?}: {e}"))
    })
}

/// An implicit-TLS stream in the shape lettre takes for a transport it did not open.
#[derive(Debug)]
struct ImplicitTls(tokio_rustls::client::TlsStream<tokio::net::TcpStream>);

impl lettre::transport::smtp::client::AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
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
                        let pem = read_ca_file(ca)?;
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
                let security = match s.tls {
                    SmtpTls::Starttls => Security::Starttls(tls_parameters()?),
                    SmtpTls::Implicit => Security::Implicit(implicit_tls_connector(s)?),
                    SmtpTls::None => Security::Plain,
                };
                let credentials = match (&s.username, &s.password) {
                    (Some(user), Some(password)) => Some(Credentials::new(
                        user.clone(),
                        password.expose_secret().to_string(),
                    )),
                    _ => None,
                };
                Ok(Transport::Smtp(Arc::new(SmtpPool {
                    settings: s.clone(),
                    security,
                    credentials,
                    hello: ClientId::default(),
                    slots: Semaphore::new(s.pool_size as usize),
                    idle: Mutex::new(Vec::new()),
                })))
            }
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
                anyhow::anyhow!(
                    "the SMTP relay {}:{} cannot be used: {text}{hint}",
                    pool.settings.host,
                    pool.settings.port
                )
            }),
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
            Transport::Smtp(pool) => match pool.send(&out.envelope, &out.bytes).await {
                Ok(response) => {
                    let code = response.code().to_string().parse().unwrap_or(250);
                    Delivery::sent(code, response.message().collect::<Vec<_>>().join(" "))
                }
                Err(SmtpFailure::Smtp(e)) => classify(&e),
                Err(SmtpFailure::Connect(e)) => Delivery {
                    outcome: AttemptOutcome::Transient,
                    code: None,
                    reply: format!("cannot connect to the relay: {e}"),
                },
                // Nothing was sent: a certificate problem is fixed by an operator, then retried.
                Err(SmtpFailure::Tls(e)) => Delivery {
                    outcome: AttemptOutcome::Transient,
                    code: None,
                    reply: format!("TLS handshake with the relay failed: {e}"),
                },
                Err(SmtpFailure::TimedOut) => Delivery {
                    outcome: AttemptOutcome::Ambiguous,
                    code: None,
                    reply: "no answer from the relay within the timeout".into(),
                },
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

#[cfg(test)]
mod tests {
    use super::DotStuffed;

    fn dot_stuffed(text: &str) -> String {
        DotStuffed(text).to_string()
    }

    #[test]
    fn dots_that_begin_a_line_are_doubled_as_lettre_does() {
        assert_eq!(dot_stuffed(".a"), "..a\r\n.\r\n");
        assert_eq!(
            dot_stuffed("a\r\n.b\r\n..c\r\nd.e\n.f"),
            "a\r\n..b\r\n...c\r\nd.e\n.f\r\n.\r\n",
            "after CRLF only: a bare LF does not begin a line"
        );
        assert_eq!(dot_stuffed(""), "\r\n.\r\n");
        // A CR before the CRLF, and dot-only lines back to back.
        assert_eq!(
            dot_stuffed("f\r\r\n.g\r\n.\r\n."),
            "f\r\r\n..g\r\n..\r\n..\r\n.\r\n"
        );
    }
}
