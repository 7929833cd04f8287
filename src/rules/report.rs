//! The regulator report as a pure function: given the effective rules, the breach's dates and, per
//! jurisdiction code, the campaign's figures (residents, notices sent, letters owed, first and last
//! notice), which regulators must hear and by when, which credit-bureau duties apply, and where
//! substitute notice is allowed, with what each regulator's form asks.
//!
//! Pure (no clock, no database) so the figures a regulator sees can be pinned by tests; the command
//! line feeds it from the store and prints it (`breach-notifier report regulators`). Thresholds that
//! are not met are kept in the report with the figure they were compared with, so counsel sees why a
//! regulator is absent; codes the rules do not know are listed, never dropped. Nothing here is legal
//! advice: it applies the rules file as written (docs/regulators.md).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::deadline::{BreachDates, Due, RegulatorDue, individual_deadline, regulator_due};
use super::{AppliesBy, Entry, Jurisdiction, Regulator, Rules, Start, Threshold, Timing};

/// A jurisdiction code's figures as the store counts them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Figures {
    pub residents: i64,
    /// Notices the relay accepted (bounced since or not).
    pub email_sent: i64,
    pub bounced: i64,
    pub letters_owed: i64,
    /// Residents without a usable email and without a postal address.
    pub no_contact: i64,
    pub first_email: Option<DateTime<Utc>>,
    pub last_email: Option<DateTime<Utc>>,
}

impl Figures {
    /// Adds another code's figures (codes the rules map to one entry: `us-ca` and `US-CA`).
    fn add(&mut self, other: &Figures) {
        self.residents += other.residents;
        self.email_sent += other.email_sent;
        self.bounced += other.bounced;
        self.letters_owed += other.letters_owed;
        self.no_contact += other.no_contact;
        self.first_email = earliest(self.first_email, other.first_email);
        self.last_email = self.last_email.max(other.last_email);
    }

    /// Notified by email: accepted and not bounced.
    pub fn emailed(&self) -> i64 {
        self.email_sent - self.bounced
    }
}

fn earliest<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the report is computed from.
#[derive(Debug, Clone)]
pub struct ReportInput<'a> {
    pub rules: &'a Rules,
    /// `None` when the campaign has no discovery date: no clock can be computed.
    pub dates: Option<BreachDates>,
    pub internal_target_days: u32,
    /// Per code as recipients carry it (`None`: no code).
    pub figures: Vec<(Option<String>, Figures)>,
}

/// Whether a threshold is met by the figure it is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Met {
    Yes,
    No,
    /// The duty itself could not be verified (`threshold = "unverified"`): counsel decides.
    Unverified,
    /// The rules found no such duty (no credit-bureau threshold).
    NoDuty,
}

impl Met {
    pub fn as_str(self) -> &'static str {
        match self {
            Met::Yes => "yes",
            Met::No => "no",
            Met::Unverified => "unverified",
            Met::NoDuty => "no_duty",
        }
    }
}

/// Which kind of duty a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DutyKind {
    Regulator,
    CreditBureaus,
    SubstituteNotice,
}

impl DutyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DutyKind::Regulator => "regulator",
            DutyKind::CreditBureaus => "credit_bureaus",
            DutyKind::SubstituteNotice => "substitute_notice",
        }
    }
}

/// One duty of one jurisdiction: a regulator to notify, the credit bureaus, or substitute notice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Duty {
    pub kind: DutyKind,
    /// The authority, or what the line is about.
    pub name: String,
    /// The least number that triggers it, when a number.
    pub threshold: Option<i64>,
    pub threshold_text: String,
    /// The figure compared with the threshold (residents of the jurisdiction, or the campaign's
    /// whole count for rules that apply by sector).
    pub compared_with: i64,
    pub met: Met,
    /// When the duty applies only in some cases, as the rules say.
    pub condition: Option<String>,
    /// The clock as the rules set it (`30 days after determination`, `before the consumer notice`).
    pub clock: String,
    /// The last day on time, when it can be computed.
    pub due: Option<NaiveDate>,
    /// How `due` was reached, or why there is none.
    pub due_note: String,
    /// What the regulator's notice or form asks; for substitute notice, what it requires.
    pub asks: Vec<String>,
}

