//! The SQLite store: the embedded default, so that a new user runs breach-notifier with no server.
//!
//! One daemon per database file (SQLite has one writer at a time and no `SKIP LOCKED`); WAL mode lets
//! `status` read while the daemon writes. Times are stored as integer milliseconds since the epoch
//! (`DbTime`). What both backends do with the same SQL is in `portable.rs`; this file holds what
//! SQLite does its own way: claims without `SKIP LOCKED` (the one daemon takes turns with nobody),
//! a daily cap counted from this daemon's own holds, and batches of ids as one statement over
//! `json_each` (SQLite has no arrays). Imports and attempt records are written row by row inside one
//! transaction: SQLite's cost is the commit, not the statement.

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::address_key;
pub(super) use super::export::{
    SQLITE_EVIDENCE as EVIDENCE, SQLITE_POSTAL as POSTAL, sqlite_evidence as evidence_row,
    sqlite_transaction as export_transaction,
};
use super::portable::{DbList, RECIPIENT_COLUMNS, SENT_SINCE, SHARED_ADDRESSES, lease_due};
use super::time::{DbTime, opt};
use super::*;

/// The deferred recipients of a campaign whose retry is due: PostgreSQL's SQL ($2, now, in ms here),
/// through recipients_retry_due as there. Public for the plan checks of tests/it/store_conformance.rs.
pub use super::postgres::DUE_RETRIES;

/// The queued recipients of a campaign after the claim position ($1 campaign, $2 and $3 the position's
/// deadline day and id, $4 the upper id bound of the released waves, $5 now in ms, $6 limit), earliest
/// deadline first, then in id order, through recipients_claim_order (as on PostgreSQL, see there).
pub const DUE_FRESH: &str = "SELECT id FROM recipients WHERE campaign_id = $1 \
     AND (deadline_day, id) > ($2, $3) AND id <= $4 AND status = 'queued' \
     AND (lease_expires_at IS NULL OR lease_expires_at <= $5) ORDER BY deadline_day, id LIMIT $6";

/// Nothing to lock before a wave's release: one writer at a time on SQLite, so nothing changes between
/// the count and the triggers.
pub(super) const RELEASE_LOCK: Option<&str> = None;

/// As PostgreSQL's, for replies that end with the id (Postfix's); the expression is the index's.
pub(super) const QUEUE_ID_MATCH: &str = "outcome = 'sent' AND instr(reply, 'queued as ') > 0 \
     AND substr(reply, instr(reply, 'queued as ') + 10) = $1";

/// One daemon per file: nothing to skip.
pub(super) const SKIP_LOCKED: &str = "";

/// Starts the counters of a wave with a fixed key range ($1 campaign, $2 wave, $3 first_id exclusive,
/// $4 last_id), counted once at release; returns its open members (see the PostgreSQL dialect; the
/// open-ended last wave's are counted the same way on both, in `portable.rs`).
pub(super) const WAVE_COUNT_RANGE: &str = "INSERT INTO wave_counters (campaign_id, wave_number, total, \
     queued, deferred, sent, failed, cancelled, bounced) \
     SELECT $1, $2, count(*), coalesce(sum(status = 'queued'), 0), coalesce(sum(status = 'deferred'), 0), \
            coalesce(sum(status = 'sent'), 0), coalesce(sum(status = 'failed'), 0), \
            coalesce(sum(status = 'cancelled'), 0), coalesce(sum(status = 'bounced'), 0) \
     FROM recipients WHERE campaign_id = $1 AND id > $3 AND id <= $4 AND channel = 'email' \
     RETURNING queued + deferred AS open";

/// `column IN` a [`DbList`] bound as `placeholder`: JSON text, read back as rows by `json_each`.
pub(super) fn in_list(placeholder: &str) -> String {
    format!("IN (SELECT value FROM json_each({placeholder}))")
}

/// One writer per SQLite file (see the module header), so max + 1 is not racy in practice. An
/// interrupted import leaves recipients pointing at an id it never recorded: skip those too.
pub(super) const NEXT_IMPORT_ID: &str = "SELECT max(coalesce((SELECT max(id) FROM imports), 0), \
     coalesce((SELECT max(import_id) FROM recipients), 0)) + 1";

