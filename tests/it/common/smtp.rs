//! A scriptable SMTP server for integration tests: real SMTP over a real TCP socket on 127.0.0.1,
//! so the product's own SMTP client (lettre) is exercised end to end, wire format included.
//!
//! What it is for: deciding, per recipient address, how the "relay" answers (accept, reject at RCPT
//! with any code, reject after DATA, drop the connection before or after the message, answer slowly,
//! fail the first N attempts then accept), simulating an outage (`set_down`) or a connection limit,
//! and recording what was really accepted so a test can assert "exactly one copy of each notice".
//!
//! What it is not: a mail server. It speaks a subset of RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA, RSET,
//! NOOP, QUIT, optionally AUTH PLAIN/LOGIN accepting any credentials or only the given ones, and
//! optionally TLS: STARTTLS (RFC 3207) or implicit TLS with a certificate the test makes, see
//! [`TestCa`]); no relaying, no persistence, no security. Never point anything but a test at it.
//!
//! ```ignore
//! let script = Script::new().for_address("bob@example.org", Behaviour::reply(550, "5.1.1 No such user"));
//! let server = SmtpServer::start(script).await;
//! // ... point the product at 127.0.0.1:server.port() with TLS off ...
//! assert!(server.wait_for(1, Duration::from_secs(5)).await);
//! assert_eq!(server.received()[0].rcpt_to, ["alice@example.org"]);
//! ```
//!
//! The server runs on tasks of the test's tokio runtime: while the test blocks a thread (e.g.
//! `std::process::Command::output()` on the CLI), a current-thread runtime cannot serve. Use
//! `#[tokio::test(flavor = "multi_thread")]`, `tokio::process`, or `spawn_blocking` in such tests.
//!
//! Addresses are compared ASCII-case-insensitively (rules, `rcpt_attempts`); recorded addresses keep
//! the spelling the client used.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// The name the server gives itself in its greeting and EHLO reply.
pub const HOSTNAME: &str = "smtp.test.invalid";
/// Default maximum message size (advertised as `SIZE`), 10 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// Most recipients accepted in one envelope; further RCPTs get `452 4.5.3`.
pub const MAX_RECIPIENTS: usize = 100;
/// Longest command line accepted; longer ones get `500 5.5.2`.
const MAX_COMMAND_LINE: usize = 4096;

/// How the server treats one recipient. The behaviour is fixed when the RCPT command is judged, so a
/// `set_script` during a transaction affects the next RCPT, not the recipients already accepted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// `250` at RCPT and `250 2.0.0 Ok: queued as <id>` after DATA; the message is recorded.
    #[default]
    Accept,
    /// Answer `code text` at RCPT (e.g. 421, 450, 451, 550). A 421 also closes the connection, as a
    /// real server does. A code below 400 accepts the recipient with that reply.
    Reply { code: u16, text: String },
    /// Accept at RCPT, but answer `code text` after the final `.`. Recorded only if `code` is 2xx;
    /// a 421 closes the connection after the reply.
    ReplyAfterData { code: u16, text: String },
    /// Close the TCP connection on RCPT, without replying.
    DisconnectAtRcpt,
    /// Accept at RCPT, read the whole message, then close without replying: the ambiguous case (the
    /// relay may or may not deliver it). The message is recorded in `swallowed`, not `received`.
    DisconnectAfterData,
    /// Accept, but wait this long before the final reply after DATA. The message is recorded before
    /// the reply is written, so a client that gives up meanwhile leaves a delivered message behind.
    SlowData(Duration),
    /// Answer `code text` at RCPT to the first `times` attempts for the address (counted since this
    /// script was installed), then accept. A 421 also closes the connection.
    FailFirst { times: u32, code: u16, text: String },
}

impl Behaviour {
    /// `Behaviour::Reply` without spelling out `String`.
    pub fn reply(code: u16, text: impl Into<String>) -> Self {
        Behaviour::Reply {
            code,
            text: text.into(),
        }
    }

    /// `Behaviour::ReplyAfterData` without spelling out `String`.
    pub fn reply_after_data(code: u16, text: impl Into<String>) -> Self {
        Behaviour::ReplyAfterData {
            code,
            text: text.into(),
        }
    }

    /// `Behaviour::FailFirst` without spelling out `String`.
    pub fn fail_first(times: u32, code: u16, text: impl Into<String>) -> Self {
        Behaviour::FailFirst {
            times,
            code,
            text: text.into(),
        }
    }
}

