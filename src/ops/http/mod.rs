//! The daemon's HTTP endpoint (`[http]`, off by default, loopback unless `http.allow_remote`): the
//! server, the state its routes share, and the router they are assembled into.
//!
//! Routes live in modules of their own, each giving `fn routes() -> Router<AppState>`:
//! [`health`] (`/healthz`, `/readyz`, `/metrics`), the ESP bounce webhooks ([`webhooks`] has their
//! signature checks and parsing) and the status page with its forms and JSON API ([`page`]). A new module
//! adds its routes in [`router`] and, if it needs something shared (the store, a verifier), a field to
//! [`AppState`].
//!
//! Built on axum 0.8 over hyper 1 (http1 only, no default features). The endpoint used to be
//! hand-written on a `TcpListener` because three fixed GET routes did not justify a framework; it now
//! has to read request bodies (webhooks are POSTs with signed JSON), decode forms and serve JSON, and
//! that is where hand-written HTTP stops being cheap: axum brings a real HTTP/1 parser (hyper),
//! routing with method handling (405 with `Allow`), body limits and extractors, from the tokio
//! project, for 14 crates (measured against the lock before it: axum, axum-core, hyper, hyper-util,
//! http, http-body, http-body-util, httparse, matchit, tower, tower-layer, tower-service,
//! sync_wrapper, atomic-waker; all MIT or Apache-2.0, matchit also BSD-3-Clause). No `json`,
//! `query` or `form` feature yet: the routes that need them turn them on. tower-http is not used:
//! its body limit is axum's [`DefaultBodyLimit`] already, and its timeout starts only after the
//! request head is read, which the connection deadline in [`listener`] covers from the first byte.
//!
//! What every response has in common, whatever the route:
//! - `X-Content-Type-Options: nosniff`, `X-Robots-Tag: noindex`, `Cache-Control: no-store`: nothing
//!   here is for search engines or caches, and no body is to be sniffed into HTML;
//! - `Connection: close`: one request per connection (probers open a new one each time), so that a
//!   connection's deadline is a request's and an idle client cannot keep a slot;
//! - a 405 lists the methods the path accepts in `Allow` (`GET, HEAD`) and says so in its body.
//!
//! Limits: request bodies up to [`MAX_BODY`] (SendGrid posts batches of up to 768 KB), at most
//! [`listener::MAX_CONNECTIONS`] connections at once, each within
//! [`listener::CONNECTION_DEADLINE`]. The server stops with [`Server::shutdown`], after the
//! dispatcher's drain, so that `/readyz` can answer "stopping" (503) while the daemon drains.

mod health;
mod listener;
pub mod page;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::HttpSettings;
use crate::ops::metrics::Metrics;

pub use health::{READY_CACHE, READY_TIMEOUT, Readiness};
use listener::{CONNECTION_DEADLINE, LimitedListener};

/// The largest request body read (bytes); a larger one is answered 413.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long [`Server::shutdown`] waits for requests in progress (each is bounded by the connection
/// deadline) before cutting them.
const SHUTDOWN_GRACE: Duration = CONNECTION_DEADLINE.saturating_add(Duration::from_secs(1));

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

/// What the routes share. Cheap to clone (axum clones it into every request).
#[derive(Clone)]
pub struct AppState {
    /// The daemon's registry, rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// `/readyz`'s cached check of the database and the relay.
    pub readiness: Arc<Readiness>,
    /// True once the shutdown began: `/readyz` then answers 503.
    pub stopping: watch::Receiver<bool>,
    /// The bounce webhooks' store and verifiers (none: the routes refuse every request).
    pub webhooks: Option<Arc<webhooks::routes::Webhooks>>,
    /// The status page (none: its routes answer 404).
    pub page: Option<Arc<page::Page>>,
}

/// Every route of the endpoint, with the common headers, the 404 and the body limit.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(webhooks::routes::routes())
        .merge(page::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The service the server runs: [`router`] wrapped so that [`common_headers`] sees every response
/// as it leaves, including the 405s axum completes (their `Allow` header is added outside the
/// route's own layers).
fn app(state: AppState) -> Router {
    Router::new()
        .fallback_service(router(state))
        .layer(axum::middleware::map_response(common_headers))
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: try / (the status page), /healthz, /readyz or /metrics\n",
    )
}

/// The headers every response carries (module header), and the body of a 405.
async fn common_headers(response: Response) -> Response {
    let mut response = if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        method_not_allowed(&response)
    } else {
        response
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A 405 whose `Allow` lists the methods as `GET, HEAD` (axum writes `GET,HEAD`; both are valid,
/// the spaced form is what people and the old endpoint wrote) and whose body repeats them.
fn method_not_allowed(response: &Response) -> Response {
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    let body = format!("method not allowed: {allow} only\n");
    let mut out = (StatusCode::METHOD_NOT_ALLOWED, body).into_response();
    if let Ok(value) = HeaderValue::from_str(&allow) {
        out.headers_mut().insert(header::ALLOW, value);
    }
    out
}

/// The running endpoint.
pub struct Server {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Serves `listener` until [`Server::shutdown`].
pub fn serve(listener: TcpListener, state: AppState) -> Server {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "HTTP endpoint listening (status page /, /healthz, /readyz, /metrics)");
    }
    serve_limited(LimitedListener::new(listener, CONNECTION_DEADLINE), state)
}

fn serve_limited(listener: LimitedListener, state: AppState) -> Server {
    let stop = CancellationToken::new();
    let signal = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app(state))
            .with_graceful_shutdown(signal)
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "HTTP endpoint stopped");
        }
    });
    Server { stop, task }
}