/// One jurisdiction of the effective rules, with the codes that map to it and what it asks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JurisdictionReport {
    pub code: String,
    pub name: String,
    pub applies_by: AppliesBy,
    /// Codes as recipients carry them that the rules mapped to this entry (none for sector rules).
    pub codes: Vec<String>,
    pub figures: Figures,
    /// The last day on time of the notice to individuals (`None`: no discovery date, or none asked).
    pub consumer_deadline: Option<NaiveDate>,
    pub consumer_deadline_basis: String,
    pub duties: Vec<Duty>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegulatorReport {
    pub jurisdictions: Vec<JurisdictionReport>,
    /// Codes the rules do not know, with their figures: no regulator can be named for them.
    pub unknown_codes: Vec<(String, Figures)>,
    /// Recipients without a jurisdiction code.
    pub without_code: Figures,
    /// Every recipient of the campaign (what sector rules are compared with).
    pub total: Figures,
}

/// Builds the report: residence rules for the codes present, sector rules against the whole campaign.
pub fn build(input: &ReportInput<'_>) -> RegulatorReport {
    let mut present: BTreeMap<String, (Vec<String>, Figures)> = BTreeMap::new();
    let mut unknown: BTreeMap<String, Figures> = BTreeMap::new();
    let (mut without_code, mut total) = (Figures::default(), Figures::default());
    for (code, figures) in &input.figures {
        total.add(figures);
        let Some(code) = code.as_deref().filter(|c| !c.trim().is_empty()) else {
            without_code.add(figures);
            continue;
        };
        match input.rules.get(code) {
            Some(entry) => {
                let slot = present.entry(entry.rules.code.clone()).or_default();
                slot.0.push(code.to_string());
                slot.1.add(figures);
            }
            None => unknown.entry(code.to_string()).or_default().add(figures),
        }
    }
    let mut jurisdictions: Vec<JurisdictionReport> = present
        .into_iter()
        .filter_map(|(code, (codes, figures))| {
            let entry = input.rules.get(&code)?;
            Some(jurisdiction(input, entry, codes, figures))
        })
        .collect();
    jurisdictions.extend(
        input
            .rules
            .iter()
            .filter(|e| e.rules.applies_by == AppliesBy::Sector)
            .map(|e| jurisdiction(input, e, Vec::new(), total.clone())),
    );
    RegulatorReport {
        jurisdictions,
        unknown_codes: unknown.into_iter().collect(),
        without_code,
        total,
    }
}

fn jurisdiction(
    input: &ReportInput<'_>,
    entry: &Entry,
    codes: Vec<String>,
    figures: Figures,
) -> JurisdictionReport {
    let j = &entry.rules;
    let individual = input
        .dates
        .as_ref()
        .and_then(|d| individual_deadline(&j.individual, d, input.internal_target_days));
    let basis = match (&input.dates, individual) {
        (None, _) => "no discovered_at: no clock can be computed".to_string(),
        (_, None) => "the rule asks no notice to individuals".to_string(),
        (_, Some(d)) => match d.basis {
            super::deadline::IndividualBasis::Law { days, starts, from } => {
                format!("{days} days after {} ({from})", start_name(starts))
            }
            super::deadline::IndividualBasis::InternalTarget { days } => {
                format!("internal target: {days} days after discovery (the law sets no number)")
            }
        },
    };
    let notice = figures.first_email.map(|t| t.date_naive());
    let mut duties: Vec<Duty> = j
        .regulators
        .iter()
        .map(|r| regulator_duty(r, input.dates.as_ref(), notice, figures.residents))
        .collect();
    duties.push(credit_bureau_duty(j, figures.residents));
    duties.push(substitute_duty(j, &figures));
    JurisdictionReport {
        code: j.code.clone(),
        name: j.name.clone(),
        applies_by: j.applies_by,
        codes,
        consumer_deadline: individual.map(|d| d.due),
        consumer_deadline_basis: basis,
        figures,
        duties,
    }
}