/// Which recipients a rule applies to.
#[derive(Clone)]
pub enum Matcher {
    /// This exact address (ASCII case-insensitive).
    Address(String),
    /// Every address whose domain (after the last `@`) is exactly this one (ASCII case-insensitive;
    /// subdomains do not match).
    Domain(String),
    /// Every address for which the closure returns true (it gets the address as the client sent it).
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl Matcher {
    fn matches(&self, address: &str) -> bool {
        match self {
            Matcher::Address(a) => a.eq_ignore_ascii_case(address),
            Matcher::Domain(d) => address
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(d)),
            Matcher::Predicate(f) => f(address),
        }
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Address(a) => f.debug_tuple("Address").field(a).finish(),
            Matcher::Domain(d) => f.debug_tuple("Domain").field(d).finish(),
            Matcher::Predicate(_) => f.write_str("Predicate(..)"),
        }
    }
}

/// What the server does: rules tried in order against each RCPT address (first match wins), a default
/// for unmatched recipients, and connection-level settings. Built with chained calls from
/// [`Script::new`], which accepts everything.
#[derive(Clone, Debug)]
pub struct Script {
    rules: Vec<(Matcher, Behaviour)>,
    default: Behaviour,
    max_connections: Option<usize>,
    advertise_auth: bool,
    /// Whether PIPELINING is in the EHLO reply (default: yes, as every current MTA offers it).
    advertise_pipelining: bool,
    /// When set, AUTH accepts only these and MAIL needs a successful AUTH first.
    credentials: Option<(String, String)>,
    tls: TlsMode,
    max_message_size: usize,
}

/// Whether and how the server speaks TLS.
#[derive(Clone, Default)]
pub enum TlsMode {
    /// Plain SMTP; STARTTLS is not offered.
    #[default]
    None,
    /// Plain at first, `STARTTLS` offered in the EHLO reply; the session restarts under TLS.
    Starttls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte (submissions port 465 style).
    Implicit(Arc<rustls::ServerConfig>),
}

impl fmt::Debug for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::None => "None",
            TlsMode::Starttls(_) => "Starttls",
            TlsMode::Implicit(_) => "Implicit",
        })
    }
}

/// A certificate authority made for one test, and a server certificate it signed for `localhost`
/// (and 127.0.0.1). `ca_pem` is what the client must trust (the product's `transport.smtp.ca_file`).
/// The server certificate and its key are also given as PEM, for servers that read files (Postfix).
pub struct TestCa {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "breach-notifier test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server TLS config");
        TestCa {
            ca_pem: ca.pem(),
            server: Arc::new(server),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        }
    }
}

