//! Deadline-first sending (docs/deadlines.md, "Sending order"), on PostgreSQL and SQLite alike: the
//! import writes each row's deadline day from the rules and the campaign's discovery date; claims
//! take the earliest deadline first, then queue order, within the released waves; a deadline that
//! moves (counsel's override file) moves its recipients; the daemon sends in that order; and a
//! campaign without deadlines keeps its queue order.

use crate::common;

use std::path::Path;
use std::time::Duration;

use breach_notifier::config::RulesSettings;
use breach_notifier::intake::{ImportOptions, import};
use breach_notifier::store::{ClaimPosition, ClaimRequest, Store, deadline_day};
use chrono::{NaiveDate, Utc};
use common::TestApp;
use common::smtp::{Script, SmtpServer};

backends!(
    imports_write_deadline_days_and_claims_follow_them,
    the_wave_gate_keeps_deadline_order_within_it,
    a_moved_deadline_moves_its_recipients,
    without_a_discovery_date_the_queue_order_stays,
    the_daemon_sends_earliest_deadline_first,
);

/// Discovered 2023-11-02: California 30 days (2023-12-02), Ohio 45 (2023-12-17), Texas 60 from
/// determination, which falls back to discovery (2024-01-01); no code and the unknown ZZ take the
/// internal target of 30 days (2023-12-02), California's day.
const PEOPLE: &str = "customer_id,email,jurisdiction,electronic_consent\n\
    T1,t1@example.com,US-TX,yes\nC1,c1@example.com,US-CA,yes\nO1,o1@example.com,US-OH,yes\n\
    N1,n1@example.com,,yes\nT2,t2@example.com,US-TX,yes\nC2,c2@example.com,US-CA,yes\n\
    O2,o2@example.com,US-OH,yes\nZ1,z1@example.com,ZZ,yes\n";

/// Earliest deadline first, equal deadlines in queue order.
const DEADLINE_ORDER: [&str; 8] = ["C1", "N1", "C2", "Z1", "O1", "O2", "T1", "T2"];

fn discovered() -> NaiveDate {
    NaiveDate::from_ymd_opt(2023, 11, 2).unwrap()
}

/// A running campaign (discovered as above when `dated`) with [`PEOPLE`] imported as `import` does,
/// and its deadlines computed as `campaign start` computes them.
async fn campaign_with_people(t: &TestApp, dated: bool, rules: &RulesSettings) -> i64 {
    let mut spec = common::spec(None, "x");
    spec.discovered_at = dated.then(discovered);
    let id = t.campaign(&spec).started().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    std::fs::write(&csv, PEOPLE).unwrap();
    let campaign = t.store.require_campaign(id).await.unwrap();
    let rules_now = breach_notifier::rules::load(rules).unwrap();
    let options = ImportOptions {
        campaign_id: id,
        source: csv,
        rejects: None,
        dry_run: false,
        actor: "test".into(),
        progress: false,
        deadline_days: breach_notifier::cli::deadlines::import_deadline_days(
            rules_now, rules, &campaign,
        ),
    };
    let summary = import(&t.store, &options).await.unwrap();
    assert_eq!(summary.counts.accepted(), 8);
    breach_notifier::cli::deadlines::refresh(&t.store, rules, &campaign)
        .await
        .unwrap();
    id
}

/// Claims everything claimable (ids up to `upper`) from the start, `per_claim` at a time, moving the
/// position as the dispatcher does; the customers in the order claimed.
async fn claim_all(store: &Store, id: i64, upper: i64, per_claim: u32) -> Vec<String> {
    let mut cursor = ClaimPosition::START;
    let mut order = Vec::new();
    loop {
        let claim = store
            .claim_batch(&ClaimRequest {
                upper,
                cursor,
                ..common::request(id, "a", 0, per_claim, Duration::from_secs(60), Utc::now())
            })
            .await
            .unwrap();
        order.extend(claim.recipients.iter().map(|r| r.customer_id.clone()));
        cursor = claim.cursor;
        if claim.exhausted {
            return order;
        }
    }
}

/// Each recipient's deadline day, by customer, in queue order.
async fn deadline_days(store: &Store, id: i64) -> Vec<(String, i32)> {
    let rows = store.recipients_after(id, 0, 100).await.unwrap();
    rows.into_iter()
        .map(|r| (r.customer_id, r.deadline_day))
        .collect()
}

fn day(y: i32, m: u32, d: u32) -> i32 {
    deadline_day(NaiveDate::from_ymd_opt(y, m, d).unwrap())
}

