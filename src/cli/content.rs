//! Content checks: the notice each jurisdiction's residents would receive, rendered in every locale
//! and held against that jurisdiction's content rules (`rules::content`: California's title and
//! headings in order, Massachusetts's and Illinois's forbidden content), at `campaign create` and
//! `campaign start`. A failure names the jurisdiction, the rule, its source from the rules file, the
//! template and its file, so the operator knows what to fix and counsel what to read.
//!
//! It lives in the command line because it needs both the rules and the campaign's templates
//! (docs/architecture.md: only the command line uses both). When each check runs and why:
//! - **create**, before any recipient exists: every `[by_jurisdiction]` variant against its own
//!   jurisdiction's rules (the campaign file declares those residents: a failure refuses the file),
//!   and the general notice against every other jurisdiction that has content rules, as notes only
//!   (the campaign may have none of its residents; `start` decides);
//! - **start**, when the recipients are known: every jurisdiction present among them (the per-campaign
//!   counters, no scan), each with the notice it actually gets, rendered for a real recipient.
//!
//! The daemon's own pre-flight (for a campaign started with SQL) renders templates but cannot apply
//! the rules (the dispatcher does not use the rules layer); `campaign start` is where this is enforced.
//! Messages carry codes, rule text, sources and template names, never a recipient's data.

use std::collections::BTreeMap;

use anyhow::bail;

use crate::campaign::CampaignSpec;
use crate::campaign::preflight::first_of;
use crate::campaign::template::{RecipientContext, Rendered, Templates};
use crate::rules::content::{check_forbidden_text, check_headings, forbidden_variable, html_text};
use crate::rules::{Entry, Rules};
use crate::store::{Campaign, Store};

/// Failures shown in full before "and N more".
const SHOWN: usize = 5;

/// One failed content rule.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The code as the recipients (or the variant) carry it.
    pub code: String,
    /// `content.required_headings`, `content.forbidden_check[1]`.
    pub rule_key: String,
    /// The heading list or the forbidden item, in the rules file's words.
    pub rule: String,
    /// `KEY: citation` of each source of the content rules.
    pub sources: String,
    /// `US-MA/en-US/text (templates/notice-ma/en-US.txt.j2)`.
    pub template: String,
    pub detail: String,
    /// The jurisdiction's name from the rules.
    pub name: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): rule {} {:?}, source {}: template {}: {}",
            self.code,
            self.name,
            self.rule_key,
            self.rule,
            self.sources,
            self.template,
            self.detail
        )
    }
}

/// The findings as one line: the first [`SHOWN`], then how many more.
pub(crate) fn describe(findings: &[Finding]) -> String {
    let mut codes: Vec<&str> = findings.iter().map(|f| f.code.as_str()).collect();
    codes.dedup();
    format!(
        "the notice fails the content rules of {} ({} problem(s)): {}",
        codes.join(", "),
        findings.len(),
        first_of(findings, SHOWN)
    )
}

/// Whether an entry has rules this module can check.
fn checkable(entry: &Entry) -> bool {
    let c = &entry.rules.content;
    !c.required_headings.is_empty() || !c.forbidden_checks.is_empty()
}

/// What the checks at `campaign create` found (see [`assess_new`]).
#[derive(Debug, Default)]
pub struct NewAssessment {
    /// Variants that fail their own jurisdiction's rules: the file is refused.
    pub refused: Vec<Finding>,
    /// The general notice's failures for jurisdictions the campaign may not have: notes.
    pub warnings: Vec<Finding>,
    /// The codes checked without a problem (`US-MA (its own notice)` for a variant's).
    pub passed: Vec<String>,
    /// Variant codes the rules do not know: `(code, closest known codes)`.
    pub unknown: Vec<(String, String)>,
}

