//! The dispatcher against real databases and a real SMTP conversation over TCP (the scriptable server
//! in `tests/it/common/smtp.rs`): outcomes, retries, limits, control, shutdown, several daemons, and a
//! daemon killed with SIGKILL mid-campaign.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use breach_notifier::dispatch::RunMode;
use breach_notifier::store::*;
use common::TestApp;
use common::smtp::{Behaviour, Script, SmtpServer};
use common::*;

backends!(
    multi_thread:
    every_recipient_is_sent_once_and_the_campaign_completes,
    a_relay_without_pipelining_gets_one_command_at_a_time,
    temporary_failures_are_retried_with_the_same_message_id,
    permanent_failures_fail_and_flag_a_letter,
    temporary_failures_past_the_give_up_age_expire,
    a_dropped_connection_is_retried,
    pause_stops_sending_within_two_seconds_and_resume_finishes,
    cancel_ends_everyone_not_yet_notified,
    sigterm_drains_and_leaves_no_lease,
    recipients_added_while_running_are_sent_without_restart,
    a_template_failure_pauses_the_campaign,
    the_global_rate_is_kept,
    a_slow_domain_does_not_hold_up_the_others,
    each_campaign_sends_its_daily_cap_and_no_more,
);

async fn every_recipient_is_sent_once_and_the_campaign_completes(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let mut rows: Vec<_> = (0..40).map(|i| person(i, "example.com")).collect();
    rows.push(NewRecipient {
        customer_id: "letter".into(),
        channel: Channel::Postal,
        ..Default::default()
    });
    let id = t
        .campaign(&spec(None, "Hello {{ recipient.first_name }}"))
        .with(&rows)
        .started()
        .await;
    t.run_until_idle(&t.settings(&smtp), Duration::from_secs(60))
        .await;

    let p = t.progress(id).await;
    assert_eq!(
        (p.state, p.sent, p.postal, p.queued, p.deferred),
        (CampaignState::Completed, 40, 1, 0, 0)
    );
    let received = smtp.received();
    assert_eq!(received.len(), 40);
    let by_id = smtp.count_by_message_id();
    assert_eq!(by_id.len(), 40, "one distinct Message-ID per recipient");
    assert!(by_id.values().all(|n| *n == 1), "nobody got two copies");
    for i in 0..40 {
        let r = t
            .store
            .recipient_by_customer(id, &format!("C{i:06}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status, r.attempts, r.last_code),
            (RecipientStatus::Sent, 1, Some(250))
        );
        assert!(r.lease_owner.is_none());
        let mid = r.message_id.clone().unwrap();
        let got = received
            .iter()
            .find(|m| m.message_id.as_deref() == Some(mid.as_str()))
            .expect("received");
        assert_eq!(
            got.rcpt_to,
            vec![format!("user{i}@example.com")],
            "one recipient per envelope"
        );
        assert!(got.text().contains(&format!("Person{i}")));
        assert!(
            r.last_reply
                .as_deref()
                .unwrap_or_default()
                .contains("queued as"),
            "the relay's queue id is kept"
        );
        let attempts = t.store.attempts(r.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].message_id, mid);
    }
    let events = t.store.campaign_events(id).await.unwrap();
    assert!(events.last().unwrap().actor.starts_with("daemon:"));
}

/// The relay offers PIPELINING (as the test server does by default) in every other test here, so
/// they all go through the pipelined transaction; this one checks that it really pipelines, and that
/// a relay without PIPELINING gets lettre's one-command-at-a-time transaction and the same mail.
async fn a_relay_without_pipelining_gets_one_command_at_a_time(t: TestApp) {
    for pipelining in [true, false] {
        let smtp = SmtpServer::start(Script::new().advertise_pipelining(pipelining)).await;
        let rows: Vec<_> = (0..12).map(|i| person(i, "example.com")).collect();
        // A line of the text that begins with a dot must arrive as written (dot-stuffing).
        let id = t
            .campaign(&spec(None, "Hi\n.dotted line {{ recipient.first_name }}"))
            .with(&rows)
            .started()
            .await;
        t.run_until_idle(&t.settings(&smtp), Duration::from_secs(60))
            .await;
        let p = t.progress(id).await;
        assert_eq!((p.state, p.sent), (CampaignState::Completed, 12));
        let received = smtp.received();
        assert_eq!(received.len(), 12);
        assert!(
            received
                .iter()
                .all(|m| m.text().contains("\n.dotted line Person")),
            "the dotted line arrived unstuffed"
        );
        let (mails, pipelined) = smtp.mail_commands();
        assert_eq!(mails, 12);
        assert_eq!(
            pipelined,
            if pipelining { 12 } else { 0 },
            "PIPELINING offered: {pipelining}"
        );
    }
}

