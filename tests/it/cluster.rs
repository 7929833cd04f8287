//! Several daemons on one PostgreSQL keep the cluster-wide limits together. Each daemon takes an
//! equal share of `limits.global_per_second` + `limits.global_burst` and of every domain's limit, N
//! being the live daemons in the `instances` heartbeat table, recounted when one joins, stops or dies.
//!
//! The proof here is end to end: real `breach-notifier run` processes (the test build's binary),
//! configured as an operator would (environment variables, and a TOML file for `limits.domains`,
//! whose keys hold dots the environment cannot spell), one PostgreSQL schema, and the test SMTP
//! server (`common::smtp`) as the relay. Each scenario runs a campaign to completion and then reads
//! every attempt's `started_at` (the moment the notice, its permits granted, goes to the transport:
//! what the limiters control, without the relay's reply time) from `delivery_attempts`:
//!
//! - the busiest sliding second over the whole run (every window `[t, t + 1 s)`, not fixed buckets)
//!   must be at most rate + burst, start-up, a daemon joining and a daemon killed included;
//! - the mean rate while every daemon is up and has work (from the last daemon's first attempt plus a
//!   second to the first daemon's last attempt minus a second: the drain tail, where daemons run out
//!   of work one after the other, is left out) must be within 5 % of the configured rate.
//!
//! Scenarios: two daemons started together; three; one, then a second joining 4 s later; two, then
//! one killed with SIGKILL (its share must go to the survivor once its heartbeat is older than
//! 2 × `dispatch.heartbeat_secs`, so from the kill plus 3 heartbeats the survivor alone sends at the
//! full rate; the killed daemon's last sends, made but never recorded, are counted at the time the
//! relay received them); and one domain's limit split between two daemons. Every scenario also
//! checks that everyone was notified: all recipients sent, each notice at the relay, no recipient
//! attempted twice (after the SIGKILL: no more duplicates than the killed daemon had in flight).
//!
//! The scenarios run one at a time (a lock), since they measure time on a shared two-core machine;
//! the whole file takes about a minute and a half. Every figure is printed (`--nocapture` shows them
//! on success too), and a failure lists each broken check with its figures.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use breach_notifier::store::{CampaignProgress, CampaignState, NewRecipient, Store};
use chrono::{DateTime, Utc};
use common::TestApp;
use common::smtp::{Script, SmtpServer};
use common::{person, spec};

/// The cluster's global limit in every scenario.
const RATE: f64 = 200.0;
const BURST: u32 = 20;
/// The limited domain of the domain scenario, and its limit for the whole cluster.
const SLOW_DOMAIN: &str = "slow.example";
const SLOW_RATE: f64 = 20.0;
/// A domain's burst is not configurable: one second's worth, `ceil(rate)` (`Rate::cluster(rate, None)`).
const SLOW_BURST: u32 = 20;
/// Other recipients' domain in the domain scenario (no limit of its own).
const FAST_DOMAIN: &str = "fast.example";
const HEARTBEAT_SECS: u64 = 1;
/// Per daemon: the most recipients leased at once, so the most a SIGKILL can duplicate.
const MAX_IN_FLIGHT: usize = 200;
const CONCURRENCY: usize = 16;
/// Long enough that a lease held by a live daemon never lapses on a loaded machine (renewed every
/// third of it), short enough that a killed daemon's recipients come back within the run.
const LEASE_SECS: u64 = 6;
/// The mean rate must be within this fraction of the configured rate.
const TOLERANCE: f64 = 0.05;
/// How long a campaign may take before the scenario gives up on it (and reports what it measured).
const COMPLETION_LIMIT: Duration = Duration::from_secs(90);

const SECOND: i64 = 1_000_000;

/// A daemon process of the cluster.
struct Daemon {
    name: String,
    child: tokio::process::Child,
    spawned_at: DateTime<Utc>,
    /// When it was killed with SIGKILL (it is then gone, without deregistering).
    killed_at: Option<DateTime<Utc>>,
}

/// One attempt as `delivery_attempts` recorded it.
struct Attempt {
    /// `started_at`, in microseconds since the epoch.
    at: i64,
    instance: String,
    message_id: String,
}

