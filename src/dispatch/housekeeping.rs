//! Housekeeping, every heartbeat interval: the queue-depth and in-flight gauges, the systemd status
//! line, idle pacers forgotten, and the leases still held renewed (every third of their length, and at
//! every round of the drain so that none lapses). Every minute, the deadline forecast of each running
//! campaign: its late jurisdictions as metrics, and a campaign event when the late set changes
//! (`campaign::forecast`, docs/deadlines.md).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::campaign::forecast;
use crate::ops::notify::Notifier;
use crate::store::CampaignState;

/// How often the deadline forecast is computed: its inputs (rates over a minute, daily caps, deadlines
/// in days) change slowly, and each round reads a few rows per running campaign and jurisdiction.
const FORECAST_EVERY: Duration = Duration::from_secs(60);

pub(super) struct Housekeeping {
    pub(super) shared: Arc<Shared>,
    pub(super) notifier: Notifier,
    /// The drain began: say so in the status line, renew at every round.
    pub(super) draining: CancellationToken,
    /// Stop between rounds.
    pub(super) quit: CancellationToken,
}

impl Housekeeping {
    pub(super) async fn run(self) {
        let every = Duration::from_secs(self.shared.settings.heartbeat_secs);
        let mut last_renewal = Instant::now();
        let mut last_forecast: Option<Instant> = None;
        let mut drain_seen = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.draining.cancelled(), if !drain_seen => drain_seen = true,
                _ = self.quit.cancelled() => {}
            }
            // Quit between rounds, never inside one: a heartbeat landing after the daemon marked
            // itself stopped would revive it.
            if self.quit.is_cancelled() {
                break;
            }
            self.gauges_and_status().await;
            if last_forecast.is_none_or(|at| at.elapsed() >= FORECAST_EVERY) {
                self.forecast().await;
                last_forecast = Some(Instant::now());
            }
            self.shared.limits.forget_idle(Duration::from_secs(600));
            let renew_every = Duration::from_secs(self.shared.settings.lease_secs / 3);
            if last_renewal.elapsed() >= renew_every || self.draining.is_cancelled() {
                self.renew_leases().await;
                last_renewal = Instant::now();
            }
        }
    }

    /// Queue depth from the campaign counters (one row per campaign, O(1) each), the in-flight
    /// gauge, and the status line.
    async fn gauges_and_status(&self) {
        let metrics = &self.shared.metrics;
        match self.shared.store.progress(None).await {
            Ok(progress) => metrics.set_queue_depth(
                progress
                    .iter()
                    .filter(|p| {
                        matches!(
                            p.state,
                            CampaignState::Draft | CampaignState::Running | CampaignState::Paused
                        )
                    })
                    .map(|p| (p.campaign_id, p.open())),
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read campaign progress for metrics"),
        }
        let held = self.shared.in_flight.len();
        metrics.set_in_flight(held);
        let stats = metrics.stats();
        self.notifier.status(&format!(
            "{}sent {}, deferred {}, failed {}, in flight {held}",
            if self.draining.is_cancelled() {
                "stopping: "
            } else {
                ""
            },
            stats.sent.load(Ordering::Relaxed),
            stats.deferred.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
        ));
    }

    /// The forecast of every running campaign: the late gauges, and an event when a campaign's late
    /// set changed since its last forecast event (whichever daemon wrote it).
    async fn forecast(&self) {
        let shared = &self.shared;
        let running = match shared.store.campaigns().await {
            Ok(all) => all
                .into_iter()
                .filter(|c| c.state == CampaignState::Running),
            Err(e) => return tracing::warn!(error = %e, "cannot read campaigns for the forecast"),
        };
        let limits = forecast::Limits {
            global_per_second: shared.limits.global_rate().map(|r| r.per_second),
        };
        let mut gauges = Vec::new();
        for campaign in running {
            let now = Utc::now();
            let f = match forecast::of_campaign(&shared.store, &campaign, limits, now).await {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(campaign = campaign.id, error = %e, "forecast failed");
                    continue;
                }
            };
            let late: Vec<(String, i64)> = f
                .late()
                .iter()
                .map(|p| {
                    (
                        p.jurisdiction.clone().unwrap_or_default(),
                        p.days_late.unwrap_or(0),
                    )
                })
                .collect();
            let mut codes: Vec<String> = late.iter().map(|(c, _)| c.clone()).collect();
            codes.sort();
            let words = f
                .summary()
                .unwrap_or_else(|| "every jurisdiction projected on time".into());
            let reason = crate::store::forecast::forecast_reason(&codes, &words);
            let recorded = shared
                .store
                .record_forecast_change(campaign.id, &codes, &reason, &shared.actor(), now)
                .await;
            match recorded {
                Ok(true) => tracing::warn!(campaign = campaign.id, late = codes.len(), "{words}"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(campaign = campaign.id, error = %e, "cannot record the forecast")
                }
            }
            gauges.push((campaign.id, late));
        }
        shared.metrics.set_projected_late(gauges);
    }

    async fn renew_leases(&self) {
        let ids = self.shared.in_flight.ids();
        if ids.is_empty() {
            return;
        }
        let lease = chrono::Duration::seconds(self.shared.settings.lease_secs as i64);
        let until = Utc::now() + lease;
        match self
            .shared
            .store
            .renew_leases(&self.shared.instance.id, &ids, until)
            .await
        {
            Ok(n) => self.shared.metrics.leases_renewed(n),
            Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
        }
    }
}
