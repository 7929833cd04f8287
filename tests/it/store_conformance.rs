//! One conformance suite for the store interface, run against PostgreSQL and SQLite alike: every store
//! operation must mean the same on both backends. Each case is a function taking a fresh migrated store;
//! the `conformance!` macro instantiates it once per backend.

use crate::common;
use crate::common::{Claims, request};

use std::time::Duration;

use breach_notifier::store::*;
use chrono::{DateTime, TimeZone, Utc};
use common::TestApp;

backends!(
    migrate_is_idempotent_and_schema_is_current,
    campaigns_are_created_as_drafts_with_an_event,
    sql_cannot_reference_a_missing_campaign_or_recipient,
    legal_transitions_are_recorded_with_actor_and_reason,
    illegal_transitions_are_refused_by_the_store_and_by_sql,
    sql_transitions_are_recorded_as_sql,
    recipients_round_trip_and_duplicates_are_counted,
    insert_into_unknown_campaign_is_an_error,
    a_customer_repeated_within_one_batch_is_one_recipient,
    claim_leases_due_rows_once_until_the_lease_expires,
    claim_follows_the_cursor_and_reports_exhaustion,
    renew_and_release_leases,
    record_attempts_moves_recipients_and_appends_attempts,
    deferred_recipients_are_due_again_at_their_retry_time,
    an_attempt_without_the_lease_is_recorded_but_changes_nothing,
    cancel_ends_open_recipients_and_keeps_leased_ones_for_their_owner,
    records_are_append_only,
    instances_heartbeat_and_stop,
    progress_lists_every_campaign_from_counters,
    attempts_for_returns_the_attempts_of_many_recipients_in_order,
    imports_are_recorded_and_must_reconcile,
    lookups_for_intake_and_templates,
    sent_counts_and_rates_follow_the_attempts,
    settle_cancelled_ends_abandoned_recipients,
    waves_are_planned_released_and_finished,
    the_open_ended_wave_is_counted_from_the_campaign,
    claims_use_their_indexes_whatever_the_statistics_know,
    claims_walk_their_index_at_a_size_where_the_planner_guesses,
    samples_are_the_first_recipient_of_each_pair,
);

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(T0 + seconds, 0).unwrap()
}

fn new_campaign(name: &str) -> NewCampaign {
    NewCampaign {
        name: name.into(),
        definition: "name = \"test\"".into(),
        content_hash: "abc123".into(),
        email_without_consent: false,
        discovered_at: Some(chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()),
        determined_at: None,
        supplements: None,
    }
}

fn person(customer_id: &str) -> NewRecipient {
    NewRecipient {
        customer_id: customer_id.into(),
        email: Some(format!("{customer_id}@example.com")),
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        locale: Some("en-US".into()),
        jurisdiction: Some("US-CA".into()),
        electronic_consent: true,
        channel: Channel::Email,
        ..Default::default()
    }
}

async fn running_campaign_with(t: &TestApp, n: usize) -> i64 {
    let id = t
        .store
        .create_campaign(&new_campaign("c"), "test")
        .await
        .unwrap();
    let rows: Vec<_> = (0..n).map(|i| person(&format!("c{i:05}"))).collect();
    t.store.insert_recipients(id, &rows).await.unwrap();
    t.store
        .set_campaign_state(id, CampaignState::Running, "test", None)
        .await
        .unwrap();
    id
}

async fn progress(t: &TestApp, id: i64) -> CampaignProgress {
    t.store.progress(Some(id)).await.unwrap().remove(0)
}

/// Runs raw SQL as an operator would, returning the database's error text on failure.
async fn sql(t: &TestApp, statement: &str) -> Result<u64, String> {
    let r = match &t.store {
        Store::Postgres(s) => sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(s.pool())
            .await
            .map(|r| r.rows_affected()),
        Store::Sqlite(s) => sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(s.pool())
            .await
            .map(|r| r.rows_affected()),
    };
    r.map_err(|e| e.to_string())
}

fn record(r: &Recipient, next: NextState, outcome: AttemptOutcome, code: i32) -> AttemptRecord {
    AttemptRecord {
        recipient_id: r.id,
        campaign_id: r.campaign_id,
        started_at: at(10),
        finished_at: at(11),
        outcome,
        smtp_code: Some(code),
        reply: Some(format!("{code} queued as ABC{}", r.id)),
        message_id: format!("<bn.{}.{}@example.com>", r.campaign_id, r.id),
        next,
    }
}

const LEASE: Duration = Duration::from_secs(60);

/// An automatic wave, not yet released, pausing the campaign above 10 % permanent failures.
fn wave(campaign_id: i64, number: i32, size: &str) -> Wave {
    Wave {
        campaign_id,
        number,
        size_spec: size.parse().unwrap(),
        release_rule: Release::Auto,
        hold_minutes: 0,
        max_failure_rate: Some(0.1),
        max_deferral_rate: None,
        released_at: None,
        first_id: None,
        last_id: None,
        planned: None,
        finished_at: None,
    }
}

async fn migrate_is_idempotent_and_schema_is_current(t: TestApp) {
    let state = t.store.schema_state().await.unwrap();
    assert!(matches!(state, SchemaState::Current { .. }), "{state:?}");
    assert!(
        t.store.migrate().await.unwrap().is_empty(),
        "second migrate applies nothing"
    );
    t.store.ensure_schema_current().await.unwrap();
}

async fn campaigns_are_created_as_drafts_with_an_event(t: TestApp) {
    let id = t
        .store
        .create_campaign(&new_campaign("Notice of Data Breach"), "cli:alice")
        .await
        .unwrap();
    let c = t.store.require_campaign(id).await.unwrap();
    assert_eq!(c.state, CampaignState::Draft);
    assert_eq!(c.name, "Notice of Data Breach");
    assert_eq!(c.content_hash, "abc123");
    assert_eq!(c.discovered_at, chrono::NaiveDate::from_ymd_opt(2026, 1, 1));
    let events = t.store.campaign_events(id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].from_state, events[0].to_state),
        (None, CampaignState::Draft)
    );
    assert_eq!(events[0].actor, "cli:alice");
    assert_eq!(t.store.campaigns().await.unwrap().len(), 1);
    assert!(t.store.campaign(id + 100).await.unwrap().is_none());
    assert!(matches!(
        t.store.require_campaign(id + 100).await,
        Err(StoreError::UnknownCampaign(_))
    ));
}

async fn legal_transitions_are_recorded_with_actor_and_reason(t: TestApp) {
    let id = t
        .store
        .create_campaign(&new_campaign("c"), "test")
        .await
        .unwrap();
    use CampaignState::*;
    for (to, actor, reason) in [
        (Running, "cli:alice", Some("approved by counsel")),
        (Paused, "cli:bob", Some("call centre full")),
        (Running, "cli:bob", None),
        (Completed, "daemon", Some("every recipient is final")),
    ] {
        let c = t
            .store
            .set_campaign_state(id, to, actor, reason)
            .await
            .unwrap();
        assert_eq!(c.state, to);
        assert_eq!(c.state_reason.as_deref(), reason);
    }
    let c = t.store.require_campaign(id).await.unwrap();
    assert!(c.started_at.is_some() && c.finished_at.is_some());
    let events = t.store.campaign_events(id).await.unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.from_state, e.to_state, e.actor.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (None, Draft, "test"),
            (Some(Draft), Running, "cli:alice"),
            (Some(Running), Paused, "cli:bob"),
            (Some(Paused), Running, "cli:bob"),
            (Some(Running), Completed, "daemon"),
        ]
    );
    assert_eq!(events[1].reason.as_deref(), Some("approved by counsel"));
}

