//! The evidence and postal exports, on PostgreSQL and SQLite alike: a campaign with a recipient in every
//! situation (sent after a retry, failed for good, postal for want of an address, postal for want of
//! consent, cancelled after an attempt, still queued, withdrawn from the post) is exported through the
//! library and through the binary, and every field of every line is checked against the database.
//! Each case is a function taking a fresh migrated store; `backends!` instantiates it per backend.

use crate::common;
use crate::common::CampaignBuilder;
use crate::common::Claims;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use breach_notifier::ops::export::{
    ExportError, ExportKind, ExportOptions, ExportSummary, Format, export,
};
use breach_notifier::store::{
    AttemptOutcome, AttemptRecord, CampaignState, Channel, NewRecipient, NextState, Recipient,
    RecipientStatus, Store, StoreError,
};
use chrono::{DateTime, Utc};
use common::TestApp;
use serde_json::Value;

backends!(
    evidence_csv_matches_the_database_field_by_field,
    evidence_jsonl_matches_the_database_field_by_field,
    postal_csv_lists_who_needs_a_letter_with_their_address,
    postal_jsonl_matches_the_database_field_by_field,
    postal_list_goes_by_deadline_then_queue_order,
    small_pages_give_the_same_files_as_one_page,
    the_binary_writes_the_same_files_as_the_library,
    more_than_a_page_of_recipients_through_the_binary,
    an_unknown_campaign_is_one_clear_error,
    an_unwritable_path_is_one_clear_error_and_leaves_nothing,
    a_write_failure_on_standard_output_is_one_clear_error,
    the_export_queries_walk_their_indexes,
);

// ---------------------------------------------------------------------------------------------------
// The campaign under test.

const CONTENT_HASH: &str = "9f2c1e5b7a4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a1908f7e6d5c4b3a";
const LEASE: Duration = Duration::from_secs(60);

const SENT: &str = "C-SENT";
const FAILED: &str = "C-FAILED";
const NO_EMAIL: &str = "C-NOEMAIL";
const NO_CONSENT: &str = "C-NOCONSENT";
const CANCELLED: &str = "C-CANCELLED";
const QUEUED: &str = "C-QUEUED";
const WITHDRAWN: &str = "C-WITHDRAWN";

const FAILED_REASON: &str = "permanent: 550 5.1.1 no such user";
const FAILED_REPLY: &str = "550-5.1.1 no such user\r\n550 5.1.1 see https://help.example.test/550";

/// Who should be in the postal list, in queue order, and why.
const POSTAL: &[(&str, &str)] = &[
    (FAILED, "email failed: permanent: 550 5.1.1 no such user"),
    (NO_EMAIL, "no email address"),
    (NO_CONSENT, "no electronic consent"),
];

/// Names, addresses and emails that must never reach the evidence file: distinctive, and with commas
/// and quotes to exercise CSV quoting in the postal list.
fn person(customer_id: &str) -> NewRecipient {
    let tag = customer_id.to_lowercase().replace('-', "");
    NewRecipient {
        customer_id: customer_id.into(),
        email: Some(format!("{tag}@mailbox.test")),
        first_name: Some(format!("Ada{tag}")),
        last_name: Some(format!("O'Lovelace, \"{tag}\"")),
        locale: Some("en-US".into()),
        jurisdiction: Some("US-CA".into()),
        electronic_consent: true,
        address1: Some(format!("1, \"Main\" St {tag}")),
        address2: Some("Apt 2".into()),
        city: Some("Springfield".into()),
        region: Some("CA".into()),
        postal_code: Some("90001".into()),
        country: Some("US".into()),
        channel: Channel::Email,
        ..Default::default()
    }
}

fn record(
    r: &Recipient,
    next: NextState,
    outcome: AttemptOutcome,
    code: Option<i32>,
    reply: &str,
    started: DateTime<Utc>,
) -> AttemptRecord {
    AttemptRecord {
        recipient_id: r.id,
        campaign_id: r.campaign_id,
        started_at: started,
        finished_at: started + chrono::Duration::milliseconds(1_234),
        outcome,
        smtp_code: code,
        reply: Some(reply.into()),
        message_id: format!("<bn.{}.{}@notices.test>", r.campaign_id, r.id),
        next,
    }
}

fn find<'a>(recipients: &'a [Recipient], customer_id: &str) -> &'a Recipient {
    recipients
        .iter()
        .find(|r| r.customer_id == customer_id)
        .unwrap_or_else(|| panic!("{customer_id} was not leased"))
}