fn start_name(start: Start) -> &'static str {
    match start {
        Start::Discovery => "discovery",
        Start::Determination => "determination",
    }
}

/// Met when `count` reaches the least number; `"unverified"` stays unverified.
fn met(threshold: Option<&Threshold>, count: i64) -> (Option<i64>, Met) {
    match threshold {
        Some(Threshold::Residents(n)) => (Some(*n), if count >= *n { Met::Yes } else { Met::No }),
        Some(Threshold::Text(_)) | None => (None, Met::Unverified),
    }
}

fn regulator_duty(
    r: &Regulator,
    dates: Option<&BreachDates>,
    notice: Option<NaiveDate>,
    count: i64,
) -> Duty {
    let (threshold, met) = met(r.threshold.as_ref(), count);
    let (due, due_note) = match dates.map(|d| regulator_due(r, d, notice)) {
        None => (
            None,
            "no discovered_at: no clock can be computed".to_string(),
        ),
        Some(RegulatorDue::Due(due)) => (Some(due.last_day()), due_note(due, notice)),
        Some(RegulatorDue::AwaitingConsumerNotice { limit }) => (
            limit.map(|l| l.last_day()),
            match limit {
                Some(l) => format!(
                    "no consumer notice sent yet; whatever happens, due by {} (the outer limit)",
                    l.last_day()
                ),
                None => "no consumer notice sent yet: due relative to it".to_string(),
            },
        ),
        Some(RegulatorDue::Unspecified) => (None, format!("no fixed rule: {}", r.deadline_text)),
    };
    Duty {
        kind: DutyKind::Regulator,
        name: r.name.clone(),
        threshold,
        threshold_text: r.threshold_text.clone(),
        compared_with: count,
        met,
        condition: r.condition.clone(),
        clock: clock(r),
        due,
        due_note,
        asks: r.form_fields.clone(),
    }
}

fn due_note(due: Due, notice: Option<NaiveDate>) -> String {
    let from_notice = notice.map_or(String::new(), |n| format!(" (first consumer notice {n})"));
    match due {
        Due::OnOrBefore(day) => format!("on or before {day}{from_notice}"),
        Due::Before(day) => format!("before {day}{from_notice}"),
        Due::ByInstant(at) => format!("before {} UTC{from_notice}", at.format("%Y-%m-%d %H:%M")),
    }
}

/// The regulator's clock in words.
fn clock(r: &Regulator) -> String {
    let amount = [
        (r.days, "days"),
        (r.hours, "hours"),
        (r.business_days, "business days"),
    ]
    .into_iter()
    .find_map(|(n, unit)| n.map(|n| format!("{n} {unit}")));
    let own = match (r.timing, amount) {
        (Some(Timing::Before), _) => "before the consumer notice".to_string(),
        (Some(Timing::With), _) => "no later than the consumer notice".to_string(),
        (Some(Timing::After), Some(a)) => format!("{a} after the consumer notice"),
        (Some(Timing::AfterStart), Some(a)) => format!(
            "{a} after {}",
            start_name(r.starts.unwrap_or(Start::Discovery))
        ),
        _ => "unspecified".to_string(),
    };
    match &r.limit {
        Some(l) => {
            let outer = [
                (l.days, "days"),
                (l.hours, "hours"),
                (l.business_days, "business days"),
            ]
            .into_iter()
            .find_map(|(n, unit)| n.map(|n| format!("{n} {unit}")))
            .unwrap_or_default();
            let from = start_name(l.starts.unwrap_or(Start::Discovery));
            format!("{own}, and at most {outer} after {from}")
        }
        None => own,
    }
}