impl Default for Script {
    fn default() -> Self {
        Script {
            rules: Vec::new(),
            default: Behaviour::Accept,
            max_connections: None,
            advertise_auth: false,
            advertise_pipelining: true,
            credentials: None,
            tls: TlsMode::None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl Script {
    /// A script that accepts every recipient, with no connection limit and no AUTH.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule (tried after the rules added before it).
    pub fn rule(mut self, matcher: Matcher, behaviour: Behaviour) -> Self {
        self.rules.push((matcher, behaviour));
        self
    }

    /// Adds a rule for one exact address.
    pub fn for_address(self, address: impl Into<String>, behaviour: Behaviour) -> Self {
        self.rule(Matcher::Address(address.into()), behaviour)
    }

    /// Adds a rule for every address at one domain.
    pub fn for_domain(self, domain: impl Into<String>, behaviour: Behaviour) -> Self {
        self.rule(Matcher::Domain(domain.into()), behaviour)
    }

    /// Adds a rule for every address the predicate accepts.
    pub fn when(
        self,
        predicate: impl Fn(&str) -> bool + Send + Sync + 'static,
        behaviour: Behaviour,
    ) -> Self {
        self.rule(Matcher::Predicate(Arc::new(predicate)), behaviour)
    }

    /// Sets the behaviour for recipients no rule matches (default: `Accept`).
    pub fn default_behaviour(mut self, behaviour: Behaviour) -> Self {
        self.default = behaviour;
        self
    }

    /// Limits simultaneous sessions: a connection beyond the limit gets `421 4.7.0 Too many
    /// connections` and is closed. `None` (the default) means no limit.
    pub fn max_connections(mut self, limit: Option<usize>) -> Self {
        self.max_connections = limit;
        self
    }

    /// Leaves PIPELINING out of the EHLO reply (a client must then wait for each answer).
    pub fn advertise_pipelining(mut self, on: bool) -> Self {
        self.advertise_pipelining = on;
        self
    }

    /// Advertises `AUTH PLAIN LOGIN` in the EHLO reply and accepts any credentials (default: off).
    pub fn advertise_auth(mut self, on: bool) -> Self {
        self.advertise_auth = on;
        self
    }

    /// Advertises AUTH and accepts only this user and password (`535 5.7.8` otherwise); MAIL
    /// before a successful AUTH gets `530 5.7.0`.
    pub fn require_credentials(mut self, user: &str, password: &str) -> Self {
        self.advertise_auth = true;
        self.credentials = Some((user.to_string(), password.to_string()));
        self
    }

    /// Speaks TLS as `mode` says (default: plain).
    pub fn tls(mut self, mode: TlsMode) -> Self {
        self.tls = mode;
        self
    }

    /// Sets the largest message accepted (advertised as `SIZE`); bigger ones get `552 5.3.4`.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The behaviour that applies to `address`: the first matching rule's, else the default.
    pub fn behaviour_for(&self, address: &str) -> &Behaviour {
        self.rules
            .iter()
            .find(|(m, _)| m.matches(address))
            .map_or(&self.default, |(_, b)| b)
    }
}

/// One message whose DATA was read completely.
#[derive(Clone, Debug)]
pub struct Received {
    /// The reverse path of MAIL FROM, without angle brackets (empty for the null sender `<>`).
    pub mail_from: String,
    /// The recipients accepted at RCPT for this envelope, in order, as the client spelled them.
    pub rcpt_to: Vec<String>,
    /// The message bytes as sent, after dot-unstuffing, line endings as received.
    pub data: Vec<u8>,
    /// The trimmed value of the first `Message-ID` header (angle brackets kept), if any.
    pub message_id: Option<String>,
    /// The id given in `250 2.0.0 Ok: queued as <id>`; `None` for swallowed messages and for
    /// `ReplyAfterData` with a 2xx code.
    pub queue_id: Option<String>,
    /// When the server finished reading the message.
    pub at: Instant,
    /// Whether the message came over TLS (after STARTTLS, or on an implicit-TLS connection).
    pub tls: bool,
    /// The user the session authenticated as, if it did.
    pub auth_user: Option<String>,
}

impl Received {
    /// The message as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The unfolded, trimmed value of the first header called `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.data, name)
    }
}

/// A running test server. Dropping it (or calling [`SmtpServer::shutdown`]) stops accepting and
/// aborts every open session.
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl SmtpServer {
    /// Binds 127.0.0.1 on a free port and starts serving with `script`. Panics if it cannot bind.
    pub async fn start(script: Script) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the test SMTP server to 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the test SMTP server");
        let shared = Arc::new(Shared {
            script: Mutex::new(Arc::new(script)),
            down: AtomicBool::new(false),
            log: Mutex::new(Log::default()),
            changed: Notify::new(),
            opened: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            next_queue_id: AtomicU64::new(1),
            port: addr.port(),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        SmtpServer {
            addr,
            shared,
            accept_task: Mutex::new(Some(task)),
        }
    }

    /// The address the server listens on (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replaces the script for everything judged from now on; `FailFirst` counts start again.
    pub fn set_script(&self, script: Script) {
        let mut log = self.shared.log();
        *lock(&self.shared.script) = Arc::new(script);
        log.fail_first_given.clear();
    }

    /// While down, new connections are accepted and closed at once, before any greeting (a relay
    /// outage). Sessions already open carry on.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Whether the server is currently down (see [`SmtpServer::set_down`]).
    pub fn is_down(&self) -> bool {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Stops accepting (the port is closed when this returns) and aborts every open session. The
    /// records stay readable.
    pub async fn shutdown(&self) {
        let task = lock(&self.accept_task).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Every message accepted with a final 2xx after DATA, in order of acceptance.
    pub fn received(&self) -> Vec<Received> {
        self.shared.log().received.clone()
    }

    /// How many messages were accepted.
    pub fn received_count(&self) -> usize {
        self.shared.log().received.len()
    }

    /// Messages read completely and then dropped without a reply (`DisconnectAfterData`).
    pub fn swallowed(&self) -> Vec<Received> {
        self.shared.log().swallowed.clone()
    }

    /// How many messages were swallowed.
    pub fn swallowed_count(&self) -> usize {
        self.shared.log().swallowed.len()
    }

    /// How many accepted messages carry each Message-ID (messages without one are not counted).
    pub fn count_by_message_id(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for id in self
            .shared
            .log()
            .received
            .iter()
            .filter_map(|r| r.message_id.clone())
        {
            *counts.entry(id).or_insert(0) += 1;
        }
        counts
    }

    /// How many RCPT TO commands named `address` (case-insensitive) inside a MAIL transaction,
    /// whatever the answer (including disconnects); out-of-sequence or malformed RCPTs do not count.
    pub fn rcpt_attempts(&self, address: &str) -> u32 {
        self.shared
            .log()
            .rcpt_attempts
            .get(&address.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// The usernames of successful AUTH commands, in order.
    /// MAIL commands received, and how many of them came pipelined with what follows.
    pub fn mail_commands(&self) -> (usize, usize) {
        let log = self.shared.log();
        (log.mail_commands, log.pipelined_mail_commands)
    }

    pub fn auth_usernames(&self) -> Vec<String> {
        self.shared.log().auth_usernames.clone()
    }

    /// How many TCP connections were accepted, including those closed at once (down, over the limit).
    pub fn connections_opened(&self) -> usize {
        self.shared.opened.load(Ordering::SeqCst)
    }

    /// How many sessions are open now (refused connections are not sessions).
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// The most sessions that were ever open at the same time.
    pub fn max_concurrent_connections(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` messages were accepted; false if `timeout` passes first.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a message recorded in between still wakes us.
            notified.as_mut().enable();
            if self.received_count() >= count {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.received_count() >= count;
            }
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.accept_task).take() {
            task.abort();
        }
    }
}

/// State shared by the handle, the accept loop and the sessions.
struct Shared {
    script: Mutex<Arc<Script>>,
    down: AtomicBool,
    log: Mutex<Log>,
    /// Notified whenever a message is recorded (for `wait_for`).
    changed: Notify,
    opened: AtomicUsize,
    active: AtomicUsize,
    peak: AtomicUsize,
    next_queue_id: AtomicU64,
    port: u16,
}

impl Shared {
    fn script(&self) -> Arc<Script> {
        lock(&self.script).clone()
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        lock(&self.log)
    }

    fn new_queue_id(&self) -> String {
        format!(
            "{:04X}{:06X}",
            self.port,
            self.next_queue_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn record(&self, message: Received, swallowed: bool) {
        let mut log = self.log();
        if swallowed {
            log.swallowed.push(message)
        } else {
            log.received.push(message)
        }
        drop(log);
        self.changed.notify_waiters();
    }
}

/// What the server has seen.
#[derive(Default)]
struct Log {
    received: Vec<Received>,
    swallowed: Vec<Received>,
    /// RCPT TO count per lowercased address.
    rcpt_attempts: HashMap<String, u32>,
    /// Failures already given by `FailFirst` per lowercased address, since the script was installed.
    fail_first_given: HashMap<String, u32>,
    auth_usernames: Vec<String>,
    /// MAIL commands, and those that arrived with the next command already behind them (pipelined).
    mail_commands: usize,
    pipelined_mail_commands: usize,
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not hide the records).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one open session; dropping it ends the count.
struct SessionGuard(Arc<Shared>);

impl SessionGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        let now = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        SessionGuard(shared.clone())
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections until aborted; the sessions live in a `JoinSet`, so aborting this task aborts
/// them too.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut sessions = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while sessions.try_join_next().is_some() {}
        shared.opened.fetch_add(1, Ordering::SeqCst);
        if shared.down.load(Ordering::SeqCst) {
            drop(stream);
            continue;
        }
        let limit = shared.script().max_connections;
        if limit.is_some_and(|limit| shared.active.load(Ordering::SeqCst) >= limit) {
            sessions.spawn(refuse(stream));
            continue;
        }
        // Counted here, not in the task, so the limit above is exact.
        let guard = SessionGuard::new(&shared);
        sessions.spawn(session(stream, shared.clone(), guard));
    }
}

/// Answers 421 and closes, letting the client read the reply before the connection goes.
async fn refuse(mut stream: TcpStream) {
    if stream
        .write_all(b"421 4.7.0 Too many connections\r\n")
        .await
        .is_ok()
        && stream.shutdown().await.is_ok()
    {
        let mut sink = [0u8; 512];
        let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }
}

async fn session(stream: TcpStream, shared: Arc<Shared>, guard: SessionGuard) {
    let tls = shared.script().tls.clone();
    let mut session = Session {
        shared,
        greeted: false,
        envelope: None,
        authenticated: None,
        tls: false,
        starttls: matches!(tls, TlsMode::Starttls(_)),
    };
    match tls {
        TlsMode::Implicit(config) => {
            if let Ok(stream) = TlsAcceptor::from(config).accept(stream).await {
                session.tls = true;
                let _ = serve(stream, &mut session, true).await;
            }
        }
        TlsMode::Starttls(config) => {
            if let Ok((stream, End::StartTls)) = serve(stream, &mut session, true).await
                && let Ok(stream) = TlsAcceptor::from(config).accept(stream).await
            {
                // RFC 3207: everything learnt before the handshake is forgotten; the client
                // starts again with EHLO, without a new greeting.
                session.tls = true;
                session.greeted = false;
                session.envelope = None;
                session.authenticated = None;
                let _ = serve(stream, &mut session, false).await;
            }
        }
        TlsMode::None => {
            let _ = serve(stream, &mut session, true).await;
        }
    }
    // Stop counting before the client can see the connection close (the stream is already gone).
    drop(guard);
}

/// How a `Session::run` ended.
enum End {
    Closed,
    /// The client asked for STARTTLS and was told to go ahead: the stream is handed back for the
    /// handshake.
    StartTls,
}

/// Runs a session over `stream` and hands the stream back with how it ended.
async fn serve<S>(stream: S, session: &mut Session, greet: bool) -> io::Result<(S, End)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(reader);
    let end = session.run(&mut reader, &mut writer, greet).await;
    // Nothing may be buffered past a STARTTLS (RFC 3207 forbids pipelining it).
    let stream = reader.into_inner().unsplit(writer);
    Ok((stream, end?))
}

/// One MAIL transaction in progress.
struct Envelope {
    mail_from: String,
    /// Accepted recipients with the behaviour each was judged to have.
    rcpts: Vec<(String, Behaviour)>,
}

/// Whether the session goes on after a command.
enum Flow {
    Continue,
    Close,
}

struct Session {
    shared: Arc<Shared>,
    greeted: bool,
    envelope: Option<Envelope>,
    /// The user of a successful AUTH.
    authenticated: Option<String>,
    /// Whether the session is under TLS now.
    tls: bool,
    /// Whether STARTTLS is offered (until the session is under TLS).
    starttls: bool,
}

impl Session {
    async fn run<R, W>(&mut self, r: &mut R, w: &mut W, greet: bool) -> io::Result<End>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if greet {
            reply(
                w,
                220,
                &format!("{HOSTNAME} ESMTP test server (not a mail server)"),
            )
            .await?;
        }
        let mut line = Vec::new();
        loop {
            let Some(fitted) = read_line(r, &mut line, MAX_COMMAND_LINE).await? else {
                return Ok(End::Closed);
            };
            if !fitted {
                reply(w, 500, "5.5.2 Line too long").await?;
                continue;
            }
            let text = String::from_utf8_lossy(trim_eol(&line)).into_owned();
            let (verb, arg) = text.split_once(' ').unwrap_or((&text, ""));
            let flow = match verb.to_ascii_uppercase().as_str() {
                "EHLO" => self.hello(w, arg, true).await?,
                "HELO" => self.hello(w, arg, false).await?,
                "MAIL" => {
                    // Pipelined if the client sent more without waiting for this answer: bytes
                    // are already buffered (or arrive at once) behind the MAIL line.
                    let behind = std::future::poll_fn(|cx| {
                        std::task::Poll::Ready(matches!(
                            std::pin::Pin::new(&mut *r).poll_fill_buf(cx),
                            std::task::Poll::Ready(Ok(buf)) if !buf.is_empty()
                        ))
                    })
                    .await;
                    {
                        let mut log = self.shared.log();
                        log.mail_commands += 1;
                        log.pipelined_mail_commands += usize::from(behind);
                    }
                    self.mail(w, arg).await?
                }
                "RCPT" => self.rcpt(w, arg).await?,
                "DATA" => self.data(r, w).await?,
                "AUTH" => self.auth(r, w, arg).await?,
                "RSET" => {
                    self.envelope = None;
                    reply(w, 250, "2.0.0 Ok").await?;
                    Flow::Continue
                }
                "NOOP" => {
                    reply(w, 250, "2.0.0 Ok").await?;
                    Flow::Continue
                }
                "QUIT" => {
                    reply(w, 221, "2.0.0 Bye").await?;
                    Flow::Close
                }
                "STARTTLS" if self.starttls && !self.tls => {
                    reply(w, 220, "2.0.0 Ready to start TLS").await?;
                    w.flush().await?;
                    return Ok(End::StartTls);
                }
                "STARTTLS" | "VRFY" | "EXPN" | "HELP" | "BDAT" | "ETRN" | "TURN" => {
                    reply(w, 502, "5.5.1 Command not implemented").await?;
                    Flow::Continue
                }
                _ => {
                    reply(w, 500, "5.5.2 Command not recognized").await?;
                    Flow::Continue
                }
            };
            if let Flow::Close = flow {
                w.flush().await?;
                return Ok(End::Closed);
            }
        }
    }

    async fn hello<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        arg: &str,
        extended: bool,
    ) -> io::Result<Flow> {
        if arg.trim().is_empty() {
            reply(w, 501, "5.5.4 Syntax: EHLO hostname").await?;
            return Ok(Flow::Continue);
        }
        self.greeted = true;
        self.envelope = None;
        if !extended {
            reply(w, 250, HOSTNAME).await?;
            return Ok(Flow::Continue);
        }
        let script = self.shared.script();
        let mut lines = vec![format!("{HOSTNAME} greets {}", arg.trim())];
        if script.advertise_pipelining {
            lines.push("PIPELINING".to_string());
        }
        lines.extend([
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
        ]);
        if self.starttls && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        if script.advertise_auth {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.push(format!("SIZE {}", script.max_message_size));
        reply(w, 250, &lines.join("\n")).await?;
        Ok(Flow::Continue)
    }

    async fn mail<W: AsyncWrite + Unpin>(&mut self, w: &mut W, arg: &str) -> io::Result<Flow> {
        if !self.greeted {
            reply(w, 503, "5.5.1 Send EHLO first").await?;
        } else if self.shared.script().credentials.is_some() && self.authenticated.is_none() {
            reply(w, 530, "5.7.0 Authentication required").await?;
        } else if self.envelope.is_some() {
            reply(w, 503, "5.5.1 Nested MAIL command").await?;
        } else if let Some((from, params)) = strip_prefix_ci(arg, "FROM:").and_then(parse_path) {
            let max = self.shared.script().max_message_size;
            let declared = params
                .split_whitespace()
                .find_map(|p| strip_prefix_ci(p, "SIZE=").and_then(|n| n.parse::<usize>().ok()));
            if declared.is_some_and(|size| size > max) {
                reply(
                    w,
                    552,
                    "5.3.4 Message size exceeds fixed maximum message size",
                )
                .await?;
            } else {
                self.envelope = Some(Envelope {
                    mail_from: from,
                    rcpts: Vec::new(),
                });
                reply(w, 250, "2.1.0 Ok").await?;
            }
        } else {
            reply(w, 501, "5.5.4 Syntax: MAIL FROM:<address>").await?;
        }
        Ok(Flow::Continue)
    }

    async fn rcpt<W: AsyncWrite + Unpin>(&mut self, w: &mut W, arg: &str) -> io::Result<Flow> {
        let Some(envelope) = self.envelope.as_mut() else {
            reply(w, 503, "5.5.1 Need MAIL before RCPT").await?;
            return Ok(Flow::Continue);
        };
        let Some((address, _params)) = strip_prefix_ci(arg, "TO:")
            .and_then(parse_path)
            .filter(|(a, _)| !a.is_empty())
        else {
            reply(w, 501, "5.5.4 Syntax: RCPT TO:<address>").await?;
            return Ok(Flow::Continue);
        };
        let key = address.to_ascii_lowercase();
        *self
            .shared
            .log()
            .rcpt_attempts
            .entry(key.clone())
            .or_insert(0) += 1;
        if envelope.rcpts.len() >= MAX_RECIPIENTS {
            reply(w, 452, "4.5.3 Too many recipients").await?;
            return Ok(Flow::Continue);
        }
        let script = self.shared.script();
        let (code, text, accepted) = match script.behaviour_for(&address).clone() {
            Behaviour::DisconnectAtRcpt => return Ok(Flow::Close),
            Behaviour::Reply { code, text } if code >= 400 => (code, text, None),
            Behaviour::Reply { code, text } => (code, text, Some(Behaviour::Accept)),
            Behaviour::FailFirst { times, code, text } => {
                let mut log = self.shared.log();
                let given = log.fail_first_given.entry(key).or_insert(0);
                if *given < times {
                    *given += 1;
                    (code, text, None)
                } else {
                    (250, "2.1.5 Ok".to_string(), Some(Behaviour::Accept))
                }
            }
            other => (250, "2.1.5 Ok".to_string(), Some(other)),
        };
        if let Some(behaviour) = accepted {
            envelope.rcpts.push((address, behaviour));
        }
        reply(w, code, &text).await?;
        Ok(if code == 421 {
            Flow::Close
        } else {
            Flow::Continue
        })
    }

    async fn data<R, W>(&mut self, r: &mut R, w: &mut W) -> io::Result<Flow>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        match &self.envelope {
            None => {
                reply(w, 503, "5.5.1 Need MAIL and RCPT before DATA").await?;
                return Ok(Flow::Continue);
            }
            Some(e) if e.rcpts.is_empty() => {
                reply(w, 554, "5.5.1 No valid recipients").await?;
                return Ok(Flow::Continue);
            }
            Some(_) => {}
        }
        reply(w, 354, "End data with <CR><LF>.<CR><LF>").await?;
        let max = self.shared.script().max_message_size;
        let Some((data, oversize)) = read_data(r, max).await? else {
            return Ok(Flow::Close);
        };
        let envelope = self.envelope.take().expect("checked above");
        let behaviours: Vec<&Behaviour> = envelope.rcpts.iter().map(|(_, b)| b).collect();
        let message = |queue_id| Received {
            mail_from: envelope.mail_from.clone(),
            rcpt_to: envelope.rcpts.iter().map(|(a, _)| a.clone()).collect(),
            message_id: header_value(&data, "Message-ID"),
            data: data.clone(),
            queue_id,
            at: Instant::now(),
            tls: self.tls,
            auth_user: self.authenticated.clone(),
        };
        if oversize {
            reply(
                w,
                552,
                "5.3.4 Message size exceeds fixed maximum message size",
            )
            .await?;
            return Ok(Flow::Continue);
        }
        if behaviours
            .iter()
            .any(|b| matches!(b, Behaviour::DisconnectAfterData))
        {
            self.shared.record(message(None), true);
            return Ok(Flow::Close);
        }
        let delay = behaviours
            .iter()
            .filter_map(|b| {
                if let Behaviour::SlowData(d) = b {
                    Some(*d)
                } else {
                    None
                }
            })
            .max();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let custom = behaviours.iter().find_map(|b| match b {
            Behaviour::ReplyAfterData { code, text } => Some((*code, text.clone())),
            _ => None,
        });
        let (code, text) = match custom {
            Some((code, text)) => {
                if (200..300).contains(&code) {
                    self.shared.record(message(None), false);
                }
                (code, text)
            }
            None => {
                let id = self.shared.new_queue_id();
                self.shared.record(message(Some(id.clone())), false);
                (250, format!("2.0.0 Ok: queued as {id}"))
            }
        };
        reply(w, code, &text).await?;
        Ok(if code == 421 {
            Flow::Close
        } else {
            Flow::Continue
        })
    }

    async fn auth<R, W>(&mut self, r: &mut R, w: &mut W, arg: &str) -> io::Result<Flow>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if !self.shared.script().advertise_auth {
            reply(w, 502, "5.5.1 AUTH not available").await?;
            return Ok(Flow::Continue);
        }
        if !self.greeted || self.authenticated.is_some() || self.envelope.is_some() {
            reply(w, 503, "5.5.1 Bad sequence of commands").await?;
            return Ok(Flow::Continue);
        }
        let (mechanism, initial) = match arg.trim().split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
            None => (arg.trim().to_ascii_uppercase(), None),
        };
        let given = match mechanism.as_str() {
            "PLAIN" => {
                let Some(response) = challenge(r, w, "", initial).await? else {
                    return Ok(Flow::Close);
                };
                // authzid NUL authcid NUL password
                response.and_then(|b| {
                    let mut parts = b.split(|&c| c == 0).skip(1);
                    let user = String::from_utf8_lossy(parts.next()?).into_owned();
                    let password = String::from_utf8_lossy(parts.next()?).into_owned();
                    Some((user, password))
                })
            }
            "LOGIN" => {
                let Some(user) = challenge(r, w, "VXNlcm5hbWU6", initial).await? else {
                    return Ok(Flow::Close);
                };
                let Some(password) = challenge(r, w, "UGFzc3dvcmQ6", None).await? else {
                    return Ok(Flow::Close);
                };
                user.zip(password).map(|(u, p)| {
                    (
                        String::from_utf8_lossy(&u).into_owned(),
                        String::from_utf8_lossy(&p).into_owned(),
                    )
                })
            }
            _ => {
                reply(w, 504, "5.5.4 Unrecognized authentication type").await?;
                return Ok(Flow::Continue);
            }
        };
        let required = self.shared.script().credentials.clone();
        match given {
            Some((user, password))
                if required
                    .as_ref()
                    .is_some_and(|(u, p)| (u, p) != (&user, &password)) =>
            {
                reply(w, 535, "5.7.8 Authentication credentials invalid").await?;
            }
            Some((username, _)) => {
                self.authenticated = Some(username.clone());
                self.shared.log().auth_usernames.push(username);
                reply(w, 235, "2.7.0 Authentication successful").await?;
            }
            None => {
                reply(
                    w,
                    501,
                    "5.5.2 Cannot decode response, or authentication cancelled",
                )
                .await?
            }
        }
        Ok(Flow::Continue)
    }
}

/// Gets one SASL response: `initial` if the client sent it with AUTH, else the next line after a
/// `334 prompt`. `None` at end of stream; `Some(None)` if cancelled (`*`) or not base64.
async fn challenge<R, W>(
    r: &mut R,
    w: &mut W,
    prompt: &str,
    initial: Option<String>,
) -> io::Result<Option<Option<Vec<u8>>>>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let response = match initial {
        Some(initial) => initial,
        None => {
            reply(w, 334, prompt).await?;
            let mut line = Vec::new();
            if read_line(r, &mut line, MAX_COMMAND_LINE).await?.is_none() {
                return Ok(None);
            }
            String::from_utf8_lossy(trim_eol(&line)).trim().to_string()
        }
    };
    Ok(Some(if response == "*" {
        None
    } else {
        base64_decode(&response)
    }))
}

/// Reads DATA up to the lone `.` line, undoing dot-stuffing and keeping at most `max` bytes. Returns
/// the message and whether it was too big, or `None` if the connection closed first.
async fn read_data<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<Option<(Vec<u8>, bool)>> {
    let mut data = Vec::new();
    let mut oversize = false;
    let mut line = Vec::new();
    loop {
        // Three bytes more than the room left, so the terminating ".\r\n" always fits.
        let room = if oversize { 0 } else { max - data.len() };
        let Some(fitted) = read_line(r, &mut line, room.saturating_add(3)).await? else {
            return Ok(None);
        };
        if fitted && trim_eol(&line) == b"." {
            return Ok(Some((data, oversize)));
        }
        let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
        if !fitted || unstuffed.len() > room {
            oversize = true;
            data = Vec::new();
        } else if !oversize {
            data.extend_from_slice(unstuffed);
        }
    }
}

/// Reads one line, through its LF, into `buf`, keeping at most `max` bytes (the rest of a longer line
/// is read and discarded). Returns whether the whole line fitted, or `None` at end of stream.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    buf.clear();
    let mut fitted = true;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(None);
        }
        let (chunk, complete) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            fitted = false;
            buf.extend_from_slice(&chunk[..room]);
        } else {
            buf.extend_from_slice(chunk);
        }
        let used = chunk.len();
        r.consume(used);
        if complete {
            return Ok(Some(fitted));
        }
    }
}

/// Writes a reply; a `text` with several lines becomes a multi-line reply (`250-...` then `250 ...`).
async fn reply<W: AsyncWrite + Unpin>(w: &mut W, code: u16, text: &str) -> io::Result<()> {
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.push_str(&format!("{code}{sep}{line}\r\n"));
    }
    w.write_all(out.as_bytes()).await?;
    w.flush().await
}

/// The line without its CRLF or bare LF.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `s` without `prefix`, compared ASCII-case-insensitively.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Splits `<address> PARAMS` (tolerating a space before `<`, a missing `<>`, and a source route) into
/// the address and the parameters.
fn parse_path(s: &str) -> Option<(String, String)> {
    let s = s.trim();
    let (path, params) = match s.strip_prefix('<') {
        Some(inner) => {
            let end = inner.find('>')?;
            (&inner[..end], &inner[end + 1..])
        }
        None => s.split_once(' ').unwrap_or((s, "")),
    };
    // A source route `@a,@b:user@domain` is obsolete; keep the mailbox.
    let address = if path.starts_with('@') {
        path.split_once(':')?.1
    } else {
        path
    };
    if address.contains(char::is_whitespace) {
        return None;
    }
    Some((address.to_string(), params.trim().to_string()))
}

/// The unfolded, trimmed value of the first header called `name` (case-insensitive) in `data`.
fn header_value(data: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    let mut value: Option<String> = None;
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            break; // end of the header section
        }
        if line.starts_with([' ', '\t']) {
            if let Some(v) = value.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if value.is_some() {
            break; // the header we want has ended
        }
        match line.split_once(':') {
            Some((header, rest)) if header.trim_end().eq_ignore_ascii_case(name) => {
                value = Some(rest.trim().to_string())
            }
            _ => {}
        }
    }
    value.map(|v| v.trim().to_string())
}

/// Decodes standard base64 (padding optional); `None` if it is not base64.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
