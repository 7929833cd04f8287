//! `breach-notifier status`: each campaign's progress and its waves, read from the `campaign_progress`
//! and `wave_progress` views, so the CLI and `psql`/`sqlite3` show the same numbers: counts per status
//! (O(1) counters, never a count over the queue), the send rate over the last minute and hour and the
//! ETA at that rate (from the 10-second `send_buckets`), and the time of the last change; as a table,
//! as JSON, or refreshed with `--watch`.

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use crate::cli::args::StatusArgs;
use crate::store::bounces::BounceGuard;
use crate::store::deadlines::JurisdictionProgress;
use crate::store::{CampaignProgress, Store, StoreError, WaveProgress};

/// A campaign's status line and its waves, as printed and as serialised by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignStatus {
    #[serde(flatten)]
    pub progress: CampaignProgress,
    pub waves: Vec<WaveProgress>,
    /// Receiving domains the bounce guard holds (their recipients wait for email, not postal).
    pub bounce_guards: Vec<BounceGuard>,
    /// Per jurisdiction (`status CAMPAIGN` only): late ones first, then by days left.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jurisdictions: Vec<JurisdictionProgress>,
}

pub async fn show(store: &Store, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    loop {
        let rows = collect(store, args.campaign).await?;
        if args.watch && !args.json {
            // Clear the screen and home the cursor: a live view, not a scroll of tables.
            println!(
                "\x1b[2J\x1b[H{}",
                Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!("{}", render(&rows));
        }
        if !args.watch {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// Reads the status of one campaign or all of them.
pub async fn collect(store: &Store, campaign: Option<i64>) -> anyhow::Result<Vec<CampaignStatus>> {
    let progress = store.progress(campaign).await?;
    if let (Some(id), true) = (campaign, progress.is_empty()) {
        return Err(StoreError::UnknownCampaign(id).into());
    }
    let guards = store.active_bounce_guards().await?;
    let mut out = Vec::with_capacity(progress.len());
    for p in progress {
        let waves = store.wave_progress(p.campaign_id).await?;
        let bounce_guards = guards
            .iter()
            .filter(|g| g.campaign_id == p.campaign_id)
            .cloned()
            .collect();
        let jurisdictions = match campaign {
            Some(id) => by_urgency(store.jurisdiction_progress(id).await?),
            None => Vec::new(),
        };
        out.push(CampaignStatus {
            progress: p,
            waves,
            bounce_guards,
            jurisdictions,
        });
    }
    Ok(out)
}

/// Late ones first (projected past the deadline, or past it with recipients open), then by days left
/// (unknown deadlines last), then by code.
pub fn by_urgency(mut rows: Vec<JurisdictionProgress>) -> Vec<JurisdictionProgress> {
    rows.sort_by(|a, b| {
        b.late()
            .cmp(&a.late())
            .then(
                a.days_left
                    .unwrap_or(i64::MAX)
                    .cmp(&b.days_left.unwrap_or(i64::MAX)),
            )
            .then(a.jurisdiction.cmp(&b.jurisdiction))
    });
    rows
}

fn eta(seconds: Option<i64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// The human view: one line per campaign, then its waves indented.
pub fn render(rows: &[CampaignStatus]) -> String {
    if rows.is_empty() {
        return "no campaigns yet (create one with `breach-notifier campaign create FILE`)\n"
            .into();
    }
    let mut out = table(&campaign_lines(rows), &[1, 2, 14]);
    for g in rows.iter().flat_map(|s| &s.bounce_guards) {
        out.push_str(&format!(
            "\ncampaign {}: bounce guard holds {} since {} ({} of {} final failures were policy rejections: the sender looks blocked); fix it, then `breach-notifier bounce clear-guard`\n",
            g.campaign_id,
            g.domain,
            g.tripped_at.format("%Y-%m-%d %H:%M:%S UTC"),
            g.policy,
            g.failures
        ));
    }
    for s in rows.iter().filter(|s| !s.jurisdictions.is_empty()) {
        out.push_str(&format!(
            "\ncampaign {} by jurisdiction (late first; PROJECTED: open email recipients at the campaign's current rate):\n",
            s.progress.campaign_id
        ));
        for line in table(&jurisdiction_lines(s), &[0, 10, 13]).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    for s in rows.iter().filter(|s| !s.waves.is_empty()) {
        out.push_str(&format!("\ncampaign {} waves:\n", s.progress.campaign_id));
        for line in table(&wave_lines(s), &[1, 2, 3, 14]).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The campaigns table: a header and one line per campaign.
fn campaign_lines(rows: &[CampaignStatus]) -> Vec<Vec<String>> {
    let mut lines = vec![header(&[
        "ID",
        "NAME",
        "STATE",
        "TOTAL",
        "QUEUED",
        "DEFERRED",
        "SENT",
        "FAILED",
        "CANCELLED",
        "POSTAL",
        "BOUNCED",
        "SENT/MIN",
        "SENT/H",
        "ETA",
        "LAST CHANGE (UTC)",
    ])];
    for s in rows {
        let r = &s.progress;
        lines.push(vec![
            r.campaign_id.to_string(),
            r.name.clone(),
            r.state.to_string(),
            r.total.to_string(),
            r.queued.to_string(),
            r.deferred.to_string(),
            r.sent.to_string(),
            r.failed.to_string(),
            r.cancelled.to_string(),
            r.postal.to_string(),
            r.bounced.to_string(),
            r.sent_last_minute.to_string(),
            r.sent_last_hour.to_string(),
            eta(r.eta_seconds),
            r.last_change_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    lines
}

/// One campaign's jurisdictions table: a header and one line per jurisdiction (codes and counts only).
fn jurisdiction_lines(s: &CampaignStatus) -> Vec<Vec<String>> {
    let mut lines = vec![header(&[
        "JURISDICTION",
        "RESIDENTS",
        "EMAILED",
        "BOUNCED",
        "POSTAL PENDING",
        "OPEN",
        "FAILED",
        "DEADLINE",
        "DAYS LEFT",
        "PROJECTED",
        "BASIS",
        "ETA",
        "LATE",
        "NOTE",
    ])];
    let day = |d: Option<chrono::NaiveDate>| d.map_or_else(|| "-".into(), |d| d.to_string());
    for j in &s.jurisdictions {
        lines.push(vec![
            j.jurisdiction.clone().unwrap_or_else(|| "(none)".into()),
            j.residents.to_string(),
            j.notified_email.to_string(),
            j.bounced.to_string(),
            j.postal_pending.to_string(),
            (j.queued + j.deferred).to_string(),
            j.failed.to_string(),
            day(j.deadline),
            j.days_left.map_or_else(|| "-".into(), |d| d.to_string()),
            day(j.projected_completion),
            j.basis.clone().unwrap_or_else(|| "-".into()),
            eta(j.eta_seconds),
            if j.late() { "LATE" } else { "" }.into(),
            match (j.basis.as_deref(), j.deadline_days) {
                (Some("internal_target"), Some(days)) => format!("internal target {days} days"),
                (None, _) => "no deadline (campaign has no discovered_at)".into(),
                _ => String::new(),
            },
        ]);
    }
    lines
}

/// One campaign's waves table: a header and one line per wave.
fn wave_lines(s: &CampaignStatus) -> Vec<Vec<String>> {
    let mut lines = vec![header(&[
        "WAVE",
        "SIZE",
        "RELEASE",
        "STATE",
        "MEMBERS",
        "QUEUED",
        "DEFERRED",
        "SENT",
        "FAILED",
        "CANCELLED",
        "SENT/MIN",
        "SENT/H",
        "ETA",
        "LAST CHANGE (UTC)",
    ])];
    for v in &s.waves {
        lines.push(vec![
            v.number.to_string(),
            v.size_spec.to_string(),
            v.release_rule.to_string(),
            v.state.to_string(),
            v.total.to_string(),
            v.queued.to_string(),
            v.deferred.to_string(),
            v.sent.to_string(),
            v.failed.to_string(),
            v.cancelled.to_string(),
            v.sent_last_minute.to_string(),
            v.sent_last_hour.to_string(),
            eta(v.eta_seconds),
            v.last_change_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    lines
}

/// Aligns cells in columns: numbers to the right, the columns in `left` to the left.
fn table(lines: &[Vec<String>], left: &[usize]) -> String {
    let columns = lines[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if left.contains(&c) {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
