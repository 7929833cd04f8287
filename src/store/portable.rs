//! The store operations whose SQL is the same on both backends, written once. Each body is compiled
//! for both pools by [`with_pool!`]: one SQL text with `$N` placeholders (sqlx's SQLite binds `$N` by
//! number), times as [`DbTime`], rows through `FromRow` and the text enums through their `sqlx::Type`.
//! A batch of ids is one [`DbList`] parameter, compared with the dialect's `in_list`. What really
//! differs (claims, bulk inserts, batch writes, planner settings) stays in
//! [`postgres`](super::postgres) and [`sqlite`](super::sqlite).

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo};
use sqlx::{Encode, Postgres, Sqlite, Type};

use super::schema::{AppliedMigration, absent_table_is_none};
use super::time::DbTime;
use super::*;

/// A list of values bound as one parameter, for the dialect's `in_list` (`column = ANY($1)` or
/// `column IN (SELECT value FROM json_each($1))`): an array on PostgreSQL, JSON text on SQLite, which
/// has no arrays.
#[derive(Debug, Clone, Copy)]
pub(super) struct DbList<'a, T>(pub &'a [T]);

impl<T: PgHasArrayType> Type<Postgres> for DbList<'_, T> {
    fn type_info() -> PgTypeInfo {
        <[T] as Type<Postgres>>::type_info()
    }
}

impl<'q, T: Encode<'q, Postgres> + Type<Postgres>> Encode<'q, Postgres> for DbList<'_, T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&[T] as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<T> Type<Sqlite> for DbList<'_, T> {
    fn type_info() -> SqliteTypeInfo {
        <str as Type<Sqlite>>::type_info()
    }
}

impl<T: Serialize> Encode<'_, Sqlite> for DbList<'_, T> {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(serde_json::to_string(self.0)?, buf)
    }
}

/// The `campaigns` columns a [`Campaign`] reads.
pub(super) const CAMPAIGN_COLUMNS: &str = "id, name, state, definition, content_hash, \
    email_without_consent, discovered_at, determined_at, supplements, state_reason, created_at, \
    updated_at, started_at, finished_at";

/// The `recipients` columns a [`Recipient`] reads.
pub(super) const RECIPIENT_COLUMNS: &str = "id, campaign_id, deadline_day, customer_id, email, first_name, \
    last_name, locale, jurisdiction, electronic_consent, address1, address2, city, region, \
    postal_code, country, attributes, channel, status, attempts, next_attempt_at, retry_due_at, \
    lease_owner, lease_expires_at, message_id, last_code, last_reply, fail_reason, postal_followup, \
    first_attempt_at, finished_at";

/// The `delivery_attempts` columns an [`Attempt`] reads.
pub(super) const ATTEMPT_COLUMNS: &str = "id, recipient_id, campaign_id, attempt, instance, \
    started_at, finished_at, outcome, smtp_code, reply, message_id";

/// Notices of a campaign sent from a send bucket on ($1 campaign, $2 first bucket): a daily cap's
/// count. Whole buckets, at most 8,640 a day.
pub(super) const SENT_SINCE: &str = "SELECT CAST(coalesce(sum(sent), 0) AS BIGINT) FROM send_buckets \
     WHERE campaign_id = $1 AND bucket >= $2";

/// How many email addresses more than one customer of a campaign ($1) shares.
pub(super) const SHARED_ADDRESSES: &str = "SELECT count(*) FROM (SELECT lower(email) FROM recipients \
     WHERE campaign_id = $1 AND email IS NOT NULL GROUP BY lower(email) HAVING count(*) > 1) AS shared";

/// A campaign event that is not a state change (from and to the campaign's current state): $1
/// campaign, $2 time, $3 actor, $4 reason.
pub(super) const INSERT_EVENT: &str = "INSERT INTO campaign_events (campaign_id, at, from_state, \
     to_state, actor, reason) SELECT id, $2, state, state, $3, $4 FROM campaigns WHERE id = $1";

