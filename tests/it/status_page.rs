//! The status page over HTTP (docs/status-page.md), on PostgreSQL and SQLite: every route, what the
//! pages show (and that no address or name is among it), `/api/status` against `status --json`'s
//! data, the failure counters behind the page, and every refusal: no token, a wrong token, a viewer
//! acting, cross-site POSTs, oversized and malformed forms, and read-only without an operator token.
//! Each action's effect is checked in the database, with its actor `http:NAME` in the history.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use breach_notifier::campaign::WaveSpec;
use breach_notifier::config::{HttpSettings, Settings, TokenRole, TokenSettings};
use breach_notifier::dispatch::RunMode;
use breach_notifier::ops::http::{self, AppState, Readiness, page::Page};
use breach_notifier::ops::metrics::Metrics;
use breach_notifier::store::{CampaignState, Release, WaveSize};
use common::TestApp;
use common::smtp::{Behaviour, Script, SmtpServer};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// What the forecast assumes before a campaign sends: no configured limit (as the default).
const LIMITS: breach_notifier::campaign::forecast::Limits =
    breach_notifier::campaign::forecast::Limits {
        global_per_second: None,
    };

backends!(multi_thread:
    the_pages_show_progress_failures_and_daemons_without_personal_data,
    viewing_needs_a_token_once_viewer_tokens_exist,
    an_operator_pauses_resumes_and_cancels_with_a_reason,
    cross_site_and_malformed_requests_change_nothing,
    without_an_operator_token_the_page_is_read_only,
    an_operator_releases_the_next_wave,
    what_the_page_reads_never_reads_the_queue_or_the_attempt_log,
);

pub const OPERATOR: &str = "operator-token-0123456789abcdef";
pub const VIEWER: &str = "viewer-token-0123456789abcdef";

/// `[[http.tokens]]` as loading fills them: an operator `ops` and, when asked, a viewer `counsel`.
pub fn tokens(viewer: bool) -> Vec<TokenSettings> {
    let token = |name: &str, role, secret: &str| TokenSettings {
        name: name.into(),
        role,
        file: "unused".into(),
        secret: Some(SecretString::from(secret.to_string())),
    };
    let mut list = vec![token("ops", TokenRole::Operator, OPERATOR)];
    if viewer {
        list.push(token("counsel", TokenRole::Viewer, VIEWER));
    }
    list
}

/// The daemon's endpoint with the status page on a free loopback port.
pub async fn serve(
    t: &TestApp,
    tokens: &[TokenSettings],
) -> (http::Server, u16, watch::Sender<bool>) {
    let settings = HttpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..HttpSettings::default()
    };
    let listener = http::bind(&settings).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopping) = watch::channel(false);
    let state = AppState {
        metrics: Arc::new(Metrics::new()),
        readiness: Arc::new(Readiness::new(
            t.store.clone(),
            Settings::default().transport,
        )),
        stopping,
        webhooks: None,
        page: Some(Page::new(t.store.clone(), tokens, LIMITS).unwrap()),
    };
    (http::serve(listener, state), port, stop)
}

/// An answer: status, headers (names in lower case) and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request over a fresh connection, as a browser or curl sends it.
pub async fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    // A server may answer (413) before reading all of a large body: a failed write is not the test.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

