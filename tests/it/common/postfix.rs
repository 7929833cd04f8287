//! A real Postfix for end-to-end tests of the bounce path: a private instance per test, started from a
//! temporary folder, listening on 127.0.0.1 only, on a free port, and stopped (its folder removed)
//! when the [`PostfixInstance`] is dropped.
//!
//! What the instance does (see [`PostfixInstance::start`]):
//! - accepts SMTP with STARTTLS (a certificate from a [`TestCa`] made for the test; the client must
//!   trust [`PostfixInstance::ca_pem`]) from 127.0.0.0/8, for any domain;
//! - relays [`PostfixOptions::sink_domains`] (default `ok.test`) to `[127.0.0.1]:sink_port` and
//!   [`PostfixOptions::refuse_domains`] (default `refuse.test`) to `[127.0.0.1]:refuse_port`, plain
//!   SMTP, through a `texthash:` transport map (no postmap); anything else bounces at once;
//! - delivers the bounce domain (default `bounce.test`, the VERP domain `bounces+TOKEN@bounce.test`)
//!   to a `pipe(8)` transport `bouncepipe` running [`PostfixOptions::pipe`], one recipient per call;
//! - retries quickly: queue runs every second, backoff 1 s to 2 s, no delay warnings.
//!
//! How it is started, without touching /etc/postfix: `postfix -c DIR start`, as root, with the
//! instance's own `config_directory`, `queue_directory` and `data_directory`. As root, Postfix does not
//! require DIR to be listed in the default instance's `alternate_config_directories` (that check is
//! for unprivileged callers of the set-gid tools), and the default instance need not exist at all
//! (scripts/lib/postfix.sh installs the package with "No configuration": there is no
//! /etc/postfix/main.cf). `postqueue -c DIR` works the same way. Postfix's own messages go to
//! `maillog_file` in the folder ([`PostfixInstance::log`]); the log is printed when a test panics
//! while the instance is alive.
//!
//! Root: otherwise `postfix` refuses ("the postfix command is reserved for the superuser") and
//! `postqueue -c DIR` wants DIR in /etc/postfix/main.cf's `alternate_config_directories`, so
//! [`PostfixInstance::start`] panics at once, saying so, when the tests do not run as root (scripts/test
//! runs them as root here and in CI). Nothing is skipped.
//!
//! The pipe user: pipe(8) refuses `user=root` and the mail system owner (`postfix`), so the command
//! runs as [`PostfixOptions::pipe_user`], default `nobody`. What it must reach has to be readable by
//! that user: the instance folder is 0755, the command's own folder [`PostfixInstance::pipe_dir`] is
//! owned by the pipe user (and exported to the command as `$BN_PIPE_DIR`), and
//! [`PostfixInstance::give_to_pipe_user`] hands over further paths (a SQLite file, a config file with
//! a secret). The pipe environment is reset by Postfix: only `export_environment` reaches the
//! command, so [`PostfixOptions::pipe_env`] adds `NAME=value` pairs there (e.g. a database URL). A
//! binary under /root (mode 0700) cannot be run by `nobody`: keep `CARGO_TARGET_DIR` outside it.
//!
//! The blocking calls (`start`, `flush`, ...) run commands that return in well under a second and
//! talk to no test server; use `#[tokio::test(flavor = "multi_thread")]` all the same, as Postfix
//! delivers to the test SMTP servers of [`super::smtp`] while the test waits.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::smtp::TestCa;

/// The name the instance gives itself (greeting, `Received:`, DSN `Reporting-MTA`).
pub const HOSTNAME: &str = "postfix.test";
/// The default domain relayed to the sink.
pub const SINK_DOMAIN: &str = "ok.test";
/// The default domain relayed to the refusing server.
pub const REFUSE_DOMAIN: &str = "refuse.test";
/// The default VERP domain, delivered to the pipe.
pub const BOUNCE_DOMAIN: &str = "bounce.test";
/// The master.cf service name of the pipe transport (its lines in the log say `relay=bouncepipe`).
pub const PIPE_SERVICE: &str = "bouncepipe";

/// What the pipe transport runs.
#[derive(Clone, Debug)]
pub enum PipeCommand {
    /// A shell script of this module that records every call in [`PostfixInstance::pipe_dir`] (read
    /// them with [`PostfixInstance::pipe_calls`]) and exits with `exit_codes[n]` on the n-th call
    /// (counting from 0), 0 once the list is used up. 75 is EX_TEMPFAIL: Postfix retries.
    Recorder { exit_codes: Vec<i32> },
    /// This command line as it stands. Postfix expands `${sender}`, `${original_recipient}`,
    /// `${recipient}`, `${queue_id}` ... in it (pipe(8)), so write `$$` for a literal `$`; the null
    /// sender is an empty argument (`null_sender=`). An argument with whitespace is wrapped in
    /// `{ … }` for master.cf (it must not contain braces itself).
    Argv(Vec<String>),
}