fn credit_bureau_duty(j: &Jurisdiction, count: i64) -> Duty {
    let c = &j.credit_bureaus;
    let (threshold, met) = match c.threshold {
        Some(n) => (Some(n), if count >= n { Met::Yes } else { Met::No }),
        None => (None, Met::NoDuty),
    };
    let clock = c.hours.map_or_else(
        || "see the text".to_string(),
        |h| format!("{h} hours (see the text for what starts them)"),
    );
    Duty {
        kind: DutyKind::CreditBureaus,
        name: "nationwide consumer reporting agencies".into(),
        threshold,
        threshold_text: c.text.clone(),
        compared_with: count,
        met,
        condition: None,
        clock,
        due: None,
        due_note: "no date computed: the rules give the clock as text".into(),
        asks: Vec::new(),
    }
}

/// Substitute notice: allowed when the affected class exceeds the figure, possibly when the cost does
/// (breach-notifier does not know the cost) or when residents have no contact information.
fn substitute_duty(j: &Jurisdiction, f: &Figures) -> Duty {
    let s = &j.substitute;
    let by_count = s.persons.is_some_and(|p| f.residents > p);
    let mut reasons = Vec::new();
    if let Some(p) = s.persons {
        reasons.push(format!(
            "affected class {} {} {p}",
            f.residents,
            if by_count {
                "exceeds"
            } else {
                "does not exceed"
            }
        ));
    }
    if let Some(cost) = s.cost_usd {
        reasons.push(format!(
            "allowed if the cost of notice exceeds ${cost} (breach-notifier does not know the cost)"
        ));
    }
    if f.no_contact > 0 {
        reasons.push(format!(
            "{} residents without contact information (no usable email, no postal address)",
            f.no_contact
        ));
    }
    let met = if by_count {
        Met::Yes
    } else if s.cost_usd.is_some() || f.no_contact > 0 {
        Met::Unverified
    } else {
        Met::No
    };
    Duty {
        kind: DutyKind::SubstituteNotice,
        name: "substitute notice".into(),
        threshold: s.persons,
        threshold_text: s
            .cost_usd
            .map_or_else(String::new, |c| format!("cost above ${c}")),
        compared_with: f.residents,
        met,
        condition: None,
        clock: String::new(),
        due: None,
        due_note: reasons.join("; "),
        asks: vec![s.text.clone()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn figures(residents: i64, first_email: Option<&str>) -> Figures {
        Figures {
            residents,
            email_sent: residents,
            first_email: first_email.map(at),
            last_email: first_email.map(at),
            ..Figures::default()
        }
    }

    fn report(figures: Vec<(Option<&str>, Figures)>) -> RegulatorReport {
        let rules = Rules::shipped().unwrap();
        build(&ReportInput {
            rules: &rules,
            dates: Some(BreachDates {
                discovered: day("2026-03-02"),
                determined: Some(day("2026-03-09")),
            }),
            internal_target_days: 30,
            figures: figures
                .into_iter()
                .map(|(c, f)| (c.map(str::to_string), f))
                .collect(),
        })
    }

    fn jurisdiction<'a>(r: &'a RegulatorReport, code: &str) -> &'a JurisdictionReport {
        r.jurisdictions.iter().find(|j| j.code == code).unwrap()
    }

    #[test]
    fn thresholds_are_met_at_the_least_number_and_kept_when_not() {
        let r = report(vec![
            (Some("US-DC"), figures(50, None)),
            (Some("US-TX"), figures(249, None)),
        ]);
        let dc = &jurisdiction(&r, "US-DC").duties[0];
        assert_eq!(
            (dc.threshold, dc.compared_with, dc.met),
            (Some(50), 50, Met::Yes)
        );
        let tx = &jurisdiction(&r, "US-TX").duties[0];
        assert_eq!(
            (tx.threshold, tx.compared_with, tx.met),
            (Some(250), 249, Met::No)
        );
        // Texas's 30 days count from the determination, a week after discovery.
        assert_eq!(tx.due, Some(day("2026-04-08")));
        assert_eq!(tx.clock, "30 days after determination");
    }

    #[test]
    fn codes_mapping_to_one_entry_add_up_and_unknown_codes_are_listed() {
        let r = report(vec![
            (Some("US-CA"), figures(2, Some("2026-03-20T10:00:00Z"))),
            (Some("us-ca"), figures(1, Some("2026-03-18T09:00:00Z"))),
            (Some("ZZ"), figures(4, None)),
            (None, figures(3, None)),
        ]);
        let ca = jurisdiction(&r, "US-CA");
        assert_eq!(ca.codes, vec!["US-CA", "us-ca"]);
        assert_eq!(ca.figures.residents, 3);
        assert_eq!(ca.figures.first_email, Some(at("2026-03-18T09:00:00Z")));
        assert_eq!(ca.figures.last_email, Some(at("2026-03-20T10:00:00Z")));
        assert_eq!(ca.consumer_deadline, Some(day("2026-04-01")));
        // The AG's 15 days run from the first consumer notice.
        assert_eq!(ca.duties[0].due, Some(day("2026-04-02")));
        assert_eq!(ca.duties[0].met, Met::No);
        assert_eq!(r.unknown_codes.len(), 1);
        assert_eq!(r.unknown_codes[0].0, "ZZ");
        assert_eq!(r.without_code.residents, 3);
        assert_eq!(r.total.residents, 10);
    }

    #[test]
    fn regulators_before_the_consumer_notice_wait_for_it() {
        let waiting = report(vec![(Some("US-MD"), figures(1, None))]);
        let md = &jurisdiction(&waiting, "US-MD").duties[0];
        assert_eq!(md.met, Met::Yes);
        assert_eq!(md.due, None);
        assert!(
            md.due_note.contains("no consumer notice sent yet"),
            "{}",
            md.due_note
        );
        let sent = report(vec![(
            Some("US-MD"),
            figures(1, Some("2026-03-20T10:00:00Z")),
        )]);
        let md = &jurisdiction(&sent, "US-MD").duties[0];
        assert_eq!(md.due, Some(day("2026-03-19")), "the day before the notice");
    }

    #[test]
    fn credit_bureaus_and_substitute_notice_are_listed_met_or_not() {
        let mut maine = figures(1001, None);
        maine.no_contact = 2;
        let r = report(vec![
            (Some("US-ME"), maine),
            (Some("US-SD"), figures(1, None)),
            (Some("US-CA"), figures(1, None)),
        ]);
        let duty = |code: &str, kind: DutyKind| {
            jurisdiction(&r, code)
                .duties
                .iter()
                .find(|d| d.kind == kind)
                .unwrap()
                .clone()
        };
        assert_eq!(duty("US-SD", DutyKind::CreditBureaus).met, Met::Yes);
        assert_eq!(duty("US-ME", DutyKind::CreditBureaus).met, Met::Yes);
        assert_eq!(duty("US-CA", DutyKind::CreditBureaus).met, Met::NoDuty);
        let maine = duty("US-ME", DutyKind::SubstituteNotice);
        assert_eq!(maine.met, Met::Yes, "1,001 exceed Maine's 1,000");
        assert!(
            maine
                .due_note
                .contains("2 residents without contact information")
        );
        assert!(!maine.asks[0].is_empty());
        let ca = duty("US-CA", DutyKind::SubstituteNotice);
        assert_eq!(ca.met, Met::Unverified, "the cost is unknown");
    }

    #[test]
    fn sector_rules_compare_with_the_whole_campaign() {
        let r = report(vec![
            (Some("US-CA"), figures(300, None)),
            (Some("US-TX"), figures(200, None)),
        ]);
        let ftc = jurisdiction(&r, "US-FED-FTC-SAFEGUARDS");
        assert_eq!(ftc.applies_by, AppliesBy::Sector);
        assert_eq!(ftc.duties[0].compared_with, 500);
        assert_eq!(ftc.duties[0].met, Met::Yes);
        assert_eq!(
            ftc.duties[0].due,
            Some(day("2026-04-01")),
            "30 days after discovery"
        );
    }
}
