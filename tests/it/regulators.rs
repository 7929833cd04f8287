//! The regulator report (`report regulators`, docs/regulators.md) on PostgreSQL and SQLite alike: a
//! hand-counted fixture of jurisdictions on both sides of their thresholds, with exact figures in CSV
//! and JSON, now and `--as-of` an earlier day; the report's counts reconciled with the evidence export
//! recipient by recipient; the figures the database keeps against a count of the recipients, through
//! the daemon's own sends and the changes that take a notice back; and the command line's output.

use crate::common;

use std::collections::BTreeMap;

use breach_notifier::cli::report::{CSV_COLUMNS, collect, render_csv, render_md};
use breach_notifier::config::RulesSettings;
use breach_notifier::ops::export::{ExportKind, ExportOptions, Format, export};
use breach_notifier::store::report::ResidentFigures;
use breach_notifier::store::{Channel, NewRecipient, Store};
use chrono::NaiveDate;
use common::smtp::{Behaviour, Script, SmtpServer};
use common::{EmptyDb, TestApp};
use std::time::Duration;

backends!(
    figures_match_a_hand_counted_fixture,
    as_of_counts_only_what_happened_by_then,
    the_report_reconciles_with_the_evidence_export,
    the_kept_figures_agree_with_a_count_of_the_recipients,
    the_kept_figures_follow_the_daemons_sends_and_failures,
    the_command_prints_each_format_and_refuses_a_bad_date,
);
backends!(empty: the_migration_fills_the_figures_of_rows_already_stored);

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A time literal of the backend's dialect.
fn at(store: &Store, rfc3339: &str) -> String {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
    match store {
        Store::Postgres(_) => format!("TIMESTAMPTZ '{rfc3339}'"),
        Store::Sqlite(_) => t.timestamp_millis().to_string(),
    }
}

fn resident(i: usize, code: Option<&str>, postal_address: Option<&str>) -> NewRecipient {
    let mut r = common::person(i, "example.com");
    r.jurisdiction = code.map(str::to_string);
    if let Some(address) = postal_address {
        r.email = None;
        r.electronic_consent = false;
        r.channel = Channel::Postal;
        r.address1 = (!address.is_empty()).then(|| address.to_string());
    }
    r
}

/// 50 in US-DC (its AG's threshold: 50), 3 in US-SD (AG: 251; credit bureaus: 1), 2 in US-MD (AG:
/// any, before the consumer notice), 1 with the unknown code ZZ, 1 without a code. Ids in that order.
fn people() -> Vec<NewRecipient> {
    let mut rows: Vec<NewRecipient> = (1..=50).map(|i| resident(i, Some("US-DC"), None)).collect();
    rows.push(resident(51, Some("US-SD"), None));
    rows.push(resident(52, Some("US-SD"), None));
    rows.push(resident(53, Some("US-SD"), Some("1 Main St")));
    rows.push(resident(54, Some("US-MD"), Some("")));
    rows.push(resident(55, Some("US-MD"), None));
    rows.push(resident(56, Some("ZZ"), None));
    rows.push(resident(57, None, None));
    rows
}

/// Imported on 5 March. DC: 40 sent on 10 March, 8 on 12 March, one accepted on 10 March and bounced
/// on 13 March, one open. SD: two sent on 11 March, one letter. MD: a letter without an address, one
/// open.
async fn fixture(app: &TestApp) -> i64 {
    let mut spec = common::spec(None, "x");
    spec.discovered_at = Some(day("2026-03-02"));
    spec.determined_at = Some(day("2026-03-09"));
    let id = app.campaign(&spec).with(&people()).started().await;
    let s = &app.store;
    let sent = |ids: &str, when: &str| {
        format!(
            "UPDATE recipients SET status = 'sent', attempts = 1, finished_at = {} WHERE customer_id IN ({ids})",
            at(s, when)
        )
    };
    let dc40: Vec<String> = (1..=40).map(|i| format!("'C{i:06}'")).collect();
    let dc8: Vec<String> = (41..=48).map(|i| format!("'C{i:06}'")).collect();
    app.sql(&format!(
        "UPDATE recipients SET created_at = {} WHERE campaign_id = {id}",
        at(s, "2026-03-05T08:00:00Z")
    ))
    .await;
    app.sql(&sent(&dc40.join(","), "2026-03-10T10:00:00Z"))
        .await;
    app.sql(&sent(&dc8.join(","), "2026-03-12T15:00:00Z")).await;
    app.sql(&sent("'C000049'", "2026-03-10T11:00:00Z")).await;
    app.sql(&sent("'C000051','C000052'", "2026-03-11T09:00:00Z"))
        .await;
    app.sql(&format!(
        "INSERT INTO delivery_attempts (recipient_id, campaign_id, attempt, instance, started_at, \
         finished_at, outcome, smtp_code, message_id) SELECT id, campaign_id, 1, 'test', {t}, {t}, \
         'sent', 250, 'm49@example.com' FROM recipients WHERE customer_id = 'C000049'",
        t = at(s, "2026-03-10T11:00:00Z")
    ))
    .await;
    app.sql(&format!(
        "UPDATE recipients SET status = 'bounced', postal_followup = TRUE, bounced_at = {t}, \
         finished_at = {t} WHERE customer_id = 'C000049'",
        t = at(s, "2026-03-13T07:00:00Z")
    ))
    .await;
    id
}