async fn temporary_failures_are_retried_with_the_same_message_id(t: TestApp) {
    let script = Script::new().for_address(
        "user1@example.com",
        Behaviour::fail_first(2, 451, "4.7.1 Try again later"),
    );
    let smtp = SmtpServer::start(script).await;
    let rows: Vec<_> = (0..3).map(|i| person(i, "example.com")).collect();
    let id = t.campaign(&spec(None, "Hi")).with(&rows).started().await;
    t.run_until_idle(&t.settings(&smtp), Duration::from_secs(60))
        .await;

    let r = t
        .store
        .recipient_by_customer(id, "C000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.status, r.attempts), (RecipientStatus::Sent, 3));
    let attempts = t.store.attempts(r.id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| (a.outcome, a.smtp_code)).collect();
    assert_eq!(
        outcomes,
        vec![
            (AttemptOutcome::Transient, Some(451)),
            (AttemptOutcome::Transient, Some(451)),
            (AttemptOutcome::Sent, Some(250))
        ]
    );
    assert!(
        attempts
            .iter()
            .all(|a| Some(&a.message_id) == r.message_id.as_ref()),
        "same Message-ID on every retry"
    );
    assert!(
        attempts[1].started_at - attempts[0].finished_at >= chrono::Duration::milliseconds(400),
        "backoff waited"
    );
    assert_eq!(smtp.rcpt_attempts("user1@example.com"), 3);
    assert_eq!(t.progress(id).await.sent, 3);
}

async fn permanent_failures_fail_and_flag_a_letter(t: TestApp) {
    let script = Script::new().for_address(
        "user0@example.com",
        Behaviour::reply(550, "5.1.1 No such user"),
    );
    let smtp = SmtpServer::start(script).await;
    let rows: Vec<_> = (0..2).map(|i| person(i, "example.com")).collect();
    let id = t.campaign(&spec(None, "Hi")).with(&rows).started().await;
    t.run_until_idle(&t.settings(&smtp), Duration::from_secs(60))
        .await;

    let r = t
        .store
        .recipient_by_customer(id, "C000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.status, r.postal_followup, r.attempts, r.last_code),
        (RecipientStatus::Failed, true, 1, Some(550))
    );
    assert!(
        r.fail_reason
            .as_deref()
            .unwrap()
            .starts_with("permanent: 550"),
        "{:?}",
        r.fail_reason
    );
    let p = t.progress(id).await;
    assert_eq!(
        (p.failed, p.sent, p.state),
        (1, 1, CampaignState::Completed)
    );
}

async fn temporary_failures_past_the_give_up_age_expire(t: TestApp) {
    let smtp = SmtpServer::start(
        Script::new().default_behaviour(Behaviour::reply(421, "4.7.0 Try later")),
    )
    .await;
    let id = t
        .campaign(&spec(None, "Hi"))
        .with(&[person(0, "example.com")])
        .started()
        .await;
    let mut s = t.settings(&smtp);
    s.dispatch.give_up_hours = 0;
    t.run_until_idle(&s, Duration::from_secs(60)).await;
    let r = t
        .store
        .recipient_by_customer(id, "C000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.status, r.fail_reason.as_deref(), r.postal_followup),
        (RecipientStatus::Failed, Some("expired"), true)
    );
}

async fn a_dropped_connection_is_retried(t: TestApp) {
    let script = Script::new().for_address("user0@example.com", Behaviour::DisconnectAtRcpt);
    let smtp = SmtpServer::start(script).await;
    let id = t
        .campaign(&spec(None, "Hi"))
        .with(&[person(0, "example.com"), person(1, "example.com")])
        .started()
        .await;
    let r = t.spawn_daemon(&t.settings(&smtp), RunMode::Forever);
    let deferred = wait_until(Duration::from_secs(20), || async {
        t.progress(id).await.deferred == 1
    })
    .await;
    assert!(deferred, "a dropped connection is a temporary failure");
    let first = t
        .store
        .recipient_by_customer(id, "C000000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status, RecipientStatus::Deferred);
    // The relay recovers: the deferred recipient is sent at its retry time.
    smtp.set_script(Script::new());
    let sent = wait_until(Duration::from_secs(20), || async {
        t.progress(id).await.sent == 2
    })
    .await;
    assert!(sent);
    r.stop.send(true).unwrap();
    r.handle.await.unwrap().unwrap();
    assert_eq!(smtp.received_count(), 2);
}

async fn pause_stops_sending_within_two_seconds_and_resume_finishes(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let rows: Vec<_> = (0..60).map(|i| person(i, "example.com")).collect();
    let id = t
        .campaign(&spec(Some(10.0), "Hi"))
        .with(&rows)
        .started()
        .await;
    let r = t.spawn_daemon(&t.settings(&smtp), RunMode::Forever);
    assert!(smtp.wait_for(5, Duration::from_secs(20)).await);
    // Paused by an operator's SQL, as documented.
    t.sql(&format!(
        "UPDATE campaigns SET state = 'paused', change_reason = 'legal review' WHERE id = {id}"
    ))
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_pause = smtp.received_count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        smtp.received_count(),
        at_pause,
        "nothing leaves two seconds after a pause"
    );
    assert!(at_pause < 60);
    let held = t
        .store
        .recipients_after(id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.lease_owner.is_some())
        .count();
    assert_eq!(
        held, 0,
        "a paused campaign's unsent recipients are released"
    );
    t.store
        .set_campaign_state(id, CampaignState::Running, "test", None)
        .await
        .unwrap();
    let done = wait_until(Duration::from_secs(30), || async {
        t.progress(id).await.state == CampaignState::Completed
    })
    .await;
    assert!(done);
    r.stop.send(true).unwrap();
    r.handle.await.unwrap().unwrap();
    assert_eq!(smtp.received_count(), 60);
    assert!(smtp.count_by_message_id().values().all(|n| *n == 1));
}

async fn cancel_ends_everyone_not_yet_notified(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let rows: Vec<_> = (0..50).map(|i| person(i, "example.com")).collect();
    let id = t
        .campaign(&spec(Some(10.0), "Hi"))
        .with(&rows)
        .started()
        .await;
    let r = t.spawn_daemon(&t.settings(&smtp), RunMode::Forever);
    assert!(smtp.wait_for(3, Duration::from_secs(20)).await);
    t.store
        .set_campaign_state(id, CampaignState::Cancelled, "test", Some("wrong list"))
        .await
        .unwrap();
    let settled = wait_until(Duration::from_secs(10), || async {
        t.progress(id).await.open() == 0
    })
    .await;
    assert!(settled, "every open recipient is settled");
    tokio::time::sleep(Duration::from_secs(1)).await;
    r.stop.send(true).unwrap();
    r.handle.await.unwrap().unwrap();
    let p = t.progress(id).await;
    assert_eq!(p.sent + p.cancelled, 50, "{p:?}");
    assert_eq!(
        p.sent as usize,
        smtp.received_count(),
        "what was sent is exactly what the relay got"
    );
    assert!(p.cancelled > 0);
    assert_eq!(p.total, 50, "nothing deleted");
}

async fn sigterm_drains_and_leaves_no_lease(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let rows: Vec<_> = (0..100).map(|i| person(i, "example.com")).collect();
    let id = t
        .campaign(&spec(Some(20.0), "Hi"))
        .with(&rows)
        .started()
        .await;
    let r = t.spawn_daemon(&t.settings(&smtp), RunMode::Forever);
    assert!(smtp.wait_for(5, Duration::from_secs(20)).await);
    let asked = Instant::now();
    let stats = r.stats.clone();
    r.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(6), r.handle)
        .await
        .expect("stops within the drain time")
        .unwrap()
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(6));
    let rows = t.store.recipients_after(id, 0, 200).await.unwrap();
    assert!(
        rows.iter().all(|r| r.lease_owner.is_none()),
        "no lease left held"
    );
    let p = t.progress(id).await;
    assert_eq!(p.sent as usize, smtp.received_count());
    assert_eq!(p.sent + p.queued, 100);
    assert!(
        t.store
            .live_instances(chrono::Utc::now(), Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "marked stopped"
    );
    let sent = stats.sent.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, p.sent as u64, "the daemon's own count agrees");
    assert!(
        stats.released.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "unsent work was released, not abandoned"
    );
}