async fn imports_write_deadline_days_and_claims_follow_them(t: TestApp) {
    let id = campaign_with_people(&t, true, &RulesSettings::default()).await;
    let (ca, oh, tx) = (day(2023, 12, 2), day(2023, 12, 17), day(2024, 1, 1));
    let expected: Vec<(String, i32)> = [
        ("T1", tx),
        ("C1", ca),
        ("O1", oh),
        ("N1", ca),
        ("T2", tx),
        ("C2", ca),
        ("O2", oh),
        ("Z1", ca),
    ]
    .iter()
    .map(|(c, d)| (c.to_string(), *d))
    .collect();
    assert_eq!(deadline_days(&t.store, id).await, expected);
    // The same days as the deadlines `status` shows.
    let progress = t.store.jurisdiction_progress(id).await.unwrap();
    let tx_row = progress
        .iter()
        .find(|p| p.jurisdiction.as_deref() == Some("US-TX"))
        .unwrap();
    assert_eq!(tx_row.deadline.map(deadline_day), Some(tx));
    for per_claim in [1, 3, 100] {
        // A fresh campaign each time: claimed rows stay leased.
        let again = if per_claim == 1 {
            id
        } else {
            campaign_with_people(&t, true, &RulesSettings::default()).await
        };
        assert_eq!(
            claim_all(&t.store, again, i64::MAX, per_claim).await,
            DEADLINE_ORDER,
            "{per_claim} per claim"
        );
    }
}

async fn the_wave_gate_keeps_deadline_order_within_it(t: TestApp) {
    let id = campaign_with_people(&t, true, &RulesSettings::default()).await;
    // A first wave of the first four in queue order (T1, C1, O1, N1), as a wave is a key range.
    let fourth = t.store.recipients_after(id, 0, 4).await.unwrap()[3].id;
    assert_eq!(
        claim_all(&t.store, id, fourth, 2).await,
        ["C1", "N1", "O1", "T1"]
    );
    assert_eq!(
        claim_all(&t.store, id, i64::MAX, 2).await,
        ["C2", "Z1", "O2", "T2"],
        "the next wave, from the start of the claim order"
    );
}

/// Counsel's file gives Texas 10 days: its recipients not yet sent go first from then on.
async fn a_moved_deadline_moves_its_recipients(t: TestApp) {
    let shipped = RulesSettings::default();
    let id = campaign_with_people(&t, true, &shipped).await;
    let dir = tempfile::tempdir().unwrap();
    let counsel = texas_in_ten_days(dir.path());
    let rules = RulesSettings {
        file: Some(counsel),
        ..RulesSettings::default()
    };
    let campaign = t.store.require_campaign(id).await.unwrap();
    breach_notifier::cli::deadlines::refresh(&t.store, &rules, &campaign)
        .await
        .unwrap();
    let days = deadline_days(&t.store, id).await;
    let texas: Vec<i32> = days
        .iter()
        .filter(|(c, _)| c.starts_with('T'))
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(texas, vec![day(2023, 11, 12); 2]);
    assert_eq!(
        claim_all(&t.store, id, i64::MAX, 3).await,
        ["T1", "T2", "C1", "N1", "C2", "Z1", "O1", "O2"]
    );
}

/// The shipped Texas entry with 10 days for individuals, as an override file in `dir`.
fn texas_in_ten_days(dir: &Path) -> std::path::PathBuf {
    let out = common::command(dir)
        .env(
            "BREACH_NOTIFIER__DATABASE__URL",
            "sqlite:///nonexistent/x.db",
        )
        .args(["rules", "show", "US-TX", "--toml"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let entry = String::from_utf8(out.stdout).unwrap();
    let body = &entry[entry.find("[[jurisdiction]]").unwrap()..];
    let individual = body.find("[jurisdiction.individual]").unwrap();
    let days = individual + body[individual..].find("days = 60").unwrap();
    let edited = format!("{}days = 10{}", &body[..days], &body[days + 9..]);
    let path = dir.join("counsel.toml");
    std::fs::write(&path, edited).unwrap();
    path
}

async fn without_a_discovery_date_the_queue_order_stays(t: TestApp) {
    let id = campaign_with_people(&t, false, &RulesSettings::default()).await;
    assert!(
        deadline_days(&t.store, id)
            .await
            .iter()
            .all(|(_, d)| *d == 0)
    );
    assert_eq!(
        claim_all(&t.store, id, i64::MAX, 3).await,
        ["T1", "C1", "O1", "N1", "T2", "C2", "O2", "Z1"]
    );
}

async fn the_daemon_sends_earliest_deadline_first(t: TestApp) {
    let id = campaign_with_people(&t, true, &RulesSettings::default()).await;
    let smtp = SmtpServer::start(Script::new()).await;
    let mut settings = t.settings(&smtp);
    // One notice at a time, so that the relay sees the claim order.
    settings.dispatch.max_in_flight = 1;
    settings.dispatch.batch_size = 1;
    settings.dispatch.concurrency = 1;
    t.run_until_idle(&settings, Duration::from_secs(60)).await;
    assert_eq!(t.progress(id).await.sent, 8);
    let received: Vec<String> = smtp
        .received()
        .iter()
        .map(|m| m.rcpt_to[0].split('@').next().unwrap().to_ascii_uppercase())
        .collect();
    assert_eq!(received, DEADLINE_ORDER);
}
