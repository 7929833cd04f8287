//! Campaign files: the TOML an operator writes to describe one notification effort (sender, notice
//! text per locale, discovery date, consent rule, wave plan, rate), how it is read and checked, and the
//! self-contained [`CampaignSpec`] stored in the database.
//!
//! The stored spec carries the template *sources*, not paths: what was sent must be showable later even
//! if the files change or vanish, and the daemon must never read the operator's working directory.
//! Its SHA-256 is the campaign's content hash (evidence exports cite it).
//!
//! **Layer: campaigns.** Owns what a campaign is and says: the campaign file and stored spec (here), its
//! [`template`]s, the [`message`] built from them, the [`preflight`] check, the [`waves`] plan, and the
//! deadline [`forecast`] of that plan. Uses
//! the store and the configuration; used by the dispatcher, the transport (the built message) and the
//! command line.

pub mod forecast;
pub mod message;
pub mod preflight;
pub mod template;
pub mod waves;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::NaiveDate;
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A problem in a campaign file, naming the file (and line where known) and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct CampaignFileError {
    pub file: PathBuf,
    pub message: String,
}

/// The campaign file as written (paths relative to the file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CampaignFile {
    name: String,
    /// A TOML date (`discovered_at = 2023-11-02`).
    discovered_at: Option<toml::value::Datetime>,
    /// A TOML date (`determined_at = 2023-11-09`): when the breach was determined, if later.
    determined_at: Option<toml::value::Datetime>,
    #[serde(default)]
    email_without_consent: bool,
    supplements: Option<i64>,
    default_locale: String,
    sender: SenderSpec,
    locales: BTreeMap<String, LocaleFile>,
    /// Notices for the residents of one jurisdiction (`[by_jurisdiction.US-MA.en-US]`), by code and
    /// locale: what they receive instead of `[locales]`.
    #[serde(default)]
    by_jurisdiction: BTreeMap<String, BTreeMap<String, LocaleFile>>,
    #[serde(default)]
    rate: RateSpec,
    #[serde(default)]
    waves: Vec<WaveSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocaleFile {
    subject: String,
    text: PathBuf,
    html: PathBuf,
}

/// Who the notice is from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SenderSpec {
    /// `From:`, e.g. `Example Mortgage <notices@example.com>`.
    pub from: String,
    /// `Reply-To:`; defaults to none.
    pub reply_to: Option<String>,
    /// The envelope sender (where bounces go); defaults to the `from` address.
    pub return_path: Option<String>,
}

/// One locale's notice: a subject template and the sources of the text and HTML templates.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct LocaleTemplates {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Per-campaign pacing, used by the dispatcher.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    /// Messages per second for this campaign; none means only the global limits apply.
    pub per_second: Option<f64>,
    /// Messages that may go at once above the steady rate.
    pub burst: Option<u32>,
    /// Most messages per calendar day (UTC): the call centre's capacity.
    pub daily_cap: Option<u64>,
}

/// How big a wave is, and when a wave may begin: the stored plan's types, read from the campaign file.
pub use crate::store::{Release, WaveSize};

/// One wave of the plan, with the guards that pause the campaign when deliverability goes bad.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    pub size: WaveSize,
    #[serde(default)]
    pub release: Release,
    /// Minutes to wait after the previous wave finished before an automatic release.
    #[serde(default)]
    pub hold_minutes: u64,
    /// Pause the campaign when this share of the wave's attempts fail permanently (0.0 to 1.0).
    pub max_failure_rate: Option<f64>,
    /// Pause the campaign when this share of the wave's attempts are deferred (0.0 to 1.0).
    pub max_deferral_rate: Option<f64>,
}

/// A checked campaign, self-contained: what `campaign create` stores and the daemon sends from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CampaignSpec {
    pub name: String,
    pub discovered_at: Option<NaiveDate>,
    /// When the company determined that a breach occurred: clocks the rules start at determination
    /// count from it. Left out of the stored form when absent, so specs without it keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub determined_at: Option<NaiveDate>,
    pub email_without_consent: bool,
    pub supplements: Option<i64>,
    pub default_locale: String,
    pub sender: SenderSpec,
    pub locales: BTreeMap<String, LocaleTemplates>,
    /// The notice for the residents of a jurisdiction, by code (upper case, as recipients carry it)
    /// and locale: the same locales as `locales`. Absent from the stored form when empty, so the
    /// content hash of a campaign without variants does not depend on this field's existence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_jurisdiction: BTreeMap<String, BTreeMap<String, LocaleTemplates>>,
    pub rate: RateSpec,
    pub waves: Vec<WaveSpec>,
    /// The campaign file exactly as written, for the record.
    pub source: String,
}

