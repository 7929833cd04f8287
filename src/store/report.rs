//! The store's side of the regulator report (`breach-notifier report regulators`, docs/regulators.md):
//! per jurisdiction code of a campaign, how many residents it has, how many notices the relay accepted
//! and when the first and last went out, how many bounced, how many letters are owed, and how many
//! residents have no contact information at all, as they stood at a cut-off time (`--as-of`), or now.
//!
//! Now, the figures are read from `jurisdiction_counters` (migration 0015), which the database keeps
//! in the same transaction as every change of a recipient: a few rows per campaign whatever its size.
//! With a cut-off, or when the counters say their first and last times are no longer exact (a notice
//! that counted left the sent state, see the migration), they are counted from the recipients: one
//! aggregate query, written once for both backends, that the database groups by jurisdiction (no
//! recipient row reaches Rust). It reads the campaign's recipients once (a campaign is most of the
//! table, so PostgreSQL scans it); the send time of a recipient that bounced since (its `finished_at`
//! then is the bounce's) comes from its accepted attempt through `delivery_attempts_recipient`, for
//! those rows only. Each figure follows the row the evidence export writes for the same recipient, so
//! both files agree (tests/it/regulators.rs), and both ways of counting agree with each other.

use chrono::{DateTime, TimeZone, Utc};

use super::time::{DbTime, DbTimeOpt};
use super::*;

/// One jurisdiction code's figures, as of the cut-off.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ResidentFigures {
    /// As recipients carry it; `''` for recipients without one.
    pub jurisdiction: String,
    /// Recipients imported before the cut-off.
    pub residents: i64,
    /// Notices the relay accepted before the cut-off (bounced since or not).
    pub email_sent: i64,
    /// Of those, how many had bounced by the cut-off.
    pub bounced: i64,
    /// Letters owed at the cut-off: the postal export's rule (postal channel or status, a permanent
    /// email failure flagged for a letter, a bounce), cancelled recipients excepted.
    pub letters_owed: i64,
    /// Residents with neither a usable email (none, failed or bounced) nor a postal address.
    pub no_contact: i64,
    #[sqlx(try_from = "DbTimeOpt")]
    pub first_email: Option<DateTime<Utc>>,
    #[sqlx(try_from = "DbTimeOpt")]
    pub last_email: Option<DateTime<Utc>>,
}

/// Per recipient of campaign $1 imported before $2: its jurisdiction, when its notice was accepted
/// (before $2), and the flags the figures count; then grouped. `sent_at` is NULL for everyone not
/// notified by email before $2. `{fence}` keeps PostgreSQL from copying the per-row sub-select into
/// each aggregate that reads `sent_at` (three calls a row instead of one); the sub-select's outcome
/// test sits in a FILTER so that the lookup goes through `delivery_attempts_recipient` alone.
fn figures_sql(fence: &str) -> String {
    format!(
        "SELECT jurisdiction, count(*) AS residents, count(sent_at) AS email_sent, \
         count(*) FILTER (WHERE bounced) AS bounced, count(*) FILTER (WHERE owed) AS letters_owed, \
         count(*) FILTER (WHERE no_contact) AS no_contact, \
         min(sent_at) AS first_email, max(sent_at) AS last_email \
         FROM (SELECT coalesce(r.jurisdiction, '') AS jurisdiction, \
           CASE WHEN r.status = 'sent' AND r.finished_at < $2 THEN r.finished_at \
                WHEN r.status = 'bounced' THEN (SELECT max(d.finished_at) \
                     FILTER (WHERE d.outcome = 'sent' AND d.finished_at < $2) \
                     FROM delivery_attempts d WHERE d.recipient_id = r.id) \
           END AS sent_at, \
           (r.status = 'bounced' AND r.bounced_at < $2) AS bounced, \
           (r.status <> 'cancelled' AND (r.channel = 'postal' OR r.status = 'postal' \
             OR (r.status IN ('failed', 'bounced') AND r.postal_followup AND r.finished_at < $2))) AS owed, \
           ((r.email IS NULL OR (r.status IN ('failed', 'bounced') AND r.finished_at < $2)) \
             AND coalesce(r.address1, '') = '') AS no_contact \
           FROM recipients r WHERE r.campaign_id = $1 AND r.created_at < $2{fence}) AS x \
         GROUP BY jurisdiction ORDER BY jurisdiction"
    )
}

/// PostgreSQL's settings for the report's one transaction. At 1,000,000 recipients on the development
/// machine the query took 7.3 s as planned by default: 3.3 s of it compiling the expressions (JIT),
/// the rest sorting every row to group 51 jurisdictions; with these, 0.95 s (one hash table of a few
/// rows per jurisdiction).
const PG_SETTINGS: &str = "SET LOCAL jit = off; SET LOCAL enable_sort = off";

/// The cut-off that stands for "now and later": the last instant of year 9999 (both dialects hold it).
fn no_cut_off() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The figures as the counters keep them, with whether their times are exact. Pairs a correction
/// emptied (every resident moved to another jurisdiction) are left out, as the count would leave them.
const KEPT_SQL: &str = "SELECT jurisdiction, total AS residents, sent + bounced AS email_sent, \
     bounced, letters_owed, no_contact, first_email, last_email, times_exact \
     FROM jurisdiction_counters WHERE campaign_id = $1 AND total > 0 ORDER BY jurisdiction";

#[derive(sqlx::FromRow)]
struct KeptFigures {
    #[sqlx(flatten)]
    figures: ResidentFigures,
    times_exact: bool,
}

impl Store {
    /// The figures of every jurisdiction code of a campaign, counting what happened before `cut_off`
    /// (everything when `None`), by code (recipients without one first).
    pub async fn resident_figures(
        &self,
        campaign_id: i64,
        cut_off: Option<DateTime<Utc>>,
    ) -> Result<Vec<ResidentFigures>> {
        if cut_off.is_none() {
            let (figures, times_exact) = self.kept_figures(campaign_id).await?;
            if times_exact {
                return Ok(figures);
            }
        }
        self.counted_from_recipients(campaign_id, cut_off).await
    }

    /// The figures as `jurisdiction_counters` keeps them now, and whether their first and last times
    /// are exact (their counts always are).
    pub async fn kept_figures(&self, campaign_id: i64) -> Result<(Vec<ResidentFigures>, bool)> {
        let kept: Vec<KeptFigures> = with_pool!(self, pool => {
            sqlx::query_as(KEPT_SQL).bind(campaign_id).fetch_all(pool).await?
        });
        let times_exact = kept.iter().all(|k| k.times_exact);
        Ok((kept.into_iter().map(|k| k.figures).collect(), times_exact))
    }

    /// [`Store::resident_figures`] counted from the recipients themselves: the reference the counters
    /// are tested against, and what a cut-off needs.
    pub async fn counted_from_recipients(
        &self,
        campaign_id: i64,
        cut_off: Option<DateTime<Utc>>,
    ) -> Result<Vec<ResidentFigures>> {
        let cut = DbTime(cut_off.unwrap_or_else(no_cut_off));
        match self {
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                sqlx::raw_sql(PG_SETTINGS).execute(&mut *tx).await?;
                let rows = sqlx::query_as(audited!("{}", figures_sql(" OFFSET 0")))
                    .bind(campaign_id)
                    .bind(cut)
                    .fetch_all(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(rows)
            }
            Store::Sqlite(s) => Ok(sqlx::query_as(audited!("{}", figures_sql("")))
                .bind(campaign_id)
                .bind(cut)
                .fetch_all(s.pool())
                .await?),
        }
    }
}
