//! The deadline forecast (docs/deadlines.md): from a campaign's send rate (or, before it sends, its
//! configured limits), its daily cap, its wave plan and what remains per jurisdiction, the day each
//! jurisdiction's last email notice is projected to go out, which jurisdictions would miss their
//! deadline and by how many days, and the daily cap or rate that would meet every deadline.
//!
//! [`project`] is a pure function of a [`Plan`] and the jurisdictions' loads, so tests pin every case;
//! [`of_campaign`] feeds it from the store (counters, `send_buckets`, waves, `campaign_deadlines`: a
//! few rows per jurisdiction and wave, never the recipients). `status`, `campaign start` and the
//! daemon's housekeeping all read the same forecast.
//!
//! The model, and what it leaves out (said again in docs/deadlines.md):
//! - Claims are deadline-first within the released waves: a jurisdiction finishes when everything with
//!   an earlier or equal deadline is out (equal deadlines finish together).
//! - Waves not yet released hold their share of every jurisdiction (waves are ranges of the queue, and
//!   no counter splits a wave by jurisdiction), so with waves waiting every jurisdiction finishes in
//!   the last one; their hold times are added before sending resumes, and manual waves are assumed to
//!   be released as soon as they may be (the forecast says so).
//! - Sends go at the rate until the UTC day's cap is reached, then wait for midnight.
//! - Letters (postal recipients, bounces) are not projected by the email rate: they are shown as owed.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

/// Where the rate of a forecast comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateSource {
    /// The campaign's sends of the last minute (else hour), from `send_buckets`.
    Measured,
    /// Nothing sent lately: the lowest of the campaign's and the global configured rate.
    Configured,
    /// No rate measured or configured: only the daily cap limits the projection.
    Unlimited,
}

/// A wave of the plan not yet released.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitingWave {
    pub number: i32,
    /// Email recipients it is expected to hold (its size applied to what is open).
    pub size: i64,
    pub hold_minutes: u64,
    pub manual: bool,
}

/// How fast the campaign can send, and what its wave plan holds back.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub now: DateTime<Utc>,
    /// Messages per second; `None`: no rate limit known.
    pub rate_per_second: Option<f64>,
    pub rate_source: RateSource,
    pub daily_cap: Option<u64>,
    /// Already sent today (UTC): counted against today's cap.
    pub sent_today: u64,
    /// Open email recipients in released waves (all open ones when the campaign has no plan).
    pub released_open: i64,
    pub waiting: Vec<WaitingWave>,
}

/// What remains for one jurisdiction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// As recipients carry it; `None`: recipients without one.
    pub jurisdiction: Option<String>,
    /// `None`: no deadline computed (the campaign has no discovery date).
    pub deadline: Option<NaiveDate>,
    /// Email recipients queued or deferred.
    pub open: i64,
    /// Letters owed: postal recipients and bounced ones.
    pub letters_owed: i64,
}

/// One jurisdiction's projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Projection {
    pub jurisdiction: Option<String>,
    pub deadline: Option<NaiveDate>,
    pub open: i64,
    pub letters_owed: i64,
    /// The day its last open email is projected to go out; `None` when nothing is open, or never
    /// (no rate and no cap, or beyond ten years).
    pub completion: Option<NaiveDate>,
    /// Days after the deadline (positive: late).
    pub days_late: Option<i64>,
}

impl Projection {
    pub fn late(&self) -> bool {
        self.days_late.is_some_and(|d| d > 0)
    }
}

/// What would meet every deadline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fix {
    /// The daily cap needed, when the configured one is too low.
    pub daily_cap: Option<u64>,
    /// Messages per second needed, when the rate is too low.
    pub per_second: Option<f64>,
    /// Late jurisdictions whose deadline has passed: no rate can meet it any more.
    pub unreachable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forecast {
    pub rate_per_second: Option<f64>,
    pub rate_source: RateSource,
    pub daily_cap: Option<u64>,
    pub projections: Vec<Projection>,
    /// Present when a jurisdiction is projected late.
    pub fix: Option<Fix>,
    /// Assumptions the reader should know (manual waves).
    pub notes: Vec<String>,
}

