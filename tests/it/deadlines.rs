//! Deadlines per campaign and jurisdiction (docs/deadlines.md), on PostgreSQL and SQLite alike: the
//! per-jurisdiction counters follow every import and status change (checked against a count of the
//! recipients after each step), the `jurisdiction_progress` view's figures for a hand-counted fixture,
//! a read of the view that never touches the recipients, the migration's backfill of rows stored before
//! it, and what `import` and `status` print.

use crate::common;

use std::path::Path;

use breach_notifier::config::RulesSettings;
use breach_notifier::store::{CampaignState, Channel, NewRecipient, Store};
use chrono::{Days, NaiveDate, Utc};
use common::{EmptyDb, TestApp};

backends!(
    counters_follow_import_sends_bounces_and_cancel,
    the_view_shows_a_hand_counted_fixture,
    reading_the_view_does_not_read_the_recipients,
);
backends!(empty: import_and_status_show_every_jurisdiction, the_migration_counts_rows_already_stored);

const COUNTED: &str = "SELECT jurisdiction, total, queued, deferred, sent, failed, cancelled, postal, bounced \
     FROM jurisdiction_counters WHERE campaign_id = 1 AND total <> 0 ORDER BY jurisdiction";
const RECOUNTED: &str = "SELECT coalesce(jurisdiction, '') AS j, count(*), \
     sum(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), sum(CASE WHEN status = 'deferred' THEN 1 ELSE 0 END), \
     sum(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), \
     sum(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END), sum(CASE WHEN status = 'postal' THEN 1 ELSE 0 END), \
     sum(CASE WHEN status = 'bounced' THEN 1 ELSE 0 END) \
     FROM recipients WHERE campaign_id = 1 GROUP BY 1 ORDER BY 1";

type Counts = Vec<(String, i64, i64, i64, i64, i64, i64, i64, i64)>;

/// The counters agree with a count of the recipients themselves.
async fn assert_counters_right(app: &TestApp, step: &str) {
    let kept: Counts = common::rows(&app.store, COUNTED).await;
    let recounted: Counts = common::rows(&app.store, RECOUNTED).await;
    assert_eq!(kept, recounted, "after {step}");
}

fn resident(i: usize, jurisdiction: Option<&str>, postal: bool) -> NewRecipient {
    let mut r = common::person(i, "example.com");
    r.jurisdiction = jurisdiction.map(str::to_string);
    if postal {
        r.email = None;
        r.electronic_consent = false;
        r.channel = Channel::Postal;
    }
    r
}

/// 3 in US-CA, 2 in US-TX, 1 with the unknown code ZZ, 1 postal without a jurisdiction.
fn fixture() -> Vec<NewRecipient> {
    vec![
        resident(1, Some("US-CA"), false),
        resident(2, Some("US-CA"), false),
        resident(3, Some("US-CA"), false),
        resident(4, Some("US-TX"), false),
        resident(5, Some("US-TX"), false),
        resident(6, Some("ZZ"), false),
        resident(7, None, true),
    ]
}

async fn counters_follow_import_sends_bounces_and_cancel(app: TestApp) {
    let rows = fixture();
    let id = app
        .campaign(&common::spec(None, "x"))
        .with(&rows[..4])
        .await;
    assert_eq!(id, 1);
    assert_counters_right(&app, "the first import").await;
    app.import(id, &rows[4..]).await;
    assert_counters_right(&app, "the second import").await;
    app.sql("UPDATE recipients SET status = 'sent' WHERE jurisdiction = 'US-CA'")
        .await;
    assert_counters_right(&app, "sends").await;
    app.sql("UPDATE recipients SET status = 'deferred' WHERE jurisdiction = 'US-TX'")
        .await;
    app.sql("UPDATE recipients SET status = 'bounced' WHERE customer_id = 'C000001'")
        .await;
    assert_counters_right(&app, "a bounce").await;
    app.sql("UPDATE recipients SET jurisdiction = 'US-NY' WHERE customer_id = 'C000006'")
        .await;
    assert_counters_right(&app, "a jurisdiction corrected with SQL").await;
    app.store
        .set_campaign_state(id, CampaignState::Cancelled, "test", Some("drill"))
        .await
        .unwrap();
    app.store.settle_cancelled(id, Utc::now()).await.unwrap();
    assert_counters_right(&app, "cancel").await;
    let kept: Counts = common::rows(&app.store, COUNTED).await;
    assert_eq!(
        kept,
        vec![
            ("".into(), 1, 0, 0, 0, 0, 0, 1, 0),
            ("US-CA".into(), 3, 0, 0, 2, 0, 0, 0, 1),
            ("US-NY".into(), 1, 0, 0, 0, 0, 1, 0, 0),
            ("US-TX".into(), 2, 0, 0, 0, 0, 2, 0, 0),
        ]
    );
}