/// A campaign on one PostgreSQL schema, the test relay, and the daemons sending it.
struct Cluster {
    t: TestApp,
    smtp: SmtpServer,
    dir: tempfile::TempDir,
    /// The TOML file with `limits.domains`, when the scenario has domain limits.
    config: Option<PathBuf>,
    campaign: i64,
    recipients: usize,
    daemons: Vec<Daemon>,
    /// The same moment on the monotonic clock (the relay's) and the wall clock (the database's).
    anchor: (Instant, DateTime<Utc>),
    began: Instant,
}

impl Cluster {
    /// A running campaign of `rows` on a fresh schema; `domains` are `limits.domains`.
    async fn new(rows: &[NewRecipient], domains: &[(&str, f64)]) -> Cluster {
        let anchor = (Instant::now(), Utc::now());
        let t = common::postgres().await;
        let smtp = SmtpServer::start(Script::new()).await;
        let dir = tempfile::tempdir().unwrap();
        let config = (!domains.is_empty()).then(|| {
            let mut toml = String::from("[limits.domains]\n");
            for (domain, rate) in domains {
                toml.push_str(&format!("\"{domain}\" = {rate:?}\n"));
            }
            let path = dir.path().join("cluster.toml");
            std::fs::write(&path, toml).unwrap();
            path
        });
        let campaign = t
            .campaign(&spec(None, "Hello {{ recipient.first_name }}"))
            .with(rows)
            .started()
            .await;
        Cluster {
            t,
            smtp,
            dir,
            config,
            campaign,
            recipients: rows.len(),
            daemons: Vec::new(),
            anchor,
            began: Instant::now(),
        }
    }

    /// Starts daemon `name` (its `dispatch.instance_id`).
    fn start(&mut self, name: &str) {
        let spawned_at = Utc::now();
        let child = daemon(
            &self.t.url,
            self.smtp.port(),
            self.dir.path(),
            name,
            self.config.as_deref(),
        );
        self.daemons.push(Daemon {
            name: name.to_string(),
            child,
            spawned_at,
            killed_at: None,
        });
    }

    fn daemon(&self, name: &str) -> &Daemon {
        self.daemons.iter().find(|d| d.name == name).unwrap()
    }

