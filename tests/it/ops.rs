//! Operations, tested on the real binary with real sockets: systemd's notification protocol (a
//! `UnixDatagram` standing in for systemd at `$NOTIFY_SOCKET`), the HTTP endpoint (`/healthz`,
//! `/readyz`, `/metrics` read over TCP and checked with a strict Prometheus text-format parser), a port
//! already in use, the `[http]` loopback rule, and the shipped deployment files (`deploy/`).
//!
//! The SMTP test server runs on this test's runtime while the daemon is a child process, hence the
//! multi-threaded runtime.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use breach_notifier::campaign::{CampaignSpec, LocaleTemplates, RateSpec, SenderSpec};
use breach_notifier::config::Settings;
use breach_notifier::store::*;
use common::TestApp;
use common::smtp::{Script, SmtpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

backends!(
    multi_thread:
    systemd_hears_ready_status_watchdog_and_stopping,
    http_endpoints_report_health_readiness_and_metrics,
);

// ---------------------------------------------------------------------------------------------
// Fixtures

fn spec() -> CampaignSpec {
    let mut locales = std::collections::BTreeMap::new();
    locales.insert(
        "en-US".to_string(),
        LocaleTemplates {
            subject: "Notice of Data Breach".into(),
            text: "Hello {{ recipient.first_name }}".into(),
            html: "<p>Hello</p>".into(),
        },
    );
    CampaignSpec {
        name: "ops test".into(),
        discovered_at: None,
        determined_at: None,
        email_without_consent: false,
        supplements: None,
        default_locale: "en-US".into(),
        sender: SenderSpec {
            from: "notices@example.com".into(),
            reply_to: None,
            return_path: None,
        },
        locales,
        by_jurisdiction: Default::default(),
        rate: RateSpec::default(),
        waves: Vec::new(),
        source: String::new(),
    }
}

/// A campaign with one recipient per address; started when `start`.
async fn campaign(t: &TestApp, addresses: &[String], start: bool) -> i64 {
    let rows: Vec<_> = addresses
        .iter()
        .enumerate()
        .map(|(i, email)| NewRecipient {
            customer_id: format!("K{i:05}"),
            email: Some(email.clone()),
            first_name: Some("K".into()),
            electronic_consent: true,
            ..Default::default()
        })
        .collect();
    t.campaign(&spec()).with(&rows).started_if(start).await
}

fn addresses(n: usize, domain: &str) -> Vec<String> {
    (0..n).map(|i| format!("u{i}@{domain}")).collect()
}

async fn wait_completed(t: &TestApp, id: i64, within: Duration) -> CampaignProgress {
    let deadline = Instant::now() + within;
    loop {
        let p = t.store.progress(Some(id)).await.unwrap().remove(0);
        if p.state == CampaignState::Completed {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "campaign {id} did not complete: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `breach-notifier run` against the test database and SMTP server, configured by environment only,
/// in `dir` (so no `config/default.toml` is read), its standard error in `dir/stderr.log`.
fn daemon(dir: &Path, url: &str, smtp_port: u16) -> tokio::process::Command {
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut cmd = tokio::process::Command::from(common::command_with_relay(dir, url, smtp_port));
    cmd.arg("run")
        .env("BREACH_NOTIFIER__TRANSPORT__SMTP__TIMEOUT_SECS", "5")
        .env("BREACH_NOTIFIER__DISPATCH__HEARTBEAT_SECS", "1")
        .env("BREACH_NOTIFIER__DISPATCH__LEASE_SECS", "30")
        .env("BREACH_NOTIFIER__DISPATCH__POLL_INTERVAL_MS", "100")
        .env("BREACH_NOTIFIER__DISPATCH__DRAIN_SECS", "5")
        .env("BREACH_NOTIFIER__LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true);
    cmd
}

fn logs(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}

/// SIGTERM, as systemd sends it, then the exit status.
async fn terminate(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    let pid = child.id().expect("still running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM {pid}");
    tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the daemon exits within 30 s of SIGTERM")
        .unwrap()
}

/// A free TCP port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// systemd's side of sd_notify

/// What systemd would receive: every datagram sent to `$NOTIFY_SOCKET`, in order.
struct NotifySocket {
    path: PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).unwrap();
        let messages: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = messages.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                let text = String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification");
                sink.lock().unwrap().push(text);
            }
        });
        NotifySocket {
            path,
            messages,
            task,
        }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Assignments (`KEY=VALUE`) received so far, one per line of each datagram, in order.
    fn assignments(&self) -> Vec<String> {
        self.messages()
            .iter()
            .flat_map(|m| m.lines().map(str::to_string).collect::<Vec<_>>())
            .collect()
    }

    /// Waits until some assignment satisfies `pred`; returns it.
    async fn wait_for(&self, within: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = self.assignments().into_iter().find(|a| pred(a)) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn count(&self, assignment: &str) -> usize {
        self.assignments()
            .iter()
            .filter(|a| *a == assignment)
            .count()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn systemd_hears_ready_status_watchdog_and_stopping(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let id = campaign(&t, &addresses(30, "example.com"), true).await;
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let mut child = daemon(dir.path(), &t.url, smtp.port())
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .spawn()
        .unwrap();

    let ready = notify
        .wait_for(Duration::from_secs(30), |a| a == "READY=1")
        .await;
    assert!(
        ready.is_some(),
        "READY=1 within 30 s; got {:?}; logs:\n{}",
        notify.messages(),
        logs(dir.path())
    );
    assert!(smtp.wait_for(30, Duration::from_secs(30)).await);
    wait_completed(&t, id, Duration::from_secs(30)).await;
    let status = notify
        .wait_for(Duration::from_secs(10), |a| {
            a == "STATUS=sent 30, deferred 0, failed 0, in flight 0"
        })
        .await;
    assert!(
        status.is_some(),
        "a status line with the final counts; got {:?}",
        notify.messages()
    );
    // WATCHDOG_USEC = 2 s: a ping every second.
    let pings_before = notify.count("WATCHDOG=1");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let pings = notify.count("WATCHDOG=1") - pings_before;
    assert!(
        (2..=5).contains(&pings),
        "about one watchdog ping a second, got {pings} in 3.5 s"
    );
    assert!(notify.count("STOPPING=1") == 0, "not stopping yet");

    let exit = terminate(&mut child).await;
    assert!(
        exit.success(),
        "exit 0 after SIGTERM, got {exit}; logs:\n{}",
        logs(dir.path())
    );
    let stopping = notify
        .wait_for(Duration::from_secs(2), |a| a == "STOPPING=1")
        .await;
    assert!(
        stopping.is_some(),
        "STOPPING=1; got {:?}",
        notify.messages()
    );

    let all = notify.assignments();
    let pos = |a: &str| all.iter().position(|x| x == a).unwrap();
    assert!(
        pos("READY=1") < pos("STOPPING=1"),
        "READY before STOPPING: {all:?}"
    );
    assert_eq!(notify.count("READY=1"), 1, "READY=1 once: {all:?}");
    let statuses: Vec<&String> = all.iter().filter(|a| a.starts_with("STATUS=")).collect();
    assert!(
        statuses.len() >= 3,
        "a status line at every heartbeat: {statuses:?}"
    );
    assert!(
        all[pos("STOPPING=1") + 1].starts_with("STATUS=stopping: draining "),
        "the stop says what it is doing: {all:?}"
    );
    for a in &all {
        assert!(!a.contains('@'), "no address in a notification: {a}");
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over a fresh TCP connection, as a prober sends it.
async fn request(port: u16, method: &str, path: &str) -> std::io::Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ops-test\r\nAccept: */*\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::other("no complete response within 15 s"))??;
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
    let status = parts.next().unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("a header line");
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let response = HttpResponse {
        status,
        headers,
        body: body.to_string(),
    };
    if method != "HEAD" {
        assert_eq!(
            response.header("Content-Length"),
            Some(response.body.len().to_string().as_str()),
            "Content-Length matches the body"
        );
    }
    Ok(response)
}

async fn get(port: u16, path: &str) -> HttpResponse {
    request(port, "GET", path).await.unwrap()
}

/// Polls `path` until it answers `status`.
async fn wait_status(port: u16, path: &str, status: u16, within: Duration) -> HttpResponse {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = request(port, "GET", path).await
            && r.status == status
        {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} did not answer {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn http_endpoints_report_health_readiness_and_metrics(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    // 15 notices to each of two domains (past the 10 a domain needs for a label of its own) and 10
    // to domains with one recipient each (never labelled: they count as `other`).
    let mut list = addresses(15, "gmail.com");
    list.extend(addresses(15, "Example.ORG"));
    list.extend((0..10).map(|i| format!("solo@family{i}.example")));
    let sending = campaign(&t, &list, true).await;
    let waiting = campaign(&t, &addresses(7, "example.net"), false).await;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = daemon(dir.path(), &t.url, smtp.port())
        .env("BREACH_NOTIFIER__HTTP__ENABLED", "true")
        .env("BREACH_NOTIFIER__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();

    let health = wait_status(port, "/healthz", 200, Duration::from_secs(30)).await;
    assert_eq!(health.body, "ok\n");
    assert!(smtp.wait_for(40, Duration::from_secs(30)).await);
    wait_completed(&t, sending, Duration::from_secs(30)).await;

    // Queue depth comes with the heartbeat (every second here): wait until it shows the end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let r = get(port, "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("Content-Type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let m = parse_exposition(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body));
        let depth = |c: i64| {
            m.value(
                "breach_notifier_queue_depth",
                &[("campaign", &c.to_string())],
            )
        };
        if depth(waiting) == Some(7.0) && depth(sending).is_none() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "queue depth: want campaign {waiting} = 7 and campaign {sending} gone:\n{}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    let campaign_label = sending.to_string();
    let sent = metrics.sum(
        "breach_notifier_messages_sent_total",
        &[("campaign", &campaign_label)],
    );
    assert_eq!(
        sent,
        smtp.received_count() as f64,
        "the sent counter equals what the relay received"
    );
    assert_eq!(sent, 40.0);
    for name in [
        "breach_notifier_messages_deferred_total",
        "breach_notifier_messages_failed_total",
    ] {
        assert_eq!(metrics.sum(name, &[("campaign", &campaign_label)]), 0.0);
    }
    // Domain labels: lower-cased, bounded; a domain's first 9 notices count as `other`.
    let by_domain = |d: &str| {
        metrics.value(
            "breach_notifier_messages_sent_total",
            &[("campaign", &campaign_label), ("domain", d)],
        )
    };
    assert_eq!(by_domain("gmail.com"), Some(6.0));
    assert_eq!(by_domain("example.org"), Some(6.0));
    assert_eq!(by_domain("other"), Some(28.0));
    let domains: BTreeSet<&str> = metrics
        .samples
        .iter()
        .filter_map(|s| s.labels.get("domain").map(String::as_str))
        .collect();
    assert_eq!(
        domains,
        BTreeSet::from(["example.org", "gmail.com", "other"])
    );
    // Labels are campaign and domain only (and a histogram's le); never an address.
    for s in &metrics.samples {
        assert!(s.name.starts_with("breach_notifier_"), "{}", s.name);
        for (k, v) in &s.labels {
            assert!(
                ["campaign", "domain", "le"].contains(&k.as_str()),
                "label {k}"
            );
            assert!(!v.contains('@'), "an address in a label: {v}");
        }
    }
    assert_eq!(
        metrics.value("breach_notifier_send_duration_seconds_count", &[]),
        Some(40.0)
    );
    assert!(
        metrics
            .value("breach_notifier_send_duration_seconds_sum", &[])
            .unwrap()
            > 0.0
    );
    assert_eq!(metrics.value("breach_notifier_in_flight", &[]), Some(0.0));
    assert_eq!(
        metrics.value("breach_notifier_cluster_daemons", &[]),
        Some(1.0),
        "alone"
    );
    assert_eq!(
        metrics.value("breach_notifier_sending_suspended", &[]),
        Some(0.0)
    );
    assert_eq!(
        metrics.value("breach_notifier_claimed_total", &[]),
        Some(40.0)
    );
    for name in [
        "breach_notifier_lease_renewals_total",
        "breach_notifier_rate_limit_waits_total",
        "breach_notifier_released_total",
    ] {
        assert!(metrics.value(name, &[]).is_some(), "{name}");
    }
    let heartbeat = metrics
        .value("breach_notifier_heartbeat_timestamp_seconds", &[])
        .expect("a heartbeat");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - heartbeat).abs() < 30.0,
        "heartbeat {heartbeat} vs now {now}"
    );

    // Methods, paths, HEAD.
    let head = request(port, "HEAD", "/healthz").await.unwrap();
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let post = request(port, "POST", "/metrics").await.unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.header("Allow"), Some("GET, HEAD"));
    assert_eq!(get(port, "/nope").await.status, 404);
    assert_eq!(get(port, "/healthz?probe=1").await.status, 200);

    // Readiness follows the relay (cached for a few seconds).
    let ready = get(port, "/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    smtp.set_down(true);
    let down = wait_status(port, "/readyz", 503, Duration::from_secs(20)).await;
    assert!(
        down.body.starts_with("not ready: transport: "),
        "{}",
        down.body
    );
    assert!(
        !down.body.contains("database"),
        "the database is fine: {}",
        down.body
    );
    assert_eq!(
        get(port, "/healthz").await.status,
        200,
        "alive though not ready"
    );
    smtp.set_down(false);
    wait_status(port, "/readyz", 200, Duration::from_secs(20)).await;

    let exit = terminate(&mut child).await;
    assert!(
        exit.success(),
        "exit 0 after SIGTERM, got {exit}; logs:\n{}",
        logs(dir.path())
    );
    assert!(
        request(port, "GET", "/healthz").await.is_err(),
        "the port is closed once the daemon exited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_one_clear_line_and_no_ready() {
    let t = common::sqlite().await;
    let smtp = SmtpServer::start(Script::new()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let notify = NotifySocket::bind(dir.path());
    let child = daemon(dir.path(), &t.url, smtp.port())
        .env("NOTIFY_SOCKET", &notify.path)
        .env("BREACH_NOTIFIER__HTTP__ENABLED", "true")
        .env("BREACH_NOTIFIER__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("exits at once")
        .unwrap();
    assert!(!out.status.success(), "a non-zero exit");
    let stderr = logs(dir.path());
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let line = lines[0];
    assert!(
        line.starts_with(&format!(
            "error: http.listen 127.0.0.1:{port}: cannot listen ("
        )),
        "{line}"
    );
    assert!(line.to_lowercase().contains("in use"), "{line}");
    assert!(
        line.contains("http.listen"),
        "says which key to change: {line}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let all = notify.assignments();
    assert!(!all.iter().any(|a| a == "READY=1"), "never ready: {all:?}");
    assert!(
        all.iter()
            .any(|a| a.starts_with("STATUS=failed: http.listen")),
        "systemctl status shows why: {all:?}"
    );
    assert_eq!(smtp.connections_opened(), 0, "failed before any connection");
    drop(taken);
}

#[test]
fn a_non_loopback_listen_address_is_refused_unless_allowed() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let remote = [
        ("BREACH_NOTIFIER__HTTP__ENABLED", "true"),
        ("BREACH_NOTIFIER__HTTP__LISTEN", "0.0.0.0:9187"),
    ];
    let err = Settings::load_from(None, None, &env(&remote))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("http.listen = \"0.0.0.0:9187\" is not a loopback address")
            && err.contains("http.allow_remote = true"),
        "{err}"
    );
    let mut allowed = remote.to_vec();
    allowed.push(("BREACH_NOTIFIER__HTTP__ALLOW_REMOTE", "true"));
    let s = Settings::load_from(None, None, &env(&allowed))
        .unwrap()
        .settings;
    assert!(s.http.enabled && s.http.allow_remote);
    for ok in ["127.0.0.1:0", "[::1]:9187"] {
        let s = Settings::load_from(
            None,
            None,
            &env(&[
                ("BREACH_NOTIFIER__HTTP__ENABLED", "true"),
                ("BREACH_NOTIFIER__HTTP__LISTEN", ok),
            ]),
        )
        .unwrap()
        .settings;
        assert!(s.http.listen.ip().is_loopback());
    }
    // Off by default, on loopback.
    let d = Settings::default();
    assert!(!d.http.enabled);
    assert_eq!(d.http.listen.to_string(), "127.0.0.1:9187");
    // A host name is not an address: one line naming the key.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[http]\nenabled = true\nlisten = \"localhost:9187\"\n",
    )
    .unwrap();
    let err = Settings::load_from(None, Some(&file), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3") && err.contains("listen"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// deploy/

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_production_example_passes_check_config_with_its_credentials() {
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("db-password"), "db-s3cret\n").unwrap();
    std::fs::write(credentials.path().join("smtp-password"), "smtp-s3cret\n").unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let run = |creds: &Path| {
        std::process::Command::new(common::binary())
            .current_dir(cwd.path())
            .env_clear()
            .env("CREDENTIALS_DIRECTORY", creds)
            .arg("--config")
            .arg(repo("deploy/production.toml"))
            .arg("check-config")
            .output()
            .unwrap()
    };
    let out = run(credentials.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("url = \"postgres://breach_notifier@"));
    assert!(stdout.contains("kind = \"smtp\""));
    assert!(stdout.contains("tls = \"starttls\""));
    assert_eq!(stdout.matches("password = \"[redacted]\"").count(), 2);
    assert!(!stdout.contains("s3cret"), "secrets never printed");
    assert!(stdout.contains("[http]\nenabled = true\nlisten = \"127.0.0.1:9187\""));

    // Without the credentials: one line naming the file.
    let empty = tempfile::tempdir().unwrap();
    let out = run(empty.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("database.password_file") && stderr.contains("db-password"),
        "{stderr}"
    );
}

/// `Key=value` settings of a unit file (every value of a repeated key).
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let (k, v) = line.split_once('=').expect("Key=value");
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    map
}

fn seconds(v: &str) -> u64 {
    v.strip_suffix('s')
        .unwrap_or(v)
        .parse()
        .unwrap_or_else(|_| panic!("a time in seconds: {v}"))
}

#[test]
fn the_unit_is_a_hardened_notify_service_that_outlasts_the_drain() {
    let unit =
        unit_settings(&std::fs::read_to_string(repo("deploy/breach-notifier.service")).unwrap());
    let one = |k: &str| -> &str {
        let v = unit.get(k).unwrap_or_else(|| panic!("{k} is set"));
        assert_eq!(v.len(), 1, "{k} once");
        &v[0]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert!(one("ExecStart").starts_with(
        "/usr/local/bin/breach-notifier --config /etc/breach-notifier/production.toml run"
    ));

    let production: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo("deploy/production.toml")).unwrap()).unwrap();
    let drain = production["dispatch"]["drain_secs"].as_integer().unwrap() as u64;
    let default_drain = Settings::default().dispatch.drain_secs;
    let stop = seconds(one("TimeoutStopSec"));
    assert!(
        stop >= 2 * drain.max(default_drain),
        "TimeoutStopSec {stop} s leaves room for a {drain} s drain plus recording and releasing"
    );
    let watchdog = seconds(one("WatchdogSec"));
    assert!(watchdog >= 10, "WatchdogSec {watchdog} s");
    let smtp_timeout = production["transport"]["smtp"]["timeout_secs"]
        .as_integer()
        .unwrap() as u64;
    assert!(
        seconds(one("TimeoutStartSec")) > 2 * smtp_timeout,
        "the start covers the database and the relay's connection test"
    );

    // The credentials are the files the production config reads.
    let credentials: BTreeSet<&str> = unit["LoadCredential"]
        .iter()
        .map(|c| c.split_once(':').unwrap().0)
        .collect();
    let wanted: BTreeSet<&str> = [
        production["database"]["password_file"].as_str().unwrap(),
        production["transport"]["smtp"]["password_file"]
            .as_str()
            .unwrap(),
    ]
    .into();
    assert_eq!(credentials, wanted);

    assert_eq!(one("DynamicUser"), "yes");
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert_eq!(unit["SystemCallFilter"][0], "@system-service");
    // The loopback endpoint of the production config is what the hardening allows.
    assert_eq!(
        production["http"]["listen"].as_str(),
        Some("127.0.0.1:9187")
    );
}

// ---------------------------------------------------------------------------------------------
// A strict parser of the Prometheus text format 0.0.4. Strict on purpose: the `prometheus-parse`
// crate skips lines it does not understand and splits label values on commas without honouring
// escapes, so it would accept broken output. This one rejects anything the format does not allow
// and checks the rules a scraper relies on (TYPE before samples, families contiguous, no duplicate
// series, histogram buckets cumulative with `+Inf` equal to `_count`, counters not negative).

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name → type.
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The one sample of `name` whose labels include `labels` (None when there is none).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} is ambiguous: {found:?}"
        );
        found.first().map(|s| s.value)
    }

    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => {
            s.parse().map_err(|_| format!("bad value {s:?}"))
        }
        _ => Err(format!("bad value {s:?}")),
    }
}

/// `{k="v",…}` starting at `rest[0] == '{'`; returns the labels and what follows the `}`.
fn parse_labels(rest: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut s = &rest[1..];
    loop {
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without =")?;
        let name = &s[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        s = &s[end + 1..];
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err(format!("expected , or }} at {s:?}"));
        }
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).map(String::as_str) == Some("histogram")
        {
            return Some(base);
        }
    }
    None
}

fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a line feed".into());
    }
    let mut out = Exposition::default();
    let mut helped = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let (keyword, name, rest) = (parts.next(), parts.next(), parts.next());
            match keyword {
                Some("HELP") | Some("TYPE") => {
                    let name = name.ok_or_else(|| at("no metric name".into()))?;
                    if !is_metric_name(name) {
                        return Err(at(format!("bad metric name {name:?}")));
                    }
                    if finished.contains(name) || out.samples.iter().any(|s| s.name == name) {
                        return Err(at("HELP/TYPE after the family's samples".into()));
                    }
                    if current.as_deref() != Some(name)
                        && let Some(prev) = current.replace(name.to_string())
                    {
                        finished.insert(prev);
                    }
                    if keyword == Some("HELP") {
                        if !helped.insert(name.to_string()) {
                            return Err(at("HELP twice".into()));
                        }
                    } else {
                        let kind = rest.ok_or_else(|| at("TYPE without a type".into()))?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(at(format!("unknown type {kind:?}")));
                        }
                        if out
                            .types
                            .insert(name.to_string(), kind.to_string())
                            .is_some()
                        {
                            return Err(at("TYPE twice".into()));
                        }
                    }
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(at(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &out.types)
            .ok_or_else(|| at("a sample without a TYPE line before it".into()))?;
        if current.as_deref() != Some(family) {
            return Err(at(format!("samples of {family} are not contiguous")));
        }
        let kind = out.types[family].as_str();
        if kind == "histogram" && name.ends_with("_bucket") != labels.contains_key("le") {
            return Err(at("le belongs on buckets, and buckets need le".into()));
        }
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(at("a negative or NaN counter".into()));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("a duplicate series".into()));
        }
        out.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: cumulative buckets per label set, +Inf present and equal to _count.
    for (family, _) in out.types.iter().filter(|(_, k)| *k == "histogram") {
        let bucket = format!("{family}_bucket");
        let mut groups: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in out.samples.iter().filter(|s| s.name == bucket) {
            let mut rest = s.labels.clone();
            let le = parse_value(&rest.remove("le").unwrap())?;
            groups
                .entry(format!("{rest:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (key, buckets) in groups {
            for w in buckets.windows(2) {
                if !(w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                    return Err(format!(
                        "{family}{key}: buckets not cumulative: {buckets:?}"
                    ));
                }
            }
            let (last_le, last) = *buckets.last().unwrap();
            if last_le != f64::INFINITY {
                return Err(format!("{family}{key}: no +Inf bucket"));
            }
            let count = out
                .samples
                .iter()
                .find(|s| s.name == format!("{family}_count") && format!("{:?}", s.labels) == key)
                .ok_or_else(|| format!("{family}{key}: no _count"))?;
            if count.value != last {
                return Err(format!(
                    "{family}{key}: +Inf bucket {last} != _count {}",
                    count.value
                ));
            }
        }
    }
    Ok(out)
}

#[test]
fn the_strict_parser_rejects_what_prometheus_would() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\",\\\\,\\n\",y=\"2\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1.5\nh_count 2\n";
    let e = parse_exposition(ok).unwrap();
    assert_eq!(e.samples[0].labels["x"], "1\",\\,\n");
    for bad in [
        "a 1\n",                                                    // no TYPE
        "# TYPE a counter\na -1\n",                                 // negative counter
        "# TYPE a counter\na{x=\"1\"} 1",                           // no final line feed
        "# TYPE a counter\na{x=1} 1\n",                             // unquoted
        "# TYPE a counter\na{x=\"1\",x=\"2\"} 1\n",                 // label twice
        "# TYPE a counter\na 1\na 2\n",                             // duplicate series
        "# TYPE a gauge\n# TYPE b gauge\nb 1\na 1\n",               // not contiguous
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n", // +Inf != count
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
        "# TYPE a gauge\na{x=\"\\t\"} 1\n", // bad escape
        "# TYPE a gauge\na one\n",          // bad value
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}