impl PipeCommand {
    /// A recorder that exits with these codes on the first calls, then 0.
    pub fn recorder(exit_codes: &[i32]) -> Self {
        PipeCommand::Recorder {
            exit_codes: exit_codes.to_vec(),
        }
    }
}

/// How to set up a [`PostfixInstance`]. [`PostfixOptions::new`] gives the defaults; the fields are
/// public for the rest.
#[derive(Clone, Debug)]
pub struct PostfixOptions {
    /// Port on 127.0.0.1 of the server that gets mail for `sink_domains` (a test SMTP server).
    pub sink_port: u16,
    pub sink_domains: Vec<String>,
    /// Port on 127.0.0.1 of the server that gets mail for `refuse_domains`.
    pub refuse_port: u16,
    pub refuse_domains: Vec<String>,
    /// The domain delivered to the pipe transport (the envelope sender's domain of notices).
    pub bounce_domain: String,
    pub pipe: PipeCommand,
    /// The user the pipe command runs as: not root, not `postfix` (pipe(8) refuses both).
    pub pipe_user: String,
    /// Environment variables given to the pipe command (added to `export_environment`; a value may
    /// hold spaces, not braces).
    pub pipe_env: Vec<(String, String)>,
    /// More main.cf settings, written last (so they override this module's: Postfix keeps the last).
    pub main_cf: Vec<(String, String)>,
}

impl PostfixOptions {
    /// `ok.test` to the sink, `refuse.test` to the refuser, `bounce.test` to `pipe` run as `nobody`.
    pub fn new(sink_port: u16, refuse_port: u16, pipe: PipeCommand) -> Self {
        PostfixOptions {
            sink_port,
            sink_domains: vec![SINK_DOMAIN.to_string()],
            refuse_port,
            refuse_domains: vec![REFUSE_DOMAIN.to_string()],
            bounce_domain: BOUNCE_DOMAIN.to_string(),
            pipe,
            pipe_user: "nobody".to_string(),
            pipe_env: Vec::new(),
            main_cf: Vec::new(),
        }
    }
}

/// One call of the [`PipeCommand::Recorder`] script, in call order.
#[derive(Clone, Debug)]
pub struct PipeCall {
    /// The exit code the script returned.
    pub exit_code: i32,
    /// `${sender}`: the envelope sender (empty for a DSN, whose sender is `<>`).
    pub sender: String,
    /// `${original_recipient}`: the envelope recipient as submitted (the VERP address).
    pub recipient: String,
    /// The user the script ran as.
    pub user: String,
    /// The message as the script read it on stdin (with the `Return-Path:` of `flags=R`).
    pub data: Vec<u8>,
}