fn days_before(today: NaiveDate, n: u64) -> NaiveDate {
    today.checked_sub_days(Days::new(n)).unwrap()
}

async fn the_view_shows_a_hand_counted_fixture(app: TestApp) {
    let today = Utc::now().date_naive();
    let mut spec = common::spec(None, "x");
    spec.discovered_at = Some(days_before(today, 10));
    let id = app.campaign(&spec).with(&fixture()).started().await;
    app.sql("UPDATE recipients SET status = 'sent' WHERE customer_id IN ('C000001', 'C000002')")
        .await;
    app.sql("UPDATE recipients SET status = 'bounced' WHERE customer_id = 'C000002'")
        .await;
    // The campaign sent 60 in the last minute: one a second.
    let bucket = Utc::now().timestamp() / 10 * 10 - 30;
    let last_at = match &app.store {
        Store::Postgres(_) => format!("to_timestamp({bucket})"),
        Store::Sqlite(_) => format!("{}", bucket * 1000),
    };
    app.sql(&format!(
        "INSERT INTO send_buckets (campaign_id, bucket, wave_number, attempts, sent, failed, last_at) \
         VALUES ({id}, {bucket}, 0, 60, 60, 0, {last_at})"
    ))
    .await;
    let campaign = app.store.require_campaign(id).await.unwrap();
    let written =
        breach_notifier::cli::deadlines::refresh(&app.store, &RulesSettings::default(), &campaign)
            .await
            .unwrap();
    assert_eq!(written, 4);
    let rows = app.store.jurisdiction_progress(id).await.unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.jurisdiction.clone(),
                r.residents,
                r.notified_email,
                r.bounced,
                r.postal_pending,
                r.deadline,
                r.basis.clone(),
                r.days_left,
                r.eta_seconds,
            )
        })
        .collect();
    let d = |n| {
        Some(
            days_before(today, 10)
                .checked_add_days(Days::new(n))
                .unwrap(),
        )
    };
    let law = Some("law".to_string());
    let target = Some("internal_target".to_string());
    assert_eq!(
        got,
        vec![
            // No jurisdiction, postal: the internal target, 30 days.
            (None, 1, 0, 0, 1, d(30), target.clone(), Some(20), None),
            // California: 30 days from discovery; one sent, one bounced (a letter owed), one open.
            (
                Some("US-CA".into()),
                3,
                1,
                1,
                1,
                d(30),
                law.clone(),
                Some(20),
                Some(1)
            ),
            // Texas: 60 days from determination (none recorded: discovery).
            (
                Some("US-TX".into()),
                2,
                0,
                0,
                0,
                d(60),
                law,
                Some(50),
                Some(2)
            ),
            // Unknown code: imported, and given the internal target.
            (
                Some("ZZ".into()),
                1,
                0,
                0,
                0,
                d(30),
                target,
                Some(20),
                Some(1)
            ),
        ]
    );
    assert!(rows.iter().all(|r| !r.late()));
    let tx = &rows[2];
    assert!(
        tx.projected_completion
            .is_some_and(|p| p >= today && p <= today + Days::new(1))
    );
    assert!(
        rows[3]
            .law_text
            .as_deref()
            .unwrap()
            .contains("ZZ is not in the rules")
    );
}

async fn reading_the_view_does_not_read_the_recipients(app: TestApp) {
    let id = app
        .campaign(&common::spec(None, "x"))
        .with(&fixture())
        .await;
    let plan: Vec<String> = match &app.store {
        Store::Postgres(s) => sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "EXPLAIN SELECT * FROM jurisdiction_progress WHERE campaign_id = {id}"
        )))
        .fetch_all(s.pool())
        .await
        .unwrap(),
        Store::Sqlite(s) => {
            sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN SELECT * FROM jurisdiction_progress WHERE campaign_id = {id}"
            )))
            .fetch_all(s.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|(_, _, _, detail)| detail)
            .collect()
        }
    };
    let plan = plan.join("\n");
    assert!(plan.contains("jurisdiction_counters"), "{plan}");
    assert!(!plan.contains("recipients"), "{plan}");
}