fn settings() -> RulesSettings {
    RulesSettings::default()
}

/// The CSV's lines as maps from column to cell, keyed by (jurisdiction, kind, first word of name).
fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(header, CSV_COLUMNS);
    reader
        .records()
        .map(|r| {
            header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(str::to_string))
                .collect()
        })
        .collect()
}

fn row<'a>(
    rows: &'a [BTreeMap<String, String>],
    code: &str,
    kind: &str,
) -> &'a BTreeMap<String, String> {
    rows.iter()
        .find(|r| r["jurisdiction"] == code && r["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} line for {code}"))
}

fn cells<'a>(r: &'a BTreeMap<String, String>, names: &[&str]) -> Vec<&'a str> {
    names.iter().map(|n| r[*n].as_str()).collect()
}

const FIGURES: &[&str] = &[
    "residents",
    "email_sent",
    "notified_email",
    "bounced",
    "letters_owed",
    "no_contact",
    "first_email_at",
    "last_email_at",
];
const DUTY: &[&str] = &["threshold", "compared_with", "threshold_met", "due"];

async fn figures_match_a_hand_counted_fixture(app: TestApp) {
    let id = fixture(&app).await;
    let report = collect(&app.store, &settings(), id, None).await.unwrap();
    let rows = csv_rows(&render_csv(&report));
    let dc = row(&rows, "US-DC", "regulator");
    // The bounced one has no postal address either: no contact information left.
    assert_eq!(
        cells(dc, FIGURES),
        [
            "50",
            "49",
            "48",
            "1",
            "1",
            "1",
            "2026-03-10T10:00:00+00:00",
            "2026-03-12T15:00:00+00:00"
        ]
    );
    // The DC Attorney General hears no later than the first consumer notice: 50 reach its 50.
    assert_eq!(cells(dc, DUTY), ["50", "50", "yes", "2026-03-10"]);
    let sd = row(&rows, "US-SD", "regulator");
    assert_eq!(
        cells(sd, FIGURES),
        [
            "3",
            "2",
            "2",
            "0",
            "1",
            "0",
            "2026-03-11T09:00:00+00:00",
            "2026-03-11T09:00:00+00:00"
        ]
    );
    // Listed although not met, with the count it was compared with.
    assert_eq!(cells(sd, DUTY), ["251", "3", "no", ""]);
    assert_eq!(
        cells(row(&rows, "US-SD", "credit_bureaus"), DUTY),
        ["1", "3", "yes", ""]
    );
    assert_eq!(
        sd["consumer_deadline"], "2026-05-01",
        "60 days after discovery"
    );
    let md = row(&rows, "US-MD", "regulator");
    assert_eq!(cells(md, FIGURES), ["2", "0", "0", "0", "1", "1", "", ""]);
    assert_eq!(cells(md, DUTY), ["1", "2", "yes", ""]);
    assert!(
        md["due_note"].contains("no consumer notice sent yet"),
        "{md:?}"
    );
    let md_sub = row(&rows, "US-MD", "substitute_notice");
    assert!(md_sub["due_note"].contains("1 residents without contact information"));
    assert_eq!(row(&rows, "ZZ", "unknown_code")["residents"], "1");
    assert_eq!(row(&rows, "", "no_code")["residents"], "1");
    // The FTC's 500 (a sector rule) against the whole campaign's 57.
    let ftc = row(&rows, "US-FED-FTC-SAFEGUARDS", "regulator");
    assert_eq!(cells(ftc, DUTY), ["500", "57", "no", "2026-04-01"]);

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["determined_at"], "2026-03-09");
    let dc = json["jurisdictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["code"] == "US-DC")
        .unwrap();
    assert_eq!(dc["figures"]["residents"], 50);
    assert_eq!(dc["figures"]["email_sent"], 49);
    assert_eq!(dc["figures"]["bounced"], 1);
    // DC's law sets no number of days: the internal target, 30 days after discovery.
    assert_eq!(dc["consumer_deadline"], "2026-04-01");
    assert_eq!(dc["duties"][0]["met"], "yes");
    assert_eq!(dc["duties"][0]["due"], "2026-03-10");
    assert_eq!(json["total"]["residents"], 57);
    assert_eq!(json["unknown_codes"][0][0], "ZZ");
    let md_text = render_md(&report);
    assert!(
        md_text.contains("## District of Columbia (US-DC)"),
        "{md_text}"
    );
    assert!(!md_text.contains("user1@example.com") && !md_text.contains("Person1"));
}