pub async fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(port, "GET", path, headers, b"").await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A form POST from the page itself (same origin), with `auth` as its Authorization.
async fn post_form(port: u16, path: &str, auth: Option<&str>, body: &str) -> Reply {
    let mut headers = vec![
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    send(port, "POST", path, &headers, body.as_bytes()).await
}

async fn state(t: &TestApp, id: i64) -> CampaignState {
    t.store.require_campaign(id).await.unwrap().state
}

async fn the_pages_show_progress_failures_and_daemons_without_personal_data(t: TestApp) {
    let smtp = SmtpServer::start(Script::new().for_domain(
        "bad.example",
        Behaviour::reply(550, "5.1.1 no such mailbox"),
    ))
    .await;
    let mut rows: Vec<_> = (1..=6).map(|i| common::person(i, "example.com")).collect();
    rows.extend((7..=8).map(|i| common::person(i, "Bad.Example")));
    let id = t
        .campaign(&common::spec(None, "Your data"))
        .spec(&common::spec(None, "Your data"))
        .with(&rows)
        .started()
        .await;
    let settings = t.settings(&smtp);
    t.run_until_idle(&settings, Duration::from_secs(30)).await;

    // The counters behind the failures table: one group, the domain in lower case, no address.
    let groups = t.store.failure_groups(id, 10).await.unwrap();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let g = &groups[0];
    assert_eq!(
        (
            g.outcome.as_str(),
            g.smtp_code,
            g.enhanced.as_str(),
            g.domain.as_str(),
            g.attempts
        ),
        ("permanent", 550, "5.1.1", "bad.example", 2)
    );

    let (server, port, _stop) = serve(&t, &[]).await;
    let list = get(port, "/", &[]).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(list.body.contains("test campaign"), "{}", list.body);
    assert!(
        list.body.contains(r#"data-testid="sent">6<"#),
        "{}",
        list.body
    );
    assert!(
        list.body.contains(r#"data-testid="failed">2<"#),
        "{}",
        list.body
    );
    assert!(
        list.body.contains("href=\"campaigns/1\""),
        "relative links: {}",
        list.body
    );
    assert!(
        list.body.contains("href=\"assets/page.css\""),
        "{}",
        list.body
    );
    assert_eq!(list.header("x-robots-tag"), Some("noindex"));
    let csp = list.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(list.header("referrer-policy"), Some("same-origin"));

    let page = get(port, &format!("/campaigns/{id}"), &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for expected in [
        "<svg class=\"rate\"",
        "last 1h",
        "last 6h",
        "last 24h",
        "bad.example",
        "5.1.1",
        "<td>550</td>",
        "data-testid=\"daemons\"",
        "stopped",
        "src=\"../assets/page.js\"",
        "data-live=\"../campaigns/1/live\"",
        "<td>test</td>",
    ] {
        assert!(
            page.body.contains(expected),
            "{expected} missing: {}",
            page.body
        );
    }
    assert!(
        !page.body.contains("style="),
        "the CSP forbids style attributes"
    );
    assert!(!page.body.contains("<script>"), "no inline script");
    for r in &rows {
        let address = r.email.as_deref().unwrap();
        for text in [&list.body, &page.body] {
            assert!(
                !text.to_lowercase().contains(&address.to_lowercase()),
                "{address} shown"
            );
            assert!(
                !text.contains(r.first_name.as_deref().unwrap()),
                "a name shown"
            );
            assert!(!text.contains(&r.customer_id), "a customer id shown");
        }
    }
    let live = get(port, &format!("/campaigns/{id}/live"), &[]).await;
    assert_eq!(live.status, 200);
    assert!(live.body.contains("data-testid=\"counters\"") && !live.body.contains("<html"));
    let live = get(port, "/live", &[]).await;
    assert!(live.body.contains("test campaign") && !live.body.contains("<html"));

    // /api/status is status --json's data, byte for byte.
    let expected = breach_notifier::ops::status::collect(&t.store, None)
        .await
        .unwrap();
    let api = get(port, "/api/status", &[]).await;
    assert_eq!(api.status, 200);
    assert_eq!(api.header("content-type"), Some("application/json"));
    assert_eq!(
        api.body,
        format!("{}\n", serde_json::to_string_pretty(&expected).unwrap())
    );
    let one = get(port, &format!("/api/status/{id}"), &[]).await;
    // status ID --json's data: with the deadline forecast, as the CLI prints it.
    let (rows, forecast) =
        breach_notifier::ops::status::collect_with_forecast(&t.store, Some(id), LIMITS)
            .await
            .unwrap();
    let expected = breach_notifier::ops::status::to_json(&rows, forecast.as_ref()).unwrap();
    assert_eq!(one.body, format!("{expected}\n"));
    let one: serde_json::Value = serde_json::from_str(&one.body).unwrap();
    assert_eq!(one[0]["sent"], 6);
    assert_eq!(get(port, "/api/status/999", &[]).await.status, 404);
    assert_eq!(get(port, "/campaigns/999", &[]).await.status, 404);
    assert_eq!(get(port, "/campaigns/abc", &[]).await.status, 400);

    let js = get(port, "/assets/page.js", &[]).await;
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.body.contains("visibilitychange"));
    assert_eq!(get(port, "/assets/nope.js", &[]).await.status, 404);
    assert_eq!(get(port, "/healthz", &[]).await.body, "ok\n");
    server.shutdown().await;
    smtp.shutdown().await;
}

async fn viewing_needs_a_token_once_viewer_tokens_exist(t: TestApp) {
    let id = t
        .campaign(&common::spec(None, "x"))
        .spec(&common::spec(None, "x"))
        .await;
    let (server, port, _stop) = serve(&t, &tokens(true)).await;
    for path in ["/", "/live", &format!("/campaigns/{id}"), "/api/status"] {
        let anonymous = get(port, path, &[]).await;
        assert_eq!(anonymous.status, 401, "{path}");
        assert!(
            anonymous
                .header("www-authenticate")
                .unwrap()
                .starts_with("Basic realm=")
        );
        let wrong = get(
            port,
            path,
            &[("Authorization", &bearer("operator-token-0123456789abcdeX"))],
        )
        .await;
        assert_eq!(wrong.status, 401, "{path}");
        assert!(wrong.body.contains("wrong token"), "{}", wrong.body);
        for token in [VIEWER, OPERATOR] {
            let seen = get(port, path, &[("Authorization", &bearer(token))]).await;
            assert_eq!(seen.status, 200, "{path} {}", seen.body);
        }
    }
    // A browser's Basic credentials: any user name, the token as password.
    let basic = format!("Basic {}", base64_encode(&format!("anyone:{VIEWER}")));
    let page = get(port, "/", &[("Authorization", &basic)]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("signed in as counsel (viewer)"),
        "{}",
        page.body
    );
    // /login asks until it gets a token, then sends the browser back (relative, for a prefix).
    let login = get(port, "/login", &[]).await;
    assert_eq!(login.status, 401);
    assert!(login.header("www-authenticate").is_some());
    let login = get(port, "/login", &[("Authorization", &basic)]).await;
    assert_eq!((login.status, login.header("location")), (303, Some("./")));
    // The probes stay open.
    assert_eq!(get(port, "/healthz", &[]).await.status, 200);
    server.shutdown().await;
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn an_operator_pauses_resumes_and_cancels_with_a_reason(t: TestApp) {
    let rows: Vec<_> = (1..=3).map(|i| common::person(i, "example.com")).collect();
    let spec = common::spec(None, "x");
    let id = t.campaign(&spec).spec(&spec).with(&rows).started().await;
    let (server, port, _stop) = serve(&t, &tokens(true)).await;
    let op = bearer(OPERATOR);
    let base = format!("/campaigns/{id}");

    // The page offers pause to everyone (the POST asks for the token).
    let page = get(port, &base, &[("Authorization", &op)]).await;
    assert!(
        page.body
            .contains(&format!("action=\"../campaigns/{id}/pause\"")),
        "{}",
        page.body
    );

    let done = post_form(
        port,
        &format!("{base}/pause"),
        Some(&op),
        "reason=relay+maintenance",
    )
    .await;
    assert_eq!(
        (done.status, done.header("location")),
        (303, Some("../1")),
        "{}",
        done.body
    );
    assert_eq!(state(&t, id).await, CampaignState::Paused);
    // The cache was cleared: the next page shows the change at once.
    let page = get(port, &base, &[("Authorization", &op)]).await;
    assert!(
        page.body.contains(r#"data-testid="state">paused<"#),
        "{}",
        page.body
    );
    assert!(page.body.contains("http:ops") && page.body.contains("relay maintenance"));

    let done = post_form(
        port,
        &format!("{base}/resume"),
        Some(&op),
        "reason=relay+back",
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(state(&t, id).await, CampaignState::Running);
    // Resuming a running campaign is refused, and says why.
    let again = post_form(port, &format!("{base}/resume"), Some(&op), "reason=again").await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("not paused"), "{}", again.body);

    // Cancel asks first; only the confirmed form cancels.
    let asked = post_form(
        port,
        &format!("{base}/cancel"),
        Some(&op),
        "reason=sent+by+mistake",
    )
    .await;
    assert_eq!(asked.status, 200);
    assert!(
        asked.body.contains("Yes, cancel campaign #1"),
        "{}",
        asked.body
    );
    assert!(
        asked.body.contains("value=\"sent by mistake\""),
        "{}",
        asked.body
    );
    assert_eq!(state(&t, id).await, CampaignState::Running);
    let body = "confirm=yes&reason=sent+by+mistake";
    let done = post_form(port, &format!("{base}/cancel"), Some(&op), body).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(state(&t, id).await, CampaignState::Cancelled);

    let events = t.store.campaign_events(id).await.unwrap();
    let by_http: Vec<_> = events
        .iter()
        .filter(|e| e.actor == "http:ops")
        .map(|e| (e.to_state, e.reason.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        by_http,
        vec![
            (CampaignState::Paused, "relay maintenance".to_string()),
            (CampaignState::Running, "relay back".to_string()),
            (CampaignState::Cancelled, "sent by mistake".to_string()),
        ]
    );
    let unknown = post_form(port, &format!("{base}/delete"), Some(&op), "reason=x").await;
    assert_eq!(unknown.status, 404);
    let missing = post_form(port, "/campaigns/999/pause", Some(&op), "reason=x").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    server.shutdown().await;
}

/// Headers, body, the status expected and what its body says.
type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, u16, &'a str);

async fn cross_site_and_malformed_requests_change_nothing(t: TestApp) {
    let spec = common::spec(None, "x");
    let id = t.campaign(&spec).spec(&spec).started().await;
    let (server, port, _stop) = serve(&t, &tokens(true)).await;
    let path = format!("/campaigns/{id}/pause");
    let op = bearer(OPERATOR);
    let viewer = bearer(VIEWER);
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let reason = b"reason=x";

    let cases: Vec<Case> = vec![
        (
            vec![form, ("Sec-Fetch-Site", "same-origin")],
            reason.to_vec(),
            401,
            "operator token is needed",
        ),
        (
            vec![form, ("Authorization", "Bearer nope-nope-nope-nope-nope")],
            reason.to_vec(),
            401,
            "wrong token",
        ),
        (
            vec![form, ("Authorization", &viewer)],
            reason.to_vec(),
            403,
            "viewer",
        ),
        (
            vec![
                form,
                ("Authorization", &op),
                ("Sec-Fetch-Site", "cross-site"),
            ],
            reason.to_vec(),
            403,
            "cross-site",
        ),
        (
            vec![
                form,
                ("Authorization", &op),
                ("Sec-Fetch-Site", "same-site"),
            ],
            reason.to_vec(),
            403,
            "cross-site",
        ),
        (
            vec![
                form,
                ("Authorization", &op),
                ("Origin", "http://localhost:3000"),
            ],
            reason.to_vec(),
            403,
            "does not match Host",
        ),
        (
            vec![form, ("Authorization", &op)],
            b"".to_vec(),
            400,
            "reason is required",
        ),
        (
            vec![form, ("Authorization", &op)],
            b"reason=a&to=everyone".to_vec(),
            400,
            "unknown field",
        ),
        (
            vec![form, ("Authorization", &op)],
            b"reason=%FF%FE".to_vec(),
            400,
            "not UTF-8",
        ),
        (
            vec![("Content-Type", "application/json"), ("Authorization", &op)],
            b"{}".to_vec(),
            415,
            "send a form",
        ),
        (
            vec![form, ("Authorization", &op)],
            vec![b'a'; 17 * 1024],
            413,
            "",
        ),
    ];
    for (headers, body, status, says) in cases {
        let reply = send(port, "POST", &path, &headers, &body).await;
        assert_eq!(reply.status, status, "{headers:?}: {}", reply.body);
        assert!(reply.body.contains(says), "{headers:?}: {}", reply.body);
        assert_eq!(state(&t, id).await, CampaignState::Running, "{headers:?}");
    }
    // A GET cannot act.
    assert_eq!(
        get(port, &path, &[("Authorization", &op)]).await.status,
        405
    );
    // The same request from the page itself goes through.
    let origin = format!("http://127.0.0.1:{port}");
    let headers = [
        form,
        ("Authorization", op.as_str()),
        ("Origin", origin.as_str()),
    ];
    let done = send(port, "POST", &path, &headers, reason).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(state(&t, id).await, CampaignState::Paused);
    server.shutdown().await;
}

async fn without_an_operator_token_the_page_is_read_only(t: TestApp) {
    let spec = common::spec(None, "x");
    let id = t.campaign(&spec).spec(&spec).started().await;
    let (server, port, _stop) = serve(&t, &[]).await;
    let page = get(port, &format!("/campaigns/{id}"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("read-only"), "{}", page.body);
    assert!(!page.body.contains("<form"), "{}", page.body);
    let refused = post_form(
        port,
        &format!("/campaigns/{id}/pause"),
        Some(&bearer(OPERATOR)),
        "reason=x",
    )
    .await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("read-only"), "{}", refused.body);
    assert_eq!(state(&t, id).await, CampaignState::Running);
    server.shutdown().await;
}

async fn an_operator_releases_the_next_wave(t: TestApp) {
    let mut spec = common::spec(None, "x");
    spec.waves = vec![
        WaveSpec {
            size: WaveSize::Count(2),
            release: Release::Manual,
            hold_minutes: 0,
            max_failure_rate: Some(0.05),
            max_deferral_rate: None,
        },
        WaveSpec {
            size: WaveSize::Rest,
            release: Release::Manual,
            hold_minutes: 0,
            max_failure_rate: None,
            max_deferral_rate: None,
        },
    ];
    let rows: Vec<_> = (1..=5).map(|i| common::person(i, "example.com")).collect();
    let id = t.campaign(&spec).spec(&spec).with(&rows).started().await;
    let (server, port, _stop) = serve(&t, &tokens(false)).await;
    let op = bearer(OPERATOR);
    let page = get(port, &format!("/campaigns/{id}"), &[]).await;
    assert!(page.body.contains("Release the next wave"), "{}", page.body);
    let done = post_form(
        port,
        &format!("/campaigns/{id}/release-wave"),
        Some(&op),
        "reason=counsel+approved",
    )
    .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let waves = t.store.waves(id).await.unwrap();
    assert!(
        waves[0].released_at.is_some() && waves[1].released_at.is_none(),
        "{waves:?}"
    );
    let last = t.store.campaign_events(id).await.unwrap().pop().unwrap();
    assert_eq!(last.actor, "http:ops");
    assert_eq!(
        last.reason.as_deref(),
        Some("wave 1 released: counsel approved")
    );
    let page = get(port, &format!("/campaigns/{id}"), &[]).await;
    assert!(page.body.contains("failures ≤ 0.05"), "{}", page.body);
    server.shutdown().await;
}

/// The in-flight count a daemon reports with its heartbeat reaches the page's list of daemons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_is_listed_with_its_heartbeat() {
    let t = TestApp::sqlite().await;
    let smtp = SmtpServer::start(Script::new()).await;
    let rows: Vec<_> = (1..=3).map(|i| common::person(i, "example.com")).collect();
    let spec = common::spec(Some(1.0), "x");
    let id = t.campaign(&spec).spec(&spec).with(&rows).started().await;
    let settings = t.settings(&smtp);
    let daemon = t.spawn_daemon(&settings, RunMode::Forever);
    assert!(
        common::wait_until(Duration::from_secs(10), || async {
            !t.store
                .instances_since(chrono::Utc::now() - chrono::Duration::minutes(1))
                .await
                .unwrap()
                .is_empty()
        })
        .await
    );
    let (server, port, _stop) = serve(&t, &[]).await;
    let page = get(port, &format!("/campaigns/{id}"), &[]).await;
    assert!(page.body.contains("s ago</td>"), "{}", page.body);
    daemon.stop.send(true).unwrap();
    daemon.handle.await.unwrap().unwrap();
    server.shutdown().await;
    smtp.shutdown().await;
}

backends!(empty: failures_are_counted_by_cause_before_and_after_the_migration);

/// Migration 0013 counts the failed attempts already stored, then its trigger counts new ones the
/// same way: the enhanced status read from a raw reply and from lettre's wording, none from a reply
/// without one or with a malformed one, code 0 for no answer, sent attempts not at all.
async fn failures_are_counted_by_cause_before_and_after_the_migration(db: common::EmptyDb) {
    let postgres = db.url.starts_with("postgres");
    let at = if postgres {
        "'2026-01-01T00:00:00Z'"
    } else {
        "1767225600000"
    };
    let setup = "INSERT INTO campaigns (name, definition, content_hash) VALUES ('old', '', 'x');\n\
        INSERT INTO recipients (campaign_id, customer_id, email, status) VALUES \
        (1, 'A', 'a@Example.COM', 'failed'), (1, 'B', 'b@other.example', 'deferred')";
    let attempts = format!(
        "INSERT INTO delivery_attempts (recipient_id, campaign_id, attempt, instance, started_at, \
         finished_at, outcome, smtp_code, reply, message_id) VALUES \
         (1, 1, 1, 'd', {at}, {at}, 'permanent', 550, 'permanent error (550): 5.1.1 no such user', 'm1'), \
         (2, 1, 1, 'd', {at}, {at}, 'transient', 451, '451 4.7.1 try again later', 'm2'), \
         (2, 1, 2, 'd', {at}, {at}, 'transient', NULL, 'Connection error: refused', 'm3'), \
         (1, 1, 2, 'd', {at}, {at}, 'permanent', 554, 'permanent error (554): 5.7.1.2 odd', 'm4'), \
         (2, 1, 3, 'd', {at}, {at}, 'sent', 250, '250 2.0.0 queued as X', 'm5')"
    );
    let store = common::migrate_around(&db.url, 13, &[setup, &attempts]).await;
    let read = "SELECT outcome, smtp_code, enhanced, domain, CAST(attempts AS BIGINT) \
         FROM failure_counters ORDER BY 1, 2, 3, 4";
    let backfilled: Vec<(String, i32, String, String, i64)> = common::rows(&store, read).await;
    common::sql(&store, &attempts.replace("'m", "'n")).await;
    let counted: Vec<(String, i32, String, String, i64)> = common::rows(&store, read).await;
    let row = |o: &str, c, e: &str, d: &str, n| (o.to_string(), c, e.to_string(), d.to_string(), n);
    let expected = |n| {
        vec![
            row("permanent", 550, "5.1.1", "example.com", n),
            row("permanent", 554, "", "example.com", n),
            row("transient", 0, "", "other.example", n),
            row("transient", 451, "4.7.1", "other.example", n),
        ]
    };
    assert_eq!(backfilled, expected(1));
    assert_eq!(counted, expected(2));
}

/// `demo --serve` on a free port: the page of the example campaign, moving, with the operator token
/// it printed; SIGTERM ends it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_shows_the_example_campaign() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::command(dir.path())
        .args(["demo", "--serve"])
        .env("BREACH_NOTIFIER__HTTP__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut page, mut token) = (None, None);
    while page.is_none() || token.is_none() {
        let line = lines
            .next()
            .expect("demo prints the page and a token")
            .unwrap();
        if let Some(rest) = line.split("status page: http://").nth(1) {
            page = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.split("and the password ").nth(1) {
            token = Some(rest.trim().to_string());
        }
    }
    let (page, token) = (page.unwrap(), token.unwrap());
    let (addr, path) = page.split_once('/').unwrap();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let reply = get(port, &format!("/{path}"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.body.contains("Notice of Data Breach"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("data-testid=\"do-pause\""),
        "{}",
        reply.body
    );
    let auth = bearer(&token);
    let paused = post_form(
        port,
        &format!("/{path}/pause"),
        Some(&auth),
        "reason=looking",
    )
    .await;
    assert_eq!(paused.status, 303, "{}", paused.body);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exited.success(), "{exited:?}");
}

/// The plan of every query behind the page names neither `recipients` nor `delivery_attempts`: the
/// page's cost does not grow with the campaign (counters, send buckets, instances, events).
async fn what_the_page_reads_never_reads_the_queue_or_the_attempt_log(t: TestApp) {
    use breach_notifier::store::Store;
    let id = t
        .campaign(&common::spec(None, "x"))
        .with(&[common::person(1, "example.com")])
        .await;
    let queries = [
        format!("SELECT * FROM campaign_progress WHERE campaign_id = {id}"),
        format!("SELECT * FROM wave_progress WHERE campaign_id = {id}"),
        format!("SELECT * FROM jurisdiction_progress WHERE campaign_id = {id}"),
        format!(
            "SELECT outcome, smtp_code, enhanced, domain, attempts, last_at FROM failure_counters \
             WHERE campaign_id = {id} ORDER BY attempts DESC, outcome, smtp_code, enhanced, domain LIMIT 25"
        ),
        format!(
            "SELECT CAST(bucket / 900 * 900 AS BIGINT) AS start, CAST(sum(attempts) AS BIGINT), \
             CAST(sum(sent) AS BIGINT), CAST(sum(failed) AS BIGINT) FROM send_buckets \
             WHERE campaign_id = {id} AND bucket >= 0 GROUP BY 1 ORDER BY 1"
        ),
        "SELECT id, hostname, version, started_at, heartbeat_at, stopped_at, in_flight FROM instances \
         WHERE heartbeat_at > CURRENT_TIMESTAMP ORDER BY id"
            .to_string(),
        format!("SELECT * FROM campaign_events WHERE campaign_id = {id} ORDER BY id"),
    ];
    for query in queries {
        let plan: Vec<String> = match &t.store {
            Store::Postgres(s) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {query}")))
                    .fetch_all(s.pool())
                    .await
                    .unwrap()
            }
            Store::Sqlite(s) => sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(
                format!("EXPLAIN QUERY PLAN {query}"),
            ))
            .fetch_all(s.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|(_, _, _, detail)| detail)
            .collect(),
        };
        let plan = plan.join("\n");
        assert!(!plan.contains("recipients"), "{query}:\n{plan}");
        assert!(!plan.contains("delivery_attempts"), "{query}:\n{plan}");
    }
}
