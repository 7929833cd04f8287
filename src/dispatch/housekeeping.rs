//! Housekeeping, every heartbeat interval: the queue-depth and in-flight gauges, the systemd status
//! line, idle pacers forgotten, and the leases still held renewed (every third of their length, and at
//! every round of the drain so that none lapses).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::ops::notify::Notifier;
use crate::store::CampaignState;

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
