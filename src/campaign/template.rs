//! Notice templates: minijinja with strict undefined variables and HTML auto-escaping.
//!
//! Recipient data is only ever a *value* in the render context: it is escaped in HTML and never parsed
//! as a template, so `{{ … }}` or `<script>` in a name stays inert text. Rendered subjects must be one
//! line; anything else is a render error, never a header.
//!
//! A campaign may give the residents of a jurisdiction a notice of their own (`[by_jurisdiction]`,
//! docs/campaigns.md): those templates are compiled beside the general ones (named `CODE/LOCALE/part`)
//! and every render chooses them from the recipient's jurisdiction, so the daemon, `preview`,
//! `test-send`, the pre-flight and the content checks all see the notice a recipient actually gets.

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context};
use serde::Serialize;

use crate::campaign::CampaignSpec;
use crate::store::Recipient;

/// A template that does not parse or does not render, with where and for whom.
#[derive(Debug, Clone, thiserror::Error)]
#[error("template {template}{}{}: {message}",
    line.map(|l| format!(" line {l}")).unwrap_or_default(),
    recipient_id.map(|r| format!(" (recipient row {r})")).unwrap_or_default())]
pub struct TemplateError {
    /// `LOCALE/subject`, `LOCALE/text` or `LOCALE/html`; a jurisdiction's variant is prefixed with
    /// its code (`US-MA/en-US/text`).
    pub template: String,
    pub line: Option<usize>,
    pub recipient_id: Option<i64>,
    pub message: String,
}

/// One recipient's notice, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub locale: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The three templates of each locale, compiled once per campaign.
pub struct Templates {
    env: Environment<'static>,
    campaign: CampaignContext,
    default_locale: String,
    locales: Vec<String>,
    /// The jurisdiction codes with a notice of their own (`[by_jurisdiction]`).
    variants: Vec<String>,
}

/// The name a template is compiled under: `LOCALE/part`, or `CODE/LOCALE/part` for a jurisdiction's
/// variant.
fn template_name(variant: Option<&str>, locale: &str, part: &str) -> String {
    match variant {
        Some(code) => format!("{code}/{locale}/{part}"),
        None => format!("{locale}/{part}"),
    }
}

/// A template's name taken apart: `(variant, locale, part)`.
pub(crate) fn split_name(name: &str) -> (Option<&str>, &str, &str) {
    let (rest, part) = name.rsplit_once('/').unwrap_or((name, ""));
    match rest.split_once('/') {
        Some((code, locale)) => (Some(code), locale, part),
        None => (None, rest, part),
    }
}

/// What templates see as `campaign`.
#[derive(Debug, Clone, Serialize)]
struct CampaignContext {
    id: i64,
    name: String,
    discovered_at: Option<String>,
    from: String,
    reply_to: Option<String>,
}

/// What templates see as `recipient`: the person's own fields and the import's extra columns.
#[derive(Debug, Clone, Serialize)]
pub struct RecipientContext<'a> {
    pub id: i64,
    pub customer_id: &'a str,
    pub email: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub locale: Option<&'a str>,
    pub jurisdiction: Option<&'a str>,
    pub electronic_consent: bool,
    pub address1: Option<&'a str>,
    pub address2: Option<&'a str>,
    pub city: Option<&'a str>,
    pub region: Option<&'a str>,
    pub postal_code: Option<&'a str>,
    pub country: Option<&'a str>,
    pub attributes: &'a serde_json::Map<String, serde_json::Value>,
}

impl<'a> From<&'a Recipient> for RecipientContext<'a> {
    fn from(r: &'a Recipient) -> Self {
        RecipientContext {
            id: r.id,
            customer_id: &r.customer_id,
            email: r.email.as_deref(),
            first_name: r.first_name.as_deref(),
            last_name: r.last_name.as_deref(),
            locale: r.locale.as_deref(),
            jurisdiction: r.jurisdiction.as_deref(),
            electronic_consent: r.electronic_consent,
            address1: r.address1.as_deref(),
            address2: r.address2.as_deref(),
            city: r.city.as_deref(),
            region: r.region.as_deref(),
            postal_code: r.postal_code.as_deref(),
            country: r.country.as_deref(),
            attributes: &r.attributes,
        }
    }
}

const PARTS: [&str; 3] = ["subject", "text", "html"];