/// A cancelled campaign with one recipient in every situation; returns its id.
async fn scenario(t: &TestApp) -> i64 {
    let store = &t.store;
    let id = CampaignBuilder::on(store)
        .named("Notice of Data Breach")
        .definition("name = \"test\"")
        .content_hash(CONTENT_HASH)
        .await;
    let mut no_email = person(NO_EMAIL);
    no_email.email = None;
    no_email.channel = Channel::Postal;
    let mut no_consent = person(NO_CONSENT);
    no_consent.electronic_consent = false;
    no_consent.channel = Channel::Postal;
    no_consent.address2 = None;
    no_consent.region = None;
    let mut withdrawn = person(WITHDRAWN);
    withdrawn.email = None;
    withdrawn.channel = Channel::Postal;
    let rows = [
        person(SENT),
        person(FAILED),
        no_email,
        no_consent,
        person(CANCELLED),
        person(QUEUED),
        withdrawn,
    ];
    store.insert_recipients(id, &rows).await.unwrap();
    store
        .set_campaign_state(id, CampaignState::Running, "test", None)
        .await
        .unwrap();

    // Times relative to now: the cancellation below compares leases with the database clock.
    let now = Utc::now();
    let t = |s: i64| now + chrono::Duration::seconds(s);

    // First round: a temporary failure and a permanent one.
    let first = store.claim(id, "a", 0, 10, LEASE, t(-600)).await.unwrap();
    assert_eq!(first.recipients.len(), 4, "the four email recipients");
    let records = [
        record(
            find(&first.recipients, SENT),
            NextState::Retry { at: t(-300) },
            AttemptOutcome::Transient,
            Some(421),
            "421 4.7.0 try again later",
            t(-590),
        ),
        record(
            find(&first.recipients, FAILED),
            NextState::Failed {
                reason: FAILED_REASON.into(),
            },
            AttemptOutcome::Permanent,
            Some(550),
            FAILED_REPLY,
            t(-589),
        ),
    ];
    assert_eq!(store.record_attempts("a", &records).await.unwrap(), 2);

    // The retry succeeds.
    let second = store.claim(id, "a", 0, 10, LEASE, t(-300)).await.unwrap();
    let retry = record(
        find(&second.recipients, SENT),
        NextState::Sent,
        AttemptOutcome::Sent,
        Some(250),
        "250 2.0.0 Ok: queued as 4XyZ",
        t(-299),
    );
    assert_eq!(store.record_attempts("a", &[retry]).await.unwrap(), 1);

    // Two notices in flight with another instance when the campaign is cancelled: they stay queued
    // for their owner; one reports a temporary failure (which ends it as cancelled), one never does.
    let third = store.claim(id, "b", 0, 10, LEASE, now).await.unwrap();
    assert_eq!(third.recipients.len(), 2, "{:?}", third.recipients);
    store
        .set_campaign_state(id, CampaignState::Cancelled, "test", Some("wrong list"))
        .await
        .unwrap();
    let late = record(
        find(&third.recipients, CANCELLED),
        NextState::Retry { at: t(60) },
        AttemptOutcome::Ambiguous,
        None,
        "connection reset after DATA",
        t(1),
    );
    assert_eq!(store.record_attempts("b", &[late]).await.unwrap(), 1);

    // A postal recipient withdrawn by an operator (the schema allows a cancelled postal row).
    sql(
        store,
        &format!(
            "UPDATE recipients SET status = 'cancelled', fail_reason = 'withdrawn' \
             WHERE campaign_id = {id} AND customer_id = '{WITHDRAWN}'"
        ),
    )
    .await;

    let expect = [
        (SENT, RecipientStatus::Sent),
        (FAILED, RecipientStatus::Failed),
        (NO_EMAIL, RecipientStatus::Postal),
        (NO_CONSENT, RecipientStatus::Postal),
        (CANCELLED, RecipientStatus::Cancelled),
        (QUEUED, RecipientStatus::Queued),
        (WITHDRAWN, RecipientStatus::Cancelled),
    ];
    for (customer, status) in expect {
        let r = store
            .recipient_by_customer(id, customer)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, status, "{customer}");
    }
    id
}

async fn sql(store: &Store, statement: &str) {
    match store {
        Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(s.pool())
            .await
            .map(|_| ()),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(s.pool())
            .await
            .map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Every recipient of a campaign, in id order.
async fn all_recipients(store: &Store, id: i64) -> Vec<Recipient> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.recipients_after(id, after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.id;
        all.extend(page);
    }
    all
}

async fn run_export(
    store: &Store,
    id: i64,
    kind: ExportKind,
    format: Format,
    page_size: u32,
) -> (ExportSummary, Vec<u8>) {
    let mut opts = ExportOptions::new(id, kind, format);
    opts.page_size = page_size;
    export(store, &opts, Vec::new()).await.expect("export")
}

// ---------------------------------------------------------------------------------------------------
// Checking files against the database.

const EVIDENCE_HEADER: &[&str] = &[
    "campaign_id",
    "content_hash",
    "customer_id",
    "recipient_id",
    "channel",
    "status",
    "message_id",
    "attempts",
    "first_attempt_at",
    "finished_at",
    "last_code",
    "last_reply",
    "fail_reason",
    "postal_followup",
    "bounced_at",
    "bounce_status",
    "bounce_diagnostic",
    "deadline",
    "attempt_log",
];

const POSTAL_HEADER: &[&str] = &[
    "customer_id",
    "recipient_id",
    "reason",
    "first_name",
    "last_name",
    "address1",
    "address2",
    "city",
    "region",
    "postal_code",
    "country",
    "locale",
    "jurisdiction",
    "deadline",
];

const ATTEMPT_KEYS: &[&str] = &[
    "attempt",
    "started_at",
    "finished_at",
    "outcome",
    "smtp_code",
    "reply",
    "message_id",
    "instance",
];

fn opt(v: Option<&str>) -> &str {
    v.unwrap_or("")
}

/// An exported time: RFC 3339 in UTC (`Z`), equal to the stored one.
fn parse_time(text: &str) -> DateTime<Utc> {
    assert!(text.ends_with('Z'), "not UTC: {text}");
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("not RFC 3339: {text}: {e}"))
        .with_timezone(&Utc)
}

fn assert_csv_time(field: &str, expected: Option<DateTime<Utc>>, what: &str) {
    match expected {
        None => assert_eq!(field, "", "{what}"),
        Some(t) => assert_eq!(parse_time(field), t, "{what}"),
    }
}

fn assert_json_time(value: &Value, expected: Option<DateTime<Utc>>, what: &str) {
    match expected {
        None => assert!(value.is_null(), "{what}: {value}"),
        Some(t) => assert_eq!(parse_time(value.as_str().expect("a string")), t, "{what}"),
    }
}