async fn as_of_counts_only_what_happened_by_then(app: TestApp) {
    let id = fixture(&app).await;
    let report = collect(&app.store, &settings(), id, Some(day("2026-03-10")))
        .await
        .unwrap();
    let rows = csv_rows(&render_csv(&report));
    // By the end of 10 March: 41 accepted in DC (the one that bounced later among them), none in SD.
    assert_eq!(
        cells(row(&rows, "US-DC", "regulator"), FIGURES),
        [
            "50",
            "41",
            "41",
            "0",
            "0",
            "0",
            "2026-03-10T10:00:00+00:00",
            "2026-03-10T11:00:00+00:00"
        ]
    );
    assert_eq!(
        cells(row(&rows, "US-SD", "regulator"), FIGURES),
        ["3", "0", "0", "0", "1", "0", "", ""]
    );
    // Before the import, nobody was known.
    let before = collect(&app.store, &settings(), id, Some(day("2026-03-04")))
        .await
        .unwrap();
    assert_eq!(before.report.total.residents, 0);
    assert!(
        before
            .report
            .jurisdictions
            .iter()
            .all(|j| j.codes.is_empty())
    );
}

/// Per jurisdiction, the report's counts and the evidence export's rows agree.
async fn the_report_reconciles_with_the_evidence_export(app: TestApp) {
    let id = fixture(&app).await;
    let opts = ExportOptions::new(id, ExportKind::Evidence, Format::Csv);
    let (_, bytes) = export(&app.store, &opts, Vec::new()).await.unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let codes: BTreeMap<String, String> = people()
        .into_iter()
        .map(|p| (p.customer_id, p.jurisdiction.unwrap_or_default()))
        .collect();
    // residents, accepted, bounced, letters owed: counted from the evidence, per code.
    let mut from_evidence: BTreeMap<String, [i64; 4]> = BTreeMap::new();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (customer, status, channel, followup) = (
        col("customer_id"),
        col("status"),
        col("channel"),
        col("postal_followup"),
    );
    for r in reader.records() {
        let r = r.unwrap();
        let counts = from_evidence
            .entry(codes[&r[customer]].clone())
            .or_default();
        let st = &r[status];
        counts[0] += 1;
        counts[1] += i64::from(st == "sent" || st == "bounced");
        counts[2] += i64::from(st == "bounced");
        let owed = st != "cancelled"
            && (&r[channel] == "postal"
                || st == "postal"
                || ((st == "failed" || st == "bounced") && &r[followup] == "true"));
        counts[3] += i64::from(owed);
    }
    let from_report: BTreeMap<String, [i64; 4]> = app
        .store
        .resident_figures(id, None)
        .await
        .unwrap()
        .into_iter()
        .map(|f| {
            (
                f.jurisdiction,
                [f.residents, f.email_sent, f.bounced, f.letters_owed],
            )
        })
        .collect();
    assert_eq!(from_report, from_evidence);
    assert_eq!(from_report.len(), 5);
    // And the totals the report prints are those figures summed.
    let report = collect(&app.store, &settings(), id, None).await.unwrap();
    let sum = |i: usize| from_evidence.values().map(|c| c[i]).sum::<i64>();
    let total = &report.report.total;
    assert_eq!(
        [
            total.residents,
            total.email_sent,
            total.bounced,
            total.letters_owed
        ],
        [sum(0), sum(1), sum(2), sum(3)]
    );
}