async fn illegal_transitions_are_refused_by_the_store_and_by_sql(t: TestApp) {
    let id = t
        .store
        .create_campaign(&new_campaign("c"), "test")
        .await
        .unwrap();
    let err = t
        .store
        .set_campaign_state(id, CampaignState::Completed, "test", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IllegalTransition { .. }), "{err}");
    assert!(
        err.to_string().contains("allowed: running, cancelled"),
        "{err}"
    );
    // The database itself refuses, whoever asks.
    let err = sql(
        &t,
        &format!("UPDATE campaigns SET state = 'completed' WHERE id = {id}"),
    )
    .await
    .unwrap_err();
    assert!(err.contains("illegal"), "{err}");
    t.store
        .set_campaign_state(id, CampaignState::Cancelled, "test", None)
        .await
        .unwrap();
    let err = sql(
        &t,
        &format!("UPDATE campaigns SET state = 'running' WHERE id = {id}"),
    )
    .await
    .unwrap_err();
    assert!(err.contains("illegal"), "{err}");
    let err = sql(&t, "INSERT INTO campaigns (name, definition, content_hash, state) VALUES ('x', '', '', 'running')")
        .await
        .unwrap_err();
    assert!(err.contains("draft"), "{err}");
    assert_eq!(
        t.store.require_campaign(id).await.unwrap().state,
        CampaignState::Cancelled
    );
}

async fn sql_transitions_are_recorded_as_sql(t: TestApp) {
    let id = t
        .store
        .create_campaign(&new_campaign("c"), "cli:alice")
        .await
        .unwrap();
    assert_eq!(
        sql(
            &t,
            &format!("UPDATE campaigns SET state = 'running' WHERE id = {id}")
        )
        .await,
        Ok(1)
    );
    sql(
        &t,
        &format!(
            "UPDATE campaigns SET state = 'paused', change_reason = 'legal hold' WHERE id = {id}"
        ),
    )
    .await
    .unwrap();
    let events = t.store.campaign_events(id).await.unwrap();
    assert_eq!(events[1].actor, "sql");
    assert_eq!(events[2].actor, "sql");
    assert_eq!(events[2].reason.as_deref(), Some("legal hold"));
    let c = t.store.require_campaign(id).await.unwrap();
    assert_eq!(c.state_reason.as_deref(), Some("legal hold"));
}

async fn recipients_round_trip_and_duplicates_are_counted(t: TestApp) {
    let id = t
        .store
        .create_campaign(&new_campaign("c"), "test")
        .await
        .unwrap();
    let mut full = person("A-1");
    full.address1 = Some("1 Main St".into());
    full.address2 = Some("Apt 2".into());
    full.city = Some("Springfield".into());
    full.region = Some("CA".into());
    full.postal_code = Some("90001".into());
    full.country = Some("US".into());
    full.attributes
        .insert("enrollment_code".into(), "XK-22".into());
    let mut postal = person("A-2");
    postal.email = None;
    postal.channel = Channel::Postal;
    let outcome = t
        .store
        .insert_recipients(id, &[full.clone(), postal.clone()])
        .await
        .unwrap();
    assert_eq!(
        outcome,
        InsertOutcome {
            inserted: 2,
            duplicates: 0,
            email: 1,
            postal: 1
        }
    );
    // Same customers again, plus one new: the two are duplicates and left untouched.
    let mut changed = full.clone();
    changed.email = Some("other@example.com".into());
    let outcome = t
        .store
        .insert_recipients(id, &[changed, postal, person("A-3")])
        .await
        .unwrap();
    assert_eq!(
        outcome,
        InsertOutcome {
            inserted: 1,
            duplicates: 2,
            email: 1,
            postal: 0
        }
    );

    let r = t
        .store
        .recipient_by_customer(id, "A-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.email.as_deref(),
        Some("A-1@example.com"),
        "a duplicate never overwrites"
    );
    assert_eq!(
        (
            r.address1.as_deref(),
            r.address2.as_deref(),
            r.city.as_deref(),
            r.region.as_deref()
        ),
        (
            Some("1 Main St"),
            Some("Apt 2"),
            Some("Springfield"),
            Some("CA")
        )
    );
    assert_eq!(
        (r.postal_code.as_deref(), r.country.as_deref()),
        (Some("90001"), Some("US"))
    );
    assert_eq!(
        r.attributes.get("enrollment_code").and_then(|v| v.as_str()),
        Some("XK-22")
    );
    assert_eq!(
        (r.status, r.channel, r.attempts),
        (RecipientStatus::Queued, Channel::Email, 0)
    );
    assert!(r.electronic_consent);
    assert_eq!(
        t.store.recipient(r.id).await.unwrap().unwrap().customer_id,
        "A-1"
    );
    let p = t
        .store
        .recipient_by_customer(id, "A-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.status, p.channel),
        (RecipientStatus::Postal, Channel::Postal)
    );
    assert!(
        t.store
            .recipient_by_customer(id, "nobody")
            .await
            .unwrap()
            .is_none()
    );

    let progress = progress(&t, id).await;
    assert_eq!(
        (progress.total, progress.queued, progress.postal),
        (3, 2, 1)
    );
}

async fn a_customer_repeated_within_one_batch_is_one_recipient(t: TestApp) {
    let id = t
        .store
        .create_campaign(&new_campaign("c"), "test")
        .await
        .unwrap();
    let mut again = person("R-1");
    again.email = Some("second@example.com".into());
    let outcome = t
        .store
        .insert_recipients(id, &[person("R-1"), again, person("R-2")])
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (2, 1));
    let r = t
        .store
        .recipient_by_customer(id, "R-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        r.email.as_deref(),
        Some("R-1@example.com"),
        "the first occurrence wins"
    );
    // A batch mixing new and known customers still stores the new ones (the merging path).
    let outcome = t
        .import(id, &[person("R-2"), person("R-3"), person("R-3")])
        .await;
    assert_eq!(
        (outcome.inserted, outcome.duplicates, outcome.email),
        (1, 2, 1)
    );
    assert_eq!(progress(&t, id).await.total, 3);
}

async fn insert_into_unknown_campaign_is_an_error(t: TestApp) {
    let err = t
        .store
        .insert_recipients(4242, &[person("x")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnknownCampaign(4242)), "{err}");
}