fn json_opt_str(value: &Value, expected: Option<&str>, what: &str) {
    match expected {
        None => assert!(value.is_null(), "{what}: {value}"),
        Some(s) => assert_eq!(value.as_str(), Some(s), "{what}"),
    }
}

fn json_keys(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

/// No email address, name or street of any recipient appears in an evidence file.
fn assert_no_personal_data(text: &str, all: &[Recipient]) {
    for r in all {
        for value in [&r.email, &r.first_name, &r.last_name, &r.address1]
            .into_iter()
            .flatten()
        {
            assert!(
                !text.contains(value.as_str()),
                "evidence contains {value:?}"
            );
        }
    }
}

async fn check_evidence_csv(store: &Store, id: i64, bytes: &[u8]) {
    let campaign = store.require_campaign(id).await.unwrap();
    let all = all_recipients(store, id).await;
    let mut reader = csv::Reader::from_reader(bytes);
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, EVIDENCE_HEADER);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        records.len(),
        all.len(),
        "one line per recipient of the campaign"
    );
    for (rec, r) in records.iter().zip(&all) {
        let f = |name: &str| -> &str {
            let i = EVIDENCE_HEADER.iter().position(|h| *h == name).unwrap();
            rec.get(i).unwrap()
        };
        let what = &r.customer_id;
        let attempts = store.attempts(r.id).await.unwrap();
        assert_eq!(f("campaign_id"), id.to_string(), "{what}");
        assert_eq!(f("content_hash"), campaign.content_hash, "{what}");
        assert_eq!(f("customer_id"), r.customer_id, "{what}");
        assert_eq!(f("recipient_id"), r.id.to_string(), "{what}");
        assert_eq!(f("channel"), r.channel.as_str(), "{what}");
        assert_eq!(f("status"), r.status.as_str(), "{what}");
        assert_eq!(f("message_id"), opt(r.message_id.as_deref()), "{what}");
        assert_eq!(f("attempts"), attempts.len().to_string(), "{what}");
        assert_csv_time(f("first_attempt_at"), r.first_attempt_at, what);
        assert_csv_time(f("finished_at"), r.finished_at, what);
        assert_eq!(
            f("last_code"),
            r.last_code.map(|c| c.to_string()).unwrap_or_default(),
            "{what}"
        );
        assert_eq!(f("last_reply"), opt(r.last_reply.as_deref()), "{what}");
        assert_eq!(f("fail_reason"), opt(r.fail_reason.as_deref()), "{what}");
        assert_eq!(
            f("postal_followup"),
            r.postal_followup.to_string(),
            "{what}"
        );
        // Nobody here bounced (tests/it/bounces.rs exports those).
        for bounce in ["bounced_at", "bounce_status", "bounce_diagnostic"] {
            assert_eq!(f(bounce), "", "{what}: {bounce}");
        }
        // attempt_log: `N@TIME outcome code reply` per attempt, joined by ` | `.
        let log = f("attempt_log");
        let entries: Vec<&str> = if log.is_empty() {
            Vec::new()
        } else {
            log.split(" | ").collect()
        };
        assert_eq!(entries.len(), attempts.len(), "{what}: {log}");
        for (entry, a) in entries.iter().zip(&attempts) {
            let (n, rest) = entry.split_once('@').unwrap();
            assert_eq!(n, a.attempt.to_string(), "{what}: {entry}");
            let mut parts = rest.splitn(4, ' ');
            assert_eq!(parse_time(parts.next().unwrap()), a.started_at, "{entry}");
            assert_eq!(parts.next(), Some(a.outcome.as_str()), "{entry}");
            let code = a.smtp_code.map_or("-".to_string(), |c| c.to_string());
            assert_eq!(parts.next(), Some(code.as_str()), "{entry}");
            let reply = a.reply.as_deref().map(|r| r.replace("\r\n", " "));
            assert_eq!(parts.next(), reply.as_deref(), "{entry}");
        }
    }
    assert_no_personal_data(std::str::from_utf8(bytes).unwrap(), &all);

    // What each situation looks like, so the comparison above is not only the code checking itself.
    let line = |customer: &str| {
        let i = all.iter().position(|r| r.customer_id == customer).unwrap();
        records[i].clone()
    };
    let col = |name: &str| EVIDENCE_HEADER.iter().position(|h| *h == name).unwrap();
    let sent = line(SENT);
    assert_eq!(
        (
            &sent[col("status")],
            &sent[col("attempts")],
            &sent[col("last_code")]
        ),
        ("sent", "2", "250")
    );
    assert!(
        sent[col("attempt_log")].starts_with("1@")
            && sent[col("attempt_log")].contains(" transient 421 421 4.7.0 try again later | 2@")
            && sent[col("attempt_log")].ends_with(" sent 250 250 2.0.0 Ok: queued as 4XyZ"),
        "{}",
        &sent[col("attempt_log")]
    );
    let failed = line(FAILED);
    assert_eq!(
        (&failed[col("status")], &failed[col("postal_followup")]),
        ("failed", "true")
    );
    assert_eq!(&failed[col("fail_reason")], FAILED_REASON);
    assert_eq!(&failed[col("last_reply")], FAILED_REPLY, "kept exactly");
    let no_email = line(NO_EMAIL);
    assert_eq!(
        (
            &no_email[col("channel")],
            &no_email[col("status")],
            &no_email[col("attempts")],
            &no_email[col("attempt_log")]
        ),
        ("postal", "postal", "0", "")
    );
    let cancelled = line(CANCELLED);
    assert_eq!(
        (
            &cancelled[col("status")],
            &cancelled[col("fail_reason")],
            &cancelled[col("attempts")]
        ),
        ("cancelled", "campaign cancelled", "1")
    );
    assert!(cancelled[col("attempt_log")].contains(" ambiguous - connection reset after DATA"));
    let queued = line(QUEUED);
    assert_eq!(
        (
            &queued[col("status")],
            &queued[col("finished_at")],
            &queued[col("message_id")]
        ),
        ("queued", "", "")
    );
    assert_eq!(&line(WITHDRAWN)[col("status")], "cancelled");
}

