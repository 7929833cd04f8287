//! Asynchronous bounces end to end on both backends: notices sent over real SMTP with signed VERP
//! envelope senders, reports taken in by the binary (`bounce ingest` on standard input, as an MTA's
//! pipe runs it), processed, and their effect on statuses, counters, exports and the guard.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use breach_notifier::bounce::process::process_pending;
use breach_notifier::campaign::{Release, WaveSize, WaveSpec};
use breach_notifier::config::{BounceKeys, Settings};
use breach_notifier::dispatch::RunMode;
use breach_notifier::ops::export::{ExportKind, ExportOptions, Format, export};
use breach_notifier::store::{CampaignState, Recipient, RecipientStatus};

use crate::common::smtp::{Script, SmtpServer};
use crate::common::{self, TestApp};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-test-key";
const BOUNCE_DOMAIN: &str = "bounces.example.org";

backends!(
    multi_thread:
    bounces_change_exactly_the_recipients_they_name,
    ingest_stores_each_report_once_and_fails_only_temporarily,
    a_domain_that_rejects_for_policy_is_held_not_sent_to_postal,
    a_maildir_is_stored_then_moved_to_cur,
);

/// Settings with VERP signing, and the same as a configuration file for the binary.
fn bounce_settings(t: &TestApp, smtp: &SmtpServer, dir: &Path) -> Settings {
    let key_file = dir.join("bounce.key");
    std::fs::write(&key_file, KEY).unwrap();
    let mut s = t.settings(smtp);
    s.bounces.domain = Some(BOUNCE_DOMAIN.into());
    s.bounces.key_files = vec![key_file.clone()];
    s.bounces.keys = BounceKeys(vec![KEY.to_vec()]);
    s.bounces.guard_min_failures = 5;
    std::fs::write(
        dir.join("bn.toml"),
        format!(
            "[bounces]\ndomain = \"{BOUNCE_DOMAIN}\"\nkey_files = [\"{}\"]\nguard_min_failures = 5\n",
            key_file.display()
        ),
    )
    .unwrap();
    s
}

/// `breach-notifier bounce …` with the test's configuration file.
fn bounce_cli(t: &TestApp, dir: &Path) -> Command {
    let mut cmd = t.cli(dir);
    cmd.arg("--config").arg(dir.join("bn.toml")).arg("bounce");
    cmd
}