impl Forecast {
    /// The late jurisdictions, latest first.
    pub fn late(&self) -> Vec<&Projection> {
        let mut late: Vec<&Projection> = self.projections.iter().filter(|p| p.late()).collect();
        late.sort_by(|a, b| {
            b.days_late
                .cmp(&a.days_late)
                .then(a.jurisdiction.cmp(&b.jurisdiction))
        });
        late
    }

    /// The late jurisdictions a faster plan could still make on time: their deadline has not passed.
    pub fn late_by_plan(&self) -> Vec<&Projection> {
        let passed = self
            .fix
            .as_ref()
            .map_or(&[][..], |f| f.unreachable.as_slice());
        self.late()
            .into_iter()
            .filter(|p| !passed.contains(&code(p).to_string()))
            .collect()
    }

    /// One line for an operator, an event or a refusal: which, how late, and the fix.
    pub fn summary(&self) -> Option<String> {
        let late = self.late();
        if late.is_empty() {
            return None;
        }
        let list: Vec<String> = late
            .iter()
            .map(|p| {
                format!(
                    "{} {} day{} late (deadline {}, projected {})",
                    code(p),
                    p.days_late.unwrap_or(0),
                    if p.days_late == Some(1) { "" } else { "s" },
                    p.deadline.map_or_else(String::new, |d| d.to_string()),
                    p.completion
                        .map_or_else(|| "never".into(), |d| d.to_string()),
                )
            })
            .collect();
        let fix = self
            .fix
            .as_ref()
            .map_or_else(String::new, |f| f.describe(self));
        Some(format!("projected late: {}{fix}", list.join(", ")))
    }
}

fn code(p: &Projection) -> &str {
    p.jurisdiction.as_deref().unwrap_or("(none)")
}

impl Fix {
    fn describe(&self, f: &Forecast) -> String {
        let mut parts = Vec::new();
        if let Some(cap) = self.daily_cap {
            let now = f.daily_cap.map_or_else(|| "none".into(), |c| c.to_string());
            parts.push(format!("a daily cap of at least {cap} (now {now})"));
        }
        if let Some(rate) = self.per_second {
            let now = f
                .rate_per_second
                .map_or_else(|| "none".into(), |r| format!("{r:.2}"));
            parts.push(format!("a rate of at least {rate:.2}/s (now {now}/s)"));
        }
        let mut out = String::new();
        if !parts.is_empty() {
            out = format!("; to meet every deadline: {}", parts.join(" and "));
        } else if self.unreachable.is_empty() {
            out = "; the rate and daily cap would do: the waves' hold times or manual releases delay it"
                .into();
        }
        if !self.unreachable.is_empty() {
            out.push_str(&format!(
                "; deadline passed, no rate meets it: {}",
                self.unreachable.join(", ")
            ));
        }
        out
    }
}

/// Projects every jurisdiction of `loads` under `plan`.
pub fn project(plan: &Plan, loads: &[Load]) -> Forecast {
    let positions = positions(plan, loads);
    let hold = plan.waiting.iter().map(|w| w.hold_minutes).sum::<u64>();
    let start =
        plan.now + chrono::Duration::minutes(i64::try_from(hold).unwrap_or(i64::MAX / 60_000));
    let projections: Vec<Projection> = loads
        .iter()
        .zip(&positions)
        .map(|(l, &position)| {
            let completion = (l.open > 0)
                .then(|| finish(plan, start, position))
                .flatten()
                .map(|t| t.date_naive());
            let days_late = match (completion, l.deadline) {
                (Some(c), Some(d)) => Some((c - d).num_days()),
                _ => None,
            };
            Projection {
                jurisdiction: l.jurisdiction.clone(),
                deadline: l.deadline,
                open: l.open,
                letters_owed: l.letters_owed,
                completion,
                days_late,
            }
        })
        .collect();
    let late = projections.iter().any(Projection::late);
    let fix = late.then(|| fix(plan, start, loads, &positions));
    Forecast {
        rate_per_second: plan.rate_per_second,
        rate_source: plan.rate_source,
        daily_cap: plan.daily_cap,
        projections,
        fix,
        notes: notes(plan),
    }
}

