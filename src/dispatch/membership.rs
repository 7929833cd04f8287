//! Membership: keeps this daemon counted among the live ones and its share of the cluster's limits
//! current. A heartbeat every interval, and a recount of the live daemons after each one and whenever
//! another daemon announces itself or its departure. Runs apart from housekeeping so that slow queries
//! there never delay a heartbeat.
//!
//! The others count this daemon dead once its heartbeat is two intervals old and take its share; if
//! its heartbeat cannot be written for most of that time, it stops sending (closes its limiters) until
//! a heartbeat gets through, so the cluster never sends its share twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Shared;

pub(super) struct Membership {
    pub(super) shared: Arc<Shared>,
    /// Another daemon joined or left (PostgreSQL's LISTEN; never notified on SQLite).
    pub(super) members_changed: Arc<Notify>,
    /// Stop between rounds.
    pub(super) quit: CancellationToken,
}

impl Membership {
    pub(super) async fn run(self) {
        let every = self.shared.heartbeat_every();
        let mut last_beat = Instant::now();
        let mut next_beat = tokio::time::Instant::now() + every;
        loop {
            let beat = tokio::select! {
                _ = tokio::time::sleep_until(next_beat) => true,
                _ = self.members_changed.notified() => false,
                _ = self.quit.cancelled() => false,
            };
            // Quit between rounds, never inside one: a heartbeat landing after the daemon marked
            // itself stopped would revive it.
            if self.quit.is_cancelled() {
                break;
            }
            if beat {
                next_beat += every;
                if let Some(started) = self.beat(every).await {
                    last_beat = started;
                }
            }
            let fenced = last_beat.elapsed() > self.shared.heartbeat_ttl() * 3 / 4;
            if fenced {
                tracing::warn!(
                    "no heartbeat for {:?}: not sending until one gets through",
                    last_beat.elapsed()
                );
            }
            self.shared.limits.set_fenced(fenced);
            self.recount(every, fenced).await;
        }
    }

    /// Writes the heartbeat (within `every`); when it got through, the instant it was started (the
    /// others see the time written, not the time the write returned).
    async fn beat(&self, every: Duration) -> Option<Instant> {
        let (now, started) = (Utc::now(), Instant::now());
        // What it holds goes with the heartbeat, for the status page's list of daemons.
        let held = self.shared.in_flight.len() as u64;
        let writing = self
            .shared
            .store
            .heartbeat_holding(&self.shared.instance, held, now);
        match tokio::time::timeout(every, writing).await {
            Ok(Ok(())) => {
                self.shared.metrics.heartbeat(now);
                Some(started)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "heartbeat failed");
                None
            }
            Err(_) => {
                tracing::warn!("heartbeat timed out");
                None
            }
        }
    }

    /// Counts the live daemons (within `every`) and takes this one's share of the limits.
    async fn recount(&self, every: Duration, fenced: bool) {
        let shared = &self.shared;
        let counting = shared
            .store
            .live_instances(Utc::now(), shared.heartbeat_ttl());
        match tokio::time::timeout(every, counting).await {
            Ok(Ok(live)) => {
                shared.limits.set_share(live.len() as u32);
                shared.metrics.set_membership(shared.limits.share(), fenced);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot count live daemons"),
            Err(_) => tracing::warn!("counting live daemons timed out"),
        }
    }
}