/// `bounce ingest` with `message` on standard input.
fn ingest(mut cmd: Command, envelope_to: Option<&str>, message: &[u8]) -> Output {
    cmd.arg("ingest");
    if let Some(to) = envelope_to {
        cmd.args(["--envelope-to", to]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    child.wait_with_output().unwrap()
}

/// An RFC 3464 report about `rcpt` with `action` and `status`, delivered to `to`, quoting
/// `message_id` in the returned headers.
fn dsn(to: &str, rcpt: &str, action: &str, status: &str, message_id: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@relay.example.net\r\nTo: {to}\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <dsn.{status}.{rcpt}@relay.example.net>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay.example.net\r\n\r\n\
         Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n\
         Diagnostic-Code: smtp; 550 {status} <{rcpt}>: refused\r\n\r\n\
         --B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n\
         Subject: Notice of Data Breach\r\n\r\n--B--\r\n"
    )
    .into_bytes()
}

/// An RFC 3834 automatic reply to `message_id`.
fn auto_reply(to: &str, message_id: &str) -> Vec<u8> {
    format!(
        "From: someone@example.net\r\nTo: {to}\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n\
         In-Reply-To: {message_id}\r\nMessage-ID: <ooo.1@example.net>\r\n\r\nI am away until Monday.\r\n"
    )
    .into_bytes()
}

/// [`dsn`] naming no Message-ID of ours but the relay's queue id, as Postfix's DSNs do.
fn dsn_by_queue_id(to: &str, rcpt: &str, queue_id: &str) -> Vec<u8> {
    String::from_utf8(dsn(to, rcpt, "failed", "5.1.1", "<not.ours@example.org>"))
        .unwrap()
        .replace(
            "Reporting-MTA: dns; relay.example.net\r\n",
            &format!("Reporting-MTA: dns; relay.example.net\r\nX-Postfix-Queue-ID: {queue_id}\r\n"),
        )
        .into_bytes()
}

/// Sends `n` notices to `domain` and returns, per recipient in id order, the recipient, its
/// envelope sender and Message-ID as the relay saw them.
async fn send(
    t: &TestApp,
    settings: &Settings,
    smtp: &SmtpServer,
    n: usize,
    domain: &str,
) -> Vec<(Recipient, String, String)> {
    let rows: Vec<_> = (0..n).map(|i| common::person(i, domain)).collect();
    let spec = common::spec(None, "Your data was exposed.");
    let id = t.campaign(&spec).with(&rows).started().await;
    t.run_until_idle(settings, Duration::from_secs(30)).await;
    let recipients = t.store.recipients_after(id, 0, 10_000).await.unwrap();
    let received = smtp.received();
    recipients
        .into_iter()
        .map(|r| {
            let email = r.email.clone().unwrap();
            let m = received
                .iter()
                .find(|m| m.rcpt_to.contains(&email))
                .expect("sent");
            (r, m.mail_from.clone(), m.message_id.clone().unwrap())
        })
        .collect()
}

async fn status_of(t: &TestApp, id: i64) -> RecipientStatus {
    t.store.recipient(id).await.unwrap().unwrap().status
}

async fn bounces_change_exactly_the_recipients_they_name(t: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(Script::new()).await;
    let settings = bounce_settings(&t, &smtp, dir.path());
    let sent = send(&t, &settings, &smtp, 7, "example.net").await;
    let email = |i: usize| sent[i].0.email.clone().unwrap();
    let queue_ids: Vec<String> = sent
        .iter()
        .map(|(r, _, _)| {
            let to = r.email.clone().unwrap();
            let m = smtp
                .received()
                .into_iter()
                .find(|m| m.rcpt_to.contains(&to))
                .unwrap();
            m.queue_id.unwrap()
        })
        .collect();
    for (r, verp, _) in &sent {
        assert!(
            verp.starts_with("bounce+") && verp.ends_with(BOUNCE_DOMAIN),
            "{verp}"
        );
        assert!(!verp.contains(&r.id.to_string()) || verp.len() > 20);
    }
    let reports: Vec<(Option<String>, Vec<u8>)> = vec![
        // 0: a permanent failure through its VERP address: bounced.
        (
            Some(sent[0].1.clone()),
            dsn(&sent[0].1, &email(0), "failed", "5.1.1", &sent[0].2),
        ),
        // 1: delayed: still pending, changes nothing.
        (
            Some(sent[1].1.clone()),
            dsn(&sent[1].1, &email(1), "delayed", "4.4.7", &sent[1].2),
        ),
        // 2: an automatic reply: evidence of delivery, never a failure.
        (Some(sent[2].1.clone()), auto_reply(&sent[2].1, &sent[2].2)),
        // 3: a forged token and no Message-ID of ours: matches nobody.
        (
            Some(sent[3].1.replace("bounce+", "bounce+zz")),
            dsn(
                &sent[3].1.replace("bounce+", "bounce+zz"),
                &email(3),
                "failed",
                "5.1.1",
                "<x@y>",
            ),
        ),
        // 4: no VERP address (a relay that rewrote it), but our Message-ID: bounced.
        (
            None,
            dsn(
                "postmaster@example.org",
                &email(4),
                "failed",
                "5.2.2",
                &sent[4].2,
            ),
        ),
        // 5: a Message-ID of our form for recipient 5 that is not the one we sent: nobody.
        (
            None,
            dsn(
                "postmaster@example.org",
                &email(5),
                "failed",
                "5.1.1",
                &format!("<bn.1.{}.000000000000@example.com>", sent[5].0.id),
            ),
        ),
        // 6: neither a token nor our Message-ID, but the relay's queue id: bounced.
        (
            None,
            dsn_by_queue_id("postmaster@example.org", &email(6), &queue_ids[6]),
        ),
    ];
    for (to, message) in &reports {
        let out = ingest(bounce_cli(&t, dir.path()), to.as_deref(), message);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The same report again is stored once.
    let again = ingest(
        bounce_cli(&t, dir.path()),
        reports[0].0.as_deref(),
        &reports[0].1,
    );
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already stored"));

    let out = bounce_cli(&t, dir.path()).arg("process").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("processed 7 reports: 3 recipients bounced"),
        "{said}"
    );
    assert!(said.contains("2 reports matched no recipient"), "{said}");

    let expected = [
        RecipientStatus::Bounced,
        RecipientStatus::Sent,
        RecipientStatus::Sent,
        RecipientStatus::Sent,
        RecipientStatus::Bounced,
        RecipientStatus::Sent,
        RecipientStatus::Bounced,
    ];
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(status_of(&t, sent[i].0.id).await, *want, "recipient {i}");
    }
    let campaign = sent[0].0.campaign_id;
    let p = t.progress(campaign).await;
    assert_eq!((p.sent, p.bounced, p.total), (4, 3, 7));

    // Processing again finds nothing to do: the reports are done.
    let out = bounce_cli(&t, dir.path()).arg("process").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("processed 0 reports"));

    check_exports(
        &t,
        campaign,
        &[sent[0].0.id, sent[4].0.id, sent[6].0.id],
        &email(0),
    )
    .await;
}