/// How many emails go out up to and including each jurisdiction's last: everything with an earlier
/// or equal deadline (no deadline sorts last) within the pool it finishes in, after the pools before.
fn positions(plan: &Plan, loads: &[Load]) -> Vec<i64> {
    let key = |l: &Load| l.deadline.unwrap_or(NaiveDate::MAX);
    let total_open: i64 = loads.iter().map(|l| l.open).sum();
    let waiting: i64 = plan.waiting.iter().map(|w| w.size).sum();
    let last = plan.waiting.iter().rev().find(|w| w.size > 0);
    loads
        .iter()
        .map(|l| {
            let ahead: i64 = loads
                .iter()
                .filter(|o| key(o) <= key(l))
                .map(|o| o.open)
                .sum();
            match last {
                None => ahead,
                // Each waiting wave holds its share of every jurisdiction: all finish in the last one.
                Some(last) => {
                    let before_last = total_open.max(plan.released_open + waiting) - last.size;
                    let share = ahead as f64 * last.size as f64 / total_open.max(1) as f64;
                    before_last + share.ceil() as i64
                }
            }
        })
        .collect()
}

/// The instant the `n`th email from `start` goes out: at the rate, within each UTC day's cap.
fn finish(plan: &Plan, start: DateTime<Utc>, n: i64) -> Option<DateTime<Utc>> {
    let mut left = n as f64;
    let mut at = start;
    let mut cap_left = plan
        .daily_cap
        .map(|c| c.saturating_sub(plan.sent_today) as f64);
    if plan.now.date_naive() != start.date_naive() {
        cap_left = plan.daily_cap.map(|c| c as f64);
    }
    for _ in 0..3660 {
        let midnight = next_midnight(at);
        let seconds = (midnight - at).num_milliseconds() as f64 / 1000.0;
        let by_rate = plan.rate_per_second.map(|r| r * seconds);
        let room = match (by_rate, cap_left) {
            (Some(r), Some(c)) => r.min(c),
            (Some(r), None) => r,
            (None, Some(c)) => c,
            (None, None) => return Some(at),
        };
        if left <= room {
            let secs = plan.rate_per_second.map_or(0.0, |r| left / r);
            return Some(at + chrono::Duration::milliseconds((secs * 1000.0) as i64));
        }
        left -= room;
        at = midnight;
        cap_left = plan.daily_cap.map(|c| c as f64);
    }
    None
}

fn next_midnight(at: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = at
        .date_naive()
        .checked_add_days(Days::new(1))
        .unwrap_or(NaiveDate::MAX);
    tomorrow.and_time(NaiveTime::MIN).and_utc()
}

/// The cap and rate that would send each jurisdiction's position by the end of its deadline day
/// (every jurisdiction with something open, so that the fix makes none late).
fn fix(plan: &Plan, start: DateTime<Utc>, loads: &[Load], positions: &[i64]) -> Fix {
    let (mut cap, mut rate, mut unreachable) = (0u64, 0f64, Vec::new());
    for (l, &position) in loads.iter().zip(positions) {
        let Some(deadline) = l.deadline.filter(|_| l.open > 0) else {
            continue;
        };
        if deadline < plan.now.date_naive() {
            unreachable.push(l.jurisdiction.clone().unwrap_or_else(|| "(none)".into()));
            continue;
        }
        let end = next_midnight(deadline.and_time(NaiveTime::MIN).and_utc());
        let seconds = (end - start).num_seconds();
        if seconds <= 0 {
            // The waves' hold times alone run past the deadline: no cap or rate helps.
            continue;
        }
        let whole_days = (deadline - start.date_naive()).num_days();
        // Today's cap already holds `sent_today`; every later day up to the deadline holds the whole cap.
        let days = whole_days as u64 + 1;
        let needed_cap = (position as u64 + plan.sent_today).div_ceil(days);
        cap = cap.max(needed_cap);
        rate = rate.max(position as f64 / seconds as f64);
    }
    Fix {
        daily_cap: plan.daily_cap.filter(|&c| c < cap).map(|_| cap),
        per_second: plan
            .rate_per_second
            .filter(|&r| r < rate)
            .map(|_| (rate * 100.0).ceil() / 100.0),
        unreachable,
    }
}

