//! The Maildir the daemon watches, for relays that deliver bounces to a mailbox: every message in
//! `new/` is stored ([`super::ingest`]), and only after the store's commit moved to `cur/` (marked
//! seen), so a crash between the two stores it again, which the hash makes a no-op.

use std::path::{Path, PathBuf};

use crate::store::{ReportSource, Store};

use super::ingest::{Stored, store_reports};

/// What one scan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    pub stored: u64,
    pub duplicates: u64,
}

/// Messages stored in one transaction.
const BATCH: usize = 500;

/// Stores and moves every message now in `maildir/new`. A file that cannot be read is left for the
/// next scan (and said); a database error stops the scan (the files stay in `new/`).
pub async fn scan(store: &Store, maildir: &Path, max_bytes: usize) -> anyhow::Result<Scan> {
    let mut scan = Scan::default();
    let new = maildir.join("new");
    let cur = maildir.join("cur");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&new)
        .map_err(|e| {
            anyhow::anyhow!(
                "bounces.maildir {}: cannot read new/ ({e})",
                maildir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for chunk in entries.chunks(BATCH) {
        let mut read = Vec::with_capacity(chunk.len());
        for path in chunk {
            match std::fs::read(path) {
                Ok(raw) => read.push((path, raw)),
                Err(e) => {
                    tracing::warn!(error = %e, "bounces.maildir: a message cannot be read; left in new/")
                }
            }
        }
        let raws: Vec<(&[u8], Option<&str>)> =
            read.iter().map(|(_, raw)| (raw.as_slice(), None)).collect();
        for stored in store_reports(store, ReportSource::Maildir, &raws, max_bytes).await? {
            match stored {
                Stored::New(_) => scan.stored += 1,
                Stored::Duplicate => scan.duplicates += 1,
            }
        }
        // Only after the commit: a crash before this stores them again, which the hash makes a no-op.
        for (path, _) in &read {
            std::fs::rename(path, cur.join(seen_name(path)))?;
        }
    }
    Ok(scan)
}

/// A Maildir file name marked seen (`:2,S`), unless it carries flags already.
fn seen_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.contains(":2,") {
        name
    } else {
        format!("{name}:2,S")
    }
}
