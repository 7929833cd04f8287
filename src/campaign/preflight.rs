//! Pre-flight: everything checked before the first message of a campaign leaves. A wrong template
//! sent to four million people cannot be called back.
//!
//! Run by `campaign start`, and by the daemon before it sends for a campaign (an operator may start a
//! campaign with SQL). Renders every locale's templates against a sample of the campaign's real
//! recipients (one per locale and jurisdiction present) with strict undefined variables, and every
//! locale against every jurisdiction present, so a paragraph conditional on `recipient.jurisdiction`
//! is exercised in every language.

use crate::campaign::CampaignSpec;
use crate::campaign::template::{RecipientContext, TemplateError, Templates};
use crate::store::{Campaign, Store};

/// How many (locale, jurisdiction) groups are sampled at most.
const SAMPLE_GROUPS: u32 = 500;

/// The outcome of a pre-flight check.
#[derive(Debug, Default)]
pub struct Report {
    pub rendered: usize,
    pub errors: Vec<TemplateError>,
}

impl Report {
    /// One message listing the first problems, or `None` when all is well.
    pub fn problem(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        Some(format!(
            "{} template problem(s) in {} render(s): {}",
            self.errors.len(),
            self.rendered,
            first_of(&self.errors, 5)
        ))
    }
}

/// The first `shown` of `items`, joined by `; `, then how many more there are.
pub(crate) fn first_of<T: ToString>(items: &[T], shown: usize) -> String {
    let mut text: Vec<String> = items.iter().take(shown).map(T::to_string).collect();
    let more = items.len().saturating_sub(shown);
    if more > 0 {
        text.push(format!("and {more} more"));
    }
    text.join("; ")
}

/// Loads a stored campaign's spec and compiled templates.
pub fn templates_of(campaign: &Campaign) -> anyhow::Result<(CampaignSpec, Templates)> {
    let spec = CampaignSpec::from_stored(&campaign.definition)
        .map_err(|e| anyhow::anyhow!("campaign {}: {e}", campaign.id))?;
    let templates = Templates::with_campaign_id(&spec, campaign.id)?;
    Ok((spec, templates))
}

/// Checks a stored campaign against its own recipients.
pub async fn check(store: &Store, campaign: &Campaign) -> anyhow::Result<Report> {
    let (_, templates) = templates_of(campaign)?;
    let sample = store.sample_recipients(campaign.id, SAMPLE_GROUPS).await?;
    let mut report = Report::default();
    let mut jurisdictions: Vec<Option<String>> =
        sample.iter().map(|r| r.jurisdiction.clone()).collect();
    jurisdictions.sort();
    jurisdictions.dedup();
    for r in &sample {
        report.rendered += 1;
        if let Err(e) = templates.render(r) {
            report.errors.push(e);
        }
    }
    // Every locale against every jurisdiction, using a real recipient's data.
    if let Some(base) = sample.first() {
        for locale in templates.locales() {
            for j in &jurisdictions {
                let mut ctx = RecipientContext::from(base);
                ctx.jurisdiction = j.as_deref();
                report.rendered += 1;
                if let Err(e) = templates.render_in(locale, &ctx)
                    && !report
                        .errors
                        .iter()
                        .any(|x| x.template == e.template && x.line == e.line)
                {
                    report.errors.push(e);
                }
            }
        }
    }
    Ok(report)
}