async fn the_command_prints_each_format_and_refuses_a_bad_date(app: TestApp) {
    let id = fixture(&app).await.to_string();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| app.cli(dir.path()).args(args).output().unwrap();
    let base = ["report", "regulators", "--campaign", id.as_str()];
    let json = run(&[&base[..], &["--format", "json", "--as-of", "2026-03-10"]].concat());
    assert!(
        json.status.success(),
        "{}",
        String::from_utf8_lossy(&json.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["as_of"], "2026-03-10");
    assert_eq!(json["total"]["email_sent"], 41);
    let out = dir.path().join("report.md");
    let md = run(&[&base[..], &["--format", "md", "-o", out.to_str().unwrap()]].concat());
    assert!(
        md.status.success(),
        "{}",
        String::from_utf8_lossy(&md.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("# Regulator report, campaign"), "{text}");
    let csv = run(&base);
    assert!(csv.status.success());
    let text = String::from_utf8(csv.stdout).unwrap();
    assert_eq!(csv_rows(&text).len(), text.lines().count() - 1);
    assert!(!text.contains("example.com"), "no addresses in the report");
    let bad = run(&[&base[..], &["--as-of", "10/03/2026"]].concat());
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--as-of"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// Asserts that the figures `jurisdiction_counters` keeps equal a count of the recipients (their times
/// too, when the counters say those are exact) and that the report now reads the count's figures either
/// way; returns whether the times were exact.
async fn kept_figures_agree(store: &Store, id: i64) -> bool {
    let (kept, exact) = store.kept_figures(id).await.unwrap();
    let counted = store.counted_from_recipients(id, None).await.unwrap();
    let without_times = |figures: &[ResidentFigures]| -> Vec<ResidentFigures> {
        let mut figures = figures.to_vec();
        for f in &mut figures {
            (f.first_email, f.last_email) = (None, None);
        }
        figures
    };
    if exact {
        assert_eq!(kept, counted);
    } else {
        assert_eq!(without_times(&kept), without_times(&counted));
    }
    assert_eq!(store.resident_figures(id, None).await.unwrap(), counted);
    exact
}

/// The fixture's sends and bounce, a send between DC's first and last, that recipient corrected to SD,
/// then a guard's hold of the bounced one: counts exact throughout, times exact until the hold (which
/// takes back a notice whose time the counters cannot take out of DC's first), counted after it.
async fn the_kept_figures_agree_with_a_count_of_the_recipients(app: TestApp) {
    let id = fixture(&app).await;
    let s = &app.store;
    assert!(kept_figures_agree(s, id).await, "exact after the fixture");
    app.sql(&format!(
        "UPDATE recipients SET status = 'sent', attempts = 1, finished_at = {} \
         WHERE customer_id = 'C000050'",
        at(s, "2026-03-11T12:00:00Z")
    ))
    .await;
    assert!(kept_figures_agree(s, id).await, "exact after a send");
    app.sql("UPDATE recipients SET jurisdiction = 'US-SD' WHERE customer_id = 'C000050'")
        .await;
    assert!(
        kept_figures_agree(s, id).await,
        "a send strictly inside DC's first and last leaves both pairs exact"
    );
    let sd = s.kept_figures(id).await.unwrap().0;
    let sd = sd.iter().find(|f| f.jurisdiction == "US-SD").unwrap();
    assert_eq!(
        (
            sd.residents,
            sd.email_sent,
            sd.last_email.map(|t| t.to_rfc3339())
        ),
        (4, 3, Some("2026-03-11T12:00:00+00:00".to_string()))
    );
    app.sql(
        "UPDATE recipients SET status = 'deferred', postal_followup = FALSE, finished_at = NULL \
         WHERE customer_id = 'C000049'",
    )
    .await;
    assert!(
        !kept_figures_agree(s, id).await,
        "a bounced notice taken back leaves DC's times to the count"
    );
}

/// Sends, a permanent failure flagged for a letter, and a letter-only recipient, as the daemon records
/// them through real SMTP: the kept figures equal the count, times included.
async fn the_kept_figures_follow_the_daemons_sends_and_failures(app: TestApp) {
    let smtp = SmtpServer::start(Script::new().for_address(
        "user2@example.com",
        Behaviour::reply(550, "5.1.1 No such user"),
    ))
    .await;
    let mut rows: Vec<NewRecipient> = (1..=6)
        .map(|i| resident(i, Some(if i % 2 == 0 { "US-CA" } else { "US-NY" }), None))
        .collect();
    rows.push(resident(7, Some("US-CA"), Some("7 Main St")));
    rows.push(resident(8, Some("US-NY"), Some("")));
    let id = app
        .campaign(&common::spec(None, "x"))
        .with(&rows)
        .started()
        .await;
    app.run_until_idle(&app.settings(&smtp), Duration::from_secs(60))
        .await;
    assert!(kept_figures_agree(&app.store, id).await);
    let kept = app.store.kept_figures(id).await.unwrap().0;
    let ca = kept.iter().find(|f| f.jurisdiction == "US-CA").unwrap();
    assert_eq!(
        (ca.residents, ca.email_sent, ca.letters_owed, ca.no_contact),
        (4, 2, 2, 1),
        "CA: 4 and 6 sent; 2 failed, owed a letter and without an address; 7 by letter"
    );
    assert!(ca.first_email.is_some() && ca.first_email <= ca.last_email);
}

/// Rows stored before the counters had the report's figures (an upgrade mid-campaign): the migration
/// counts them once, and the report's figures then equal a count of the recipients, times included.
async fn the_migration_fills_the_figures_of_rows_already_stored(db: EmptyDb) {
    let postgres = db.url.starts_with("postgres");
    let t = |rfc3339: &str| {
        let at = chrono::DateTime::parse_from_rfc3339(rfc3339).unwrap();
        match postgres {
            true => format!("TIMESTAMPTZ '{rfc3339}'"),
            false => at.timestamp_millis().to_string(),
        }
    };
    // CA: two sent, one bounced (accepted before both), one failed and owed a letter (both without an
    // address, so without contact); NY: a letter with an address, one queued.
    let insert = format!(
        "INSERT INTO campaigns (name, definition, content_hash) VALUES ('old', '', 'x');\n\
         INSERT INTO recipients (campaign_id, customer_id, email, jurisdiction, status, finished_at, \
           postal_followup, channel, address1) VALUES \
         (1, 'A', 'a@example.com', 'US-CA', 'sent', {t1}, FALSE, 'email', NULL), \
         (1, 'B', 'b@example.com', 'US-CA', 'sent', {t2}, FALSE, 'email', NULL), \
         (1, 'C', 'c@example.com', 'US-CA', 'bounced', {t3}, TRUE, 'email', NULL), \
         (1, 'D', 'd@example.com', 'US-CA', 'failed', {t3}, TRUE, 'email', NULL), \
         (1, 'E', NULL, 'US-NY', 'postal', NULL, FALSE, 'postal', '1 Main St'), \
         (1, 'F', 'f@example.com', 'US-NY', 'queued', NULL, FALSE, 'email', NULL);\n\
         INSERT INTO delivery_attempts (recipient_id, campaign_id, attempt, instance, started_at, \
           finished_at, outcome, message_id) \
         SELECT id, 1, 1, 'old', {t0}, {t0}, 'sent', 'm@example.com' FROM recipients WHERE customer_id = 'C';\n\
         UPDATE recipients SET bounced_at = finished_at WHERE customer_id = 'C'",
        t0 = t("2026-03-09T08:00:00Z"),
        t1 = t("2026-03-10T10:00:00Z"),
        t2 = t("2026-03-11T10:00:00Z"),
        t3 = t("2026-03-12T10:00:00Z"),
    );
    // Migrations up to 14, rows written, then migration 15 and the rest.
    let store = common::migrate_around(&db.url, 15, &[&insert]).await;
    assert!(
        kept_figures_agree(&store, 1).await,
        "exact after the backfill"
    );
    let kept = store.kept_figures(1).await.unwrap().0;
    let figures = |f: &ResidentFigures| {
        (
            f.jurisdiction.clone(),
            [
                f.residents,
                f.email_sent,
                f.bounced,
                f.letters_owed,
                f.no_contact,
            ],
            f.first_email.map(|t| t.to_rfc3339()),
            f.last_email.map(|t| t.to_rfc3339()),
        )
    };
    assert_eq!(
        kept.iter().map(figures).collect::<Vec<_>>(),
        vec![
            (
                "US-CA".to_string(),
                [4, 3, 1, 2, 2],
                Some("2026-03-09T08:00:00+00:00".to_string()),
                Some("2026-03-11T10:00:00+00:00".to_string())
            ),
            ("US-NY".to_string(), [2, 0, 0, 1, 0], None, None),
        ]
    );
}