/// A page of a campaign's recipients after an id ($1 campaign, $2 id).
pub(super) const PAGE_AFTER: &str = "campaign_id = $1 AND id > $2 ORDER BY id";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32, create: bool) -> Result<Self> {
        let shown = crate::config::redact_url(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Connect {
                url: shown.clone(),
                message: format!("not a valid SQLite URL ({e}); expected sqlite://FILE"),
            })?
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .log_statements(tracing::log::LevelFilter::Trace);
        let file = options.get_filename().to_path_buf();
        if !create && !file.exists() && file.to_str() != Some(":memory:") {
            return Err(StoreError::Schema(format!(
                "the database file {} does not exist: run `breach-notifier migrate` to create it (or check database.url)",
                file.display()
            )));
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect {
                url: shown,
                message: format!("{e}; check database.url and that its directory is writable"),
            })?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(super) async fn insert_recipients(
        &self,
        campaign_id: i64,
        rows: &[NewRecipient],
    ) -> Result<StoredBatch> {
        let mut tx = self.pool.begin().await?;
        let (mut inserted, mut email) = (0, 0);
        let mut addresses = Vec::new();
        for r in rows {
            let status = match r.channel {
                Channel::Email => RecipientStatus::Queued,
                Channel::Postal => RecipientStatus::Postal,
            };
            let added = sqlx::query(
                "INSERT INTO recipients (campaign_id, customer_id, email, first_name, last_name, locale, \
                 jurisdiction, electronic_consent, address1, address2, city, region, postal_code, country, \
                 attributes, channel, status, import_id, deadline_day) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                 $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
                 ON CONFLICT (campaign_id, customer_id) DO NOTHING",
            )
            .bind(campaign_id)
            .bind(&r.customer_id)
            .bind(&r.email)
            .bind(&r.first_name)
            .bind(&r.last_name)
            .bind(&r.locale)
            .bind(&r.jurisdiction)
            .bind(r.electronic_consent)
            .bind(&r.address1)
            .bind(&r.address2)
            .bind(&r.city)
            .bind(&r.region)
            .bind(&r.postal_code)
            .bind(&r.country)
            .bind(serde_json::Value::Object(r.attributes.clone()).to_string())
            .bind(r.channel)
            .bind(status)
            .bind(r.import_id)
            .bind(r.deadline_day)
            .execute(&mut *tx)
            .await
            .map_err(|e| foreign_key_to_unknown_campaign(e, campaign_id))?
            .rows_affected();
            inserted += added;
            if r.channel == Channel::Email {
                email += added;
            }
            if let Some(e) = r.email.as_deref().filter(|_| added == 1) {
                addresses.push(address_key(e));
            }
        }
        tx.commit().await?;
        Ok(StoredBatch::of(
            rows.len() as u64,
            inserted,
            email,
            addresses,
        ))
    }

    pub(super) async fn shared_addresses(&self, campaign_id: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(SHARED_ADDRESSES)
            .bind(campaign_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// A claim (see `Store::claim_batch`). Under a daily cap, this daemon is the only one: what it
    /// sent today and what it holds (`held_here`) are all that count.
    pub(super) async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim> {
        let mut limit = request.limit;
        if let Some(cap) = &request.daily_cap {
            let sent: i64 = sqlx::query_scalar(SENT_SINCE)
                .bind(request.campaign_id)
                .bind(bucket_of(cap.day_start))
                .fetch_one(&self.pool)
                .await?;
            let room = cap.room(sent as u64);
            if room == 0 {
                return Ok(Claim {
                    cursor: request.cursor,
                    cap_reached: true,
                    ..Claim::default()
                });
            }
            limit = limit.min(room.min(u64::from(u32::MAX)) as u32);
        }
        let mut tx = self.pool.begin().await?;
        let claim = lease_due!(
            tx,
            request,
            limit,
            audited!(
                "UPDATE recipients SET lease_owner = $4, lease_expires_at = $5 \
                 WHERE id IN ({DUE_RETRIES}) RETURNING {RECIPIENT_COLUMNS}"
            ),
            audited!(
                "UPDATE recipients SET lease_owner = $7, lease_expires_at = $8 \
                 WHERE id IN ({DUE_FRESH}) RETURNING {RECIPIENT_COLUMNS}"
            )
        );
        tx.commit().await?;
        Ok(claim)
    }

    pub(super) async fn release_leases(&self, instance: &str, ids: &[i64]) -> Result<u64> {
        Ok(sqlx::query(audited!(
            "UPDATE recipients SET lease_owner = NULL, lease_expires_at = NULL \
             WHERE id {} AND lease_owner = $2",
            in_list("$1")
        ))
        .bind(DbList(ids))
        .bind(instance)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Row by row in one transaction (SQLite's cost is the commit, not the statement).
    pub(super) async fn record_attempts(
        &self,
        instance: &str,
        records: &[AttemptRecord],
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut changed = 0;
        for r in records {
            let (status, retry_at, reason) = r.next.columns();
            sqlx::query(
                "INSERT INTO delivery_attempts (recipient_id, campaign_id, attempt, instance, \
                 started_at, finished_at, outcome, smtp_code, reply, message_id) \
                 SELECT $1, $2, attempts + 1, $3, $4, $5, $6, $7, $8, $9 FROM recipients WHERE id = $1",
            )
            .bind(r.recipient_id)
            .bind(r.campaign_id)
            .bind(instance)
            .bind(DbTime(r.started_at))
            .bind(DbTime(r.finished_at))
            .bind(r.outcome)
            .bind(r.smtp_code)
            .bind(&r.reply)
            .bind(&r.message_id)
            .execute(&mut *tx)
            .await?;
            changed += sqlx::query(
                "UPDATE recipients SET \
                   status = CASE WHEN $2 = 'deferred' AND c.state = 'cancelled' THEN 'cancelled' ELSE $2 END, \
                   attempts = attempts + 1, \
                   next_attempt_at = coalesce($3, next_attempt_at), \
                   retry_due_at = CASE WHEN $2 = 'deferred' AND c.state <> 'cancelled' THEN $3 END, \
                   lease_owner = NULL, lease_expires_at = NULL, \
                   message_id = $5, last_code = $6, last_reply = $7, \
                   fail_reason = CASE WHEN $2 = 'deferred' AND c.state = 'cancelled' \
                                      THEN 'campaign cancelled' ELSE $4 END, \
                   postal_followup = postal_followup OR $2 = 'failed', \
                   first_attempt_at = coalesce(first_attempt_at, $8), \
                   finished_at = CASE WHEN $2 <> 'deferred' OR c.state = 'cancelled' THEN $9 END \
                 FROM (SELECT state FROM campaigns WHERE id = $10) AS c \
                 WHERE recipients.id = $1 AND lease_owner = $11",
            )
            .bind(r.recipient_id)
            .bind(status)
            .bind(opt(retry_at))
            .bind(reason)
            .bind(&r.message_id)
            .bind(r.smtp_code)
            .bind(&r.reply)
            .bind(DbTime(r.started_at))
            .bind(DbTime(r.finished_at))
            .bind(r.campaign_id)
            .bind(instance)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }
}