/// The postal list holds exactly the bounced; the evidence says when and why, with no address.
async fn check_exports(t: &TestApp, campaign: i64, bounced: &[i64], an_address: &str) {
    let opts = ExportOptions::new(campaign, ExportKind::Postal, Format::JsonLines);
    let (_, bytes) = export(&t.store, &opts, Vec::new()).await.unwrap();
    let postal: Vec<serde_json::Value> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<i64> = postal
        .iter()
        .map(|v| v["recipient_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, bounced);
    assert!(
        postal
            .iter()
            .all(|v| v["reason"].as_str().unwrap().contains("bounced"))
    );

    let opts = ExportOptions::new(campaign, ExportKind::Evidence, Format::JsonLines);
    let (_, bytes) = export(&t.store, &opts, Vec::new()).await.unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(!text.contains(an_address), "the evidence holds no address");
    let first: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["recipient_id"] == bounced[0])
        .unwrap();
    assert_eq!(first["status"], "bounced");
    assert_eq!(first["bounce_status"], "5.1.1");
    assert!(first["bounced_at"].is_string());
    assert!(
        first["bounce_diagnostic"]
            .as_str()
            .unwrap()
            .contains("…@example.net")
    );
    assert_eq!(first["postal_followup"], true);
}

async fn ingest_stores_each_report_once_and_fails_only_temporarily(t: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(Script::new()).await;
    let _ = bounce_settings(&t, &smtp, dir.path());
    // Garbage is stored (for review), never refused: a refusal would bounce the bounce.
    let out = ingest(
        bounce_cli(&t, dir.path()),
        None,
        b"\xff\xfe not a message at all",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The database unavailable: 75, so the MTA keeps the message and tries again.
    let mut down = common::command(dir.path());
    down.env(
        "BREACH_NOTIFIER__DATABASE__URL",
        if t.url.starts_with("postgres") {
            "postgres://postgres@127.0.0.1:1/none".to_string()
        } else {
            format!("sqlite://{}/missing/dir/db.sqlite", dir.path().display())
        },
    )
    .arg("--config")
    .arg(dir.path().join("bn.toml"))
    .arg("bounce");
    let out = ingest(down, None, b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(
        out.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A broken configuration is temporary too.
    let mut broken = t.cli(dir.path());
    broken
        .env("BREACH_NOTIFIER__BOUNCES__POLL_SECONDS", "0")
        .arg("bounce");
    let out = ingest(broken, None, b"Subject: x\r\n\r\nbody\r\n");
    assert_eq!(out.status.code(), Some(75));

    let round = process_pending(&t.store, &Default::default(), "test", 10)
        .await
        .unwrap();
    assert_eq!(
        (round.reports, round.unmatched, round.applied.bounced),
        (1, 1, 0)
    );
}

async fn a_domain_that_rejects_for_policy_is_held_not_sent_to_postal(t: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(Script::new()).await;
    let settings = bounce_settings(&t, &smtp, dir.path());
    // A second wave waits for an operator, so the campaign is still running when the bounces come.
    let mut spec = common::spec(None, "Your data was exposed.");
    spec.waves = vec![
        wave(WaveSize::Count(8), Release::Auto),
        wave(WaveSize::Rest, Release::Manual),
    ];
    let rows: Vec<_> = (0..10)
        .map(|i| common::person(i, "blocked.example"))
        .collect();
    let campaign = t.campaign(&spec).with(&rows).started().await;
    sends(&t, &settings, &smtp, 8).await;
    let recipients = t.store.recipients_after(campaign, 0, 100).await.unwrap();
    // Six policy rejections (the sender is on a blocklist); guard_min_failures = 5.
    for r in &recipients[..6] {
        let email = r.email.clone().unwrap();
        let m = smtp
            .received()
            .into_iter()
            .find(|m| m.rcpt_to.contains(&email))
            .unwrap();
        let report = dsn(
            &m.mail_from,
            &email,
            "failed",
            "5.7.1",
            &m.message_id.unwrap(),
        );
        let out = ingest(bounce_cli(&t, dir.path()), Some(&m.mail_from), &report);
        assert_eq!(out.status.code(), Some(0));
    }
    let round = process_pending(&t.store, &settings.bounces, "test", 10)
        .await
        .unwrap();
    assert_eq!(round.guards_tripped, 1);
    // Nobody went to postal: the six wait, parked, to be emailed again once the cause is fixed.
    let p = t.progress(campaign).await;
    assert_eq!((p.bounced, p.deferred, p.sent, p.queued), (0, 6, 2, 2));
    let out = bounce_cli(&t, dir.path()).arg("guards").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("domain blocked.example: 6 of 6"), "{said}");
    let events = t.store.campaign_events(campaign).await.unwrap();
    assert!(events.iter().any(|e| e.actor == "bounce-guard"));
    let status = t.cli(dir.path()).arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&status.stdout).contains("bounce guard holds blocked.example"));

    // While the guard holds, nothing more goes to the domain: wave 2 is parked too.
    breach_notifier::campaign::waves::release_next(&t.store, campaign, "test", None)
        .await
        .unwrap();
    let running = t.spawn_daemon(&settings, RunMode::Forever);
    assert!(
        common::wait_until(Duration::from_secs(20), || async {
            t.progress(campaign).await.deferred == 8
        })
        .await
    );
    assert_eq!(smtp.received_count(), 8);

    // Cleared: the eight are due again and the daemon emails them.
    let out = bounce_cli(&t, dir.path())
        .args(["clear-guard", "--campaign", &campaign.to_string()])
        .args(["--domain", "blocked.example", "--reason", "delisted"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("8 held recipients"));
    assert!(
        common::wait_until(Duration::from_secs(20), || async {
            t.progress(campaign).await.state == CampaignState::Completed
        })
        .await,
        "{:?}",
        t.progress(campaign).await
    );
    running.stop.send(true).unwrap();
    running.handle.await.unwrap().unwrap();
    assert_eq!(smtp.received_count(), 16);
    assert_eq!(t.progress(campaign).await.sent, 10);
}

fn wave(size: WaveSize, release: Release) -> WaveSpec {
    WaveSpec {
        size,
        release,
        hold_minutes: 0,
        max_failure_rate: None,
        max_deferral_rate: None,
    }
}

/// Runs a daemon until the relay received `n` notices, then stops it.
async fn sends(t: &TestApp, settings: &Settings, smtp: &SmtpServer, n: usize) {
    let running = t.spawn_daemon(settings, RunMode::Forever);
    assert!(
        common::wait_until(Duration::from_secs(20), || async {
            smtp.received_count() >= n
        })
        .await
    );
    // Outcomes recorded before the stop returns.
    running.stop.send(true).unwrap();
    running.handle.await.unwrap().unwrap();
}

async fn a_maildir_is_stored_then_moved_to_cur(t: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let smtp = SmtpServer::start(Script::new()).await;
    let settings = bounce_settings(&t, &smtp, dir.path());
    let sent = send(&t, &settings, &smtp, 2, "example.net").await;
    let maildir = dir.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let (r, verp, message_id) = &sent[0];
    // A Maildir delivery keeps the envelope recipient in Delivered-To.
    let mut report = format!("Delivered-To: {verp}\r\n").into_bytes();
    report.extend(dsn(
        verp,
        r.email.as_deref().unwrap(),
        "failed",
        "5.1.1",
        message_id,
    ));
    std::fs::write(maildir.join("new/1.host"), &report).unwrap();
    std::fs::write(maildir.join("new/2.host"), &report).unwrap();
    std::fs::write(maildir.join("new/3.host"), b"garbage").unwrap();
    let config = dir.path().join("bn.toml");
    let mut toml = std::fs::read_to_string(&config).unwrap();
    toml.push_str(&format!("maildir = \"{}\"\n", maildir.display()));
    std::fs::write(&config, toml).unwrap();

    let out = bounce_cli(&t, dir.path()).arg("process").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("2 reports stored, 1 stored before"), "{said}");
    assert!(said.contains("1 recipients bounced"), "{said}");
    assert_eq!(std::fs::read_dir(maildir.join("new")).unwrap().count(), 0);
    let mut moved: Vec<String> = std::fs::read_dir(maildir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    moved.sort();
    assert_eq!(moved, ["1.host:2,S", "2.host:2,S", "3.host:2,S"]);
    assert_eq!(status_of(&t, r.id).await, RecipientStatus::Bounced);
    assert_eq!(status_of(&t, sent[1].0.id).await, RecipientStatus::Sent);
}
