//! Reading rules files: the shipped one and the operator's override, each parsed on its own with
//! `deny_unknown_fields` and then checked for what types cannot say (negative days, a regulator
//! without threshold or deadline, a clock without what starts it, duplicate codes, dates that do not
//! parse). Every error names the file, the line, the jurisdiction and the key, as the configuration's
//! errors do: counsel edits these files by hand, and a vague error there costs a deadline.
//!
//! Override semantics: an entry of the operator's file replaces the shipped entry of the same code
//! **as a whole** (never field by field, so what counsel wrote is exactly what applies: nothing of the
//! shipped entry survives unseen), or adds a new code. Aliases are added or replaced one by one;
//! `unverified` notes are added.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::NaiveDate;

use super::{Entry, Jurisdiction, Limit, Origin, Regulator, Rules, RulesFile, Threshold, Timing};
use crate::config::{RulesSettings, toml_error, toml_line_of};

/// A problem in a rules file, naming the file and, inside the message, the line and the key.
#[derive(Debug, thiserror::Error)]
#[error("rules file {file}: {message}")]
pub struct RulesError {
    pub file: String,
    pub message: String,
}

/// Longest clock accepted, in days (ten years): more is a typing error, not a law.
const MAX_DAYS: i64 = 3650;

/// The effective rules: the shipped file, then `rules.file` over it when configured.
pub fn load(settings: &RulesSettings) -> Result<Rules, RulesError> {
    let rules = Rules::shipped()?;
    match &settings.file {
        Some(path) => rules.with_override(path),
        None => Ok(rules),
    }
}

impl Rules {
    /// The rules built into the binary.
    pub fn shipped() -> Result<Rules, RulesError> {
        let file = parse(super::SHIPPED_NAME, super::SHIPPED)?;
        let rules = Rules {
            entries: file
                .jurisdictions
                .into_iter()
                .map(|j| {
                    let entry = Entry {
                        rules: j,
                        origin: Origin::Shipped,
                    };
                    (entry.rules.code.clone(), entry)
                })
                .collect(),
            aliases: file.aliases,
            unverified: file.unverified,
            generated_on: file.generated_on,
            override_file: None,
        };
        rules.check_aliases(super::SHIPPED_NAME, super::SHIPPED)?;
        Ok(rules)
    }

    /// These rules with the operator's file at `path` over them (see the module header).
    pub fn with_override(mut self, path: &Path) -> Result<Rules, RulesError> {
        let name = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| RulesError {
            file: name.clone(),
            message: format!("cannot read it ({e}); check rules.file in the configuration"),
        })?;
        let file = parse(&name, &source)?;
        for j in file.jurisdictions {
            let replaced_shipped = self
                .entries
                .get(&j.code)
                .is_some_and(|e| e.origin == Origin::Shipped);
            let origin = Origin::Override {
                file: path.to_path_buf(),
                replaced_shipped,
            };
            self.entries
                .insert(j.code.clone(), Entry { rules: j, origin });
        }
        self.aliases.extend(file.aliases);
        self.unverified.extend(file.unverified);
        self.override_file = Some(path.to_path_buf());
        self.check_aliases(&name, &source)?;
        Ok(self)
    }

    /// Every alias names a jurisdiction that exists.
    fn check_aliases(&self, name: &str, source: &str) -> Result<(), RulesError> {
        for (alias, target) in &self.aliases {
            let pattern_ok = alias.find('*').is_none_or(|at| at == alias.len() - 1);
            let problem = if !pattern_ok {
                Some("a `*` may only end an alias (`\"EU-*\" = \"EU-GDPR\"`)".to_string())
            } else if !self.entries.contains_key(target) {
                Some(format!("names {target:?}, which no [[jurisdiction]] has"))
            } else {
                None
            };
            if let Some(problem) = problem {
                let line = toml_line_of(source, &["aliases", alias])
                    .map(|l| format!("line {l}: "))
                    .unwrap_or_default();
                return Err(RulesError {
                    file: name.to_string(),
                    message: format!("{line}alias {alias:?} {problem}"),
                });
            }
        }
        Ok(())
    }
}

/// Parses and checks one rules file on its own.
pub(super) fn parse(name: &str, source: &str) -> Result<RulesFile, RulesError> {
    let fail = |message: String| RulesError {
        file: name.to_string(),
        message,
    };
    let file: RulesFile = toml::from_str(source).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        match jurisdiction_at(source, at) {
            Some(code) => fail(format!(
                "{} (in jurisdiction {code})",
                toml_error(source, &e)
            )),
            None => fail(toml_error(source, &e)),
        }
    })?;
    check_file(&file).map_err(|(path, message)| {
        // A missing key is reported at the table that lacks it.
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let line = (1..=path.len())
            .rev()
            .find_map(|n| toml_line_of(source, &path[..n]));
        match line {
            Some(line) => fail(format!("line {line}: {message}")),
            None => fail(message),
        }
    })?;
    Ok(file)
}