impl PipeCall {
    /// The message as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A running private Postfix. Dropping it stops it (`postfix -c DIR stop`) and removes its folder.
pub struct PostfixInstance {
    dir: tempfile::TempDir,
    sbin: PathBuf,
    port: u16,
    ca_pem: String,
    pipe_uid: u32,
    pipe_gid: u32,
    /// How long `start` took (configuration, `postfix start`).
    pub started_in: Duration,
    /// Whether a panic message already carried the log (then `Drop` does not print it again).
    log_shown: AtomicBool,
}

impl PostfixInstance {
    /// Writes the configuration into a new temporary folder and runs `postfix -c DIR/conf start`
    /// (which creates the queue, then starts `master -w`: the SMTP port listens when it returns).
    /// Panics, with Postfix's log, if it cannot start; a port taken meanwhile is retried with another.
    pub fn start(opts: PostfixOptions) -> PostfixInstance {
        require_root();
        let sbin = sbin();
        let begun = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("bn-postfix.")
            .tempdir()
            .expect("temporary folder for Postfix");
        // Postfix's daemons (user postfix) and the pipe command (pipe_user) walk into it.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod 755");
        let (pipe_uid, pipe_gid) = user_ids(&opts.pipe_user);
        let root = dir.path();
        for sub in ["conf", "queue", "pipe", "pipe/out"] {
            fs::create_dir(root.join(sub)).expect("Postfix folders");
            fs::set_permissions(root.join(sub), fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::os::unix::fs::chown(root.join("pipe/out"), Some(pipe_uid), Some(pipe_gid))
            .expect("give the pipe folder to the pipe user");
        let ca = TestCa::new();
        write(&root.join("conf/cert.pem"), &ca.server_cert_pem, 0o644);
        write(&root.join("conf/key.pem"), &ca.server_key_pem, 0o600);
        write(&root.join("conf/ca.pem"), &ca.ca_pem, 0o644);
        write(&root.join("conf/transport"), &transport_map(&opts), 0o644);
        if let PipeCommand::Recorder { exit_codes } = &opts.pipe {
            write(
                &root.join("pipe/command"),
                &recorder_script(exit_codes),
                0o755,
            );
        }
        let mut instance = PostfixInstance {
            dir,
            sbin,
            port: 0,
            ca_pem: ca.ca_pem,
            pipe_uid,
            pipe_gid,
            started_in: Duration::ZERO,
            log_shown: AtomicBool::new(false),
        };
        for _attempt in 0..3 {
            instance.port = free_port();
            let root = instance.dir.path();
            write(&root.join("conf/main.cf"), &main_cf(root, &opts), 0o644);
            write(
                &root.join("conf/master.cf"),
                &master_cf(root, instance.port, &opts),
                0o644,
            );
            let status = instance.postfix(&["start"]);
            if status.success() {
                instance.started_in = begun.elapsed();
                return instance;
            }
            if !instance.log().contains("Address already in use") {
                let said = fs::read_to_string(root.join("postfix-command.out")).unwrap_or_default();
                instance.fail(&format!("postfix start failed ({status}): {said}"));
            }
        }
        instance.fail("postfix start: no free port after 3 attempts");
    }

    /// The SMTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance's folder (conf/, queue/, data/, pipe/, maillog).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `config_directory` (main.cf, master.cf, transport, cert.pem, ca.pem).
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// The CA that signed the SMTP server certificate (for `localhost` and 127.0.0.1), PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The same CA as a file, for the product's `transport.smtp.ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.config_dir().join("ca.pem")
    }

    /// The folder owned by the pipe user, `$BN_PIPE_DIR` in the pipe command's environment.
    pub fn pipe_dir(&self) -> PathBuf {
        self.dir.path().join("pipe/out")
    }

    /// Makes `path` owned by the pipe user, so the pipe command can read and write it.
    pub fn give_to_pipe_user(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.pipe_uid), Some(self.pipe_gid))
            .unwrap_or_else(|e| panic!("chown {} to the pipe user: {e}", path.display()));
    }

    /// Postfix's log so far (`maillog_file`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Asks for an immediate delivery attempt of everything queued (`postqueue -c DIR -f`).
    pub fn flush(&self) {
        let out = self.postqueue(&["-f"]);
        if !out.status.success() {
            self.fail(&format!("postqueue -f failed: {}", describe(&out)));
        }
    }

    /// Whether no message is queued (incoming, active, deferred, hold): `postqueue -j` lists nothing.
    pub fn queue_is_empty(&self) -> bool {
        let out = self.postqueue(&["-j"]);
        if !out.status.success() {
            self.fail(&format!("postqueue -j failed: {}", describe(&out)));
        }
        out.stdout.iter().all(u8::is_ascii_whitespace)
    }

    /// The queue as `postqueue -p` shows it (for messages).
    pub fn queue_listing(&self) -> String {
        String::from_utf8_lossy(&self.postqueue(&["-p"]).stdout).into_owned()
    }

