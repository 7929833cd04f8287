//! The store's side of deadlines per campaign and jurisdiction (docs/deadlines.md): which jurisdiction
//! codes a campaign's recipients carry, each one's deadline as the application computed it from the
//! rules (`campaign_deadlines`), and the `jurisdiction_progress` view that puts both beside the
//! counts and the campaign's send rate.
//!
//! Written once for both backends (as `portable.rs`). Every read here is over the per-jurisdiction
//! counters that triggers keep (migration 0010), never over the recipients: O(jurisdictions), whatever
//! the campaign's size.

use chrono::{DateTime, NaiveDate, Utc};

use super::time::DbTime;
use super::*;

/// What a deadline rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadlineBasis {
    /// The number of days the law sets.
    Law,
    /// The configured internal target (`rules.internal_target_days`): the law sets no number, or the
    /// code is not in the rules, or the recipient carries none.
    InternalTarget,
}

impl DeadlineBasis {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadlineBasis::Law => "law",
            DeadlineBasis::InternalTarget => "internal_target",
        }
    }
}

/// One jurisdiction's deadline in a campaign, as computed from the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JurisdictionDeadline {
    /// As recipients carry it; `None` for recipients without one.
    pub jurisdiction: Option<String>,
    /// The last day on time.
    pub deadline: NaiveDate,
    pub basis: DeadlineBasis,
    /// The days counted (the law's, or the internal target's).
    pub days: i64,
    /// The law's words when it sets no number, or why the internal target applies.
    pub law_text: Option<String>,
}

/// One row of `jurisdiction_progress`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JurisdictionProgress {
    /// `None`: recipients without a jurisdiction.
    pub jurisdiction: Option<String>,
    /// Every recipient of the campaign with this jurisdiction, whatever their channel or status.
    pub residents: i64,
    /// Email accepted by the relay and not bounced since.
    pub notified_email: i64,
    pub bounced: i64,
    /// Letters owed: postal recipients and bounced ones.
    pub postal_pending: i64,
    pub queued: i64,
    pub deferred: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// `None` until computed (a campaign without `discovered_at` has none).
    pub deadline: Option<NaiveDate>,
    /// `law` or `internal_target`.
    pub basis: Option<String>,
    pub deadline_days: Option<i64>,
    pub law_text: Option<String>,
    /// Whole days from today (UTC) to the deadline: 0 on the day, negative once passed.
    pub days_left: Option<i64>,
    /// Open email recipients of the jurisdiction at the campaign's current rate.
    pub eta_seconds: Option<i64>,
    /// Today plus `eta_seconds`; `None` when nothing is open or nothing is being sent.
    pub projected_completion: Option<NaiveDate>,
}

impl JurisdictionProgress {
    /// Projected to finish after its deadline.
    pub fn late(&self) -> bool {
        matches!((self.projected_completion, self.deadline), (Some(p), Some(d)) if p > d)
            || self.days_left.is_some_and(|d| d < 0) && self.queued + self.deferred > 0
    }
}

const PROGRESS_COLUMNS: &str = "jurisdiction, residents, notified_email, bounced, postal_pending, \
     queued, deferred, failed, cancelled, deadline, basis, CAST(deadline_days AS BIGINT) AS deadline_days, \
     law_text, CAST(days_left AS BIGINT) AS days_left, eta_seconds, projected_completion";

impl Store {
    /// The jurisdiction codes a campaign's recipients carry (`None`: recipients without one), from the
    /// counters.
    pub async fn jurisdiction_codes(&self, campaign_id: i64) -> Result<Vec<Option<String>>> {
        with_pool!(self, pool => Ok(sqlx::query_scalar(
            "SELECT nullif(jurisdiction, '') FROM jurisdiction_counters \
             WHERE campaign_id = $1 AND total > 0 ORDER BY jurisdiction",
        )
        .bind(campaign_id)
        .fetch_all(pool)
        .await?))
    }

    /// Replaces a campaign's deadlines with `rows`, in one transaction. The recipients of a
    /// jurisdiction whose deadline moved (a changed rules file or campaign dates) take the new one
    /// (their place in the claim order, [`ClaimPosition`], and the postal export's); returns how many.
    /// Codes seen for the first time need nothing: the import wrote their rows' deadline days from the
    /// same rules.
    pub async fn replace_deadlines(
        &self,
        campaign_id: i64,
        rows: &[JurisdictionDeadline],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let before: Vec<(String, NaiveDate)> = sqlx::query_as(
                "SELECT jurisdiction, deadline FROM campaign_deadlines WHERE campaign_id = $1",
            )
            .bind(campaign_id)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM campaign_deadlines WHERE campaign_id = $1")
                .bind(campaign_id)
                .execute(&mut *tx)
                .await?;
            let mut moved = 0;
            for r in rows {
                let code = r.jurisdiction.as_deref().unwrap_or("");
                sqlx::query(
                    "INSERT INTO campaign_deadlines \
                     (campaign_id, jurisdiction, deadline, basis, days, law_text, computed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(campaign_id)
                .bind(code)
                .bind(r.deadline)
                .bind(r.basis.as_str())
                .bind(i32::try_from(r.days).unwrap_or(i32::MAX))
                .bind(r.law_text.as_deref())
                .bind(DbTime(now))
                .execute(&mut *tx)
                .await?;
                if before.iter().any(|(c, d)| c == code && *d != r.deadline) {
                    // No index leads with the jurisdiction: this reads the campaign's rows, which a
                    // changed deadline (rare, and before sending in practice) is worth.
                    moved += sqlx::query(
                        "UPDATE recipients SET deadline_day = $3 WHERE campaign_id = $1 \
                         AND coalesce(jurisdiction, '') = $2 AND deadline_day <> $3",
                    )
                    .bind(campaign_id)
                    .bind(code)
                    .bind(deadline_day(r.deadline))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
            }
            tx.commit().await?;
            Ok(moved)
        })
    }

    /// A campaign's rows of `jurisdiction_progress`, by jurisdiction (recipients without one first).
    pub async fn jurisdiction_progress(
        &self,
        campaign_id: i64,
    ) -> Result<Vec<JurisdictionProgress>> {
        with_pool!(self, pool => Ok(sqlx::query_as(audited!(
            "SELECT {PROGRESS_COLUMNS} FROM jurisdiction_progress WHERE campaign_id = $1 \
             ORDER BY coalesce(jurisdiction, '')"
        ))
        .bind(campaign_id)
        .fetch_all(pool)
        .await?))
    }
}
