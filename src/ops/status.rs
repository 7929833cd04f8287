//! What `status --json` prints and `/api/status` serves: each campaign's progress (the
//! `campaign_progress` view), its waves (`wave_progress`), the bounce guards holding its domains and,
//! for one campaign, its jurisdictions, late ones first (`jurisdiction_progress`). Here, in the
//! operations layer, so that the command line and the HTTP endpoint read the same thing the same way.
//!
//! Every read is over counters or the 10-second send buckets, never over the queue: O(campaigns ×
//! waves + jurisdictions) whatever the number of recipients.

use serde::Serialize;

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
