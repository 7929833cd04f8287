//! The SQLite store: the embedded default, so that a new user runs breach-notifier with no server.
//!
//! One daemon per database file (SQLite has one writer at a time and no `SKIP LOCKED`); WAL mode lets
//! `status` read while the daemon writes. Times are stored as integer milliseconds since the epoch.
//! Batches are written row by row inside one transaction: SQLite's cost is the commit, not the
//! statement.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Row};

use super::address_key;
use super::postgres::{next_state_columns, parse_attributes};
use super::schema::{AppliedMigration, absent_table_is_none};
use super::*;

const RECIPIENT_COLUMNS: &str = "id, campaign_id, customer_id, email, first_name, last_name, locale, \
    jurisdiction, electronic_consent, address1, address2, city, region, postal_code, country, \
    attributes, channel, status, attempts, next_attempt_at, retry_due_at, lease_owner, \
    lease_expires_at, message_id, last_code, last_reply, fail_reason, postal_followup, first_attempt_at, \
    finished_at";

/// The deferred recipients of a campaign whose retry is due (?1 campaign, ?2 now in ms, ?3 limit), the
/// longest waiting first: through recipients_retry_due, which only rows waiting for a retry enter
/// (migration 6 made it lead with campaign_id; before, this read every recipient of the campaign).
/// Public for the plan checks of tests/store_conformance.rs.
pub const DUE_RETRIES: &str = "SELECT id FROM recipients WHERE campaign_id = ?1 AND retry_due_at <= ?2 \
     AND status = 'deferred' AND (lease_expires_at IS NULL OR lease_expires_at <= ?2) \
     ORDER BY retry_due_at LIMIT ?3";

/// Starts the counters of a wave with a fixed key range (?1 campaign, ?2 wave, ?3 first_id exclusive,
/// ?4 last_id), counted once at release; returns its open members (see the PostgreSQL dialect).
const WAVE_COUNT_RANGE: &str = "INSERT INTO wave_counters (campaign_id, wave_number, total, queued, \
     deferred, sent, failed, cancelled) \
     SELECT ?1, ?2, count(*), coalesce(sum(status = 'queued'), 0), coalesce(sum(status = 'deferred'), 0), \
            coalesce(sum(status = 'sent'), 0), coalesce(sum(status = 'failed'), 0), \
            coalesce(sum(status = 'cancelled'), 0) \
     FROM recipients WHERE campaign_id = ?1 AND id > ?3 AND id <= ?4 AND channel = 'email' \
     RETURNING queued + deferred AS open";

/// Starts the counters of the open-ended last wave (?1 campaign, ?2 wave): the campaign's email
/// recipients less the other released waves' (see the PostgreSQL dialect).
const WAVE_COUNT_REST: &str = "INSERT INTO wave_counters (campaign_id, wave_number, total, queued, \
     deferred, sent, failed, cancelled) \
     SELECT ?1, ?2, c.total - c.postal - o.total, c.queued - o.queued, c.deferred - o.deferred, \
            c.sent - o.sent, c.failed - o.failed, c.cancelled - o.cancelled \
     FROM campaign_counters c, \
          (SELECT coalesce(sum(total), 0) AS total, coalesce(sum(queued), 0) AS queued, \
                  coalesce(sum(deferred), 0) AS deferred, coalesce(sum(sent), 0) AS sent, \
                  coalesce(sum(failed), 0) AS failed, coalesce(sum(cancelled), 0) AS cancelled \
           FROM wave_counters WHERE campaign_id = ?1) o \
     WHERE c.campaign_id = ?1 \
     RETURNING queued + deferred AS open";

/// The queued recipients of a campaign after the cursor (?1 campaign, ?2 cursor, ?3 upper bound of the
/// open wave, ?4 now in ms, ?5 limit), in id order, through recipients_campaign_id.
pub const DUE_FRESH: &str = "SELECT id FROM recipients WHERE campaign_id = ?1 AND id > ?2 AND id <= ?3 \
     AND status = 'queued' AND (lease_expires_at IS NULL OR lease_expires_at <= ?4) ORDER BY id LIMIT ?5";

