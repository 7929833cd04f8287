//! The probes and the scrape: `/healthz`, `/readyz` and `/metrics`, with the cached readiness check.
//!
//! - `GET /healthz`: 200 while the process serves requests (liveness).
//! - `GET /readyz`: 200 when the database answers a `SELECT 1` and the transport passes
//!   [`Transport::check`] on a fresh connection (a pooled one can survive an outage of the relay); 503
//!   with the reasons otherwise, and once the shutdown began. The result is cached for
//!   [`READY_CACHE`], so a busy prober costs the relay one connection per few seconds at most.
//! - `GET /metrics`: [`Metrics::render`](crate::ops::metrics::Metrics::render), Prometheus text
//!   format 0.0.4.
//!
//! HEAD is answered on each, without the body (axum's `get` routes HEAD to the same handler). The
//! routes only read the shared [`AppState`]; the server, its limits and the headers every response
//! carries are in the parent module.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::config::TransportSettings;
use crate::store::Store;
use crate::transport::Transport;

/// How long a readiness result is reused.
pub const READY_CACHE: Duration = Duration::from_secs(3);
/// The longest one readiness check (database and transport, in parallel) may take.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The routes of this module, to be merged into the daemon's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if *state.stopping.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: stopping\n").into_response();
    }
    match state.readiness.check().await {
        Ok(()) => "ready\n".into_response(),
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.replace(['\r', '\n'], " ")),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response()
}

/// Database and transport reachability, checked at most every [`READY_CACHE`].
pub struct Readiness {
    store: Store,
    transport: TransportSettings,
    /// The last result and when it was taken. A tokio mutex, held across the check on purpose:
    /// concurrent probers wait for the one check in progress instead of each starting another.
    cache: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    pub fn new(store: Store, transport: TransportSettings) -> Self {
        Readiness {
            store,
            transport,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// `Ok` when both answer; otherwise every problem, joined on one line. Concurrent callers wait
    /// for one check.
    pub async fn check(&self) -> Result<(), String> {
        let mut cache = self.cache.lock().await;
        if let Some((at, result)) = &*cache
            && at.elapsed() < READY_CACHE
        {
            return result.clone();
        }
        let result = self.probe().await;
        *cache = Some((Instant::now(), result.clone()));
        result
    }

    async fn probe(&self) -> Result<(), String> {
        let database = answer("database", self.store.ping());
        // A transport of its own, dropped afterwards: the check then opens a new connection.
        let transport = answer("transport", async {
            Transport::from_settings(&self.transport)?.check().await
        });
        let (database, transport) = tokio::join!(database, transport);
        let problems: Vec<String> = [database, transport]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// `what` answered within [`READY_TIMEOUT`], or the problem named after it.
async fn answer<E: std::fmt::Display>(
    what: &str,
    check: impl Future<Output = Result<(), E>>,
) -> Result<(), String> {
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{what}: {e:#}")),
        Err(_) => Err(format!(
            "{what}: no answer within {}s",
            READY_TIMEOUT.as_secs()
        )),
    }
}
