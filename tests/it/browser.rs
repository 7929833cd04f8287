//! The status page in a real browser: headless Chromium driven through chromedriver (Debian's
//! `chromium` and `chromium-driver`, installed by scripts/test when missing) with fantoccini, while a
//! daemon sends to the test SMTP server. The counters move without a reload (page.js), an operator
//! signed in with Basic credentials pauses the campaign from its form and sending stops within 2
//! seconds, resumes it and sending goes on, and the browser's console stays free of errors (a CSP
//! violation, a script error, a failed request would all show there). A screenshot of the campaign
//! page is written to `$STATUS_PAGE_SCREENSHOT` when that is set.
//!
//! Without Chromium this fails and says what to install: a browser test that skips proves nothing.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use breach_notifier::dispatch::RunMode;
use breach_notifier::store::CampaignState;
use common::TestApp;
use common::smtp::{Script, SmtpServer};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};

use crate::status_page::{OPERATOR, serve, tokens};

backends!(multi_thread: an_operator_watches_pauses_and_resumes_in_chromium);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a port of its choosing, stopped on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require_chromium() {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(path).exists(),
            "the browser test needs {path}: install Debian's chromium and chromium-driver \
             (apt-get install -y --no-install-recommends chromium chromium-driver; scripts/test does this)"
        );
    }
}

/// Starts chromedriver with `--port=0` and reads the port it announces (no race for a free port).
fn start_driver() -> Driver {
    require_chromium();
    let mut child = Command::new(CHROMEDRIVER)
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("chromedriver says which port it took")
            .unwrap();
        if let Some(rest) = line.split("started successfully on port ").nth(1) {
            break rest.trim_end_matches('.').trim().parse().unwrap();
        }
    };
    // Keep reading its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Driver {
        child,
        port,
        _profile: tempfile::tempdir().unwrap(),
    }
}

/// A headless Chromium session as root on a closed network needs it.
async fn browser(driver: &Driver) -> Client {
    let profile = driver._profile.path().display().to_string();
    let capabilities = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,2000", format!("--user-data-dir={profile}"),
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session through chromedriver")
}

/// chromedriver's `POST /session/{id}/se/log {"type": "browser"}`: the console messages since the
/// last call.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (
            axum::http::Method::POST,
            Some(r#"{"type":"browser"}"#.into()),
        )
    }
}

/// The console's errors since the last call.
async fn console_errors(c: &Client) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.expect("the browser's log");
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The text of the element marked `test_id`. The script replaces the live part every 2 seconds, so
/// an element found may be gone before its text is read: find it again then.
async fn text_of(c: &Client, test_id: &str) -> String {
    let selector = format!("[data-testid=\"{test_id}\"]");
    let mut tries = 0;
    loop {
        let read = async { c.find(Locator::Css(&selector)).await?.text().await };
        match read.await {
            Ok(text) => return text,
            Err(e) if tries < 5 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{test_id} on the page: {e}"),
        }
    }
}

async fn sent_on_page(c: &Client) -> i64 {
    text_of(c, "sent").await.trim().parse().unwrap()
}

/// Waits until the page, refreshed by its script, shows more than `than` sent.
async fn wait_for_sent_above(c: &Client, than: i64, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let now = sent_on_page(c).await;
        if now > than {
            return now;
        }
        assert!(
            started.elapsed() < limit,
            "the page still shows {now} sent after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `test_id` shows once the page has it as `expected`, or after `limit`: a click on a form's
/// button returns before the browser has loaded the page the action redirects to.
async fn text_once(c: &Client, test_id: &str, expected: &str, limit: Duration) -> String {
    let started = Instant::now();
    loop {
        let text = text_of(c, test_id).await;
        if text == expected || started.elapsed() >= limit {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Submits an action's form from the page, as a person would.
async fn act(c: &Client, action: &str, reason: &str) {
    let input = c
        .find(Locator::Css(&format!("[data-testid=\"reason-{action}\"]")))
        .await
        .unwrap_or_else(|e| panic!("the {action} form: {e}"));
    input.send_keys(reason).await.unwrap();
    c.find(Locator::Css(&format!("[data-testid=\"do-{action}\"]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// When the relay last received a message, watched for `watch` after `from`.
async fn last_delivery_after(smtp: &SmtpServer, from: Instant, watch: Duration) -> Duration {
    let mut last_count = smtp.received_count();
    let mut last_change = Duration::ZERO;
    while from.elapsed() < watch {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let count = smtp.received_count();
        if count != last_count {
            last_count = count;
            last_change = from.elapsed();
        }
    }
    last_change
}

async fn an_operator_watches_pauses_and_resumes_in_chromium(t: TestApp) {
    let _serial = common::serial().await;
    let driver = start_driver();
    let smtp = SmtpServer::start(Script::new()).await;
    let rows: Vec<_> = (1..=2000)
        .map(|i| common::person(i, "example.com"))
        .collect();
    let spec = common::spec(Some(20.0), "Your data");
    let id = t.campaign(&spec).spec(&spec).with(&rows).started().await;
    let settings = t.settings(&smtp);
    let daemon = t.spawn_daemon(&settings, RunMode::Forever);
    let (server, port, _stop) = serve(&t, &tokens(false)).await;
    let c = browser(&driver).await;

    // Signing in: the browser answers /login's challenge with the URL's credentials and keeps them.
    c.goto(&format!("http://ops:{OPERATOR}@127.0.0.1:{port}/login"))
        .await
        .unwrap();
    let _ = console_errors(&c).await; // the challenge's 401 is expected
    c.goto(&format!("http://127.0.0.1:{port}/campaigns/{id}"))
        .await
        .unwrap();
    assert_eq!(text_of(&c, "state").await, "running");
    let first = sent_on_page(&c).await;
    let moved = wait_for_sent_above(&c, first, Duration::from_secs(15)).await;
    let refreshed = c
        .find(Locator::Id("live"))
        .await
        .unwrap()
        .attr("data-updated-at")
        .await
        .unwrap();
    assert!(
        refreshed.is_some(),
        "the counters moved by page.js, not by a reload"
    );
    assert!(moved > first);

    act(&c, "pause", "call centre asked for a break").await;
    let paused_at = Instant::now();
    let stopped_after = last_delivery_after(&smtp, paused_at, Duration::from_secs(4)).await;
    assert!(
        stopped_after <= Duration::from_secs(2),
        "the relay still received a notice {stopped_after:?} after the pause"
    );
    assert_eq!(
        t.store.require_campaign(id).await.unwrap().state,
        CampaignState::Paused
    );
    assert_eq!(
        text_once(&c, "state", "paused", Duration::from_secs(5)).await,
        "paused"
    );
    assert!(text_of(&c, "events").await.contains("http:ops"));
    if let Ok(path) = std::env::var("STATUS_PAGE_SCREENSHOT") {
        std::fs::write(&path, c.screenshot().await.unwrap()).unwrap();
    }

    let before = smtp.received_count();
    act(&c, "resume", "break over").await;
    assert_eq!(
        text_once(&c, "state", "running", Duration::from_secs(5)).await,
        "running"
    );
    assert!(
        smtp.wait_for(before + 5, Duration::from_secs(10)).await,
        "sending goes on after the resume"
    );
    let sent = sent_on_page(&c).await;
    wait_for_sent_above(&c, sent, Duration::from_secs(15)).await;

    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    c.close().await.unwrap();
    daemon.stop.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
    server.shutdown().await;
    smtp.shutdown().await;
}