async fn claim_leases_due_rows_once_until_the_lease_expires(t: TestApp) {
    let id = running_campaign_with(&t, 5).await;
    let a = t.store.claim(id, "a", 0, 3, LEASE, at(0)).await.unwrap();
    assert_eq!(a.recipients.len(), 3);
    assert!(
        a.recipients
            .iter()
            .all(|r| r.lease_owner.as_deref() == Some("a"))
    );
    assert!(
        a.recipients.windows(2).all(|w| w[0].id < w[1].id),
        "id order"
    );
    // Another instance, scanning from the start, gets only the rest.
    let b = t.store.claim(id, "b", 0, 10, LEASE, at(1)).await.unwrap();
    assert_eq!(b.recipients.len(), 2);
    assert!(b.exhausted);
    let overlap = a
        .recipients
        .iter()
        .filter(|r| b.recipients.iter().any(|s| s.id == r.id))
        .count();
    assert_eq!(overlap, 0);
    // Nothing is due while the leases hold...
    assert!(
        t.store
            .claim(id, "c", 0, 10, LEASE, at(30))
            .await
            .unwrap()
            .recipients
            .is_empty()
    );
    // ...and everything is once they have expired (the owners died).
    let c = t.store.claim(id, "c", 0, 10, LEASE, at(61)).await.unwrap();
    assert_eq!(c.recipients.len(), 5);
    // Counters do not move on claims: leased rows are still queued.
    assert_eq!(progress(&t, id).await.queued, 5);
}

async fn claim_follows_the_cursor_and_reports_exhaustion(t: TestApp) {
    let id = running_campaign_with(&t, 5).await;
    let first = t.store.claim(id, "a", 0, 2, LEASE, at(0)).await.unwrap();
    assert!(!first.exhausted);
    assert_eq!(first.cursor.id, first.recipients[1].id);
    let second = t
        .store
        .claim(id, "a", first.cursor.id, 2, LEASE, at(0))
        .await
        .unwrap();
    assert!(second.recipients[0].id > first.cursor.id);
    let third = t
        .store
        .claim(id, "a", second.cursor.id, 2, LEASE, at(0))
        .await
        .unwrap();
    assert_eq!(third.recipients.len(), 1);
    assert!(third.exhausted);
    let empty = t
        .store
        .claim(id, "a", third.cursor.id, 2, LEASE, at(0))
        .await
        .unwrap();
    assert!(empty.recipients.is_empty() && empty.exhausted);
    assert_eq!(
        empty.cursor, third.cursor,
        "an empty claim keeps the cursor"
    );
    // Rows appended later have higher ids, so the cursor finds them without a rescan.
    t.store
        .insert_recipients(id, &[person("late")])
        .await
        .unwrap();
    let late = t
        .store
        .claim(id, "a", empty.cursor.id, 2, LEASE, at(0))
        .await
        .unwrap();
    assert_eq!(late.recipients.len(), 1);
    assert_eq!(late.recipients[0].customer_id, "late");
    // A paused or draft campaign's rows are still claimable at this level: the dispatcher decides
    // which campaigns to claim from.
}

async fn renew_and_release_leases(t: TestApp) {
    let id = running_campaign_with(&t, 3).await;
    let claim = t.store.claim(id, "a", 0, 3, LEASE, at(0)).await.unwrap();
    let ids: Vec<i64> = claim.recipients.iter().map(|r| r.id).collect();
    assert_eq!(t.store.renew_leases("a", &ids, at(600)).await.unwrap(), 3);
    assert_eq!(
        t.store
            .renew_leases("intruder", &ids, at(900))
            .await
            .unwrap(),
        0
    );
    // Renewed: still held after the original lease would have expired.
    assert!(
        t.store
            .claim(id, "b", 0, 3, LEASE, at(120))
            .await
            .unwrap()
            .recipients
            .is_empty()
    );
    assert_eq!(t.store.release_leases("intruder", &ids).await.unwrap(), 0);
    assert_eq!(t.store.release_leases("a", &ids[..2]).await.unwrap(), 2);
    let b = t.store.claim(id, "b", 0, 3, LEASE, at(120)).await.unwrap();
    assert_eq!(b.recipients.len(), 2, "released rows are due at once");
    let r = t.store.recipient(ids[2]).await.unwrap().unwrap();
    assert_eq!(r.lease_owner.as_deref(), Some("a"));
    assert_eq!(r.lease_expires_at, Some(at(600)));
}

async fn record_attempts_moves_recipients_and_appends_attempts(t: TestApp) {
    let id = running_campaign_with(&t, 3).await;
    let claim = t.store.claim(id, "a", 0, 3, LEASE, at(0)).await.unwrap();
    let [sent, deferred, failed] = [
        &claim.recipients[0],
        &claim.recipients[1],
        &claim.recipients[2],
    ];
    let records = vec![
        record(sent, NextState::Sent, AttemptOutcome::Sent, 250),
        record(
            deferred,
            NextState::Retry { at: at(300) },
            AttemptOutcome::Transient,
            421,
        ),
        record(
            failed,
            NextState::Failed {
                reason: "550 no such user".into(),
            },
            AttemptOutcome::Permanent,
            550,
        ),
    ];
    assert_eq!(t.store.record_attempts("a", &records).await.unwrap(), 3);

    let s = t.store.recipient(sent.id).await.unwrap().unwrap();
    assert_eq!(
        (s.status, s.attempts, s.last_code),
        (RecipientStatus::Sent, 1, Some(250))
    );
    assert_eq!(
        s.last_reply.as_deref(),
        Some(format!("250 queued as ABC{}", s.id).as_str())
    );
    assert_eq!(
        s.message_id.as_deref(),
        Some(records[0].message_id.as_str())
    );
    assert_eq!(
        (s.first_attempt_at, s.finished_at),
        (Some(at(10)), Some(at(11)))
    );
    assert!(s.lease_owner.is_none() && s.lease_expires_at.is_none() && !s.postal_followup);

    let d = t.store.recipient(deferred.id).await.unwrap().unwrap();
    assert_eq!(
        (d.status, d.attempts, d.retry_due_at),
        (RecipientStatus::Deferred, 1, Some(at(300)))
    );
    assert!(d.finished_at.is_none());

    let f = t.store.recipient(failed.id).await.unwrap().unwrap();
    assert_eq!(
        (f.status, f.postal_followup),
        (RecipientStatus::Failed, true)
    );
    assert_eq!(f.fail_reason.as_deref(), Some("550 no such user"));

    let attempts = t.store.attempts(sent.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        (attempts[0].attempt, attempts[0].instance.as_str()),
        (1, "a")
    );
    assert_eq!(
        (attempts[0].outcome, attempts[0].smtp_code),
        (AttemptOutcome::Sent, Some(250))
    );
    assert_eq!(
        (attempts[0].started_at, attempts[0].finished_at),
        (at(10), at(11))
    );

    let p = progress(&t, id).await;
    assert_eq!(
        (p.total, p.queued, p.deferred, p.sent, p.failed),
        (3, 0, 1, 1, 1)
    );
}

