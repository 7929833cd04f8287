//! `breach-notifier report regulators`: which regulators and credit bureaus a campaign's breach must be
//! reported to, by when, with the figures they ask for, and where substitute notice is allowed
//! (docs/regulators.md), as CSV, JSON or Markdown.
//!
//! The figures come from the store ([`Store::resident_figures`]: the per-jurisdiction counters, or one
//! aggregate query grouped by the database; no recipient reaches this process), the duties from the pure
//! [`rules::report::build`], which this module feeds and prints. Only codes, counts, dates and the
//! rules' own words are printed: never a recipient's data.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

use crate::cli::args::{ReportArgs, ReportFormat};
use crate::config::RulesSettings;
use crate::rules::deadline::BreachDates;
use crate::rules::report::{Duty, Figures, RegulatorReport, ReportInput, build};
use crate::rules::{self, AppliesBy};
use crate::store::Store;
use crate::store::report::ResidentFigures;

/// The report with what it was computed for.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub campaign_id: i64,
    /// The last day counted (`--as-of`): what happened after it is not counted.
    pub as_of: Option<NaiveDate>,
    pub discovered_at: Option<NaiveDate>,
    pub determined_at: Option<NaiveDate>,
    /// The operator's rules file over the shipped rules, when there is one.
    pub rules_override: Option<String>,
    #[serde(flatten)]
    pub report: RegulatorReport,
}