/// The checks of a campaign file before any recipient exists: every `[by_jurisdiction]` variant
/// against its own jurisdiction's rules, and the general notice against every other jurisdiction
/// with content rules. Rendered for a made-up recipient of each code.
pub fn assess_new(spec: &CampaignSpec, rules: &Rules) -> anyhow::Result<NewAssessment> {
    let templates = Templates::new(spec)?;
    let sample = |code: &str| {
        let templates = &templates;
        let code = code.to_string();
        move |locale: &str| templates.render_sample(locale, Some(&code)).ok()
    };
    let mut out = NewAssessment::default();
    for code in templates.variants() {
        match rules.get(code) {
            Some(entry) => {
                let findings = check_code(spec, &templates, entry, code, sample(code));
                if findings.is_empty() && checkable(entry) {
                    out.passed.push(format!("{code} (its own notice)"));
                }
                out.refused.extend(findings);
            }
            None => out
                .unknown
                .push((code.clone(), rules.closest(code, 3).join(", "))),
        }
    }
    for entry in rules.iter().filter(|e| checkable(e)) {
        let code = entry.rules.code.as_str();
        if templates.variant_for(Some(code)).is_some() {
            continue;
        }
        let findings = check_code(spec, &templates, entry, code, sample(code));
        if findings.is_empty() {
            out.passed.push(code.to_string());
        }
        out.warnings.extend(findings);
    }
    Ok(out)
}

/// `campaign create`: refuses a variant that fails its own jurisdiction's rules; prints, as notes,
/// how the general notice fares against every other jurisdiction with content rules.
pub(crate) fn check_new(spec: &CampaignSpec, rules: &Rules) -> anyhow::Result<()> {
    let a = assess_new(spec, rules)?;
    if !a.refused.is_empty() {
        bail!("{}", describe(&a.refused));
    }
    for (code, closest) in &a.unknown {
        eprintln!(
            "note: by_jurisdiction.{code}: the rules have no jurisdiction {code} (closest: {closest}); its notice goes to the recipients carrying that code, without content checks"
        );
    }
    let mut codes: Vec<&str> = a.warnings.iter().map(|f| f.code.as_str()).collect();
    codes.dedup();
    for code in codes {
        let of_code: Vec<Finding> = a
            .warnings
            .iter()
            .filter(|f| f.code == code)
            .cloned()
            .collect();
        eprintln!(
            "note: `campaign start` will refuse this campaign if it has residents of {code}: {}",
            describe(&of_code)
        );
    }
    if !a.passed.is_empty() {
        eprintln!("content checks passed for: {}", a.passed.join(", "));
    }
    Ok(())
}

/// `campaign start`: every jurisdiction present among the campaign's recipients, each against the
/// notice its residents get, rendered for a real recipient of the campaign. Returns the number of
/// jurisdictions checked, or the findings as the error.
pub(crate) async fn check_stored(
    store: &Store,
    rules: &Rules,
    campaign: &Campaign,
) -> anyhow::Result<usize> {
    let (spec, templates) = crate::campaign::preflight::templates_of(campaign)?;
    let sample = store.sample_recipients(campaign.id, 500).await?;
    let Some(base) = sample.first() else {
        return Ok(0);
    };
    let mut findings = Vec::new();
    let mut checked = 0;
    for code in store
        .jurisdiction_codes(campaign.id)
        .await?
        .into_iter()
        .flatten()
    {
        let Some(entry) = rules.get(&code).filter(|e| checkable(e)) else {
            continue;
        };
        checked += 1;
        // A recipient of this jurisdiction when the sample has one (their attribute columns), the
        // first recipient otherwise; the jurisdiction decides the variant either way.
        let who = sample
            .iter()
            .find(|r| r.jurisdiction.as_deref() == Some(code.as_str()))
            .unwrap_or(base);
        findings.extend(check_code(&spec, &templates, entry, &code, |locale| {
            let mut ctx = RecipientContext::from(who);
            ctx.jurisdiction = Some(code.as_str());
            // A template that does not render is the pre-flight's to report.
            templates.render_in(locale, &ctx).ok()
        }));
    }
    if !findings.is_empty() {
        bail!("{}", describe(&findings));
    }
    Ok(checked)
}

