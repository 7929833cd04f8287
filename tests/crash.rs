//! The delivery guarantee under the worst case: the daemon process killed with SIGKILL mid-campaign
//! (not dropped: no destructor, no drain), then restarted. Checked against what the SMTP server
//! actually received: everyone is notified, nobody is left unfinished, and duplicates (same
//! Message-ID twice) number no more than the in-flight bound.

mod common;

use std::process::Stdio;
use std::time::Duration;

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
        email_without_consent: false,
        supplements: None,
        default_locale: "en-US".into(),
        sender: SenderSpec {
            from: "notices@example.com".into(),
            reply_to: None,
            return_path: None,
        },
        locales,
        rate: RateSpec::default(),
        waves: Vec::new(),
        source: String::new(),
    }
}

fn daemon(url: &str, smtp_port: u16) -> tokio::process::Child {
    let dir = std::env::temp_dir();
    tokio::process::Command::new(common::binary())
        .current_dir(dir)
        .arg("run")
        .env_remove("BREACH_NOTIFIER_CONFIG")
        .env("BREACH_NOTIFIER__DATABASE__URL", url)
        .env("BREACH_NOTIFIER__TRANSPORT__KIND", "smtp")
        .env("BREACH_NOTIFIER__TRANSPORT__SMTP__HOST", "127.0.0.1")
        .env(
            "BREACH_NOTIFIER__TRANSPORT__SMTP__PORT",
            smtp_port.to_string(),
        )
        .env("BREACH_NOTIFIER__TRANSPORT__SMTP__TLS", "none")
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

async fn killed_and_restarted(t: common::TestStore) {
    // Every message takes a little while, so many are in flight when the kill comes.
    let smtp = SmtpServer::start(
        Script::new().default_behaviour(Behaviour::SlowData(Duration::from_millis(30))),
    )
    .await;
    let s = spec();
    let id = t
        .store
        .create_campaign(
            &NewCampaign {
                name: s.name.clone(),
                definition: s.to_stored(),
                content_hash: s.content_hash(),
                email_without_consent: false,
                discovered_at: None,
                supplements: None,
            },
            "test",
        )
        .await
        .unwrap();
    let rows: Vec<_> = (0..RECIPIENTS)
        .map(|i| NewRecipient {
            customer_id: format!("K{i:05}"),
            email: Some(format!("k{i}@example.com")),
            first_name: Some("K".into()),
            electronic_consent: true,
            ..Default::default()
        })
        .collect();
    t.store.insert_recipients(id, &rows).await.unwrap();
    t.store
        .set_campaign_state(id, CampaignState::Running, "test", None)
        .await
        .unwrap();

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
        // Let the dead daemon's heartbeat go stale (SQLite admits one live daemon) and its leases lapse.
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