    /// The calls of the [`PipeCommand::Recorder`] script so far, in order.
    pub fn pipe_calls(&self) -> Vec<PipeCall> {
        let dir = self.pipe_dir();
        let Ok(index) = fs::read_to_string(dir.join("calls")) else {
            return Vec::new();
        };
        index
            .lines()
            .map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                assert_eq!(f.len(), 5, "recorder index line {line:?}");
                PipeCall {
                    exit_code: f[1].parse().expect("exit code"),
                    sender: f[2].to_string(),
                    recipient: f[3].to_string(),
                    user: f[4].to_string(),
                    data: fs::read(dir.join(format!("call-{}.eml", f[0]))).expect("recorded call"),
                }
            })
            .collect()
    }

    /// Submits `message` over SMTP with STARTTLS required (the certificate checked against
    /// [`PostfixInstance::ca_pem`]), as a client on 127.0.0.1 would. Returns Postfix's final reply
    /// (`2.0.0 Ok: queued as …`); panics if the submission fails.
    pub async fn submit(&self, from: &str, to: &[&str], message: &[u8]) -> String {
        let ca = Certificate::from_pem(self.ca_pem.as_bytes()).expect("CA certificate");
        let tls = TlsParameters::builder("localhost".to_string())
            .add_root_certificate(ca)
            .build_rustls()
            .expect("TLS parameters");
        let client = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.port)
            .tls(Tls::Required(tls))
            .hello_name(ClientId::Domain("client.test".to_string()))
            .timeout(Some(Duration::from_secs(10)))
            .build();
        let envelope = Envelope::new(
            Some(from.parse().expect("sender address")),
            to.iter()
                .map(|a| a.parse().expect("recipient address"))
                .collect(),
        )
        .expect("envelope");
        match client.send_raw(&envelope, message).await {
            Ok(reply) => reply.message().collect::<Vec<_>>().join(" "),
            Err(e) => self.fail(&format!("SMTP submission to Postfix failed: {e}")),
        }
    }

    /// Panics with `what`, the queue and Postfix's log.
    pub fn fail(&self, what: &str) -> ! {
        self.log_shown.store(true, Ordering::Relaxed);
        panic!(
            "{what}\n--- postqueue -p ---\n{}--- Postfix log ({}) ---\n{}",
            self.queue_listing(),
            self.dir.path().join("maillog").display(),
            self.log()
        )
    }

    /// Runs `postfix -c DIR …` with its output appended to DIR/postfix-command.out, not to pipes:
    /// `postfix start` leaves a `postsuper &` running behind it, which would keep pipes open. (Its
    /// messages go to the maillog anyway when stderr is not a terminal.)
    fn postfix(&self, args: &[&str]) -> ExitStatus {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postfix-command.out"))
            .expect("postfix command output file");
        let err = out.try_clone().expect("postfix command output file");
        Command::new(self.sbin.join("postfix"))
            .arg("-c")
            .arg(self.config_dir())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap_or_else(|e| panic!("cannot run postfix {args:?}: {e}"))
    }

    fn postqueue(&self, args: &[&str]) -> Output {
        run(Command::new(self.sbin.join("postqueue"))
            .arg("-c")
            .arg(self.config_dir())
            .args(args))
    }
}

impl Drop for PostfixInstance {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.log_shown.load(Ordering::Relaxed) {
            eprintln!(
                "--- Postfix log ({}) ---\n{}--- end of Postfix log ---",
                self.dir.path().join("maillog").display(),
                self.log()
            );
        }
        // `stop` waits for master to exit (SIGTERM to master, which stops its children).
        let stopped = self.postfix(&["stop"]).success();
        if !stopped {
            // Not started, or already gone: make sure no master is left on the removed folder.
            let _ = self.postfix(&["abort"]);
        }
        // The TempDir removes the folder (root may delete postfix's and the pipe user's files).
    }
}

/// Polls `done` every 50 ms until it holds (true) or `timeout` passes (false).
pub async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn main_cf(root: &Path, opts: &PostfixOptions) -> String {
    let r = root.display();
    let mut relay: Vec<&str> = opts.sink_domains.iter().map(String::as_str).collect();
    relay.extend(opts.refuse_domains.iter().map(String::as_str));
    relay.push(&opts.bounce_domain);
    let mut export = String::from("TZ MAIL_CONFIG LANG");
    let pipe_dir = format!("BN_PIPE_DIR={r}/pipe/out");
    for pair in
        std::iter::once(pipe_dir).chain(opts.pipe_env.iter().map(|(k, v)| format!("{k}={v}")))
    {
        let _ = write!(export, " {}", braced(&pair));
    }
    let mut cf = format!(
        "# Written by tests/it/common/postfix.rs for one test; removed with this folder.
compatibility_level = 3.6
config_directory = {r}/conf
queue_directory = {r}/queue
data_directory = {r}/data
maillog_file = {r}/maillog
maillog_file_prefixes = {r}
myhostname = {HOSTNAME}
mydomain = test
myorigin = {HOSTNAME}
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 no local delivery in this test Postfix
alias_maps =
alias_database =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {relay}
transport_maps = texthash:{r}/conf/transport
default_transport = error:5.1.2 this test Postfix routes only its test domains
notify_classes =
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_peername_lookup = no
smtpd_tls_security_level = may
smtpd_tls_cert_file = {r}/conf/cert.pem
smtpd_tls_key_file = {r}/conf/key.pem
smtpd_tls_loglevel = 1
smtp_tls_security_level = none
smtp_connect_timeout = 2s
smtp_helo_name = {HOSTNAME}
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
transport_retry_time = 1s
maximal_queue_lifetime = 5m
bounce_queue_lifetime = 5m
delay_warning_time = 0
in_flow_delay = 0
{PIPE_SERVICE}_destination_recipient_limit = 1
export_environment = {export}
",
        relay = relay.join(", "),
    );
    for (name, value) in &opts.main_cf {
        let _ = writeln!(cf, "{name} = {value}");
    }
    cf
}