/// The findings of one jurisdiction (`code`, as carried) over every locale, `render` giving the
/// notice of a locale as that jurisdiction's residents get it.
fn check_code(
    spec: &CampaignSpec,
    templates: &Templates,
    entry: &Entry,
    code: &str,
    render: impl Fn(&str) -> Option<Rendered>,
) -> Vec<Finding> {
    let variant = templates.variant_for(Some(code));
    let mut findings = Vec::new();
    for locale in templates.locales() {
        let Some(rendered) = render(locale) else {
            continue;
        };
        let files = Files::of(spec, variant, locale);
        let finding = |rule_key: String, rule: String, part: &str, detail: String| Finding {
            code: code.to_string(),
            name: entry.rules.name.clone(),
            rule_key,
            rule,
            sources: sources(entry),
            template: files.name(part),
            detail,
        };
        let parts = [
            ("subject", rendered.subject.clone()),
            ("text", rendered.text.clone()),
            ("html", html_text(&rendered.html)),
        ];
        let content = &entry.rules.content;
        if !content.required_headings.is_empty() {
            for (part, text) in &parts[1..] {
                if let Some(detail) = check_headings(&content.required_headings, text) {
                    let rule = content.required_headings.join(" / ");
                    findings.push(finding(
                        "content.required_headings".into(),
                        rule,
                        part,
                        detail,
                    ));
                }
            }
        }
        for (i, check) in content.forbidden_checks.iter().enumerate() {
            let rule_key = format!("content.forbidden_check[{i}]");
            let sources = files.sources.iter().map(|(p, s)| (*p, s.as_str()));
            let used = sources.filter_map(|(part, source)| {
                let (v, line) = forbidden_variable(check, source)?;
                Some((part, format!("line {line} uses the variable `{v}`")))
            });
            let said = parts
                .iter()
                .filter_map(|(part, text)| Some((*part, check_forbidden_text(check, text)?)));
            // One finding per template part and rule: the first thing it fails.
            let mut seen = Vec::new();
            for (part, detail) in used.chain(said) {
                if !seen.contains(&part) {
                    seen.push(part);
                    findings.push(finding(rule_key.clone(), check.rule.clone(), part, detail));
                }
            }
        }
    }
    findings
}

/// `KEY: citation` of the sources the entry's content rules cite (all of its sources when it
/// names none).
fn sources(entry: &Entry) -> String {
    let wanted = &entry.rules.content.sources;
    entry
        .rules
        .sources
        .iter()
        .filter(|s| wanted.is_empty() || wanted.contains(&s.key))
        .map(|s| format!("{}: {}", s.key, s.citation))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The templates of one locale (of a variant): their names, their files as the campaign file names
/// them, and their sources (for the variable check).
struct Files {
    prefix: String,
    paths: BTreeMap<&'static str, String>,
    sources: Vec<(&'static str, String)>,
}

impl Files {
    fn of(spec: &CampaignSpec, variant: Option<&str>, locale: &str) -> Files {
        let prefix = match variant {
            Some(code) => format!("{code}/{locale}"),
            None => locale.to_string(),
        };
        let table = match variant {
            Some(code) => format!("by_jurisdiction.{code}.{locale}"),
            None => format!("locales.{locale}"),
        };
        let mut paths = BTreeMap::from([("subject", format!("campaign file key {table}.subject"))]);
        if let Some((text, html)) = crate::campaign::template_paths(spec, variant, locale) {
            paths.insert("text", text.display().to_string());
            paths.insert("html", html.display().to_string());
        }
        let templates = match variant {
            Some(code) => spec.by_jurisdiction.get(code).and_then(|v| v.get(locale)),
            None => spec.locales.get(locale),
        };
        let sources = templates
            .map(|t| {
                vec![
                    ("subject", t.subject.clone()),
                    ("text", t.text.clone()),
                    ("html", t.html.clone()),
                ]
            })
            .unwrap_or_default();
        Files {
            prefix,
            paths,
            sources,
        }
    }

    /// `US-MA/en-US/text (templates/notice-ma/en-US.txt.j2)`.
    fn name(&self, part: &str) -> String {
        match self.paths.get(part) {
            Some(path) => format!("{}/{part} ({path})", self.prefix),
            None => format!("{}/{part}", self.prefix),
        }
    }
}
