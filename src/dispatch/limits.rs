//! Rate limits: a pacer at each of three levels, each optional: the whole cluster, each recipient
//! domain, and each campaign; plus a cool-down per domain after a throttling reply.
//!
//! Every limit in the configuration and in campaign files is a limit for the whole cluster. Each
//! daemon takes an equal share: rate ÷ N and burst ÷ N (rounded down, at least 1), N being the live
//! daemons counted from their heartbeats. A change of N re-rates every pacer in place, so tasks
//! already waiting wait at the new rate; a re-rated pacer starts with no burst credit, so the old and
//! the new share never add up above the cluster's rate plus its burst.
//!
//! Why no crate (governor is the usual choice): its limiters cannot change rate in place (replacing
//! one leaves every waiting task on the old one, at the old rate, beside the new), and its waiters
//! poll: with 2,000 tasks waiting on one limiter, every permit wakes all of them. A [`Pacer`] is the
//! same algorithm (GCRA, one timestamp of state) behind a fair queue: only the task at the head of
//! the queue sleeps, once per permit, and a task that gives up (pause, shutdown) leaves without
//! having used anything. Time is tokio's, so tests run it on a paused clock.
//!
//! Every message waits for its permits in its own task, heading its domain's queue before it joins
//! the campaign's and the global one, so a domain waiting for its limit never holds up another
//! domain. Daily caps are enforced when claiming (they need the
//! database's counts: see the dispatcher).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::campaign::RateSpec;
use crate::config::LimitSettings;

/// A rate and the number of messages that may leave at once above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    /// `per_second` with `burst` (default: one second's worth), for the whole cluster.
    pub fn cluster(per_second: f64, burst: Option<u32>) -> Rate {
        let burst = burst.unwrap_or_else(|| per_second.ceil().clamp(1.0, u32::MAX as f64) as u32);
        Rate {
            per_second,
            burst: burst.max(1),
        }
    }

    /// One daemon's share when `daemons` share the cluster's rate: rate ÷ N, burst ÷ N rounded down
    /// (so the shares' bursts never add up to more than the cluster's), at least 1.
    pub fn share(self, daemons: u32) -> Rate {
        let n = daemons.max(1);
        Rate {
            per_second: self.per_second / f64::from(n),
            burst: (self.burst / n).max(1),
        }
    }

    fn interval(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second.max(1e-6))
    }
}

/// The GCRA state: the theoretical arrival time of the next message.
#[derive(Debug)]
struct Gcra {
    /// `None`: closed (no message may leave until it is re-rated).
    rate: Option<Rate>,
    interval: Duration,
    /// How far ahead of its theoretical time a message may leave: (burst − 1) intervals.
    tolerance: Duration,
    tat: Instant,
}

impl Gcra {
    /// A pacer at `rate` with no burst credit yet: one message may leave now, the next one interval
    /// later. (A full bucket at start would let a joining daemon add its whole burst to the others'.)
    fn empty(rate: Option<Rate>, now: Instant) -> Gcra {
        let (interval, tolerance) = match rate {
            Some(r) => (r.interval(), r.interval() * (r.burst - 1)),
            None => (Duration::ZERO, Duration::ZERO),
        };
        Gcra {
            rate,
            interval,
            tolerance,
            tat: now + tolerance,
        }
    }

    /// Whether a permit is free at `now`; if not, when the next one will be (`None`: closed).
    fn free_at(&self, now: Instant) -> Result<(), Option<Instant>> {
        if self.rate.is_none() {
            return Err(None);
        }
        let earliest = self.tat.checked_sub(self.tolerance).unwrap_or(now);
        if now < earliest {
            return Err(Some(earliest));
        }
        Ok(())
    }

    /// Takes one permit at `now`, or says when the next one may be taken.
    fn take(&mut self, now: Instant) -> Result<(), Option<Instant>> {
        self.free_at(now)?;
        self.tat = self.tat.max(now) + self.interval;
        Ok(())
    }
}

