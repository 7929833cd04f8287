//! Deadline arithmetic over the rules: pure functions of dates, no clock, no database, so the views,
//! the forecast and the reports that use them agree and tests can pin every case.
//!
//! Conventions (docs/rules.md explains them):
//! - The day of the event is day 0: "30 days after discovery" on 1 March is due on 31 March.
//! - Calendar days never move off a weekend. Business days skip Saturdays and Sundays only: public
//!   holidays are not skipped, because they differ by state and year, and counting them as working
//!   days can only make a deadline earlier, never later.
//! - Hour clocks, given only a date, start at 00:00 UTC of that day: the earliest reading.
//! - A clock that starts at determination, when no determination date is known, starts at discovery
//!   (a determination never precedes discovery, so this is never later than the law's deadline).
//! - "Before the consumer notice" is due the day before the first consumer notice.

use chrono::{Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, Weekday};

use super::{Individual, Limit, Regulator, Start, Timing};

/// A length of time as the law counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Days(u32),
    BusinessDays(u32),
    Hours(u32),
}

impl Amount {
    /// The one amount of a validated clock (`days`, `hours` or `business_days`).
    pub fn of(days: Option<i64>, hours: Option<i64>, business_days: Option<i64>) -> Option<Amount> {
        let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        days.map(|d| Amount::Days(n(d)))
            .or(hours.map(|h| Amount::Hours(n(h))))
            .or(business_days.map(|b| Amount::BusinessDays(n(b))))
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Days(n) => write!(f, "{n} days"),
            Amount::BusinessDays(n) => write!(f, "{n} business days"),
            Amount::Hours(n) => write!(f, "{n} hours"),
        }
    }
}

/// The dates a campaign knows about its breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreachDates {
    pub discovered: NaiveDate,
    /// When the company determined that a breach occurred, if recorded.
    pub determined: Option<NaiveDate>,
}

impl BreachDates {
    /// The day a clock starts (determination falls back to discovery: see the module header).
    pub fn start(&self, starts: Start) -> NaiveDate {
        match starts {
            Start::Discovery => self.discovered,
            Start::Determination => self.determined.unwrap_or(self.discovered),
        }
    }
}

/// When a notice is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// On this day at the latest.
    OnOrBefore(NaiveDate),
    /// Strictly before this day (the first consumer notice).
    Before(NaiveDate),
    /// Before this instant (UTC): an hour clock.
    ByInstant(NaiveDateTime),
}

impl Due {
    /// The last day on which the notice is still on time.
    pub fn last_day(&self) -> NaiveDate {
        match self {
            Due::OnOrBefore(day) => *day,
            Due::Before(day) => day.pred_opt().unwrap_or(*day),
            Due::ByInstant(at) => (*at - chrono::Duration::seconds(1)).date(),
        }
    }

    /// Whole days from `today` to the last day on time: 0 on the day itself, negative when late.
    pub fn days_left(&self, today: NaiveDate) -> i64 {
        days_left(self.last_day(), today)
    }

    fn earlier(self, other: Due) -> Due {
        if other.last_day() < self.last_day() {
            other
        } else {
            self
        }
    }
}

/// Whole days from `today` to `last_day`: 0 on the day itself, negative when it has passed.
pub fn days_left(last_day: NaiveDate, today: NaiveDate) -> i64 {
    (last_day - today).num_days()
}

/// `start` plus an amount.
pub fn add(start: NaiveDate, amount: Amount) -> Due {
    match amount {
        Amount::Days(n) => Due::OnOrBefore(add_days(start, n)),
        Amount::BusinessDays(n) => Due::OnOrBefore(add_business_days(start, n)),
        Amount::Hours(n) => {
            Due::ByInstant(start.and_time(NaiveTime::MIN) + chrono::Duration::hours(i64::from(n)))
        }
    }
}

fn add_days(start: NaiveDate, n: u32) -> NaiveDate {
    start
        .checked_add_days(Days::new(u64::from(n)))
        .unwrap_or(NaiveDate::MAX)
}

