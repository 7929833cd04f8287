//! The delivery guarantee under the worst case: the daemon process killed with SIGKILL mid-campaign
//! (not dropped: no destructor, no drain), then restarted. Checked against what the SMTP server
//! actually received: everyone is notified, nobody is left unfinished, and duplicates (same
//! Message-ID twice) number no more than the in-flight bound.
//!
//! And the one-daemon rule of SQLite across a SIGKILL: the lock dies with the process, so a restart
//! at once is admitted and dispatches, while a second daemon beside a live one is refused.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use breach_notifier::campaign::{CampaignSpec, LocaleTemplates, RateSpec, SenderSpec};
use breach_notifier::store::*;
use common::smtp::{Behaviour, Script, SmtpServer};

const RECIPIENTS: usize = 400;
const MAX_IN_FLIGHT: usize = 24;

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
        name: "crash test".into(),
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

fn daemon(url: &str, smtp_port: u16) -> tokio::process::Child {
    let dir = std::env::temp_dir();
    tokio::process::Command::from(common::command_with_relay(&dir, url, smtp_port))
        .arg("run")
        .env(
            "BREACH_NOTIFIER__DISPATCH__MAX_IN_FLIGHT",
            MAX_IN_FLIGHT.to_string(),
        )
        .env("BREACH_NOTIFIER__DISPATCH__BATCH_SIZE", "8")
        .env("BREACH_NOTIFIER__DISPATCH__CONCURRENCY", "8")
        .env("BREACH_NOTIFIER__DISPATCH__LEASE_SECS", "3")
        .env("BREACH_NOTIFIER__DISPATCH__HEARTBEAT_SECS", "1")
        .env("BREACH_NOTIFIER__DISPATCH__RESCAN_SECS", "1")
        .env("BREACH_NOTIFIER__DISPATCH__POLL_INTERVAL_MS", "100")
        .env("BREACH_NOTIFIER__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the daemon")
}