/// Starts the counters of the open-ended last wave ($1 campaign, $2 wave) without reading its
/// members: the released waves' ranges follow one another from id 0, so this one holds every email
/// recipient of the campaign that the others do not. Email recipients are the campaign's counters
/// less its postal ones (a postal-channel row never has another status). Returns its open members.
const WAVE_COUNT_REST: &str = "INSERT INTO wave_counters (campaign_id, wave_number, total, queued, \
     deferred, sent, failed, cancelled, bounced) \
     SELECT $1, $2, c.total - c.postal - o.total, c.queued - o.queued, c.deferred - o.deferred, \
            c.sent - o.sent, c.failed - o.failed, c.cancelled - o.cancelled, c.bounced - o.bounced \
     FROM campaign_counters c, \
          (SELECT coalesce(sum(total), 0) AS total, coalesce(sum(queued), 0) AS queued, \
                  coalesce(sum(deferred), 0) AS deferred, coalesce(sum(sent), 0) AS sent, \
                  coalesce(sum(failed), 0) AS failed, coalesce(sum(cancelled), 0) AS cancelled, \
                  coalesce(sum(bounced), 0) AS bounced \
           FROM wave_counters WHERE campaign_id = $1) o \
     WHERE c.campaign_id = $1 \
     RETURNING queued + deferred AS open";

impl StoredBatch {
    /// A batch of `rows` of which the backend stored `inserted` (`email` of them to be emailed, the
    /// rest by letter); the others were customers the campaign already had: duplicates.
    pub(super) fn of(rows: u64, inserted: u64, email: u64, addresses: Vec<u128>) -> StoredBatch {
        StoredBatch {
            outcome: InsertOutcome {
                inserted,
                duplicates: rows - inserted,
                email,
                postal: inserted - email,
            },
            addresses,
        }
    }
}