fn notes(plan: &Plan) -> Vec<String> {
    let mut notes = Vec::new();
    let manual: Vec<String> = plan
        .waiting
        .iter()
        .filter(|w| w.manual)
        .map(|w| w.number.to_string())
        .collect();
    if !manual.is_empty() {
        notes.push(format!(
            "wave{} {} released by hand: the forecast assumes each is released as soon as the wave before it finishes",
            if manual.len() == 1 { "" } else { "s" },
            manual.join(", ")
        ));
    }
    if plan.rate_source == RateSource::Unlimited && plan.daily_cap.is_none() {
        notes.push(
            "no rate measured or configured and no daily cap: nothing to project from".into(),
        );
    }
    notes
}

/// The configured limits the forecast falls back on before a campaign sends.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// `limits.global_per_second`: the cluster's rate across campaigns.
    pub global_per_second: Option<f64>,
}

/// The campaign's forecast at `now`, read from the store: its progress and send rate
/// (`campaign_progress`), today's sends (`send_buckets`), its waves, and `jurisdiction_progress`.
pub async fn of_campaign(
    store: &crate::store::Store,
    campaign: &crate::store::Campaign,
    limits: Limits,
    now: DateTime<Utc>,
) -> anyhow::Result<Forecast> {
    let spec =
        super::CampaignSpec::from_stored(&campaign.definition).map_err(anyhow::Error::msg)?;
    let progress = store.progress(Some(campaign.id)).await?;
    let Some(progress) = progress.first() else {
        anyhow::bail!("campaign {} has no progress row", campaign.id);
    };
    let midnight = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    let sent_today = store.sent_since(campaign.id, midnight).await?;
    let waves = store.wave_progress(campaign.id).await?;
    let loads: Vec<Load> = store
        .jurisdiction_progress(campaign.id)
        .await?
        .into_iter()
        .map(|j| Load {
            jurisdiction: j.jurisdiction,
            deadline: j.deadline,
            open: j.queued + j.deferred,
            letters_owed: j.postal_pending,
        })
        .collect();
    let (rate_per_second, rate_source) = rate(progress, &spec, limits);
    let (released_open, waiting) = wave_plan(&spec, progress, &waves);
    let plan = Plan {
        now,
        rate_per_second,
        rate_source,
        daily_cap: spec.rate.daily_cap,
        sent_today,
        released_open,
        waiting,
    };
    Ok(project(&plan, &loads))
}

/// The last minute's rate, else the last hour's, else the lowest configured one.
fn rate(
    progress: &crate::store::CampaignProgress,
    spec: &super::CampaignSpec,
    limits: Limits,
) -> (Option<f64>, RateSource) {
    if progress.sent_last_minute > 0 {
        return (
            Some(progress.sent_last_minute as f64 / 60.0),
            RateSource::Measured,
        );
    }
    if progress.sent_last_hour > 0 {
        return (
            Some(progress.sent_last_hour as f64 / 3600.0),
            RateSource::Measured,
        );
    }
    match (spec.rate.per_second, limits.global_per_second) {
        (Some(a), Some(b)) => (Some(a.min(b)), RateSource::Configured),
        (Some(r), None) | (None, Some(r)) => (Some(r), RateSource::Configured),
        (None, None) => (None, RateSource::Unlimited),
    }
}