/// One rate limit whose rate can change while tasks wait for it. Waiters queue in order (tokio's
/// mutexes are fair); only the task at the head sleeps, and it re-reads the rate when it changes.
///
/// A message under several limits (its domain's, its campaign's, the global one) takes all its
/// permits at one instant: it becomes head of each queue in turn (domain, campaign, global: always
/// that order, so no two tasks wait for each other), waits at each until a permit is free without
/// taking it, and takes them together once it heads them all ([`acquire_all`]). A task that already
/// heads one queue joins the next through its priority lane, so holding a domain's turn costs that
/// domain one interval of the global rate, not the whole global queue. Taking a domain's permit first
/// and then queueing for the global one would let the global queue's changing length bunch a
/// domain's messages together (two daemons measured 46 in one second to a domain limited to 20 with a
/// burst of 20).
#[derive(Debug)]
pub struct Pacer {
    /// Held by the task at the head of the queue: the only one that may take a permit.
    head: tokio::sync::Mutex<()>,
    /// Tasks that hold no other pacer's head pass here first, one at a time, so that tasks arriving
    /// through the priority lane (straight to `head`) wait behind at most one of them.
    lane: tokio::sync::Mutex<()>,
    state: Mutex<Gcra>,
    changes: watch::Sender<u64>,
    last_used: Mutex<Instant>,
}

impl Pacer {
    pub fn new(rate: Option<Rate>) -> Pacer {
        let now = Instant::now();
        Pacer {
            head: tokio::sync::Mutex::new(()),
            lane: tokio::sync::Mutex::new(()),
            state: Mutex::new(Gcra::empty(rate, now)),
            changes: watch::Sender::new(0),
            last_used: Mutex::new(now),
        }
    }

    pub fn rate(&self) -> Option<Rate> {
        self.state.lock().expect("pacer lock").rate
    }

    /// Changes the rate (`None` closes the pacer) with immediate effect for the task waiting at the
    /// head of the queue and every one behind it. The new rate starts with no burst credit.
    pub fn set_rate(&self, rate: Option<Rate>) {
        let mut state = self.state.lock().expect("pacer lock");
        if state.rate == rate {
            return;
        }
        *state = Gcra::empty(rate, Instant::now());
        drop(state);
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Waits to head this pacer's queue: through the lane, or straight (`priority`) for a task that
    /// already heads another pacer's queue.
    async fn head(&self, priority: bool) -> tokio::sync::MutexGuard<'_, ()> {
        if priority {
            return self.head.lock().await;
        }
        let _lane = self.lane.lock().await;
        self.head.lock().await
    }

    /// As head: waits until a permit is free, without taking it.
    async fn until_free(&self) {
        let mut changes = self.changes.subscribe();
        loop {
            changes.borrow_and_update();
            let free = self
                .state
                .lock()
                .expect("pacer lock")
                .free_at(Instant::now());
            match free {
                Ok(()) => return,
                Err(Some(at)) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = changes.changed() => {}
                },
                Err(None) => {
                    let _ = changes.changed().await;
                }
            }
        }
    }

    /// Takes a permit if one is free now.
    #[cfg(test)]
    fn try_acquire(&self) -> bool {
        let Ok(_head) = self.head.try_lock() else {
            return false;
        };
        self.state
            .lock()
            .expect("pacer lock")
            .take(Instant::now())
            .is_ok()
    }

    fn idle_for(&self) -> Duration {
        self.last_used.lock().expect("pacer lock").elapsed()
    }
}

/// Waits until one permit of every pacer in `pacers` is free at the same instant, and takes them
/// together (see [`Pacer`]). `pacers` must come in the one order every caller uses: domain, campaign,
/// global. Cancel-safe: a task dropped while waiting has taken nothing.
pub async fn acquire_all(pacers: &[&Pacer]) {
    // Head each queue in turn and wait there until its permit is free, then move on: a task holds
    // a queue only once it is ready to go through it, so a domain waiting for its limit never holds
    // the global queue. Heading a queue, nobody else can take its permit: once free, it stays free
    // (unless a change of share closes the pacer: then wait again, still heading every queue).
    let mut heads = Vec::with_capacity(pacers.len());
    for (n, pacer) in pacers.iter().enumerate() {
        heads.push(pacer.head(n > 0).await);
        pacer.until_free().await;
    }
    while !take_all(pacers) {
        for pacer in pacers {
            pacer.until_free().await;
        }
    }
}

