//! `rules show`: what a jurisdiction's rules say and where they came from, as text for the operator
//! and counsel, JSON for machines, or the rules-file entry to copy into an override. Opens no database:
//! the rules are the binary's own data and the file named by `rules.file`.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::json;

use crate::cli::args::RulesShowArgs;
use crate::config::Settings;
use crate::rules::deadline::Amount;
use crate::rules::{
    self, CreditBureaus, Entry, Jurisdiction, Origin, Regulator, Rules, Start, Threshold, Timing,
};

const NOT_ADVICE: &str = "Not legal advice: researched figures as a starting point for counsel, whose reading (rules.file) wins.";

/// `rules show [JURISDICTION] [--json | --toml]`.
pub fn show(settings: &Settings, args: &RulesShowArgs) -> anyhow::Result<ExitCode> {
    let rules = rules::load(&settings.rules)?;
    let target = settings.rules.internal_target_days;
    let Some(code) = &args.jurisdiction else {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&table_json(&rules))?);
        } else {
            print!("{}", table(&rules));
        }
        return Ok(ExitCode::SUCCESS);
    };
    let Some(entry) = rules.get(code) else {
        bail!(
            "no rules for jurisdiction {code:?}; closest known codes: {} (`breach-notifier rules show` lists them all; an override file, rules.file, can add one)",
            rules.closest(code, 3).join(", ")
        );
    };
    if args.toml {
        let file = toml::to_string_pretty(&single(&entry.rules))?;
        print!(
            "# {} as the effective rules have it; {}\n{file}",
            entry.rules.code,
            origin(&entry.origin)
        );
    } else if args.json {
        let value = json!({
            "origin": entry.origin,
            "internal_target_days": target,
            "rules": entry.rules,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", details(entry, target));
    }
    Ok(ExitCode::SUCCESS)
}

/// A rules file holding one entry (what `--toml` prints).
fn single(j: &Jurisdiction) -> rules::RulesFile {
    rules::RulesFile {
        jurisdictions: vec![j.clone()],
        ..Default::default()
    }
}

fn origin(origin: &Origin) -> String {
    match origin {
        Origin::Shipped => format!("from the shipped rules ({})", rules::SHIPPED_NAME),
        Origin::Override {
            file,
            replaced_shipped: true,
        } => format!(
            "from the override file {} (it replaces the shipped entry as a whole)",
            file.display()
        ),
        Origin::Override { file, .. } => format!(
            "from the override file {} (a code the shipped rules do not have)",
            file.display()
        ),
    }
}

fn table(rules: &Rules) -> String {
    let mut out = format!(
        "{:<22} {:<44} {:>10} {:>10}  {:<10} {}\n",
        "CODE", "NAME", "DEADLINE", "REGULATORS", "VERIFIED", "FROM"
    );
    for entry in rules.iter() {
        let j = &entry.rules;
        let name: String = j.name.chars().take(44).collect();
        let from = match &entry.origin {
            Origin::Shipped => "shipped".to_string(),
            Origin::Override { file, .. } => format!("override {}", file.display()),
        };
        let _ = writeln!(
            out,
            "{:<22} {name:<44} {:>10} {:>10}  {:<10} {from}",
            j.code,
            deadline_cell(j),
            j.regulators.len(),
            j.verified_on
        );
    }
    let aliases: Vec<String> = rules
        .aliases()
        .iter()
        .map(|(a, t)| format!("{a} → {t}"))
        .collect();
    let _ = writeln!(
        out,
        "\n{} jurisdictions; aliases: {}. DEADLINE is the individual notice in days (\"text\": the law sets no number; \"none\": no individual notice).",
        rules.len(),
        aliases.join(", ")
    );
    if let Some(file) = rules.override_file() {
        let _ = writeln!(out, "Override file: {}", file.display());
    }
    let _ = writeln!(out, "{NOT_ADVICE}");
    out
}

fn deadline_cell(j: &Jurisdiction) -> String {
    match (j.individual.required, j.individual.days) {
        (false, _) => "none".into(),
        (true, Some(days)) => days.to_string(),
        (true, None) => "text".into(),
    }
}

fn table_json(rules: &Rules) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rules
        .iter()
        .map(|e| {
            json!({
                "code": e.rules.code,
                "name": e.rules.name,
                "individual_required": e.rules.individual.required,
                "individual_days": e.rules.individual.days,
                "individual_starts": e.rules.individual.starts,
                "regulators": e.rules.regulators.len(),
                "verified_on": e.rules.verified_on,
                "origin": e.origin,
            })
        })
        .collect();
    json!({
        "jurisdictions": rows,
        "aliases": rules.aliases(),
        "override_file": rules.override_file(),
        "unverified": rules.unverified(),
        "generated_on": rules.generated_on(),
    })
}

