//! Waves and their guards, through the real dispatcher, a real SMTP conversation and both databases:
//! waves go out in order, a manual wave waits for an operator (CLI or SQL), recipients added later join
//! the open wave, and a wave whose failure rate passes its guard pauses the campaign with the reason.

use crate::common;

use std::time::Duration;

use breach_notifier::campaign::{Release, WaveSize, WaveSpec};
use breach_notifier::dispatch::RunMode;
use breach_notifier::store::*;
use common::TestApp;
use common::smtp::{Behaviour, Script, SmtpServer};
use common::*;

backends!(
    multi_thread:
    waves_go_out_in_order_and_sized_as_planned,
    a_manual_wave_waits_for_an_operator_and_late_recipients_join_it,
    a_failure_guard_pauses_the_campaign_with_the_reason,
);

fn wave(size: WaveSize, release: Release, max_failure_rate: Option<f64>) -> WaveSpec {
    WaveSpec {
        size,
        release,
        hold_minutes: 0,
        max_failure_rate,
        max_deferral_rate: None,
    }
}

async fn waves_go_out_in_order_and_sized_as_planned(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let mut s = spec(None, "Hi");
    s.waves = vec![
        wave(WaveSize::Count(5), Release::Auto, None),
        wave(WaveSize::Percent(50.0), Release::Auto, None),
        wave(WaveSize::Rest, Release::Auto, None),
    ];
    let mut rows: Vec<_> = (0..30).map(|i| person(i, "example.com")).collect();
    rows.push(NewRecipient {
        customer_id: "letter".into(),
        channel: Channel::Postal,
        ..Default::default()
    });
    let id = t.campaign(&s).with(&rows).started().await;
    t.run_until_idle(&t.settings(&smtp), Duration::from_secs(60))
        .await;

    assert_eq!(t.progress(id).await.state, CampaignState::Completed);
    let waves = t.store.wave_progress(id).await.unwrap();
    let sizes: Vec<_> = waves.iter().map(|w| (w.number, w.total, w.sent)).collect();
    // 50% of the 30 email recipients is 15; the rest is what is left. Postal recipients are in no wave.
    assert_eq!(sizes, vec![(1, 5, 5), (2, 15, 15), (3, 10, 10)]);
    assert!(
        waves.iter().all(|w| w.state == "finished"),
        "a completed campaign ends its open wave too"
    );
    // Every member of a wave reached the relay before any member of the next one.
    let received = smtp.received();
    let at = |i: usize| {
        received
            .iter()
            .find(|m| m.rcpt_to[0] == format!("user{i}@example.com"))
            .map(|m| m.at)
            .expect("received")
    };
    let last_of_1 = (0..5).map(at).max().unwrap();
    let first_of_2 = (5..20).map(at).min().unwrap();
    let last_of_2 = (5..20).map(at).max().unwrap();
    let first_of_3 = (20..30).map(at).min().unwrap();
    assert!(
        last_of_1 <= first_of_2 && last_of_2 <= first_of_3,
        "waves overlapped"
    );
}