/// The `n`th weekday (Monday to Friday) after `start`; `start` itself when `n` is 0.
pub fn add_business_days(start: NaiveDate, n: u32) -> NaiveDate {
    if n == 0 {
        return start;
    }
    // Counting from a weekend day is counting from the Friday before it; from a weekday, whole
    // weeks are five business days each, and the rest is counted day by day.
    let back = match start.weekday() {
        Weekday::Sat => 1,
        Weekday::Sun => 2,
        _ => 0,
    };
    let friday_or_start = start.checked_sub_days(Days::new(back)).unwrap_or(start);
    let mut day = add_days(friday_or_start, n / 5 * 7);
    let mut left = n % 5;
    while left > 0 {
        day = add_days(day, 1);
        if !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) {
            left -= 1;
        }
    }
    day
}

/// How an individual deadline was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndividualBasis {
    /// The number the law sets, from the day its trigger happened.
    Law {
        days: u32,
        starts: Start,
        from: NaiveDate,
    },
    /// No number in the law: the configured internal target, from discovery.
    InternalTarget { days: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndividualDeadline {
    /// The last day on time.
    pub due: NaiveDate,
    pub basis: IndividualBasis,
}

/// The deadline of the notice to individuals; `None` when the rule asks for no individual notice.
pub fn individual_deadline(
    rules: &Individual,
    dates: &BreachDates,
    internal_target_days: u32,
) -> Option<IndividualDeadline> {
    if !rules.required {
        return None;
    }
    Some(match (rules.days, rules.starts) {
        (Some(days), Some(starts)) => {
            let days = u32::try_from(days).unwrap_or(u32::MAX);
            let from = dates.start(starts);
            IndividualDeadline {
                due: add_days(from, days),
                basis: IndividualBasis::Law { days, starts, from },
            }
        }
        _ => IndividualDeadline {
            due: add_days(dates.discovered, internal_target_days),
            basis: IndividualBasis::InternalTarget {
                days: internal_target_days,
            },
        },
    })
}

/// When a regulator's notice is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegulatorDue {
    Due(Due),
    /// The deadline depends on the consumer notice's date, not given; `limit` is the outer clock
    /// from the breach when there is one (due then at the latest whatever happens).
    AwaitingConsumerNotice {
        limit: Option<Due>,
    },
    /// The law sets no fixed rule: read the regulator's `deadline_text`.
    Unspecified,
}

/// When `regulator` must hear, given the breach dates and the date of the (first) consumer notice.
pub fn regulator_due(
    regulator: &Regulator,
    dates: &BreachDates,
    consumer_notice: Option<NaiveDate>,
) -> RegulatorDue {
    let amount = Amount::of(regulator.days, regulator.hours, regulator.business_days);
    let limit = regulator.limit.as_ref().and_then(|l| limit_due(l, dates));
    let own = match (regulator.timing, consumer_notice, amount) {
        (Some(Timing::AfterStart), _, Some(amount)) => Some(add(
            dates.start(regulator.starts.unwrap_or(Start::Discovery)),
            amount,
        )),
        (Some(Timing::Before), Some(notice), _) => Some(Due::Before(notice)),
        (Some(Timing::With), Some(notice), _) => Some(Due::OnOrBefore(notice)),
        (Some(Timing::After), Some(notice), Some(amount)) => Some(add(notice, amount)),
        (Some(Timing::Before | Timing::With | Timing::After), None, _) => {
            return RegulatorDue::AwaitingConsumerNotice { limit };
        }
        _ => None,
    };
    match (own, limit) {
        (Some(own), Some(limit)) => RegulatorDue::Due(own.earlier(limit)),
        (Some(due), None) | (None, Some(due)) => RegulatorDue::Due(due),
        (None, None) => RegulatorDue::Unspecified,
    }
}

