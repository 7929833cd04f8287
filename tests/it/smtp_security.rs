//! The SMTP client's security settings against a real TLS-speaking SMTP server (tests/it/common/smtp.rs
//! with a certificate authority made for each test): STARTTLS is required by default and really used,
//! implicit TLS works, a private CA is trusted only when configured, a relay that does not offer
//! STARTTLS is refused rather than spoken to in the clear, and AUTH sends the configured credentials
//! (wrong ones are a clear error). The transport does not depend on the database, so these run on
//! SQLite only.

use crate::common;

use std::time::Duration;

use breach_notifier::config::{Settings, SmtpTls};
use breach_notifier::transport::Transport;
use common::TestApp;
use common::smtp::{Script, SmtpServer, TestCa, TlsMode};
use common::*;

/// Settings for `smtp` reached as `localhost` (the name in the test certificate).
fn secure_settings(
    t: &TestApp,
    smtp: &SmtpServer,
    tls: SmtpTls,
    ca_file: &std::path::Path,
) -> Settings {
    let mut s = t.settings(smtp);
    s.transport.smtp.host = "localhost".into();
    s.transport.smtp.tls = tls;
    s.transport.smtp.ca_file = Some(ca_file.to_path_buf());
    s
}

fn write_ca(ca: &TestCa) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay-ca.pem");
    std::fs::write(&path, &ca.ca_pem).unwrap();
    (dir, path)
}

/// A relay speaking TLS as `mode` says that accepts only notifier / correct horse.
async fn relay_with_auth(mode: TlsMode) -> SmtpServer {
    SmtpServer::start(
        Script::new()
            .tls(mode)
            .require_credentials("notifier", "correct horse"),
    )
    .await
}

fn log_in(s: &mut Settings, password: &str) {
    s.transport.smtp.username = Some("notifier".into());
    s.transport.smtp.password = Some(password.to_string().into());
}

/// Runs the daemon until `n` recipients of campaign `id` are deferred (or 20 s pass), stops it, and
/// says whether they were.
async fn all_deferred(t: &TestApp, s: &Settings, id: i64, n: i64) -> bool {
    let r = t.spawn_daemon(s, breach_notifier::dispatch::RunMode::Forever);
    let deferred = wait_until(Duration::from_secs(20), || async {
        t.progress(id).await.deferred == n
    })
    .await;
    r.stop.send(true).unwrap();
    r.handle.await.unwrap().unwrap();
    deferred
}