async fn killed_and_restarted(t: common::TestApp) {
    // Every message takes a little while, so many are in flight when the kill comes.
    let smtp = SmtpServer::start(
        Script::new().default_behaviour(Behaviour::SlowData(Duration::from_millis(30))),
    )
    .await;
    let s = spec();
    let rows: Vec<_> = (0..RECIPIENTS)
        .map(|i| NewRecipient {
            customer_id: format!("K{i:05}"),
            email: Some(format!("k{i}@example.com")),
            first_name: Some("K".into()),
            electronic_consent: true,
            ..Default::default()
        })
        .collect();
    let id = t.campaign(&s).with(&rows).started().await;

    let mut kills = 0;
    for round in 1..=3 {
        let mut child = daemon(&t.url, smtp.port());
        let target = round * RECIPIENTS / 5;
        let reached = smtp.wait_for(target, Duration::from_secs(60)).await;
        assert!(
            reached,
            "round {round}: only {} received",
            smtp.received_count()
        );
        child.start_kill().expect("SIGKILL");
        child.wait().await.unwrap();
        kills += 1;
        // Let the dead daemon's leases lapse, so the next one starts with them due again.
        tokio::time::sleep(Duration::from_millis(3500)).await;
    }
    let mut child = daemon(&t.url, smtp.port());
    let finished = async {
        loop {
            let p = t.store.progress(Some(id)).await.unwrap().remove(0);
            if p.state == CampaignState::Completed {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let p = tokio::time::timeout(Duration::from_secs(120), finished)
        .await
        .expect("the campaign completes after the crashes");
    child.start_kill().unwrap();
    child.wait().await.unwrap();

    assert_eq!(
        (p.sent, p.queued, p.deferred, p.failed),
        (RECIPIENTS as i64, 0, 0, 0),
        "everyone reached a final state"
    );
    let counts = smtp.count_by_message_id();
    let mut lost = 0;
    for i in 0..RECIPIENTS {
        let r = t
            .store
            .recipient_by_customer(id, &format!("K{i:05}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, RecipientStatus::Sent);
        assert!(r.lease_owner.is_none());
        if !counts.contains_key(r.message_id.as_deref().unwrap()) {
            lost += 1;
        }
    }
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    println!(
        "kills {kills}: received {}, lost {lost}, duplicated {duplicates}",
        smtp.received_count()
    );
    assert_eq!(lost, 0, "every notice reached the relay at least once");
    assert!(
        duplicates <= kills * MAX_IN_FLIGHT,
        "duplicates {duplicates} exceed the in-flight bound {}",
        kills * MAX_IN_FLIGHT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_on_postgres() {
    killed_and_restarted(common::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_on_sqlite() {
    killed_and_restarted(common::sqlite().await).await;
}

/// `breach-notifier run` on the embedded default (SQLite, file outbox in `dir`), its standard error in
/// `dir/LOG`. With nothing to do it stays up until a signal. Heartbeats keep their default period
/// (5 s, live for 15 s), so a killed daemon still looks alive to anyone reading `instances`.
fn sqlite_daemon(dir: &Path, url: &str, log: &str) -> tokio::process::Child {
    let stderr = std::fs::File::create(dir.join(log)).unwrap();
    tokio::process::Command::from(common::cli(dir, url))
        .arg("run")
        .env("BREACH_NOTIFIER__TRANSPORT__KIND", "file")
        .env("BREACH_NOTIFIER__DISPATCH__POLL_INTERVAL_MS", "100")
        .env("BREACH_NOTIFIER__LOG__LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(true)
        .spawn()
        .expect("start the daemon")
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// The lock file beside the test database (`sqlite://DIR/test.db`).
fn lock_file(url: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}.daemon.lock",
        url.trim_start_matches("sqlite://")
    ))
}

async fn live(t: &common::TestApp) -> Vec<String> {
    t.store
        .live_instances(chrono::Utc::now(), Duration::from_secs(60))
        .await
        .unwrap()
}

/// Waits until `child` dispatches (its heartbeat is in `instances`); returns its instance id
/// (`HOST-PID`). Fails if it exits first.
async fn dispatching(
    t: &common::TestApp,
    child: &mut tokio::process::Child,
    dir: &Path,
    log_name: &str,
) -> String {
    let suffix = format!("-{}", child.id().expect("running"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}) instead of running:\n{}",
                log(dir, log_name)
            );
        }
        if let Some(id) = live(t).await.into_iter().find(|i| i.ends_with(&suffix)) {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not start within 30 s:\n{}",
            log(dir, log_name)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restart_right_after_sigkill_is_admitted() {
    let t = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = sqlite_daemon(dir.path(), &t.url, "first.log");
    let first_id = dispatching(&t, &mut first, dir.path(), "first.log").await;
    first.start_kill().expect("SIGKILL");
    first.wait().await.unwrap();
    assert!(
        live(&t).await.contains(&first_id),
        "the dead daemon's heartbeat still looks alive: a rule by heartbeat would refuse the restart"
    );

    // At once, as a person or systemd restarts it.
    let mut second = sqlite_daemon(dir.path(), &t.url, "second.log");
    let second_id = dispatching(&t, &mut second, dir.path(), "second.log").await;
    assert_ne!(first_id, second_id);
    assert_eq!(
        std::fs::read_to_string(lock_file(&t.url)).unwrap(),
        format!("{second_id}\n"),
        "the lock file names the daemon that holds it"
    );

    // It dispatches: a campaign started now is sent.
    let s = spec();
    let rows: Vec<_> = (0..5)
        .map(|i| NewRecipient {
            customer_id: format!("R{i}"),
            email: Some(format!("r{i}@example.com")),
            first_name: Some("R".into()),
            electronic_consent: true,
            ..Default::default()
        })
        .collect();
    let id = t.campaign(&s).with(&rows).started().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let p = loop {
        let p = t.store.progress(Some(id)).await.unwrap().remove(0);
        if p.state == CampaignState::Completed {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted daemon did not send the campaign: {p:?}\n{}",
            log(dir.path(), "second.log")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(p.sent, 5);
    let sent_files = std::fs::read_dir(dir.path().join("outbox"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count();
    assert_eq!(sent_files, 5, "one .eml per notice in the outbox");

    let exit = terminate(&mut second).await;
    assert!(
        exit.success(),
        "exit 0 after SIGTERM, got {exit}:\n{}",
        log(dir.path(), "second.log")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_second_daemon_beside_a_live_one_is_refused() {
    let t = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = sqlite_daemon(dir.path(), &t.url, "first.log");
    let first_id = dispatching(&t, &mut first, dir.path(), "first.log").await;

    let mut second = sqlite_daemon(dir.path(), &t.url, "second.log");
    let exit = tokio::time::timeout(Duration::from_secs(30), second.wait())
        .await
        .expect("the second daemon exits")
        .unwrap();
    let logs = log(dir.path(), "second.log");
    assert!(!exit.success(), "refused with a non-zero exit: {logs}");
    assert!(
        logs.contains(&format!(
            "another daemon ({first_id}) is running on this SQLite database; SQLite allows one daemon (use PostgreSQL for several)"
        )),
        "{logs}"
    );

    // The first one is untouched: still running, still named in the lock file.
    assert!(first.try_wait().unwrap().is_none(), "the first daemon runs");
    assert_eq!(
        std::fs::read_to_string(lock_file(&t.url)).unwrap(),
        format!("{first_id}\n")
    );

    // A clean stop releases the lock as well: the next daemon is admitted.
    let exit = terminate(&mut first).await;
    assert!(exit.success(), "exit 0 after SIGTERM, got {exit}");
    let mut third = sqlite_daemon(dir.path(), &t.url, "third.log");
    dispatching(&t, &mut third, dir.path(), "third.log").await;
    let exit = terminate(&mut third).await;
    assert!(exit.success(), "exit 0 after SIGTERM, got {exit}");
}
