//! Jurisdiction rules as data: per jurisdiction, the individual deadline and what starts it, the
//! regulators with their thresholds and clocks, the credit-bureau duty, content rules, when email
//! counts as notice, substitute notice, and the sources every figure comes from.
//!
//! The rules ship inside the binary (`rules/jurisdictions.toml`, [`SHIPPED`]), built from a researched
//! table, because laws change faster than code and counsel must be able to read and correct them: an
//! operator's file (`rules.file`) replaces whole entries or adds codes ([`load`]), and every entry
//! remembers where it came from ([`Origin`]). [`deadline`] is the pure date arithmetic over them.
//! Nothing here is legal advice; docs/rules.md says how the figures were chosen.
//!
//! **Layer: rules.** Owns the rules' types, their loading, validation and lookup, and the deadline
//! arithmetic. Uses nothing but the configuration (no database, no I/O beyond reading the override
//! file), so `rules show` works anywhere; used by the command line (and, later, by whatever computes
//! deadlines from stored campaigns).

pub mod content;
pub mod deadline;
mod load;
pub mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use load::RulesError;

/// The shipped rules file, built into the binary.
pub const SHIPPED: &str = include_str!("../../rules/jurisdictions.toml");
/// How the shipped file is named in messages.
pub const SHIPPED_NAME: &str = "rules/jurisdictions.toml (built in)";

/// A rules file as written: the shipped one, or an operator's override (same format).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// The format's version; an override may leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// When the research behind the file was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_on: Option<String>,
    /// Facts that concern no single jurisdiction and could not be verified.
    #[serde(default)]
    pub unverified: Vec<String>,
    /// Codes that map onto an entry: `"CA-ON" = "CA"`, or a prefix pattern `"EU-*" = "EU-GDPR"`.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    #[serde(default, rename = "jurisdiction")]
    pub jurisdictions: Vec<Jurisdiction>,
}

/// What one jurisdiction asks of a company whose breach affects its residents (or, for
/// `applies_by = "sector"`, of a company in its sector).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Jurisdiction {
    /// `US-CA`, `EU-GDPR`, `GB`: the code recipients carry in their `jurisdiction` column.
    pub code: String,
    pub name: String,
    /// Whether the rule follows the person's residence or the company's sector (HIPAA, FTC, GSEs).
    pub applies_by: AppliesBy,
    /// When the entry was last checked against its sources (YYYY-MM-DD).
    pub verified_on: String,
    /// How current the newest source is, as the research wrote it (may be "unknown").
    pub sources_as_of: String,
    /// The researcher's confidence: high, medium-high, medium, low.
    pub confidence: String,
    /// Who is exempt or routed elsewhere (financial institutions, licensees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_note: Option<String>,
    /// Duties beyond the notice itself (credit monitoring, records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_obligations: Option<String>,
    /// Where sources disagree, and which reading the entry follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<String>,
    /// Why there is no regulator entry ("none — no regulator notice").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regulator_note: Option<String>,
    /// Facts about this jurisdiction the research could not verify.
    #[serde(default)]
    pub unverified: Vec<String>,
    pub individual: Individual,
    #[serde(default, rename = "regulator", skip_serializing_if = "Vec::is_empty")]
    pub regulators: Vec<Regulator>,
    pub credit_bureaus: CreditBureaus,
    pub email: Email,
    pub substitute: Substitute,
    pub content: Content,
    #[serde(rename = "source")]
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliesBy {
    /// Applies to the residents of the jurisdiction (states, countries).
    Residence,
    /// Applies to companies of a sector, wherever the people live (HIPAA, FTC Safeguards, GSEs).
    Sector,
}

/// What starts a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// The breach was discovered (or the company was told of it, or became aware).
    Discovery,
    /// The company determined that a breach occurred (or confirmed it; or found it material).
    Determination,
}

/// The notice to the people affected.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Individual {
    /// False where the rule asks nothing of individuals (regulator-only rules).
    #[serde(default = "yes")]
    pub required: bool,
    /// Calendar days the law allows, when it sets a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<i64>,
    /// What starts those days (required with `days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<Start>,
    /// The research's finer name of the trigger (`discovery_or_notification_of_breach`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    /// The law's own words: the whole rule when it sets no number.
    pub text: String,
}

fn yes() -> bool {
    true
}