async fn a_manual_wave_waits_for_an_operator_and_late_recipients_join_it(t: TestApp) {
    let smtp = SmtpServer::start(Script::new()).await;
    let mut s = spec(None, "Hi");
    s.waves = vec![
        wave(WaveSize::Count(3), Release::Auto, None),
        wave(WaveSize::Count(4), Release::Manual, None),
        wave(WaveSize::Rest, Release::Manual, None),
    ];
    let rows: Vec<_> = (0..10).map(|i| person(i, "example.com")).collect();
    let id = t.campaign(&s).with(&rows).started().await;
    let r = t.spawn_daemon(&t.settings(&smtp), RunMode::Forever);
    assert!(smtp.wait_for(3, Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.received_count(), 3, "the manual wave waits");
    assert_eq!(
        t.store.require_campaign(id).await.unwrap().state,
        CampaignState::Running
    );

    // Released from the command line.
    let dir = tempfile::tempdir().unwrap();
    let out = t
        .cli(dir.path())
        .args(["campaign", "release-wave", &id.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("wave 2 released"));
    assert!(smtp.wait_for(7, Duration::from_secs(20)).await);

    // Added while the last wave waits: they join it.
    t.import(id, &[person(50, "example.net"), person(51, "example.net")])
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(smtp.received_count(), 7, "the rest waits for its release");

    // Released with SQL, as documented (SQLite keeps times as milliseconds).
    let now = match t.store.backend() {
        Backend::Postgres => "now()".to_string(),
        Backend::Sqlite => chrono::Utc::now().timestamp_millis().to_string(),
    };
    t.sql(&format!(
        "UPDATE waves SET released_at = {now} WHERE campaign_id = {id} AND number = 3"
    ))
    .await;
    let done = wait_until(Duration::from_secs(30), || async {
        t.progress(id).await.state == CampaignState::Completed
    })
    .await;
    assert!(done, "{:?}", t.progress(id).await);
    r.stop.send(true).unwrap();
    r.handle.await.unwrap().unwrap();
    assert_eq!(smtp.received_count(), 12);
    let waves = t.store.wave_progress(id).await.unwrap();
    assert_eq!(
        waves.iter().map(|w| w.total).collect::<Vec<_>>(),
        vec![3, 4, 5],
        "late recipients joined the rest"
    );

    // `status` shows each wave's rate, ETA and last change, as the views compute them. Rates count
    // whole 10-second buckets: wait until the current one has closed.
    let into_bucket = chrono::Utc::now().timestamp_millis() % 10_000;
    tokio::time::sleep(Duration::from_millis((10_000 - into_bucket + 500) as u64)).await;
    let status = |args: &[&str]| t.cli(dir.path()).args(args).output().unwrap();
    let json = status(&["status", "--json", &id.to_string()]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(value[0]["sent_last_hour"], 12, "{value}");
    assert_eq!(
        value[0]["eta_seconds"],
        serde_json::Value::Null,
        "nothing open"
    );
    let waves = value[0]["waves"].as_array().unwrap();
    assert_eq!(
        waves
            .iter()
            .map(|w| w["sent_last_hour"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![3, 4, 5],
        "{value}"
    );
    assert!(
        waves.iter().all(|w| w["last_change_at"].is_string()),
        "{value}"
    );
    let table = String::from_utf8(status(&["status", &id.to_string()]).stdout).unwrap();
    let wave_header = table
        .lines()
        .find(|l| l.trim_start().starts_with("WAVE"))
        .unwrap_or_else(|| panic!("{table}"));
    for column in ["SENT/MIN", "SENT/H", "ETA", "LAST CHANGE (UTC)"] {
        assert!(wave_header.contains(column), "{wave_header}");
    }
}

async fn a_failure_guard_pauses_the_campaign_with_the_reason(t: TestApp) {
    // Half of the first wave is refused for good: far above a 20% guard.
    let script = Script::new().when(
        |a| {
            a.trim_start_matches("user")
                .split('@')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n % 2 == 0)
        },
        Behaviour::reply(550, "5.1.1 No such user"),
    );
    let smtp = SmtpServer::start(script).await;
    let mut s = spec(None, "Hi");
    s.waves = vec![
        wave(WaveSize::Count(40), Release::Auto, Some(0.2)),
        wave(WaveSize::Rest, Release::Auto, None),
    ];
    let rows: Vec<_> = (0..100).map(|i| person(i, "example.com")).collect();
    let id = t.campaign(&s).with(&rows).started().await;
    t.run_until_idle(&t.settings(&smtp), Duration::from_secs(60))
        .await;

    let c = t.store.require_campaign(id).await.unwrap();
    assert_eq!(c.state, CampaignState::Paused);
    let reason = c.state_reason.unwrap_or_default();
    assert!(
        reason.starts_with("wave 1 guard: permanent-failure rate"),
        "{reason}"
    );
    let p = t.progress(id).await;
    assert!(
        p.sent + p.failed <= 40,
        "nothing beyond the first wave was sent: {p:?}"
    );
    let events = t.store.campaign_events(id).await.unwrap();
    assert!(events.last().unwrap().actor.starts_with("daemon:"));
}
