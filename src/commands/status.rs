//! `breach-notifier status`: each campaign's progress from the `campaign_progress` view, which reads
//! O(1) counters (never a count over the queue), as a table or as JSON.

use std::process::ExitCode;

use crate::cli::StatusArgs;
use crate::store::{CampaignProgress, Store, StoreError};

pub async fn show(store: &Store, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let rows = store.progress(args.campaign).await?;
    if let (Some(id), true) = (args.campaign, rows.is_empty()) {
        return Err(StoreError::UnknownCampaign(id).into());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", render_table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

/// The human table: one line per campaign, counts right-aligned.
pub fn render_table(rows: &[CampaignProgress]) -> String {
    if rows.is_empty() {
        return "no campaigns yet (create one with `breach-notifier campaign create FILE`)\n"
            .into();
    }
    let header = [
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
        "LAST CHANGE (UTC)",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in rows {
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
            r.last_change_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                // Name, state and time read left to right; numbers line up on the right.
                if matches!(c, 1 | 2 | 10) {
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