/// When a regulator's notice is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Timing {
    /// Before the first consumer notice (Maryland, New Jersey).
    Before,
    /// No later than the consumer notice (at the same time).
    With,
    /// A number of days, hours or business days after the consumer notice.
    After,
    /// A number of days, hours or business days after discovery or determination (`starts`).
    AfterStart,
    /// No fixed rule found: the text says what the law says.
    Unspecified,
}

/// A regulator's threshold: the least number of affected residents that triggers the duty.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Threshold {
    Residents(i64),
    /// Only `"unverified"` is accepted: the duty itself could not be verified.
    Text(String),
}

/// A clock counted from the breach, the outer limit of a regulator's deadline ("whichever is first").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<Start>,
}

/// One authority to notify.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Regulator {
    pub name: String,
    /// Required: a number of residents, or `"unverified"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
    #[serde(default)]
    pub threshold_text: String,
    /// When the duty applies only in some cases (a covered entity, a material incident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_days: Option<i64>,
    /// What starts the clock when `timing = "after_start"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<Start>,
    /// An outer limit from the breach: the deadline is whichever comes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    #[serde(default)]
    pub deadline_text: String,
    /// What the regulator's notice or form asks for.
    #[serde(default)]
    pub form_fields: Vec<String>,
}

/// The duty to tell the nationwide credit bureaus.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreditBureaus {
    /// Least number of persons notified that triggers it; absent: no duty found (see `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<i64>,
    /// A clock in hours, where the law sets one (Minnesota: 48).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<i64>,
    pub text: String,
}

/// Whether an email counts as the legal notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailCounts {
    /// Email is a permitted method as such.
    Yes,
    /// Counts for a person who consented to electronic notice (E-SIGN or express consent); the
    /// condition may allow more (email as the primary channel).
    WithConsent,
    /// Only under another condition (primary channel, prior business relationship): see the text.
    Conditional,
    /// The research found email permitted but not the condition.
    Unverified,
    /// The law names no channel.
    NotPrescribed,
    /// No individual notice in this rule.
    NotApplicable,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Email {
    pub counts: EmailCounts,
    pub condition: String,
}

/// When notice by email, website and media may replace individual notice.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Substitute {
    /// Allowed when the cost of individual notice exceeds this many US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<i64>,
    /// Allowed when the affected class exceeds this many persons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persons: Option<i64>,
    pub text: String,
}

/// What the notice must and must not say.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    #[serde(default)]
    pub summary: String,
    /// Literal headings that must appear in this order (California: the title, then five headings).
    #[serde(default)]
    pub required_headings: Vec<String>,
    /// Elements the notice must contain, in any order (machine ids).
    #[serde(default)]
    pub required_elements: Vec<String>,
    /// What the notice must not contain (Massachusetts: the nature of the breach, the number affected).
    #[serde(default)]
    pub forbidden: Vec<String>,
    /// The keys of the `[[jurisdiction.source]]` the content rules come from, cited when a notice
    /// fails them; empty: every source of the entry is cited.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// How breach-notifier detects each `forbidden` item in a notice (`content::check`).
    #[serde(
        default,
        rename = "forbidden_check",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub forbidden_checks: Vec<ForbiddenCheck>,
}

/// What a notice must not show to enforce one `forbidden` item, as mechanical tests a template can
/// fail. Conservative by design (docs/content-checks.md): they refuse a notice that uses a listed
/// variable, says a listed phrase, or puts a number before a listed noun; passing them is not proof
/// that the notice complies, which counsel still reads.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForbiddenCheck {
    /// The `forbidden` item enforced, word for word.
    pub rule: String,
    /// Names a template must not use in `{{ }}` or `{% %}` (`affected_count`): a value that could
    /// carry the forbidden content, whatever one sample renders.
    #[serde(default)]
    pub variables: Vec<String>,
    /// Words or phrases the rendered notice must not contain (case and spacing ignored, whole words).
    #[serde(default)]
    pub phrases: Vec<String>,
    /// Nouns a number must not come before, within three words (`1,204 Massachusetts residents`,
    /// `thousands of customers`).
    #[serde(default)]
    pub counted_nouns: Vec<String>,
}

/// Where a figure comes from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Short id (`CA_STAT`).
    pub key: String,
    /// Title and URL.
    pub citation: String,
    /// The source's own date, as found ("undated", "last updated 2024-02-28").
    pub as_of: String,
}

/// Where an entry of the effective rules came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Origin {
    /// The shipped file, unchanged.
    Shipped,
    /// The operator's file: replacing a shipped entry of the same code, or adding one.
    Override {
        file: PathBuf,
        replaced_shipped: bool,
    },
}