/// Takes one permit of each pacer if all are free now; otherwise takes none.
fn take_all(pacers: &[&Pacer]) -> bool {
    let now = Instant::now();
    let mut states: Vec<_> = pacers
        .iter()
        .map(|p| p.state.lock().expect("pacer lock"))
        .collect();
    if !states.iter().all(|s| s.free_at(now).is_ok()) {
        return false;
    }
    for state in &mut states {
        let _ = state.take(now);
    }
    drop(states);
    for pacer in pacers {
        *pacer.last_used.lock().expect("pacer lock") = now;
    }
    true
}

type Shared = Arc<Pacer>;

/// How long a permit stays good while its task waits for a send slot: a message that waited longer
/// takes its permits again, so a stall of the relay (permits granted, slots busy) cannot end in a
/// burst above the limits when the slots free up.
pub fn permit_lifetime(fastest_rate: Option<f64>) -> Duration {
    match fastest_rate {
        Some(r) if r > 0.0 => Duration::from_secs_f64((1.0 / r).clamp(0.001, 0.1)),
        _ => Duration::MAX,
    }
}

/// What one message waited for its permits.
#[derive(Debug, Clone, Copy)]
pub struct Permits {
    pub waited: Duration,
    /// Send within this long of the permits, or take them again ([`permit_lifetime`]).
    pub lifetime: Duration,
}

