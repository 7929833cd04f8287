//! `breach-notifier status`: each campaign's progress and its waves, read from the `campaign_progress`
//! and `wave_progress` views, so the CLI and `psql`/`sqlite3` show the same numbers: counts per status
//! (O(1) counters, never a count over the queue), the send rate over the last minute and hour and the
//! ETA at that rate (from the 10-second `send_buckets`), and the time of the last change; as a table,
//! as JSON, or refreshed with `--watch`. What is read is [`crate::ops::status`]'s, shared with the
//! HTTP endpoint's `/api/status`; for one campaign, the deadline forecast (`campaign::forecast`, which
//! the operations layer may not use) is added here: which jurisdictions would be late, by how many
//! days, and what would fix it.

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;

use crate::campaign::forecast::{self, Forecast, Limits};
use crate::cli::args::StatusArgs;
use crate::ops::status::eta;
pub use crate::ops::status::{CampaignStatus, collect, collect_with_forecast};
use crate::store::Store;

pub async fn show(store: &Store, args: &StatusArgs, limits: Limits) -> anyhow::Result<ExitCode> {
    loop {
        let (rows, forecast) = collect_with_forecast(store, args.campaign, limits).await?;
        if args.watch && !args.json {
            // Clear the screen and home the cursor: a live view, not a scroll of tables.
            println!(
                "\x1b[2J\x1b[H{}",
                Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        if args.json {
            println!("{}", crate::ops::status::to_json(&rows, forecast.as_ref())?);
        } else {
            print!("{}", render_with(&rows, forecast.as_ref()));
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

/// [`render`], then the forecast in words: the rate and cap it assumes, the late jurisdictions and
/// the fix.
pub fn render_with(rows: &[CampaignStatus], forecast: Option<&Forecast>) -> String {
    let mut out = render(rows);
    if let (Some(f), Some(row)) = (forecast, rows.first()) {
        out.push_str(&forecast_lines(row.progress.campaign_id, f));
    }
    out
}

fn forecast_lines(campaign_id: i64, f: &Forecast) -> String {
    let rate = match (f.rate_per_second, f.rate_source) {
        (None, _) => "no rate limit".to_string(),
        (Some(r), forecast::RateSource::Measured) => format!("{r:.2}/s measured"),
        (Some(r), _) => format!("{r:.2}/s configured"),
    };
    let cap = f
        .daily_cap
        .map_or_else(|| "no daily cap".to_string(), |c| format!("daily cap {c}"));
    // With nothing open, "on time" would say nothing about notices that went out after a deadline
    // long passed: the table above shows each deadline beside what was sent.
    let verdict = f.summary().map_or_else(
        || {
            if f.projections.iter().all(|p| p.open == 0) {
                "no email left to send".to_string()
            } else {
                "every jurisdiction projected on time".to_string()
            }
        },
        |s| format!("LATE: {s}"),
    );
    let mut out =
        format!("\ncampaign {campaign_id} forecast ({rate}, {cap}, deadline order): {verdict}\n");
    for note in &f.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
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
            "\ncampaign {} by jurisdiction (late first; PROJECTED: the deadline forecast below):\n",
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

/// A table of `items`, one line each: the header is the first name of each `(name, cell)` pair of
/// `cells`, so a column's name stands beside its value.
fn lines<'a, T: 'a, const N: usize>(
    items: impl IntoIterator<Item = &'a T>,
    cells: impl Fn(&T) -> [(&'static str, String); N],
) -> Vec<Vec<String>> {
    let rows: Vec<_> = items.into_iter().map(cells).collect();
    let header = rows
        .first()
        .map(|r| r.iter().map(|(n, _)| n.to_string()).collect());
    let body = rows
        .into_iter()
        .map(|r| r.into_iter().map(|(_, c)| c).collect());
    header.into_iter().chain(body).collect()
}

/// The campaigns table: a header and one line per campaign.
fn campaign_lines(rows: &[CampaignStatus]) -> Vec<Vec<String>> {
    lines(rows.iter().map(|s| &s.progress), |r| {
        let changed = r.last_change_at.format(TIME).to_string();
        [
            ("ID", r.campaign_id.to_string()),
            ("NAME", r.name.clone()),
            ("STATE", r.state.to_string()),
            ("TOTAL", r.total.to_string()),
            ("QUEUED", r.queued.to_string()),
            ("DEFERRED", r.deferred.to_string()),
            ("SENT", r.sent.to_string()),
            ("FAILED", r.failed.to_string()),
            ("CANCELLED", r.cancelled.to_string()),
            ("POSTAL", r.postal.to_string()),
            ("BOUNCED", r.bounced.to_string()),
            ("SENT/MIN", r.sent_last_minute.to_string()),
            ("SENT/H", r.sent_last_hour.to_string()),
            ("ETA", eta(r.eta_seconds)),
            ("LAST CHANGE (UTC)", changed),
        ]
    })
}

/// One campaign's jurisdictions table: a header and one line per jurisdiction (codes and counts only).
fn jurisdiction_lines(s: &CampaignStatus) -> Vec<Vec<String>> {
    let day = |d: Option<chrono::NaiveDate>| d.map_or_else(|| "-".into(), |d| d.to_string());
    lines(&s.jurisdictions, |j| {
        let note = match (j.basis.as_deref(), j.deadline_days) {
            (Some("internal_target"), Some(days)) => format!("internal target {days} days"),
            (None, _) => {
                "no deadline: needs discovered_at (computed at create, import, start)".into()
            }
            _ => String::new(),
        };
        [
            (
                "JURISDICTION",
                j.jurisdiction.clone().unwrap_or_else(|| "(none)".into()),
            ),
            ("RESIDENTS", j.residents.to_string()),
            ("EMAILED", j.notified_email.to_string()),
            ("BOUNCED", j.bounced.to_string()),
            ("POSTAL PENDING", j.postal_pending.to_string()),
            ("OPEN", (j.queued + j.deferred).to_string()),
            ("FAILED", j.failed.to_string()),
            ("DEADLINE", day(j.deadline)),
            (
                "DAYS LEFT",
                j.days_left.map_or_else(|| "-".into(), |d| d.to_string()),
            ),
            ("PROJECTED", day(j.projected_completion)),
            ("BASIS", j.basis.clone().unwrap_or_else(|| "-".into())),
            ("ETA", eta(j.eta_seconds)),
            ("LATE", if j.late() { "LATE" } else { "" }.into()),
            ("NOTE", note),
        ]
    })
}

/// One campaign's waves table: a header and one line per wave.
fn wave_lines(s: &CampaignStatus) -> Vec<Vec<String>> {
    lines(&s.waves, |v| {
        let changed = v.last_change_at.map(|t| t.format(TIME).to_string());
        [
            ("WAVE", v.number.to_string()),
            ("SIZE", v.size_spec.to_string()),
            ("RELEASE", v.release_rule.to_string()),
            ("STATE", v.state.to_string()),
            ("MEMBERS", v.total.to_string()),
            ("QUEUED", v.queued.to_string()),
            ("DEFERRED", v.deferred.to_string()),
            ("SENT", v.sent.to_string()),
            ("FAILED", v.failed.to_string()),
            ("CANCELLED", v.cancelled.to_string()),
            ("SENT/MIN", v.sent_last_minute.to_string()),
            ("SENT/H", v.sent_last_hour.to_string()),
            ("ETA", eta(v.eta_seconds)),
            ("LAST CHANGE (UTC)", changed.unwrap_or_else(|| "-".into())),
        ]
    })
}

/// How the tables show a time (the header says UTC).
const TIME: &str = "%Y-%m-%d %H:%M:%S";

/// Aligns cells in columns: numbers to the right, the columns in `left` to the left.
fn table(lines: &[Vec<String>], left: &[usize]) -> String {
    let columns = lines.first().map_or(0, Vec::len);
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
