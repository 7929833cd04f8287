//! `breach-notifier bounce …`: take a bounce in from an MTA, process stored reports, list and clear
//! the guard against mass false failures.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use chrono::Utc;

use crate::bounce::ingest::{Stored, store_report};
use crate::bounce::maildir;
use crate::bounce::process::process_pending;
use crate::cli::args::BounceCommand;
use crate::config::Settings;
use crate::store::{ReportSource, Store};

/// sysexits.h's EX_TEMPFAIL: the MTA keeps the message and tries again later.
pub const EX_TEMPFAIL: u8 = 75;

/// `bounce ingest`: reads one message on standard input and stores it. Exit 0 when stored (or stored
/// before), 75 when anything stands in the way (configuration, database), never a permanent failure.
pub async fn ingest(config: Option<&Path>, envelope_to: Option<&str>) -> ExitCode {
    match try_ingest(config, envelope_to).await {
        Ok(stored) => {
            match stored {
                Stored::New(id) => eprintln!("bounce stored as report {id}"),
                Stored::Duplicate => eprintln!("bounce already stored (same SHA-256)"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: bounce not stored, the MTA should try again later: {e:#}");
            ExitCode::from(EX_TEMPFAIL)
        }
    }
}

async fn try_ingest(config: Option<&Path>, envelope_to: Option<&str>) -> anyhow::Result<Stored> {
    let loaded = Settings::load(config)?;
    let max = loaded.settings.bounces.max_report_bytes;
    // Keep at most `max` bytes in memory; the rest is read (the MTA wants it consumed) and dropped.
    let mut raw = Vec::new();
    let mut stdin = std::io::stdin().lock();
    (&mut stdin).take(max as u64).read_to_end(&mut raw)?;
    let dropped = std::io::copy(&mut stdin, &mut std::io::sink())?;
    if dropped > 0 {
        eprintln!("bounce larger than bounces.max_report_bytes ({max}): {dropped} bytes dropped");
    }
    let store = super::open(&loaded.settings).await?;
    let stored = store_report(&store, ReportSource::Pipe, &raw, envelope_to, max).await?;
    store.close().await;
    Ok(stored)
}

/// The other `bounce` commands.
pub async fn run(
    store: &Store,
    settings: &Settings,
    cmd: BounceCommand,
) -> anyhow::Result<ExitCode> {
    match cmd {
        BounceCommand::Ingest { .. } => unreachable!("handled before the configuration is loaded"),
        BounceCommand::Process => {
            if let Some(dir) = &settings.bounces.maildir {
                let started = std::time::Instant::now();
                let scan = maildir::scan(store, dir, settings.bounces.max_report_bytes).await?;
                println!(
                    "read the Maildir in {:.1} s: {} reports stored, {} stored before",
                    started.elapsed().as_secs_f64(),
                    scan.stored,
                    scan.duplicates
                );
            }
            let started = std::time::Instant::now();
            let instance = format!("cli-{}", std::process::id());
            let round = process_pending(store, &settings.bounces, &instance, usize::MAX).await?;
            println!("processed in {:.1} s", started.elapsed().as_secs_f64());
            println!(
                "processed {} reports: {} recipients bounced, {} held by a guard, {} reports matched no recipient, {} guards tripped",
                round.reports,
                round.applied.bounced,
                round.applied.held,
                round.unmatched,
                round.guards_tripped
            );
        }
        BounceCommand::Reclassify => {
            let version = crate::bounce::classify::CLASSIFIER_VERSION as i32;
            let n = store.requeue_bounce_reports(version).await?;
            println!("{n} reports will be classified again (by the daemon, or `bounce process`)");
        }
        BounceCommand::Guards => {
            let guards = store.active_bounce_guards().await?;
            if guards.is_empty() {
                println!("no guard is active");
            }
            for g in guards {
                println!(
                    "campaign {} domain {}: {} of {} final failures were policy rejections; held since {}",
                    g.campaign_id,
                    g.domain,
                    g.policy,
                    g.failures,
                    g.tripped_at.to_rfc3339()
                );
            }
        }
        BounceCommand::ClearGuard {
            campaign,
            domain,
            reason,
        } => {
            let actor = super::cli_actor();
            match store
                .clear_bounce_guard(campaign, &domain, &actor, &reason, Utc::now())
                .await?
            {
                Some(n) => {
                    println!("guard on {domain} cleared; {n} held recipients will be emailed again")
                }
                None => anyhow::bail!(
                    "campaign {campaign} has no active guard on {domain} (see `bounce guards`)"
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
