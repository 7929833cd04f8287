//! The dispatcher: `breach-notifier run`. Claims due recipients of running campaigns with a lease,
//! sends outside any transaction, records every outcome, and never loses anyone.
//!
//! Shape of one daemon:
//! - the **main loop** refreshes the campaigns (pause, resume and cancel take effect at the next turn,
//!   at most `poll_interval_ms` later), claims batches while fewer than `max_in_flight` recipients are
//!   held, and spawns one task per claimed recipient;
//! - each **delivery task** waits for its rate-limit permits (its own domain first, so a slow domain
//!   never blocks another), takes one of `concurrency` send slots, renders, sends, and hands the
//!   outcome to the recorder;
//! - the **recorder** writes outcomes in batches (`record_attempts`: attempt rows plus status changes
//!   in one transaction) and gives back leases of recipients that were not attempted;
//! - **membership** writes the heartbeat and keeps this daemon's share of the cluster-wide limits
//!   current (recounting at every heartbeat and whenever another daemon announces that it joined or
//!   left); it stops the daemon's sending while its heartbeat cannot be written;
//! - **housekeeping** renews the leases still held, the queue-depth gauges of [`crate::ops::metrics`], and
//!   the systemd status line.
//!
//! Observability: [`Stats`] counts this run's outcomes (logs, tests); [`Metrics`] adds campaign and
//! domain labels, the send latency and gauges for `/metrics`; [`Notifier`] reports to systemd
//! (`STATUS=` every heartbeat, `STOPPING=1` when the drain begins) and [`Liveness`] is beaten at every
//! turn of the main loop for the watchdog.
//!
//! Crash safety comes from the order of events: a recipient is leased before it is sent and changes
//! status only after the outcome is known. A crash between the two leaves a lease that expires; the
//! recipient is then due again and is sent a second time with the same Message-ID. Only recipients
//! held at the moment of the crash can be duplicated, so at most `max_in_flight`.
//!
//! **Layer: dispatch.** Owns the daemon's work and its rate [`limits`]. Uses the campaigns layer (spec,
//! templates, message, waves), the transport, the store and the operations layer (metrics, systemd
//! notification); used only by the command line.

pub mod limits;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::campaign::CampaignSpec;
use crate::campaign::message;
use crate::campaign::preflight;
use crate::campaign::template::Templates;
use crate::config::{DispatchSettings, Settings};
use crate::dispatch::limits::{Limits, is_throttling};
pub use crate::ops::metrics::Stats;
use crate::ops::metrics::{Metrics, Outcome};
use crate::ops::notify::{Liveness, Notifier};
use crate::store::{
    AttemptOutcome, AttemptRecord, CampaignState, DailyCap, InstanceInfo, NextState, Recipient,
    Store,
};
use crate::transport::Transport;

/// When the daemon stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Until a shutdown signal (the service).
    Forever,
    /// Until no campaign is running and nothing is in flight (the demo, tests).
    UntilIdle,
}

/// The recipients this daemon holds (claimed, outcome not yet recorded), and how many per campaign:
/// the claim's room under `max_in_flight`, a campaign's daily cap, lease renewal and the drain.
#[derive(Debug, Default)]
struct InFlight {
    campaign_of: HashMap<i64, i64>,
    per_campaign: HashMap<i64, u64>,
}

impl InFlight {
    fn len(&self) -> usize {
        self.campaign_of.len()
    }

    fn is_empty(&self) -> bool {
        self.campaign_of.is_empty()
    }

    fn of_campaign(&self, campaign_id: i64) -> u64 {
        self.per_campaign.get(&campaign_id).copied().unwrap_or(0)
    }

    fn hold(&mut self, campaign_id: i64, recipients: impl IntoIterator<Item = i64>) {
        for id in recipients {
            if self.campaign_of.insert(id, campaign_id).is_none() {
                *self.per_campaign.entry(campaign_id).or_default() += 1;
            }
        }
    }

    fn finish(&mut self, recipient_id: i64) {
        let Some(campaign_id) = self.campaign_of.remove(&recipient_id) else {
            return;
        };
        if let Some(n) = self.per_campaign.get_mut(&campaign_id) {
            *n -= 1;
            if *n == 0 {
                self.per_campaign.remove(&campaign_id);
            }
        }
    }

    fn ids(&self) -> Vec<i64> {
        self.campaign_of.keys().copied().collect()
    }

    fn drain(&mut self) -> Vec<i64> {
        self.per_campaign.clear();
        self.campaign_of.drain().map(|(id, _)| id).collect()
    }
}

type Held = Arc<Mutex<InFlight>>;

/// What the main loop hands every delivery task it spawns: where to report, the send slots, and the
/// switch that stops them.
struct TaskWiring<'a> {
    done: &'a mpsc::Sender<Finished>,
    slots: &'a Arc<Semaphore>,
    stop: &'a watch::Receiver<bool>,
}

