//! Fault injection that needs a scriptable relay or a broken disk, run by the normal test command
//! (bench/faults.sh covers kill -9, a PostgreSQL restart and a relay outage against the release binary):
//! - a relay throttling one domain with 421: that domain slows down, the others keep going, nothing
//!   is failed;
//! - the file outbox becoming unwritable mid-campaign: recipients are deferred, never failed or lost,
//!   and sent once it is writable again; an unusable outbox at start is one clear error.

use crate::common;

use std::time::{Duration, Instant};

use breach_notifier::config::TransportKind;
use breach_notifier::dispatch::RunMode;
use breach_notifier::store::*;
use common::smtp::{Behaviour, Script, SmtpServer};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_answering_421_slows_down_and_the_others_keep_going() {
    let t = common::sqlite().await;
    let smtp = SmtpServer::start(Script::new().for_domain(
        "throttled.example",
        Behaviour::reply(421, "4.7.0 Too many connections, slow down"),
    ))
    .await;
    let mut rows: Vec<_> = (0..20).map(|i| person(i, "throttled.example")).collect();
    rows.extend((20..80).map(|i| person(i, "fast.example")));
    let id = t.campaign(&spec(None, "Hi")).with(&rows).started().await;
    let started = Instant::now();
    let r = t.spawn_daemon(&t.settings(&smtp), RunMode::Forever);
    assert!(
        smtp.wait_for(60, Duration::from_secs(20)).await,
        "the other domain was held up"
    );
    let fast_done = started.elapsed();
    // While it throttles, the domain is tried little: one burst, then a cool-down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tries: u32 = (0..20)
        .map(|i| smtp.rcpt_attempts(&format!("user{i}@throttled.example")))
        .sum();
    assert!(
        tries <= 24,
        "{tries} attempts to a throttling domain within seconds"
    );
    let p = t.progress(id).await;
    assert_eq!(
        (p.failed, p.sent),
        (0, 60),
        "throttling never fails anyone: {p:?}"
    );
    assert!(p.deferred > 0);
    // The relay recovers: after the cool-down the domain's recipients go out.
    smtp.set_script(Script::new());
    let done = wait_until(Duration::from_secs(60), || async {
        t.progress(id).await.sent == 80
    })
    .await;
    assert!(done, "{:?}", t.progress(id).await);
    r.stop.send(true).unwrap();
    r.handle.await.unwrap().unwrap();
    assert!(fast_done < Duration::from_secs(20));
    assert!(smtp.count_by_message_id().values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_outbox_defers_and_loses_nothing() {
    let t = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let smtp = SmtpServer::start(Script::new()).await; // only to build settings; the file transport is used
    let mut s = t.settings(&smtp);
    s.transport.kind = TransportKind::File;
    s.transport.file.dir = outbox.clone();
    let rows: Vec<_> = (0..30).map(|i| person(i, "example.com")).collect();
    let id = t
        .campaign(&spec(Some(10.0), "Hi"))
        .with(&rows)
        .started()
        .await;
    let r = t.spawn_daemon(&s, RunMode::Forever);
    assert!(
        wait_until(Duration::from_secs(20), || async {
            t.progress(id).await.sent >= 3
        })
        .await
    );
    // The outbox disappears and a plain file takes its place: every write now fails.
    let moved = dir.path().join("outbox.saved");
    std::fs::rename(&outbox, &moved).unwrap();
    std::fs::write(&outbox, b"not a directory").unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || async {
            t.progress(id).await.deferred >= 3
        })
        .await
    );
    let p = t.progress(id).await;
    assert_eq!(p.failed, 0, "a disk problem is temporary: {p:?}");
    let deferred = t
        .store
        .recipients_after(id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.status == RecipientStatus::Deferred)
        .unwrap();
    assert!(
        deferred
            .last_reply
            .as_deref()
            .unwrap_or_default()
            .contains("outbox"),
        "{:?}",
        deferred.last_reply
    );
    // Repaired: everyone is sent.
    std::fs::remove_file(&outbox).unwrap();
    std::fs::rename(&moved, &outbox).unwrap();
    let done = wait_until(Duration::from_secs(60), || async {
        t.progress(id).await.sent == 30
    })
    .await;
    assert!(done, "{:?}", t.progress(id).await);
    r.stop.send(true).unwrap();
    r.handle.await.unwrap().unwrap();
    let files = std::fs::read_dir(&outbox)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count();
    assert_eq!(files, 30);
}

#[test]
fn an_unusable_outbox_at_start_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("outbox"), b"a file, not a directory").unwrap();
    let url = common::sqlite_url(dir.path());
    let run = |args: &[&str]| {
        common::cli(dir.path(), &url)
            .env(
                "BREACH_NOTIFIER__TRANSPORT__FILE__DIR",
                dir.path().join("outbox"),
            )
            .args(args)
            .output()
            .unwrap()
    };
    assert!(run(&["migrate"]).status.success());
    let o = run(&["run"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the outbox") && last.contains("cannot be created"),
        "{err}"
    );
}
