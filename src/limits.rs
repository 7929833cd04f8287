//! Rate limits: GCRA limiters (governor) at three levels, each optional: the whole cluster, each
//! recipient domain, and each campaign; plus a cool-down per domain after a throttling reply.
//!
//! Every message waits for its own permits in its own task, so a domain waiting for its limit never
//! holds up another domain. The cluster and campaign rates are divided by the number of live daemons
//! (from their heartbeats) so that several daemons on one PostgreSQL keep the configured total.
//! Daily caps are enforced by the dispatcher when claiming (they need the database's count).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::campaign::RateSpec;
use crate::config::LimitSettings;

/// A quota of `per_second` messages with `burst` allowed at once (at least 1).
pub fn quota(per_second: f64, burst: Option<u32>) -> Quota {
    let period = Duration::from_secs_f64(1.0 / per_second.max(1e-6));
    let burst = burst
        .unwrap_or_else(|| per_second.ceil().clamp(1.0, u32::MAX as f64) as u32)
        .max(1);
    Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"))
}

type Shared = Arc<DefaultDirectRateLimiter>;

/// All limiters of one daemon.
pub struct Limits {
    settings: LimitSettings,
    /// Live daemons sharing the cluster-wide rates (at least 1).
    share: Mutex<u32>,
    global: Mutex<Option<Shared>>,
    domains: Mutex<HashMap<String, Shared>>,
    campaigns: Mutex<HashMap<i64, (RateSpec, u32, Shared)>>,
    cooldowns: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        let limits = Limits {
            settings,
            share: Mutex::new(1),
            global: Mutex::new(None),
            domains: Mutex::new(HashMap::new()),
            campaigns: Mutex::new(HashMap::new()),
            cooldowns: Mutex::new(HashMap::new()),
        };
        limits.rebuild_global();
        limits
    }

    /// Updates how many daemons share the cluster-wide rates; rebuilds the limiters when it changes.
    pub fn set_share(&self, live_instances: u32) {
        let n = live_instances.max(1);
        let mut share = self.share.lock().expect("limits lock");
        if *share != n {
            *share = n;
            drop(share);
            self.rebuild_global();
            self.campaigns.lock().expect("limits lock").clear();
        }
    }

    fn rebuild_global(&self) {
        let n = *self.share.lock().expect("limits lock") as f64;
        let limiter = self.settings.global_per_second.map(|rate| {
            let burst = self
                .settings
                .global_burst
                .map(|b| ((b as f64 / n).ceil() as u32).max(1));
            Arc::new(RateLimiter::direct(quota(rate / n, burst)))
        });
        *self.global.lock().expect("limits lock") = limiter;
    }

    fn domain_limiter(&self, domain: &str) -> Option<Shared> {
        let rate = self
            .settings
            .domains
            .get(domain)
            .copied()
            .or(self.settings.domain_default_per_second)?;
        let mut map = self.domains.lock().expect("limits lock");
        Some(
            map.entry(domain.to_string())
                .or_insert_with(|| Arc::new(RateLimiter::direct(quota(rate, None))))
                .clone(),
        )
    }

    fn campaign_limiter(&self, campaign_id: i64, rate: &RateSpec) -> Option<Shared> {
        let per_second = rate.per_second?;
        let n = *self.share.lock().expect("limits lock");
        let mut map = self.campaigns.lock().expect("limits lock");
        let entry = map.entry(campaign_id).or_insert_with(|| {
            let burst = rate.burst.map(|b| b.div_ceil(n).max(1));
            (
                rate.clone(),
                n,
                Arc::new(RateLimiter::direct(quota(per_second / n as f64, burst))),
            )
        });
        if entry.0 != *rate || entry.1 != n {
            let burst = rate.burst.map(|b| b.div_ceil(n).max(1));
            *entry = (
                rate.clone(),
                n,
                Arc::new(RateLimiter::direct(quota(per_second / n as f64, burst))),
            );
        }
        Some(entry.2.clone())
    }

    /// Waits until one message to `domain` for `campaign_id` may leave, domain first (so a slow domain
    /// waits without taking global or campaign capacity), then campaign, then global. Returns how long
    /// it waited.
    pub async fn acquire(&self, domain: &str, campaign_id: i64, rate: &RateSpec) -> Duration {
        let started = Instant::now();
        if let Some(until) = self.cooldown_until(domain) {
            tokio::time::sleep_until(until.into()).await;
        }
        if let Some(l) = self.domain_limiter(domain) {
            l.until_ready().await;
        }
        if let Some(l) = self.campaign_limiter(campaign_id, rate) {
            l.until_ready().await;
        }
        let global = self.global.lock().expect("limits lock").clone();
        if let Some(l) = global {
            l.until_ready().await;
        }
        started.elapsed()
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
pub fn is_throttling(code: Option<i32>, reply: &str) -> bool {
    matches!(
        code,
        Some(421) | Some(450) | Some(451) | Some(452) | Some(454)
    ) && (code == Some(421)
        || reply.contains("4.7.")
        || reply.to_ascii_lowercase().contains("rate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_allows_the_burst_then_the_rate() {
        let l = RateLimiter::direct(quota(10.0, Some(3)));
        assert!(l.check().is_ok() && l.check().is_ok() && l.check().is_ok());
        assert!(l.check().is_err(), "burst of 3 used up");
    }

    #[test]
    fn cluster_rates_are_split_among_live_daemons() {
        let limits = Limits::new(LimitSettings {
            global_per_second: Some(100.0),
            global_burst: Some(100),
            ..Default::default()
        });
        limits.set_share(4);
        let g = limits.global.lock().unwrap().clone().unwrap();
        let mut allowed = 0;
        while g.check().is_ok() {
            allowed += 1;
        }
        assert_eq!(allowed, 25, "a quarter of the burst each");
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
        assert!(!is_throttling(Some(550), "5.1.1 No such user"));
    }
}