    /// Waits until each of `names` has recorded an attempt; their first attempts' times.
    async fn wait_until_sending(&self, names: &[&str]) -> BTreeMap<String, i64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Store::Postgres(pg) = &self.t.store else {
                unreachable!("a cluster runs on PostgreSQL")
            };
            let firsts: BTreeMap<String, i64> = sqlx::query_as::<_, (String, DateTime<Utc>)>(
                "SELECT instance, min(started_at) FROM delivery_attempts \
                 WHERE campaign_id = $1 GROUP BY instance",
            )
            .bind(self.campaign)
            .fetch_all(pg.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|(instance, at)| (instance, at.timestamp_micros()))
            .collect();
            if names.iter().all(|n| firsts.contains_key(*n)) {
                return firsts;
            }
            assert!(
                Instant::now() < deadline,
                "daemons {names:?} not all sending after 30 s (sending: {:?}); logs:\n{}",
                firsts.keys().collect::<Vec<_>>(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills daemon `name` with SIGKILL (no drain, no deregistration) and returns when it is gone.
    async fn kill(&mut self, name: &str) -> DateTime<Utc> {
        let d = self.daemons.iter_mut().find(|d| d.name == name).unwrap();
        d.child.start_kill().expect("SIGKILL");
        d.child.wait().await.unwrap();
        let at = Utc::now();
        d.killed_at = Some(at);
        at
    }

    /// Waits for the campaign to complete (a failure if it does not within the limit), then stops the
    /// daemons still running with SIGTERM.
    async fn finish(&mut self, failures: &mut Vec<String>) -> CampaignProgress {
        let deadline = Instant::now() + COMPLETION_LIMIT;
        let p = loop {
            let p = self.t.progress(self.campaign).await;
            if p.state == CampaignState::Completed {
                break p;
            }
            if Instant::now() >= deadline {
                failures.push(format!(
                    "the campaign did not complete within {COMPLETION_LIMIT:?}: {:?} sent {}, queued {}, deferred {}, failed {}",
                    p.state, p.sent, p.queued, p.deferred, p.failed
                ));
                break p;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        for d in self.daemons.iter_mut().filter(|d| d.killed_at.is_none()) {
            terminate(&mut d.child).await;
        }
        eprintln!(
            "campaign of {} recipients: {:?} after {:.1} s",
            self.recipients,
            p.state,
            self.began.elapsed().as_secs_f64()
        );
        p
    }

    /// Every recorded attempt of the campaign, sorted by start time; only those to `domain` if given.
    async fn attempts(&self, domain: Option<&str>) -> Vec<Attempt> {
        let Store::Postgres(pg) = &self.t.store else {
            unreachable!("a cluster runs on PostgreSQL")
        };
        let rows: Vec<(DateTime<Utc>, String, String)> = sqlx::query_as(
            "SELECT a.started_at, a.instance, a.message_id \
             FROM delivery_attempts a JOIN recipients r ON r.id = a.recipient_id \
             WHERE a.campaign_id = $1 \
               AND ($2::text IS NULL OR lower(split_part(r.email, '@', 2)) = $2) \
             ORDER BY a.started_at",
        )
        .bind(self.campaign)
        .bind(domain)
        .fetch_all(pg.pool())
        .await
        .unwrap();
        rows.into_iter()
            .map(|(at, instance, message_id)| Attempt {
                at: at.timestamp_micros(),
                instance,
                message_id,
            })
            .collect()
    }

    /// Sends the relay accepted that no attempt row accounts for (a daemon killed between sending and
    /// recording), at the time the relay received them, in microseconds since the epoch. For a notice
    /// the relay received r times and the database holds d attempts of, the earliest r − d receipts.
    fn unrecorded_sends(&self, attempts: &[Attempt]) -> Vec<i64> {
        let mut recorded: HashMap<&str, usize> = HashMap::new();
        for a in attempts {
            *recorded.entry(a.message_id.as_str()).or_default() += 1;
        }
        let mut received: HashMap<String, Vec<Instant>> = HashMap::new();
        for r in self.smtp.received() {
            if let Some(id) = r.message_id {
                received.entry(id).or_default().push(r.at);
            }
        }
        let mut out = Vec::new();
        for (id, mut times) in received {
            times.sort();
            let extra = times
                .len()
                .saturating_sub(recorded.get(id.as_str()).copied().unwrap_or(0));
            out.extend(times.into_iter().take(extra).map(|at| self.wall_clock(at)));
        }
        out
    }

    /// A monotonic instant (the relay's clock) on the wall clock, in microseconds since the epoch.
    fn wall_clock(&self, at: Instant) -> i64 {
        let (mono, wall) = self.anchor;
        let base = wall.timestamp_micros();
        match at.checked_duration_since(mono) {
            Some(d) => base + d.as_micros() as i64,
            None => base - mono.duration_since(at).as_micros() as i64,
        }
    }

    /// Everyone notified: all recipients sent, each notice at the relay, and at most `duplicates`
    /// notices attempted or received twice.
    async fn check_everyone_notified(
        &self,
        p: &CampaignProgress,
        duplicates: usize,
        failures: &mut Vec<String>,
    ) {
        let n = self.recipients as i64;
        if (p.sent, p.queued, p.deferred, p.failed) != (n, 0, 0, 0) {
            failures.push(format!(
                "not everyone sent: sent {}, queued {}, deferred {}, failed {} of {n}",
                p.sent, p.queued, p.deferred, p.failed
            ));
        }
        let Store::Postgres(pg) = &self.t.store else {
            unreachable!()
        };
        let ids: Vec<Option<String>> =
            sqlx::query_scalar("SELECT message_id FROM recipients WHERE campaign_id = $1")
                .bind(self.campaign)
                .fetch_all(pg.pool())
                .await
                .unwrap();
        let at_relay = self.smtp.count_by_message_id();
        let missing = ids
            .iter()
            .filter(|id| !id.as_deref().is_some_and(|id| at_relay.contains_key(id)))
            .count();
        if missing > 0 {
            failures.push(format!(
                "{missing} recipients' notices never reached the relay"
            ));
        }
        let relay_duplicates: usize = at_relay.values().map(|c| c - 1).sum();
        let (rows, distinct): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT recipient_id) FROM delivery_attempts WHERE campaign_id = $1",
        )
        .bind(self.campaign)
        .fetch_one(pg.pool())
        .await
        .unwrap();
        let attempted_twice = (rows - distinct) as usize;
        eprintln!(
            "relay received {} ({relay_duplicates} duplicates), attempt rows {rows} for {distinct} recipients; allowed duplicates {duplicates}",
            self.smtp.received_count()
        );
        if relay_duplicates > duplicates {
            failures.push(format!(
                "the relay received {relay_duplicates} duplicate notices (allowed: {duplicates})"
            ));
        }
        if attempted_twice > duplicates {
            failures.push(format!(
                "{attempted_twice} attempts beyond one per recipient (allowed: {duplicates})"
            ));
        }
    }

    /// The daemons' logs (warnings and errors), for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for d in &self.daemons {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", d.name)))
                .unwrap_or_default();
            if !text.trim().is_empty() {
                let tail: String = text
                    .chars()
                    .rev()
                    .take(3000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                out.push_str(&format!("--- {} ---\n{tail}\n", d.name));
            }
        }
        out
    }

    /// Fails the test with every broken check, its figures and the daemons' logs.
    fn verdict(&self, scenario: &str, failures: Vec<String>) {
        eprintln!("{scenario}: {:.1} s", self.began.elapsed().as_secs_f64());
        assert!(
            failures.is_empty(),
            "{scenario}:\n  - {}\n(figures above){}",
            failures.join("\n  - "),
            match self.logs() {
                l if l.is_empty() => String::new(),
                l => format!("\ndaemon logs:\n{l}"),
            }
        );
    }
}

/// `breach-notifier run` as daemon `name` against `url` and the test relay, configured by environment
/// variables (and the file `config`, for `limits.domains`); its standard error goes to `dir/NAME.log`.
fn daemon(
    url: &str,
    smtp_port: u16,
    dir: &Path,
    name: &str,
    config: Option<&Path>,
) -> tokio::process::Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let mut cmd = tokio::process::Command::from(common::command(dir));
    cmd.arg("run");
    if let Some(path) = config {
        cmd.env("BREACH_NOTIFIER_CONFIG", path);
    }
    for (key, value) in [
        ("DATABASE__URL", url.to_string()),
        ("TRANSPORT__KIND", "smtp".into()),
        ("TRANSPORT__SMTP__HOST", "127.0.0.1".into()),
        ("TRANSPORT__SMTP__PORT", smtp_port.to_string()),
        ("TRANSPORT__SMTP__TLS", "none".into()),
        ("TRANSPORT__SMTP__POOL_SIZE", CONCURRENCY.to_string()),
        ("DISPATCH__INSTANCE_ID", name.to_string()),
        ("DISPATCH__MAX_IN_FLIGHT", MAX_IN_FLIGHT.to_string()),
        ("DISPATCH__CONCURRENCY", CONCURRENCY.to_string()),
        ("DISPATCH__BATCH_SIZE", "50".into()),
        ("DISPATCH__HEARTBEAT_SECS", HEARTBEAT_SECS.to_string()),
        ("DISPATCH__LEASE_SECS", LEASE_SECS.to_string()),
        ("DISPATCH__RESCAN_SECS", "1".into()),
        ("DISPATCH__POLL_INTERVAL_MS", "100".into()),
        ("DISPATCH__DRAIN_SECS", "5".into()),
        ("LIMITS__GLOBAL_PER_SECOND", RATE.to_string()),
        ("LIMITS__GLOBAL_BURST", BURST.to_string()),
        ("LOG__LEVEL", "warn".into()),
    ] {
        cmd.env(format!("BREACH_NOTIFIER__{key}"), value);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("start the daemon")
}

/// SIGTERM, as systemd sends it, and the exit (SIGKILL by `kill_on_drop` if it never comes).
async fn terminate(child: &mut tokio::process::Child) {
    let Some(pid) = child.id() else { return };
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(15), child.wait()).await;
}

