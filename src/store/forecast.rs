//! The store's side of the deadline forecast's warnings: a `campaign_events` entry whenever the set of
//! jurisdictions a campaign is projected to notify late changes (docs/deadlines.md), and only then,
//! whichever daemon computes it and however often.
//!
//! The set is written into the event's reason in a fixed form, `forecast: late [US-CA US-NY]: ...`
//! (`[]` once every jurisdiction is back on time), so that the last one can be read back and compared
//! without a table of its own: a campaign's events are few, found through `campaign_events_campaign`.
//! Written once for both backends.

use chrono::{DateTime, Utc};

use super::*;

/// How a forecast event's reason begins, before its late set.
pub const FORECAST_EVENT: &str = "forecast: late [";

/// The late set of a forecast event's reason (codes sorted), `None` if it is not one.
pub fn late_set_of(reason: &str) -> Option<Vec<String>> {
    let rest = reason.strip_prefix(FORECAST_EVENT)?;
    let (codes, _) = rest.split_once(']')?;
    Some(codes.split_whitespace().map(str::to_string).collect())
}

impl Store {
    /// Records `reason` (which must begin with [`FORECAST_EVENT`] and the late set) as an event of the
    /// campaign when `late` (codes, sorted) differs from the late set of its last forecast event, or
    /// when there is none and `late` is not empty. Returns whether it was recorded.
    pub async fn record_forecast_change(
        &self,
        campaign_id: i64,
        late: &[String],
        reason: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let last: Option<String> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT reason FROM campaign_events WHERE campaign_id = $1 AND reason LIKE 'forecast: late [%' \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(campaign_id)
        .fetch_optional(pool)
        .await?
        .flatten());
        let before = last.as_deref().and_then(late_set_of).unwrap_or_default();
        if before.as_slice() == late {
            return Ok(false);
        }
        self.record_campaign_note(campaign_id, actor, reason, now)
            .await?;
        Ok(true)
    }
}

/// A forecast event's reason: the late set in the fixed form, then the words for people.
pub fn forecast_reason(late: &[String], words: &str) -> String {
    format!("{FORECAST_EVENT}{}]: {words}", late.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_late_set_reads_back_from_the_reason() {
        let late = vec!["US-CA".to_string(), "US-NY".to_string()];
        let reason = forecast_reason(&late, "projected late: US-CA 3 days late");
        assert_eq!(late_set_of(&reason), Some(late));
        assert_eq!(late_set_of(&forecast_reason(&[], "on time")), Some(vec![]));
        assert_eq!(late_set_of("operator paused it"), None);
    }
}