async fn deferred_recipients_are_due_again_at_their_retry_time(t: TestApp) {
    let id = running_campaign_with(&t, 1).await;
    let claim = t.store.claim(id, "a", 0, 1, LEASE, at(0)).await.unwrap();
    let r = &claim.recipients[0];
    let retry = record(
        r,
        NextState::Retry { at: at(300) },
        AttemptOutcome::Transient,
        451,
    );
    t.store.record_attempts("a", &[retry]).await.unwrap();
    // Not before its time, even scanning from the start.
    assert!(
        t.store
            .claim(id, "a", 0, 5, LEASE, at(299))
            .await
            .unwrap()
            .recipients
            .is_empty()
    );
    let again = t
        .store
        .claim(id, "b", claim.cursor.id, 5, LEASE, at(300))
        .await
        .unwrap();
    assert_eq!(
        again.recipients.len(),
        1,
        "found through retry_due_at, whatever the cursor"
    );
    let r = &again.recipients[0];
    let mut sent = record(r, NextState::Sent, AttemptOutcome::Sent, 250);
    sent.started_at = at(301);
    t.store.record_attempts("b", &[sent]).await.unwrap();
    let r = t.store.recipient(r.id).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.attempts, r.retry_due_at),
        (RecipientStatus::Sent, 2, None)
    );
    assert_eq!(
        r.first_attempt_at,
        Some(at(10)),
        "the first attempt's time is kept"
    );
    let attempts = t.store.attempts(r.id).await.unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(attempts[1].instance, "b");
    let p = progress(&t, id).await;
    assert_eq!((p.deferred, p.sent), (0, 1));
}

async fn an_attempt_without_the_lease_is_recorded_but_changes_nothing(t: TestApp) {
    let id = running_campaign_with(&t, 1).await;
    let a = t.store.claim(id, "a", 0, 1, LEASE, at(0)).await.unwrap();
    // a's lease expires and b takes the row over.
    let b = t.store.claim(id, "b", 0, 1, LEASE, at(100)).await.unwrap();
    assert_eq!(b.recipients.len(), 1);
    let late = record(&a.recipients[0], NextState::Sent, AttemptOutcome::Sent, 250);
    assert_eq!(t.store.record_attempts("a", &[late]).await.unwrap(), 0);
    let r = t
        .store
        .recipient(a.recipients[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.status, r.lease_owner.as_deref()),
        (RecipientStatus::Queued, Some("b"))
    );
    assert_eq!(
        t.store.attempts(r.id).await.unwrap().len(),
        1,
        "the attempt happened: it is evidence"
    );
}

async fn cancel_ends_open_recipients_and_keeps_leased_ones_for_their_owner(t: TestApp) {
    let id = running_campaign_with(&t, 4).await;
    let now = Utc::now();
    let claim = t.store.claim(id, "a", 0, 1, LEASE, now).await.unwrap();
    t.store
        .set_campaign_state(
            id,
            CampaignState::Cancelled,
            "cli:alice",
            Some("wrong list"),
        )
        .await
        .unwrap();
    let p = progress(&t, id).await;
    assert_eq!(
        (p.cancelled, p.queued),
        (3, 1),
        "the leased row stays with its owner"
    );
    // The owner reports a temporary failure: in a cancelled campaign that ends the recipient.
    let r = &claim.recipients[0];
    let mut retry = record(
        r,
        NextState::Retry {
            at: now + chrono::Duration::seconds(60),
        },
        AttemptOutcome::Transient,
        421,
    );
    retry.started_at = now;
    t.store.record_attempts("a", &[retry]).await.unwrap();
    let r = t.store.recipient(r.id).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.retry_due_at),
        (RecipientStatus::Cancelled, None)
    );
    let p = progress(&t, id).await;
    assert_eq!((p.cancelled, p.queued, p.deferred), (4, 0, 0));
}