/// What a delivery task reports.
enum Finished {
    Attempted(AttemptRecord),
    /// Not attempted (shutdown, pause or cancel before sending, template failure): give the lease back.
    Released {
        recipient_id: i64,
    },
    /// The campaign's templates failed for a real recipient: pause the campaign.
    TemplateFailed {
        campaign_id: i64,
        recipient_id: i64,
        message: String,
    },
}

/// A running campaign as the daemon sees it.
struct Active {
    spec: Arc<CampaignSpec>,
    sender: Arc<message::Sender>,
    templates: Arc<Templates>,
    content_hash: String,
    cursor: i64,
    last_rescan: Instant,
    /// Set when the fresh scan found nothing: wait for the poll interval before scanning again.
    idle_until: Instant,
    /// How far fresh claims may go (the end of the released waves).
    gate: crate::campaign::waves::Gate,
    last_wave_check: Instant,
    /// The last claim found no fresh work: the wave may be finished.
    wave_drained: bool,
    state: watch::Sender<CampaignState>,
}

/// The dispatcher of one daemon.
pub struct Dispatcher {
    store: Store,
    transport: Transport,
    settings: DispatchSettings,
    limits: Arc<Limits>,
    dkim: Option<Arc<lettre::message::dkim::DkimConfig>>,
    pub instance: InstanceInfo,
    pub stats: Arc<Stats>,
    /// Labelled counters, latency and gauges for `/metrics`; reads the unlabelled counters of `stats`.
    pub metrics: Arc<Metrics>,
    /// systemd notifications (`STATUS=` every heartbeat, `STOPPING=1`); disabled unless `run` sets it.
    notifier: Notifier,
    /// Beaten at every turn of the main loop, for the watchdog.
    liveness: Arc<Liveness>,
}

impl Dispatcher {
    pub fn new(store: Store, transport: Transport, settings: &Settings) -> anyhow::Result<Self> {
        let d = &settings.dispatch;
        let hostname = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let pid = std::process::id();
        let id = if d.instance_id.is_empty() {
            format!("{hostname}-{pid}")
        } else {
            d.instance_id.clone()
        };
        let dkim = crate::campaign::message::load_dkim(settings.dkim.as_ref())?.map(Arc::new);
        let stats = Arc::new(Stats::default());
        Ok(Dispatcher {
            store,
            transport,
            settings: d.clone(),
            limits: Arc::new(Limits::new(settings.limits.clone())),
            dkim,
            instance: InstanceInfo {
                id,
                hostname,
                pid: pid as i32,
                version: env!("CARGO_PKG_VERSION").into(),
            },
            metrics: Arc::new(Metrics::new(stats.clone())),
            stats,
            notifier: Notifier::disabled(),
            liveness: Arc::default(),
        })
    }

    /// Reports to systemd through `notifier` (status every heartbeat, `STOPPING=1`) and beats
    /// `liveness` at every turn of the main loop (the watchdog watches it).
    pub fn with_notifier(mut self, notifier: Notifier, liveness: Arc<Liveness>) -> Self {
        self.notifier = notifier;
        self.liveness = liveness;
        self
    }

