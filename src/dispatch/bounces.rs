//! The bounce role, every `bounces.poll_seconds`: reads the Maildir when one is configured, processes
//! the stored reports (any daemon of a cluster may: they are leased), and refreshes the set of
//! guarded domains that delivery tasks check before sending (a recipient of a guarded domain is
//! parked, not sent: see [`crate::bounce::process`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::bounce::{maildir, process};
use crate::config::BounceSettings;

pub(super) struct Bounces {
    pub(super) shared: Arc<Shared>,
    pub(super) settings: BounceSettings,
    /// Stop between rounds.
    pub(super) quit: CancellationToken,
}

/// Most batches of reports processed in one round, so that a backlog never starves the guard refresh.
const MAX_BATCHES_PER_ROUND: usize = 50;

impl Bounces {
    pub(super) async fn run(self) {
        let every = Duration::from_secs(self.settings.poll_seconds);
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(error = %e, "bounces: round failed; trying again at the next");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.quit.cancelled() => break,
            }
        }
    }

    async fn round(&self) -> anyhow::Result<()> {
        let (store, metrics) = (&self.shared.store, &self.shared.metrics);
        if let Some(dir) = &self.settings.maildir {
            let scan = maildir::scan(store, dir, self.settings.max_report_bytes).await?;
            if scan.stored + scan.duplicates > 0 {
                tracing::info!(
                    stored = scan.stored,
                    duplicates = scan.duplicates,
                    "bounces: Maildir read"
                );
            }
        }
        let instance = &self.shared.instance.id;
        let round =
            process::process_pending(store, &self.settings, instance, MAX_BATCHES_PER_ROUND)
                .await?;
        if round.reports > 0 {
            tracing::info!(
                reports = round.reports,
                bounced = round.applied.bounced,
                held = round.applied.held,
                unmatched = round.unmatched,
                guards_tripped = round.guards_tripped,
                "bounces processed"
            );
        }
        metrics.bounces(round.reports, round.applied.bounced, round.unmatched);
        refresh_guards(&self.shared).await
    }
}

/// Reads the domains the bounce guard holds into `shared.guards`.
pub(super) async fn refresh_guards(shared: &Shared) -> anyhow::Result<()> {
    let guards: HashSet<(i64, String)> = shared
        .store
        .active_bounce_guards()
        .await?
        .into_iter()
        .map(|g| (g.campaign_id, g.domain))
        .collect();
    shared.metrics.set_bounce_guards(guards.len());
    *shared.guards.write().unwrap_or_else(|e| e.into_inner()) = guards;
    Ok(())
}