async fn records_are_append_only(t: TestApp) {
    let id = running_campaign_with(&t, 1).await;
    let claim = t.store.claim(id, "a", 0, 1, LEASE, at(0)).await.unwrap();
    t.store
        .record_attempts(
            "a",
            &[record(
                &claim.recipients[0],
                NextState::Sent,
                AttemptOutcome::Sent,
                250,
            )],
        )
        .await
        .unwrap();
    for statement in [
        "UPDATE delivery_attempts SET smtp_code = 200".to_string(),
        "DELETE FROM delivery_attempts".to_string(),
        "UPDATE campaign_events SET actor = 'nobody'".to_string(),
        "DELETE FROM campaign_events".to_string(),
        "DELETE FROM recipients".to_string(),
        format!("DELETE FROM campaigns WHERE id = {id}"),
        "UPDATE recipients SET customer_id = 'someone else'".to_string(),
    ] {
        let err = sql(&t, &statement).await.expect_err(&statement);
        assert!(
            err.contains("not allowed") || err.contains("cannot be changed"),
            "{statement}: {err}"
        );
    }
    assert_eq!(
        t.store
            .attempts(claim.recipients[0].id)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn instances_heartbeat_and_stop(t: TestApp) {
    let info = |id: &str| InstanceInfo {
        id: id.into(),
        hostname: "host".into(),
        pid: 42,
        version: "0.1.0".into(),
    };
    t.store.heartbeat(&info("a"), at(0)).await.unwrap();
    t.store.heartbeat(&info("b"), at(0)).await.unwrap();
    t.store.heartbeat(&info("a"), at(20)).await.unwrap();
    let ttl = Duration::from_secs(15);
    assert_eq!(
        t.store.live_instances(at(10), ttl).await.unwrap(),
        vec!["a", "b"]
    );
    assert_eq!(
        t.store.live_instances(at(30), ttl).await.unwrap(),
        vec!["a"],
        "b's heartbeat is stale"
    );
    t.store.instance_stopped("a", at(31)).await.unwrap();
    assert!(
        t.store
            .live_instances(at(31), ttl)
            .await
            .unwrap()
            .is_empty()
    );
    t.store.heartbeat(&info("a"), at(40)).await.unwrap();
    assert_eq!(
        t.store.live_instances(at(41), ttl).await.unwrap(),
        vec!["a"],
        "a restart revives it"
    );
}

async fn progress_lists_every_campaign_from_counters(t: TestApp) {
    let a = running_campaign_with(&t, 2).await;
    let b = t
        .store
        .create_campaign(&new_campaign("second"), "test")
        .await
        .unwrap();
    let all = t.store.progress(None).await.unwrap();
    assert_eq!(
        all.iter().map(|p| p.campaign_id).collect::<Vec<_>>(),
        vec![a, b]
    );
    assert_eq!((all[0].total, all[0].state), (2, CampaignState::Running));
    assert_eq!(
        (all[1].total, all[1].state, all[1].name.as_str()),
        (0, CampaignState::Draft, "second")
    );
    assert!(t.store.progress(Some(b + 1)).await.unwrap().is_empty());
    // An operator's own SQL insert is counted too (the counters are kept by the database).
    sql(&t, &format!("INSERT INTO recipients (campaign_id, customer_id, email) VALUES ({b}, 'sql-1', 'x@example.com')"))
        .await
        .unwrap();
    assert_eq!(progress(&t, b).await.queued, 1);
}

/// The references of recipients and attempts hold for an operator's SQL too (on PostgreSQL they are
/// checked by statement triggers since migration 5, on SQLite by foreign keys), in a single row or in
/// a set where only one row is wrong.
async fn sql_cannot_reference_a_missing_campaign_or_recipient(t: TestApp) {
    let id = running_campaign_with(&t, 1).await;
    let other = t
        .store
        .create_campaign(&new_campaign("other"), "test")
        .await
        .unwrap();
    let r = t
        .store
        .recipients_after(id, 0, 1)
        .await
        .unwrap()
        .remove(0)
        .id;
    let missing = other + 1000;
    for bad in [
        format!(
            "INSERT INTO recipients (campaign_id, customer_id, email) VALUES ({missing}, 'ghost', 'g@example.com')"
        ),
        format!(
            "INSERT INTO recipients (campaign_id, customer_id, email) VALUES ({id}, 'fine', 'f@example.com'), \
             ({missing}, 'ghost', 'g@example.com')"
        ),
        format!(
            "INSERT INTO delivery_attempts (recipient_id, campaign_id, attempt, instance, started_at, \
             finished_at, outcome, message_id) VALUES ({}, {id}, 1, 'sql', {now}, {now}, 'sent', '<x@y>')",
            r + 1000,
            now = now_sql(&t)
        ),
        // An existing recipient, but not of that campaign.
        format!(
            "INSERT INTO delivery_attempts (recipient_id, campaign_id, attempt, instance, started_at, \
             finished_at, outcome, message_id) VALUES ({r}, {other}, 1, 'sql', {now}, {now}, 'sent', '<x@y>')",
            now = now_sql(&t)
        ),
    ] {
        let err = sql(&t, &bad).await.expect_err(&bad);
        assert!(err.to_lowercase().contains("foreign key"), "{bad}: {err}");
    }
    assert_eq!(
        progress(&t, id).await.total,
        1,
        "nothing of a refused statement stays"
    );
    assert!(t.store.attempts_for(&[r]).await.unwrap().is_empty());
    // And a good one still goes in.
    sql(
        &t,
        &format!("INSERT INTO recipients (campaign_id, customer_id, email) VALUES ({other}, 'real', 'r@example.com')"),
    )
        .await
        .unwrap();
    assert_eq!(progress(&t, other).await.total, 1);
}

/// "Now" as each dialect stores a time.
fn now_sql(t: &TestApp) -> &'static str {
    match t.store {
        Store::Postgres(_) => "now()",
        Store::Sqlite(_) => "1795000000000",
    }
}

async fn attempts_for_returns_the_attempts_of_many_recipients_in_order(t: TestApp) {
    let id = running_campaign_with(&t, 4).await;
    let claim = t.store.claim(id, "a", 0, 4, LEASE, at(0)).await.unwrap();
    let r = &claim.recipients;
    t.store
        .record_attempts(
            "a",
            &[
                record(
                    &r[0],
                    NextState::Retry { at: at(300) },
                    AttemptOutcome::Transient,
                    421,
                ),
                record(&r[1], NextState::Sent, AttemptOutcome::Sent, 250),
                record(
                    &r[3],
                    NextState::Failed {
                        reason: "550 no such user".into(),
                    },
                    AttemptOutcome::Permanent,
                    550,
                ),
            ],
        )
        .await
        .unwrap();
    let again = t.store.claim(id, "b", 0, 4, LEASE, at(300)).await.unwrap();
    let retried = again.recipients.iter().find(|x| x.id == r[0].id).unwrap();
    let mut sent = record(retried, NextState::Sent, AttemptOutcome::Sent, 250);
    sent.started_at = at(301);
    t.store.record_attempts("b", &[sent]).await.unwrap();

    // Asked in any order, with repeats, with a recipient that has no attempt and ids that do not
    // exist (more than 500 of them, so a dialect that splits the list splits it here).
    let mut ids = vec![r[3].id, r[0].id, r[2].id, r[1].id, r[0].id];
    ids.extend((1..=600).map(|i| r[3].id + 1_000 * i));
    ids.extend((1..=100).map(|i| -i));
    let got = t.store.attempts_for(&ids).await.unwrap();
    let key = |a: &Attempt| {
        (
            a.id,
            a.recipient_id,
            a.campaign_id,
            a.attempt,
            a.instance.clone(),
            a.started_at,
            a.finished_at,
            a.outcome,
            a.smtp_code,
            a.reply.clone(),
            a.message_id.clone(),
        )
    };
    let mut expected = Vec::new();
    for rid in [r[0].id, r[1].id, r[3].id] {
        expected.extend(t.store.attempts(rid).await.unwrap());
    }
    assert_eq!(
        got.iter().map(key).collect::<Vec<_>>(),
        expected.iter().map(key).collect::<Vec<_>>(),
        "by recipient, oldest first, each attempt once, exactly as `attempts` reads it"
    );
    assert_eq!(
        got.iter()
            .map(|a| (a.recipient_id, a.attempt))
            .collect::<Vec<_>>(),
        vec![(r[0].id, 1), (r[0].id, 2), (r[1].id, 1), (r[3].id, 1)]
    );
    assert!(t.store.attempts_for(&[]).await.unwrap().is_empty());
    assert!(t.store.attempts_for(&[r[2].id]).await.unwrap().is_empty());
}

async fn imports_are_recorded_and_must_reconcile(t: TestApp) {
    let id = t
        .store
        .create_campaign(&new_campaign("c"), "test")
        .await
        .unwrap();
    let first = t.store.next_import_id().await.unwrap();
    let mut row = person("I-1");
    row.import_id = Some(first);
    t.store.insert_recipients(id, &[row]).await.unwrap();
    let counts = ImportCounts {
        read: 3,
        rejected: 1,
        duplicates: 1,
        email: 1,
        postal: 0,
        unusable_email: 0,
    };
    let record = ImportRecord {
        id: first,
        campaign_id: id,
        source_name: "list.csv".into(),
        sha256: "ab".repeat(32),
        counts,
        shared_addresses: 0,
        actor: "cli:test".into(),
        started_at: at(0),
        finished_at: at(5),
    };
    t.store.record_import(&record).await.unwrap();
    let stored = t.store.imports(id).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].id, stored[0].counts.read, stored[0].counts.email),
        (first, 3, 1)
    );
    assert_eq!(
        (stored[0].started_at, stored[0].finished_at),
        (at(0), at(5))
    );
    assert!(
        t.store.next_import_id().await.unwrap() > first,
        "ids are never handed out twice"
    );
    // The database refuses counts that do not add up.
    let bad = ImportRecord {
        id: first + 10,
        counts: ImportCounts { read: 9, ..counts },
        ..record
    };
    assert!(t.store.record_import(&bad).await.is_err());
}

