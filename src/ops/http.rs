//! The daemon's HTTP endpoint (`[http]`, off by default): `/healthz`, `/readyz` and `/metrics`.
//!
//! - `GET /healthz`: 200 while the process serves requests (liveness).
//! - `GET /readyz`: 200 when the database answers a `SELECT 1` and the transport passes
//!   [`Transport::check`] on a fresh connection (a pooled one can survive an outage of the relay); 503
//!   with the reasons otherwise, and once the shutdown began. The result is cached for
//!   [`READY_CACHE`], so a busy prober costs the relay one connection per few seconds at most.
//! - `GET /metrics`: [`Metrics::render`], Prometheus text format 0.0.4.
//!
//! Hand-written on tokio's `TcpListener` instead of hyper/axum: three fixed GET routes with no
//! request body, no keep-alive and no TLS (the endpoint listens on loopback) are ~150 lines, while a
//! framework would add a dozen crates to a daemon whose dependencies are part of its audit surface.
//! What it does: reads one request head (at most 8 KiB, within 10 s), answers GET and HEAD, closes the
//! connection; at most 32 connections are served at once (more wait in the accept backlog).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::config::{HttpSettings, TransportSettings};
use crate::ops::metrics::Metrics;
use crate::store::Store;
use crate::transport::Transport;

/// How long a readiness result is reused.
pub const READY_CACHE: Duration = Duration::from_secs(3);
/// The longest one readiness check (database and transport, in parallel) may take.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 32;

/// Binds the configured address. Called before anything else at start, so that a port already in
/// use is one clear error before the service reports ready.
pub async fn bind(settings: &HttpSettings) -> anyhow::Result<TcpListener> {
    TcpListener::bind(settings.listen).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process listens on this port: stop it, or choose another port with http.listen"
            }
            std::io::ErrorKind::AddrNotAvailable => "no local interface has this address",
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: choose a port above 1023"
            }
            _ => "check http.listen",
        };
        anyhow::anyhow!("http.listen {}: cannot listen ({e}); {hint}", settings.listen)
    })
}

/// Database and transport reachability, checked at most every [`READY_CACHE`].
pub struct Readiness {
    store: Store,
    transport: TransportSettings,
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
        let database = async {
            match tokio::time::timeout(READY_TIMEOUT, self.store.ping()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("database: {e}")),
                Err(_) => Err(format!(
                    "database: no answer within {}s",
                    READY_TIMEOUT.as_secs()
                )),
            }
        };
        let transport = async {
            // A transport of its own, dropped afterwards: the check then opens a new connection.
            let check = async {
                Transport::from_settings(&self.transport)?.check().await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(READY_TIMEOUT, check).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("transport: {e:#}")),
                Err(_) => Err(format!(
                    "transport: no answer within {}s",
                    READY_TIMEOUT.as_secs()
                )),
            }
        };
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

/// What the endpoint serves.
pub struct Endpoint {
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// True once the shutdown began: `/readyz` then answers 503.
    pub stopping: watch::Receiver<bool>,
}

/// Serves `listener` until the returned task is aborted.
pub fn serve(listener: TcpListener, endpoint: Endpoint) -> tokio::task::JoinHandle<()> {
    let endpoint = Arc::new(endpoint);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP endpoint listening (/healthz, /readyz, /metrics)");
    }
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    let endpoint = endpoint.clone();
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &endpoint)).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "HTTP endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    })
}

/// A response: status, content type, body.
struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

async fn handle(mut stream: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            // The client went away before finishing; answer what can be answered.
            break !head.is_empty();
        }
        head.extend_from_slice(&buf[..n]);
    };
    let (head_only, response) = if !complete {
        if head.is_empty() {
            return Ok(());
        }
        (false, Response::text(431, "request head too large\n"))
    } else {
        route(&head, endpoint).await
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Routes one request head; returns whether the body is to be left out (HEAD) and the response.
async fn route(head: &[u8], endpoint: &Endpoint) -> (bool, Response) {
    let line = head
        .split(|b| *b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .map(|l| l.trim_end_matches('\r'))
        .unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (false, Response::text(400, "malformed request line\n"));
    };
    if !version.starts_with("HTTP/1.") {
        return (false, Response::text(400, "HTTP/1.x only\n"));
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = Response::text(405, "GET or HEAD only\n");
            r.allow = true;
            return (false, r);
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let response = match path {
        "/healthz" => Response::text(200, "ok\n"),
        "/readyz" => {
            if *endpoint.stopping.borrow() {
                Response::text(503, "not ready: stopping\n")
            } else {
                match endpoint.readiness.check().await {
                    Ok(()) => Response::text(200, "ready\n"),
                    Err(problems) => Response::text(
                        503,
                        format!("not ready: {}\n", problems.replace(['\r', '\n'], " ")),
                    ),
                }
            }
        }
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: endpoint.metrics.render(),
            allow: false,
        },
        _ => Response::text(404, "not found: try /healthz, /readyz or /metrics\n"),
    };
    (head_only, response)
}
