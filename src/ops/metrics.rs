//! Metrics of one daemon, exposed at `/metrics` (see [`crate::ops::http`]) in the Prometheus text format
//! (version 0.0.4).
//!
//! A small hand-written registry rather than the `prometheus` or `metrics` crates: the set of metrics
//! is fixed and short, the only label values are campaign ids and recipient domains, and the text
//! format is a few lines of code. A crate would bring a registry, macros and (for `prometheus`) a
//! protobuf dependency for nothing we use.
//!
//! Every metric name starts with `breach_notifier_`. Labels are `campaign` (the campaign's row id),
//! `domain` (the recipient's mail domain) and `jurisdiction` (a rules code such as `US-CA`, for the
//! deadline forecast) and nothing else: never an address, a name or a customer id.
//! The domain label is bounded, see [`DomainLabels`].
//!
//! One registry: each fact is counted once, by one of its methods. The dispatcher calls them where
//! the facts are known (the delivery task: outcome, send latency, rate-limit waits; the claim round,
//! the recorder and housekeeping: claims, releases, lease renewals, heartbeat time, queue depth from
//! the O(1) `campaign_progress` counters). The unlabelled totals live in [`Stats`], which the
//! registry renders and lends out ([`Metrics::stats`]) for logs, the status line and tests.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Prefix of every metric name.
pub const PREFIX: &str = "breach_notifier_";
/// The label value standing for every domain without a label of its own.
pub const OTHER_DOMAIN: &str = "other";
/// Most recipient domains with a label of their own.
pub const MAX_DOMAIN_LABELS: usize = 50;
/// Notices a domain must have been sent (attempted) before it gets a label of its own.
pub const DOMAIN_LABEL_THRESHOLD: u64 = 10;
/// Most domains whose volume is tallied while they wait for a label.
pub const MAX_DOMAIN_CANDIDATES: usize = 4096;

/// Upper bounds (seconds) of the send-latency histogram: from a local relay's milliseconds to a
/// timeout of the default 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// What an attempt came to, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the relay (or written to the outbox).
    Sent,
    /// Temporary failure: will be retried.
    Deferred,
    /// Permanent failure or expired: needs a letter.
    Failed,
}

/// Decides the `domain` label of a recipient domain, keeping the number of label values bounded.
///
/// Why bounded: a breach list reaches tens of thousands of distinct domains, mostly a long tail of
/// company and personal domains with a handful of recipients each. One time series per domain (times
/// campaigns, times three outcomes) would blow up Prometheus's memory and make every query slow, and a
/// personal domain in a label is close to naming the person, which the no-personal-data rule forbids.
/// The providers that matter operationally (throttling, blocks) are the big ones.
///
/// How: a domain gets a label of its own once [`DOMAIN_LABEL_THRESHOLD`] notices to it were attempted,
/// while fewer than [`MAX_DOMAIN_LABELS`] domains have one; everything else is `other`. The heavy
/// domains of a list reach the threshold first, so the labelled set approximates the top domains by
/// volume, and a domain with fewer recipients than the threshold never shows. A label, once given, is
/// kept for the life of the process, so every series stays a monotonic counter (a domain's notices
/// before its promotion stay counted under `other`). Tallies of domains still waiting are bounded by
/// [`MAX_DOMAIN_CANDIDATES`]: when the table is full every tally is halved and those reaching zero are
/// forgotten, so the long tail is dropped while frequent domains keep their lead (amortised O(1)).
#[derive(Debug)]
pub struct DomainLabels {
    max_labels: usize,
    threshold: u64,
    max_candidates: usize,
    labelled: HashSet<String>,
    tallies: HashMap<String, u64>,
}

impl Default for DomainLabels {
    fn default() -> Self {
        Self::new(
            MAX_DOMAIN_LABELS,
            DOMAIN_LABEL_THRESHOLD,
            MAX_DOMAIN_CANDIDATES,
        )
    }
}

impl DomainLabels {
    pub fn new(max_labels: usize, threshold: u64, max_candidates: usize) -> Self {
        DomainLabels {
            max_labels,
            threshold: threshold.max(1),
            max_candidates: max_candidates.max(1),
            labelled: HashSet::new(),
            tallies: HashMap::new(),
        }
    }