pub async fn regulators(
    store: &Store,
    settings: &RulesSettings,
    args: &ReportArgs,
) -> anyhow::Result<ExitCode> {
    let report = collect(store, settings, args.campaign, args.as_of).await?;
    let text = match args.format {
        ReportFormat::Csv => render_csv(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        ReportFormat::Md => render_md(&report),
    };
    match &args.output {
        None => print!("{text}"),
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write the report to {}", path.display()))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the campaign's figures as of the end of `as_of` (UTC), or now, and builds the report.
pub async fn collect(
    store: &Store,
    settings: &RulesSettings,
    campaign_id: i64,
    as_of: Option<NaiveDate>,
) -> anyhow::Result<Report> {
    let campaign = store.require_campaign(campaign_id).await?;
    let rules = rules::load(settings)?;
    let cut_off = as_of.map(end_of_day);
    let figures = store.resident_figures(campaign.id, cut_off).await?;
    let input = ReportInput {
        rules: &rules,
        dates: campaign.discovered_at.map(|discovered| BreachDates {
            discovered,
            determined: campaign.determined_at,
        }),
        internal_target_days: settings.internal_target_days,
        figures: figures.into_iter().map(figures_of).collect(),
    };
    Ok(Report {
        campaign_id: campaign.id,
        as_of,
        discovered_at: campaign.discovered_at,
        determined_at: campaign.determined_at,
        rules_override: rules.override_file().map(|p| p.display().to_string()),
        report: build(&input),
    })
}

/// The first instant after `day` (UTC): what happened on that day counts.
fn end_of_day(day: NaiveDate) -> DateTime<Utc> {
    day.succ_opt()
        .unwrap_or(day)
        .and_time(NaiveTime::MIN)
        .and_utc()
}

fn figures_of(f: ResidentFigures) -> (Option<String>, Figures) {
    let code = (!f.jurisdiction.is_empty()).then_some(f.jurisdiction);
    let figures = Figures {
        residents: f.residents,
        email_sent: f.email_sent,
        bounced: f.bounced,
        letters_owed: f.letters_owed,
        no_contact: f.no_contact,
        first_email: f.first_email,
        last_email: f.last_email,
    };
    (code, figures)
}

/// The CSV columns: one line per duty (and per unknown code, and for recipients without one).
pub const CSV_COLUMNS: &[&str] = &[
    "jurisdiction",
    "jurisdiction_name",
    "applies_by",
    "codes",
    "residents",
    "email_sent",
    "notified_email",
    "bounced",
    "letters_owed",
    "no_contact",
    "first_email_at",
    "last_email_at",
    "consumer_deadline",
    "kind",
    "name",
    "threshold",
    "threshold_text",
    "compared_with",
    "threshold_met",
    "condition",
    "clock",
    "due",
    "due_note",
    "asks",
];

pub fn render_csv(report: &Report) -> String {
    let mut out = String::new();
    csv_line(&mut out, CSV_COLUMNS.iter().map(|c| c.to_string()));
    for j in &report.report.jurisdictions {
        let head = [
            j.code.clone(),
            j.name.clone(),
            applies_by(j.applies_by).into(),
            j.codes.join(" "),
        ];
        let deadline = opt(j.consumer_deadline);
        for d in &j.duties {
            let cells = head
                .iter()
                .cloned()
                .chain(figure_cells(&j.figures))
                .chain([deadline.clone()])
                .chain(duty_cells(d));
            csv_line(&mut out, cells);
        }
    }
    let others = report
        .report
        .unknown_codes
        .iter()
        .map(|(code, f)| (code.as_str(), "unknown_code", f, UNKNOWN_NOTE))
        .chain([(
            "",
            "no_code",
            &report.report.without_code,
            "recipients without a jurisdiction code: no regulator can be named",
        )]);
    for (code, kind, f, note) in others.filter(|(_, _, f, _)| f.residents > 0) {
        let cells = [code.to_string(), String::new(), String::new(), code.into()]
            .into_iter()
            .chain(figure_cells(f))
            .chain([String::new(), kind.into()])
            .chain((0..8).map(|_| String::new()))
            .chain([note.into(), String::new()]);
        csv_line(&mut out, cells);
    }
    out
}

const UNKNOWN_NOTE: &str =
    "code not in the rules: no regulator can be named (add it with rules.file)";

fn figure_cells(f: &Figures) -> [String; 8] {
    let time = |t: Option<DateTime<Utc>>| t.map_or_else(String::new, |t| t.to_rfc3339());
    [
        f.residents.to_string(),
        f.email_sent.to_string(),
        f.emailed().to_string(),
        f.bounced.to_string(),
        f.letters_owed.to_string(),
        f.no_contact.to_string(),
        time(f.first_email),
        time(f.last_email),
    ]
}

fn duty_cells(d: &Duty) -> [String; 11] {
    [
        d.kind.as_str().into(),
        d.name.clone(),
        d.threshold.map_or_else(String::new, |t| t.to_string()),
        d.threshold_text.clone(),
        d.compared_with.to_string(),
        d.met.as_str().into(),
        d.condition.clone().unwrap_or_default(),
        d.clock.clone(),
        opt(d.due),
        d.due_note.clone(),
        d.asks.join("; "),
    ]
}

fn opt(day: Option<NaiveDate>) -> String {
    day.map_or_else(String::new, |d| d.to_string())
}

fn applies_by(a: AppliesBy) -> &'static str {
    match a {
        AppliesBy::Residence => "residence",
        AppliesBy::Sector => "sector",
    }
}

/// One RFC 4180 line: fields with a comma, quote or line break are quoted, quotes doubled.
fn csv_line(out: &mut String, cells: impl IntoIterator<Item = String>) {
    let cells: Vec<String> = cells
        .into_iter()
        .map(|c| {
            if c.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c
            }
        })
        .collect();
    out.push_str(&cells.join(","));
    out.push_str("\r\n");
}

/// Markdown for counsel: the figures, then per jurisdiction its duties in a table.
pub fn render_md(report: &Report) -> String {
    let mut out = md_header(report);
    for j in &report.report.jurisdictions {
        let f = &j.figures;
        let _ = writeln!(out, "\n## {} ({})\n", j.name, j.code);
        if j.applies_by == AppliesBy::Sector {
            let _ = writeln!(
                out,
                "Applies by sector: only if the company is in it (counsel decides). Compared with the whole campaign.\n"
            );
        }
        let _ = writeln!(
            out,
            "Residents {}; notified by email {} (accepted {}, bounced {}); letters owed {}; without contact information {}; first email {}; last email {}. Consumer notice due: {} ({}).\n",
            f.residents,
            f.emailed(),
            f.email_sent,
            f.bounced,
            f.letters_owed,
            f.no_contact,
            md_time(f.first_email),
            md_time(f.last_email),
            j.consumer_deadline
                .map_or_else(|| "-".to_string(), |d| d.to_string()),
            j.consumer_deadline_basis
        );
        out.push_str("| duty | threshold | compared with | met | clock | due | note | asks |\n");
        out.push_str("|---|---|---|---|---|---|---|---|\n");
        for d in &j.duties {
            md_duty(&mut out, d);
        }
    }
    md_unknown(&mut out, report);
    out
}

fn md_header(report: &Report) -> String {
    let mut out = format!(
        "# Regulator report, campaign {}\n\nAs of: {}. Discovered: {}. Determined: {}. Rules: shipped{}.\n",
        report.campaign_id,
        report
            .as_of
            .map_or_else(|| "now".to_string(), |d| format!("end of {d} (UTC)")),
        opt(report.discovered_at),
        report
            .determined_at
            .map_or_else(|| "not recorded".to_string(), |d| d.to_string()),
        report
            .rules_override
            .as_deref()
            .map_or_else(String::new, |f| format!(", with the override file {f}")),
    );
    out.push_str(
        "\nNot legal advice: the rules file's figures applied to the campaign's counts. A threshold \
         not met is listed with the count it was compared with.\n",
    );
    out
}

fn md_duty(out: &mut String, d: &Duty) {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let _ = writeln!(
        out,
        "| {} {} | {} | {} | {} | {} | {} | {} | {} |",
        d.kind.as_str(),
        cell(&d.name),
        cell(
            &d.threshold
                .map_or_else(|| d.threshold_text.clone(), |t| t.to_string())
        ),
        d.compared_with,
        d.met.as_str(),
        cell(&d.clock),
        opt(d.due),
        cell(&d.due_note),
        cell(&d.asks.join("; ")),
    );
}

fn md_unknown(out: &mut String, report: &Report) {
    let r = &report.report;
    if r.unknown_codes.is_empty() && r.without_code.residents == 0 {
        return;
    }
    out.push_str("\n## Residents no regulator can be named for\n\n");
    for (code, f) in &r.unknown_codes {
        let _ = writeln!(out, "- {code}: {} residents ({UNKNOWN_NOTE})", f.residents);
    }
    if r.without_code.residents > 0 {
        let _ = writeln!(out, "- no code: {} residents", r.without_code.residents);
    }
}

fn md_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}