impl Server {
    /// Stops accepting (the port closes), lets requests in progress finish within
    /// [`SHUTDOWN_GRACE`], then cuts what is left.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            tracing::warn!("HTTP endpoint: requests still open at shutdown were cut");
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    //! The router without a socket (`oneshot`); the daemon's endpoint over TCP is tested in
    //! tests/it/ops.rs.

    use super::*;
    use crate::config::{DatabaseSettings, TransportSettings};
    use crate::store::Store;
    use axum::body::Body;
    use axum::http::Method;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    struct Fixture {
        state: AppState,
        stop: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    /// A state over a fresh SQLite file and a file outbox, both in a temporary folder.
    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let database = DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("t.db").display()),
            ..DatabaseSettings::default()
        };
        let store = Store::connect(&database, None, true).await.unwrap();
        let mut transport = TransportSettings::default();
        transport.file.dir = dir.path().join("outbox");
        let (stop, stopping) = watch::channel(false);
        let state = AppState {
            metrics: Arc::new(Metrics::new()),
            readiness: Arc::new(Readiness::new(store, transport)),
            stopping,
            webhooks: None,
            page: None,
        };
        Fixture {
            state,
            stop,
            _dir: dir,
        }
    }

    async fn call(state: &AppState, method: Method, path: &str) -> (Response, String) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = app(state.clone()).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        (Response::from_parts(parts, Body::empty()), text)
    }

    fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn every_response_carries_the_security_headers() {
        let f = fixture().await;
        for (method, path) in [
            (Method::GET, "/healthz"),
            (Method::HEAD, "/metrics"),
            (Method::GET, "/nope"),
            (Method::POST, "/healthz"),
        ] {
            let (r, _) = call(&f.state, method.clone(), path).await;
            assert_eq!(
                header(&r, "x-content-type-options"),
                Some("nosniff"),
                "{method} {path}"
            );
            assert_eq!(
                header(&r, "x-robots-tag"),
                Some("noindex"),
                "{method} {path}"
            );
            assert_eq!(
                header(&r, "cache-control"),
                Some("no-store"),
                "{method} {path}"
            );
            assert_eq!(header(&r, "connection"), Some("close"), "{method} {path}");
        }
    }

    #[tokio::test]
    async fn routes_methods_and_the_fallback() {
        let f = fixture().await;
        let (r, body) = call(&f.state, Method::GET, "/healthz?probe=1").await;
        assert_eq!((r.status(), body.as_str()), (StatusCode::OK, "ok\n"));
        assert_eq!(
            header(&r, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        let (r, body) = call(&f.state, Method::HEAD, "/healthz").await;
        assert_eq!((r.status(), body.as_str()), (StatusCode::OK, ""));
        let (r, body) = call(&f.state, Method::POST, "/metrics").await;
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
        assert_eq!(body, "method not allowed: GET, HEAD only\n");
        let (r, _) = call(&f.state, Method::GET, "/nope").await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let (r, body) = call(&f.state, Method::GET, "/metrics").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            header(&r, "content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert!(body.contains("breach_notifier_"), "{body}");
    }

    #[tokio::test]
    async fn readyz_answers_ready_then_stopping() {
        let f = fixture().await;
        let (r, body) = call(&f.state, Method::GET, "/readyz").await;
        assert_eq!((r.status(), body.as_str()), (StatusCode::OK, "ready\n"));
        f.stop.send(true).unwrap();
        let (r, body) = call(&f.state, Method::GET, "/readyz").await;
        assert_eq!(
            (r.status(), body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: stopping\n")
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        // Any route reading its body goes through the limit; a probe route that reads one stands in
        // for the webhooks until they are wired.
        let probe = Router::new()
            .route(
                "/echo",
                axum::routing::post(
                    |body: axum::body::Bytes| async move { body.len().to_string() },
                ),
            )
            .layer(DefaultBodyLimit::max(MAX_BODY));
        let big = vec![b'x'; MAX_BODY + 1];
        let request = axum::http::Request::post("/echo")
            .body(Body::from(big))
            .unwrap();
        let response = probe.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let request = axum::http::Request::post("/echo")
            .body(Body::from(vec![b'x'; 10]))
            .unwrap();
        assert_eq!(
            probe.oneshot(request).await.unwrap().status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn the_server_serves_then_shuts_down_and_frees_the_port() {
        let f = fixture().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = serve(listener, f.state.clone());
        let raw = raw_get(addr, "/healthz").await;
        assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
        assert!(raw.ends_with("\r\n\r\nok\n"), "{raw}");
        server.shutdown().await;
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_at_the_deadline() {
        let f = fixture().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let deadline = Duration::from_millis(300);
        let server = serve_limited(LimitedListener::new(listener, deadline), f.state.clone());
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Half a request head, then nothing.
        tokio::io::AsyncWriteExt::write_all(&mut idle, b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut idle, &mut buf),
        )
        .await;
        assert!(read.is_ok(), "the connection was closed");
        assert!(started.elapsed() < Duration::from_secs(2));
        server.shutdown().await;
    }

    /// One request as a prober sends it (HTTP/1.1, no `Connection: close`), read to the end: the
    /// server closes the connection after its answer.
    async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut raw))
            .await
            .expect("the server closes the connection")
            .unwrap();
        String::from_utf8(raw).unwrap()
    }
}