async fn recipients_added_while_running_are_sent_without_restart(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let rows: Vec<_> = (0..20).map(|i| person(i, "example.com")).collect();
    let id = t
        .campaign(&spec(Some(10.0), "Hi"))
        .with(&rows)
        .started()
        .await;
    let mut s = t.settings(&smtp);
    s.dispatch.rescan_secs = 3600; // new rows must be found past the cursor, not by a rescan
    let r = t.spawn_daemon(&s, RunMode::UntilIdle);
    assert!(smtp.wait_for(3, Duration::from_secs(20)).await);
    assert_eq!(
        t.store.require_campaign(id).await.unwrap().state,
        CampaignState::Running
    );
    let more: Vec<_> = (100..105).map(|i| person(i, "example.net")).collect();
    t.import(id, &more).await;
    tokio::time::timeout(Duration::from_secs(60), r.handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let p = t.progress(id).await;
    assert_eq!(
        (p.sent, p.total, p.state),
        (25, 25, CampaignState::Completed)
    );
    assert_eq!(smtp.received_count(), 25);
}

async fn a_template_failure_pauses_the_campaign(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    // Passes the create-time check (lenient), fails for real recipients (strict): no such attribute.
    let id = t
        .campaign(&spec(
            None,
            "Code: {{ recipient.attributes.enrollment_code }}",
        ))
        .with(&[person(0, "example.com")])
        .started()
        .await;
    t.run_until_idle(&t.settings(&smtp), Duration::from_secs(30))
        .await;
    let c = t.store.require_campaign(id).await.unwrap();
    assert_eq!(c.state, CampaignState::Paused);
    let reason = c.state_reason.unwrap();
    assert!(
        reason.contains("pre-flight failed") && reason.contains("recipient row"),
        "{reason}"
    );
    assert_eq!(smtp.received_count(), 0);
    assert_eq!(
        t.progress(id).await.queued,
        1,
        "the recipient is still pending"
    );
}

async fn the_global_rate_is_kept(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let rows: Vec<_> = (0..45).map(|i| person(i, "example.com")).collect();
    t.campaign(&spec(None, "Hi")).with(&rows).started().await;
    let mut s = t.settings(&smtp);
    s.limits.global_per_second = Some(15.0);
    s.limits.global_burst = Some(5);
    t.run_until_idle(&s, Duration::from_secs(60)).await;
    let mut times: Vec<Instant> = smtp.received().iter().map(|m| m.at).collect();
    times.sort();
    assert_eq!(times.len(), 45);
    // GCRA: at most burst + rate × window in any window. Lower bounds only: a slow machine can only
    // make it slower.
    for (i, t0) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|t| t.duration_since(*t0) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 5 + 15,
            "{in_window} messages within one second"
        );
    }
    let span = times.last().unwrap().duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(2500),
        "45 messages at 15/s with a burst of 5 take over 2.6 s, took {span:?}"
    );
}

