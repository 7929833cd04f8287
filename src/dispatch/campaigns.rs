//! The running campaigns as the daemon sees them: each one's [`CampaignRun`] (what its delivery tasks
//! share: spec, sender, templates, content hash, state) and where its claims stand ([`ClaimCursor`]).
//! The main loop refreshes them from the store (pause, resume and cancel take effect here), moves their
//! waves along, completes the finished ones and pauses one whose templates failed for a recipient.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::Shared;
use crate::campaign::template::Templates;
use crate::campaign::waves::{self, Gate};
use crate::campaign::{CampaignSpec, message, preflight};
use crate::store::{Campaign as StoredCampaign, CampaignState, ClaimPosition, StoreError};

/// A running campaign, shared by its delivery tasks.
pub(super) struct CampaignRun {
    pub(super) id: i64,
    pub(super) spec: CampaignSpec,
    pub(super) sender: message::Sender,
    pub(super) templates: Templates,
    pub(super) content_hash: String,
    /// The state at the last refresh: a delivery task waiting for its permits gives its recipient
    /// back as soon as the campaign stops running.
    state: watch::Sender<CampaignState>,
}

impl CampaignRun {
    pub(super) fn state(&self) -> watch::Receiver<CampaignState> {
        self.state.subscribe()
    }

    pub(super) fn is_running(&self) -> bool {
        *self.state.borrow() == CampaignState::Running
    }
}

/// Where the claims of one campaign stand.
pub(super) struct ClaimCursor {
    /// Fresh work is claimed in claim order (deadline first, then id) after this position.
    pub(super) cursor: ClaimPosition,
    /// The cursor goes back to the start every `rescan_secs`, to find rows whose lease expired
    /// behind it (and rows imported since with an earlier deadline).
    pub(super) last_rescan: Instant,
    /// Set when the fresh scan found nothing: wait for the poll interval before scanning again.
    pub(super) idle_until: Instant,
    /// How far fresh claims may go (the end of the released waves).
    pub(super) gate: Gate,
    last_wave_check: Instant,
    /// The last claim found no fresh work: the wave may be finished.
    pub(super) wave_drained: bool,
}

/// A running campaign and where its claims stand.
pub(super) struct Active {
    pub(super) run: Arc<CampaignRun>,
    pub(super) claims: ClaimCursor,
}

/// The running campaigns, by id.
#[derive(Default)]
pub(super) struct Campaigns(HashMap<i64, Active>);

/// The campaign's templates failed for a real recipient: the recorder gives the lease back and the
/// main loop pauses the campaign.
#[derive(Debug)]
pub(super) struct TemplateFailure {
    pub(super) campaign_id: i64,
    pub(super) recipient_id: i64,
    pub(super) message: String,
}

impl Campaigns {
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Active> {
        self.0.values_mut()
    }

    /// Loads newly running campaigns (with a pre-flight check), forgets stopped ones, settles
    /// cancelled ones, and moves the waves of the running ones along.
    pub(super) async fn refresh(&mut self, shared: &Shared) -> anyhow::Result<()> {
        let campaigns = shared.store.campaigns().await?;
        let now = Utc::now();
        for c in &campaigns {
            if let Some(a) = self.0.get(&c.id) {
                a.run.state.send_replace(c.state);
            }
            match c.state {
                CampaignState::Running if !self.0.contains_key(&c.id) => {
                    if let Some(active) = start(shared, c).await? {
                        self.0.insert(c.id, active);
                        tracing::info!(campaign_id = c.id, "sending for campaign");
                    }
                }
                CampaignState::Running => {}
                CampaignState::Cancelled => {
                    settle_cancelled(shared, c.id, now).await?;
                    self.0.remove(&c.id);
                }
                _ => {
                    self.0.remove(&c.id);
                }
            }
            // Only campaigns still (or newly) running are left to move along.
            if let Some(a) = self.0.get_mut(&c.id) {
                advance_waves(shared, a, now).await?;
            }
        }
        Ok(())
    }

