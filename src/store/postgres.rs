//! The PostgreSQL store: production, where several daemons share one database.
//!
//! Claims use `FOR UPDATE SKIP LOCKED` so that daemons never wait on each other's batches; batch writes
//! use `unnest` over arrays so a batch of 500 outcomes is one statement, not 500 round trips. Counters
//! follow by statement-level triggers (see `migrations/postgres/`). Bulk imports COPY (binary), and
//! claims and a few aggregates run with their own planner settings. What both backends do with the
//! same SQL is in `portable.rs`; this file holds only what PostgreSQL does its own way.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::address_key;
pub(super) use super::export::{
    PG_EVIDENCE as EVIDENCE, PG_POSTAL as POSTAL, pg_evidence as evidence_row,
    pg_transaction as export_transaction,
};
use super::portable::{RECIPIENT_COLUMNS, SHARED_ADDRESSES, lease_due};
use super::*;

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Set as `application_name` inside each claim's transaction, so that shutdown can find and cancel
    /// this process's claims (and only them) in `pg_stat_activity`.
    claim_tag: std::sync::Arc<str>,
}

/// A claim normally takes milliseconds; one that runs this long has a plan reading the campaign, and
/// becomes an error the dispatcher logs and retries instead of a stall.
pub const CLAIM_TIMEOUT_MS: u32 = 10_000;