/// The code of the `[[jurisdiction]]` whose text holds byte `at`, read from the text itself (so it
/// works for syntax errors too).
fn jurisdiction_at(source: &str, at: usize) -> Option<String> {
    let before = &source[..at.min(source.len())];
    let header = before.rfind("[[jurisdiction]]")?;
    let rest = &source[header..];
    let end = rest[1..]
        .find("[[jurisdiction]]")
        .map_or(rest.len(), |e| e + 1);
    rest[..end].lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "code").then(|| value.trim().trim_matches('"').to_string())
    })
}

/// A problem: the key path it is at (for the line) and the message.
type Problem = (Vec<String>, String);

/// Names problems inside one jurisdiction: `jurisdiction US-CA, key regulator[0].days: …`.
struct At<'a> {
    index: usize,
    code: &'a str,
}

impl At<'_> {
    /// `key` is dotted (`regulator.0.days`); shown as `regulator[0].days`.
    fn fail(&self, key: &str, message: impl std::fmt::Display) -> Problem {
        let mut path = vec!["jurisdiction".to_string(), self.index.to_string()];
        path.extend(key.split('.').map(str::to_string));
        let mut shown = String::new();
        for part in key.split('.') {
            if part.parse::<usize>().is_ok() {
                shown.push_str(&format!("[{part}]"));
            } else {
                if !shown.is_empty() {
                    shown.push('.');
                }
                shown.push_str(part);
            }
        }
        (
            path,
            format!("jurisdiction {}, key `{shown}`: {message}", self.code),
        )
    }
}

fn check_file(file: &RulesFile) -> Result<(), Problem> {
    let mut seen = BTreeSet::new();
    for (index, j) in file.jurisdictions.iter().enumerate() {
        let at = At {
            index,
            code: &j.code,
        };
        if !seen.insert(j.code.as_str()) {
            return Err(at.fail(
                "code",
                "this code appears twice in the file; each jurisdiction has one entry",
            ));
        }
        check_jurisdiction(&at, j)?;
    }
    Ok(())
}

fn check_jurisdiction(at: &At<'_>, j: &Jurisdiction) -> Result<(), Problem> {
    let code_ok = !j.code.is_empty()
        && j.code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
    if !code_ok {
        return Err(at.fail(
            "code",
            "a code is upper-case letters, digits and `-` (`US-CA`, `GB`)",
        ));
    }
    for (key, value) in [("name", &j.name), ("individual.text", &j.individual.text)] {
        if value.trim().is_empty() {
            return Err(at.fail(key, "must not be empty"));
        }
    }
    if NaiveDate::parse_from_str(&j.verified_on, "%Y-%m-%d").is_err() {
        return Err(at.fail(
            "verified_on",
            format!("{:?} is not a date such as \"2026-12-01\"", j.verified_on),
        ));
    }
    if j.sources.is_empty() {
        return Err(at.fail(
            "source",
            "no [[jurisdiction.source]]: every entry names where its figures come from",
        ));
    }
    check_individual(at, j)?;
    check_content(at, j)?;
    for (i, r) in j.regulators.iter().enumerate() {
        check_regulator(at, &format!("regulator.{i}"), r)?;
    }
    for (key, value, least) in [
        ("credit_bureaus.threshold", j.credit_bureaus.threshold, 1),
        ("credit_bureaus.hours", j.credit_bureaus.hours, 0),
        ("substitute.cost_usd", j.substitute.cost_usd, 0),
        ("substitute.persons", j.substitute.persons, 0),
    ] {
        if let Some(v) = value
            && v < least
        {
            return Err(at.fail(key, format!("{v} must be at least {least}")));
        }
    }
    Ok(())
}

fn check_individual(at: &At<'_>, j: &Jurisdiction) -> Result<(), Problem> {
    let i = &j.individual;
    if let Some(days) = i.days {
        check_amount(at, "individual.days", days)?;
    }
    match (i.days, i.starts) {
        (Some(_), None) => Err(at.fail(
            "individual",
            "`days` without `starts`: say what starts the clock (\"discovery\" or \"determination\")",
        )),
        (None, Some(_)) => Err(at.fail(
            "individual.starts",
            "`starts` without `days`: a clock needs a number of days (or remove `starts`)",
        )),
        _ if !i.required && i.days.is_some() => Err(at.fail(
            "individual.days",
            "`required = false` takes no deadline",
        )),
        _ => Ok(()),
    }
}