async fn a_slow_domain_does_not_hold_up_the_others(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let mut rows: Vec<_> = (0..6).map(|i| person(i, "slow.example")).collect();
    rows.extend((6..46).map(|i| person(i, "fast.example")));
    t.campaign(&spec(None, "Hi")).with(&rows).started().await;
    let mut s = t.settings(&smtp);
    s.limits.domains.insert("slow.example".into(), 1.0);
    t.run_until_idle(&s, Duration::from_secs(60)).await;
    let received = smtp.received();
    let last = |domain: &str| {
        received
            .iter()
            .filter(|m| m.rcpt_to[0].ends_with(domain))
            .map(|m| m.at)
            .max()
            .unwrap()
    };
    let first_slow = received
        .iter()
        .filter(|m| m.rcpt_to[0].ends_with("slow.example"))
        .map(|m| m.at)
        .min()
        .unwrap();
    assert!(
        last("slow.example").duration_since(first_slow) >= Duration::from_secs(4),
        "the slow domain kept 1/s"
    );
    assert!(
        last("fast.example") < last("slow.example") - Duration::from_secs(2),
        "the fast domain finished long before"
    );
    let per_domain: HashMap<bool, usize> = received.iter().fold(HashMap::new(), |mut m, r| {
        *m.entry(r.rcpt_to[0].ends_with("fast.example")).or_default() += 1;
        m
    });
    assert_eq!((per_domain[&true], per_domain[&false]), (40, 6));
}

const DAILY_CAP: u64 = 40;

/// Two running campaigns with a daily cap each, 150 recipients each; returns their ids.
async fn two_capped_campaigns(t: &TestApp) -> [i64; 2] {
    let mut capped = spec(None, "Hi");
    capped.rate.daily_cap = Some(DAILY_CAP);
    let mut ids = [0; 2];
    for (n, domain) in ["a.example", "b.example"].iter().enumerate() {
        let rows: Vec<_> = (0..150).map(|i| person(n * 1000 + i, domain)).collect();
        ids[n] = t.campaign(&capped).with(&rows).started().await;
    }
    ids
}