impl CampaignSpec {
    /// Reads a campaign file and the templates it names, and checks everything that can be checked
    /// without recipients (syntax, addresses, subjects, a sample render of every locale).
    pub fn load(path: &Path) -> Result<Self, CampaignFileError> {
        let source = std::fs::read_to_string(path).map_err(|e| CampaignFileError {
            file: path.to_path_buf(),
            message: format!("cannot read it ({e})"),
        })?;
        let at = FileAt {
            path,
            source: &source,
        };
        let file: CampaignFile = toml::from_str(&source)
            .map_err(|e| at.error(crate::config::toml_error(&source, &e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let spec = CampaignSpec {
            name: file.name.clone(),
            discovered_at: plain_date(&at, "discovered_at", file.discovered_at.as_ref())?,
            determined_at: plain_date(&at, "determined_at", file.determined_at.as_ref())?,
            email_without_consent: file.email_without_consent,
            supplements: file.supplements,
            default_locale: file.default_locale.clone(),
            sender: file.sender.clone(),
            locales: read_templates(&at, base, &file.locales, &["locales"])?,
            by_jurisdiction: read_variants(&at, base, &file)?,
            rate: file.rate.clone(),
            waves: file.waves.clone(),
            source: source.clone(),
        };
        spec.check_at().map_err(|(key, message)| {
            at.key(&key.iter().map(String::as_str).collect::<Vec<_>>(), message)
        })?;
        crate::campaign::template::Templates::new(&spec)
            .and_then(|t| t.check_sample())
            .map_err(|e| template_error(&at, base, &file, e))?;
        Ok(spec)
    }

    /// Rules between fields: a default locale with templates, valid addresses, safe subjects, sane
    /// rates and waves.
    pub fn check(&self) -> Result<(), String> {
        self.check_at().map_err(|(_, message)| message)
    }

    /// As [`CampaignSpec::check`], with the key the problem is at (`["sender", "from"]`), so that a
    /// campaign file's error can name its line.
    fn check_at(&self) -> Result<(), Problem> {
        self.check_dates()?;
        self.check_locales()?;
        self.check_variants()?;
        self.check_sender()?;
        self.check_rate()?;
        self.check_waves()
    }

    /// A determination date needs the discovery date and never precedes it (the deadline arithmetic
    /// relies on that: a clock from determination is never earlier than one from discovery).
    fn check_dates(&self) -> Result<(), Problem> {
        let Some(determined) = self.determined_at else {
            return Ok(());
        };
        match self.discovered_at {
            None => Err((
                key(&["determined_at"]),
                format!(
                    "determined_at = {determined} needs discovered_at too: deadlines count from discovery"
                ),
            )),
            Some(discovered) if determined < discovered => Err((
                key(&["determined_at"]),
                format!(
                    "determined_at = {determined} is before discovered_at = {discovered}: a breach is determined on or after its discovery"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// A name, templates for the default locale, and one-line subjects.
    fn check_locales(&self) -> Result<(), Problem> {
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            return Err((key(&["name"]), "name must be 1 to 200 characters".into()));
        }
        if self.locales.is_empty() {
            return Err((
                key(&["locales"]),
                "no [locales.*] section: at least the default locale needs a template".into(),
            ));
        }
        if !self.locales.contains_key(&self.default_locale) {
            return Err((
                key(&["default_locale"]),
                format!(
                    "default_locale {:?} has no [locales.{}] section (locales with templates: {})",
                    self.default_locale,
                    self.default_locale,
                    self.locales.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        for (locale, t) in &self.locales {
            check_subject(&["locales", locale], t)?;
        }
        Ok(())
    }

    /// Each `[by_jurisdiction.CODE]` names a code as recipients carry it and gives the notice in
    /// exactly the campaign's locales: a resident of CODE must never fall back to the general notice
    /// (which may say what CODE forbids), and must get it in the same languages as everyone else.
    fn check_variants(&self) -> Result<(), Problem> {
        let locales: Vec<&String> = self.locales.keys().collect();
        for (code, variant) in &self.by_jurisdiction {
            let code_ok = !code.is_empty()
                && code
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
            if !code_ok {
                return Err((
                    key(&["by_jurisdiction", code]),
                    format!(
                        "by_jurisdiction.{code}: a jurisdiction code is upper-case letters, digits and `-`, as recipients carry it (`US-MA`)"
                    ),
                ));
            }
            if let Some(extra) = variant.keys().find(|l| !self.locales.contains_key(*l)) {
                return Err((
                    key(&["by_jurisdiction", code, extra]),
                    format!(
                        "by_jurisdiction.{code}.{extra}: the campaign has no [locales.{extra}]; the variant's locales are the campaign's ({})",
                        join(&locales)
                    ),
                ));
            }
            if let Some(missing) = locales.iter().find(|l| !variant.contains_key(**l)) {
                return Err((
                    key(&["by_jurisdiction", code]),
                    format!(
                        "by_jurisdiction.{code} has no {missing} notice: a variant gives every locale of the campaign ({}), so that no resident of {code} gets the general notice",
                        join(&locales)
                    ),
                ));
            }
            for (locale, t) in variant {
                check_subject(&["by_jurisdiction", code, locale], t)?;
            }
        }
        Ok(())
    }

    fn check_sender(&self) -> Result<(), Problem> {
        for (name, value) in [
            ("from", Some(&self.sender.from)),
            ("reply_to", self.sender.reply_to.as_ref()),
            ("return_path", self.sender.return_path.as_ref()),
        ] {
            if let Some(v) = value {
                Mailbox::from_str(v).map_err(|e| {
                    (
                        key(&["sender", name]),
                        format!("sender.{name} = {v:?} is not a valid address ({e})"),
                    )
                })?;
            }
        }
        Ok(())
    }

    fn check_rate(&self) -> Result<(), Problem> {
        if let Some(r) = self.rate.per_second
            && !(r > 0.0 && r.is_finite())
        {
            return Err((
                key(&["rate", "per_second"]),
                format!("rate.per_second = {r} must be a positive number"),
            ));
        }
        // Zero would silently never send (a cap) or never allow a message (a burst).
        for (name, value) in [
            ("daily_cap", self.rate.daily_cap),
            ("burst", self.rate.burst.map(u64::from)),
        ] {
            if value == Some(0) {
                return Err((
                    key(&["rate", name]),
                    format!(
                        "rate.{name} = 0 would never send anything: use at least 1, or leave it out"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_waves(&self) -> Result<(), Problem> {
        for (i, w) in self.waves.iter().enumerate() {
            for (name, v) in [
                ("max_failure_rate", w.max_failure_rate),
                ("max_deferral_rate", w.max_deferral_rate),
            ] {
                if let Some(v) = v
                    && !(0.0..=1.0).contains(&v)
                {
                    return Err((
                        key(&["waves", &i.to_string(), name]),
                        format!("waves[{i}].{name} = {v} must be between 0.0 and 1.0"),
                    ));
                }
            }
            if w.size == WaveSize::Rest && i + 1 != self.waves.len() {
                return Err((
                    key(&["waves", &i.to_string(), "size"]),
                    format!("waves[{i}] has size \"rest\" but is not the last wave"),
                ));
            }
        }
        // Without an open-ended last wave, recipients beyond the planned sizes (or added later) would
        // never be sent.
        if let Some(last) = self.waves.last()
            && last.size != WaveSize::Rest
        {
            let i = self.waves.len() - 1;
            return Err((
                key(&["waves", &i.to_string(), "size"]),
                format!(
                    "the last wave (waves[{i}]) must have size \"rest\", or recipients beyond the plan would never be sent"
                ),
            ));
        }
        Ok(())
    }

    /// The canonical stored form (JSON).
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("a campaign spec always serialises")
    }

    /// Reads the stored form back.
    pub fn from_stored(text: &str) -> Result<Self, String> {
        serde_json::from_str(text)
            .map_err(|e| format!("stored campaign definition is unreadable: {e}"))
    }

    /// SHA-256 over the stored form: identifies exactly what was sent.
    pub fn content_hash(&self) -> String {
        hex::encode(Sha256::digest(self.to_stored().as_bytes()))
    }

    /// The templates for a recipient's locale, falling back to the default locale.
    pub fn locale_for<'a>(&'a self, locale: Option<&'a str>) -> &'a str {
        match locale {
            Some(l) if self.locales.contains_key(l) => l,
            _ => &self.default_locale,
        }
    }
}

/// A problem found by [`CampaignSpec::check_at`]: the key it is at, and the message.
type Problem = (Vec<String>, String);

fn key(k: &[&str]) -> Vec<String> {
    k.iter().map(|s| s.to_string()).collect()
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A non-empty, one-line subject, at `table` (`["locales", "en-US"]`).
fn check_subject(table: &[&str], t: &LocaleTemplates) -> Result<(), Problem> {
    let name = table.join(".");
    let mut at = key(table);
    at.push("subject".into());
    if t.subject.trim().is_empty() {
        return Err((at, format!("{name}.subject is empty")));
    }
    if t.subject.chars().any(char::is_control) {
        return Err((
            at,
            format!(
                "{name}.subject contains a line break or control character: a subject is one line (header injection)"
            ),
        ));
    }
    Ok(())
}

/// Errors about a campaign file: a problem with a key's value names the line of the key.
struct FileAt<'a> {
    path: &'a Path,
    source: &'a str,
}

impl FileAt<'_> {
    fn error(&self, message: String) -> CampaignFileError {
        CampaignFileError {
            file: self.path.to_path_buf(),
            message,
        }
    }

    fn key(&self, key: &[&str], message: String) -> CampaignFileError {
        match crate::config::toml_line_of(self.source, key) {
            Some(line) => self.error(format!("line {line}: {message}")),
            None => self.error(message),
        }
    }
}

/// `discovered_at` or `determined_at` (`name`): a plain date, or nothing.
fn plain_date(
    at: &FileAt<'_>,
    name: &str,
    value: Option<&toml::value::Datetime>,
) -> Result<Option<NaiveDate>, CampaignFileError> {
    let Some(d) = value else {
        return Ok(None);
    };
    match (d.date, d.time) {
        (Some(date), None) => NaiveDate::from_ymd_opt(
            i32::from(date.year),
            u32::from(date.month),
            u32::from(date.day),
        ),
        _ => None,
    }
    .ok_or_else(|| {
        at.key(
            &[name],
            format!("{name} = {d}: expected a plain date such as 2023-11-02"),
        )
    })
    .map(Some)
}

/// Every locale's template sources, read from the files the campaign file names (relative to it);
/// `table` is where the locales are written (`["locales"]`, `["by_jurisdiction", "US-MA"]`).
fn read_templates(
    at: &FileAt<'_>,
    base: &Path,
    files: &BTreeMap<String, LocaleFile>,
    table: &[&str],
) -> Result<BTreeMap<String, LocaleTemplates>, CampaignFileError> {
    let mut locales = BTreeMap::new();
    for (locale, l) in files {
        let read = |part: &str, p: &Path| {
            let full = base.join(p);
            std::fs::read_to_string(&full).map_err(|e| {
                let mut k = table.to_vec();
                k.extend([locale.as_str(), part]);
                at.key(
                    &k,
                    format!(
                        "{}: the template {} cannot be read ({e})",
                        k.join("."),
                        full.display()
                    ),
                )
            })
        };
        locales.insert(
            locale.clone(),
            LocaleTemplates {
                subject: l.subject.clone(),
                text: read("text", &l.text)?,
                html: read("html", &l.html)?,
            },
        );
    }
    Ok(locales)
}

/// The templates of every `[by_jurisdiction.CODE]`.
fn read_variants(
    at: &FileAt<'_>,
    base: &Path,
    file: &CampaignFile,
) -> Result<BTreeMap<String, BTreeMap<String, LocaleTemplates>>, CampaignFileError> {
    let mut variants = BTreeMap::new();
    for (code, locales) in &file.by_jurisdiction {
        let table = ["by_jurisdiction", code.as_str()];
        variants.insert(code.clone(), read_templates(at, base, locales, &table)?);
    }
    Ok(variants)
}

/// A template's problem at `campaign create`: a text or HTML template's names its own file (the line
/// is in the message); a subject's names the line of the campaign file where it is written.
fn template_error(
    at: &FileAt<'_>,
    base: &Path,
    file: &CampaignFile,
    e: crate::campaign::template::TemplateError,
) -> CampaignFileError {
    let (variant, locale, part) = template::split_name(&e.template);
    let files = match variant {
        Some(code) => file.by_jurisdiction.get(code),
        None => Some(&file.locales),
    };
    let file_of = |p: &Path| CampaignFileError {
        file: base.join(p),
        message: e.to_string(),
    };
    match (files.and_then(|f| f.get(locale)), part) {
        (Some(l), "text") => file_of(&l.text),
        (Some(l), "html") => file_of(&l.html),
        _ => match variant {
            Some(code) => at.key(&["by_jurisdiction", code, locale, part], e.to_string()),
            None => at.key(&["locales", locale, part], e.to_string()),
        },
    }
}

/// The template files a stored campaign's file names for a locale (of a variant), as written there
/// (relative to the campaign file): `(text, html)`. For messages that name a template after the
/// campaign was stored; `None` if the stored file cannot be read back.
pub(crate) fn template_paths(
    spec: &CampaignSpec,
    variant: Option<&str>,
    locale: &str,
) -> Option<(PathBuf, PathBuf)> {
    let file: CampaignFile = toml::from_str(&spec.source).ok()?;
    let l = match variant {
        Some(code) => file.by_jurisdiction.get(code)?.get(locale)?,
        None => file.locales.get(locale)?,
    };
    Some((l.text.clone(), l.html.clone()))
}

/// The campaign row a spec is stored as.
impl From<&CampaignSpec> for crate::store::NewCampaign {
    fn from(spec: &CampaignSpec) -> Self {
        crate::store::NewCampaign {
            name: spec.name.clone(),
            definition: spec.to_stored(),
            content_hash: spec.content_hash(),
            email_without_consent: spec.email_without_consent,
            discovered_at: spec.discovered_at,
            determined_at: spec.determined_at,
            supplements: spec.supplements,
        }
    }
}
