//! One recipient's journey: rate-limit permits (domain, campaign and global, taken at one instant; a
//! slow domain never blocks another), a send slot, rendering, the transport, and the outcome handed
//! to the recorder.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{SemaphorePermit, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Shared;
use super::campaigns::{CampaignRun, TemplateFailure};
use super::limits::is_throttling;
use super::retry::{next_state, truncate};
use crate::campaign::message;
use crate::campaign::template::Rendered;
use crate::ops::metrics::Outcome;
use crate::store::{AttemptOutcome, AttemptRecord, CampaignState, NextState, Recipient};
use crate::transport::SendResult;

/// What a delivery task reports to the recorder.
pub(super) enum Finished {
    Attempted(AttemptRecord),
    /// Not attempted (shutdown, pause or cancel before sending): give the lease back.
    Released {
        recipient_id: i64,
    },
    /// The campaign's templates failed for this recipient: give the lease back, pause the campaign.
    TemplateFailed(TemplateFailure),
    /// The bounce guard holds the recipient's domain: give the lease back and park the recipient
    /// until the guard is cleared.
    Parked {
        recipient_id: i64,
        campaign_id: i64,
        domain: String,
    },
}

/// One claimed recipient, from its permits to its outcome.
pub(super) struct DeliveryTask {
    pub(super) recipient: Recipient,
    pub(super) campaign: Arc<CampaignRun>,
    pub(super) shared: Arc<Shared>,
    /// To the recorder.
    pub(super) done: mpsc::Sender<Finished>,
    /// The drain began: give the recipient back unless its send has started.
    pub(super) stop: CancellationToken,
}

impl DeliveryTask {
    pub(super) async fn run(self) {
        let span = tracing::info_span!(
            "delivery",
            campaign_id = self.campaign.id,
            recipient_id = self.recipient.id
        );
        async {
            // The send slot is held until the outcome is handed over.
            let (finished, _slot) = self.deliver().await;
            let _ = self.done.send(finished).await;
        }
        .instrument(span)
        .await
    }

    async fn deliver(&self) -> (Finished, Option<SemaphorePermit<'_>>) {
        let id = self.recipient.id;
        let release = Finished::Released { recipient_id: id };
        let Some(to) = self.recipient.email.as_deref() else {
            return (release, None);
        };
        let domain = to.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if self.shared.guarded(self.campaign.id, domain) {
            let parked = Finished::Parked {
                recipient_id: id,
                campaign_id: self.campaign.id,
                domain: domain.to_ascii_lowercase(),
            };
            return (parked, None);
        }
        let mut state = self.campaign.state();
        let Some(slot) = self.permits_and_slot(domain, &mut state).await else {
            return (release, None);
        };
        if *state.borrow() != CampaignState::Running {
            return (release, Some(slot));
        }
        let rendered = match self.campaign.templates.render(&self.recipient) {
            Ok(r) => r,
            Err(e) => {
                let failure = TemplateFailure {
                    campaign_id: self.campaign.id,
                    recipient_id: id,
                    message: e.to_string(),
                };
                return (Finished::TemplateFailed(failure), Some(slot));
            }
        };
        let started_at = Utc::now();
        let (answer, message_id) = self.send(to, &rendered).await;
        let finished_at = Utc::now();
        let (outcome, code) = (answer.outcome, answer.code);
        let next = next_state(
            &self.shared.settings,
            &self.recipient,
            outcome,
            code,
            &answer.reply,
            finished_at,
        );
        self.count(domain, &answer, &next);
        tracing::debug!(outcome = %outcome, code, "attempt");
        let record = AttemptRecord {
            recipient_id: id,
            campaign_id: self.campaign.id,
            started_at,
            finished_at,
            outcome,
            smtp_code: code,
            reply: Some(truncate(&answer.reply, 1000)),
            message_id,
            next,
        };
        (Finished::Attempted(record), Some(slot))
    }

    /// Waits for the rate-limit permits, then for a send slot; `None` if the drain begins or the
    /// campaign stops running first. A message whose permits went stale waiting for a slot (the relay
    /// was slow and every slot busy) takes them again: sending on old permits after a stall would
    /// release in one burst everything the limits had spread out.
    async fn permits_and_slot(
        &self,
        domain: &str,
        state: &mut watch::Receiver<CampaignState>,
    ) -> Option<SemaphorePermit<'_>> {
        let (shared, campaign) = (&self.shared, &self.campaign);
        loop {
            let permits = tokio::select! {
                p = shared.limits.acquire(domain, campaign.id, &campaign.spec.rate) => p,
                _ = self.stop.cancelled() => return None,
                // Paused or cancelled before this notice left: give it back untouched.
                _ = state.wait_for(|s| *s != CampaignState::Running) => return None,
            };
            if permits.waited > Duration::from_millis(1) {
                shared.metrics.rate_limit_wait(permits.waited);
            }
            let granted = Instant::now();
            let slot = tokio::select! {
                p = shared.send_slots.acquire() => p.ok()?,
                _ = self.stop.cancelled() => return None,
            };
            if granted.elapsed() <= permits.lifetime {
                return Some(slot);
            }
        }
    }

    /// Builds the message and hands it to the transport: what it answered (or why nothing could be
    /// sent), and the Message-ID.
    async fn send(&self, to: &str, rendered: &Rendered) -> (SendResult, String) {
        let (campaign, id) = (&self.campaign, self.recipient.id);
        let hash = &campaign.content_hash;
        let dkim = self.shared.dkim.as_ref();
        match campaign
            .sender
            .build(hash, campaign.id, id, to, rendered, dkim)
        {
            Ok(out) => {
                let sending = Instant::now();
                // Boxed: the transport's future (lettre's connection and TLS state inline) is most
                // of 10 KB, and a task's future is copied whole when it is spawned, finished and
                // collected. Boxing it keeps every queued delivery task small.
                let name = format!("{}-{id}", campaign.id);
                let answer = Box::pin(self.shared.transport.send(&out, &name)).await;
                self.shared.metrics.send_latency(sending.elapsed());
                (answer, out.message_id)
            }
            // The stored address no longer parses (it did at import): nothing can ever be sent.
            Err(e) => (
                SendResult {
                    outcome: AttemptOutcome::Permanent,
                    code: None,
                    reply: e.to_string(),
                },
                message::message_id(hash, campaign.id, id, "invalid"),
            ),
        }
    }

    /// Counts the outcome (once, in the registry) and tells the limits what the domain answered.
    fn count(&self, domain: &str, answer: &SendResult, next: &NextState) {
        let (limits, metrics) = (&self.shared.limits, &self.shared.metrics);
        let outcome = match (answer.outcome, next) {
            (AttemptOutcome::Sent, _) => {
                limits.delivered(domain);
                Outcome::Sent
            }
            (_, NextState::Retry { .. }) => {
                if is_throttling(answer.code, &answer.reply) {
                    limits.throttled(domain);
                }
                Outcome::Deferred
            }
            _ => Outcome::Failed,
        };
        metrics.attempt(self.campaign.id, domain, outcome);
    }
}
