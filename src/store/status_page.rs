//! The store's side of the status page (docs/status-page.md): failures grouped by cause, the daemons
//! with their heartbeat and what they hold, and the send rate over time. Written once for both
//! backends (as `portable.rs`).
//!
//! Every read here is bounded whatever the campaign's size: failures come from `failure_counters`
//! (one row per campaign, outcome, code, enhanced status and receiving domain, kept by a trigger on
//! `delivery_attempts`, migration 0013), the rate from the 10-second `send_buckets` (at most 8,640 a
//! day per wave), the daemons from `instances`. No address is read: the domain is all the counters
//! keep.

use chrono::{DateTime, Utc};

use super::portable::INSERT_EVENT;
use super::time::{DbTime, DbTimeOpt};
use super::*;

/// Attempts that did not end in `sent`, for one cause and receiving domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct FailureGroup {
    /// `permanent`, `transient` or `ambiguous`.
    pub outcome: String,
    /// 0: no SMTP answer (a connection refused, a timeout).
    pub smtp_code: i32,
    /// RFC 3463 (`5.1.1`); empty when the reply had none.
    pub enhanced: String,
    pub domain: String,
    pub attempts: i64,
    #[sqlx(try_from = "DbTime")]
    pub last_at: DateTime<Utc>,
}

/// A daemon as `instances` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: String,
    pub hostname: String,
    pub version: String,
    #[sqlx(try_from = "DbTime")]
    pub started_at: DateTime<Utc>,
    #[sqlx(try_from = "DbTime")]
    pub heartbeat_at: DateTime<Utc>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub stopped_at: Option<DateTime<Utc>>,
    /// Recipients it held (claimed, outcome not yet recorded) at its last heartbeat.
    pub in_flight: i64,
}

/// Attempts of a campaign in one interval of a rate chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct RatePoint {
    /// Start of the interval, seconds since the Unix epoch (UTC).
    pub start: i64,
    pub attempts: i64,
    pub sent: i64,
    pub failed: i64,
}

impl Store {
    /// A campaign's failure groups, the largest first, at most `limit`.
    pub async fn failure_groups(&self, campaign_id: i64, limit: u32) -> Result<Vec<FailureGroup>> {
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT outcome, smtp_code, enhanced, domain, attempts, last_at FROM failure_counters \
             WHERE campaign_id = $1 ORDER BY attempts DESC, outcome, smtp_code, enhanced, domain \
             LIMIT $2",
        )
        .bind(campaign_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?))
    }

    /// The daemons whose heartbeat is newer than `since`, stopped ones included (a page shows that
    /// they stopped), by id.
    pub async fn instances_since(&self, since: DateTime<Utc>) -> Result<Vec<InstanceRow>> {
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT id, hostname, version, started_at, heartbeat_at, stopped_at, \
             CAST(in_flight AS BIGINT) AS in_flight FROM instances WHERE heartbeat_at > $1 \
             ORDER BY id",
        )
        .bind(DbTime(since))
        .fetch_all(pool)
        .await?))
    }

    /// A heartbeat ([`Store::heartbeat`]) that also records how many recipients the daemon holds.
    pub async fn heartbeat_holding(
        &self,
        i: &InstanceInfo,
        in_flight: u64,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.heartbeat(i, now).await?;
        with_pool!(self, pool => {
            sqlx::query("UPDATE instances SET in_flight = $2 WHERE id = $1")
                .bind(&i.id)
                .bind(i64::try_from(in_flight).unwrap_or(i64::MAX))
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A campaign's attempts from `since` on, summed over its waves into intervals of `step`
    /// seconds (a multiple of 10), oldest first; intervals without attempts are absent.
    pub async fn rate_series(
        &self,
        campaign_id: i64,
        since: DateTime<Utc>,
        step: i64,
    ) -> Result<Vec<RatePoint>> {
        let step = (step.max(10) / 10) * 10;
        with_pool!(self, pool => Ok(sqlx::query_as(
            "SELECT CAST(bucket / $3 * $3 AS BIGINT) AS start, \
             CAST(sum(attempts) AS BIGINT) AS attempts, CAST(sum(sent) AS BIGINT) AS sent, \
             CAST(sum(failed) AS BIGINT) AS failed FROM send_buckets \
             WHERE campaign_id = $1 AND bucket >= $2 GROUP BY 1 ORDER BY 1",
        )
        .bind(campaign_id)
        .bind(since.timestamp())
        .bind(step)
        .fetch_all(pool)
        .await?))
    }
}

impl Store {
    /// Records an operator's action that is not a state change (a wave released) in
    /// `campaign_events`, from and to the campaign's current state. False: no such campaign.
    pub async fn record_campaign_note(
        &self,
        campaign_id: i64,
        actor: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        with_pool!(self, pool => Ok(sqlx::query(INSERT_EVENT)
        .bind(campaign_id)
        .bind(DbTime(now))
        .bind(actor)
        .bind(reason)
        .execute(pool)
        .await?
        .rows_affected()
            > 0))
    }
}
