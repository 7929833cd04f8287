//! The recorder: writes the delivery tasks' outcomes in batches (`record_attempts`: attempt rows plus
//! status changes in one transaction), gives back the leases of recipients that were not attempted,
//! and only then lets the in-flight set forget them. Ends when every delivery task's sender is gone,
//! after writing what it still holds.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::Shared;
use super::campaigns::TemplateFailure;
use super::delivery::Finished;
use crate::store::{AttemptRecord, StoreError};

pub(super) struct Recorder {
    pub(super) shared: Arc<Shared>,
    pub(super) outcomes: mpsc::Receiver<Finished>,
    /// To the main loop, which pauses the campaign.
    pub(super) template_failures: mpsc::UnboundedSender<TemplateFailure>,
}

/// Outcomes waiting to be written.
#[derive(Default)]
struct Batch {
    records: Vec<AttemptRecord>,
    releases: Vec<i64>,
    /// Released, then parked for the bounce guard: (recipient, campaign, domain).
    parked: Vec<(i64, i64, String)>,
}

impl Batch {
    fn len(&self) -> usize {
        self.records.len() + self.releases.len() + self.parked.len()
    }
}

impl Recorder {
    pub(super) async fn run(mut self) -> anyhow::Result<()> {
        let mut batch = Batch::default();
        let mut closed = false;
        while !closed {
            closed = self.collect(&mut batch).await;
            let span = tracing::info_span!(
                "record",
                attempts = batch.records.len(),
                releases = batch.releases.len()
            );
            self.write(&mut batch).instrument(span).await;
        }
        Ok(())
    }

    /// Gathers outcomes until the batch is full or `flush_ms` passed; true once every sender is gone.
    async fn collect(&mut self, batch: &mut Batch) -> bool {
        let settings = &self.shared.settings;
        let (flush_max, flush_every) = (
            settings.flush_max as usize,
            Duration::from_millis(settings.flush_ms),
        );
        let deadline = tokio::time::sleep(flush_every);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                msg = self.outcomes.recv() => match msg {
                    Some(Finished::Attempted(r)) => batch.records.push(r),
                    Some(Finished::Released { recipient_id }) => batch.releases.push(recipient_id),
                    Some(Finished::Parked { recipient_id, campaign_id, domain }) => {
                        batch.releases.push(recipient_id);
                        batch.parked.push((recipient_id, campaign_id, domain));
                    }
                    Some(Finished::TemplateFailed(failure)) => {
                        batch.releases.push(failure.recipient_id);
                        let _ = self.template_failures.send(failure);
                    }
                    None => return true,
                },
                _ = &mut deadline => return false,
            }
            if batch.len() >= flush_max {
                return false;
            }
        }
    }

    /// Outcomes must reach the database: retries until they do (the database may be restarting).
    async fn write(&self, batch: &mut Batch) {
        let mut delay = Duration::from_millis(200);
        while batch.len() > 0 {
            if let Err(e) = self.write_once(batch).await {
                tracing::warn!(error = %e, pending = batch.len(), "cannot record outcomes yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Writes the attempts, then the releases; each part leaves the batch (and the in-flight set)
    /// once written, so a retry never writes an attempt twice.
    async fn write_once(&self, batch: &mut Batch) -> Result<(), StoreError> {
        let (store, instance) = (&self.shared.store, &self.shared.instance.id);
        let in_flight = &self.shared.in_flight;
        if !batch.records.is_empty() {
            store.record_attempts(instance, &batch.records).await?;
            in_flight.settle(batch.records.drain(..).map(|r| r.recipient_id));
        }
        if !batch.releases.is_empty() {
            let n = store.release_leases(instance, &batch.releases).await?;
            self.shared.metrics.released(n);
            in_flight.settle(batch.releases.drain(..));
        }
        while let Some((id, campaign_id, domain)) = batch.parked.last() {
            if !store.park_for_guard(*id).await? {
                // The guard was cleared since this daemon last read them: stop parking its domain.
                self.shared
                    .guards
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(*campaign_id, domain.clone()));
            }
            batch.parked.pop();
        }
        Ok(())
    }
}