impl PgStore {
    pub async fn connect(url: &str, password: Option<&str>, max_connections: u32) -> Result<Self> {
        let shown = crate::config::redact_url(url);
        let mut options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Connect {
            url: shown.clone(),
            message: format!(
                "not a valid PostgreSQL URL ({e}); expected postgres://USER@HOST:PORT/DATABASE"
            ),
        })?;
        if let Some(password) = password {
            options = options.password(password);
        }
        options = options
            .application_name("breach-notifier")
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(
                tracing::log::LevelFilter::Warn,
                std::time::Duration::from_secs(5),
            );
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Connect {
                url: shown,
                message: format!(
                    "{e}; check database.url and that PostgreSQL is running and reachable"
                ),
            })?;
        let claim_tag = format!("breach-notifier claim {:016x}", rand::random::<u64>()).into();
        Ok(Self { pool, claim_tag })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The `application_name` this process's claims run under (see [`CLAIM_SETTINGS`]).
    pub fn claim_tag(&self) -> &str {
        &self.claim_tag
    }

    /// Stores a prepared batch. Fast path: the batch (repeats within it already dropped) is COPYed
    /// straight into recipients, the fastest way into PostgreSQL. A customer the campaign already has
    /// makes the COPY fail on the unique key (at once, for a re-imported list); the batch then takes the
    /// merging path, which counts it as a duplicate.
    pub(super) async fn insert_copy(
        &self,
        campaign_id: i64,
        rows: u64,
        batch: CopyBatch,
    ) -> Result<StoredBatch> {
        let mut tx = self.pool.begin().await?;
        asynchronous_commit(&mut tx).await?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY recipients ({COPY_COLUMNS}) FROM STDIN WITH (FORMAT binary)"
            ))
            .await?;
        copy.send(batch.data.as_slice()).await?;
        match copy.finish().await {
            Ok(inserted) => {
                tx.commit().await?;
                Ok(StoredBatch::of(
                    rows,
                    inserted,
                    batch.email,
                    batch.addresses,
                ))
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                drop(tx);
                self.insert_copy_merging(campaign_id, rows, &batch).await
            }
            Err(e) => Err(foreign_key_to_unknown_campaign(e, campaign_id)),
        }
    }

    /// The slow path: the same COPY data into a per-connection staging table, then one INSERT …
    /// SELECT … ON CONFLICT DO NOTHING, which makes a repeated customer a counted duplicate instead of
    /// an error whatever runs concurrently. `ord` (numbered as the rows arrive) keeps file order, so
    /// queue order (ids) follows the list.
    async fn insert_copy_merging(
        &self,
        campaign_id: i64,
        rows: u64,
        batch: &CopyBatch,
    ) -> Result<StoredBatch> {
        let mut tx = self.pool.begin().await?;
        asynchronous_commit(&mut tx).await?;
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS bn_staging_v3 (campaign_id BIGINT, customer_id TEXT, \
             email TEXT, first_name TEXT, last_name TEXT, locale TEXT, jurisdiction TEXT, \
             electronic_consent BOOLEAN, address1 TEXT, address2 TEXT, city TEXT, region TEXT, \
             postal_code TEXT, country TEXT, attributes JSON, channel TEXT, status TEXT, import_id BIGINT, \
             deadline_day INTEGER, ord BIGINT GENERATED ALWAYS AS IDENTITY) ON COMMIT DELETE ROWS",
        )
        .execute(&mut *tx)
        .await?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY bn_staging_v3 ({COPY_COLUMNS}) FROM STDIN WITH (FORMAT binary)"
            ))
            .await?;
        copy.send(batch.data.as_slice()).await?;
        copy.finish().await?;
        let stored: Vec<(String, Option<String>)> = sqlx::query_as(audited!(
            "INSERT INTO recipients ({COPY_COLUMNS}) SELECT {COPY_COLUMNS} FROM bn_staging_v3 \
             ORDER BY ord ON CONFLICT (campaign_id, customer_id) DO NOTHING RETURNING channel, email"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| foreign_key_to_unknown_campaign(e, campaign_id))?;
        tx.commit().await?;
        let inserted = stored.len() as u64;
        let email = stored.iter().filter(|(c, _)| c.as_str() == "email").count() as u64;
        let addresses = stored
            .iter()
            .filter_map(|(_, e)| e.as_deref().map(address_key))
            .collect();
        Ok(StoredBatch::of(rows, inserted, email, addresses))
    }

    pub(super) async fn shared_addresses(&self, campaign_id: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // Once the table's statistics know the campaign is large, the planner JIT-compiles this
        // aggregate: measured at 1,000,000 recipients, 7 s with JIT against 1.3 s without.
        sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
        let n: i64 = sqlx::query_scalar(SHARED_ADDRESSES)
            .bind(campaign_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n as u64)
    }

    /// A claim (see `Store::claim_batch`) in its own transaction with the claim's settings.
    pub(super) async fn claim(&self, request: &ClaimRequest<'_>) -> Result<Claim> {
        let mut tx = self.claim_transaction().await?;
        let claim = match &request.daily_cap {
            None => claim_in(&mut tx, request, request.limit).await?,
            Some(cap) => claim_capped(&mut tx, request, cap).await?,
        };
        tx.commit().await?;
        Ok(claim)
    }

    /// A transaction with the claim's planner settings, statement timeout and tag.
    async fn claim_transaction(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(CLAIM_SETTINGS)
            .bind(&*self.claim_tag)
            .bind(CLAIM_TIMEOUT_MS.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// A claim under a daily cap that holds for the cluster: claims of one capped campaign take turns
/// (a lock on the campaign's row, which nothing but state changes writes); each sees what was sent
/// today and what every live daemon holds (`campaign_holds`), claims at most the rest, and records
/// what this daemon now holds, all in the claim's transaction.
async fn claim_capped(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    request: &ClaimRequest<'_>,
    cap: &DailyCap,
) -> Result<Claim> {
    let (campaign_id, instance) = (request.campaign_id, request.instance);
    sqlx::query("SELECT id FROM campaigns WHERE id = $1 FOR NO KEY UPDATE")
        .bind(campaign_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "DELETE FROM campaign_holds h WHERE h.campaign_id = $1 AND h.instance <> $2 \
         AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = h.instance \
                         AND i.heartbeat_at > $3 AND i.stopped_at IS NULL)",
    )
    .bind(campaign_id)
    .bind(instance)
    .bind(cap.live_since)
    .execute(&mut **tx)
    .await?;
    let used: i64 = sqlx::query_scalar(
        "SELECT coalesce((SELECT sum(sent) FROM send_buckets \
                          WHERE campaign_id = $1 AND bucket >= $2), 0)::bigint \
              + coalesce((SELECT sum(held) FROM campaign_holds \
                          WHERE campaign_id = $1 AND instance <> $3), 0)::bigint",
    )
    .bind(campaign_id)
    .bind(bucket_of(cap.day_start))
    .bind(instance)
    .fetch_one(&mut **tx)
    .await?;
    let room = cap.room(used as u64);
    let mut claim = Claim {
        cursor: request.cursor,
        cap_reached: room == 0,
        ..Claim::default()
    };
    if room > 0 {
        let limit = request.limit.min(room.min(u64::from(u32::MAX)) as u32);
        claim = claim_in(tx, request, limit).await?;
    }
    sqlx::query(
        "INSERT INTO campaign_holds (campaign_id, instance, held) VALUES ($1, $2, $3) \
         ON CONFLICT (campaign_id, instance) DO UPDATE SET held = EXCLUDED.held",
    )
    .bind(campaign_id)
    .bind(instance)
    .bind((cap.held_here + claim.recipients.len() as u64) as i64)
    .execute(&mut **tx)
    .await?;
    Ok(claim)
}

/// Claims up to `limit` due recipients of one campaign in `tx`: retries first, then fresh rows in
/// claim order from the position. Rows leased by others are skipped; if their owner dies, they are
/// found again when the caller restarts the scan from the start.
async fn claim_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    request: &ClaimRequest<'_>,
    limit: u32,
) -> Result<Claim> {
    let columns = prefixed("r", RECIPIENT_COLUMNS);
    Ok(lease_due!(
        *tx,
        request,
        limit,
        audited!(
            "WITH due AS ({DUE_RETRIES} FOR UPDATE SKIP LOCKED) UPDATE recipients r \
             SET lease_owner = $4, lease_expires_at = $5 FROM due WHERE r.id = due.id RETURNING {columns}"
        ),
        audited!(
            "WITH due AS ({DUE_FRESH} FOR UPDATE SKIP LOCKED) UPDATE recipients r \
             SET lease_owner = $7, lease_expires_at = $8 FROM due WHERE r.id = due.id RETURNING {columns}"
        )
    ))
}

impl PgStore {
    pub(super) async fn release_leases(&self, instance: &str, ids: &[i64]) -> Result<u64> {
        let released: i64 = sqlx::query_scalar(audited!(
            "WITH changed AS (UPDATE recipients SET lease_owner = NULL, lease_expires_at = NULL \
                              WHERE id = ANY($1) AND lease_owner = $2 RETURNING campaign_id), \
             {} SELECT count(*) FROM changed",
            lower_holds("$2")
        ))
        .bind(ids)
        .bind(instance)
        .fetch_one(&self.pool)
        .await?;
        Ok(released as u64)
    }

    pub(super) async fn record_attempts(
        &self,
        instance: &str,
        records: &[AttemptRecord],
    ) -> Result<u64> {
        let ids: Vec<i64> = records.iter().map(|r| r.recipient_id).collect();
        let campaigns: Vec<i64> = records.iter().map(|r| r.campaign_id).collect();
        let started: Vec<DateTime<Utc>> = records.iter().map(|r| r.started_at).collect();
        let finished: Vec<DateTime<Utc>> = records.iter().map(|r| r.finished_at).collect();
        let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
        let codes: Vec<Option<i32>> = records.iter().map(|r| r.smtp_code).collect();
        let replies: Vec<Option<String>> = records.iter().map(|r| r.reply.clone()).collect();
        let message_ids: Vec<String> = records.iter().map(|r| r.message_id.clone()).collect();
        // Status, retry time and failure reason per record: the recipients' next states.
        let next: Vec<_> = records.iter().map(|r| r.next.columns()).collect();
        let statuses: Vec<&str> = next.iter().map(|n| n.0.as_str()).collect();
        let retry_at: Vec<Option<DateTime<Utc>>> = next.iter().map(|n| n.1).collect();
        let reasons: Vec<Option<&str>> = next.iter().map(|n| n.2).collect();

        let mut tx = self.pool.begin().await?;
        // The attempt number is the recipient's count so far plus one, read in the same statement.
        sqlx::query(
            "INSERT INTO delivery_attempts (recipient_id, campaign_id, attempt, instance, started_at, \
             finished_at, outcome, smtp_code, reply, message_id) \
             SELECT u.id, u.campaign_id, r.attempts + 1, $1, u.started, u.finished, u.outcome, u.code, \
                    u.reply, u.message_id \
             FROM unnest($2::bigint[], $3::bigint[], $4::timestamptz[], $5::timestamptz[], $6::text[], \
                         $7::int[], $8::text[], $9::text[]) \
                  AS u(id, campaign_id, started, finished, outcome, code, reply, message_id) \
             JOIN recipients r ON r.id = u.id",
        )
        .bind(instance)
        .bind(&ids)
        .bind(&campaigns)
        .bind(&started)
        .bind(&finished)
        .bind(&outcomes)
        .bind(&codes)
        .bind(&replies)
        .bind(&message_ids)
        .execute(&mut *tx)
        .await?;
        // The recipients this daemon held leave its holds (`campaign_holds`, daily caps) in the same
        // statement, so other daemons never count a notice both as sent today and as held.
        let changed: i64 = sqlx::query_scalar(audited!(
            "WITH changed AS (UPDATE recipients r SET \
                 status = CASE WHEN u.status = 'deferred' AND c.state = 'cancelled' THEN 'cancelled' \
                               ELSE u.status END, \
                 attempts = r.attempts + 1, \
                 next_attempt_at = coalesce(u.retry_at, r.next_attempt_at), \
                 retry_due_at = CASE WHEN u.status = 'deferred' AND c.state <> 'cancelled' \
                                     THEN u.retry_at END, \
                 lease_owner = NULL, lease_expires_at = NULL, \
                 message_id = u.message_id, last_code = u.code, last_reply = u.reply, \
                 fail_reason = CASE WHEN u.status = 'deferred' AND c.state = 'cancelled' \
                                    THEN 'campaign cancelled' ELSE u.reason END, \
                 postal_followup = r.postal_followup OR u.status = 'failed', \
                 first_attempt_at = coalesce(r.first_attempt_at, u.started), \
                 finished_at = CASE WHEN u.status <> 'deferred' OR c.state = 'cancelled' \
                                    THEN u.finished END \
             FROM unnest($2::bigint[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::int[], \
                         $8::text[], $9::timestamptz[], $10::timestamptz[]) \
                  AS u(id, status, retry_at, reason, message_id, code, reply, started, finished), \
                  campaigns c \
             WHERE r.id = u.id AND r.lease_owner = $1 AND c.id = r.campaign_id \
             RETURNING r.campaign_id), {} SELECT count(*) FROM changed",
            lower_holds("$1")
        ))
        .bind(instance)
        .bind(&ids)
        .bind(&statuses)
        .bind(&retry_at)
        .bind(&reasons)
        .bind(&message_ids)
        .bind(&codes)
        .bind(&replies)
        .bind(&started)
        .bind(&finished)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(changed as u64)
    }

    pub(super) async fn analyze_recipients(&self) -> Result<()> {
        sqlx::query("ANALYZE recipients")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn cancel_claims(&self) -> Result<u64> {
        let cancelled: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .bind(&*self.claim_tag)
        .fetch_all(&self.pool)
        .await?;
        Ok(cancelled.into_iter().filter(|c| *c).count() as u64)
    }
}

/// Lets this transaction's commit return before its WAL reaches the disk. Used for the batches of
/// a bulk insert: the import's closing `imports` record is committed durably afterwards, and WAL is
/// flushed in order, so once the import reports its result every batch is on disk too. A crash
/// before that loses at most the last moments of an import that never reported success, and
/// importing the same file again adds exactly what is missing. Saves a disk flush per batch.
async fn asynchronous_commit(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<()> {
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A CTE lowering this daemon's holds (`campaign_holds`, daily caps) by the rows of a CTE named
/// `changed` that returns their `campaign_id`; `instance` is the placeholder bound to the daemon's id.
/// Only capped campaigns have a row to lower.
fn lower_holds(instance: &str) -> String {
    format!(
        "lowered AS (UPDATE campaign_holds h SET held = greatest(h.held - c.n, 0) \
         FROM (SELECT campaign_id, count(*) AS n FROM changed GROUP BY campaign_id) c \
         WHERE h.campaign_id = c.campaign_id AND h.instance = {instance} RETURNING 1)"
    )
}

/// The recipients columns a batch's COPY data holds, in order.
const COPY_COLUMNS: &str = "campaign_id, customer_id, email, first_name, last_name, locale, \
    jurisdiction, electronic_consent, address1, address2, city, region, postal_code, country, \
    attributes, channel, status, import_id, deadline_day";

/// A batch of recipients encoded as `COPY … (FORMAT binary)` data ([`COPY_COLUMNS`]), repeats within
/// the batch dropped (the first stays). Binary rather than CSV: PostgreSQL then has no CSV to parse
/// (about a tenth of the load's time, measured on 1,000,000 rows) and we have no quoting to do.
#[derive(Debug)]
pub(super) struct CopyBatch {
    data: Vec<u8>,
    /// Of the rows encoded, how many are to be emailed.
    email: u64,
    /// The address keys of the rows encoded (those with an address): stored if the COPY succeeds.
    addresses: Vec<u128>,
}

impl CopyBatch {
    /// Encodes without copying a field: an import encodes every row it stores, and this runs on its
    /// parsing thread (see [`super::PreparedRecipients`]). The format: a signature, flags and
    /// header-extension length, then per row the number of fields and each field as a 32-bit length
    /// (-1: NULL) and its bytes (text as UTF-8, bigint as 8 bytes, boolean as 1), all big-endian, and
    /// -1 as the trailer.
    pub(super) fn encode(campaign_id: i64, rows: &[NewRecipient]) -> Result<CopyBatch> {
        const FIELDS: i16 = 19;
        fn text(v: &Option<String>) -> Option<&[u8]> {
            v.as_deref().map(str::as_bytes)
        }
        let mut seen = std::collections::HashSet::with_capacity(rows.len());
        let mut data = Vec::with_capacity(rows.len() * 320);
        data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        data.extend_from_slice(&0i32.to_be_bytes());
        data.extend_from_slice(&0i32.to_be_bytes());
        let mut email = 0;
        let mut addresses = Vec::with_capacity(rows.len());
        let mut attributes = Vec::with_capacity(256);
        for r in rows {
            if !seen.insert(r.customer_id.as_str()) {
                continue;
            }
            let status = match r.channel {
                Channel::Email => {
                    email += 1;
                    RecipientStatus::Queued
                }
                Channel::Postal => RecipientStatus::Postal,
            };
            if let Some(e) = &r.email {
                addresses.push(address_key(e));
            }
            attributes.clear();
            serde_json::to_writer(&mut attributes, &r.attributes)
                .map_err(|e| StoreError::Corrupt(format!("encoding attributes for COPY: {e}")))?;
            data.extend_from_slice(&FIELDS.to_be_bytes());
            let mut field = |bytes: Option<&[u8]>| match bytes {
                Some(b) => {
                    data.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    data.extend_from_slice(b);
                }
                None => data.extend_from_slice(&(-1i32).to_be_bytes()),
            };
            field(Some(&campaign_id.to_be_bytes()));
            field(Some(r.customer_id.as_bytes()));
            field(text(&r.email));
            field(text(&r.first_name));
            field(text(&r.last_name));
            field(text(&r.locale));
            field(text(&r.jurisdiction));
            field(Some(&[u8::from(r.electronic_consent)]));
            field(text(&r.address1));
            field(text(&r.address2));
            field(text(&r.city));
            field(text(&r.region));
            field(text(&r.postal_code));
            field(text(&r.country));
            field(Some(&attributes));
            field(Some(r.channel.as_str().as_bytes()));
            field(Some(status.as_str().as_bytes()));
            field(r.import_id.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
            field(Some(&r.deadline_day.to_be_bytes()));
        }
        data.extend_from_slice(&(-1i16).to_be_bytes());
        Ok(CopyBatch {
            data,
            email,
            addresses,
        })
    }
}

/// The deferred recipients of a campaign whose retry is due ($1 campaign, $2 now, $3 limit), the
/// longest waiting first, through recipients_retry_due: a partial index that only rows waiting for a
/// retry enter. Migration 6 made it lead with campaign_id: with retry_due_at alone, PostgreSQL read
/// this through recipients_campaign_id instead, every recipient of the campaign on every claim,
/// whenever its statistics had not seen the campaign yet (docs/benchmarks.md). Public for the plan
/// checks of tests/it/store_conformance.rs.
pub const DUE_RETRIES: &str = "SELECT id FROM recipients WHERE campaign_id = $1 AND retry_due_at <= $2 \
     AND status = 'deferred' AND (lease_expires_at IS NULL OR lease_expires_at <= $2) \
     ORDER BY retry_due_at LIMIT $3";

/// The queued recipients of a campaign after the claim position ($1 campaign, $2 and $3 the position's
/// deadline day and id, $4 the upper id bound of the released waves, $5 now, $6 limit), earliest
/// deadline first, then in id order, through recipients_claim_order (migration 14): a partial index of
/// the queue, walked from the position and stopped after LIMIT rows. The row comparison
/// `(deadline_day, id) > ($2, $3)` is the walk's start key; the waves' bound on the id is checked on
/// the index entries on the way (a first wave of 1 % skips about 99 entries for each of its rows).
/// The campaign is compared as `= ANY (ARRAY[$1])` and the order is `campaign_id, deadline_day, id` on
/// purpose: `= ANY` makes no constant of `campaign_id` for the planner, so that only the index gives
/// the order, and nbtree still treats it as an equality, so the walk stays within the campaign. The
/// claim plans it with its parameters (`plan_cache_mode`, see `claim`): a generic plan cannot see that
/// the position is the start of the queue. Public for the plan checks of tests/it/store_conformance.rs.
pub const DUE_FRESH: &str = "SELECT id FROM recipients WHERE campaign_id = ANY (ARRAY[$1::bigint]) \
     AND (deadline_day, id) > ($2, $3) AND id <= $4 AND status = 'queued' \
     AND (lease_expires_at IS NULL OR lease_expires_at <= $5) ORDER BY campaign_id, deadline_day, id LIMIT $6";

/// What a claim's transaction may do, set in one round trip ($1 the claim tag, $2 the timeout in ms),
/// so that the claims read only the rows they return plus the rows they skip, at any size and whatever
/// the planner's statistics know:
/// - `plan_cache_mode`: planned with this claim's values every time. After five executions PostgreSQL
///   may otherwise keep a generic plan, made without knowing the cursor, and the one it makes for
///   DUE_FRESH walks the primary key (see there). Planning a claim costs a fraction of a millisecond.
/// - `enable_seqscan`, `enable_bitmapscan`, `enable_sort` off: the plans left are the index walks
///   in the order each claim asks for (recipients_campaign_id for fresh rows, recipients_retry_due
///   for retries), which stop after LIMIT rows. Right after a bulk load, with no statistics for the
///   new rows, PostgreSQL estimated a campaign of 15,000,000 at a handful of rows and chose a bitmap
///   scan of all of them and a sort: 40 s for every 500 claimed. An ANALYZE after each import
///   (`Store::analyze_recipients`) fixes the estimates, but the plan must not depend on them. These
///   settings only price the other plans out: a query with no other plan still runs.
/// - `statement_timeout`: a claim that is slow anyway becomes a logged error and a retry.
/// - `application_name`: the tag `cancel_claims` looks for at shutdown. `SET LOCAL`-like
///   (`set_config(…, true)`): everything reverts when the transaction ends.
pub const CLAIM_SETTINGS: &str = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), \
     set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), \
     set_config('enable_sort', 'off', true), set_config('statement_timeout', $2, true), \
     set_config('application_name', $1, true)";

/// The delivery attempts whose relay reply says `queued as $1` (index delivery_attempts_relay_queue_id).
pub(super) const QUEUE_ID_MATCH: &str =
    "outcome = 'sent' AND substring(reply from 'queued as ([0-9A-Za-z]+)') = $1";

/// Lets daemons lease different bounce reports without waiting on each other.
pub(super) const SKIP_LOCKED: &str = "FOR UPDATE SKIP LOCKED";

/// Taken first by a wave's release: every insert and status change of the campaign updates its
/// campaign_counters row, so holding that row's lock, no change can fall between the count below and
/// the wave_counters triggers.
pub(super) const RELEASE_LOCK: Option<&str> =
    Some("SELECT 1 FROM campaign_counters WHERE campaign_id = $1 FOR UPDATE");

/// Starts the counters of a wave with a fixed key range ($1 campaign, $2 wave, $3 first_id exclusive,
/// $4 last_id): counted once, at release, through recipients_campaign_id. Returns its open members.
pub(super) const WAVE_COUNT_RANGE: &str = "INSERT INTO wave_counters (campaign_id, wave_number, total, queued, \
     deferred, sent, failed, cancelled, bounced) \
     SELECT $1, $2, count(*), count(*) FILTER (WHERE status = 'queued'), \
            count(*) FILTER (WHERE status = 'deferred'), count(*) FILTER (WHERE status = 'sent'), \
            count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'cancelled'), \
            count(*) FILTER (WHERE status = 'bounced') \
     FROM recipients WHERE campaign_id = $1 AND id > $3 AND id <= $4 AND channel = 'email' \
     RETURNING queued + deferred AS open";

/// `column IN` a [`DbList`](super::portable::DbList) bound as `placeholder`: an array.
pub(super) fn in_list(placeholder: &str) -> String {
    format!("= ANY({placeholder})")
}

/// A sequence hands out import ids, whatever other daemons do meanwhile.
pub(super) const NEXT_IMPORT_ID: &str = "SELECT nextval(pg_get_serial_sequence('imports', 'id'))";

/// A page of a campaign's recipients after an id ($1 campaign, $2 id), written as DUE_FRESH is, so
/// that the first page does not walk earlier campaigns' ids.
pub(super) const PAGE_AFTER: &str =
    "campaign_id = ANY (ARRAY[$1::bigint]) AND id > $2 ORDER BY campaign_id, id";

/// `a, b` with prefix `r` becomes `r.a, r.b` (keeping `AS` aliases and casts intact).
fn prefixed(prefix: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{prefix}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}