fn starts(s: Start) -> &'static str {
    match s {
        Start::Discovery => "discovery",
        Start::Determination => "determination",
    }
}

fn details(entry: &Entry, target: u32) -> String {
    let j = &entry.rules;
    let mut out = format!("{}  {}\n", j.code, j.name);
    let by = match j.applies_by {
        rules::AppliesBy::Residence => "the residence of each person notified",
        rules::AppliesBy::Sector => "the company's sector, wherever the people live",
    };
    let _ = writeln!(out, "  applies by:        {by}");
    let i = &j.individual;
    let deadline = match (i.required, i.days, i.starts) {
        (false, _, _) => "no individual notice under this rule".to_string(),
        (true, Some(days), Some(s)) => format!("{days} calendar days from {}", starts(s)),
        _ => format!(
            "no number in the law: internal target {target} days from discovery (rules.internal_target_days)"
        ),
    };
    let _ = writeln!(out, "  individual notice: {deadline}");
    let _ = writeln!(out, "    the law:         {}", i.text);
    if j.regulators.is_empty() {
        let note = j.regulator_note.as_deref().unwrap_or("none found");
        let _ = writeln!(out, "  regulators:        none: {note}");
    } else {
        let _ = writeln!(out, "  regulators:");
        for r in &j.regulators {
            out.push_str(&regulator(r));
        }
    }
    out.push_str(&notices(j));
    out.push_str(&provenance(entry));
    out
}

/// A clock's amount as `3 days`, `48 hours` or `5 business days` (empty when it has none).
fn amount_text(days: Option<i64>, hours: Option<i64>, business_days: Option<i64>) -> String {
    Amount::of(days, hours, business_days).map_or_else(String::new, |a| a.to_string())
}

fn regulator(r: &Regulator) -> String {
    let mut out = format!("    - {}\n", r.name);
    let threshold = match &r.threshold {
        Some(Threshold::Residents(1)) => "any affected resident".to_string(),
        Some(Threshold::Residents(n)) => format!("{n} or more affected residents"),
        Some(Threshold::Text(t)) => t.to_uppercase(),
        None => "missing".into(),
    };
    let _ = writeln!(
        out,
        "      threshold:     {threshold} ({})",
        r.threshold_text
    );
    if let Some(condition) = &r.condition {
        let _ = writeln!(out, "      only if:       {condition}");
    }
    let amount = amount_text(r.days, r.hours, r.business_days);
    let clock = match r.timing {
        Some(Timing::Before) => "before the consumer notice".to_string(),
        Some(Timing::With) => "no later than the consumer notice".to_string(),
        Some(Timing::After) => format!("{amount} after the consumer notice"),
        Some(Timing::AfterStart) => format!("{amount} from {}", r.starts.map_or("?", starts)),
        Some(Timing::Unspecified) | None => "no fixed rule (see the text)".to_string(),
    };
    let _ = writeln!(out, "      deadline:      {clock}");
    if let Some(limit) = &r.limit {
        let amount = amount_text(limit.days, limit.hours, limit.business_days);
        let _ = writeln!(
            out,
            "      at the latest: {amount} from {} (whichever comes first)",
            limit.starts.map_or("?", starts)
        );
    }
    let _ = writeln!(out, "      the law:       {}", r.deadline_text);
    if !r.form_fields.is_empty() {
        let _ = writeln!(out, "      form asks:     {}", r.form_fields.join("; "));
    }
    out
}