fn cli_ok(dir: &Path, url: &str, args: &[&str]) -> String {
    let o = common::cli(dir, url).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

const PEOPLE: &str = "customer_id,email,jurisdiction,electronic_consent\n\
    A1,a1@example.com,US-CA,yes\nA2,a2@example.com,us-ca,yes\nA3,a3@example.com,US-TX,yes\n\
    A4,a4@example.com,ZZ,yes\nA5,a5@example.com,ZZ,yes\nA6,a6@example.com,US-XX,yes\nA7,a7@example.com,,yes\n";

async fn import_and_status_show_every_jurisdiction(db: EmptyDb) {
    let dir = tempfile::tempdir().unwrap();
    let (d, url) = (dir.path(), db.url.as_str());
    cli_ok(d, url, &["migrate"]);
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/campaign.toml");
    cli_ok(d, url, &["campaign", "create", example.to_str().unwrap()]);
    let csv = d.join("people.csv");
    std::fs::write(&csv, PEOPLE).unwrap();
    let out = cli_ok(
        d,
        url,
        &["import", "--campaign", "1", csv.to_str().unwrap()],
    );
    assert!(
        out.contains("jurisdictions: 3 rows with a known code (2 codes), 3 with an unknown code, 1 without one"),
        "{out}"
    );
    assert!(out.contains("US-XX") && out.contains("ZZ"), "{out}");
    assert!(!out.contains("a1@example.com"), "no personal data: {out}");
    let status = cli_ok(d, url, &["status", "1"]);
    let ca = status.find("\n  US-CA ").expect("a US-CA row");
    let tx = status.find("\n  US-TX ").expect("a US-TX row");
    // Discovered 2023-11-02, nothing sent: every jurisdiction is late, California (30 days) first.
    assert!(ca < tx, "{status}");
    assert!(
        status.contains("(none)") && status.contains("internal target 30 days"),
        "{status}"
    );
    assert!(status.contains("2023-12-02"), "{status}");
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(d, url, &["status", "1", "--json"])).unwrap();
    let rows = json[0]["jurisdictions"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    // Same deadline, all late: by code, recipients without one first.
    assert!(rows[0]["jurisdiction"].is_null());
    assert_eq!(rows[0]["basis"], "internal_target");
    assert_eq!(rows[1]["jurisdiction"], "US-CA");
    assert_eq!(rows[1]["residents"], 2);
    assert_eq!(rows[1]["deadline"], "2023-12-02");
    assert_eq!(rows[1]["basis"], "law");
    assert_eq!(rows[4]["jurisdiction"], "US-TX");
    assert_eq!(rows[4]["deadline"], "2024-01-01");
    let export = d.join("evidence.csv");
    cli_ok(
        d,
        url,
        &[
            "export",
            "evidence",
            "--campaign",
            "1",
            "--output",
            export.to_str().unwrap(),
        ],
    );
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        text.lines().next().unwrap().contains(",deadline,"),
        "{text}"
    );
    assert!(
        text.lines().nth(1).unwrap().contains(",2023-12-02,"),
        "{text}"
    );
}

async fn the_migration_counts_rows_already_stored(db: EmptyDb) {
    let insert = "INSERT INTO campaigns (name, definition, content_hash) VALUES ('old', '', 'x');\n\
        INSERT INTO recipients (campaign_id, customer_id, email, jurisdiction, status) VALUES \
        (1, 'A', 'a@example.com', 'US-CA', 'sent'), (1, 'B', 'b@example.com', 'US-CA', 'queued'), \
        (1, 'C', 'c@example.com', NULL, 'bounced')";
    // Migrations up to 9, rows written, then migration 10 and the rest.
    let store = common::migrate_around(&db.url, 10, &[insert]).await;
    let got: Vec<(String, i64, i64, i64, i64)> = common::rows(
        &store,
        "SELECT jurisdiction, total, queued, sent, bounced FROM jurisdiction_counters ORDER BY 1",
    )
    .await;
    assert_eq!(
        got,
        vec![("".into(), 1, 0, 0, 1), ("US-CA".into(), 2, 1, 1, 0)]
    );
}