async fn check_evidence_jsonl(store: &Store, id: i64, bytes: &[u8]) {
    let campaign = store.require_campaign(id).await.unwrap();
    let all = all_recipients(store, id).await;
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), all.len(), "one line per recipient");
    let keys: BTreeSet<&str> = EVIDENCE_HEADER
        .iter()
        .copied()
        .filter(|k| *k != "attempt_log")
        .collect();
    for (v, r) in lines.iter().zip(&all) {
        let what = &r.customer_id;
        assert_eq!(json_keys(v), keys, "{what}");
        assert_eq!(v["campaign_id"], id, "{what}");
        assert_eq!(v["content_hash"], campaign.content_hash.as_str(), "{what}");
        assert_eq!(v["customer_id"], r.customer_id.as_str(), "{what}");
        assert_eq!(v["recipient_id"], r.id, "{what}");
        assert_eq!(v["channel"], r.channel.as_str(), "{what}");
        assert_eq!(v["status"], r.status.as_str(), "{what}");
        json_opt_str(&v["message_id"], r.message_id.as_deref(), what);
        assert_json_time(&v["first_attempt_at"], r.first_attempt_at, what);
        assert_json_time(&v["finished_at"], r.finished_at, what);
        match r.last_code {
            None => assert!(v["last_code"].is_null(), "{what}"),
            Some(c) => assert_eq!(v["last_code"], c, "{what}"),
        }
        json_opt_str(&v["last_reply"], r.last_reply.as_deref(), what);
        json_opt_str(&v["fail_reason"], r.fail_reason.as_deref(), what);
        assert_eq!(v["postal_followup"], r.postal_followup, "{what}");
        for bounce in ["bounced_at", "bounce_status", "bounce_diagnostic"] {
            assert!(v[bounce].is_null(), "{what}: {bounce}");
        }
        let stored = store.attempts(r.id).await.unwrap();
        let exported = v["attempts"].as_array().expect("attempts is an array");
        assert_eq!(exported.len(), stored.len(), "{what}");
        for (e, a) in exported.iter().zip(&stored) {
            assert_eq!(
                json_keys(e),
                ATTEMPT_KEYS.iter().copied().collect(),
                "{what}"
            );
            assert_eq!(e["attempt"], a.attempt, "{what}");
            assert_json_time(&e["started_at"], Some(a.started_at), what);
            assert_json_time(&e["finished_at"], Some(a.finished_at), what);
            assert_eq!(e["outcome"], a.outcome.as_str(), "{what}");
            match a.smtp_code {
                None => assert!(e["smtp_code"].is_null(), "{what}"),
                Some(c) => assert_eq!(e["smtp_code"], c, "{what}"),
            }
            json_opt_str(&e["reply"], a.reply.as_deref(), what);
            assert_eq!(e["message_id"], a.message_id.as_str(), "{what}");
            assert_eq!(e["instance"], a.instance.as_str(), "{what}");
        }
    }
    assert_no_personal_data(text, &all);
    let sent = &lines[all.iter().position(|r| r.customer_id == SENT).unwrap()];
    assert_eq!(sent["attempts"][0]["outcome"], "transient");
    assert_eq!(sent["attempts"][1]["smtp_code"], 250);
    let failed = &lines[all.iter().position(|r| r.customer_id == FAILED).unwrap()];
    assert_eq!(
        failed["attempts"][0]["reply"], FAILED_REPLY,
        "the exact multi-line reply"
    );
}

/// The recipients of the postal list, in order, with their expected reason.
async fn postal_expected(store: &Store, id: i64) -> Vec<(Recipient, &'static str)> {
    let mut out = Vec::new();
    for (customer, reason) in POSTAL {
        let r = store
            .recipient_by_customer(id, customer)
            .await
            .unwrap()
            .unwrap();
        out.push((r, *reason));
    }
    out
}

fn postal_fields(r: &Recipient) -> [(&'static str, Option<&str>); 10] {
    [
        ("first_name", r.first_name.as_deref()),
        ("last_name", r.last_name.as_deref()),
        ("address1", r.address1.as_deref()),
        ("address2", r.address2.as_deref()),
        ("city", r.city.as_deref()),
        ("region", r.region.as_deref()),
        ("postal_code", r.postal_code.as_deref()),
        ("country", r.country.as_deref()),
        ("locale", r.locale.as_deref()),
        ("jurisdiction", r.jurisdiction.as_deref()),
    ]
}

async fn check_postal_csv(store: &Store, id: i64, bytes: &[u8]) {
    let expected = postal_expected(store, id).await;
    let mut reader = csv::Reader::from_reader(bytes);
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, POSTAL_HEADER);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        records.iter().map(|r| r[0].to_string()).collect::<Vec<_>>(),
        expected
            .iter()
            .map(|(r, _)| r.customer_id.clone())
            .collect::<Vec<_>>(),
        "who needs a letter, in queue order (not the cancelled, sent or queued)"
    );
    for (rec, (r, reason)) in records.iter().zip(&expected) {
        let f = |name: &str| -> &str {
            let i = POSTAL_HEADER.iter().position(|h| *h == name).unwrap();
            rec.get(i).unwrap()
        };
        let what = &r.customer_id;
        assert_eq!(f("customer_id"), r.customer_id, "{what}");
        assert_eq!(f("recipient_id"), r.id.to_string(), "{what}");
        assert_eq!(f("reason"), *reason, "{what}");
        for (name, value) in postal_fields(r) {
            assert_eq!(f(name), opt(value), "{what}: {name}");
        }
        assert_eq!(f("deadline"), "", "{what}: no discovery date, no deadline");
    }
}