    /// A running campaign with no open recipient and nothing in flight is completed.
    pub(super) async fn complete_if_done(
        &mut self,
        shared: &Shared,
        campaign_id: i64,
    ) -> anyhow::Result<()> {
        let Some(p) = shared
            .store
            .progress(Some(campaign_id))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        if p.open() > 0 || p.state != CampaignState::Running || !shared.in_flight.is_empty() {
            return Ok(());
        }
        let why = "every recipient has a final status";
        match set_state(shared, campaign_id, CampaignState::Completed, why).await {
            Ok(_) => {
                waves::finish_all(&shared.store, campaign_id, Utc::now()).await?;
                tracing::info!(
                    campaign_id,
                    sent = p.sent,
                    failed = p.failed,
                    postal = p.postal,
                    "campaign completed"
                );
                self.0.remove(&campaign_id);
            }
            // Another daemon completed it first, or an operator paused it meanwhile.
            Err(StoreError::IllegalTransition { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

/// A campaign found running: its pre-flight check, then what its delivery tasks share. `None` (and
/// the campaign paused) when the pre-flight fails.
async fn start(shared: &Shared, c: &StoredCampaign) -> anyhow::Result<Option<Active>> {
    let report = preflight::check(&shared.store, c).await?;
    if let Some(problem) = report.problem() {
        tracing::error!(
            campaign_id = c.id,
            "pre-flight failed; pausing the campaign"
        );
        let why = format!("pre-flight failed: {problem}");
        let _ = set_state(shared, c.id, CampaignState::Paused, &why).await;
        return Ok(None);
    }
    let (spec, templates) = preflight::templates_of(c)?;
    let sender = message::Sender::of(&spec)?.with_verp(shared.verp.clone());
    let run = CampaignRun {
        id: c.id,
        spec,
        sender,
        templates,
        content_hash: c.content_hash.clone(),
        state: watch::Sender::new(c.state),
    };
    let claims = ClaimCursor {
        cursor: ClaimPosition::START,
        last_rescan: Instant::now(),
        idle_until: Instant::now(),
        gate: Gate::CLOSED,
        last_wave_check: Instant::now() - Duration::from_secs(3600),
        wave_drained: false,
    };
    Ok(Some(Active {
        run: Arc::new(run),
        claims,
    }))
}

/// Moves a campaign to `to` on this daemon's behalf, saying why.
async fn set_state(
    shared: &Shared,
    campaign_id: i64,
    to: CampaignState,
    why: &str,
) -> Result<StoredCampaign, StoreError> {
    let actor = shared.actor();
    shared
        .store
        .set_campaign_state(campaign_id, to, &actor, Some(why))
        .await
}

/// A cancelled campaign's open recipients are settled (once: nothing to do when none is open).
async fn settle_cancelled(
    shared: &Shared,
    campaign_id: i64,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let progress = shared.store.progress(Some(campaign_id)).await?;
    if progress.first().is_none_or(|p| p.open() <= 0) {
        return Ok(());
    }
    let n = shared.store.settle_cancelled(campaign_id, now).await?;
    if n > 0 {
        tracing::info!(campaign_id, recipients = n, "cancelled recipients settled");
    }
    Ok(())
}

/// Waves: at most every two seconds per campaign (the checks cost queries; counting a wave's open
/// members only once its fresh work ran dry).
async fn advance_waves(shared: &Shared, a: &mut Active, now: DateTime<Utc>) -> anyhow::Result<()> {
    let claims = &mut a.claims;
    if claims.last_wave_check.elapsed() < Duration::from_secs(2) {
        return Ok(());
    }
    let (store, actor) = (&shared.store, shared.actor());
    let gate = waves::advance(
        store,
        a.run.id,
        &a.run.spec,
        &actor,
        now,
        claims.wave_drained,
    )
    .await?;
    // A newly released wave's members may have earlier deadlines than the cursor's: scan it from
    // the start.
    if gate != claims.gate {
        claims.cursor = ClaimPosition::START;
    }
    claims.gate = gate;
    claims.last_wave_check = Instant::now();
    claims.wave_drained = false;
    if claims.gate == Gate::CLOSED {
        claims.idle_until = Instant::now() + shared.poll_interval();
    }
    Ok(())
}

impl TemplateFailure {
    /// Pauses the campaign, saying which recipient row failed and why.
    pub(super) async fn pause_campaign(self, shared: &Shared) {
        let TemplateFailure {
            campaign_id,
            recipient_id,
            message,
        } = self;
        tracing::error!(
            campaign_id,
            recipient_id,
            "template failed for a recipient; pausing the campaign"
        );
        let reason = format!("template failed for recipient row {recipient_id}: {message}");
        if let Err(e) = set_state(shared, campaign_id, CampaignState::Paused, &reason).await {
            tracing::warn!(campaign_id, error = %e, "could not pause the campaign");
        }
    }
}