/// One jurisdiction of the effective rules, with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub rules: Jurisdiction,
    pub origin: Origin,
}

/// The effective rules: the shipped file with the operator's file over it.
#[derive(Debug, Clone)]
pub struct Rules {
    entries: BTreeMap<String, Entry>,
    aliases: BTreeMap<String, String>,
    unverified: Vec<String>,
    generated_on: Option<String>,
    override_file: Option<PathBuf>,
}

/// How many imported codes the rules know: per code as imported, known and unknown, and rows without
/// one. Unknown codes are counted and shown, never dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CodeCounts {
    pub known: BTreeMap<String, u64>,
    pub unknown: BTreeMap<String, u64>,
    pub missing: u64,
}

impl CodeCounts {
    pub fn known_total(&self) -> u64 {
        self.known.values().sum()
    }

    pub fn unknown_total(&self) -> u64 {
        self.unknown.values().sum()
    }
}

impl Rules {
    /// The jurisdictions, in code order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for a code as recipients carry it: exact (case-insensitive), else an alias (`CA-ON`),
    /// else a prefix alias (`EU-DE` through `EU-*`).
    pub fn get(&self, code: &str) -> Option<&Entry> {
        let code = code.trim().to_ascii_uppercase();
        if let Some(entry) = self.entries.get(&code) {
            return Some(entry);
        }
        let target = self.aliases.get(&code).or_else(|| {
            self.aliases.iter().find_map(|(alias, target)| {
                let prefix = alias.strip_suffix('*')?;
                code.starts_with(prefix).then_some(target)
            })
        })?;
        self.entries.get(target)
    }

    /// The codes closest to an unknown one (by edit distance), at most `n`, best first.
    pub fn closest(&self, code: &str, n: usize) -> Vec<&str> {
        let code = code.trim().to_ascii_uppercase();
        let mut scored: Vec<(usize, &str)> = self
            .entries
            .keys()
            .chain(self.aliases.keys())
            .map(|known| (edit_distance(&code, known), known.as_str()))
            .collect();
        scored.sort();
        scored.into_iter().take(n).map(|(_, c)| c).collect()
    }

    /// Counts codes as imported (one per recipient row); empty codes are `missing`.
    pub fn count_codes<'a>(&self, codes: impl IntoIterator<Item = &'a str>) -> CodeCounts {
        let mut counts = CodeCounts::default();
        for code in codes {
            let trimmed = code.trim();
            if trimmed.is_empty() {
                counts.missing += 1;
            } else if self.get(trimmed).is_some() {
                *counts.known.entry(trimmed.to_string()).or_default() += 1;
            } else {
                *counts.unknown.entry(trimmed.to_string()).or_default() += 1;
            }
        }
        counts
    }

    /// As [`Rules::count_codes`], from codes already tallied (`(code, rows)`), as an import counts them.
    pub fn count_code_totals<'a>(
        &self,
        tallies: impl IntoIterator<Item = (&'a str, u64)>,
        missing: u64,
    ) -> CodeCounts {
        let mut counts = CodeCounts {
            missing,
            ..CodeCounts::default()
        };
        for (code, rows) in tallies {
            let trimmed = code.trim();
            if trimmed.is_empty() {
                counts.missing += rows;
            } else if self.get(trimmed).is_some() {
                *counts.known.entry(trimmed.to_string()).or_default() += rows;
            } else {
                *counts.unknown.entry(trimmed.to_string()).or_default() += rows;
            }
        }
        counts
    }

    /// Aliases (`"EU-*" = "EU-GDPR"`).
    pub fn aliases(&self) -> &BTreeMap<String, String> {
        &self.aliases
    }

    /// Facts no single entry carries that could not be verified.
    pub fn unverified(&self) -> &[String] {
        &self.unverified
    }

    /// When the shipped research was done.
    pub fn generated_on(&self) -> Option<&str> {
        self.generated_on.as_deref()
    }

    /// The operator's file, when one was applied.
    pub fn override_file(&self) -> Option<&std::path::Path> {
        self.override_file.as_deref()
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

pub use load::load;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("US-CA", "US-CA"), 0);
        assert_eq!(edit_distance("US-CX", "US-CA"), 1);
        assert_eq!(edit_distance("USCA", "US-CA"), 1);
        assert_eq!(edit_distance("", "GB"), 2);
    }
}
