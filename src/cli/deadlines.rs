//! Where the jurisdiction rules meet stored campaigns: the import summary's count of jurisdiction codes
//! (unknown ones shown, never dropped), and each campaign's deadline per jurisdiction, computed from the
//! rules and the campaign's dates and written to the store (`campaign_deadlines`, read by the
//! `jurisdiction_progress` view, `status` and the evidence export).
//!
//! It lives in the command line because the command line is the layer that may use both the rules and
//! the store (docs/architecture.md); the arithmetic is `rules::deadline`'s, the SQL the store's.
//! Only codes and counts are printed: never a recipient's data.

use std::fmt::Write as _;

use chrono::NaiveDate;

use crate::config::RulesSettings;
use crate::intake::{DeadlineDays, JurisdictionTally};
use crate::rules::deadline::{BreachDates, IndividualBasis, individual_deadline};
use crate::rules::{self, Rules};
use crate::store::deadlines::{DeadlineBasis, JurisdictionDeadline};
use crate::store::{Campaign, Store, deadline_day};

/// The import summary's lines about jurisdiction codes: how many rows carry a code the rules know,
/// each unknown code with its row count, and rows without one. Rows are imported whatever their code.
pub fn import_codes(rules: &Rules, tally: &JurisdictionTally) -> String {
    let counts = rules.count_code_totals(
        tally.per_code.iter().map(|(c, n)| (c.as_str(), *n)),
        tally.missing,
    );
    let mut out = format!(
        "  jurisdictions: {} rows with a known code ({} codes), {} with an unknown code, {} without one\n",
        counts.known_total(),
        counts.known.len(),
        counts.unknown_total(),
        counts.missing
    );
    if !counts.unknown.is_empty() {
        let _ = writeln!(
            out,
            "  unknown jurisdiction codes (imported all the same; their deadline is the internal target unless rules.file adds them):"
        );
        for (code, rows) in &counts.unknown {
            let _ = writeln!(out, "    {code:<8} {rows:>10} rows");
        }
    }
    out
}

/// The deadline of one jurisdiction code as recipients carry it (`None`: no code).
pub fn deadline_of(
    rules: &Rules,
    settings: &RulesSettings,
    dates: &BreachDates,
    code: Option<&str>,
) -> JurisdictionDeadline {
    let target = settings.internal_target_days;
    let internal = |text: String| JurisdictionDeadline {
        jurisdiction: code.map(str::to_string),
        deadline: add_days(dates.discovered, target),
        basis: DeadlineBasis::InternalTarget,
        days: i64::from(target),
        law_text: Some(text),
    };
    let Some(code) = code else {
        return internal("no jurisdiction on the recipient: the internal target applies".into());
    };
    let Some(entry) = rules.get(code) else {
        return internal(format!(
            "jurisdiction code {code} is not in the rules: the internal target applies"
        ));
    };
    let individual = &entry.rules.individual;
    match individual_deadline(individual, dates, target) {
        Some(d) => match d.basis {
            IndividualBasis::Law { days, .. } => JurisdictionDeadline {
                jurisdiction: Some(code.to_string()),
                deadline: d.due,
                basis: DeadlineBasis::Law,
                days: i64::from(days),
                law_text: None,
            },
            IndividualBasis::InternalTarget { days } => JurisdictionDeadline {
                jurisdiction: Some(code.to_string()),
                deadline: d.due,
                basis: DeadlineBasis::InternalTarget,
                days: i64::from(days),
                law_text: Some(individual.text.clone()),
            },
        },
        None => internal(format!(
            "the rules of {code} ask no notice to individuals ({}): the internal target applies",
            individual.text
        )),
    }
}

fn add_days(day: NaiveDate, n: u32) -> NaiveDate {
    day.checked_add_days(chrono::Days::new(u64::from(n)))
        .unwrap_or(NaiveDate::MAX)
}

/// Computes and stores the deadline of every jurisdiction present among the campaign's recipients
/// (from the per-jurisdiction counters, never the recipients), replacing what was stored. Returns how
/// many were written; none when the campaign has no discovery date (nothing to count from).
pub async fn refresh(
    store: &Store,
    settings: &RulesSettings,
    campaign: &Campaign,
) -> anyhow::Result<usize> {
    let Some(dates) = breach_dates(campaign) else {
        return Ok(0);
    };
    let rules = rules::load(settings)?;
    let codes = store.jurisdiction_codes(campaign.id).await?;
    let rows: Vec<JurisdictionDeadline> = codes
        .iter()
        .map(|c| deadline_of(&rules, settings, &dates, c.as_deref()))
        .collect();
    let moved = store
        .replace_deadlines(campaign.id, &rows, chrono::Utc::now())
        .await?;
    if moved > 0 {
        println!(
            "  deadlines changed: {moved} recipients take their jurisdiction's new deadline (sending order, letters)"
        );
    }
    Ok(rows.len())
}

/// The dates a campaign's clocks start from; `None` without a discovery date (no deadlines).
fn breach_dates(campaign: &Campaign) -> Option<BreachDates> {
    Some(BreachDates {
        discovered: campaign.discovered_at?,
        // Without a determination date, clocks that start at determination start at discovery (the
        // earlier reading, rules::deadline).
        determined: campaign.determined_at,
    })
}

/// Each imported row's deadline day, for the claim order (docs/deadlines.md, "Sending order"): from the
/// same rules and arithmetic as [`refresh`], so that what the import writes and what `refresh` stores
/// agree. A campaign without a discovery date has no deadlines: every row 0, queue order.
pub fn import_deadline_days(
    rules: Rules,
    settings: &RulesSettings,
    campaign: &Campaign,
) -> DeadlineDays {
    let Some(dates) = breach_dates(campaign) else {
        return DeadlineDays::default();
    };
    let settings = settings.clone();
    DeadlineDays::new(move |code| {
        deadline_day(deadline_of(&rules, &settings, &dates, code).deadline)
    })
}