async fn lookups_for_intake_and_templates(t: TestApp) {
    t.store.ping().await.unwrap();
    let id = t
        .store
        .create_campaign(&new_campaign("c"), "test")
        .await
        .unwrap();
    let mut rows: Vec<_> = (0..6).map(|i| person(&format!("L-{i}"))).collect();
    rows[1].locale = Some("es-US".into());
    rows[2].jurisdiction = Some("US-MA".into());
    rows[3].email = Some("L-0@EXAMPLE.com".into()); // shares L-0's address, in another case
    t.store.insert_recipients(id, &rows).await.unwrap();
    let known = t
        .store
        .existing_customers(id, &["L-1".into(), "nobody".into(), "L-5".into()])
        .await
        .unwrap();
    let mut known: Vec<_> = known.into_iter().collect();
    known.sort();
    assert_eq!(known, vec!["L-1", "L-5"]);
    assert_eq!(t.store.shared_addresses(id).await.unwrap(), 1);
    // One sample per (locale, jurisdiction) present: en-US/US-CA, es-US/US-CA, en-US/US-MA.
    let sample = t.store.sample_recipients(id, 10).await.unwrap();
    let ids: Vec<_> = sample.iter().map(|r| r.customer_id.as_str()).collect();
    assert_eq!(ids, vec!["L-0", "L-1", "L-2"]);
    assert_eq!(t.store.sample_recipients(id, 2).await.unwrap().len(), 2);
    let page = t.store.recipients_after(id, 0, 4).await.unwrap();
    assert_eq!(page.len(), 4);
    let rest = t.store.recipients_after(id, page[3].id, 4).await.unwrap();
    assert_eq!(
        rest.iter()
            .map(|r| r.customer_id.as_str())
            .collect::<Vec<_>>(),
        vec!["L-4", "L-5"]
    );
}

async fn sent_counts_and_rates_follow_the_attempts(t: TestApp) {
    let id = running_campaign_with(&t, 3).await;
    // One open-ended wave, released before anything is sent: every attempt is counted for it too.
    t.store.insert_waves(&[wave(id, 1, "rest")]).await.unwrap();
    assert!(
        t.store
            .release_wave(
                id,
                1,
                0,
                None,
                Some(3),
                Utc::now() - chrono::Duration::hours(1)
            )
            .await
            .unwrap()
    );
    let claim = t.store.claim(id, "a", 0, 3, LEASE, at(0)).await.unwrap();
    let mut sent = record(
        &claim.recipients[0],
        NextState::Sent,
        AttemptOutcome::Sent,
        250,
    );
    let mut sent_earlier = record(
        &claim.recipients[1],
        NextState::Sent,
        AttemptOutcome::Sent,
        250,
    );
    let mut retry = record(
        &claim.recipients[2],
        NextState::Retry { at: at(600) },
        AttemptOutcome::Transient,
        451,
    );
    let now = Utc::now();
    sent.finished_at = now - chrono::Duration::seconds(30);
    sent_earlier.finished_at = now - chrono::Duration::minutes(10);
    retry.finished_at = now - chrono::Duration::seconds(20);
    t.store
        .record_attempts("a", &[sent, sent_earlier, retry])
        .await
        .unwrap();
    assert_eq!(
        t.store
            .sent_since(id, now - chrono::Duration::minutes(1))
            .await
            .unwrap(),
        1,
        "only sent attempts count"
    );
    assert_eq!(
        t.store
            .sent_since(id, now - chrono::Duration::seconds(10))
            .await
            .unwrap(),
        0
    );
    // The views carry the rates (from the 10-second buckets the attempts trigger keeps) and the ETA:
    // one open recipient at one notice a minute is 60 s away.
    let p = progress(&t, id).await;
    assert_eq!(
        (p.sent_last_minute, p.sent_last_hour, p.eta_seconds),
        (1, 2, Some(60)),
        "{p:?}"
    );
    let w = &t.store.wave_progress(id).await.unwrap()[0];
    assert_eq!(
        (w.sent_last_minute, w.sent_last_hour, w.eta_seconds),
        (1, 2, Some(60)),
        "{w:?}"
    );
    let last = w
        .last_change_at
        .expect("a wave with attempts has a last change");
    assert!(
        (last - (now - chrono::Duration::seconds(20)))
            .num_milliseconds()
            .abs()
            < 5,
        "the last change is the latest attempt: {last}"
    );
}

async fn settle_cancelled_ends_abandoned_recipients(t: TestApp) {
    let id = running_campaign_with(&t, 3).await;
    let now = Utc::now();
    // A daemon leases one recipient, then dies; the campaign is cancelled meanwhile.
    t.store.claim(id, "dead", 0, 1, LEASE, now).await.unwrap();
    assert_eq!(
        t.store.settle_cancelled(id, now).await.unwrap(),
        0,
        "nothing to settle while running"
    );
    t.store
        .set_campaign_state(id, CampaignState::Cancelled, "test", None)
        .await
        .unwrap();
    assert_eq!(
        progress(&t, id).await.queued,
        1,
        "the leased one waits for its lease"
    );
    assert_eq!(
        t.store
            .settle_cancelled(id, now + chrono::Duration::seconds(30))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        t.store
            .settle_cancelled(id, now + chrono::Duration::seconds(61))
            .await
            .unwrap(),
        1
    );
    let p = progress(&t, id).await;
    assert_eq!((p.queued, p.cancelled), (0, 3));
}