/// Waits until both campaigns sent their cap (or 30 s pass), then a few seconds more in which
/// nothing else may leave; asserts exactly the cap each, counted by the database and by the relay.
async fn assert_each_campaign_sent_its_cap(t: &TestApp, smtp: &SmtpServer, ids: [i64; 2]) {
    let sent = || async {
        let mut total = 0;
        for id in ids {
            total += t.progress(id).await.sent;
        }
        total
    };
    wait_until(Duration::from_secs(30), || async {
        sent().await >= 2 * DAILY_CAP as i64
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in ids {
        let p = t.progress(id).await;
        assert_eq!(
            (p.sent, p.state),
            (DAILY_CAP as i64, CampaignState::Running),
            "campaign {id}: exactly its cap today, no more, no fewer"
        );
    }
    assert_eq!(smtp.count_by_message_id().len(), 2 * DAILY_CAP as usize);
    assert!(smtp.count_by_message_id().values().all(|n| *n == 1));
}

/// A daily cap is counted per campaign: one campaign's notices in flight never hold back another's.
async fn each_campaign_sends_its_daily_cap_and_no_more(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let ids = two_capped_campaigns(&t).await;
    let mut s = t.settings(&smtp);
    s.dispatch.batch_size = 16;
    let r = t.spawn_daemon(&s, RunMode::Forever);
    assert_each_campaign_sent_its_cap(&t, &smtp, ids).await;
    r.stop.send(true).unwrap();
    r.handle.await.unwrap().unwrap();
}

/// The cap holds for the cluster: two daemons on one PostgreSQL, each claiming for both campaigns at
/// once, send each campaign's cap exactly between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_daemons_keep_each_campaign_at_its_daily_cap() {
    let t = common::postgres().await;
    let smtp = SmtpServer::start(Script::new()).await;
    let ids = two_capped_campaigns(&t).await;
    let mut a = t.settings(&smtp);
    a.dispatch.instance_id = "daemon-a".into();
    a.dispatch.batch_size = 16;
    let mut b = a.clone();
    b.dispatch.instance_id = "daemon-b".into();
    let (ra, rb) = (
        t.spawn_daemon(&a, RunMode::Forever),
        t.spawn_daemon(&b, RunMode::Forever),
    );
    assert_each_campaign_sent_its_cap(&t, &smtp, ids).await;
    let by_daemon: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT instance FROM delivery_attempts")
            .fetch_all(match &t.store {
                Store::Postgres(pg) => pg.pool(),
                Store::Sqlite(_) => unreachable!(),
            })
            .await
            .unwrap();
    eprintln!("daemons that sent: {by_daemon:?}");
    for r in [ra, rb] {
        r.stop.send(true).unwrap();
        r.handle.await.unwrap().unwrap();
    }
}

/// Daemons announce joining and leaving: the others take their new share at once, not at their next
/// heartbeat (5 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_daemon_joining_or_stopping_changes_the_others_share_at_once() {
    let t = common::postgres().await;
    let smtp = SmtpServer::start(Script::new()).await;
    let mut a = t.settings(&smtp);
    a.dispatch.heartbeat_secs = 5;
    a.dispatch.lease_secs = 60;
    a.dispatch.instance_id = "daemon-a".into();
    let mut b = a.clone();
    b.dispatch.instance_id = "daemon-b".into();
    let daemons = |r: &Running| {
        r.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("breach_notifier_cluster_daemons "))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let ra = t.spawn_daemon(&a, RunMode::Forever);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            daemons(&ra) == Some(1.0)
        })
        .await
    );
    let rb = t.spawn_daemon(&b, RunMode::Forever);
    assert!(
        wait_until(Duration::from_secs(3), || async {
            daemons(&ra) == Some(2.0) && daemons(&rb) == Some(2.0)
        })
        .await,
        "a saw b join: {:?} / {:?}",
        daemons(&ra),
        daemons(&rb)
    );
    rb.stop.send(true).unwrap();
    rb.handle.await.unwrap().unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || async {
            daemons(&ra) == Some(1.0)
        })
        .await,
        "a saw b leave: {:?}",
        daemons(&ra)
    );
    ra.stop.send(true).unwrap();
    ra.handle.await.unwrap().unwrap();
}