    /// Counts one notice to `domain` and returns its label: the domain (lower-cased) or `other`.
    pub fn label(&mut self, domain: &str) -> String {
        let domain = domain.trim().to_ascii_lowercase();
        if domain.is_empty() || domain == OTHER_DOMAIN {
            return OTHER_DOMAIN.into();
        }
        if self.labelled.contains(&domain) {
            return domain;
        }
        if self.labelled.len() >= self.max_labels {
            return OTHER_DOMAIN.into();
        }
        if !self.tallies.contains_key(&domain) && self.tallies.len() >= self.max_candidates {
            self.tallies.retain(|_, n| {
                *n /= 2;
                *n > 0
            });
        }
        let tally = self.tallies.entry(domain.clone()).or_insert(0);
        *tally += 1;
        if *tally >= self.threshold {
            self.tallies.remove(&domain);
            self.labelled.insert(domain.clone());
            if self.labelled.len() >= self.max_labels {
                // No label left to give: the tallies are no longer needed.
                self.tallies = HashMap::new();
            }
            return domain;
        }
        OTHER_DOMAIN.into()
    }

    /// The domains with a label of their own.
    pub fn labelled(&self) -> impl Iterator<Item = &str> {
        self.labelled.iter().map(String::as_str)
    }

    /// How many domains are tallied while waiting for a label.
    pub fn candidates(&self) -> usize {
        self.tallies.len()
    }
}

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative; summed at render time), the last one being +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug)]
struct State {
    domains: DomainLabels,
    /// (campaign, domain label) → [sent, deferred, failed].
    outcomes: BTreeMap<(i64, String), [u64; 3]>,
    latency: Histogram,
    /// Open recipients (queued + deferred) of each campaign not yet finished.
    queue_depth: BTreeMap<i64, i64>,
    /// Per running campaign, the jurisdictions its forecast projects late, with the days late.
    projected_late: BTreeMap<i64, Vec<(String, i64)>>,
    /// Unix time of the last successful heartbeat.
    heartbeat: Option<f64>,
    rate_limit_wait_seconds: f64,
}

/// The unlabelled totals of one run, for logs, status lines, tests and `/metrics`. Written only by
/// [`Metrics`]'s methods (an attempt's outcome goes to its labelled counter and to its total in one
/// call); read them through [`Metrics::stats`].
#[derive(Debug, Default)]
pub struct Stats {
    pub claimed: AtomicU64,
    pub sent: AtomicU64,
    pub deferred: AtomicU64,
    pub failed: AtomicU64,
    pub released: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub rate_limit_waits: AtomicU64,
}