    /// Runs until `shutdown` turns true (or, in [`RunMode::UntilIdle`], until there is nothing to do).
    pub async fn run(
        &self,
        mode: RunMode,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        // SQLite allows one daemon per database: a lock the kernel releases if this process dies,
        // held until `run` returns (store::daemon_lock). None on PostgreSQL.
        let _daemon_lock = self.store.daemon_lock(&self.instance.id)?;
        // PostgreSQL: the campaigns trigger NOTIFYs every state change, so pause, resume and cancel
        // (from the CLI or SQL) wake the loop at once, and daemons announce joining and leaving;
        // polling stays as the fallback, since a listener that reconnects misses what was sent
        // meanwhile. Listening starts before this daemon counts the others: one that registers after
        // the count is heard.
        let wake = Arc::new(tokio::sync::Notify::new());
        let members_changed = Arc::new(tokio::sync::Notify::new());
        let listener = match &self.store {
            crate::store::Store::Postgres(pg) => {
                let (listening, ready) = tokio::sync::oneshot::channel();
                let listener = tokio::spawn(listen_for_changes(
                    pg.pool().clone(),
                    wake.clone(),
                    members_changed.clone(),
                    listening,
                ));
                if tokio::time::timeout(Duration::from_secs(5), ready)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "not listening for other daemons yet; counting them every heartbeat"
                    );
                }
                Some(listener)
            }
            crate::store::Store::Sqlite(_) => None,
        };
        if let Err(e) = self.join_cluster().await {
            listener.inspect(|l| l.abort());
            return Err(e);
        }
        tracing::info!(instance = %self.instance.id, backend = %self.store.backend(), share = self.limits.share(), "dispatcher started");

        let in_flight: Held = Arc::default();
        let send_slots = Arc::new(Semaphore::new(self.settings.concurrency as usize));
        let (done_tx, done_rx) =
            mpsc::channel::<Finished>(self.settings.max_in_flight as usize + 16);
        let (pause_tx, mut pause_rx) = mpsc::unbounded_channel::<(i64, i64, String)>();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (quit_tx, quit_rx) = watch::channel(false);
        let recorder = tokio::spawn(record_loop(
            self.store.clone(),
            self.instance.id.clone(),
            done_rx,
            in_flight.clone(),
            pause_tx,
            self.stats.clone(),
            self.settings.flush_max as usize,
            Duration::from_millis(self.settings.flush_ms),
        ));
        let housekeeping = tokio::spawn(housekeeping_loop(
            self.store.clone(),
            self.instance.clone(),
            in_flight.clone(),
            self.limits.clone(),
            self.settings.clone(),
            self.stats.clone(),
            self.metrics.clone(),
            self.notifier.clone(),
            stop_rx.clone(),
            quit_rx.clone(),
        ));
        let membership = tokio::spawn(membership_loop(
            self.store.clone(),
            self.instance.clone(),
            self.limits.clone(),
            self.metrics.clone(),
            heartbeat_every(&self.settings),
            members_changed.clone(),
            quit_rx,
        ));

        let mut tasks = JoinSet::new();
        let mut active: HashMap<i64, Active> = HashMap::new();
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let mut last_refresh = Instant::now() - poll;
        let mut result = Ok(());
        loop {
            self.liveness.beat();
            self.metrics
                .set_in_flight(in_flight.lock().expect("lock").len());
            if *shutdown.borrow() {
                break;
            }
            while let Ok((campaign_id, recipient_id, message)) = pause_rx.try_recv() {
                self.pause_for_template(campaign_id, recipient_id, &message)
                    .await;
            }
            while tasks.try_join_next().is_some() {}
            if last_refresh.elapsed() >= poll.min(Duration::from_millis(500)) {
                if let Err(e) = self.refresh(&mut active).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot refresh campaigns; retrying");
                    tokio::time::sleep(poll).await;
                    continue;
                }
                last_refresh = Instant::now();
            }
            let claimed = match self
                .claim_round(
                    &mut active,
                    &in_flight,
                    &mut tasks,
                    &TaskWiring {
                        done: &done_tx,
                        slots: &send_slots,
                        stop: &stop_rx,
                    },
                    &shutdown,
                )
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "claiming failed; retrying");
                    0
                }
            };
            if claimed == 0 {
                if mode == RunMode::UntilIdle
                    && active.is_empty()
                    && in_flight.lock().expect("lock").is_empty()
                    && tasks.is_empty()
                {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(poll.min(Duration::from_millis(200))) => {}
                    _ = shutdown.changed() => {}
                    _ = wake.notified() => last_refresh = Instant::now() - poll,
                }
            }
        }

        // Shutdown: stop claiming, let in-flight sends finish within the drain time, release the rest.
        // The drain has its own bound (drain_secs, and systemd's TimeoutStopSec): no watchdog for it.
        self.liveness.unwatch();
        match self.store.cancel_claims().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(claims = n, "stopping: cancelled claims still running"),
            Err(e) => tracing::warn!(error = %e, "stopping: cannot cancel running claims"),
        }
        let held = in_flight.lock().expect("lock").len();
        self.notifier
            .stopping(&format!("stopping: draining {held} in flight"));
        tracing::info!(in_flight = held, "stopping: draining in-flight work");
        let _ = stop_tx.send(true);
        let drain = Duration::from_secs(self.settings.drain_secs);
        let drained =
            tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                "drain time over: aborting sends still running; their recipients are released"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        drop(done_tx);
        if let Err(e) = recorder
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("recorder task: {e}")))
        {
            result = Err(e);
        }
        let leftover: Vec<i64> = in_flight.lock().expect("lock").drain();
        if !leftover.is_empty() {
            let n = self
                .store
                .release_leases(&self.instance.id, &leftover)
                .await?;
            self.stats.released.fetch_add(n, Ordering::Relaxed);
        }
        let _ = quit_tx.send(true);
        let _ = housekeeping.await;
        let _ = membership.await;
        if let Some(listener) = listener {
            listener.abort();
        }
        self.store
            .instance_stopped(&self.instance.id, Utc::now())
            .await?;
        // The others take this daemon's share now rather than when its heartbeat expires.
        if let Err(e) = self.store.announce_membership().await {
            tracing::warn!(error = %e, "cannot tell the other daemons that this one stopped");
        }
        tracing::info!(
            sent = self.stats.sent.load(Ordering::Relaxed),
            deferred = self.stats.deferred.load(Ordering::Relaxed),
            failed = self.stats.failed.load(Ordering::Relaxed),
            released = self.stats.released.load(Ordering::Relaxed),
            "dispatcher stopped"
        );
        result
    }

    /// Announces this daemon and takes its share of the cluster's limits before it sends anything:
    /// the others hear of it at once (PostgreSQL's NOTIFY) and take their smaller shares.
    async fn join_cluster(&self) -> anyhow::Result<()> {
        self.store.heartbeat(&self.instance, Utc::now()).await?;
        self.store.announce_membership().await?;
        let live = self
            .store
            .live_instances(Utc::now(), self.heartbeat_ttl())
            .await?;
        self.limits.set_share(live.len() as u32);
        self.metrics.set_membership(self.limits.share(), false);
        Ok(())
    }

    /// Loads newly running campaigns (with a pre-flight check), forgets stopped ones, completes
    /// finished ones, and settles cancelled ones.
    async fn refresh(&self, active: &mut HashMap<i64, Active>) -> anyhow::Result<()> {
        let campaigns = self.store.campaigns().await?;
        let now = Utc::now();
        for c in &campaigns {
            if let Some(a) = active.get(&c.id) {
                let _ = a.state.send(c.state);
            }
            match c.state {
                CampaignState::Running if !active.contains_key(&c.id) => {
                    let report = preflight::check(&self.store, c).await?;
                    if let Some(problem) = report.problem() {
                        tracing::error!(
                            campaign_id = c.id,
                            "pre-flight failed; pausing the campaign"
                        );
                        let _ = self
                            .store
                            .set_campaign_state(
                                c.id,
                                CampaignState::Paused,
                                &self.actor(),
                                Some(&format!("pre-flight failed: {problem}")),
                            )
                            .await;
                        continue;
                    }
                    let (spec, templates) = preflight::templates_of(c)?;
                    let sender = message::Sender::of(&spec)?;
                    let (state, _) = watch::channel(c.state);
                    active.insert(
                        c.id,
                        Active {
                            spec: Arc::new(spec),
                            sender: Arc::new(sender),
                            templates: Arc::new(templates),
                            content_hash: c.content_hash.clone(),
                            cursor: 0,
                            last_rescan: Instant::now(),
                            idle_until: Instant::now(),
                            gate: crate::campaign::waves::Gate::CLOSED,
                            last_wave_check: Instant::now() - Duration::from_secs(3600),
                            wave_drained: false,
                            state,
                        },
                    );
                    tracing::info!(campaign_id = c.id, "sending for campaign");
                }
                CampaignState::Cancelled => {
                    if self
                        .store
                        .progress(Some(c.id))
                        .await?
                        .first()
                        .is_some_and(|p| p.open() > 0)
                    {
                        let n = self.store.settle_cancelled(c.id, now).await?;
                        if n > 0 {
                            tracing::info!(
                                campaign_id = c.id,
                                recipients = n,
                                "cancelled recipients settled"
                            );
                        }
                    }
                    active.remove(&c.id);
                }
                CampaignState::Running => {}
                _ => {
                    active.remove(&c.id);
                    continue;
                }
            }
            // Waves: at most every two seconds per campaign (the checks cost queries; counting a
            // wave's open members only once its fresh work ran dry).
            if let Some(a) = active.get_mut(&c.id)
                && a.last_wave_check.elapsed() >= Duration::from_secs(2)
            {
                a.gate = crate::campaign::waves::advance(
                    &self.store,
                    c.id,
                    &a.spec,
                    &self.actor(),
                    now,
                    a.wave_drained,
                )
                .await?;
                a.last_wave_check = Instant::now();
                a.wave_drained = false;
                if a.gate == crate::campaign::waves::Gate::CLOSED {
                    a.idle_until =
                        Instant::now() + Duration::from_millis(self.settings.poll_interval_ms);
                }
            }
        }
        Ok(())
    }

    /// One pass over the running campaigns: claim what is due and fits. Returns how many were claimed.
    async fn claim_round(
        &self,
        active: &mut HashMap<i64, Active>,
        in_flight: &Held,
        tasks: &mut JoinSet<()>,
        wiring: &TaskWiring<'_>,
        shutdown: &watch::Receiver<bool>,
    ) -> anyhow::Result<usize> {
        let mut claimed_total = 0;
        let rescan = Duration::from_secs(self.settings.rescan_secs.max(1));
        let lease = Duration::from_secs(self.settings.lease_secs);
        let mut finished = Vec::new();
        for (&campaign_id, a) in active.iter_mut() {
            if *a.state.borrow() != CampaignState::Running {
                continue;
            }
            let held = in_flight.lock().expect("lock").len() as u32;
            let room = self
                .settings
                .max_in_flight
                .saturating_sub(held)
                .min(self.settings.batch_size);
            if room == 0 {
                break;
            }
            if a.idle_until > Instant::now() {
                continue;
            }
            if a.last_rescan.elapsed() >= rescan {
                a.cursor = 0;
                a.last_rescan = Instant::now();
            }
            // A daily cap holds for the cluster: what was sent today and what every live daemon
            // holds for this campaign (this one's from `in_flight`) count against it.
            let now = Utc::now();
            let cap = a.spec.rate.daily_cap.map(|cap| DailyCap {
                cap,
                day_start: now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc(),
                held_here: in_flight.lock().expect("lock").of_campaign(campaign_id),
                live_since: now - self.heartbeat_ttl(),
            });
            let (cursor, upper, instance) = (a.cursor, a.gate.upper, &self.instance.id);
            let claiming = async {
                match &cap {
                    None => {
                        self.store
                            .claim_within(campaign_id, instance, cursor, upper, room, lease, now)
                            .await
                    }
                    Some(cap) => {
                        self.store
                            .claim_capped(
                                campaign_id,
                                instance,
                                cursor,
                                upper,
                                room,
                                lease,
                                now,
                                cap,
                            )
                            .await
                    }
                }
            };
            let mut shutdown = shutdown.clone();
            let claim = tokio::select! {
                claim = claiming => claim?,
                _ = shutdown.wait_for(|stop| *stop) => return Ok(claimed_total),
            };
            a.cursor = claim.cursor;
            if claim.cap_reached {
                a.idle_until = Instant::now() + Duration::from_secs(30);
                continue;
            }
            if claim.exhausted {
                a.wave_drained = true;
                a.idle_until =
                    Instant::now() + Duration::from_millis(self.settings.poll_interval_ms);
            }
            if claim.recipients.is_empty() {
                if claim.exhausted {
                    finished.push(campaign_id);
                }
                continue;
            }
            claimed_total += claim.recipients.len();
            self.stats
                .claimed
                .fetch_add(claim.recipients.len() as u64, Ordering::Relaxed);
            {
                let mut held = in_flight.lock().expect("lock");
                held.hold(campaign_id, claim.recipients.iter().map(|r| r.id));
            }
            tracing::debug!(campaign_id, claimed = claim.recipients.len(), "claimed");
            for r in claim.recipients {
                let job = Delivery {
                    recipient: r,
                    campaign_id,
                    spec: a.spec.clone(),
                    sender: a.sender.clone(),
                    templates: a.templates.clone(),
                    content_hash: a.content_hash.clone(),
                    campaign_state: a.state.subscribe(),
                    stop: wiring.stop.clone(),
                    limits: self.limits.clone(),
                    transport: self.transport.clone(),
                    slots: wiring.slots.clone(),
                    done: wiring.done.clone(),
                    settings: self.settings.clone(),
                    stats: self.stats.clone(),
                    metrics: self.metrics.clone(),
                    dkim: self.dkim.clone(),
                };
                tasks.spawn(job.run());
            }
        }
        for campaign_id in finished {
            self.complete_if_done(campaign_id, in_flight, active)
                .await?;
        }
        Ok(claimed_total)
    }

    /// A running campaign with no open recipient and nothing in flight is completed.
    async fn complete_if_done(
        &self,
        campaign_id: i64,
        in_flight: &Held,
        active: &mut HashMap<i64, Active>,
    ) -> anyhow::Result<()> {
        let Some(p) = self
            .store
            .progress(Some(campaign_id))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(());
        };
        if p.open() > 0
            || p.state != CampaignState::Running
            || !in_flight.lock().expect("lock").is_empty()
        {
            return Ok(());
        }
        match self
            .store
            .set_campaign_state(
                campaign_id,
                CampaignState::Completed,
                &self.actor(),
                Some("every recipient has a final status"),
            )
            .await
        {
            Ok(_) => {
                crate::campaign::waves::finish_all(&self.store, campaign_id, Utc::now()).await?;
                tracing::info!(
                    campaign_id,
                    sent = p.sent,
                    failed = p.failed,
                    postal = p.postal,
                    "campaign completed"
                );
                active.remove(&campaign_id);
            }
            // Another daemon completed it first, or an operator paused it meanwhile.
            Err(crate::store::StoreError::IllegalTransition { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    async fn pause_for_template(&self, campaign_id: i64, recipient_id: i64, message: &str) {
        tracing::error!(
            campaign_id,
            recipient_id,
            "template failed for a recipient; pausing the campaign"
        );
        let reason = format!("template failed for recipient row {recipient_id}: {message}");
        if let Err(e) = self
            .store
            .set_campaign_state(
                campaign_id,
                CampaignState::Paused,
                &self.actor(),
                Some(&reason),
            )
            .await
        {
            tracing::warn!(campaign_id, error = %e, "could not pause the campaign");
        }
    }

    /// A daemon whose heartbeat is older than this is gone: its share of the cluster's limits and
    /// its holds under daily caps go to the others. Two heartbeats.
    fn heartbeat_ttl(&self) -> Duration {
        heartbeat_ttl(&self.settings)
    }

    fn actor(&self) -> String {
        format!("daemon:{}", self.instance.id)
    }
}

/// One recipient's journey through limits, rendering and the transport.
struct Delivery {
    recipient: Recipient,
    campaign_id: i64,
    spec: Arc<CampaignSpec>,
    sender: Arc<message::Sender>,
    templates: Arc<Templates>,
    content_hash: String,
    campaign_state: watch::Receiver<CampaignState>,
    stop: watch::Receiver<bool>,
    limits: Arc<Limits>,
    transport: Transport,
    slots: Arc<Semaphore>,
    done: mpsc::Sender<Finished>,
    settings: DispatchSettings,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    dkim: Option<Arc<lettre::message::dkim::DkimConfig>>,
}

impl Delivery {
    async fn run(mut self) {
        let id = self.recipient.id;
        let release = Finished::Released { recipient_id: id };
        let Some(to) = self.recipient.email.clone() else {
            let _ = self.done.send(release).await;
            return;
        };
        let domain = to
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default();
        let Some(_slot) = self.permits_and_slot(&domain).await else {
            let _ = self.done.send(release).await;
            return;
        };
        if *self.campaign_state.borrow() != CampaignState::Running {
            let _ = self.done.send(release).await;
            return;
        }
        let rendered = match self.templates.render(&self.recipient) {
            Ok(r) => r,
            Err(e) => {
                let _ = self
                    .done
                    .send(Finished::TemplateFailed {
                        campaign_id: self.campaign_id,
                        recipient_id: id,
                        message: e.to_string(),
                    })
                    .await;
                return;
            }
        };
        let started_at = Utc::now();
        let (outcome, code, reply, message_id) = match self.sender.build(
            &self.content_hash,
            self.campaign_id,
            id,
            &to,
            &rendered,
            self.dkim.as_deref(),
        ) {
            Ok(out) => {
                let sending = Instant::now();
                // Boxed: the transport's future (lettre's connection and TLS state inline) is most
                // of 10 KB, and a task's future is copied whole when it is spawned, finished and
                // collected. Boxing it keeps every queued delivery task small.
                let name = format!("{}-{}", self.campaign_id, id);
                let d = Box::pin(self.transport.send(&out, &name)).await;
                self.metrics.send_latency(sending.elapsed());
                (d.outcome, d.code, d.reply, out.message_id)
            }
            // The stored address no longer parses (it did at import): nothing can ever be sent.
            Err(e) => (
                AttemptOutcome::Permanent,
                None,
                e.to_string(),
                message::message_id(&self.content_hash, self.campaign_id, id, "invalid"),
            ),
        };
        let finished_at = Utc::now();
        let next = next_state(
            &self.settings,
            &self.recipient,
            outcome,
            code,
            &reply,
            finished_at,
        );
        match (&outcome, &next) {
            (AttemptOutcome::Sent, _) => {
                self.limits.delivered(&domain);
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .attempt(self.campaign_id, &domain, Outcome::Sent);
            }
            (_, NextState::Retry { .. }) => {
                if is_throttling(code, &reply) {
                    self.limits.throttled(&domain);
                }
                self.stats.deferred.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .attempt(self.campaign_id, &domain, Outcome::Deferred);
            }
            _ => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .attempt(self.campaign_id, &domain, Outcome::Failed);
            }
        }
        tracing::debug!(recipient_id = id, campaign_id = self.campaign_id, outcome = %outcome, code, "attempt");
        let record = AttemptRecord {
            recipient_id: id,
            campaign_id: self.campaign_id,
            started_at,
            finished_at,
            outcome,
            smtp_code: code,
            reply: Some(truncate(&reply, 1000)),
            message_id,
            next,
        };
        let _ = self.done.send(Finished::Attempted(record)).await;
    }
}

impl Delivery {
    /// Waits for the rate-limit permits, then for a send slot; `None` if the daemon stops or the
    /// campaign stops running first. A message whose permits went stale waiting for a slot (the relay
    /// was slow and every slot busy) takes them again: sending on old permits after a stall would
    /// release in one burst everything the limits had spread out.
    async fn permits_and_slot(
        &mut self,
        domain: &str,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        loop {
            let permits = tokio::select! {
                p = self.limits.acquire(domain, self.campaign_id, &self.spec.rate) => p,
                _ = self.stop.wait_for(|s| *s) => return None,
                // Paused or cancelled before this notice left: give it back untouched.
                _ = self.campaign_state.wait_for(|s| *s != CampaignState::Running) => return None,
            };
            if permits.waited > Duration::from_millis(1) {
                self.stats.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
                self.metrics.rate_limit_wait(permits.waited);
            }
            let granted = Instant::now();
            let slot = tokio::select! {
                p = self.slots.clone().acquire_owned() => p.ok()?,
                _ = self.stop.wait_for(|s| *s) => return None,
            };
            if granted.elapsed() <= permits.lifetime {
                return Some(slot);
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What an attempt's outcome means for the recipient: sent; failed (5xx, or temporary failures for
/// longer than `give_up_hours` since the first attempt: reason `expired`); or retry after an
/// exponential backoff with jitter.
pub fn next_state(
    settings: &DispatchSettings,
    recipient: &Recipient,
    outcome: AttemptOutcome,
    code: Option<i32>,
    reply: &str,
    now: DateTime<Utc>,
) -> NextState {
    match outcome {
        AttemptOutcome::Sent => NextState::Sent,
        AttemptOutcome::Permanent => {
            let code = code.map(|c| format!("{c} ")).unwrap_or_default();
            NextState::Failed {
                reason: format!("permanent: {}", truncate(&format!("{code}{reply}"), 300)),
            }
        }
        AttemptOutcome::Transient | AttemptOutcome::Ambiguous => {
            let first = recipient.first_attempt_at.unwrap_or(now);
            let give_up = chrono::Duration::hours(settings.give_up_hours as i64);
            if now - first >= give_up {
                return NextState::Failed {
                    reason: "expired".into(),
                };
            }
            let delay = backoff(settings, recipient.attempts as u32, &mut rand::rng());
            NextState::Retry {
                at: now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1)),
            }
        }
    }
}

/// `base × 2^attempts`, capped, times a jitter in [0.5, 1.0] so that retries of one wave spread out.
/// Saturating: no overflow whatever the attempt count.
pub fn backoff(settings: &DispatchSettings, attempts_before: u32, rng: &mut impl Rng) -> Duration {
    let exp = 1u64
        .checked_shl(attempts_before.min(32))
        .unwrap_or(u64::MAX);
    let secs = settings
        .retry_base_secs
        .saturating_mul(exp)
        .min(settings.retry_cap_secs.max(1));
    let jitter = rng.random_range(0.5..=1.0);
    Duration::from_secs_f64((secs as f64 * jitter).max(1.0))
}

/// Wakes the main loop on every campaign state change (PostgreSQL `LISTEN`), reconnecting as needed.
/// Wakes the main loop when a campaign changes state and the membership loop when a daemon joins
/// or leaves (PostgreSQL's LISTEN; both payloads carry ids and states only). `listening` is told once
/// the first LISTEN is in place.
async fn listen_for_changes(
    pool: sqlx::PgPool,
    wake: Arc<tokio::sync::Notify>,
    members_changed: Arc<tokio::sync::Notify>,
    listening: tokio::sync::oneshot::Sender<()>,
) {
    let mut listening = Some(listening);
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen_all([
                "breach_notifier_campaigns",
                crate::store::MEMBERSHIP_CHANNEL,
            ])
            .await?;
            if let Some(listening) = listening.take() {
                let _ = listening.send(());
            }
            // Whatever changed while no one listened: count again.
            members_changed.notify_one();
            loop {
                let n = l.recv().await?;
                if n.channel() == crate::store::MEMBERSHIP_CHANNEL {
                    members_changed.notify_one();
                } else {
                    wake.notify_one();
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        if let Err(e) = listener.await {
            tracing::warn!(error = %e, "change listener lost; polling meanwhile");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn record_loop(
    store: Store,
    instance: String,
    mut rx: mpsc::Receiver<Finished>,
    in_flight: Held,
    pause: mpsc::UnboundedSender<(i64, i64, String)>,
    stats: Arc<Stats>,
    flush_max: usize,
    flush_every: Duration,
) -> anyhow::Result<()> {
    let mut records: Vec<AttemptRecord> = Vec::new();
    let mut releases: Vec<i64> = Vec::new();
    let mut closed = false;
    while !closed {
        let deadline = tokio::time::sleep(flush_every);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(Finished::Attempted(r)) => records.push(r),
                    Some(Finished::Released { recipient_id }) => releases.push(recipient_id),
                    Some(Finished::TemplateFailed { campaign_id, recipient_id, message }) => {
                        releases.push(recipient_id);
                        let _ = pause.send((campaign_id, recipient_id, message));
                    }
                    None => { closed = true; break; }
                },
                _ = &mut deadline => break,
            }
            if records.len() + releases.len() >= flush_max {
                break;
            }
        }
        // Outcomes must reach the database: retry until they do (the database may be restarting).
        let mut delay = Duration::from_millis(200);
        while !records.is_empty() || !releases.is_empty() {
            let result = async {
                if !records.is_empty() {
                    store.record_attempts(&instance, &records).await?;
                }
                if !releases.is_empty() {
                    let n = store.release_leases(&instance, &releases).await?;
                    stats.released.fetch_add(n, Ordering::Relaxed);
                }
                Ok::<_, crate::store::StoreError>(())
            }
            .await;
            match result {
                Ok(()) => {
                    let mut held = in_flight.lock().expect("lock");
                    for r in &records {
                        held.finish(r.recipient_id);
                    }
                    for id in &releases {
                        held.finish(*id);
                    }
                    records.clear();
                    releases.clear();
                }
                Err(e) => {
                    tracing::warn!(error = %e, pending = records.len() + releases.len(), "cannot record outcomes yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn housekeeping_loop(
    store: Store,
    instance: InstanceInfo,
    in_flight: Held,
    limits: Arc<Limits>,
    settings: DispatchSettings,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    mut stop: watch::Receiver<bool>,
    mut quit: watch::Receiver<bool>,
) {
    let every = Duration::from_secs(settings.heartbeat_secs);
    let lease = chrono::Duration::seconds(settings.lease_secs as i64);
    let mut last_renewal = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
            _ = quit.changed() => {}
        }
        // Quit between rounds, never inside one: a heartbeat landing after the daemon marked itself
        // stopped would revive it.
        if *quit.borrow() {
            break;
        }
        let now = Utc::now();
        // Queue depth from the campaign counters: one row per campaign, O(1) each.
        match store.progress(None).await {
            Ok(progress) => metrics.set_queue_depth(
                progress
                    .iter()
                    .filter(|p| {
                        matches!(
                            p.state,
                            CampaignState::Draft | CampaignState::Running | CampaignState::Paused
                        )
                    })
                    .map(|p| (p.campaign_id, p.open())),
            ),
            Err(e) => tracing::warn!(error = %e, "cannot read campaign progress for metrics"),
        }
        let held = in_flight.lock().expect("lock").len();
        metrics.set_in_flight(held);
        notifier.status(&format!(
            "{}sent {}, deferred {}, failed {}, in flight {held}",
            if *stop.borrow() { "stopping: " } else { "" },
            stats.sent.load(Ordering::Relaxed),
            stats.deferred.load(Ordering::Relaxed),
            stats.failed.load(Ordering::Relaxed),
        ));
        limits.forget_idle(Duration::from_secs(600));
        // Renew leases every third of their length (and during the drain, so none lapses).
        if last_renewal.elapsed() >= Duration::from_secs(settings.lease_secs / 3) || *stop.borrow()
        {
            let ids: Vec<i64> = in_flight.lock().expect("lock").ids();
            if !ids.is_empty() {
                match store.renew_leases(&instance.id, &ids, now + lease).await {
                    Ok(n) => {
                        stats.lease_renewals.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                }
            }
            last_renewal = Instant::now();
        }
    }
}

fn heartbeat_every(settings: &DispatchSettings) -> Duration {
    Duration::from_secs(settings.heartbeat_secs.max(1))
}

fn heartbeat_ttl(settings: &DispatchSettings) -> Duration {
    heartbeat_every(settings) * 2
}

/// Keeps this daemon counted among the live ones and its share of the cluster's limits current:
/// a heartbeat every `every`, and a recount of the live daemons after each one and whenever another
/// daemon announces itself or its departure. Runs apart from the rest of housekeeping so that slow
/// queries there never delay a heartbeat.
///
/// The others count this daemon dead once its heartbeat is two intervals old and take its share; if
/// its heartbeat cannot be written for most of that time, it stops sending (closes its limiters)
/// until a heartbeat gets through, so the cluster never sends its share twice.
async fn membership_loop(
    store: Store,
    instance: InstanceInfo,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    every: Duration,
    members_changed: Arc<tokio::sync::Notify>,
    mut quit: watch::Receiver<bool>,
) {
    let ttl = every * 2;
    let mut last_beat = Instant::now();
    let mut next_beat = tokio::time::Instant::now() + every;
    loop {
        let beat = tokio::select! {
            _ = tokio::time::sleep_until(next_beat) => true,
            _ = members_changed.notified() => false,
            _ = quit.changed() => false,
        };
        // Quit between rounds, never inside one: a heartbeat landing after the daemon marked itself
        // stopped would revive it.
        if *quit.borrow() {
            break;
        }
        if beat {
            next_beat += every;
            let (now, started) = (Utc::now(), Instant::now());
            match tokio::time::timeout(every, store.heartbeat(&instance, now)).await {
                Ok(Ok(())) => {
                    // The others see the time written, not the time the write returned.
                    last_beat = started;
                    metrics.heartbeat(now);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
                Err(_) => tracing::warn!("heartbeat timed out"),
            }
        }
        let fenced = last_beat.elapsed() > ttl * 3 / 4;
        if fenced {
            tracing::warn!(
                "no heartbeat for {:?}: not sending until one gets through",
                last_beat.elapsed()
            );
        }
        limits.set_fenced(fenced);
        match tokio::time::timeout(every, store.live_instances(Utc::now(), ttl)).await {
            Ok(Ok(live)) => {
                limits.set_share(live.len() as u32);
                metrics.set_membership(limits.share(), fenced);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot count live daemons"),
            Err(_) => tracing::warn!("counting live daemons timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_never_overflows() {
        let s = DispatchSettings {
            retry_base_secs: 300,
            retry_cap_secs: 3600,
            ..Default::default()
        };
        let mut rng = rand::rng();
        for attempts in [0u32, 1, 2, 3, 10, 63, 64, 1000, u32::MAX] {
            let d = backoff(&s, attempts, &mut rng).as_secs_f64();
            let full = (300.0 * 2f64.powi(attempts.min(40) as i32)).min(3600.0);
            assert!(
                d >= full * 0.5 - 1e-6 && d <= full + 1e-6,
                "attempts {attempts}: {d}"
            );
        }
    }
}