/// The most start times in any window `[t, t + 1 s)`, over every `t` (a window holding the most can
/// always be moved to start at one of its attempts), and where the first such window starts.
fn busiest_second(sorted: &[i64]) -> (usize, i64) {
    let mut best = (0, sorted.first().copied().unwrap_or(0));
    let mut end = 0;
    for (start, &t) in sorted.iter().enumerate() {
        while end < sorted.len() && sorted[end] < t + SECOND {
            end += 1;
        }
        if end - start > best.0 {
            best = (end - start, t);
        }
    }
    best
}

/// Start times in `[from, to)` per second.
fn mean_rate(sorted: &[i64], from: i64, to: i64) -> f64 {
    let n = sorted.iter().filter(|&&t| t >= from && t < to).count();
    n as f64 * SECOND as f64 / (to - from) as f64
}

/// The times of a set of attempts, measured against a limit and printed.
struct Timeline<'a> {
    label: &'a str,
    /// Sorted start times, microseconds since the epoch.
    times: Vec<i64>,
    rate: f64,
    burst: u32,
    /// Where the figures are printed relative to (the first attempt of the run).
    origin: i64,
}

impl<'a> Timeline<'a> {
    fn new(label: &'a str, mut times: Vec<i64>, rate: f64, burst: u32) -> Timeline<'a> {
        times.sort_unstable();
        let origin = times.first().copied().unwrap_or(0);
        eprintln!(
            "{label}: {} attempts; per second from the first one (fixed buckets, for the eye): {}",
            times.len(),
            per_second(&times, origin)
        );
        Timeline {
            label,
            times,
            rate,
            burst,
            origin,
        }
    }

    fn secs(&self, t: i64) -> String {
        format!("{:+.2} s", (t - self.origin) as f64 / SECOND as f64)
    }

    /// The busiest sliding second over the whole run must be at most rate + burst.
    fn check_busiest(&self, failures: &mut Vec<String>) {
        let (count, at) = busiest_second(&self.times);
        let limit = self.rate as usize + self.burst as usize;
        eprintln!(
            "{}: busiest sliding second {count} (window from {}), limit rate + burst = {limit}",
            self.label,
            self.secs(at)
        );
        if count > limit {
            failures.push(format!(
                "{}: {count} attempts in the sliding second from {}, above rate + burst = {limit}",
                self.label,
                self.secs(at)
            ));
        }
    }

    /// The mean rate over `[from, to)` must be within 5 % of the rate. `what` says which part of the
    /// run it is.
    fn check_mean(&self, what: &str, from: i64, to: i64, failures: &mut Vec<String>) {
        if to - from < 2 * SECOND {
            failures.push(format!(
                "{}, {what}: the window {} to {} is too short to measure a rate (the run went \
                 differently than planned)",
                self.label,
                self.secs(from),
                self.secs(to)
            ));
            return;
        }
        let mean = mean_rate(&self.times, from, to);
        let off = (mean - self.rate) / self.rate;
        eprintln!(
            "{}, {what}: mean {mean:.1}/s from {} to {} ({:.1} s), configured {}/s ({:+.1} %)",
            self.label,
            self.secs(from),
            self.secs(to),
            (to - from) as f64 / SECOND as f64,
            self.rate,
            off * 100.0
        );
        if off.abs() > TOLERANCE {
            failures.push(format!(
                "{}, {what}: mean {mean:.1}/s over {} to {}, not within {:.0} % of {}/s",
                self.label,
                self.secs(from),
                self.secs(to),
                TOLERANCE * 100.0,
                self.rate
            ));
        }
    }
}

/// Counts per whole second from `origin`, as one line.
fn per_second(sorted: &[i64], origin: i64) -> String {
    let mut counts: Vec<usize> = Vec::new();
    for &t in sorted {
        let i = ((t - origin) / SECOND) as usize;
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] += 1;
    }
    counts
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first and last attempt of each daemon.
fn spans(attempts: &[Attempt]) -> BTreeMap<String, (i64, i64)> {
    let mut m: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for a in attempts {
        let e = m.entry(a.instance.clone()).or_insert((a.at, a.at));
        e.0 = e.0.min(a.at);
        e.1 = e.1.max(a.at);
    }
    m
}

fn print_spans(label: &str, spans: &BTreeMap<String, (i64, i64)>, origin: i64) {
    for (name, (first, last)) in spans {
        eprintln!(
            "{label}: {name} sent from {:+.2} s to {:+.2} s",
            (first - origin) as f64 / SECOND as f64,
            (last - origin) as f64 / SECOND as f64
        );
    }
}

fn recipients(n: usize) -> Vec<NewRecipient> {
    (0..n).map(|i| person(i, "example.com")).collect()
}

/// Recipients for about `secs` seconds at the global rate.
fn for_seconds(secs: f64) -> usize {
    (RATE * secs) as usize
}

/// `names` started together; the campaign lasts about 12 s of steady state.
async fn started_together(scenario: &str, names: &[&str]) {
    // One scenario at a time: they measure rates on a shared machine.
    let _serial = common::serial().await;
    let mut c = Cluster::new(&recipients(for_seconds(13.0)), &[]).await;
    for name in names {
        c.start(name);
    }
    let mut failures = Vec::new();
    let p = c.finish(&mut failures).await;
    let attempts = c.attempts(None).await;
    let spans = spans(&attempts);
    let line = Timeline::new(
        "all domains",
        attempts.iter().map(|a| a.at).collect(),
        RATE,
        BURST,
    );
    print_spans("all domains", &spans, line.origin);
    line.check_busiest(&mut failures);
    if spans.len() == names.len() {
        // From the moment every daemon sends (plus a second) to the first one running out of work.
        let from = spans.values().map(|s| s.0).max().unwrap() + SECOND;
        let to = spans.values().map(|s| s.1).min().unwrap() - SECOND;
        line.check_mean("all daemons up", from, to, &mut failures);
    } else {
        failures.push(format!(
            "only {:?} of {names:?} sent anything",
            spans.keys().collect::<Vec<_>>()
        ));
    }
    c.check_everyone_notified(&p, 0, &mut failures).await;
    c.verdict(scenario, failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_started_together_keep_the_global_limit() {
    started_together("two daemons started together", &["a", "b"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_started_together_keep_the_global_limit() {
    started_together("three daemons started together", &["a", "b", "c"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_joining_mid_run_keeps_the_global_limit() {
    // One scenario at a time: they measure rates on a shared machine.
    let _serial = common::serial().await;
    // About 4 s alone, then 10 s together.
    let mut c = Cluster::new(&recipients(for_seconds(15.0)), &[]).await;
    c.start("a");
    c.wait_until_sending(&["a"]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    c.start("b");
    let joined = c.daemon("b").spawned_at.timestamp_micros();
    let mut failures = Vec::new();
    let p = c.finish(&mut failures).await;
    let attempts = c.attempts(None).await;
    let spans = spans(&attempts);
    let line = Timeline::new(
        "all domains",
        attempts.iter().map(|a| a.at).collect(),
        RATE,
        BURST,
    );
    print_spans("all domains", &spans, line.origin);
    eprintln!("all domains: b started at {}", line.secs(joined));
    line.check_busiest(&mut failures);
    match (spans.get("a"), spans.get("b")) {
        (Some(a), Some(b)) => {
            // Alone, the first daemon has the whole rate; with the second, they share it.
            line.check_mean("a alone", a.0 + SECOND, joined, &mut failures);
            line.check_mean(
                "after b joined",
                b.0 + SECOND,
                a.1.min(b.1) - SECOND,
                &mut failures,
            );
        }
        _ => failures.push(format!(
            "both daemons should have sent: {:?}",
            spans.keys().collect::<Vec<_>>()
        )),
    }
    c.check_everyone_notified(&p, 0, &mut failures).await;
    c.verdict("a daemon joins", failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_with_sigkill_frees_its_share() {
    // One scenario at a time: they measure rates on a shared machine.
    let _serial = common::serial().await;
    // About 5 s together, then the survivor alone for about 10 s.
    let mut c = Cluster::new(&recipients(for_seconds(17.0)), &[]).await;
    c.start("a");
    c.start("b");
    let firsts = c.wait_until_sending(&["a", "b"]).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let killed = c.kill("b").await.timestamp_micros();
    let mut failures = Vec::new();
    let p = c.finish(&mut failures).await;
    let attempts = c.attempts(None).await;
    let spans = spans(&attempts);
    // What b sent but never recorded counts too, at the time the relay received it.
    let unrecorded = c.unrecorded_sends(&attempts);
    eprintln!(
        "all domains: {} sends of the killed daemon were never recorded; counted at the relay's time",
        unrecorded.len()
    );
    let line = Timeline::new(
        "all domains",
        attempts.iter().map(|a| a.at).chain(unrecorded).collect(),
        RATE,
        BURST,
    );
    print_spans("all domains", &spans, line.origin);
    eprintln!("all domains: b killed at {}", line.secs(killed));
    line.check_busiest(&mut failures);
    line.check_mean(
        "both up, before the kill",
        firsts.values().copied().max().unwrap() + SECOND,
        killed,
        &mut failures,
    );
    match spans.get("a") {
        // The dead share is free once b's heartbeat is older than 2 heartbeats: by the kill plus
        // 3 heartbeats, a sends at the full rate.
        Some(a) => line.check_mean(
            "a alone after the kill",
            killed + 3 * HEARTBEAT_SECS as i64 * SECOND,
            a.1 - SECOND,
            &mut failures,
        ),
        None => failures.push("the survivor sent nothing".into()),
    }
    c.check_everyone_notified(&p, MAX_IN_FLIGHT, &mut failures)
        .await;
    c.verdict("a daemon killed with SIGKILL", failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_limit_is_shared_by_the_daemons() {
    // One scenario at a time: they measure rates on a shared machine.
    let _serial = common::serial().await;
    // One recipient in five to the limited domain: more than its share of the global rate, so its
    // limit, not the queue, sets its pace throughout; about 12 s of it.
    let slow = (SLOW_RATE * 12.0) as usize;
    let rows: Vec<NewRecipient> = (0..slow * 5)
        .map(|i| person(i, if i % 5 == 0 { SLOW_DOMAIN } else { FAST_DOMAIN }))
        .collect();
    let mut c = Cluster::new(&rows, &[(SLOW_DOMAIN, SLOW_RATE)]).await;
    c.start("a");
    c.start("b");
    let mut failures = Vec::new();
    let p = c.finish(&mut failures).await;

    let all = c.attempts(None).await;
    let global = Timeline::new(
        "all domains",
        all.iter().map(|a| a.at).collect(),
        RATE,
        BURST,
    );
    global.check_busiest(&mut failures);

    let attempts = c.attempts(Some(SLOW_DOMAIN)).await;
    let spans = spans(&attempts);
    let line = Timeline::new(
        SLOW_DOMAIN,
        attempts.iter().map(|a| a.at).collect(),
        SLOW_RATE,
        SLOW_BURST,
    );
    print_spans(SLOW_DOMAIN, &spans, line.origin);
    line.check_busiest(&mut failures);
    if spans.len() == 2 {
        let from = spans.values().map(|s| s.0).max().unwrap() + SECOND;
        let to = spans.values().map(|s| s.1).min().unwrap() - SECOND;
        line.check_mean("both daemons up", from, to, &mut failures);
    } else {
        failures.push(format!(
            "both daemons should have sent to {SLOW_DOMAIN}: {:?}",
            spans.keys().collect::<Vec<_>>()
        ));
    }
    c.check_everyone_notified(&p, 0, &mut failures).await;
    c.verdict("one domain's limit", failures);
}

#[test]
fn the_busiest_second_slides() {
    // 3 attempts at 0.6 s to 0.9 s and 3 at 1.1 s to 1.5 s: fixed buckets see 3 and 3.
    let t = [600_000, 800_000, 900_000, 1_100_000, 1_300_000, 1_500_000];
    assert_eq!(busiest_second(&t), (6, 600_000));
    assert_eq!(
        busiest_second(&[0, SECOND, 2 * SECOND]),
        (1, 0),
        "[t, t + 1 s) is half-open"
    );
    assert_eq!(busiest_second(&[]).0, 0);
    assert!((mean_rate(&[0, 1, 2, SECOND], 0, SECOND) - 3.0).abs() < 1e-9);
}