async fn campaign_of(t: &TestApp, n: usize) -> i64 {
    let rows: Vec<_> = (0..n).map(|i| person(i, "example.com")).collect();
    t.campaign(&spec(None, "Hello")).with(&rows).started().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_private_ca_and_auth_carries_every_notice() {
    let ca = TestCa::new();
    let (_dir, ca_file) = write_ca(&ca);
    let smtp = relay_with_auth(TlsMode::Starttls(ca.server.clone())).await;
    let t = common::sqlite().await;
    let id = campaign_of(&t, 6).await;
    let mut s = secure_settings(&t, &smtp, SmtpTls::Starttls, &ca_file);
    log_in(&mut s, "correct horse");
    t.run_until_idle(&s, Duration::from_secs(60)).await;

    assert_eq!(t.progress(id).await.sent, 6);
    let received = smtp.received();
    assert_eq!(received.len(), 6);
    for m in &received {
        assert!(m.tls, "a notice crossed the network in the clear");
        assert_eq!(m.auth_user.as_deref(), Some("notifier"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_with_auth_carries_every_notice() {
    // The pool does this handshake itself (not lettre), so it gets the same checks as STARTTLS.
    let ca = TestCa::new();
    let (_dir, ca_file) = write_ca(&ca);
    let smtp = relay_with_auth(TlsMode::Implicit(ca.server.clone())).await;
    let t = common::sqlite().await;
    let id = campaign_of(&t, 4).await;
    let mut s = secure_settings(&t, &smtp, SmtpTls::Implicit, &ca_file);
    log_in(&mut s, "correct horse");
    t.run_until_idle(&s, Duration::from_secs(60)).await;

    assert_eq!(t.progress(id).await.sent, 4);
    let received = smtp.received();
    assert_eq!(received.len(), 4);
    for m in &received {
        assert!(m.tls);
        assert_eq!(m.auth_user.as_deref(), Some("notifier"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_refuses_an_unknown_ca_and_an_unusable_ca_file() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start(Script::new().tls(TlsMode::Implicit(ca.server.clone()))).await;
    let t = common::sqlite().await;
    let mut s = t.settings(&smtp);
    s.transport.smtp.host = "localhost".into();
    s.transport.smtp.tls = SmtpTls::Implicit;
    let err = Transport::from_settings(&s.transport)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("certificate"), "{err}");
    assert!(err.contains("transport.smtp.ca_file"), "{err}");
    assert_eq!(smtp.received_count(), 0);

    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    s.transport.smtp.ca_file = Some(not_pem);
    let err = Transport::from_settings(&s.transport)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("transport.smtp.ca_file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_is_refused_and_nothing_is_sent() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start(Script::new().tls(TlsMode::Starttls(ca.server.clone()))).await;
    let t = common::sqlite().await;
    // No ca_file: the system roots do not know the test CA.
    let mut s = t.settings(&smtp);
    s.transport.smtp.host = "localhost".into();
    s.transport.smtp.tls = SmtpTls::Starttls;
    let transport = Transport::from_settings(&s.transport).unwrap();
    let err = transport.check().await.unwrap_err().to_string();
    assert!(err.contains("localhost"), "{err}");
    assert!(err.contains("certificate"), "the error says why: {err}");
    assert!(
        err.contains("transport.smtp.ca_file"),
        "and what to set: {err}"
    );

    // The daemon defers (never fails, never sends in the clear) while the relay is not trusted.
    let id = campaign_of(&t, 3).await;
    let deferred = all_deferred(&t, &s, id, 3).await;
    let p = t.progress(id).await;
    assert!(deferred, "{p:?}");
    assert_eq!((p.sent, p.failed), (0, 0));
    assert_eq!(smtp.received_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_starttls_is_refused_when_tls_is_required() {
    let ca = TestCa::new();
    let (_dir, ca_file) = write_ca(&ca);
    // A plain relay (or a man in the middle stripping STARTTLS from the EHLO reply).
    let smtp = SmtpServer::start(Script::new()).await;
    let t = common::sqlite().await;
    let s = secure_settings(&t, &smtp, SmtpTls::Starttls, &ca_file);
    let transport = Transport::from_settings(&s.transport).unwrap();
    let err = transport.check().await.unwrap_err().to_string();
    assert!(err.contains("STARTTLS"), "{err}");
    assert!(err.contains("transport.smtp.tls"), "{err}");

    let id = campaign_of(&t, 2).await;
    let deferred = all_deferred(&t, &s, id, 2).await;
    assert!(deferred);
    assert_eq!(smtp.received_count(), 0, "nothing was sent in the clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_clear_error() {
    let ca = TestCa::new();
    let (_dir, ca_file) = write_ca(&ca);
    let smtp = relay_with_auth(TlsMode::Starttls(ca.server.clone())).await;
    let t = common::sqlite().await;
    let mut s = secure_settings(&t, &smtp, SmtpTls::Starttls, &ca_file);
    log_in(&mut s, "battery staple");
    let err = Transport::from_settings(&s.transport)
        .unwrap()
        .check()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("535"), "{err}");
    assert!(
        !err.contains("battery staple"),
        "the password is never printed: {err}"
    );

    log_in(&mut s, "correct horse");
    Transport::from_settings(&s.transport)
        .unwrap()
        .check()
        .await
        .expect("the right password works");
}