/// All limiters of one daemon.
pub struct Limits {
    settings: LimitSettings,
    /// Live daemons sharing the cluster-wide rates (at least 1).
    share: Mutex<u32>,
    global: Option<Shared>,
    domains: Mutex<HashMap<String, Shared>>,
    campaigns: Mutex<HashMap<i64, (Rate, Shared)>>,
    cooldowns: Mutex<HashMap<String, (Instant, u32)>>,
    /// Closed while this daemon cannot prove to the others that it is alive (its heartbeat fails):
    /// they may already have taken its share.
    fenced: Mutex<bool>,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        let global = settings
            .global_per_second
            .map(|rate| Arc::new(Pacer::new(Some(Rate::cluster(rate, settings.global_burst)))));
        Limits {
            settings,
            share: Mutex::new(1),
            global,
            domains: Mutex::new(HashMap::new()),
            campaigns: Mutex::new(HashMap::new()),
            cooldowns: Mutex::new(HashMap::new()),
            fenced: Mutex::new(false),
        }
    }

    /// The live daemons this daemon shares the cluster's limits with (itself included).
    pub fn share(&self) -> u32 {
        *self.share.lock().expect("limits lock")
    }

    /// Updates how many daemons share the cluster-wide limits; every pacer takes its new share at
    /// once, including for the tasks already waiting on it.
    pub fn set_share(&self, live_daemons: u32) {
        self.rerate_on_change(&self.share, live_daemons.max(1));
    }

    /// Closes (or reopens) every pacer: a daemon whose heartbeat cannot be written may be counted
    /// dead by the others, who then send its share; it must not send it too.
    pub fn set_fenced(&self, fenced: bool) {
        self.rerate_on_change(&self.fenced, fenced);
    }

    /// Sets `setting` (the share or the fence) to `value`, re-rating every pacer if it changed.
    fn rerate_on_change<T: Copy + PartialEq>(&self, setting: &Mutex<T>, value: T) {
        let old = std::mem::replace(&mut *setting.lock().expect("limits lock"), value);
        if old != value {
            self.rerate_all();
        }
    }

    fn rerate_all(&self) {
        if let (Some(pacer), Some(rate)) = (&self.global, self.global_rate()) {
            pacer.set_rate(self.my_share(rate));
        }
        for (domain, pacer) in self.domains.lock().expect("limits lock").iter() {
            if let Some(rate) = self.domain_rate(domain) {
                pacer.set_rate(self.my_share(rate));
            }
        }
        for (rate, pacer) in self.campaigns.lock().expect("limits lock").values() {
            pacer.set_rate(self.my_share(*rate));
        }
    }

    fn my_share(&self, cluster: Rate) -> Option<Rate> {
        if *self.fenced.lock().expect("limits lock") {
            return None;
        }
        Some(cluster.share(self.share()))
    }

    /// The cluster-wide global rate, if one is configured.
    pub fn global_rate(&self) -> Option<Rate> {
        self.settings
            .global_per_second
            .map(|rate| Rate::cluster(rate, self.settings.global_burst))
    }

    /// The cluster-wide rate for `domain`, if one applies.
    pub fn domain_rate(&self, domain: &str) -> Option<Rate> {
        self.settings
            .domains
            .get(domain)
            .copied()
            .or(self.settings.domain_default_per_second)
            .map(|rate| Rate::cluster(rate, None))
    }

    fn domain_pacer(&self, domain: &str) -> Option<Shared> {
        let rate = self.domain_rate(domain)?;
        let mut map = self.domains.lock().expect("limits lock");
        if let Some(pacer) = map.get(domain) {
            return Some(pacer.clone());
        }
        let pacer = Arc::new(Pacer::new(self.my_share(rate)));
        map.insert(domain.to_string(), pacer.clone());
        Some(pacer)
    }

    fn campaign_pacer(&self, campaign_id: i64, spec: &RateSpec) -> Option<Shared> {
        let rate = Rate::cluster(spec.per_second?, spec.burst);
        let mut map = self.campaigns.lock().expect("limits lock");
        let (known, pacer) = map
            .entry(campaign_id)
            .or_insert_with(|| (rate, Arc::new(Pacer::new(self.my_share(rate)))));
        if *known != rate {
            *known = rate;
            pacer.set_rate(self.my_share(rate));
        }
        Some(pacer.clone())
    }

    /// Waits until one message to `domain` for `campaign_id` may leave under its domain's, its
    /// campaign's and the global limit, and takes the three permits at one instant
    /// ([`acquire_all`]). Tasks of a domain waiting for its limit never hold up other domains.
    pub async fn acquire(&self, domain: &str, campaign_id: i64, rate: &RateSpec) -> Permits {
        let started = Instant::now();
        if let Some(until) = self.cooldown_until(domain) {
            tokio::time::sleep_until(until).await;
        }
        let pacers: Vec<Shared> = [
            self.domain_pacer(domain),
            self.campaign_pacer(campaign_id, rate),
            self.global.clone(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let refs: Vec<&Pacer> = pacers.iter().map(|p| p.as_ref()).collect();
        acquire_all(&refs).await;
        let fastest = pacers
            .iter()
            .filter_map(|p| p.rate())
            .map(|r| r.per_second)
            .reduce(f64::max);
        Permits {
            waited: started.elapsed(),
            lifetime: permit_lifetime(fastest),
        }
    }

    /// Forgets the domain pacers nobody used for `idle` (a campaign of millions meets tens of
    /// thousands of domains). Safe: a pacer made again later starts with no burst credit.
    pub fn forget_idle(&self, idle: Duration) {
        self.domains
            .lock()
            .expect("limits lock")
            .retain(|_, pacer| Arc::strong_count(pacer) > 1 || pacer.idle_for() < idle);
    }

    fn cooldown_until(&self, domain: &str) -> Option<Instant> {
        let map = self.cooldowns.lock().expect("limits lock");
        map.get(domain)
            .map(|(until, _)| *until)
            .filter(|until| *until > Instant::now())
    }

    /// A throttling reply from `domain`: hold it back for 15 s, doubling on each further throttle up
    /// to 10 minutes. Other domains are not affected.
    pub fn throttled(&self, domain: &str) {
        let mut map = self.cooldowns.lock().expect("limits lock");
        let now = Instant::now();
        let strikes = match map.get(domain) {
            // Already cooling down: the other messages of the same burst say nothing new.
            Some((until, _)) if *until > now => return,
            // Throttled again soon after a cool-down ended: back off harder.
            Some((until, strikes)) if *until + Duration::from_secs(600) > now => strikes + 1,
            _ => 0,
        };
        let delay = Duration::from_secs(15u64.saturating_mul(1 << strikes.min(6)))
            .min(Duration::from_secs(600));
        map.insert(domain.to_string(), (now + delay, strikes));
    }

    /// A delivery to `domain` succeeded: its cool-down strikes are forgotten.
    pub fn delivered(&self, domain: &str) {
        let mut map = self.cooldowns.lock().expect("limits lock");
        if map
            .get(domain)
            .is_some_and(|(until, _)| *until <= Instant::now())
        {
            map.remove(domain);
        }
    }
}

/// Whether a temporary reply is a throttling signal (too many connections, rate, volume).
/// Greylisting (`451 4.7.1 … greylisted`) is not: it defers one new sender/recipient pair once, and
/// the retry of that notice is all it asks for; cooling the whole domain down for it would hold back
/// every other notice to that domain, longer at each new address.
pub fn is_throttling(code: Option<i32>, reply: &str) -> bool {
    let reply = reply.to_ascii_lowercase();
    if reply.contains("greylist") || reply.contains("graylist") {
        return false;
    }
    matches!(code, Some(421 | 450 | 451 | 452 | 454))
        && (code == Some(421) || reply.contains("4.7.") || reply.contains("rate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_now(pacer: &Pacer) -> usize {
        std::iter::from_fn(|| pacer.try_acquire().then_some(()))
            .take(10_000)
            .count()
    }

    #[test]
    fn a_new_pacer_has_no_burst_credit_and_earns_it_at_its_rate() {
        let pacer = Pacer::new(Some(Rate::cluster(1000.0, Some(5))));
        assert_eq!(free_now(&pacer), 1, "one at start, no burst");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(free_now(&pacer), 5, "the burst, earned back, and no more");
    }

    #[test]
    fn shares_divide_rate_and_burst_and_never_add_up_to_more() {
        let cluster = Rate::cluster(300.0, Some(30));
        for n in 1..=7 {
            let share = cluster.share(n);
            assert!((share.per_second * f64::from(n) - 300.0).abs() < 1e-9);
            assert!(share.burst * n <= 30, "{n} daemons: burst {}", share.burst);
            assert!(share.burst >= 1);
        }
        assert_eq!(Rate::cluster(20.0, None).burst, 20, "default: one second");
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_already_waiting_take_the_new_share() {
        // 100/s alone; 2,000 tasks queue; a second daemon appears: from then on 50/s, for the queued
        // tasks too (they used to keep the old limiter and add its rate to the new one's).
        let limits = Arc::new(Limits::new(LimitSettings {
            global_per_second: Some(100.0),
            global_burst: Some(10),
            ..Default::default()
        }));
        let granted = Arc::new(Mutex::new(Vec::new()));
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..2000 {
            let (limits, granted) = (limits.clone(), granted.clone());
            tasks.spawn(async move {
                limits.acquire("example.com", 1, &RateSpec::default()).await;
                granted.lock().unwrap().push(start.elapsed());
            });
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        limits.set_share(2);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let times = granted.lock().unwrap().clone();
        let in_window = |from: u64, to: u64| {
            times
                .iter()
                .filter(|t| **t >= Duration::from_secs(from) && **t < Duration::from_secs(to))
                .count()
        };
        let alone = in_window(1, 5);
        let shared = in_window(6, 15);
        assert!((396..=404).contains(&alone), "100/s alone: {alone} in 4 s");
        assert!(
            (446..=454).contains(&shared),
            "50/s shared: {shared} in 9 s"
        );
        tasks.abort_all();
    }

    /// The most grants in any window `[t, t + 1 s)`.
    fn busiest_second(times: &[Duration]) -> usize {
        let mut times = times.to_vec();
        times.sort();
        let mut start = 0;
        (0..times.len())
            .map(|end| {
                while times[end] - times[start] >= Duration::from_secs(1) {
                    start += 1;
                }
                end - start + 1
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_takes_its_domain_and_global_permits_at_one_instant() {
        // The global limit is the bottleneck (900 messages to an unlimited domain queue for it); a
        // limited domain's messages must still leave at its rate, not bunched by the global queue.
        let mut settings = LimitSettings {
            global_per_second: Some(100.0),
            global_burst: Some(10),
            ..Default::default()
        };
        settings.domains.insert("slow.example".into(), 10.0);
        let limits = Arc::new(Limits::new(settings));
        let granted: Arc<Mutex<Vec<(Duration, bool)>>> = Arc::default();
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..1200 {
            let (limits, granted) = (limits.clone(), granted.clone());
            let slow = n % 4 == 0;
            tasks.spawn(async move {
                let domain = if slow { "slow.example" } else { "fast.example" };
                limits.acquire(domain, 1, &RateSpec::default()).await;
                granted.lock().unwrap().push((start.elapsed(), slow));
            });
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        let all: Vec<Duration> = granted.lock().unwrap().iter().map(|g| g.0).collect();
        let slow: Vec<Duration> = granted
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.1)
            .map(|g| g.0)
            .collect();
        assert!(
            busiest_second(&all) <= 110,
            "global: {}",
            busiest_second(&all)
        );
        assert!(
            busiest_second(&slow) <= 20,
            "slow domain: {}",
            busiest_second(&slow)
        );
        let slow_in = |from: u64, to: u64| {
            slow.iter()
                .filter(|t| **t >= Duration::from_secs(from) && **t < Duration::from_secs(to))
                .count()
        };
        assert!(
            (78..=82).contains(&slow_in(1, 9)),
            "10/s to the slow domain: {}",
            slow_in(1, 9)
        );
        assert!(all.len() >= 990, "the global rate is used: {}", all.len());
        tasks.abort_all();
    }

    #[tokio::test(start_paused = true)]
    async fn domain_and_campaign_limits_are_shared_too() {
        let mut settings = LimitSettings::default();
        settings.domains.insert("gmail.com".into(), 30.0);
        let limits = Limits::new(settings);
        limits.set_share(3);
        let spec = RateSpec {
            per_second: Some(60.0),
            ..Default::default()
        };
        let gmail = limits.domain_pacer("gmail.com").unwrap();
        assert_eq!(gmail.rate(), Some(Rate::cluster(30.0, None).share(3)));
        assert!(limits.domain_pacer("other.example").is_none());
        let campaign = limits.campaign_pacer(7, &spec).unwrap();
        assert_eq!(campaign.rate().unwrap().per_second, 20.0);
        limits.set_share(1);
        assert_eq!(gmail.rate().unwrap().per_second, 30.0, "re-rated in place");
        assert_eq!(campaign.rate().unwrap().per_second, 60.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fenced_daemon_sends_nothing_until_its_heartbeat_is_back() {
        let limits = Arc::new(Limits::new(LimitSettings {
            global_per_second: Some(100.0),
            ..Default::default()
        }));
        limits.set_fenced(true);
        let waiting = {
            let limits = limits.clone();
            tokio::spawn(
                async move { limits.acquire("example.com", 1, &RateSpec::default()).await },
            )
        };
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "closed while fenced");
        limits.set_fenced(false);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiting.is_finished(), "reopened");
    }

    #[test]
    fn idle_domain_pacers_are_forgotten() {
        let limits = Limits::new(LimitSettings {
            domain_default_per_second: Some(5.0),
            ..Default::default()
        });
        let held = limits.domain_pacer("held.example").unwrap();
        limits.domain_pacer("idle.example");
        limits.forget_idle(Duration::ZERO);
        let known: Vec<String> = limits.domains.lock().unwrap().keys().cloned().collect();
        assert_eq!(
            known,
            vec!["held.example".to_string()],
            "{held:?} is in use"
        );
    }

    #[test]
    fn permits_go_stale_after_one_interval_of_the_fastest_limit() {
        assert_eq!(
            permit_lifetime(Some(300.0)),
            Duration::from_secs_f64(1.0 / 300.0)
        );
        assert_eq!(permit_lifetime(Some(1.0)), Duration::from_millis(100));
        assert_eq!(permit_lifetime(Some(1e6)), Duration::from_millis(1));
        assert_eq!(permit_lifetime(None), Duration::MAX);
    }

    #[test]
    fn a_burst_of_throttling_replies_is_one_strike() {
        let limits = Limits::new(LimitSettings::default());
        for _ in 0..50 {
            limits.throttled("example.net");
        }
        let until = limits.cooldown_until("example.net").expect("cooling down");
        assert!(
            until <= Instant::now() + Duration::from_secs(15),
            "one strike: 15 s, not escalated by the burst"
        );
        assert!(
            limits.cooldown_until("example.com").is_none(),
            "other domains are not affected"
        );
    }

    #[test]
    fn throttling_replies_are_recognised() {
        assert!(is_throttling(Some(421), "4.7.0 Try again later"));
        assert!(is_throttling(
            Some(451),
            "4.7.650 The mail server has been temporarily rate limited"
        ));
        assert!(!is_throttling(Some(452), "4.2.2 Mailbox full"));
        assert!(!is_throttling(
            Some(451),
            "4.7.1 <user@example.net>: Recipient address rejected: Greylisted, see https://postgrey.schweikert.ch/"
        ));
        assert!(!is_throttling(Some(450), "4.7.1 Graylisting in action"));
        assert!(!is_throttling(Some(550), "5.1.1 No such user"));
    }
}