fn credit_bureaus(c: &CreditBureaus) -> String {
    match (c.threshold, c.hours) {
        (Some(n), Some(h)) => format!(
            "{n} or more persons notified, within {h} hours ({})",
            c.text
        ),
        (Some(n), None) => format!("{n} or more persons notified ({})", c.text),
        _ => format!("no duty found ({})", c.text),
    }
}

/// What `campaign create` and `start` check of a notice for this jurisdiction (docs/content-checks.md),
/// or `None` when nothing is.
fn content_checks(c: &crate::rules::Content) -> Option<String> {
    let mut parts = Vec::new();
    if !c.required_headings.is_empty() {
        parts.push("the required headings, in order".to_string());
    }
    for check in &c.forbidden_checks {
        parts.push(format!(
            "not {:?} ({} variables, {} phrases, {} counted nouns)",
            check.rule,
            check.variables.len(),
            check.phrases.len(),
            check.counted_nouns.len()
        ));
    }
    if parts.is_empty() {
        return None;
    }
    let sources = if c.sources.is_empty() {
        "every source below".to_string()
    } else {
        c.sources.join(", ")
    };
    Some(format!("{}; cited: {sources}", parts.join("; ")))
}

/// Credit bureaus, email, substitute notice and content.
fn notices(j: &Jurisdiction) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  credit bureaus:    {}",
        credit_bureaus(&j.credit_bureaus)
    );
    let counts = serde_json::to_value(j.email.counts)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = writeln!(out, "  email as notice:   {counts}: {}", j.email.condition);
    let s = &j.substitute;
    let figures = match (s.cost_usd, s.persons) {
        (Some(c), Some(p)) => format!("cost over ${c} or over {p} persons; "),
        (Some(c), None) => format!("cost over ${c}; "),
        (None, Some(p)) => format!("over {p} persons; "),
        (None, None) => String::new(),
    };
    let _ = writeln!(out, "  substitute notice: {figures}{}", s.text);
    let c = &j.content;
    if !c.required_headings.is_empty() {
        let quoted: Vec<String> = c
            .required_headings
            .iter()
            .map(|h| format!("{h:?}"))
            .collect();
        let _ = writeln!(out, "  required headings, in order: {}", quoted.join(", "));
    }
    if !c.required_elements.is_empty() {
        let _ = writeln!(
            out,
            "  must contain:      {}",
            c.required_elements.join(", ")
        );
    }
    if !c.forbidden.is_empty() {
        let _ = writeln!(out, "  must NOT contain:  {}", c.forbidden.join("; "));
    }
    let _ = writeln!(out, "  content:           {}", c.summary);
    if let Some(checked) = content_checks(c) {
        let _ = writeln!(out, "  checked in notices: {checked}");
    }
    for (label, text) in [
        ("other obligations", &j.other_obligations),
        ("scope", &j.scope_note),
        ("conflicts", &j.conflicts),
    ] {
        if let Some(text) = text {
            let _ = writeln!(out, "  {label}: {text}");
        }
    }
    out
}

/// Unverified facts, sources, dates and origin.
fn provenance(entry: &Entry) -> String {
    let j = &entry.rules;
    let mut out = String::new();
    if !j.unverified.is_empty() {
        let _ = writeln!(out, "  UNVERIFIED:");
        for fact in &j.unverified {
            let _ = writeln!(out, "    - {fact}");
        }
    }
    let _ = writeln!(
        out,
        "  sources (confidence {}; newest source {}; verified on {}):",
        j.confidence, j.sources_as_of, j.verified_on
    );
    for s in &j.sources {
        let _ = writeln!(out, "    - [{}] {} ({})", s.key, s.citation, s.as_of);
    }
    let _ = writeln!(out, "  {}", origin(&entry.origin));
    let _ = writeln!(out, "{NOT_ADVICE}");
    out
}
