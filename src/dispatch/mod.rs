//! The dispatcher: `breach-notifier run`. Claims due recipients of running campaigns with a lease,
//! sends outside any transaction, records every outcome, and never loses anyone.
//!
//! Shape of one daemon: named roles around one shared context (`Shared`: store, transport, settings,
//! limits, metrics, DKIM key, the recipients held, this instance):
//! - the **main loop** (here) refreshes the campaigns (`campaigns.rs`: pause, resume and cancel take
//!   effect at the next turn, at most `poll_interval_ms` later), claims batches while fewer than
//!   `max_in_flight` recipients are held (`claim.rs`), and spawns one task per claimed recipient;
//! - each **delivery task** (`delivery.rs`) waits for its rate-limit permits (domain, campaign and
//!   global, taken at one instant; a domain waiting for its limit never holds up another), takes one
//!   of `concurrency` send slots, renders, sends, and hands the outcome to the recorder; what an outcome means for the recipient (retry, backoff) is
//!   decided by the pure functions of `retry.rs`;
//! - the **recorder** (`recorder.rs`) writes outcomes in batches (`record_attempts`: attempt rows plus
//!   status changes in one transaction) and gives back leases of recipients that were not attempted;
//! - **membership** (`membership.rs`) writes the heartbeat and keeps this daemon's share of the
//!   cluster-wide limits current (recounting at every heartbeat and whenever another daemon announces
//!   that it joined or left); it stops the daemon's sending while its heartbeat cannot be written;
//! - **bounces** (`bounces.rs`) reads the Maildir, processes stored bounce reports and refreshes the
//!   domains held by the bounce guard, whose recipients delivery tasks park instead of sending;
//! - **housekeeping** (`housekeeping.rs`) renews the leases still held, the queue-depth gauges of
//!   [`crate::ops::metrics`], and the systemd status line.
//!
//! Stopping is one [`CancellationToken`] per step (`Stop`): the signal (claim no more), the drain
//! (deliveries not yet sending give their recipient back), the end of the drain time (sends still
//! running are dropped), and the quit of membership and housekeeping, which comes only after every
//! outcome is recorded and the rest released, so that no heartbeat lands after `instance_stopped`.
//!
//! Observability: [`Metrics`] counts each outcome once, by campaign and domain, with this run's totals
//! in [`Stats`] (logs, status line, tests), plus the send latency and gauges for `/metrics`;
//! [`Notifier`] reports to systemd (`STATUS=` every heartbeat, `STOPPING=1` when the drain begins) and
//! [`Liveness`] is beaten at every turn of the main loop for the watchdog. Logs carry ids only: the
//! claim, delivery and record paths run in spans naming the campaign and recipient rows.
//!
//! Crash safety comes from the order of events: a recipient is leased before it is sent and changes
//! status only after the outcome is known. A crash between the two leaves a lease that expires; the
//! recipient is then due again and is sent a second time with the same Message-ID. Only recipients
//! held at the moment of the crash can be duplicated, so at most `max_in_flight`.
//!
//! **Layer: dispatch.** Owns the daemon's work and its rate [`limits`]. Uses the campaigns layer (spec,
//! templates, message, waves), the transport, the store and the operations layer (metrics, systemd
//! notification); used only by the command line.

mod bounces;
mod campaigns;
mod claim;
mod delivery;
mod housekeeping;
mod in_flight;
pub(crate) mod limits;
mod membership;
mod recorder;
pub(crate) mod retry;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lettre::message::dkim::DkimConfig;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{DispatchSettings, Settings};
use crate::ops::metrics::Metrics;
pub use crate::ops::metrics::Stats;
use crate::ops::notify::{Liveness, Notifier};
use crate::store::{InstanceInfo, Store};
use crate::transport::Transport;
use campaigns::{Campaigns, TemplateFailure};
use delivery::{DeliveryTask, Finished};
use housekeeping::Housekeeping;
use in_flight::InFlight;
use limits::Limits;
use membership::Membership;
use recorder::Recorder;
pub use retry::{backoff, next_state};

/// When the daemon stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Until a shutdown signal (the service).
    Forever,
    /// Until no campaign is running and nothing is in flight (the demo, tests).
    UntilIdle,
}

/// What every role of the daemon shares, behind one `Arc`.
struct Shared {
    store: Store,
    transport: Transport,
    settings: DispatchSettings,
    limits: Limits,
    metrics: Arc<Metrics>,
    dkim: Option<DkimConfig>,
    /// The recipients this daemon holds: claimed, outcome not yet recorded.
    in_flight: InFlight,
    instance: InstanceInfo,
    /// `concurrency` of them: a delivery task holds one from its send to the hand-over of its outcome.
    send_slots: Semaphore,
    /// The envelope sender's VERP signing, when `[bounces]` configures it.
    verp: Option<crate::campaign::message::Verp>,
    /// (campaign, receiving domain) pairs held by the bounce guard: their recipients are parked.
    guards: std::sync::RwLock<HashSet<(i64, String)>>,
}