fn master_cf(root: &Path, port: u16, opts: &PostfixOptions) -> String {
    let argv: Vec<String> = match &opts.pipe {
        PipeCommand::Recorder { .. } => vec![
            format!("{}/pipe/command", root.display()),
            "${sender}".to_string(),
            "${original_recipient}".to_string(),
        ],
        PipeCommand::Argv(argv) => argv.clone(),
    };
    let argv: Vec<String> = argv.iter().map(|a| braced(a)).collect();
    // The services of Debian's master.cf, none chrooted (the chroot would lack the temp folder).
    format!(
        "# Written by tests/it/common/postfix.rs. service type private unpriv chroot wakeup maxproc command
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
{PIPE_SERVICE} unix - n n - 4 pipe
  flags=Rq null_sender= user={user} argv={argv}
",
        user = opts.pipe_user,
        argv = argv.join(" "),
    )
}

fn transport_map(opts: &PostfixOptions) -> String {
    let mut map = String::new();
    for d in &opts.sink_domains {
        let _ = writeln!(map, "{d} smtp:[127.0.0.1]:{}", opts.sink_port);
    }
    for d in &opts.refuse_domains {
        let _ = writeln!(map, "{d} smtp:[127.0.0.1]:{}", opts.refuse_port);
    }
    let _ = writeln!(map, "{} {PIPE_SERVICE}:", opts.bounce_domain);
    map
}

/// The recorder: stores stdin as call-N.eml, then appends `N code sender recipient user` to `calls`
/// (so a line means a complete message), under a lock, as pipe may run up to 4 at once.
fn recorder_script(exit_codes: &[i32]) -> String {
    let mut cases = String::new();
    for (i, code) in exit_codes.iter().enumerate() {
        let _ = writeln!(cases, "  {}) code={code} ;;", i + 1);
    }
    format!(
        "#!/bin/sh
# Written by tests/it/common/postfix.rs: records one pipe(8) delivery. $1 sender, $2 recipient.
set -eu
d=\"$BN_PIPE_DIR\"
exec 9>>\"$d/.lock\"
flock 9
touch \"$d/calls\"
n=$(( $(wc -l < \"$d/calls\") + 1 ))
code=0
case $n in
{cases}esac
cat > \"$d/call-$n.eml\"
printf '%s\\t%s\\t%s\\t%s\\t%s\\n' \"$n\" \"$code\" \"$1\" \"$2\" \"$(id -un)\" >> \"$d/calls\"
exit \"$code\"
"
    )
}

/// master.cf and main.cf lists split at whitespace; `{ … }` keeps one element (Postfix 3.0+).
fn braced(s: &str) -> String {
    if s.contains(char::is_whitespace) || s.contains(',') {
        format!("{{ {s} }}")
    } else {
        s.to_string()
    }
}

fn require_root() {
    let uid = fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    assert_eq!(
        uid, 0,
        "the Postfix tests must run as root ('postfix start' refuses otherwise): run scripts/test as root"
    );
}

fn sbin() -> PathBuf {
    let sbin = PathBuf::from(std::env::var("POSTFIX_SBIN").unwrap_or_else(|_| "/usr/sbin".into()));
    for tool in ["postfix", "postqueue", "postconf"] {
        assert!(
            sbin.join(tool).exists(),
            "{} not found: install Postfix (scripts/test does, see scripts/lib/postfix.sh) or set POSTFIX_SBIN",
            sbin.join(tool).display()
        );
    }
    sbin
}

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = run(Command::new("id").arg(flag).arg(user));
        assert!(
            out.status.success(),
            "no user {user:?} for the pipe: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// Writes a file dated a minute back: Postfix waits (300 ms at a time, ~2.5 s in all) for a main.cf
/// that was modified within the last seconds to settle before it reads it.
fn write(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    let a_minute_ago = std::time::SystemTime::now() - Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(a_minute_ago))
        .unwrap_or_else(|e| panic!("set the date of {}: {e}", path.display()));
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn describe(out: &Output) -> String {
    format!(
        "{} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