async fn check_postal_jsonl(store: &Store, id: i64, bytes: &[u8]) {
    let expected = postal_expected(store, id).await;
    let text = std::str::from_utf8(bytes).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expected.len());
    for (v, (r, reason)) in lines.iter().zip(&expected) {
        let what = &r.customer_id;
        assert_eq!(
            json_keys(v),
            POSTAL_HEADER.iter().copied().collect(),
            "{what}"
        );
        assert_eq!(v["customer_id"], r.customer_id.as_str(), "{what}");
        assert_eq!(v["recipient_id"], r.id, "{what}");
        assert_eq!(v["reason"], *reason, "{what}");
        for (name, value) in postal_fields(r) {
            json_opt_str(&v[name], value, &format!("{what}: {name}"));
        }
        assert!(
            v["deadline"].is_null(),
            "{what}: no discovery date, no deadline"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// The binary.

/// Runs the binary in `dir` (so no config/default.toml is picked up) against the database `url`.
fn command(dir: &Path, url: &str, args: &[&str]) -> Command {
    let mut cmd = common::cli(dir, url);
    cmd.args(args);
    cmd
}

fn run(dir: &Path, url: &str, args: &[&str]) -> Output {
    command(dir, url, args)
        .output()
        .expect("run breach-notifier")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure: non-zero exit, one `error:` line, no panic or backtrace.
fn assert_clear_failure(o: &Output, expected: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure: {err}");
    assert!(err.contains(expected), "stderr lacks {expected:?}: {err}");
    assert!(err.starts_with("error: "), "one error line expected: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
}

fn assert_success(o: &Output) {
    assert!(o.status.success(), "{}", stderr(o));
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// The cases.

async fn evidence_csv_matches_the_database_field_by_field(t: TestApp) {
    let id = scenario(&t).await;
    let (summary, bytes) = run_export(&t.store, id, ExportKind::Evidence, Format::Csv, 1000).await;
    assert_eq!((summary.read, summary.written), (7, 7));
    check_evidence_csv(&t.store, id, &bytes).await;
}

async fn evidence_jsonl_matches_the_database_field_by_field(t: TestApp) {
    let id = scenario(&t).await;
    let (summary, bytes) =
        run_export(&t.store, id, ExportKind::Evidence, Format::JsonLines, 1000).await;
    assert_eq!((summary.read, summary.written), (7, 7));
    check_evidence_jsonl(&t.store, id, &bytes).await;
}

async fn postal_csv_lists_who_needs_a_letter_with_their_address(t: TestApp) {
    let id = scenario(&t).await;
    let (summary, bytes) = run_export(&t.store, id, ExportKind::Postal, Format::Csv, 1000).await;
    assert_eq!((summary.read, summary.written), (7, 3));
    check_postal_csv(&t.store, id, &bytes).await;
    // Quoting survives: the vendor gets the name exactly.
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains(r#""O'Lovelace, ""cnoemail""""#), "{text}");
}

async fn postal_jsonl_matches_the_database_field_by_field(t: TestApp) {
    let id = scenario(&t).await;
    let (summary, bytes) =
        run_export(&t.store, id, ExportKind::Postal, Format::JsonLines, 1000).await;
    assert_eq!(summary.written, 3);
    check_postal_jsonl(&t.store, id, &bytes).await;
}

/// Letters are listed earliest deadline first, then in queue order; recipients whose jurisdiction has
/// no computed deadline come last. Each line carries its deadline, in CSV and JSON lines alike, and
/// every page size gives the same file.
async fn postal_list_goes_by_deadline_then_queue_order(t: TestApp) {
    use breach_notifier::store::deadlines::{DeadlineBasis, JurisdictionDeadline};
    let store = &t.store;
    let id = CampaignBuilder::on(store).named("by deadline").await;
    // (customer, jurisdiction), in queue order.
    let people = [
        ("P1-TX", Some("US-TX")),
        ("P2-CA", Some("US-CA")),
        ("P3-NONE", None),
        ("P4-XX", Some("US-XX")),
        ("P5-CA", Some("US-CA")),
        ("P6-TX", Some("US-TX")),
        ("P7-CO", Some("US-CO")),
    ];
    let rows: Vec<NewRecipient> = people
        .iter()
        .map(|(c, j)| NewRecipient {
            email: None,
            channel: Channel::Postal,
            jurisdiction: j.map(str::to_string),
            ..person(c)
        })
        .collect();
    store.insert_recipients(id, &rows).await.unwrap();
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    let deadline = |code: Option<&str>, d: u32| JurisdictionDeadline {
        jurisdiction: code.map(str::to_string),
        deadline: day(d),
        basis: DeadlineBasis::Law,
        days: 30,
        law_text: None,
    };
    // US-CO shares California's day (queue order decides between them); US-XX has no row.
    let deadlines = [
        deadline(Some("US-TX"), 31),
        deadline(Some("US-CA"), 3),
        deadline(Some("US-CO"), 3),
        deadline(None, 20),
    ];
    store
        .replace_deadlines(id, &deadlines, Utc::now())
        .await
        .unwrap();

    let expected = [
        ("P2-CA", "2026-03-03"),
        ("P5-CA", "2026-03-03"),
        ("P7-CO", "2026-03-03"),
        ("P3-NONE", "2026-03-20"),
        ("P1-TX", "2026-03-31"),
        ("P6-TX", "2026-03-31"),
        ("P4-XX", ""),
    ];
    let (summary, bytes) = run_export(store, id, ExportKind::Postal, Format::Csv, 1000).await;
    assert_eq!((summary.read, summary.written), (7, 7));
    let mut reader = csv::Reader::from_reader(&bytes[..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, POSTAL_HEADER);
    let col = |name: &str| POSTAL_HEADER.iter().position(|h| *h == name).unwrap();
    let lines: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[col("customer_id")].to_string(),
                r[col("deadline")].to_string(),
            )
        })
        .collect();
    let expected_lines: Vec<(String, String)> = expected
        .iter()
        .map(|(c, d)| (c.to_string(), d.to_string()))
        .collect();
    assert_eq!(
        lines, expected_lines,
        "earliest deadline first, then queue order"
    );

    let (_, jsonl) = run_export(store, id, ExportKind::Postal, Format::JsonLines, 1000).await;
    let values: Vec<Value> = std::str::from_utf8(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (v, (customer, deadline)) in values.iter().zip(&expected) {
        assert_eq!(v["customer_id"], *customer);
        match *deadline {
            "" => assert!(v["deadline"].is_null(), "{customer}: {v}"),
            d => assert_eq!(v["deadline"], d, "{customer}"),
        }
    }
    assert_eq!(values.len(), expected.len());
    // Batches follow the same order.
    for page in [1, 2, 3] {
        let (_, paged) = run_export(store, id, ExportKind::Postal, Format::Csv, page).await;
        assert_eq!(paged, bytes, "page {page}");
    }
}

async fn small_pages_give_the_same_files_as_one_page(t: TestApp) {
    let id = scenario(&t).await;
    for kind in [ExportKind::Evidence, ExportKind::Postal] {
        for format in [Format::Csv, Format::JsonLines] {
            let (whole, expected) = run_export(&t.store, id, kind, format, 1000).await;
            // 1: every recipient its own page; 2: a short last page; 7: a full page, then an empty one.
            for page in [1, 2, 3, 7] {
                let (summary, bytes) = run_export(&t.store, id, kind, format, page).await;
                assert_eq!(
                    (summary.read, summary.written),
                    (whole.read, whole.written),
                    "{kind:?} {format:?} page {page}"
                );
                assert_eq!(
                    String::from_utf8(bytes).unwrap(),
                    String::from_utf8(expected.clone()).unwrap(),
                    "{kind:?} {format:?} page {page}"
                );
            }
        }
    }
    let (_, bytes) = run_export(&t.store, id, ExportKind::Evidence, Format::Csv, 2).await;
    check_evidence_csv(&t.store, id, &bytes).await;
}

async fn the_binary_writes_the_same_files_as_the_library(t: TestApp) {
    let id = scenario(&t).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = id.to_string();
    let cases = [
        (
            "evidence",
            "csv",
            "evidence.csv",
            ExportKind::Evidence,
            Format::Csv,
        ),
        (
            "evidence",
            "jsonl",
            "evidence.jsonl",
            ExportKind::Evidence,
            Format::JsonLines,
        ),
        (
            "postal",
            "csv",
            "postal.csv",
            ExportKind::Postal,
            Format::Csv,
        ),
        (
            "postal",
            "jsonl",
            "postal.jsonl",
            ExportKind::Postal,
            Format::JsonLines,
        ),
    ];
    for (command, format_arg, name, kind, format) in cases {
        let path = dir.path().join(name);
        let o = run(
            dir.path(),
            &t.url,
            &[
                "export",
                command,
                "--campaign",
                &campaign,
                "--format",
                format_arg,
                "--output",
                path.to_str().unwrap(),
            ],
        );
        assert_success(&o);
        let (summary, expected) = run_export(&t.store, id, kind, format, 1000).await;
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "wrote {} recipients to {}",
                summary.written,
                path.display()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("note: campaign {id} is cancelled"))
                == (kind == ExportKind::Postal),
            "{err}"
        );
        assert!(
            o.stdout.is_empty(),
            "a file export prints nothing on stdout"
        );
        let written = std::fs::read(&path).unwrap();
        assert_eq!(
            written, expected,
            "{name}: the binary and the library agree"
        );
        match (kind, format) {
            (ExportKind::Evidence, Format::Csv) => check_evidence_csv(&t.store, id, &written).await,
            (ExportKind::Evidence, Format::JsonLines) => {
                check_evidence_jsonl(&t.store, id, &written).await
            }
            (ExportKind::Postal, Format::Csv) => check_postal_csv(&t.store, id, &written).await,
            (ExportKind::Postal, Format::JsonLines) => {
                check_postal_jsonl(&t.store, id, &written).await
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: readable by its owner only");
        }
    }
    assert_eq!(
        files_in(dir.path()),
        [
            "evidence.csv",
            "evidence.jsonl",
            "postal.csv",
            "postal.jsonl"
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "no temporary file is left behind"
    );

    // Standard output, the default (CSV).
    let o = run(
        dir.path(),
        &t.url,
        &["export", "evidence", "--campaign", &campaign],
    );
    assert_success(&o);
    check_evidence_csv(&t.store, id, &o.stdout).await;
    assert!(
        stderr(&o).contains("wrote 7 recipients to standard output"),
        "{}",
        stderr(&o)
    );

    // Exporting again replaces the file whole.
    let path = dir.path().join("postal.csv");
    std::fs::write(&path, "stale").unwrap();
    let o = run(
        dir.path(),
        &t.url,
        &[
            "export",
            "postal",
            "--campaign",
            &campaign,
            "-o",
            path.to_str().unwrap(),
        ],
    );
    assert_success(&o);
    check_postal_csv(&t.store, id, &std::fs::read(&path).unwrap()).await;
}

async fn more_than_a_page_of_recipients_through_the_binary(t: TestApp) {
    const N: usize = 2_345;
    let store = &t.store;
    let id = CampaignBuilder::on(store)
        .named("big")
        .content_hash(CONTENT_HASH)
        .await;
    let rows: Vec<NewRecipient> = (0..N).map(|i| person(&format!("B{i:05}"))).collect();
    store.insert_recipients(id, &rows).await.unwrap();
    store
        .set_campaign_state(id, CampaignState::Running, "test", None)
        .await
        .unwrap();
    // Every other recipient gets an attempt, so pages hold both kinds.
    let now = Utc::now();
    let claim = store.claim(id, "a", 0, N as u32, LEASE, now).await.unwrap();
    assert_eq!(claim.recipients.len(), N);
    let records: Vec<AttemptRecord> = claim
        .recipients
        .iter()
        .step_by(2)
        .map(|r| {
            record(
                r,
                NextState::Sent,
                AttemptOutcome::Sent,
                Some(250),
                "250 ok",
                now,
            )
        })
        .collect();
    store.record_attempts("a", &records).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evidence.csv");
    let o = run(
        dir.path(),
        &t.url,
        &[
            "export",
            "evidence",
            "--campaign",
            &id.to_string(),
            "-o",
            path.to_str().unwrap(),
        ],
    );
    assert_success(&o);
    assert!(
        stderr(&o).contains(&format!("wrote {N} recipients to")),
        "{}",
        stderr(&o)
    );
    let bytes = std::fs::read(&path).unwrap();
    let all = all_recipients(store, id).await;
    let mut reader = csv::Reader::from_reader(&bytes[..]);
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), N);
    for (i, (rec, r)) in records.iter().zip(&all).enumerate() {
        assert_eq!(
            &rec[3],
            r.id.to_string(),
            "line {i}: every recipient once, in order"
        );
        assert_eq!(&rec[2], r.customer_id);
        assert_eq!(&rec[5], r.status.as_str());
        assert_eq!(&rec[6], opt(r.message_id.as_deref()));
        let expected_attempts = if i % 2 == 0 { "1" } else { "0" };
        assert_eq!(&rec[7], expected_attempts, "line {i}");
        assert_eq!(
            rec[18].is_empty(),
            i % 2 == 1,
            "line {i}: the attempt is on its own recipient's line"
        );
    }
    // Around the page boundaries, every field.
    let sample: Vec<u8> = {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(EVIDENCE_HEADER).unwrap();
        for rec in &records {
            w.write_record(rec).unwrap();
        }
        w.into_inner().unwrap()
    };
    assert_eq!(sample, bytes, "the file is plain RFC 4180 CSV");
}

async fn an_unknown_campaign_is_one_clear_error(t: TestApp) {
    let err = export(
        &t.store,
        &ExportOptions::new(424_242, ExportKind::Evidence, Format::Csv),
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            ExportError::Store(StoreError::UnknownCampaign(424_242))
        ),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evidence.csv");
    for args in [
        vec![
            "export",
            "evidence",
            "--campaign",
            "424242",
            "-o",
            path.to_str().unwrap(),
        ],
        vec!["export", "postal", "--campaign", "424242"],
    ] {
        let o = run(dir.path(), &t.url, &args);
        assert_clear_failure(&o, "campaign 424242 does not exist");
        assert!(o.stdout.is_empty());
    }
    assert!(files_in(dir.path()).is_empty(), "nothing was written");
}

async fn an_unwritable_path_is_one_clear_error_and_leaves_nothing(t: TestApp) {
    let id = scenario(&t).await.to_string();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("evidence.csv");
    let o = run(
        dir.path(),
        &t.url,
        &[
            "export",
            "evidence",
            "--campaign",
            &id,
            "-o",
            missing.to_str().unwrap(),
        ],
    );
    assert_clear_failure(
        &o,
        &format!(
            "cannot write the export to {}: No such file or directory",
            missing.display()
        ),
    );
    let o = run(
        dir.path(),
        &t.url,
        &[
            "export",
            "postal",
            "--campaign",
            &id,
            "-o",
            dir.path().to_str().unwrap(),
        ],
    );
    assert_clear_failure(
        &o,
        &format!(
            "cannot write the export to {}: it is a directory",
            dir.path().display()
        ),
    );
    assert!(files_in(dir.path()).is_empty(), "nothing was left behind");
}

async fn a_write_failure_on_standard_output_is_one_clear_error(t: TestApp) {
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("skipped: no /dev/full on this system");
        return;
    }
    let id = scenario(&t).await.to_string();
    let dir = tempfile::tempdir().unwrap();
    let o = command(
        dir.path(),
        &t.url,
        &["export", "evidence", "--campaign", &id],
    )
    .stdout(Stdio::from(
        std::fs::OpenOptions::new().write(true).open(full).unwrap(),
    ))
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    assert_clear_failure(
        &o,
        "cannot write the export to standard output: No space left on device",
    );
}

/// A running campaign of `n` recipients `PREFIX00000`…, the first `attempted` of them attempted once.
async fn attempted_campaign(store: &Store, prefix: &str, n: usize, attempted: u32) -> i64 {
    let rows: Vec<NewRecipient> = (0..n).map(|i| person(&format!("{prefix}{i:05}"))).collect();
    let id = CampaignBuilder::on(store)
        .named(prefix)
        .content_hash(CONTENT_HASH)
        .with(&rows)
        .started()
        .await;
    let now = Utc::now();
    let claim = store
        .claim(id, "a", 0, attempted, LEASE, now)
        .await
        .unwrap();
    let records: Vec<AttemptRecord> = claim
        .recipients
        .iter()
        .map(|r| {
            let (next, outcome) = (NextState::Sent, AttemptOutcome::Sent);
            record(r, next, outcome, Some(250), "250 ok", now)
        })
        .collect();
    store.record_attempts("a", &records).await.unwrap();
    id
}

/// The plans of the two export queries for `campaign`, as text: (evidence, postal). On PostgreSQL
/// unprepared, as the export runs them, so planned with the campaign's id.
async fn export_plans(store: &Store, campaign: i64) -> [(&'static str, String); 2] {
    use breach_notifier::store::export::{PG_EVIDENCE, PG_POSTAL, SQLITE_EVIDENCE, SQLITE_POSTAL};
    use sqlx::Row;
    let mut plans = Vec::new();
    match store {
        Store::Postgres(s) => {
            for query in [PG_EVIDENCE, PG_POSTAL] {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {query}")))
                    .bind(campaign)
                    .persistent(false)
                    .fetch_all(s.pool())
                    .await
                    .unwrap();
                let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                plans.push(lines.join("\n"));
            }
        }
        Store::Sqlite(s) => {
            for query in [SQLITE_EVIDENCE, SQLITE_POSTAL] {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {query}")))
                    .bind(campaign)
                    .fetch_all(s.pool())
                    .await
                    .unwrap();
                let lines: Vec<String> = rows.iter().map(|r| r.get("detail")).collect();
                plans.push(lines.join("\n"));
            }
        }
    }
    let postal = plans.pop().unwrap();
    let evidence = plans.pop().unwrap();
    [("evidence", evidence), ("postal", postal)]
}

/// Checks the plans of both export queries for `campaign`. Neither may walk the primary key (through
/// every earlier campaign's ids), and the evidence must find attempts through
/// `delivery_attempts_recipient`. With `in_order`, both must also read `recipients_campaign_id`: the
/// evidence in order, so rows stream from the first one without a sort of the campaign; the postal
/// list is sorted by deadline, a sort of the letters only, kept by the index's walk of the campaign.
async fn assert_export_plans(store: &Store, campaign: i64, case: &str, in_order: bool) {
    for (export, plan) in export_plans(store, campaign).await {
        // (SQLite names a scan of its primary key, the rowid, "INTEGER PRIMARY KEY".)
        assert!(
            !plan.contains("recipients_pkey") && !plan.contains("INTEGER PRIMARY KEY"),
            "{case}: the {export} export must not walk the primary key:\n{plan}"
        );
        if export == "evidence" {
            assert!(
                plan.contains("delivery_attempts_recipient"),
                "{case}: attempts must be found through delivery_attempts_recipient:\n{plan}"
            );
        }
        if in_order && export == "evidence" {
            assert!(
                plan.contains("recipients_campaign_id")
                    && !plan.contains("Sort")
                    && !plan.contains("TEMP B-TREE")
                    && !plan.contains("Bitmap"),
                "{case}: the {export} export must walk recipients_campaign_id in order:\n{plan}"
            );
        }
        if in_order && export == "postal" {
            assert!(
                plan.contains("recipients_campaign_id"),
                "{case}: the {export} export must read the campaign through recipients_campaign_id:\n{plan}"
            );
        }
    }
}

/// Each export is one query over the whole campaign: it must never walk the primary key through
/// earlier campaigns' ids, must find each recipient's attempts through `delivery_attempts_recipient`,
/// and, for a campaign the statistics do not know yet (just imported), must walk
/// `recipients_campaign_id` in order.
async fn the_export_queries_walk_their_indexes(t: TestApp) {
    let postgres = matches!(t.store, Store::Postgres(_));
    if postgres {
        // Only the ANALYZEs below may teach the planner: autovacuum must not analyze in between.
        for table in ["recipients", "delivery_attempts"] {
            let statement = format!("ALTER TABLE {table} SET (autovacuum_enabled = off)");
            sql(&t.store, &statement).await;
        }
    }
    attempted_campaign(&t.store, "E", 30_000, 5_000).await;
    if postgres {
        sql(&t.store, "ANALYZE recipients").await;
        sql(&t.store, "ANALYZE delivery_attempts").await;
    }
    let campaign = attempted_campaign(&t.store, "F", 15_000, 5_000).await;
    assert_export_plans(&t.store, campaign, "a campaign new to the statistics", true).await;
    if postgres {
        // Known to the statistics as a third of this small table, the campaign may be read by a
        // sequential scan and sorted in memory when PostgreSQL finds that cheaper (at 1,000,000
        // recipients it walks the index: a sort would spill to disk). Never through the primary key.
        sql(&t.store, "ANALYZE recipients").await;
        sql(&t.store, "ANALYZE delivery_attempts").await;
        let case = "a campaign the statistics know";
        assert_export_plans(&t.store, campaign, case, false).await;
    }
}
