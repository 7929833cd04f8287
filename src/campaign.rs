//! Campaign files: the TOML an operator writes to describe one notification effort (sender, notice
//! text per locale, discovery date, consent rule, wave plan, rate), how it is read and checked, and the
//! self-contained [`CampaignSpec`] stored in the database.
//!
//! The stored spec carries the template *sources*, not paths: what was sent must be showable later even
//! if the files change or vanish, and the daemon must never read the operator's working directory.
//! Its SHA-256 is the campaign's content hash (evidence exports cite it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::NaiveDate;
use lettre::message::Mailbox;
use serde::{Deserialize, Deserializer, Serialize};
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
    #[serde(default)]
    email_without_consent: bool,
    supplements: Option<i64>,
    default_locale: String,
    sender: SenderSpec,
    locales: BTreeMap<String, LocaleFile>,
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

/// How big a wave is. Written as in the campaign file: `1000`, `"10%"` or `"rest"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    Count(u64),
    Percent(f64),
    /// Everyone not in an earlier wave, including recipients added later.
    Rest,
}

impl Serialize for WaveSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WaveSize::Count(n) => s.serialize_u64(*n),
            WaveSize::Percent(p) => s.serialize_str(&format!("{p}%")),
            WaveSize::Rest => s.serialize_str("rest"),
        }
    }
}

impl<'de> Deserialize<'de> for WaveSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(0) => Err(serde::de::Error::custom("a wave size must be at least 1")),
            Raw::Count(n) => Ok(WaveSize::Count(n)),
            Raw::Text(t) if t == "rest" => Ok(WaveSize::Rest),
            Raw::Text(t) => match t
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
            {
                Some(p) if p > 0.0 && p <= 100.0 => Ok(WaveSize::Percent(p)),
                _ => Err(serde::de::Error::custom(format!(
                    "wave size {t:?}: use a count (1000), a percentage (\"10%\") or \"rest\""
                ))),
            },
        }
    }
}

/// When a wave may begin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Release {
    /// When the previous wave is finished and its hold time has passed.
    #[default]
    Auto,
    /// Only when an operator releases it.
    Manual,
}

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
    pub email_without_consent: bool,
    pub supplements: Option<i64>,
    pub default_locale: String,
    pub sender: SenderSpec,
    pub locales: BTreeMap<String, LocaleTemplates>,
    pub rate: RateSpec,
    pub waves: Vec<WaveSpec>,
    /// The campaign file exactly as written, for the record.
    pub source: String,
}

impl CampaignSpec {
    /// Reads a campaign file and the templates it names, and checks everything that can be checked
    /// without recipients (syntax, addresses, subjects, a sample render of every locale).
    pub fn load(path: &Path) -> Result<Self, CampaignFileError> {
        let err = |message: String| CampaignFileError {
            file: path.to_path_buf(),
            message,
        };
        let source =
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot read it ({e})")))?;
        let file: CampaignFile =
            toml::from_str(&source).map_err(|e| err(crate::config::toml_error(&source, &e)))?;
        let discovered_at = match file.discovered_at {
            None => None,
            Some(d) => match (d.date, d.time) {
                (Some(date), None) => NaiveDate::from_ymd_opt(
                    i32::from(date.year),
                    u32::from(date.month),
                    u32::from(date.day),
                ),
                _ => None,
            }
            .ok_or_else(|| {
                err(format!(
                    "discovered_at = {d}: expected a plain date such as 2023-11-02"
                ))
            })
            .map(Some)?,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut locales = BTreeMap::new();
        for (locale, l) in &file.locales {
            let read = |p: &Path| {
                let full = base.join(p);
                std::fs::read_to_string(&full).map_err(|e| CampaignFileError {
                    file: full.clone(),
                    message: format!("template for locale {locale} cannot be read ({e})"),
                })
            };
            locales.insert(
                locale.clone(),
                LocaleTemplates {
                    subject: l.subject.clone(),
                    text: read(&l.text)?,
                    html: read(&l.html)?,
                },
            );
        }
        let spec = CampaignSpec {
            name: file.name,
            discovered_at,
            email_without_consent: file.email_without_consent,
            supplements: file.supplements,
            default_locale: file.default_locale,
            sender: file.sender,
            locales,
            rate: file.rate,
            waves: file.waves,
            source,
        };
        spec.check().map_err(&err)?;
        crate::template::Templates::new(&spec)
            .and_then(|t| t.check_sample())
            .map_err(|e| err(e.to_string()))?;
        Ok(spec)
    }

    /// Rules between fields: a default locale with templates, valid addresses, safe subjects, sane
    /// rates and waves.
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            return Err("name must be 1 to 200 characters".into());
        }
        if self.locales.is_empty() {
            return Err(
                "no [locales.*] section: at least the default locale needs a template".into(),
            );
        }
        if !self.locales.contains_key(&self.default_locale) {
            return Err(format!(
                "default_locale {:?} has no [locales.{}] section (locales with templates: {})",
                self.default_locale,
                self.default_locale,
                self.locales.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        for (key, value) in [
            ("sender.from", Some(&self.sender.from)),
            ("sender.reply_to", self.sender.reply_to.as_ref()),
            ("sender.return_path", self.sender.return_path.as_ref()),
        ] {
            if let Some(v) = value {
                Mailbox::from_str(v)
                    .map_err(|e| format!("{key} = {v:?} is not a valid address ({e})"))?;
            }
        }
        for (locale, t) in &self.locales {
            if t.subject.trim().is_empty() {
                return Err(format!("locales.{locale}.subject is empty"));
            }
            if t.subject.chars().any(char::is_control) {
                return Err(format!(
                    "locales.{locale}.subject contains a line break or control character: a subject is one line (header injection)"
                ));
            }
        }
        if let Some(r) = self.rate.per_second
            && !(r > 0.0 && r.is_finite())
        {
            return Err(format!("rate.per_second = {r} must be a positive number"));
        }
        for (i, w) in self.waves.iter().enumerate() {
            for (key, v) in [
                ("max_failure_rate", w.max_failure_rate),
                ("max_deferral_rate", w.max_deferral_rate),
            ] {
                if let Some(v) = v
                    && !(0.0..=1.0).contains(&v)
                {
                    return Err(format!(
                        "waves[{i}].{key} = {v} must be between 0.0 and 1.0"
                    ));
                }
            }
            if w.size == WaveSize::Rest && i + 1 != self.waves.len() {
                return Err(format!(
                    "waves[{i}] has size \"rest\" but is not the last wave"
                ));
            }
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

    /// The mailbox of `sender.from` (checked at load).
    pub fn from_mailbox(&self) -> Mailbox {
        Mailbox::from_str(&self.sender.from).expect("checked at load")
    }

    /// The templates for a recipient's locale, falling back to the default locale.
    pub fn locale_for<'a>(&'a self, locale: Option<&'a str>) -> &'a str {
        match locale {
            Some(l) if self.locales.contains_key(l) => l,
            _ => &self.default_locale,
        }
    }
}