fn limit_due(limit: &Limit, dates: &BreachDates) -> Option<Due> {
    let amount = Amount::of(limit.days, limit.hours, limit.business_days)?;
    Some(add(dates.start(limit.starts?), amount))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn dates(discovered: &str, determined: Option<&str>) -> BreachDates {
        BreachDates {
            discovered: d(discovered),
            determined: determined.map(d),
        }
    }

    fn regulator(toml_text: &str) -> Regulator {
        toml::from_str(&format!("name = \"R\"\nthreshold = 1\n{toml_text}")).unwrap()
    }

    #[test]
    fn calendar_days_cross_month_and_year_ends_and_leap_days() {
        assert_eq!(add_days(d("2026-03-01"), 30), d("2026-03-31"));
        assert_eq!(add_days(d("2026-01-31"), 30), d("2026-03-02"));
        assert_eq!(
            add_days(d("2028-01-31"), 30),
            d("2028-03-01"),
            "2028 is a leap year"
        );
        assert_eq!(add_days(d("2028-02-28"), 1), d("2028-02-29"));
        assert_eq!(add_days(d("2026-12-15"), 45), d("2027-01-29"));
        assert_eq!(add_days(d("2026-03-01"), 0), d("2026-03-01"));
    }

    #[test]
    fn calendar_days_do_not_move_off_a_weekend() {
        // 2026-03-28 is a Saturday.
        assert_eq!(
            add(d("2026-03-18"), Amount::Days(10)),
            Due::OnOrBefore(d("2026-03-28"))
        );
    }

    #[test]
    fn business_days_skip_weekends() {
        // 2026-03-02 is a Monday.
        assert_eq!(
            add_business_days(d("2026-03-02"), 4),
            d("2026-03-06"),
            "Friday"
        );
        assert_eq!(
            add_business_days(d("2026-03-05"), 4),
            d("2026-03-11"),
            "Thursday + 4 crosses a weekend"
        );
        assert_eq!(
            add_business_days(d("2026-03-07"), 1),
            d("2026-03-09"),
            "from a Saturday: Monday"
        );
        assert_eq!(
            add_business_days(d("2026-03-08"), 5),
            d("2026-03-13"),
            "from a Sunday"
        );
        assert_eq!(
            add_business_days(d("2026-03-06"), 5),
            d("2026-03-13"),
            "a whole week"
        );
        assert_eq!(
            add_business_days(d("2026-03-02"), 14),
            d("2026-03-20"),
            "Vermont's 14"
        );
        assert_eq!(add_business_days(d("2026-03-02"), 0), d("2026-03-02"));
        assert_eq!(
            add_business_days(d("2028-02-25"), 2),
            d("2028-02-29"),
            "Friday + 2 over a leap day"
        );
    }

    #[test]
    fn hours_start_at_midnight_of_the_start_day() {
        let due = add(d("2026-03-31"), Amount::Hours(72));
        assert_eq!(
            due,
            Due::ByInstant(d("2026-04-03").and_time(NaiveTime::MIN))
        );
        assert_eq!(
            due.last_day(),
            d("2026-04-02"),
            "72 h from 31 March 00:00 end with 2 April"
        );
        assert_eq!(
            add(d("2026-03-31"), Amount::Hours(36)).last_day(),
            d("2026-04-01")
        );
        assert_eq!(
            add(d("2026-03-31"), Amount::Hours(24)).last_day(),
            d("2026-03-31")
        );
    }

    #[test]
    fn days_left_counts_to_the_last_day() {
        let due = Due::OnOrBefore(d("2026-03-31"));
        assert_eq!(due.days_left(d("2026-03-01")), 30);
        assert_eq!(due.days_left(d("2026-03-31")), 0);
        assert_eq!(due.days_left(d("2026-04-02")), -2);
        assert_eq!(Due::Before(d("2026-03-31")).days_left(d("2026-03-31")), -1);
    }

    #[test]
    fn individual_deadlines_count_from_their_trigger_or_fall_back_to_the_target() {
        let law = Individual {
            required: true,
            days: Some(45),
            starts: Some(Start::Determination),
            anchor: None,
            text: "x".into(),
        };
        let both = dates("2026-01-10", Some("2026-01-20"));
        let got = individual_deadline(&law, &both, 30).unwrap();
        assert_eq!(got.due, d("2026-03-06"));
        assert_eq!(
            got.basis,
            IndividualBasis::Law {
                days: 45,
                starts: Start::Determination,
                from: d("2026-01-20")
            }
        );
        let only_discovery = dates("2026-01-10", None);
        assert_eq!(
            individual_deadline(&law, &only_discovery, 30).unwrap().due,
            d("2026-02-24")
        );
        let text_only = Individual {
            days: None,
            starts: None,
            ..law.clone()
        };
        let got = individual_deadline(&text_only, &both, 30).unwrap();
        assert_eq!(got.due, d("2026-02-09"), "internal target from discovery");
        assert_eq!(got.basis, IndividualBasis::InternalTarget { days: 30 });
        let none = Individual {
            required: false,
            ..text_only
        };
        assert_eq!(individual_deadline(&none, &both, 30), None);
    }

    #[test]
    fn regulators_before_with_and_after_the_consumer_notice() {
        let b = dates("2026-01-10", Some("2026-01-12"));
        let notice = Some(d("2026-02-01"));
        let before = regulator("timing = \"before\"");
        assert_eq!(
            regulator_due(&before, &b, notice),
            RegulatorDue::Due(Due::Before(d("2026-02-01")))
        );
        let with = regulator("timing = \"with\"");
        assert_eq!(
            regulator_due(&with, &b, notice),
            RegulatorDue::Due(Due::OnOrBefore(d("2026-02-01")))
        );
        let after = regulator("timing = \"after\"\ndays = 15");
        assert_eq!(
            regulator_due(&after, &b, notice),
            RegulatorDue::Due(Due::OnOrBefore(d("2026-02-16")))
        );
        let iowa = regulator("timing = \"after\"\nbusiness_days = 5");
        assert_eq!(
            regulator_due(&iowa, &b, notice),
            RegulatorDue::Due(Due::OnOrBefore(d("2026-02-06")))
        );
        assert_eq!(
            regulator_due(&after, &b, None),
            RegulatorDue::AwaitingConsumerNotice { limit: None }
        );
        let unspecified = regulator("timing = \"unspecified\"");
        assert_eq!(
            regulator_due(&unspecified, &b, notice),
            RegulatorDue::Unspecified
        );
    }

    #[test]
    fn regulators_from_the_breach_and_whichever_comes_first() {
        let b = dates("2026-01-10", Some("2026-01-12"));
        let texas = regulator("timing = \"after_start\"\ndays = 30\nstarts = \"determination\"");
        assert_eq!(
            regulator_due(&texas, &b, None),
            RegulatorDue::Due(Due::OnOrBefore(d("2026-02-11")))
        );
        let gdpr = regulator("timing = \"after_start\"\nhours = 72\nstarts = \"discovery\"");
        let RegulatorDue::Due(due) = regulator_due(&gdpr, &b, None) else {
            panic!()
        };
        assert_eq!(due.last_day(), d("2026-01-12"));
        // Arkansas: with the consumer notice, or 45 days after determination, whichever is first.
        let arkansas =
            regulator("timing = \"with\"\nlimit = { days = 45, starts = \"determination\" }");
        assert_eq!(
            regulator_due(&arkansas, &b, Some(d("2026-03-20"))),
            RegulatorDue::Due(Due::OnOrBefore(d("2026-02-26")))
        );
        assert_eq!(
            regulator_due(&arkansas, &b, Some(d("2026-02-01"))),
            RegulatorDue::Due(Due::OnOrBefore(d("2026-02-01")))
        );
        assert_eq!(
            regulator_due(&arkansas, &b, None),
            RegulatorDue::AwaitingConsumerNotice {
                limit: Some(Due::OnOrBefore(d("2026-02-26")))
            }
        );
        // Vermont: 14 business days after discovery or after the consumer notice, whichever is first.
        let vermont = regulator(
            "timing = \"after\"\nbusiness_days = 14\nlimit = { business_days = 14, starts = \"discovery\" }",
        );
        assert_eq!(
            regulator_due(&vermont, &b, Some(d("2026-01-12"))),
            RegulatorDue::Due(Due::OnOrBefore(d("2026-01-29")))
        );
    }
}