/// What the released waves hold open, and the waves still waiting with their expected sizes. A
/// campaign not started has no wave rows yet: its whole plan waits.
fn wave_plan(
    spec: &super::CampaignSpec,
    progress: &crate::store::CampaignProgress,
    waves: &[crate::store::WaveProgress],
) -> (i64, Vec<WaitingWave>) {
    let open = progress.open();
    if spec.waves.is_empty() {
        return (open, Vec::new());
    }
    let stored: Vec<(i32, &str)> = if waves.is_empty() {
        (1..=spec.waves.len() as i32)
            .map(|n| (n, "waiting"))
            .collect()
    } else {
        waves.iter().map(|w| (w.number, w.state.as_str())).collect()
    };
    let released_open: i64 = waves
        .iter()
        .filter(|w| w.state != "waiting")
        .map(|w| w.queued + w.deferred)
        .sum();
    let email_total = progress.total - progress.postal;
    let mut left = (open - released_open).max(0);
    let mut waiting = Vec::new();
    for number in stored
        .into_iter()
        .filter(|(_, s)| *s == "waiting")
        .map(|(n, _)| n)
    {
        let Some(w) = usize::try_from(number - 1)
            .ok()
            .and_then(|i| spec.waves.get(i))
        else {
            continue;
        };
        let wanted = match w.size {
            super::WaveSize::Count(n) => i64::try_from(n).unwrap_or(i64::MAX),
            super::WaveSize::Percent(p) => ((email_total as f64) * p / 100.0).ceil() as i64,
            super::WaveSize::Rest => left,
        };
        let size = wanted.min(left);
        left -= size;
        waiting.push(WaitingWave {
            number,
            size,
            hold_minutes: w.hold_minutes,
            manual: w.release == super::Release::Manual,
        });
    }
    (released_open, waiting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn plan(rate: Option<f64>, cap: Option<u64>) -> Plan {
        Plan {
            now: day("2026-03-01").and_hms_opt(12, 0, 0).unwrap().and_utc(),
            rate_per_second: rate,
            rate_source: RateSource::Configured,
            daily_cap: cap,
            sent_today: 0,
            released_open: 0,
            waiting: Vec::new(),
        }
    }

    fn load(code: &str, deadline: &str, open: i64) -> Load {
        Load {
            jurisdiction: Some(code.into()),
            deadline: Some(day(deadline)),
            open,
            letters_owed: 0,
        }
    }

    fn completions(f: &Forecast) -> Vec<(Option<NaiveDate>, Option<i64>)> {
        f.projections
            .iter()
            .map(|p| (p.completion, p.days_late))
            .collect()
    }

    #[test]
    fn a_cap_too_low_makes_the_earliest_deadline_late_and_names_the_cap_that_fixes_it() {
        let loads = [
            load("US-CA", "2026-03-04", 25),
            load("US-TX", "2026-03-30", 10),
        ];
        let late = project(&plan(Some(100.0), Some(5)), &loads);
        // Five a day from today: California's 25th goes on 5 March, a day late; Texas's after it.
        assert_eq!(
            completions(&late),
            [
                (Some(day("2026-03-05")), Some(1)),
                (Some(day("2026-03-07")), Some(-23))
            ]
        );
        let fix = late.fix.clone().unwrap();
        // 25 over the four days from today to 4 March.
        assert_eq!(fix.daily_cap, Some(7));
        assert_eq!(fix.per_second, None, "the rate is not what holds it back");
        let summary = late.summary().unwrap();
        assert!(summary.contains("US-CA 1 day late"), "{summary}");
        assert!(
            summary.contains("a daily cap of at least 7 (now 5)"),
            "{summary}"
        );
        assert_eq!(late.late_by_plan().len(), 1);

        let on_time = project(&plan(Some(100.0), Some(7)), &loads);
        assert_eq!(on_time.projections[0].completion, Some(day("2026-03-04")));
        assert!(on_time.late().is_empty() && on_time.fix.is_none() && on_time.summary().is_none());
    }

    #[test]
    fn todays_sends_count_against_todays_cap() {
        let mut p = plan(Some(100.0), Some(5));
        p.sent_today = 5;
        let f = project(&p, &[load("US-CA", "2026-03-31", 5)]);
        assert_eq!(f.projections[0].completion, Some(day("2026-03-02")));
    }

    #[test]
    fn deadlines_order_the_queue_and_equal_deadlines_finish_together() {
        let loads = [
            load("US-CA", "2026-03-31", 100),
            load("US-FL", "2026-03-15", 100),
            load("US-NY", "2026-03-31", 100),
        ];
        // 100 a day, nothing sent today: Florida first (today), then California and New York together.
        let f = project(&plan(None, Some(100)), &loads);
        assert_eq!(
            completions(&f)
                .into_iter()
                .map(|(c, _)| c.unwrap())
                .collect::<Vec<_>>(),
            [day("2026-03-03"), day("2026-03-01"), day("2026-03-03")]
        );
    }

    #[test]
    fn a_rate_too_low_names_the_rate_that_fixes_it() {
        // 0.001 a second is 86.4 a day: 1,000 take 12 days, the deadline is in 5.
        let f = project(
            &plan(Some(0.001), None),
            &[load("US-CA", "2026-03-05", 1000)],
        );
        assert_eq!(f.projections[0].days_late, Some(8));
        let fix = f.fix.unwrap();
        assert_eq!(fix.daily_cap, None);
        // 1,000 over the 4.5 days to the end of 5 March.
        assert_eq!(fix.per_second, Some(0.01));
    }

    #[test]
    fn waiting_waves_hold_a_share_of_every_jurisdiction_and_manual_ones_are_named() {
        let mut p = plan(Some(100.0), Some(10));
        p.released_open = 10;
        p.waiting = vec![WaitingWave {
            number: 2,
            size: 90,
            hold_minutes: 60,
            manual: true,
        }];
        let loads = [
            load("US-CA", "2026-03-02", 50),
            load("US-TX", "2026-03-30", 50),
        ];
        let f = project(&p, &loads);
        // California: the released 10, then its half of the waiting 90 (45): 55 at 10 a day.
        assert_eq!(f.projections[0].completion, Some(day("2026-03-06")));
        assert_eq!(f.projections[0].days_late, Some(4));
        assert_eq!(f.projections[1].completion, Some(day("2026-03-10")));
        assert!(
            f.notes[0].contains("wave 2 released by hand"),
            "{:?}",
            f.notes
        );
    }

    #[test]
    fn a_plan_late_only_by_its_hold_times_says_so() {
        let mut p = plan(Some(100.0), None);
        p.waiting = vec![WaitingWave {
            number: 1,
            size: 10,
            hold_minutes: 5 * 24 * 60,
            manual: false,
        }];
        let f = project(&p, &[load("US-CA", "2026-03-04", 10)]);
        assert_eq!(f.projections[0].days_late, Some(2));
        let summary = f.summary().unwrap();
        assert!(
            summary.contains("hold times or manual releases"),
            "{summary}"
        );
    }

    #[test]
    fn a_passed_deadline_cannot_be_fixed_and_letters_are_not_projected() {
        let mut passed = load("US-CA", "2026-02-27", 5);
        passed.letters_owed = 3;
        let postal_only = Load {
            open: 0,
            letters_owed: 4,
            ..load("US-TX", "2026-03-30", 0)
        };
        let f = project(&plan(Some(100.0), None), &[passed, postal_only]);
        assert_eq!(f.projections[0].days_late, Some(2));
        assert_eq!(f.projections[0].letters_owed, 3);
        assert_eq!(f.fix.as_ref().unwrap().unreachable, ["US-CA"]);
        assert_eq!(
            (f.projections[1].completion, f.projections[1].letters_owed),
            (None, 4)
        );
        assert!(f.summary().unwrap().contains("deadline passed"));
        assert!(
            f.late_by_plan().is_empty(),
            "no plan can meet a passed deadline"
        );
    }
}
