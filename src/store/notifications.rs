//! Changes other processes announce, heard at once (PostgreSQL's LISTEN): a campaign changed state
//! (the campaigns trigger NOTIFYs every change, so pause, resume and cancel from the CLI or SQL take
//! effect at once), or a daemon joined or left ([`MEMBERSHIP_CHANNEL`]). Both payloads carry ids and
//! states only. SQLite has one daemon and no LISTEN: the caller polls, as it does anyway, since a
//! listener that reconnects misses what was sent meanwhile.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::{MEMBERSHIP_CHANNEL, Store};

/// The channel the campaigns trigger notifies on every state change.
const CAMPAIGNS_CHANNEL: &str = "breach_notifier_campaigns";

/// A listener running in the background, reconnecting as needed; stops when dropped.
#[derive(Debug)]
pub struct ChangeNotifications {
    /// Notified when a campaign changes state.
    pub campaigns: Arc<Notify>,
    /// Notified when a daemon joins or leaves, and after every (re)connection, since whatever changed
    /// while no one listened was missed.
    pub members: Arc<Notify>,
    listening: Option<oneshot::Receiver<()>>,
    task: JoinHandle<()>,
}

impl Drop for ChangeNotifications {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChangeNotifications {
    /// Waits at most `limit` for the first LISTEN to be in place; false if it is not yet.
    pub async fn listening(&mut self, limit: Duration) -> bool {
        match self.listening.take() {
            Some(ready) => matches!(tokio::time::timeout(limit, ready).await, Ok(Ok(()))),
            None => true,
        }
    }
}

impl Store {
    /// Starts listening for changes; `None` on SQLite. Start it before counting the other daemons:
    /// one that registers after the count is then heard.
    pub fn change_notifications(&self) -> Option<ChangeNotifications> {
        let Store::Postgres(pg) = self else {
            return None;
        };
        let (campaigns, members) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (ready, listening) = oneshot::channel();
        let task = tokio::spawn(listen(
            pg.pool().clone(),
            campaigns.clone(),
            members.clone(),
            ready,
        ));
        Some(ChangeNotifications {
            campaigns,
            members,
            listening: Some(listening),
            task,
        })
    }
}

/// Listens on both channels until dropped, reconnecting after two seconds when the connection is
/// lost. `ready` is told once the first LISTEN is in place.
async fn listen(
    pool: sqlx::PgPool,
    campaigns: Arc<Notify>,
    members: Arc<Notify>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        let lost = listen_once(&pool, &campaigns, &members, &mut ready).await;
        tracing::warn!(error = %lost, "change listener lost; polling meanwhile");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// One connection's listening, until it fails.
async fn listen_once(
    pool: &sqlx::PgPool,
    campaigns: &Notify,
    members: &Notify,
    ready: &mut Option<oneshot::Sender<()>>,
) -> sqlx::Error {
    let mut l = match sqlx::postgres::PgListener::connect_with(pool).await {
        Ok(l) => l,
        Err(e) => return e,
    };
    if let Err(e) = l.listen_all([CAMPAIGNS_CHANNEL, MEMBERSHIP_CHANNEL]).await {
        return e;
    }
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }
    // Whatever changed while no one listened: count again.
    members.notify_one();
    loop {
        match l.recv().await {
            Ok(n) if n.channel() == MEMBERSHIP_CHANNEL => members.notify_one(),
            Ok(_) => campaigns.notify_one(),
            Err(e) => return e,
        }
    }
}
