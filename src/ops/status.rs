//! What `status --json` prints and `/api/status` serves: each campaign's progress (the
//! `campaign_progress` view), its waves (`wave_progress`), the bounce guards holding its domains and,
//! for one campaign, its jurisdictions, late ones first (`jurisdiction_progress`). Here, in the
//! operations layer, so that the command line and the HTTP endpoint read the same thing the same way.
//!
//! Every read is over counters or the 10-second send buckets, never over the queue: O(campaigns ×
//! waves + jurisdictions) whatever the number of recipients. For one campaign, the deadline forecast
//! (`campaign::forecast`) replaces the view's projections, so that `status ID`, its JSON, the page
//! and `/api/status/ID` say the same.

use chrono::Utc;
use serde::Serialize;

use crate::campaign::forecast::{self, Forecast, Limits};

use crate::store::bounces::BounceGuard;
use crate::store::deadlines::JurisdictionProgress;
use crate::store::{CampaignProgress, Store, StoreError, WaveProgress};

/// A campaign's status line and its waves, as printed and as serialised by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignStatus {
    #[serde(flatten)]
    pub progress: CampaignProgress,
    pub waves: Vec<WaveProgress>,
    /// Receiving domains the bounce guard holds (their recipients wait for email, not postal).
    pub bounce_guards: Vec<BounceGuard>,
    /// Per jurisdiction (one campaign asked for): late ones first, then by days left.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jurisdictions: Vec<JurisdictionProgress>,
}

/// Seconds as `45s`, `12m` or `3h05m`; none as `-` (as `status` and the status page show them).
pub fn eta(seconds: Option<i64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Reads the status of one campaign (an unknown id is an error) or all of them.
pub async fn collect(store: &Store, campaign: Option<i64>) -> anyhow::Result<Vec<CampaignStatus>> {
    let progress = store.progress(campaign).await?;
    if let (Some(id), true) = (campaign, progress.is_empty()) {
        return Err(StoreError::UnknownCampaign(id).into());
    }
    let guards = store.active_bounce_guards().await?;
    let mut out = Vec::with_capacity(progress.len());
    for p in progress {
        let waves = store.wave_progress(p.campaign_id).await?;
        let bounce_guards = guards
            .iter()
            .filter(|g| g.campaign_id == p.campaign_id)
            .cloned()
            .collect();
        let jurisdictions = match campaign {
            Some(id) => by_urgency(store.jurisdiction_progress(id).await?),
            None => Vec::new(),
        };
        out.push(CampaignStatus {
            progress: p,
            waves,
            bounce_guards,
            jurisdictions,
        });
    }
    Ok(out)
}

/// Late ones first (projected past the deadline, or past it with recipients open), then by days left
/// (unknown deadlines last), then by code.
pub fn by_urgency(mut rows: Vec<JurisdictionProgress>) -> Vec<JurisdictionProgress> {
    rows.sort_by(|a, b| {
        b.late()
            .cmp(&a.late())
            .then(
                a.days_left
                    .unwrap_or(i64::MAX)
                    .cmp(&b.days_left.unwrap_or(i64::MAX)),
            )
            .then(a.jurisdiction.cmp(&b.jurisdiction))
    });
    rows
}

/// [`collect`], and for one campaign its deadline forecast, whose projections replace the view's in
/// the jurisdictions (so that the table, `late()` and the JSON agree). Progress is shown even when
/// no forecast can be made (a definition written with SQL that does not read back).
pub async fn collect_with_forecast(
    store: &Store,
    campaign: Option<i64>,
    limits: Limits,
) -> anyhow::Result<(Vec<CampaignStatus>, Option<Forecast>)> {
    let mut rows = collect(store, campaign).await?;
    let (Some(id), Some(row)) = (campaign, rows.first_mut()) else {
        return Ok((rows, None));
    };
    let c = store.require_campaign(id).await?;
    match forecast::of_campaign(store, &c, limits, Utc::now()).await {
        Ok(f) => {
            let jurisdictions = std::mem::take(&mut row.jurisdictions);
            row.jurisdictions = by_urgency(with_forecast(jurisdictions, &f));
            Ok((rows, Some(f)))
        }
        Err(e) => {
            tracing::warn!(campaign = id, error = %e, "no deadline forecast");
            Ok((rows, None))
        }
    }
}

fn with_forecast(mut rows: Vec<JurisdictionProgress>, f: &Forecast) -> Vec<JurisdictionProgress> {
    for row in &mut rows {
        if let Some(p) = f
            .projections
            .iter()
            .find(|p| p.jurisdiction == row.jurisdiction)
        {
            row.projected_completion = p.completion;
        }
    }
    rows
}

/// The JSON of `status --json` and `/api/status`, pretty-printed: the rows in their fields' order,
/// and the forecast beside the first.
pub fn to_json(rows: &[CampaignStatus], forecast: Option<&Forecast>) -> serde_json::Result<String> {
    #[derive(Serialize)]
    struct Row<'a> {
        #[serde(flatten)]
        status: &'a CampaignStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        forecast: Option<&'a Forecast>,
    }
    let rows: Vec<Row<'_>> = rows
        .iter()
        .enumerate()
        .map(|(i, status)| Row {
            status,
            forecast: forecast.filter(|_| i == 0),
        })
        .collect();
    serde_json::to_string_pretty(&rows)
}
