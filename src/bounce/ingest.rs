//! Storing a report as it arrives, before anything acknowledges it: hashed as received (the same
//! report twice is stored once), cut to `bounces.max_report_bytes`, and redacted ([`super::redact`]:
//! the returned copy of our notice holds the breach text and the person's data). Nothing here parses
//! for meaning: a report that cannot be understood is still stored, for review, never refused (a
//! refusal would bounce the bounce). Processing comes later, in the daemon ([`super::process`]).

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::store::bounces::NewReport;
use crate::store::{ReportSource, Store};

/// What became of one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored under this id.
    New(i64),
    /// The same bytes were stored before.
    Duplicate,
}

/// Stores one report of `source`. `max_bytes` caps what is kept (the hash covers all of `raw`).
pub async fn store_report(
    store: &Store,
    source: ReportSource,
    raw: &[u8],
    envelope_to: Option<&str>,
    max_bytes: usize,
) -> crate::store::Result<Stored> {
    Ok(
        store_reports(store, source, &[(raw, envelope_to)], max_bytes)
            .await?
            .remove(0),
    )
}

/// Stores several reports of `source` in one transaction.
pub async fn store_reports(
    store: &Store,
    source: ReportSource,
    raws: &[(&[u8], Option<&str>)],
    max_bytes: usize,
) -> crate::store::Result<Vec<Stored>> {
    let prepared: Vec<(String, Vec<u8>)> = raws
        .iter()
        .map(|(raw, _)| {
            (
                hex::encode(Sha256::digest(raw)),
                kept(source, raw, max_bytes),
            )
        })
        .collect();
    let reports: Vec<NewReport<'_>> = raws
        .iter()
        .zip(&prepared)
        .map(|((raw, envelope_to), (sha256, body))| NewReport {
            source,
            sha256,
            received_size: raw.len() as i64,
            envelope_to: *envelope_to,
            body,
        })
        .collect();
    let ids = store.save_bounce_reports(&reports, Utc::now()).await?;
    Ok(ids
        .into_iter()
        .map(|id| id.map_or(Stored::Duplicate, Stored::New))
        .collect())
}

/// What is kept of a report: cut to `max_bytes`, and a message redacted.
fn kept(source: ReportSource, raw: &[u8], max_bytes: usize) -> Vec<u8> {
    let kept = &raw[..raw.len().min(max_bytes)];
    match source {
        // A webhook's JSON is our provider's record of the event, without the message: kept whole.
        ReportSource::Ses | ReportSource::Sendgrid => kept.to_vec(),
        ReportSource::Pipe | ReportSource::Maildir => super::redact::redact(kept),
    }
}