impl Shared {
    fn heartbeat_every(&self) -> Duration {
        Duration::from_secs(self.settings.heartbeat_secs.max(1))
    }

    /// A daemon whose heartbeat is older than this is gone: its share of the cluster's limits and
    /// its holds under daily caps go to the others. Two heartbeats.
    fn heartbeat_ttl(&self) -> Duration {
        self.heartbeat_every() * 2
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.settings.poll_interval_ms)
    }

    /// Whether the bounce guard holds this campaign's receiving domain.
    fn guarded(&self, campaign_id: i64, domain: &str) -> bool {
        let guards = self.guards.read().unwrap_or_else(|e| e.into_inner());
        !guards.is_empty() && guards.contains(&(campaign_id, domain.to_ascii_lowercase()))
    }

    /// Who changes a campaign's state, in its events.
    fn actor(&self) -> String {
        format!("daemon:{}", self.instance.id)
    }
}

/// The daemon's stop, one token per step, in the order they are cancelled. Each token is a child of
/// the next, so a later step implies the earlier ones, and dropping the guard of `quit` (an early
/// return from `run`) stops everything.
#[derive(Clone)]
struct Stop {
    /// The shutdown signal (or, in [`RunMode::UntilIdle`], the end of the work): claim no more. A
    /// claim still running is abandoned, and cancelled in the database.
    signal: CancellationToken,
    /// The drain began: delivery tasks waiting for permits or a send slot give their recipient back;
    /// housekeeping renews the leases at every round.
    drain: CancellationToken,
    /// The drain time is over: sends still running are dropped, their recipients released.
    abort: CancellationToken,
    /// Every outcome is recorded and the rest released: membership and housekeeping end between
    /// rounds.
    quit: CancellationToken,
}

impl Stop {
    /// The tokens, and a task that cancels `signal` when `shutdown` turns true.
    fn new(mut shutdown: watch::Receiver<bool>) -> Stop {
        let quit = CancellationToken::new();
        let abort = quit.child_token();
        let drain = abort.child_token();
        let signal = drain.child_token();
        let on_signal = signal.clone();
        tokio::spawn(async move {
            tokio::select! {
                Ok(_) = shutdown.wait_for(|stop| *stop) => on_signal.cancel(),
                // The run ended first (or the sender is gone and nothing will come).
                _ = on_signal.cancelled() => {}
            }
        });
        Stop {
            signal,
            drain,
            abort,
            quit,
        }
    }
}

/// What the claim round needs to start delivery tasks: where they report, the tracker the drain
/// waits on, and the stop.
struct Wiring {
    done: mpsc::Sender<Finished>,
    tasks: TaskTracker,
    stop: Stop,
}

impl Wiring {
    fn spawn(&self, task: DeliveryTask) {
        let abort = self.stop.abort.clone();
        self.tasks.spawn(async move {
            abort.run_until_cancelled(task.run()).await;
        });
    }
}

/// The tasks that run beside the main loop for the whole run.
struct Crew {
    recorder: JoinHandle<anyhow::Result<()>>,
    housekeeping: JoinHandle<()>,
    membership: JoinHandle<()>,
    bounces: JoinHandle<()>,
}

/// The dispatcher of one daemon.
pub struct Dispatcher {
    shared: Arc<Shared>,
    /// This run's totals (the same as `metrics.stats()`).
    pub stats: Arc<Stats>,
    /// The registry: labelled counters, latency and gauges for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// systemd notifications (`STATUS=` every heartbeat, `STOPPING=1`); disabled unless `run` sets it.
    notifier: Notifier,
    /// Beaten at every turn of the main loop, for the watchdog.
    liveness: Arc<Liveness>,
    /// `[bounces]`: the Maildir, the guard, the VERP keys.
    bounce_settings: crate::config::BounceSettings,
}

impl Dispatcher {
    pub fn new(store: Store, transport: Transport, settings: &Settings) -> anyhow::Result<Self> {
        let d = &settings.dispatch;
        let metrics = Arc::new(Metrics::new());
        let shared = Shared {
            store,
            transport,
            settings: d.clone(),
            limits: Limits::new(settings.limits.clone()),
            metrics: metrics.clone(),
            dkim: crate::campaign::message::load_dkim(settings.dkim.as_ref())?,
            in_flight: InFlight::default(),
            instance: instance_info(d),
            send_slots: Semaphore::new(d.concurrency as usize),
            verp: crate::campaign::message::Verp::of(&settings.bounces),
            guards: Default::default(),
        };
        Ok(Dispatcher {
            shared: Arc::new(shared),
            stats: metrics.stats().clone(),
            metrics,
            notifier: Notifier::disabled(),
            liveness: Arc::default(),
            bounce_settings: settings.bounces.clone(),
        })
    }