async fn waves_are_planned_released_and_finished(t: TestApp) {
    let id = running_campaign_with(&t, 5).await;
    let wave = |number: i32, size: &str| wave(id, number, size);
    t.store
        .insert_waves(&[wave(1, "2"), wave(2, "rest")])
        .await
        .unwrap();
    t.store.insert_waves(&[wave(1, "99")]).await.unwrap(); // once only
    let waves = t.store.waves(id).await.unwrap();
    assert_eq!(
        waves
            .iter()
            .map(|w| w.size_spec.to_string())
            .collect::<Vec<_>>(),
        vec!["2", "rest"]
    );
    assert_eq!(waves[0].max_failure_rate, Some(0.1));
    let (last, counted) = t
        .store
        .nth_email_recipient(id, 0, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(counted, 2);
    assert!(
        t.store
            .release_wave(id, 1, 0, Some(last), Some(counted), at(0))
            .await
            .unwrap()
    );
    assert!(
        !t.store
            .release_wave(id, 1, 0, Some(last), Some(counted), at(1))
            .await
            .unwrap(),
        "members are fixed once"
    );
    assert_eq!(t.store.open_in_range(id, 0, Some(last)).await.unwrap(), 2);
    assert_eq!(t.store.open_in_range(id, last, None).await.unwrap(), 3);
    assert_eq!(
        t.store.wave_open(id, 1).await.unwrap(),
        2,
        "from its counters"
    );
    // Only the wave's members can be claimed.
    let claim = t
        .store
        .claim_batch(&ClaimRequest {
            upper: last,
            ..request(id, "a", 0, 10, LEASE, at(0))
        })
        .await
        .unwrap();
    assert_eq!(claim.recipients.len(), 2);
    let records: Vec<_> = claim
        .recipients
        .iter()
        .map(|r| {
            record(
                r,
                NextState::Failed {
                    reason: "550".into(),
                },
                AttemptOutcome::Permanent,
                550,
            )
        })
        .collect();
    t.store.record_attempts("a", &records).await.unwrap();
    let attempts = t.store.wave_attempts(id, 1, at(0)).await.unwrap();
    assert_eq!(
        attempts,
        WaveAttempts {
            total: 2,
            permanent: 2,
            temporary: 0
        }
    );
    assert_eq!(t.store.wave_attempts(id, 2, at(0)).await.unwrap().total, 0);
    t.store.finish_wave(id, 1, at(20)).await.unwrap();
    let progress = t.store.wave_progress(id).await.unwrap();
    assert_eq!(
        (
            progress[0].state.as_str(),
            progress[0].total,
            progress[0].failed
        ),
        ("finished", 2, 2)
    );
    assert_eq!(
        (progress[1].state.as_str(), progress[1].total),
        ("waiting", 0)
    );
    // Long ago (2026-01-01): nothing in the last hour, so no rate and no ETA; the last change is
    // the end of the wave, after its attempts (at 11 s).
    assert_eq!(
        (
            progress[0].sent_last_hour,
            progress[0].eta_seconds,
            progress[0].last_change_at
        ),
        (0, None, Some(at(20)))
    );
    assert_eq!(progress[1].last_change_at, None, "never released");
    assert_eq!(
        t.store.waves(id).await.unwrap()[0].finished_at,
        Some(at(20))
    );
}

/// The claim's two queries must each go through its own index whatever the planner's statistics know:
/// planned for a campaign they have not seen (imported since the last ANALYZE; SQLite's embedded
/// default never analyzes) beside a larger campaign they have, which is what a database holds when a
/// second list arrives, and (PostgreSQL) again once they know both. Both had gone wrong: deferred rows
/// were looked for through recipients_campaign_id while the campaign was unknown (every recipient of
/// the campaign read and sorted on every claim: half the dispatcher's speed at 200,000 recipients;
/// on SQLite always), and on PostgreSQL fresh rows through the primary key from id 0 once the campaign
/// was known (every earlier campaign's ids walked at the start and at every rescan).
async fn claims_use_their_indexes_whatever_the_statistics_know(t: TestApp) {
    let postgres = matches!(t.store, Store::Postgres(_));
    if postgres {
        // Only the ANALYZEs below may teach the planner: autovacuum must not analyze in between.
        sql(&t, "ALTER TABLE recipients SET (autovacuum_enabled = off)")
            .await
            .unwrap();
    }
    let _earlier = running_campaign_with(&t, 30_000).await;
    if postgres {
        sql(&t, "ANALYZE recipients").await.unwrap();
    }
    let campaign = running_campaign_with(&t, 15_000).await;
    defer_first_five(&t, campaign).await;

    assert_claim_plans(&t, campaign, "a campaign new to the statistics").await;
    if postgres {
        sql(&t, "ANALYZE recipients").await.unwrap();
        assert_claim_plans(&t, campaign, "a campaign the statistics know").await;
    }
}

/// Claims the first five recipients of `campaign` and records a temporary failure for each, so that
/// five rows wait for a retry (at 300 s) and the retry index is not empty.
async fn defer_first_five(t: &TestApp, campaign: i64) {
    let claim = t
        .store
        .claim(campaign, "a", 0, 5, LEASE, at(0))
        .await
        .unwrap();
    let records: Vec<_> = claim
        .recipients
        .iter()
        .map(|r| {
            record(
                r,
                NextState::Retry { at: at(300) },
                AttemptOutcome::Transient,
                421,
            )
        })
        .collect();
    t.store.record_attempts("a", &records).await.unwrap();
}

/// Plans `store::{postgres,sqlite}::{DUE_RETRIES, DUE_FRESH}` for `campaign` (from the start, as at the start
/// and at every rescan) with their values, as the claim has them planned, and checks the index each
/// goes through.
async fn assert_claim_plans(t: &TestApp, campaign: i64, case: &str) {
    let (retries, fresh) = claim_plans(t, campaign, true).await;
    assert!(
        retries.contains("recipients_retry_due") && !retries.contains("recipients_campaign_id"),
        "{case}: deferred rows must be found through recipients_retry_due:\n{retries}"
    );
    // (SQLite names a scan of its primary key, the rowid, "INTEGER PRIMARY KEY".)
    assert!(
        fresh.contains("recipients_claim_order")
            && !fresh.contains("recipients_pkey")
            && !fresh.contains("INTEGER PRIMARY KEY"),
        "{case}: fresh rows must be found through recipients_claim_order:\n{fresh}"
    );
    for plan in [&retries, &fresh] {
        assert!(
            !plan.contains("Sort") && !plan.contains("TEMP B-TREE") && !plan.contains("Bitmap"),
            "{case}: the index walk gives the order by itself:\n{plan}"
        );
    }
}

/// The plans of the two claim queries for `campaign` from the start, as text: (retries, fresh). On
/// PostgreSQL `with_claim_settings` plans them under the claim's `CLAIM_SETTINGS`, as the claim does.
async fn claim_plans(t: &TestApp, campaign: i64, with_claim_settings: bool) -> (String, String) {
    use sqlx::Row;
    match &t.store {
        Store::Postgres(s) => {
            use breach_notifier::store::postgres::{DUE_FRESH, DUE_RETRIES};
            let lines = |rows: Vec<sqlx::postgres::PgRow>| {
                rows.iter()
                    .map(|r| r.get::<String, _>(0))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            // Planned as the claim has them planned: inside a transaction with its settings.
            let mut tx = s.pool().begin().await.unwrap();
            if with_claim_settings {
                sqlx::query(breach_notifier::store::postgres::CLAIM_SETTINGS)
                    .bind("plan check")
                    .bind("10000")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let retries = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {DUE_RETRIES}")))
                .bind(campaign)
                .bind(at(600))
                .bind(500_i64)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            let fresh = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN {DUE_FRESH}")))
                .bind(campaign)
                .bind(i32::MIN)
                .bind(0_i64)
                .bind(i64::MAX)
                .bind(at(600))
                .bind(500_i64)
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            (lines(retries), lines(fresh))
        }
        Store::Sqlite(s) => {
            use breach_notifier::store::sqlite::{DUE_FRESH, DUE_RETRIES};
            let lines = |rows: Vec<sqlx::sqlite::SqliteRow>| {
                rows.iter()
                    .map(|r| r.get::<String, _>("detail"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            let now_ms = at(600).timestamp_millis();
            let plan = |query: &str| format!("EXPLAIN QUERY PLAN {query}");
            let retries = sqlx::query(sqlx::AssertSqlSafe(plan(DUE_RETRIES)))
                .bind(campaign)
                .bind(now_ms)
                .bind(500_i64)
                .fetch_all(s.pool())
                .await
                .unwrap();
            let fresh = sqlx::query(sqlx::AssertSqlSafe(plan(DUE_FRESH)))
                .bind(campaign)
                .bind(i32::MIN)
                .bind(0_i64)
                .bind(i64::MAX)
                .bind(now_ms)
                .bind(500_i64)
                .fetch_all(s.pool())
                .await
                .unwrap();
            (lines(retries), lines(fresh))
        }
    }
}

/// The open-ended last wave's counters start from the campaign's counters less the other waves'
/// (nothing of it is read), then follow every insert and status change, as the fixed waves' do.
async fn the_open_ended_wave_is_counted_from_the_campaign(t: TestApp) {
    let id = running_campaign_with(&t, 6).await;
    let mut letter = person("postal-1");
    letter.channel = Channel::Postal;
    t.store.insert_recipients(id, &[letter]).await.unwrap();
    t.store
        .insert_waves(&[wave(id, 1, "2"), wave(id, 2, "rest")])
        .await
        .unwrap();
    let (last, n) = t
        .store
        .nth_email_recipient(id, 0, 2)
        .await
        .unwrap()
        .unwrap();
    assert!(
        t.store
            .release_wave(id, 1, 0, Some(last), Some(n), at(0))
            .await
            .unwrap()
    );
    assert_eq!(t.store.wave_open(id, 1).await.unwrap(), 2);
    assert_eq!(t.store.wave_open(id, 2).await.unwrap(), 0, "not released");

    // Wave 1: one sent, one waiting for a retry.
    let claim = t
        .store
        .claim_batch(&ClaimRequest {
            upper: last,
            ..request(id, "a", 0, 10, LEASE, at(0))
        })
        .await
        .unwrap();
    let sent = record(
        &claim.recipients[0],
        NextState::Sent,
        AttemptOutcome::Sent,
        250,
    );
    let retry = record(
        &claim.recipients[1],
        NextState::Retry { at: at(600) },
        AttemptOutcome::Transient,
        451,
    );
    t.store.record_attempts("a", &[sent, retry]).await.unwrap();
    assert_eq!(
        t.store.wave_open(id, 1).await.unwrap(),
        1,
        "the deferred one"
    );

    // The rest: the 4 other email recipients (not the letter), planned from the counters.
    assert!(
        t.store
            .release_wave(id, 2, last, None, None, at(1))
            .await
            .unwrap()
    );
    assert_eq!(t.store.waves(id).await.unwrap()[1].planned, Some(4));
    // Recipients added later join the open-ended wave.
    t.store
        .insert_recipients(id, &[person("late-1"), person("late-2")])
        .await
        .unwrap();
    let p = t.store.wave_progress(id).await.unwrap();
    assert_eq!(
        (p[0].total, p[0].queued, p[0].sent, p[0].deferred),
        (2, 0, 1, 1)
    );
    assert_eq!((p[1].total, p[1].queued, p[1].failed), (6, 6, 0));

    // Their changes are counted as they happen.
    let claim = t
        .store
        .claim(id, "b", last, 10, LEASE, at(2))
        .await
        .unwrap();
    assert_eq!(claim.recipients.len(), 6);
    let failed: Vec<_> = claim
        .recipients
        .iter()
        .map(|r| {
            record(
                r,
                NextState::Failed {
                    reason: "550".into(),
                },
                AttemptOutcome::Permanent,
                550,
            )
        })
        .collect();
    t.store.record_attempts("b", &failed).await.unwrap();
    let p = t.store.wave_progress(id).await.unwrap();
    assert_eq!((p[1].total, p[1].queued, p[1].failed), (6, 0, 6));
    assert_eq!(t.store.wave_open(id, 2).await.unwrap(), 0);
    assert_eq!((p[0].total, p[0].deferred), (2, 1), "wave 1 unchanged");
}

/// At a size where PostgreSQL, knowing the table's size but nothing of its columns (what a bulk load
/// leaves once autovacuum has vacuumed the new rows but not yet analysed them), plans the fresh claim
/// as a bitmap scan of the whole campaign and a sort, the claim's own settings leave it the index walk
/// that stops after the rows it returns (80,000 rows were enough for the bad plan on PostgreSQL 15 with
/// the full index of queue order; see the comment on the unguarded plan).
async fn claims_walk_their_index_at_a_size_where_the_planner_guesses(t: TestApp) {
    const ROWS: i64 = 150_000;
    let postgres = matches!(t.store, Store::Postgres(_));
    if postgres {
        sql(&t, "ALTER TABLE recipients SET (autovacuum_enabled = off)")
            .await
            .unwrap();
    }
    let campaign = running_campaign_with(&t, 5).await;
    let rows = if postgres {
        "SELECT g FROM generate_series(6, {ROWS}) g"
    } else {
        "WITH RECURSIVE s(g) AS (SELECT 6 UNION ALL SELECT g + 1 FROM s WHERE g < {ROWS}) SELECT g FROM s"
    }
    .replace("{ROWS}", &ROWS.to_string());
    sql(
        &t,
        &format!(
            "INSERT INTO recipients (campaign_id, customer_id, email, channel, status) \
             SELECT {campaign}, 'bulk-' || g, 'bulk-' || g || '@example.com', 'email', 'queued' \
             FROM ({rows}) AS n"
        ),
    )
    .await
    .unwrap();
    defer_first_five(&t, campaign).await;
    if postgres {
        sql(&t, "VACUUM recipients").await.unwrap();
        // Without the claim's settings, PostgreSQL 15 planned a bitmap scan and a sort here while the
        // fresh claim walked recipients_campaign_id (a full index); the partial recipients_claim_order
        // is cheap enough in its eyes that it now walks it unguarded too. The settings stay, so that
        // the plan does not rest on that estimate.
        let (_, unguarded) = claim_plans(&t, campaign, false).await;
        assert!(
            unguarded.contains("Sort") || unguarded.contains("recipients_claim_order"),
            "{unguarded}"
        );
    }
    assert_claim_plans(&t, campaign, "a large campaign without column statistics").await;
    let claim = t
        .store
        .claim(campaign, "b", 0, 500, LEASE, at(600))
        .await
        .unwrap();
    assert_eq!(claim.recipients.len(), 500);
    assert_eq!(
        claim.recipients.iter().filter(|r| r.attempts == 1).count(),
        5,
        "the due retries come with the fresh rows"
    );
}

/// Pre-flight samples (the first recipient of each locale and jurisdiction) are kept as rows arrive,
/// per campaign, with "none" a value of its own.
async fn samples_are_the_first_recipient_of_each_pair(t: TestApp) {
    let with = |customer: &str, locale: Option<&str>, jurisdiction: Option<&str>| {
        let mut r = person(customer);
        r.locale = locale.map(str::to_string);
        r.jurisdiction = jurisdiction.map(str::to_string);
        r
    };
    let id = t
        .store
        .create_campaign(&new_campaign("samples"), "test")
        .await
        .unwrap();
    let first = [
        with("a", Some("en-US"), Some("US-CA")),
        with("c", Some("es-US"), Some("US-CA")),
        with("d", None, None),
    ];
    let second = [
        with("b", Some("en-US"), Some("US-CA")),
        with("e", None, None),
        with("f", Some("es-US"), None),
    ];
    t.store.insert_recipients(id, &first).await.unwrap();
    t.store.insert_recipients(id, &second).await.unwrap();
    let customers = |sample: Vec<Recipient>| {
        sample
            .into_iter()
            .map(|r| r.customer_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        customers(t.store.sample_recipients(id, 10).await.unwrap()),
        vec!["a", "c", "d", "f"]
    );
    assert_eq!(
        customers(t.store.sample_recipients(id, 2).await.unwrap()),
        vec!["a", "c"]
    );
    let other = t
        .store
        .create_campaign(&new_campaign("other"), "test")
        .await
        .unwrap();
    t.store
        .insert_recipients(other, &[with("g", Some("en-US"), Some("US-CA"))])
        .await
        .unwrap();
    assert_eq!(
        customers(t.store.sample_recipients(other, 10).await.unwrap()),
        vec!["g"]
    );
    assert_eq!(t.store.sample_recipients(id, 10).await.unwrap().len(), 4);
}