/// Content rules that breach-notifier enforces must be enforceable: headings and phrases not empty,
/// sources that exist, and each check tied to a `forbidden` item word for word (so that a failed
/// check can quote the rule) with something to test.
fn check_content(at: &At<'_>, j: &Jurisdiction) -> Result<(), Problem> {
    let c = &j.content;
    if let Some(i) = c.required_headings.iter().position(|h| h.trim().is_empty()) {
        return Err(at.fail(
            &format!("content.required_headings.{i}"),
            "an empty heading",
        ));
    }
    for key in &c.sources {
        if !j.sources.iter().any(|s| &s.key == key) {
            let known: Vec<&str> = j.sources.iter().map(|s| s.key.as_str()).collect();
            return Err(at.fail(
                "content.sources",
                format!(
                    "{key:?} is not the key of a [[jurisdiction.source]] of this entry ({})",
                    known.join(", ")
                ),
            ));
        }
    }
    for (i, check) in c.forbidden_checks.iter().enumerate() {
        let key = format!("content.forbidden_check.{i}");
        if !c.forbidden.contains(&check.rule) {
            return Err(at.fail(
                &format!("{key}.rule"),
                format!(
                    "{:?} is not one of this entry's `content.forbidden` items (a check enforces one of them, quoted exactly)",
                    check.rule
                ),
            ));
        }
        let lists = [
            ("variables", &check.variables),
            ("phrases", &check.phrases),
            ("counted_nouns", &check.counted_nouns),
        ];
        if lists.iter().all(|(_, l)| l.is_empty()) {
            return Err(at.fail(
                &key,
                "nothing to check: give `variables`, `phrases` or `counted_nouns`",
            ));
        }
        for (name, list) in lists {
            if let Some(n) = list.iter().position(|v| v.trim().is_empty()) {
                return Err(at.fail(&format!("{key}.{name}.{n}"), "must not be empty"));
            }
        }
        if let Some(v) = check
            .variables
            .iter()
            .find(|v| !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(at.fail(
                &format!("{key}.variables"),
                format!("{v:?}: a variable name is letters, digits and `_` (`affected_count`)"),
            ));
        }
    }
    Ok(())
}

fn check_amount(at: &At<'_>, key: &str, value: i64) -> Result<(), Problem> {
    if value < 0 {
        return Err(at.fail(key, format!("{value} is negative")));
    }
    let days = if key.ends_with("hours") {
        value / 24
    } else {
        value
    };
    if days > MAX_DAYS {
        return Err(at.fail(
            key,
            format!("{value} is more than ten years: a typing error?"),
        ));
    }
    Ok(())
}

/// The one amount (`days`, `hours`, `business_days`) of a clock, checked.
fn one_amount(
    at: &At<'_>,
    key: &str,
    amounts: [(&str, Option<i64>); 3],
) -> Result<Option<i64>, Problem> {
    let set: Vec<(&str, i64)> = amounts
        .iter()
        .filter_map(|(name, v)| v.map(|v| (*name, v)))
        .collect();
    for (name, v) in &set {
        check_amount(at, &format!("{key}.{name}"), *v)?;
    }
    match set.as_slice() {
        [] => Ok(None),
        [(_, v)] => Ok(Some(*v)),
        _ => Err(at.fail(key, "set one of days, hours or business_days, not several")),
    }
}

fn check_regulator(at: &At<'_>, key: &str, r: &Regulator) -> Result<(), Problem> {
    if r.name.trim().is_empty() {
        return Err(at.fail(&format!("{key}.name"), "must not be empty"));
    }
    match &r.threshold {
        None => Err(at.fail(key, "no `threshold`: every regulator needs one (the least number of residents, 1 for any, or \"unverified\")")),
        Some(Threshold::Residents(n)) if *n < 1 => Err(at.fail(&format!("{key}.threshold"), format!("{n}: a threshold is at least 1 resident"))),
        Some(Threshold::Text(t)) if t != "unverified" => Err(at.fail(&format!("{key}.threshold"), format!("{t:?}: a number of residents, or \"unverified\""))),
        _ => Ok(()),
    }?;
    let Some(timing) = r.timing else {
        return Err(at.fail(
            key,
            "no `timing`: every regulator needs a deadline (before, with, after, after_start or unspecified)",
        ));
    };
    let amount = one_amount(
        at,
        key,
        [
            ("days", r.days),
            ("hours", r.hours),
            ("business_days", r.business_days),
        ],
    )?;
    let counted = matches!(timing, Timing::After | Timing::AfterStart);
    if counted != amount.is_some() {
        let message = if counted {
            "this timing counts a number of days, hours or business_days: set one"
        } else {
            "days, hours or business_days need timing \"after\" or \"after_start\""
        };
        return Err(at.fail(&format!("{key}.timing"), message));
    }
    if (timing == Timing::AfterStart) != r.starts.is_some() {
        return Err(at.fail(
            &format!("{key}.starts"),
            "timing \"after_start\" needs `starts` (\"discovery\" or \"determination\"), and only it takes one",
        ));
    }
    match &r.limit {
        Some(limit) => check_limit(at, &format!("{key}.limit"), limit),
        None => Ok(()),
    }
}