/// Most template engine steps one part of one notice may take.
const RENDER_FUEL: u64 = 2_000_000;

impl Templates {
    /// Compiles every locale's templates; a syntax error names the template and line.
    pub fn new(spec: &CampaignSpec) -> Result<Self, TemplateError> {
        Self::with_campaign_id(spec, 0)
    }

    /// As [`Templates::new`], for a stored campaign (templates may show `campaign.id`).
    pub fn with_campaign_id(spec: &CampaignSpec, campaign_id: i64) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Only the HTML part is escaped; subject and text are plain text.
        env.set_auto_escape_callback(|name| {
            if name.ends_with("/html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_keep_trailing_newline(true);
        // A bound on the work of one render, so that a template loop that would run for hours is an
        // error at `campaign create` (the sample render) instead of a daemon that hangs. A real notice
        // uses a few thousand steps.
        env.set_fuel(Some(RENDER_FUEL));
        let general = spec.locales.iter().map(|(l, t)| (None, l, t));
        let variants = spec
            .by_jurisdiction
            .iter()
            .flat_map(|(code, v)| v.iter().map(move |(l, t)| (Some(code.as_str()), l, t)));
        for (variant, locale, t) in general.chain(variants) {
            for (part, source) in PARTS.iter().zip([&t.subject, &t.text, &t.html]) {
                let name = template_name(variant, locale, part);
                env.add_template_owned(name.clone(), source.clone())
                    .map_err(|e| template_error(&name, e, None))?;
            }
        }
        Ok(Templates {
            env,
            campaign: CampaignContext {
                id: campaign_id,
                name: spec.name.clone(),
                discovered_at: spec.discovered_at.map(|d| d.to_string()),
                from: spec.sender.from.clone(),
                reply_to: spec.sender.reply_to.clone(),
            },
            default_locale: spec.default_locale.clone(),
            locales: spec.locales.keys().cloned().collect(),
            variants: spec.by_jurisdiction.keys().cloned().collect(),
        })
    }

    /// The jurisdiction codes with a notice of their own.
    pub fn variants(&self) -> &[String] {
        &self.variants
    }

    /// The variant a recipient of `jurisdiction` gets: the `[by_jurisdiction]` code equal to theirs
    /// (ignoring case and surrounding spaces, as the rules compare codes), or `None` for the general
    /// notice.
    pub fn variant_for(&self, jurisdiction: Option<&str>) -> Option<&str> {
        let code = jurisdiction?.trim();
        self.variants
            .iter()
            .find(|v| v.eq_ignore_ascii_case(code))
            .map(String::as_str)
    }

    /// The locales that have templates.
    pub fn locales(&self) -> &[String] {
        &self.locales
    }

    /// The locale used for a recipient: theirs when it has templates, else the default.
    pub fn locale_for(&self, locale: Option<&str>) -> String {
        match locale {
            Some(l) if self.locales.iter().any(|k| k == l) => l.to_string(),
            _ => self.default_locale.clone(),
        }
    }

    /// Renders one recipient's notice in their locale (or the default).
    pub fn render(&self, recipient: &Recipient) -> Result<Rendered, TemplateError> {
        let locale = self.locale_for(recipient.locale.as_deref());
        self.render_in(&locale, &RecipientContext::from(recipient))
    }

    /// Renders a locale's templates for a recipient context.
    pub fn render_in(
        &self,
        locale: &str,
        recipient: &RecipientContext<'_>,
    ) -> Result<Rendered, TemplateError> {
        let ctx = context! { recipient => Value::from_serialize(recipient), campaign => Value::from_serialize(&self.campaign) };
        let variant = self.variant_for(recipient.jurisdiction);
        let mut out = [String::new(), String::new(), String::new()];
        for (i, part) in PARTS.iter().enumerate() {
            let name = template_name(variant, locale, part);
            let tmpl = self
                .env
                .get_template(&name)
                .map_err(|e| template_error(&name, e, Some(recipient.id)))?;
            out[i] = tmpl
                .render(&ctx)
                .map_err(|e| template_error(&name, e, Some(recipient.id)))?;
        }
        let [subject, text, html] = out;
        let subject = subject.trim().to_string();
        let subject_name = template_name(variant, locale, "subject");
        if subject.is_empty() {
            return Err(TemplateError {
                template: subject_name,
                line: None,
                recipient_id: Some(recipient.id),
                message: "the subject renders empty".into(),
            });
        }
        if subject.chars().any(char::is_control) {
            return Err(TemplateError {
                template: subject_name,
                line: None,
                recipient_id: Some(recipient.id),
                message: "the subject renders with a line break or control character (refused: it could add a header)".into(),
            });
        }
        Ok(Rendered {
            locale: locale.to_string(),
            subject,
            text,
            html,
        })
    }

    /// Renders every locale (of the general notice and of every variant) for a synthetic recipient,
    /// with undefined variables tolerated (no real recipient exists yet, so their attribute columns
    /// are unknown). Catches everything but missing variables; [`Templates::render`] over real
    /// recipients catches those before a campaign starts.
    pub fn check_sample(&self) -> Result<(), TemplateError> {
        // The general notice for the sample's own jurisdiction, unless that has a variant; each
        // variant for a recipient carrying its code.
        let attributes = serde_json::Map::new();
        let sample = sample_recipient(&attributes).jurisdiction;
        let general = if self.variant_for(sample).is_some() {
            None
        } else {
            sample
        };
        let codes = std::iter::once(general).chain(self.variants.iter().map(|v| Some(v.as_str())));
        for code in codes {
            for locale in &self.locales {
                self.render_sample(locale, code)?;
            }
        }
        Ok(())
    }

    /// A locale's notice for a synthetic recipient of `jurisdiction` (the variant it selects, or the
    /// general notice), with undefined variables tolerated, as [`Templates::check_sample`] renders it:
    /// what `campaign create` can check before any recipient exists.
    pub fn render_sample(
        &self,
        locale: &str,
        jurisdiction: Option<&str>,
    ) -> Result<Rendered, TemplateError> {
        let mut lenient = self.env.clone();
        lenient.set_undefined_behavior(UndefinedBehavior::Chainable);
        let attributes = serde_json::Map::new();
        let mut sample = sample_recipient(&attributes);
        sample.jurisdiction = jurisdiction;
        let variant = self.variant_for(jurisdiction);
        let ctx = context! { recipient => Value::from_serialize(&sample), campaign => Value::from_serialize(&self.campaign) };
        let mut out = [String::new(), String::new(), String::new()];
        for (i, part) in PARTS.iter().enumerate() {
            let name = template_name(variant, locale, part);
            let tmpl = lenient
                .get_template(&name)
                .map_err(|e| template_error(&name, e, Some(0)))?;
            out[i] = tmpl
                .render(&ctx)
                .map_err(|e| template_error(&name, e, None))?;
            // A subject that renders a line break from the template itself would be refused for
            // every recipient: refuse the campaign file instead.
            if *part == "subject" && out[i].trim().chars().any(char::is_control) {
                return Err(TemplateError {
                    template: name,
                    line: None,
                    recipient_id: None,
                    message: "the subject renders with a line break or control character (refused: it could add a header)".into(),
                });
            }
        }
        let [subject, text, html] = out;
        Ok(Rendered {
            locale: locale.to_string(),
            subject: subject.trim().to_string(),
            text,
            html,
        })
    }
}

/// A minijinja error of template `name` as the operator reads it (`recipient_id`: whose render).
fn template_error(name: &str, e: minijinja::Error, recipient_id: Option<i64>) -> TemplateError {
    let mut message = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        message = format!(
            "the template takes more than {RENDER_FUEL} steps to render (a loop that runs too long?)"
        );
    }
    if e.kind() == minijinja::ErrorKind::UndefinedError && e.detail().is_none() {
        message = "a variable used here is not defined for this recipient (undefined value)".into();
    }
    TemplateError {
        template: name.to_string(),
        line: e.line(),
        recipient_id,
        message,
    }
}

/// A made-up recipient with every field filled, for checks before real recipients exist.
pub fn sample_recipient(
    attributes: &serde_json::Map<String, serde_json::Value>,
) -> RecipientContext<'_> {
    RecipientContext {
        id: 0,
        customer_id: "SAMPLE-0001",
        email: Some("sample.recipient@example.com"),
        first_name: Some("Sample"),
        last_name: Some("Recipient"),
        locale: None,
        jurisdiction: Some("US-CA"),
        electronic_consent: true,
        address1: Some("1 Sample Street"),
        address2: None,
        city: Some("Sampleville"),
        region: Some("CA"),
        postal_code: Some("90001"),
        country: Some("US"),
        attributes,
    }
}