const CAMPAIGN_COLUMNS: &str = "id, name, state, definition, content_hash, email_without_consent, \
    discovered_at, supplements, state_reason, created_at, updated_at, started_at, finished_at";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// Milliseconds since the epoch, the SQLite dialect's time representation.
pub fn to_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The inverse of [`to_ms`].
pub fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn opt_from_ms(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(from_ms)
}

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32, create: bool) -> Result<Self> {
        let shown = shown_url(url);
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

    pub(super) async fn applied_migrations(&self) -> Result<Option<Vec<AppliedMigration>>> {
        let rows =
            sqlx::query("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&self.pool)
                .await;
        Ok(absent_table_is_none(rows)?.map(|rows| {
            rows.iter()
                .map(|r| AppliedMigration {
                    version: r.get("version"),
                    checksum: r.get("checksum"),
                    success: r.get("success"),
                })
                .collect()
        }))
    }

    pub(super) async fn create_campaign(&self, c: &NewCampaign, actor: &str) -> Result<i64> {
        let id = sqlx::query_scalar(
            "INSERT INTO campaigns (name, definition, content_hash, email_without_consent, discovered_at, \
             supplements, change_actor) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&c.name)
        .bind(&c.definition)
        .bind(&c.content_hash)
        .bind(c.email_without_consent)
        .bind(c.discovered_at.map(|d| d.to_string()))
        .bind(c.supplements)
        .bind(actor)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub(super) async fn campaign(&self, id: i64) -> Result<Option<Campaign>> {
        let row = sqlx::query(audited!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| campaign_from_row(&r)).transpose()
    }

    pub(super) async fn campaigns(&self) -> Result<Vec<Campaign>> {
        let rows = sqlx::query(audited!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(campaign_from_row).collect()
    }

    pub(super) async fn set_campaign_state(
        &self,
        id: i64,
        from: CampaignState,
        to: CampaignState,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE campaigns SET state = ?3, change_actor = ?4, change_reason = ?5 WHERE id = ?1 AND state = ?2",
        )
        .bind(id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(actor)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            let now = self
                .campaign(id)
                .await?
                .ok_or(StoreError::UnknownCampaign(id))?;
            return Err(StoreError::IllegalTransition {
                id,
                from: now.state,
                to,
                allowed: allowed_list(now.state),
            });
        }
        Ok(())
    }

    pub(super) async fn campaign_events(&self, campaign_id: i64) -> Result<Vec<CampaignEvent>> {
        let rows = sqlx::query(
            "SELECT id, campaign_id, at, from_state, to_state, actor, reason FROM campaign_events \
             WHERE campaign_id = ? ORDER BY id",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CampaignEvent {
                    id: r.get("id"),
                    campaign_id: r.get("campaign_id"),
                    at: from_ms(r.get("at")),
                    from_state: r
                        .get::<Option<String>, _>("from_state")
                        .map(|s| s.parse())
                        .transpose()?,
                    to_state: r.get::<String, _>("to_state").parse()?,
                    actor: r.get("actor"),
                    reason: r.get("reason"),
                })
            })
            .collect()
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
                 attributes, channel, status, import_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
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
            .bind(r.channel.as_str())
            .bind(status.as_str())
            .bind(r.import_id)
            .execute(&mut *tx)
            .await
            .map_err(|e| match &e {
                sqlx::Error::Database(d) if d.is_foreign_key_violation() => StoreError::UnknownCampaign(campaign_id),
                _ => StoreError::Database(e),
            })?
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
        Ok(StoredBatch {
            outcome: InsertOutcome {
                inserted,
                duplicates: rows.len() as u64 - inserted,
                email,
                postal: inserted - email,
            },
            addresses,
        })
    }

    pub(super) async fn existing_customers(
        &self,
        campaign_id: i64,
        customer_ids: &[String],
    ) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for id in customer_ids {
            if let Some(c) = sqlx::query_scalar(
                "SELECT customer_id FROM recipients WHERE campaign_id = ? AND customer_id = ?",
            )
            .bind(campaign_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            {
                found.push(c);
            }
        }
        Ok(found)
    }

    pub(super) async fn next_import_id(&self) -> Result<i64> {
        // One writer per SQLite file (see the module header), so max + 1 is not racy in practice. An
        // interrupted import leaves recipients pointing at an id it never recorded: skip those too.
        Ok(sqlx::query_scalar(
            "SELECT max(coalesce((SELECT max(id) FROM imports), 0), \
             coalesce((SELECT max(import_id) FROM recipients), 0)) + 1",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub(super) async fn record_import(&self, i: &ImportRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO imports (id, campaign_id, source_name, sha256, rows_read, accepted, rejected, \
             duplicates, email, postal, shared_addresses, actor, started_at, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .bind(to_ms(i.started_at))
        .bind(to_ms(i.finished_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn imports(&self, campaign_id: i64) -> Result<Vec<ImportRecord>> {
        let rows = sqlx::query(
            "SELECT id, campaign_id, source_name, sha256, rows_read, rejected, duplicates, email, postal, \
             shared_addresses, actor, started_at, finished_at FROM imports WHERE campaign_id = ? ORDER BY id",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ImportRecord {
                id: r.get("id"),
                campaign_id: r.get("campaign_id"),
                source_name: r.get("source_name"),
                sha256: r.get("sha256"),
                counts: ImportCounts {
                    read: r.get::<i64, _>("rows_read") as u64,
                    rejected: r.get::<i64, _>("rejected") as u64,
                    duplicates: r.get::<i64, _>("duplicates") as u64,
                    email: r.get::<i64, _>("email") as u64,
                    postal: r.get::<i64, _>("postal") as u64,
                    unusable_email: 0,
                },
                shared_addresses: r.get::<i64, _>("shared_addresses") as u64,
                actor: r.get("actor"),
                started_at: from_ms(r.get("started_at")),
                finished_at: from_ms(r.get("finished_at")),
            })
            .collect())
    }

    pub(super) async fn shared_addresses(&self, campaign_id: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT lower(email) FROM recipients WHERE campaign_id = ? \
             AND email IS NOT NULL GROUP BY lower(email) HAVING count(*) > 1)",
        )
        .bind(campaign_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    pub(super) async fn recipient(&self, id: i64) -> Result<Option<Recipient>> {
        let row = sqlx::query(audited!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| recipient_from_row(&r)).transpose()
    }

    pub(super) async fn recipient_by_customer(
        &self,
        campaign_id: i64,
        customer_id: &str,
    ) -> Result<Option<Recipient>> {
        let row = sqlx::query(audited!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE campaign_id = ? AND customer_id = ?"
        ))
        .bind(campaign_id)
        .bind(customer_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| recipient_from_row(&r)).transpose()
    }

    pub(super) async fn sample_recipients(
        &self,
        campaign_id: i64,
        limit: u32,
    ) -> Result<Vec<Recipient>> {
        let rows = sqlx::query(audited!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE id IN (SELECT recipient_id \
             FROM recipient_samples WHERE campaign_id = ?1) ORDER BY id LIMIT ?2"
        ))
        .bind(campaign_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recipient_from_row).collect()
    }

    pub(super) async fn recipients_after(
        &self,
        campaign_id: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Recipient>> {
        let rows = sqlx::query(audited!(
            "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE campaign_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
        ))
        .bind(campaign_id)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(recipient_from_row).collect()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn claim(
        &self,
        campaign_id: i64,
        instance: &str,
        cursor: i64,
        upper: i64,
        limit: u32,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Claim> {
        let (now, until) = (to_ms(now), to_ms(until));
        let mut tx = self.pool.begin().await?;
        let retries = sqlx::query(audited!(
            "UPDATE recipients SET lease_owner = ?4, lease_expires_at = ?5 WHERE id IN ({DUE_RETRIES}) \
             RETURNING {RECIPIENT_COLUMNS}"
        ))
        .bind(campaign_id)
        .bind(now)
        .bind(i64::from(limit))
        .bind(instance)
        .bind(until)
        .fetch_all(&mut *tx)
        .await?;
        let remaining = i64::from(limit) - retries.len() as i64;
        let mut fresh = Vec::new();
        if remaining > 0 {
            fresh = sqlx::query(audited!(
                "UPDATE recipients SET lease_owner = ?6, lease_expires_at = ?7 WHERE id IN ({DUE_FRESH}) \
                 RETURNING {RECIPIENT_COLUMNS}"
            ))
            .bind(campaign_id)
            .bind(cursor)
            .bind(upper)
            .bind(now)
            .bind(remaining)
            .bind(instance)
            .bind(until)
            .fetch_all(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let exhausted = (fresh.len() as i64) < remaining;
        let next_cursor = fresh
            .iter()
            .map(|r| r.get::<i64, _>("id"))
            .max()
            .unwrap_or(cursor)
            .max(cursor);
        let mut recipients = retries
            .iter()
            .chain(fresh.iter())
            .map(recipient_from_row)
            .collect::<Result<Vec<_>>>()?;
        recipients.sort_by_key(|r| r.id);
        Ok(Claim {
            recipients,
            cursor: next_cursor,
            exhausted,
            cap_reached: false,
        })
    }

    pub(super) async fn waves(&self, campaign_id: i64) -> Result<Vec<Wave>> {
        let rows = sqlx::query(
            "SELECT campaign_id, number, size_spec, release_rule, hold_minutes, max_failure_rate, \
             max_deferral_rate, released_at, first_id, last_id, planned, finished_at FROM waves \
             WHERE campaign_id = ?1 ORDER BY number",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Wave {
                campaign_id: r.get("campaign_id"),
                number: r.get("number"),
                size_spec: r.get("size_spec"),
                release_rule: r.get("release_rule"),
                hold_minutes: r.get::<i32, _>("hold_minutes").into(),
                max_failure_rate: r.get("max_failure_rate"),
                max_deferral_rate: r.get("max_deferral_rate"),
                released_at: opt_from_ms(r.get("released_at")),
                first_id: r.get("first_id"),
                last_id: r.get("last_id"),
                planned: r.get("planned"),
                finished_at: opt_from_ms(r.get("finished_at")),
            })
            .collect())
    }

    pub(super) async fn insert_waves(&self, waves: &[Wave]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for w in waves {
            sqlx::query(
                "INSERT INTO waves (campaign_id, number, size_spec, release_rule, hold_minutes, \
                 max_failure_rate, max_deferral_rate) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (campaign_id, number) DO NOTHING",
            )
            .bind(w.campaign_id)
            .bind(w.number)
            .bind(&w.size_spec)
            .bind(&w.release_rule)
            .bind(w.hold_minutes as i32)
            .bind(w.max_failure_rate)
            .bind(w.max_deferral_rate)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn release_wave(
        &self,
        campaign_id: i64,
        number: i32,
        first_id: i64,
        last_id: Option<i64>,
        planned: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        // One writer at a time on SQLite: nothing changes between the count and the triggers.
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE waves SET released_at = coalesce(released_at, ?6), first_id = ?3, last_id = ?4, \
             planned = ?5 WHERE campaign_id = ?1 AND number = ?2 AND first_id IS NULL",
        )
        .bind(campaign_id)
        .bind(number)
        .bind(first_id)
        .bind(last_id)
        .bind(planned.unwrap_or(0))
        .bind(to_ms(now))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let counted = match last_id {
            Some(last) => sqlx::query(audited!("{WAVE_COUNT_RANGE}"))
                .bind(campaign_id)
                .bind(number)
                .bind(first_id)
                .bind(last),
            None => sqlx::query(audited!("{WAVE_COUNT_REST}"))
                .bind(campaign_id)
                .bind(number),
        };
        let open: i64 = counted.fetch_one(&mut *tx).await?.get("open");
        if planned.is_none() {
            sqlx::query("UPDATE waves SET planned = ?3 WHERE campaign_id = ?1 AND number = ?2")
                .bind(campaign_id)
                .bind(number)
                .bind(open)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn wave_open(&self, campaign_id: i64, number: i32) -> Result<u64> {
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT queued + deferred FROM wave_counters WHERE campaign_id = ?1 AND wave_number = ?2",
        )
        .bind(campaign_id)
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        Ok(open.unwrap_or(0) as u64)
    }

    pub(super) async fn finish_wave(
        &self,
        campaign_id: i64,
        number: i32,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE waves SET finished_at = ?3 WHERE campaign_id = ?1 AND number = ?2 AND finished_at IS NULL",
        )
        .bind(campaign_id)
        .bind(number)
        .bind(to_ms(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn nth_email_recipient(
        &self,
        campaign_id: i64,
        after_id: i64,
        n: i64,
    ) -> Result<Option<(i64, i64)>> {
        let row: (Option<i64>, i64) = sqlx::query_as(
            "SELECT max(id), count(*) FROM (SELECT id FROM recipients WHERE campaign_id = ?1 AND id > ?2 \
             AND channel = 'email' ORDER BY id LIMIT ?3) AS w",
        )
        .bind(campaign_id)
        .bind(after_id)
        .bind(n)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.0.map(|id| (id, row.1)))
    }

    pub(super) async fn open_in_range(
        &self,
        campaign_id: i64,
        first_id: i64,
        last_id: i64,
    ) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM recipients WHERE campaign_id = ?1 AND id > ?2 AND id <= ?3 \
             AND status IN ('queued', 'deferred')",
        )
        .bind(campaign_id)
        .bind(first_id)
        .bind(last_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    pub(super) async fn wave_attempts(
        &self,
        campaign_id: i64,
        number: i32,
        from_bucket: i64,
    ) -> Result<WaveAttempts> {
        let (total, permanent, sent): (i64, i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(attempts), 0), coalesce(sum(failed), 0), coalesce(sum(sent), 0) \
             FROM send_buckets WHERE campaign_id = ?1 AND wave_number = ?2 AND bucket >= ?3",
        )
        .bind(campaign_id)
        .bind(number)
        .bind(from_bucket)
        .fetch_one(&self.pool)
        .await?;
        Ok(WaveAttempts::from_buckets(total, permanent, sent))
    }

    pub(super) async fn wave_progress(&self, campaign_id: i64) -> Result<Vec<WaveProgress>> {
        let rows = sqlx::query(
            "SELECT number, size_spec, release_rule, state, planned, total, queued, deferred, sent, failed, \
             cancelled, released_at, finished_at, sent_last_minute, sent_last_hour, eta_seconds, \
             last_change_at FROM wave_progress WHERE campaign_id = ?1 ORDER BY number",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| WaveProgress {
                number: r.get("number"),
                size_spec: r.get("size_spec"),
                release_rule: r.get("release_rule"),
                state: r.get("state"),
                planned: r.get("planned"),
                total: r.get("total"),
                queued: r.get("queued"),
                deferred: r.get("deferred"),
                sent: r.get("sent"),
                failed: r.get("failed"),
                cancelled: r.get("cancelled"),
                released_at: opt_from_ms(r.get("released_at")),
                finished_at: opt_from_ms(r.get("finished_at")),
                sent_last_minute: r.get("sent_last_minute"),
                sent_last_hour: r.get("sent_last_hour"),
                eta_seconds: r.get("eta_seconds"),
                last_change_at: opt_from_ms(r.get("last_change_at")),
            })
            .collect())
    }

    pub(super) async fn renew_leases(
        &self,
        instance: &str,
        ids: &[i64],
        until: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for id in ids {
            n += sqlx::query(
                "UPDATE recipients SET lease_expires_at = ? WHERE id = ? AND lease_owner = ?",
            )
            .bind(to_ms(until))
            .bind(id)
            .bind(instance)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    pub(super) async fn release_leases(&self, instance: &str, ids: &[i64]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for id in ids {
            n += sqlx::query(
                "UPDATE recipients SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
            )
            .bind(id)
            .bind(instance)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    pub(super) async fn record_attempts(
        &self,
        instance: &str,
        records: &[AttemptRecord],
    ) -> Result<u64> {
        let (statuses, retry_at, reasons) = next_state_columns(records);
        let mut tx = self.pool.begin().await?;
        let mut changed = 0;
        for (i, r) in records.iter().enumerate() {
            sqlx::query(
                "INSERT INTO delivery_attempts (recipient_id, campaign_id, attempt, instance, started_at, \
                 finished_at, outcome, smtp_code, reply, message_id) \
                 SELECT ?1, ?2, attempts + 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9 FROM recipients WHERE id = ?1",
            )
            .bind(r.recipient_id)
            .bind(r.campaign_id)
            .bind(instance)
            .bind(to_ms(r.started_at))
            .bind(to_ms(r.finished_at))
            .bind(r.outcome.as_str())
            .bind(r.smtp_code)
            .bind(&r.reply)
            .bind(&r.message_id)
            .execute(&mut *tx)
            .await?;
            changed += sqlx::query(
                "UPDATE recipients SET \
                   status = CASE WHEN ?2 = 'deferred' AND c.state = 'cancelled' THEN 'cancelled' ELSE ?2 END, \
                   attempts = attempts + 1, \
                   next_attempt_at = coalesce(?3, next_attempt_at), \
                   retry_due_at = CASE WHEN ?2 = 'deferred' AND c.state <> 'cancelled' THEN ?3 END, \
                   lease_owner = NULL, lease_expires_at = NULL, \
                   message_id = ?5, last_code = ?6, last_reply = ?7, \
                   fail_reason = CASE WHEN ?2 = 'deferred' AND c.state = 'cancelled' \
                                      THEN 'campaign cancelled' ELSE ?4 END, \
                   postal_followup = postal_followup OR ?2 = 'failed', \
                   first_attempt_at = coalesce(first_attempt_at, ?8), \
                   finished_at = CASE WHEN ?2 <> 'deferred' OR c.state = 'cancelled' THEN ?9 END \
                 FROM (SELECT state FROM campaigns WHERE id = ?10) AS c \
                 WHERE recipients.id = ?1 AND lease_owner = ?11",
            )
            .bind(r.recipient_id)
            .bind(statuses[i])
            .bind(retry_at[i].map(to_ms))
            .bind(&reasons[i])
            .bind(&r.message_id)
            .bind(r.smtp_code)
            .bind(&r.reply)
            .bind(to_ms(r.started_at))
            .bind(to_ms(r.finished_at))
            .bind(r.campaign_id)
            .bind(instance)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }

    pub(super) async fn sent_since(&self, campaign_id: i64, from_bucket: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(sent), 0) FROM send_buckets WHERE campaign_id = ?1 AND bucket >= ?2",
        )
        .bind(campaign_id)
        .bind(from_bucket)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    pub(super) async fn settle_cancelled(
        &self,
        campaign_id: i64,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE recipients SET status = 'cancelled', retry_due_at = NULL, fail_reason = 'campaign cancelled', \
             finished_at = ?2, lease_owner = NULL, lease_expires_at = NULL \
             WHERE campaign_id = ?1 AND status IN ('queued', 'deferred') \
             AND (lease_expires_at IS NULL OR lease_expires_at <= ?2) \
             AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = ?1 AND c.state = 'cancelled')",
        )
        .bind(campaign_id)
        .bind(to_ms(now))
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub(super) async fn attempts_for(&self, recipient_ids: &[i64]) -> Result<Vec<Attempt>> {
        // An IN list written from integers (nothing else can reach the SQL), in chunks that keep each
        // statement small; chunks follow each other in id order, so the result stays ordered.
        let mut ids = recipient_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let rows = sqlx::query(audited!(
                "SELECT id, recipient_id, campaign_id, attempt, instance, started_at, finished_at, outcome, \
                 smtp_code, reply, message_id FROM delivery_attempts WHERE recipient_id IN ({list}) \
                 ORDER BY recipient_id, id"
            ))
            .fetch_all(&self.pool)
            .await?;
            for r in &rows {
                out.push(Attempt {
                    id: r.get("id"),
                    recipient_id: r.get("recipient_id"),
                    campaign_id: r.get("campaign_id"),
                    attempt: r.get("attempt"),
                    instance: r.get("instance"),
                    started_at: from_ms(r.get("started_at")),
                    finished_at: from_ms(r.get("finished_at")),
                    outcome: r.get::<String, _>("outcome").parse()?,
                    smtp_code: r.get("smtp_code"),
                    reply: r.get("reply"),
                    message_id: r.get("message_id"),
                });
            }
        }
        Ok(out)
    }

    pub(super) async fn progress(&self, campaign_id: Option<i64>) -> Result<Vec<CampaignProgress>> {
        let rows = sqlx::query(
            "SELECT campaign_id, name, state, total, queued, deferred, sent, failed, cancelled, postal, \
             last_change_at, sent_last_minute, sent_last_hour, eta_seconds FROM campaign_progress WHERE ?1 IS NULL OR campaign_id = ?1 ORDER BY campaign_id",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CampaignProgress {
                    campaign_id: r.get("campaign_id"),
                    name: r.get("name"),
                    state: r.get::<String, _>("state").parse()?,
                    total: r.get("total"),
                    queued: r.get("queued"),
                    deferred: r.get("deferred"),
                    sent: r.get("sent"),
                    failed: r.get("failed"),
                    cancelled: r.get("cancelled"),
                    postal: r.get("postal"),
                    last_change_at: from_ms(r.get("last_change_at")),
                    sent_last_minute: r.get("sent_last_minute"),
                    sent_last_hour: r.get("sent_last_hour"),
                    eta_seconds: r.get("eta_seconds"),
                })
            })
            .collect()
    }

    pub(super) async fn heartbeat(&self, i: &InstanceInfo, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO instances (id, hostname, pid, version, started_at, heartbeat_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL",
        )
        .bind(&i.id)
        .bind(&i.hostname)
        .bind(i.pid)
        .bind(&i.version)
        .bind(to_ms(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn instance_stopped(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE instances SET stopped_at = ? WHERE id = ?")
            .bind(to_ms(now))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn live_instances(&self, since: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM instances WHERE heartbeat_at > ? AND stopped_at IS NULL ORDER BY id",
        )
        .bind(to_ms(since))
        .fetch_all(&self.pool)
        .await?)
    }
}

fn campaign_from_row(r: &SqliteRow) -> Result<Campaign> {
    let discovered: Option<String> = r.get("discovered_at");
    Ok(Campaign {
        id: r.get("id"),
        name: r.get("name"),
        state: r.get::<String, _>("state").parse()?,
        definition: r.get("definition"),
        content_hash: r.get("content_hash"),
        email_without_consent: r.get("email_without_consent"),
        discovered_at: discovered
            .map(|d| {
                d.parse()
                    .map_err(|e| StoreError::Corrupt(format!("campaigns.discovered_at {d:?}: {e}")))
            })
            .transpose()?,
        supplements: r.get("supplements"),
        state_reason: r.get("state_reason"),
        created_at: from_ms(r.get("created_at")),
        updated_at: from_ms(r.get("updated_at")),
        started_at: opt_from_ms(r.get("started_at")),
        finished_at: opt_from_ms(r.get("finished_at")),
    })
}

fn recipient_from_row(r: &SqliteRow) -> Result<Recipient> {
    let attributes: String = r.get("attributes");
    Ok(Recipient {
        id: r.get("id"),
        campaign_id: r.get("campaign_id"),
        customer_id: r.get("customer_id"),
        email: r.get("email"),
        first_name: r.get("first_name"),
        last_name: r.get("last_name"),
        locale: r.get("locale"),
        jurisdiction: r.get("jurisdiction"),
        electronic_consent: r.get("electronic_consent"),
        address1: r.get("address1"),
        address2: r.get("address2"),
        city: r.get("city"),
        region: r.get("region"),
        postal_code: r.get("postal_code"),
        country: r.get("country"),
        attributes: parse_attributes(&attributes)?,
        channel: r.get::<String, _>("channel").parse()?,
        status: r.get::<String, _>("status").parse()?,
        attempts: r.get("attempts"),
        next_attempt_at: from_ms(r.get("next_attempt_at")),
        retry_due_at: opt_from_ms(r.get("retry_due_at")),
        lease_owner: r.get("lease_owner"),
        lease_expires_at: opt_from_ms(r.get("lease_expires_at")),
        message_id: r.get("message_id"),
        last_code: r.get("last_code"),
        last_reply: r.get("last_reply"),
        fail_reason: r.get("fail_reason"),
        postal_followup: r.get("postal_followup"),
        first_attempt_at: opt_from_ms(r.get("first_attempt_at")),
        finished_at: opt_from_ms(r.get("finished_at")),
    })
}