fn check_limit(at: &At<'_>, key: &str, limit: &Limit) -> Result<(), Problem> {
    let amount = one_amount(
        at,
        key,
        [
            ("days", limit.days),
            ("hours", limit.hours),
            ("business_days", limit.business_days),
        ],
    )?;
    if amount.is_none() || limit.starts.is_none() {
        return Err(at.fail(
            key,
            "a limit is one of days, hours or business_days, and `starts`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_load() {
        let rules = Rules::shipped().unwrap();
        assert!(rules.len() >= 60, "{}", rules.len());
        let ca = rules.get("us-ca").unwrap();
        assert_eq!(ca.rules.individual.days, Some(30));
        assert_eq!(ca.origin, Origin::Shipped);
        assert_eq!(rules.get("EU-DE").unwrap().rules.code, "EU-GDPR");
        assert_eq!(rules.get("CA-ON").unwrap().rules.code, "CA");
        assert!(rules.get("US-XX").is_none());
    }

    fn entry(extra: &str) -> String {
        format!(
            "[[jurisdiction]]\ncode = \"US-ZZ\"\nname = \"Test\"\napplies_by = \"residence\"\n\
             verified_on = \"2026-01-02\"\nsources_as_of = \"x\"\nconfidence = \"low\"\n{extra}\n\
             [jurisdiction.individual]\ntext = \"soon\"\n\
             [jurisdiction.credit_bureaus]\ntext = \"none\"\n\
             [jurisdiction.email]\ncounts = \"yes\"\ncondition = \"\"\n\
             [jurisdiction.substitute]\ntext = \"\"\n\
             [jurisdiction.content]\n\
             [[jurisdiction.source]]\nkey = \"K\"\ncitation = \"c\"\nas_of = \"undated\"\n"
        )
    }

    fn error(text: &str) -> String {
        parse("f.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn a_minimal_entry_parses() {
        parse("f.toml", &entry("")).unwrap();
    }

    #[test]
    fn semantic_errors_name_the_line_the_jurisdiction_and_the_key() {
        let text = entry("").replace(
            "text = \"soon\"",
            "days = -5\nstarts = \"discovery\"\ntext = \"soon\"",
        );
        let e = error(&text);
        assert!(e.starts_with("rules file f.toml: line 10: jurisdiction US-ZZ, key `individual.days`: -5 is negative"), "{e}");
        let text = entry("verified_on_typo = 1");
        let e = error(&text);
        assert!(
            e.contains("line 8") && e.contains("verified_on_typo") && e.contains("US-ZZ"),
            "{e}"
        );
        let text = entry("").replace("2026-01-02", "2026-02-30");
        assert!(
            error(&text).contains("key `verified_on`"),
            "{}",
            error(&text)
        );
        let doubled = format!("{}{}", entry(""), entry(""));
        assert!(
            error(&doubled).contains("appears twice"),
            "{}",
            error(&doubled)
        );
    }

    #[test]
    fn regulators_need_a_threshold_and_a_deadline() {
        let with = |r: &str| {
            entry("").replace(
                "[jurisdiction.credit_bureaus]",
                &format!(
                    "[[jurisdiction.regulator]]\nname = \"AG\"\n{r}\n[jurisdiction.credit_bureaus]"
                ),
            )
        };
        parse(
            "f.toml",
            &with("threshold = 501\ntiming = \"after\"\ndays = 15"),
        )
        .unwrap();
        parse(
            "f.toml",
            &with("threshold = \"unverified\"\ntiming = \"with\""),
        )
        .unwrap();
        for (r, wanted) in [
            ("timing = \"with\"", "no `threshold`"),
            ("threshold = 1", "no `timing`"),
            ("threshold = 0\ntiming = \"with\"", "at least 1 resident"),
            ("threshold = \"many\"\ntiming = \"with\"", "\"unverified\""),
            ("threshold = 1\ntiming = \"after\"", "set one"),
            ("threshold = 1\ntiming = \"with\"\ndays = 3", "need timing"),
            (
                "threshold = 1\ntiming = \"after_start\"\nhours = 72",
                "needs `starts`",
            ),
            (
                "threshold = 1\ntiming = \"after\"\ndays = 3\nhours = 2",
                "not several",
            ),
            ("threshold = 1\ntiming = \"soon\"", "unknown variant"),
            (
                "threshold = 1\ntiming = \"with\"\nlimit = { days = 45 }",
                "a limit is",
            ),
        ] {
            let e = error(&with(r));
            assert!(
                e.contains(wanted) && e.contains("US-ZZ") && e.contains("line "),
                "{r}: {e}"
            );
        }
    }
}