    /// Reports to systemd through `notifier` (status every heartbeat, `STOPPING=1`) and beats
    /// `liveness` at every turn of the main loop (the watchdog watches it).
    pub fn with_notifier(mut self, notifier: Notifier, liveness: Arc<Liveness>) -> Self {
        self.notifier = notifier;
        self.liveness = liveness;
        self
    }

    /// Who this daemon is, as its heartbeat says.
    pub fn instance(&self) -> &InstanceInfo {
        &self.shared.instance
    }

    /// Runs until `shutdown` turns true (or, in [`RunMode::UntilIdle`], until there is nothing to do).
    pub async fn run(&self, mode: RunMode, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let shared = &self.shared;
        // SQLite allows one daemon per database: a lock the kernel releases if this process dies,
        // held until `run` returns (store::daemon_lock). None on PostgreSQL.
        let _daemon_lock = shared.store.daemon_lock(&shared.instance.id)?;
        // PostgreSQL: pause, resume and cancel wake the loop at once, and daemons announce joining
        // and leaving; polling stays as the fallback, since a listener that reconnects misses what
        // was sent meanwhile. Listening starts before this daemon counts the others: one that
        // registers after the count is heard. Dropping `changes` stops the listener.
        let mut changes = shared.store.change_notifications();
        if let Some(c) = &mut changes
            && !c.listening(Duration::from_secs(5)).await
        {
            tracing::warn!("not listening for other daemons yet; counting them every heartbeat");
        }
        self.join_cluster().await?;
        tracing::info!(instance = %shared.instance.id, backend = %shared.store.backend(), share = shared.limits.share(), "dispatcher started");
        let (wake, members_changed) = match &changes {
            Some(c) => (c.campaigns.clone(), c.members.clone()),
            None => Default::default(),
        };

        let stop = Stop::new(shutdown);
        let quit = stop.quit.clone();
        let _stop_all = quit.clone().drop_guard();
        let (done, outcomes) = mpsc::channel(shared.settings.max_in_flight as usize + 16);
        let (template_failures, mut failed) = mpsc::unbounded_channel();
        let crew = self.start_crew(&stop, outcomes, template_failures, members_changed);
        let wiring = Wiring {
            done,
            tasks: TaskTracker::new(),
            stop,
        };
        self.main_loop(mode, &wiring, &mut failed, &wake).await;

        self.drain(wiring).await;
        let recorded = crew
            .recorder
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("recorder task: {e}")));
        self.release_leftover().await?;
        // Only now: a heartbeat landing after `instance_stopped` would revive this daemon.
        quit.cancel();
        let _ = crew.housekeeping.await;
        let _ = crew.membership.await;
        let _ = crew.bounces.await;
        drop(changes);
        self.leave().await?;
        recorded
    }

    /// Announces this daemon and takes its share of the cluster's limits before it sends anything:
    /// the others hear of it at once (PostgreSQL's NOTIFY) and take their smaller shares.
    async fn join_cluster(&self) -> anyhow::Result<()> {
        let shared = &self.shared;
        shared.store.heartbeat(&shared.instance, Utc::now()).await?;
        shared.store.announce_membership().await?;
        let live = shared
            .store
            .live_instances(Utc::now(), shared.heartbeat_ttl())
            .await?;
        shared.limits.set_share(live.len() as u32);
        self.metrics.set_membership(shared.limits.share(), false);
        // The bounce guard's held domains, before the first claim: none of their notices may leave.
        bounces::refresh_guards(shared).await?;
        Ok(())
    }

    /// Starts the recorder, housekeeping and membership.
    fn start_crew(
        &self,
        stop: &Stop,
        outcomes: mpsc::Receiver<Finished>,
        template_failures: mpsc::UnboundedSender<TemplateFailure>,
        members_changed: Arc<Notify>,
    ) -> Crew {
        let shared = &self.shared;
        let recorder = Recorder {
            shared: shared.clone(),
            outcomes,
            template_failures,
        };
        let housekeeping = Housekeeping {
            shared: shared.clone(),
            notifier: self.notifier.clone(),
            draining: stop.drain.clone(),
            quit: stop.quit.clone(),
        };
        let membership = Membership {
            shared: shared.clone(),
            members_changed,
            quit: stop.quit.clone(),
        };
        let bounces = bounces::Bounces {
            shared: shared.clone(),
            settings: self.bounce_settings.clone(),
            quit: stop.quit.clone(),
        };
        Crew {
            bounces: tokio::spawn(bounces.run()),
            recorder: tokio::spawn(recorder.run()),
            housekeeping: tokio::spawn(housekeeping.run()),
            membership: tokio::spawn(membership.run()),
        }
    }

    /// Refreshes the campaigns, claims and starts delivery tasks until the shutdown signal (or, in
    /// [`RunMode::UntilIdle`], until no campaign runs and nothing is in flight).
    async fn main_loop(
        &self,
        mode: RunMode,
        wiring: &Wiring,
        template_failures: &mut mpsc::UnboundedReceiver<TemplateFailure>,
        wake: &Notify,
    ) {
        let (shared, signal) = (&self.shared, &wiring.stop.signal);
        let mut campaigns = Campaigns::default();
        let poll = shared.poll_interval();
        let mut last_refresh = Instant::now() - poll;
        loop {
            self.liveness.beat();
            shared.metrics.set_in_flight(shared.in_flight.len());
            if signal.is_cancelled() {
                break;
            }
            while let Ok(failure) = template_failures.try_recv() {
                failure.pause_campaign(shared).await;
            }
            if last_refresh.elapsed() >= poll.min(Duration::from_millis(500)) {
                if let Err(e) = campaigns.refresh(shared).await {
                    tracing::warn!(error = %format!("{e:#}"), "cannot refresh campaigns; retrying");
                    let _ = signal.run_until_cancelled(tokio::time::sleep(poll)).await;
                    continue;
                }
                last_refresh = Instant::now();
            }
            let claimed = claim::round(shared, &mut campaigns, wiring)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %format!("{e:#}"), "claiming failed; retrying");
                    0
                });
            if claimed > 0 {
                continue;
            }
            let idle =
                campaigns.is_empty() && shared.in_flight.is_empty() && wiring.tasks.is_empty();
            if mode == RunMode::UntilIdle && idle {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(poll.min(Duration::from_millis(200))) => {}
                _ = signal.cancelled() => {}
                _ = wake.notified() => last_refresh = Instant::now() - poll,
            }
        }
    }

    /// Shutdown: stop claiming, let in-flight sends finish within the drain time, drop the rest, and
    /// close the recorder's channel. The drain has its own bound (drain_secs, and systemd's
    /// TimeoutStopSec): no watchdog for it.
    async fn drain(&self, wiring: Wiring) {
        self.liveness.unwatch();
        match self.shared.store.cancel_claims().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(claims = n, "stopping: cancelled claims still running"),
            Err(e) => tracing::warn!(error = %e, "stopping: cannot cancel running claims"),
        }
        let held = self.shared.in_flight.len();
        self.notifier
            .stopping(&format!("stopping: draining {held} in flight"));
        tracing::info!(in_flight = held, "stopping: draining in-flight work");
        let Wiring { done, tasks, stop } = wiring;
        stop.drain.cancel();
        tasks.close();
        let drain = Duration::from_secs(self.shared.settings.drain_secs);
        if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
            tracing::warn!(
                "drain time over: aborting sends still running; their recipients are released"
            );
            stop.abort.cancel();
            tasks.wait().await;
        }
        drop(done);
    }

    /// Gives back the leases of recipients whose outcome never came (sends dropped at the end of the
    /// drain).
    async fn release_leftover(&self) -> anyhow::Result<()> {
        let leftover = self.shared.in_flight.drain();
        if !leftover.is_empty() {
            let n = self
                .shared
                .store
                .release_leases(&self.shared.instance.id, &leftover)
                .await?;
            self.metrics.released(n);
        }
        Ok(())
    }

    /// Marks this daemon stopped, and tells the others: they take its share now rather than when its
    /// heartbeat expires.
    async fn leave(&self) -> anyhow::Result<()> {
        let store = &self.shared.store;
        store
            .instance_stopped(&self.shared.instance.id, Utc::now())
            .await?;
        if let Err(e) = store.announce_membership().await {
            tracing::warn!(error = %e, "cannot tell the other daemons that this one stopped");
        }
        let stats = self.metrics.stats();
        let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            sent = load(&stats.sent),
            deferred = load(&stats.deferred),
            failed = load(&stats.failed),
            released = load(&stats.released),
            "dispatcher stopped"
        );
        Ok(())
    }
}

/// This daemon's identity: `dispatch.instance_id`, or `HOSTNAME-PID`.
fn instance_info(settings: &DispatchSettings) -> InstanceInfo {
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
    let id = if settings.instance_id.is_empty() {
        format!("{hostname}-{pid}")
    } else {
        settings.instance_id.clone()
    };
    InstanceInfo {
        id,
        hostname,
        pid: pid as i32,
        version: env!("CARGO_PKG_VERSION").into(),
    }
}