/// Leases up to `$limit` due recipients of a claim (`$request`) on the connection `$conn`: retries
/// first, through the dialect's statement `$retries` over its `DUE_RETRIES` ($1 campaign, $2 now, $3
/// limit, $4 instance, $5 lease end), then fresh rows in claim order from the cursor, through `$fresh`
/// over its `DUE_FRESH` ($1 campaign, $2 and $3 the cursor, $4 the waves' upper bound, $5 now, $6
/// limit, $7 instance, $8 lease end). Evaluates to the [`Claim`]. A macro, as `with_pool!` is: one
/// body for either backend's connection, which only the statements' locking differs for.
macro_rules! lease_due {
    ($conn:expr, $request:expr, $limit:expr, $retries:expr, $fresh:expr) => {{
        let (request, limit): (&ClaimRequest<'_>, u32) = ($request, $limit);
        let now = $crate::store::time::DbTime(request.now);
        let until = $crate::store::time::DbTime(request.until());
        let retries: Vec<Recipient> = sqlx::query_as($retries)
            .bind(request.campaign_id)
            .bind(now)
            .bind(i64::from(limit))
            .bind(request.instance)
            .bind(until)
            .fetch_all(&mut *$conn)
            .await?;
        let remaining = i64::from(limit) - retries.len() as i64;
        let mut fresh = Vec::new();
        if remaining > 0 {
            fresh = sqlx::query_as($fresh)
                .bind(request.campaign_id)
                .bind(request.cursor.deadline_day)
                .bind(request.cursor.id)
                .bind(request.upper)
                .bind(now)
                .bind(remaining)
                .bind(request.instance)
                .bind(until)
                .fetch_all(&mut *$conn)
                .await?;
        }
        Claim::from_leased(retries, fresh, remaining, request.cursor)
    }};
}
pub(super) use lease_due;

impl Store {
    pub(super) async fn applied_migrations(&self) -> Result<Option<Vec<AppliedMigration>>> {
        with_pool!(self, pool => {
            let rows = sqlx::query_as(
                "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(pool)
            .await;
            absent_table_is_none(rows)
        })
    }

    pub async fn create_campaign(&self, c: &NewCampaign, actor: &str) -> Result<i64> {
        let id: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(
                "INSERT INTO campaigns (name, definition, content_hash, email_without_consent, \
                 discovered_at, determined_at, supplements, change_actor) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(&c.name)
            .bind(&c.definition)
            .bind(&c.content_hash)
            .bind(c.email_without_consent)
            .bind(c.discovered_at)
            .bind(c.determined_at)
            .bind(c.supplements)
            .bind(actor)
            .fetch_one(pool)
            .await?
        });
        if let Store::Postgres(s) = self {
            // The insert trigger has read the actor; clear the mailbox (SQLite's trigger does).
            sqlx::query("UPDATE campaigns SET change_actor = NULL WHERE id = $1")
                .bind(id)
                .execute(s.pool())
                .await?;
        }
        Ok(id)
    }

    pub async fn campaign(&self, id: i64) -> Result<Option<Campaign>> {
        with_pool!(self, pool => Ok(sqlx::query_as(audited!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn campaigns(&self) -> Result<Vec<Campaign>> {
        with_pool!(self, pool => Ok(sqlx::query_as(audited!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id"
        ))
        .fetch_all(pool)
        .await?))
    }

    /// Changes a campaign's state, recording actor and reason in `campaign_events`. The database
    /// refuses illegal transitions; this checks first to give the operator the allowed ones.
    pub async fn set_campaign_state(
        &self,
        id: i64,
        to: CampaignState,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<Campaign> {
        let current = self.require_campaign(id).await?;
        if !current.state.can_become(to) {
            return Err(StoreError::IllegalTransition {
                id,
                from: current.state,
                to,
                allowed: allowed_list(current.state),
            });
        }
        let done = with_pool!(self, pool => {
            sqlx::query(
                "UPDATE campaigns SET state = $3, change_actor = $4, change_reason = $5 \
                 WHERE id = $1 AND state = $2",
            )
            .bind(id)
            .bind(current.state)
            .bind(to)
            .bind(actor)
            .bind(reason)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if done == 0 {
            // Someone else changed the state between our read and this update.
            let now = self.require_campaign(id).await?;
            return Err(StoreError::IllegalTransition {
                id,
                from: now.state,
                to,
                allowed: allowed_list(now.state),
            });
        }
        self.require_campaign(id).await
    }

    pub async fn campaign_events(&self, campaign_id: i64) -> Result<Vec<CampaignEvent>> {
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT id, campaign_id, at, from_state, to_state, actor, reason FROM campaign_events \
             WHERE campaign_id = $1 ORDER BY id",
        )
        .bind(campaign_id)
        .fetch_all(pool)
        .await?))
    }

    /// Stores the reconciliation of a finished import. The database refuses counts that do not add up.
    pub async fn record_import(&self, i: &ImportRecord) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO imports (id, campaign_id, source_name, sha256, rows_read, accepted, \
                 rejected, duplicates, email, postal, shared_addresses, actor, started_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(i.id)
            .bind(i.campaign_id)
            .bind(&i.source_name)
            .bind(&i.sha256)
            .bind(i.counts.read as i64)
            .bind(i.counts.accepted() as i64)
            .bind(i.counts.rejected as i64)
            .bind(i.counts.duplicates as i64)
            .bind(i.counts.email as i64)
            .bind(i.counts.postal as i64)
            .bind(i.shared_addresses as i64)
            .bind(&i.actor)
            .bind(DbTime(i.started_at))
            .bind(DbTime(i.finished_at))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The imports of a campaign, oldest first.
    pub async fn imports(&self, campaign_id: i64) -> Result<Vec<ImportRecord>> {
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT id, campaign_id, source_name, sha256, rows_read, rejected, duplicates, email, \
             postal, shared_addresses, actor, started_at, finished_at FROM imports \
             WHERE campaign_id = $1 ORDER BY id",
        )
        .bind(campaign_id)
        .fetch_all(pool)
        .await?))
    }

    pub async fn recipient(&self, id: i64) -> Result<Option<Recipient>> {
        with_pool!(self, pool => Ok(sqlx::query_as(audited!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn recipient_by_customer(
        &self,
        campaign_id: i64,
        customer_id: &str,
    ) -> Result<Option<Recipient>> {
        with_pool!(self, pool => Ok(sqlx::query_as(audited!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE campaign_id = $1 AND customer_id = $2"
        ))
        .bind(campaign_id)
        .bind(customer_id)
        .fetch_optional(pool)
        .await?))
    }

    /// Which of these customer ids the campaign already has (for dry runs).
    pub async fn existing_customers(
        &self,
        campaign_id: i64,
        customer_ids: &[String],
    ) -> Result<Vec<String>> {
        if customer_ids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, pool, dialect => Ok(sqlx::query_scalar(audited!(
            "SELECT customer_id FROM recipients WHERE campaign_id = $1 AND customer_id {}",
            dialect::in_list("$2")
        ))
        .bind(campaign_id)
        .bind(DbList(customer_ids))
        .fetch_all(pool)
        .await?))
    }

    /// Reserves the id of an import about to run, so its recipients can point at it.
    pub async fn next_import_id(&self) -> Result<i64> {
        with_pool!(self, pool, dialect => Ok(sqlx::query_scalar(dialect::NEXT_IMPORT_ID)
            .fetch_one(pool)
            .await?))
    }

    /// Up to `limit` recipients of a campaign with ids above `after_id`, in id order (for paging
    /// through a campaign with flat memory; the exports stream theirs in one query instead:
    /// [`Store::export_evidence`]).
    pub async fn recipients_after(
        &self,
        campaign_id: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Recipient>> {
        with_pool!(self, pool, dialect => Ok(sqlx::query_as(audited!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE {} LIMIT $3",
            dialect::PAGE_AFTER
        ))
        .bind(campaign_id)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?))
    }

    /// Extends the leases `instance` still holds on `ids`; returns how many it still held.
    pub async fn renew_leases(
        &self,
        instance: &str,
        ids: &[i64],
        until: DateTime<Utc>,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        with_pool!(self, pool, dialect => Ok(sqlx::query(audited!(
            "UPDATE recipients SET lease_expires_at = $3 WHERE id {} AND lease_owner = $2",
            dialect::in_list("$1")
        ))
        .bind(DbList(ids))
        .bind(instance)
        .bind(DbTime(until))
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// The attempts made for several recipients, in one query: ordered by recipient id, then oldest
    /// first. Ids with no attempt contribute nothing. (The exports read attempts with their
    /// recipients instead: [`Store::export_evidence`].)
    pub async fn attempts_for(&self, recipient_ids: &[i64]) -> Result<Vec<Attempt>> {
        if recipient_ids.is_empty() {
            return Ok(Vec::new());
        }
        with_pool!(self, pool, dialect => Ok(sqlx::query_as(audited!(
            "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE recipient_id {} \
             ORDER BY recipient_id, id",
            dialect::in_list("$1")
        ))
        .bind(DbList(recipient_ids))
        .fetch_all(pool)
        .await?))
    }

    /// A sample for pre-flight checks: the first recipient of every (locale, jurisdiction) pair present
    /// in the campaign, at most `limit` of them, in id order.
    pub async fn sample_recipients(&self, campaign_id: i64, limit: u32) -> Result<Vec<Recipient>> {
        // recipient_samples holds the first recipient of each pair, kept by a trigger as rows arrive
        // (migration 7): a handful of rows, where grouping the campaign took 17 s at 15,000,000.
        with_pool!(self, pool => Ok(sqlx::query_as(audited!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE id IN (SELECT recipient_id \
             FROM recipient_samples WHERE campaign_id = $1) ORDER BY id LIMIT $2"
        ))
        .bind(campaign_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?))
    }

    /// A campaign's waves, in order.
    pub async fn waves(&self, campaign_id: i64) -> Result<Vec<Wave>> {
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT campaign_id, number, size_spec, release_rule, hold_minutes, max_failure_rate, \
             max_deferral_rate, released_at, first_id, last_id, planned, finished_at FROM waves \
             WHERE campaign_id = $1 ORDER BY number",
        )
        .bind(campaign_id)
        .fetch_all(pool)
        .await?))
    }

    /// Stores a campaign's wave plan (once: existing rows are left as they are).
    pub async fn insert_waves(&self, waves: &[Wave]) -> Result<()> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for w in waves {
                sqlx::query(
                    "INSERT INTO waves (campaign_id, number, size_spec, release_rule, hold_minutes, \
                     max_failure_rate, max_deferral_rate) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (campaign_id, number) DO NOTHING",
                )
                .bind(w.campaign_id)
                .bind(w.number)
                .bind(w.size_spec)
                .bind(w.release_rule)
                .bind(w.hold_minutes as i32)
                .bind(w.max_failure_rate)
                .bind(w.max_deferral_rate)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Fixes a wave's members and marks it released (keeping an operator's earlier `released_at`), and
    /// starts its counters (`wave_counters`) in the same transaction. `planned` is the number of members
    /// when the caller counted them; `None` (the open-ended last wave) takes the open recipients the
    /// counters find. Returns false when its members were already fixed.
    pub async fn release_wave(
        &self,
        campaign_id: i64,
        number: i32,
        first_id: i64,
        last_id: Option<i64>,
        planned: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        with_pool!(self, pool, dialect => {
            let mut tx = pool.begin().await?;
            if let Some(lock) = dialect::RELEASE_LOCK {
                sqlx::query(lock).bind(campaign_id).execute(&mut *tx).await?;
            }
            let done = sqlx::query(
                "UPDATE waves SET released_at = coalesce(released_at, $6), first_id = $3, \
                 last_id = $4, planned = $5 WHERE campaign_id = $1 AND number = $2 \
                 AND first_id IS NULL",
            )
            .bind(campaign_id)
            .bind(number)
            .bind(first_id)
            .bind(last_id)
            .bind(planned.unwrap_or(0))
            .bind(DbTime(now))
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            let counted = match last_id {
                Some(last) => sqlx::query_scalar(dialect::WAVE_COUNT_RANGE)
                    .bind(campaign_id)
                    .bind(number)
                    .bind(first_id)
                    .bind(last),
                None => sqlx::query_scalar(WAVE_COUNT_REST)
                    .bind(campaign_id)
                    .bind(number),
            };
            let open: i64 = counted.fetch_one(&mut *tx).await?;
            if planned.is_none() {
                sqlx::query("UPDATE waves SET planned = $3 WHERE campaign_id = $1 AND number = $2")
                    .bind(campaign_id)
                    .bind(number)
                    .bind(open)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(true)
    }

    pub async fn finish_wave(
        &self,
        campaign_id: i64,
        number: i32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "UPDATE waves SET finished_at = $3 WHERE campaign_id = $1 AND number = $2 \
                 AND finished_at IS NULL",
            )
            .bind(campaign_id)
            .bind(number)
            .bind(DbTime(now))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The id of the `n`-th email recipient after `after_id` (or the last one, when fewer remain), and
    /// how many were counted.
    pub async fn nth_email_recipient(
        &self,
        campaign_id: i64,
        after_id: i64,
        n: i64,
    ) -> Result<Option<(i64, i64)>> {
        let (last, count): (Option<i64>, i64) = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT max(id), count(*) FROM (SELECT id FROM recipients WHERE campaign_id = $1 \
                 AND id > $2 AND channel = 'email' ORDER BY id LIMIT $3) AS w",
            )
            .bind(campaign_id)
            .bind(after_id)
            .bind(n)
            .fetch_one(pool)
            .await?
        });
        Ok(last.map(|id| (id, count)))
    }

    /// Email recipients of `(first_id, last_id]` still queued or deferred.
    pub async fn open_in_range(
        &self,
        campaign_id: i64,
        first_id: i64,
        last_id: Option<i64>,
    ) -> Result<u64> {
        let n: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT count(*) FROM recipients WHERE campaign_id = $1 AND id > $2 AND id <= $3 \
                 AND status IN ('queued', 'deferred')",
            )
            .bind(campaign_id)
            .bind(first_id)
            .bind(last_id.unwrap_or(i64::MAX))
            .fetch_one(pool)
            .await?
        });
        Ok(n as u64)
    }

    /// Email recipients of a released wave still queued or deferred, from its counters (0 for a wave
    /// not released).
    pub async fn wave_open(&self, campaign_id: i64, number: i32) -> Result<u64> {
        let open: Option<i64> = with_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT queued + deferred FROM wave_counters WHERE campaign_id = $1 \
                 AND wave_number = $2",
            )
            .bind(campaign_id)
            .bind(number)
            .fetch_optional(pool)
            .await?
        });
        Ok(open.unwrap_or(0) as u64)
    }

    /// Attempts for a wave's members finished since `since`, for its guards. Read from the 10-second
    /// send buckets, not the attempt log: whole buckets from the one that holds `since`, so up to 10 s
    /// of attempts before it may count.
    pub async fn wave_attempts(
        &self,
        campaign_id: i64,
        number: i32,
        since: DateTime<Utc>,
    ) -> Result<WaveAttempts> {
        let (total, permanent, sent): (i64, i64, i64) = with_pool!(self, pool => {
            sqlx::query_as(
                "SELECT CAST(coalesce(sum(attempts), 0) AS BIGINT), \
                 CAST(coalesce(sum(failed), 0) AS BIGINT), CAST(coalesce(sum(sent), 0) AS BIGINT) \
                 FROM send_buckets WHERE campaign_id = $1 AND wave_number = $2 AND bucket >= $3",
            )
            .bind(campaign_id)
            .bind(number)
            .bind(bucket_of(since))
            .fetch_one(pool)
            .await?
        });
        Ok(WaveAttempts::from_buckets(total, permanent, sent))
    }

    /// Notices of a campaign accepted (outcome `sent`) since `since`: what a daily cap counts. Read from
    /// the 10-second send buckets (at most 8,640 a day), so exact for a `since` on a 10-second
    /// boundary, such as midnight; otherwise whole buckets from the one that holds `since`.
    pub async fn sent_since(&self, campaign_id: i64, since: DateTime<Utc>) -> Result<u64> {
        let n: i64 = with_pool!(self, pool => {
            sqlx::query_scalar(SENT_SINCE)
                .bind(campaign_id)
                .bind(bucket_of(since))
                .fetch_one(pool)
                .await?
        });
        Ok(n as u64)
    }

    /// The `wave_progress` view for one campaign, in wave order.
    pub async fn wave_progress(&self, campaign_id: i64) -> Result<Vec<WaveProgress>> {
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT number, size_spec, release_rule, state, planned, total, queued, deferred, sent, \
             failed, cancelled, released_at, finished_at, sent_last_minute, sent_last_hour, \
             eta_seconds, last_change_at FROM wave_progress WHERE campaign_id = $1 ORDER BY number",
        )
        .bind(campaign_id)
        .fetch_all(pool)
        .await?))
    }

    /// Ends the open recipients of a cancelled campaign that nobody holds a live lease on (rows that
    /// were in flight when it was cancelled, released or abandoned since). Returns how many.
    pub async fn settle_cancelled(&self, campaign_id: i64, now: DateTime<Utc>) -> Result<u64> {
        with_pool!(self, pool => Ok(sqlx::query(
            "UPDATE recipients SET status = 'cancelled', retry_due_at = NULL, \
             fail_reason = 'campaign cancelled', finished_at = $2, lease_owner = NULL, \
             lease_expires_at = NULL \
             WHERE campaign_id = $1 AND status IN ('queued', 'deferred') \
             AND (lease_expires_at IS NULL OR lease_expires_at <= $2) \
             AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = $1 AND c.state = 'cancelled')",
        )
        .bind(campaign_id)
        .bind(DbTime(now))
        .execute(pool)
        .await?
        .rows_affected()))
    }

    /// `campaign_progress` for one campaign or all of them, in id order.
    pub async fn progress(&self, campaign_id: Option<i64>) -> Result<Vec<CampaignProgress>> {
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT campaign_id, name, state, total, queued, deferred, sent, failed, cancelled, \
             postal, bounced, last_change_at, sent_last_minute, sent_last_hour, eta_seconds \
             FROM campaign_progress WHERE CAST($1 AS BIGINT) IS NULL OR campaign_id = $1 \
             ORDER BY campaign_id",
        )
        .bind(campaign_id)
        .fetch_all(pool)
        .await?))
    }

    /// Announces or refreshes a running daemon.
    pub async fn heartbeat(&self, i: &InstanceInfo, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO instances (id, hostname, pid, version, started_at, heartbeat_at) \
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO UPDATE \
                 SET heartbeat_at = EXCLUDED.heartbeat_at, stopped_at = NULL",
            )
            .bind(&i.id)
            .bind(&i.hostname)
            .bind(i.pid)
            .bind(&i.version)
            .bind(DbTime(now))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Marks a daemon as stopped (clean shutdown).
    pub async fn instance_stopped(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("UPDATE instances SET stopped_at = $2 WHERE id = $1")
                .bind(id)
                .bind(DbTime(now))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Ids of daemons whose heartbeat is newer than `now - ttl` and that have not stopped.
    pub async fn live_instances(
        &self,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<Vec<String>> {
        let since = now - chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        with_pool!(self, pool => Ok(sqlx::query_scalar(
            "SELECT id FROM instances WHERE heartbeat_at > $1 AND stopped_at IS NULL ORDER BY id",
        )
        .bind(DbTime(since))
        .fetch_all(pool)
        .await?))
    }

    /// The cheapest round trip (`SELECT 1`): is the database reachable? (For `/readyz`.)
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}