/// Two daemons on one PostgreSQL: every recipient sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_postgres_send_each_recipient_once() {
    let t = common::postgres().await;
    let smtp = SmtpServer::start(Script::new()).await;
    let rows: Vec<_> = (0..300).map(|i| person(i, "example.com")).collect();
    let id = t.campaign(&spec(None, "Hi")).with(&rows).started().await;
    let mut a = t.settings(&smtp);
    a.dispatch.instance_id = "daemon-a".into();
    a.dispatch.batch_size = 20;
    let mut b = a.clone();
    b.dispatch.instance_id = "daemon-b".into();
    let ra = t.spawn_daemon(&a, RunMode::UntilIdle);
    let rb = t.spawn_daemon(&b, RunMode::UntilIdle);
    for r in [ra, rb] {
        tokio::time::timeout(Duration::from_secs(60), r.handle)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let p = t.progress(id).await;
    assert_eq!((p.sent, p.state), (300, CampaignState::Completed));
    let counts = smtp.count_by_message_id();
    assert_eq!(counts.len(), 300);
    assert!(
        counts.values().all(|n| *n == 1),
        "no duplicates between daemons"
    );
}

/// A claim stuck in the database (here a trigger that sleeps in claims only, as a plan reading the
/// whole of a 15,000,000-recipient campaign would) neither stalls the daemon nor holds its shutdown:
/// the claim's statement timeout turns it into a logged error and a retry, and a shutdown cancels the
/// statement and exits well within the drain time. PostgreSQL only: SQLite runs its statements in the
/// daemon's own process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stuck_claim_is_retried_and_does_not_hold_the_shutdown() {
    let t = common::postgres().await;
    let smtp = SmtpServer::start(Script::new()).await;
    let rows: Vec<_> = (0..10).map(|i| person(i, "example.com")).collect();
    let id = t.campaign(&spec(None, "Hi")).with(&rows).started().await;
    // Sequences are not transactional: the count of claims that began survives their cancellation.
    t.sql("CREATE SEQUENCE stuck_claims").await;
    t.sql(
        "CREATE FUNCTION stuck_claim() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF current_setting('application_name') LIKE 'breach-notifier claim %' THEN \
         PERFORM nextval('stuck_claims'); PERFORM pg_sleep(120); END IF; RETURN NULL; END $$",
    )
    .await;
    t.sql(
        "CREATE TRIGGER stuck_claims BEFORE UPDATE ON recipients \
         FOR EACH STATEMENT EXECUTE FUNCTION stuck_claim()",
    )
    .await;
    let Store::Postgres(pg) = &t.store else {
        unreachable!()
    };
    let claims_begun = || async {
        sqlx::query_scalar::<_, i64>("SELECT last_value FROM stuck_claims WHERE is_called")
            .fetch_optional(pg.pool())
            .await
            .unwrap()
            .unwrap_or(0)
    };
    let r = t.spawn_daemon(&t.settings(&smtp), RunMode::Forever);
    // The first claim times out (after CLAIM_TIMEOUT_MS) and the daemon claims again.
    let timeout = Duration::from_millis(breach_notifier::store::postgres::CLAIM_TIMEOUT_MS.into());
    assert!(
        wait_until(timeout + Duration::from_secs(20), || async {
            claims_begun().await >= 2
        })
        .await,
        "a stuck claim is abandoned and retried"
    );
    let asked = Instant::now();
    r.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), r.handle)
        .await
        .expect("stops within the drain time (5 s) although a claim is stuck")
        .unwrap()
        .unwrap();
    let stopped_in = asked.elapsed();
    assert!(stopped_in < Duration::from_secs(5), "{stopped_in:?}");
    let still_running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
    )
    .bind(pg.claim_tag())
    .fetch_one(pg.pool())
    .await
    .unwrap();
    assert_eq!(
        still_running, 0,
        "the stuck claim was cancelled, not left running"
    );
    t.sql("DROP TRIGGER stuck_claims ON recipients").await;
    let p = t.progress(id).await;
    assert_eq!((p.queued, p.sent), (10, 0), "nothing was claimed: {p:?}");
    assert_eq!(smtp.received_count(), 0);
    let leased: i64 =
        sqlx::query_scalar("SELECT count(*) FROM recipients WHERE lease_owner IS NOT NULL")
            .fetch_one(pg.pool())
            .await
            .unwrap();
    assert_eq!(leased, 0, "a cancelled claim leases nothing");
}