/// The registry of one daemon. Shared (`Arc`) between the dispatcher and the HTTP endpoint.
#[derive(Debug)]
pub struct Metrics {
    state: Mutex<State>,
    stats: Arc<Stats>,
    in_flight: AtomicU64,
    /// Live daemons sharing the cluster's limits (this one included).
    cluster_daemons: AtomicU64,
    /// 1 while this daemon sends nothing because its heartbeat cannot be written.
    sending_suspended: AtomicU64,
    /// Bounce reports this daemon processed, those that matched no recipient, and the recipients
    /// they moved to `bounced`.
    bounce_reports: AtomicU64,
    bounce_unmatched: AtomicU64,
    bounced: AtomicU64,
    /// Receiving domains held by the bounce guard, all campaigns.
    bounce_guards: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::with_domain_labels(DomainLabels::default())
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_domain_labels(domains: DomainLabels) -> Self {
        Metrics {
            state: Mutex::new(State {
                domains,
                outcomes: BTreeMap::new(),
                latency: Histogram::new(LATENCY_BUCKETS),
                queue_depth: BTreeMap::new(),
                projected_late: BTreeMap::new(),
                heartbeat: None,
                rate_limit_wait_seconds: 0.0,
            }),
            stats: Arc::default(),
            in_flight: AtomicU64::new(0),
            cluster_daemons: AtomicU64::new(1),
            sending_suspended: AtomicU64::new(0),
            bounce_reports: AtomicU64::new(0),
            bounce_unmatched: AtomicU64::new(0),
            bounced: AtomicU64::new(0),
            bounce_guards: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain numbers behind: keep using them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The unlabelled totals (sent, deferred, failed, claimed, released, ...).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Counts one attempt of `campaign_id` to a recipient at `domain`: its labelled counter and its
    /// total.
    pub fn attempt(&self, campaign_id: i64, domain: &str, outcome: Outcome) {
        let (total, i) = match outcome {
            Outcome::Sent => (&self.stats.sent, 0),
            Outcome::Deferred => (&self.stats.deferred, 1),
            Outcome::Failed => (&self.stats.failed, 2),
        };
        total.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state();
        let label = s.domains.label(domain);
        s.outcomes.entry((campaign_id, label)).or_insert([0; 3])[i] += 1;
    }

    /// Recipients leased by this daemon.
    pub fn claimed(&self, n: u64) {
        self.stats.claimed.fetch_add(n, Ordering::Relaxed);
    }

    /// Leased recipients given back unattempted.
    pub fn released(&self, n: u64) {
        self.stats.released.fetch_add(n, Ordering::Relaxed);
    }

    /// Leases renewed while their recipients were still in flight.
    pub fn leases_renewed(&self, n: u64) {
        self.stats.lease_renewals.fetch_add(n, Ordering::Relaxed);
    }

    /// How long one hand-over to the transport took.
    pub fn send_latency(&self, took: Duration) {
        self.state().latency.observe(took.as_secs_f64());
    }

    /// A delivery had to wait `waited` for its rate-limit permits.
    pub fn rate_limit_wait(&self, waited: Duration) {
        self.stats.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
        self.state().rate_limit_wait_seconds += waited.as_secs_f64();
    }

    /// Recipients this daemon holds a lease on now.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n as u64, Ordering::Relaxed);
    }

    /// Replaces the queue depths: open recipients per unfinished campaign.
    pub fn set_queue_depth(&self, depths: impl IntoIterator<Item = (i64, i64)>) {
        self.state().queue_depth = depths.into_iter().collect();
    }

    /// Replaces the deadline forecast's late jurisdictions: per running campaign, `(code, days late)`
    /// (an empty list: every jurisdiction on time).
    pub fn set_projected_late(&self, late: impl IntoIterator<Item = (i64, Vec<(String, i64)>)>) {
        self.state().projected_late = late.into_iter().collect();
    }

    /// How many live daemons share the cluster's limits, and whether this one is suspended (its
    /// heartbeat cannot be written, so the others may be sending its share).
    pub fn set_membership(&self, daemons: u32, suspended: bool) {
        self.cluster_daemons
            .store(u64::from(daemons), Ordering::Relaxed);
        self.sending_suspended
            .store(u64::from(suspended), Ordering::Relaxed);
    }

    /// A round of bounce processing: reports processed, recipients moved to `bounced`, reports that
    /// matched no recipient.
    pub fn bounces(&self, reports: u64, bounced: u64, unmatched: u64) {
        self.bounce_reports.fetch_add(reports, Ordering::Relaxed);
        self.bounced.fetch_add(bounced, Ordering::Relaxed);
        self.bounce_unmatched
            .fetch_add(unmatched, Ordering::Relaxed);
    }

    /// How many receiving domains the bounce guard holds now.
    pub fn set_bounce_guards(&self, n: usize) {
        self.bounce_guards.store(n as u64, Ordering::Relaxed);
    }

    /// The heartbeat was written at `at`.
    pub fn heartbeat(&self, at: chrono::DateTime<chrono::Utc>) {
        self.state().heartbeat = Some(at.timestamp_millis() as f64 / 1000.0);
    }

    /// Sent, deferred and failed attempts of a campaign, summed over domains (for tests and status).
    pub fn campaign_totals(&self, campaign_id: i64) -> [u64; 3] {
        let s = self.state();
        let mut total = [0; 3];
        for (_, counts) in s.outcomes.iter().filter(|((c, _), _)| *c == campaign_id) {
            total = std::array::from_fn(|i| total[i] + counts[i]);
        }
        total
    }

    /// The whole registry in the Prometheus text format, version 0.0.4.
    pub fn render(&self) -> String {
        let s = self.state();
        let mut out = String::with_capacity(4096);
        render_outcomes(&mut out, &s);
        render_latency(&mut out, &s.latency);
        render_queue_depth(&mut out, &s);
        render_projected_late(&mut out, &s);
        self.render_scalars(&mut out, &s);
        family(
            &mut out,
            "heartbeat_timestamp_seconds",
            "gauge",
            "Unix time of this daemon's last successful heartbeat in the database (alert when it lags).",
        );
        if let Some(at) = s.heartbeat {
            let _ = writeln!(out, "{PREFIX}heartbeat_timestamp_seconds {}", float(at));
        }
        out
    }

    /// The unlabelled gauges and counters, one sample each.
    fn render_scalars(&self, out: &mut String, s: &State) {
        let stats = &self.stats;
        for (name, help, value) in [
            (
                "in_flight",
                "Recipients this daemon holds a lease on (waiting for a rate limit or being sent).",
                self.in_flight.load(Ordering::Relaxed) as f64,
            ),
            (
                "cluster_daemons",
                "Live daemons sharing the cluster-wide limits, this one included: each takes rate / N.",
                self.cluster_daemons.load(Ordering::Relaxed) as f64,
            ),
            (
                "sending_suspended",
                "1 while this daemon sends nothing because it cannot write its heartbeat (the others may be sending its share).",
                self.sending_suspended.load(Ordering::Relaxed) as f64,
            ),
            (
                "bounce_guards_active",
                "Receiving domains held by the bounce guard (most final failures were policy rejections: the sender looks blocked); their recipients wait for email.",
                self.bounce_guards.load(Ordering::Relaxed) as f64,
            ),
            (
                "bounce_reports_total",
                "Bounce reports (DSNs, complaints, auto-replies, webhook events) processed by this daemon.",
                self.bounce_reports.load(Ordering::Relaxed) as f64,
            ),
            (
                "bounce_reports_unmatched_total",
                "Processed bounce reports that matched no recipient (no valid VERP token or Message-ID of ours).",
                self.bounce_unmatched.load(Ordering::Relaxed) as f64,
            ),
            (
                "messages_bounced_total",
                "Notices the relay accepted and a later bounce said were not delivered (flagged for a letter).",
                self.bounced.load(Ordering::Relaxed) as f64,
            ),
            (
                "claimed_total",
                "Recipients leased by this daemon.",
                stats.claimed.load(Ordering::Relaxed) as f64,
            ),
            (
                "released_total",
                "Leased recipients given back unattempted (shutdown, pause, cancel).",
                stats.released.load(Ordering::Relaxed) as f64,
            ),
            (
                "lease_renewals_total",
                "Leases renewed while their recipients were still in flight.",
                stats.lease_renewals.load(Ordering::Relaxed) as f64,
            ),
            (
                "rate_limit_waits_total",
                "Deliveries that had to wait for a rate-limit permit.",
                stats.rate_limit_waits.load(Ordering::Relaxed) as f64,
            ),
            (
                "rate_limit_wait_seconds_total",
                "Time deliveries spent waiting for rate-limit permits.",
                s.rate_limit_wait_seconds,
            ),
        ] {
            // Counters, and only they, end in `_total`.
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            family(out, name, kind, help);
            let _ = writeln!(out, "{PREFIX}{name} {}", float(value));
        }
    }
}

/// The outcome counters, by campaign and domain label.
fn render_outcomes(out: &mut String, s: &State) {
    for (i, (name, help)) in [
            (
                "messages_sent_total",
                "Notices accepted by the relay (or written to the outbox), by campaign and recipient domain.",
            ),
            (
                "messages_deferred_total",
                "Attempts that failed temporarily and will be retried, by campaign and recipient domain.",
            ),
            (
                "messages_failed_total",
                "Attempts that failed for good (refused or expired: a letter is needed), by campaign and recipient domain.",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            family(out, name, "counter", help);
            for ((campaign, domain), counts) in &s.outcomes {
                let _ = writeln!(
                    out,
                    "{PREFIX}{name}{{campaign=\"{campaign}\",domain=\"{}\"}} {}",
                    escape_label(domain),
                    counts[i]
                );
            }
        }
}

/// The send-latency histogram.
fn render_latency(out: &mut String, h: &Histogram) {
    family(
        out,
        "send_duration_seconds",
        "histogram",
        "Time to hand one notice to the transport (SMTP conversation or outbox write).",
    );
    // The last count is the +Inf bucket's, so the cumulative sum ends at the count.
    let mut cumulative = 0;
    for (bound, n) in h.bounds.iter().chain([&f64::INFINITY]).zip(&h.counts) {
        cumulative += n;
        let _ = writeln!(
            out,
            "{PREFIX}send_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
            float(*bound)
        );
    }
    let _ = writeln!(out, "{PREFIX}send_duration_seconds_sum {}", float(h.sum));
    let _ = writeln!(out, "{PREFIX}send_duration_seconds_count {}", h.count);
}

/// Open recipients per unfinished campaign.
fn render_queue_depth(out: &mut String, s: &State) {
    family(
        out,
        "queue_depth",
        "gauge",
        "Recipients of each unfinished campaign still queued or deferred (from the campaign counters, refreshed every heartbeat).",
    );
    for (campaign, depth) in &s.queue_depth {
        let _ = writeln!(
            out,
            "{PREFIX}queue_depth{{campaign=\"{campaign}\"}} {depth}"
        );
    }
}

/// The deadline forecast: how many jurisdictions each running campaign is projected to notify late,
/// and by how many days each.
fn render_projected_late(out: &mut String, s: &State) {
    family(
        out,
        "jurisdictions_projected_late",
        "gauge",
        "Jurisdictions of each running campaign whose last email notice is projected after their deadline (the deadline forecast, refreshed every minute).",
    );
    for (campaign, late) in &s.projected_late {
        let _ = writeln!(
            out,
            "{PREFIX}jurisdictions_projected_late{{campaign=\"{campaign}\"}} {}",
            late.len()
        );
    }
    family(
        out,
        "jurisdiction_days_late",
        "gauge",
        "Days after its deadline that a late jurisdiction's last email notice is projected (late jurisdictions only).",
    );
    for (campaign, late) in &s.projected_late {
        for (code, days) in late {
            let _ = writeln!(
                out,
                "{PREFIX}jurisdiction_days_late{{campaign=\"{campaign}\",jurisdiction=\"{}\"}} {days}",
                escape_label(code)
            );
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

/// A sample value: integers without a fraction, `+Inf`, `-Inf` and `NaN` as the format spells them.
fn float(v: f64) -> String {
    match v {
        f64::INFINITY => "+Inf".into(),
        f64::NEG_INFINITY => "-Inf".into(),
        v if v.is_nan() => "NaN".into(),
        v => v.to_string(),
    }
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(v: &str) -> String {
    escape_help(v).replace('"', "\\\"")
}

/// Help text escapes backslash and line feed.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_labels_are_bounded_and_go_to_the_heaviest_domains() {
        let mut d = DomainLabels::new(3, 5, 100);
        // A long tail of small domains, interleaved with three big ones and a fourth big one that comes
        // after the label slots are gone.
        let mut seen = HashMap::<String, usize>::new();
        for i in 0..2000 {
            let domain = match i % 4 {
                0 => "gmail.com".to_string(),
                1 => "Yahoo.COM".to_string(),
                2 if i < 1000 => "outlook.com".to_string(),
                2 => "late-bigco.example".to_string(),
                _ => format!("family{i}.example"),
            };
            *seen.entry(d.label(&domain)).or_default() += 1;
        }
        let mut labels: Vec<&str> = seen.keys().map(String::as_str).collect();
        labels.sort();
        assert_eq!(
            labels,
            ["gmail.com", "other", "outlook.com", "yahoo.com"],
            "three labels at most, lower-cased, the rest is other"
        );
        // Before promotion a domain's notices count under `other` (4 each): counters stay monotonic.
        assert_eq!(seen["gmail.com"], 500 - 4);
        assert_eq!(seen["outlook.com"], 250 - 4);
        assert_eq!(seen["other"], 3 * 4 + 500 + 250);
        assert_eq!(
            d.candidates(),
            0,
            "no tallies kept once every label is given"
        );
        // Stable: a labelled domain keeps its label, an unlabelled one stays other.
        assert_eq!(d.label("gmail.com"), "gmail.com");
        assert_eq!(d.label("late-bigco.example"), "other");
    }

    #[test]
    fn domain_candidates_are_bounded_and_frequent_domains_survive_the_halving() {
        // 20% to one domain, 1% to another, the rest to domains seen once.
        let mut d = DomainLabels::new(10, 20, 64);
        for i in 0..100_000 {
            match i % 100 {
                0..20 => d.label("bigco.example"),
                20 => d.label("medium.example"),
                _ => d.label(&format!("tail{i}.example")),
            };
            assert!(d.candidates() <= 64);
        }
        assert_eq!(
            d.labelled().collect::<Vec<_>>(),
            ["bigco.example"],
            "the frequent domain got its label; the 1% one kept being halved away with the tail"
        );
        assert_eq!(d.label("tail1.example"), "other");
        assert_eq!(d.label("other"), "other", "a domain named other is other");
        assert_eq!(d.label(""), "other");
    }

    #[test]
    fn exposition() {
        let m = Metrics::with_domain_labels(DomainLabels::new(5, 1, 10));
        m.leases_renewed(3);
        m.attempt(7, "Example.com", Outcome::Sent);
        m.attempt(7, "example.com", Outcome::Deferred);
        m.attempt(7, "we\"ird\\dom\nain", Outcome::Failed);
        m.send_latency(Duration::from_millis(20));
        m.send_latency(Duration::from_secs(100));
        m.set_queue_depth([(7, 12)]);
        let text = m.render();
        assert!(text.contains(
            "breach_notifier_messages_sent_total{campaign=\"7\",domain=\"example.com\"} 1\n"
        ));
        assert!(text.contains(
            "breach_notifier_messages_deferred_total{campaign=\"7\",domain=\"example.com\"} 1\n"
        ));
        assert!(text.contains(
            "breach_notifier_messages_failed_total{campaign=\"7\",domain=\"we\\\"ird\\\\dom\\nain\"} 1\n"
        ));
        assert!(text.contains("breach_notifier_send_duration_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("breach_notifier_send_duration_seconds_bucket{le=\"60\"} 1\n"));
        assert!(text.contains("breach_notifier_send_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("breach_notifier_send_duration_seconds_count 2\n"));
        assert!(text.contains("breach_notifier_queue_depth{campaign=\"7\"} 12\n"));
        assert!(text.contains("breach_notifier_lease_renewals_total 3\n"));
        assert!(
            !text.contains("\nbreach_notifier_heartbeat_timestamp_seconds "),
            "no heartbeat yet"
        );
        assert_eq!(m.campaign_totals(7), [1, 1, 1]);
        let totals = m.stats();
        assert_eq!(
            [&totals.sent, &totals.deferred, &totals.failed].map(|n| n.load(Ordering::Relaxed)),
            [1, 1, 1],
            "each outcome counted once, in its labelled counter and its total"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with(PREFIX), "{line}");
        }
    }

    #[test]
    fn the_forecast_gauges_name_campaigns_and_jurisdiction_codes() {
        let m = Metrics::new();
        m.set_projected_late([
            (3, vec![("US-CA".into(), 4), ("US-NY".into(), 1)]),
            (5, vec![]),
        ]);
        let text = m.render();
        assert!(text.contains("breach_notifier_jurisdictions_projected_late{campaign=\"3\"} 2\n"));
        assert!(text.contains("breach_notifier_jurisdictions_projected_late{campaign=\"5\"} 0\n"));
        assert!(text.contains(
            "breach_notifier_jurisdiction_days_late{campaign=\"3\",jurisdiction=\"US-CA\"} 4\n"
        ));
        m.set_projected_late([]);
        assert!(!m.render().contains("jurisdiction_days_late{"));
    }
}
