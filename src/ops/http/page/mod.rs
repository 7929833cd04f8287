//! The status page: server-rendered HTML for the people watching a campaign (the privacy office,
//! counsel, the call centre), `/api/status` for scripts, and the four actions an operator may take
//! from it (docs/status-page.md).
//!
//! - `GET /`: every campaign with its counters as a stacked bar, rates, ETA, last change.
//! - `GET /campaigns/{id}`: one campaign: counters, rate charts (last 1 h, 6 h, 24 h, SVG drawn here
//!   from `send_buckets`), deadlines per jurisdiction (late first), waves and their guards, failures
//!   grouped by SMTP code, enhanced status and receiving domain, the daemons with heartbeat age and
//!   in-flight count, the campaign's history; then the action forms.
//! - `GET /live`, `GET /campaigns/{id}/live`: the live part of each page, which `page.js` fetches
//!   every few seconds while the tab is visible. Without JavaScript the page is whole, it just does
//!   not move.
//! - `GET /api/status`, `GET /api/status/{id}`: what `status --json` and `status ID --json` print
//!   ([`crate::ops::status`]).
//! - `POST /campaigns/{id}/{pause|resume|cancel|release-wave}` ([`actions`]), `GET /login` (asks the
//!   browser for a token), `GET /assets/{file}` (CSS, JS and icon, compiled in).
//!
//! Every URL in a page is relative, so the page works under a path prefix behind a reverse proxy.
//! Nothing personal is shown: ids, counts, codes and domains. Responses here carry a strict
//! Content-Security-Policy (no inline script or style: the script is a file, the charts use CSS
//! classes), `Referrer-Policy: same-origin` (not `no-referrer`, which would blank the `Origin` the
//! cross-site check reads) and `X-Frame-Options: DENY` on top of the endpoint's common headers.
//!
//! Reads go through [`data::Cache`]: one snapshot per page for [`data::CACHE_FOR`], however many
//! people watch.

mod actions;
pub mod auth;
mod chart;
mod data;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use minijinja::{Environment, UndefinedBehavior, Value, context};

use super::AppState;
use crate::config::TokenSettings;
use crate::store::{Store, StoreError};
use auth::{Caller, Refusal, Tokens};
use data::{Cache, Cached, Key};

pub use data::CACHE_FOR;

/// The Content-Security-Policy of every page response (module header).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the page's routes share: the snapshots, the tokens and the templates.
pub struct Page {
    cache: Cache,
    tokens: Tokens,
    templates: Environment<'static>,
}

/// The templates, compiled into the binary.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("campaigns.html", include_str!("templates/campaigns.html")),
    (
        "campaigns_live.html",
        include_str!("templates/campaigns_live.html"),
    ),
    ("campaign.html", include_str!("templates/campaign.html")),
    (
        "campaign_live.html",
        include_str!("templates/campaign_live.html"),
    ),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("message.html", include_str!("templates/message.html")),
];

/// The assets: (name, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "page.css",
        "text/css; charset=utf-8",
        include_str!("assets/page.css"),
    ),
    (
        "page.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/page.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

impl Page {
    /// The page over `store`, with the configured tokens and the limits the deadline forecast
    /// assumes before a campaign sends. A template that does not compile is an error here, at start
    /// (and in the unit tests), not on the first request.
    pub fn new(
        store: Store,
        tokens: &[TokenSettings],
        limits: crate::campaign::forecast::Limits,
    ) -> anyhow::Result<Arc<Page>> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        env.add_filter("time", time_filter);
        env.add_filter("eta", crate::ops::status::eta);
        Ok(Arc::new(Page {
            cache: Cache::new(store, limits),
            tokens: Tokens::new(tokens),
            templates: env,
        }))
    }

    fn render(&self, name: &str, ctx: Value) -> Response {
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(ctx))
        {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "status page: a template failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be drawn; see the daemon's log\n",
                )
                    .into_response()
            }
        }
    }

    /// A page or fragment of the snapshot `key`, for a caller allowed to view.
    async fn view(&self, headers: &HeaderMap, key: Key, template: &str, root: &str) -> Response {
        let caller = match self.tokens.may_view(headers) {
            Ok(c) => c,
            Err(r) => return refusal(r),
        };
        let snapshot = match self.cache.get(key).await {
            Ok(Cached::List(s)) => Value::from_serialize(&*s),
            Ok(Cached::Campaign(Some(s))) => Value::from_serialize(&*s),
            Ok(Cached::Campaign(None)) => {
                return (StatusCode::NOT_FOUND, "no such campaign\n").into_response();
            }
            Ok(Cached::Api(_)) => unreachable!("pages never ask for the API's snapshot"),
            Err(e) => return unavailable(&e),
        };
        let caller = match caller {
            Caller::Token { name, role } => Some(format!("{name} ({role})")),
            Caller::Anonymous => None,
        };
        let ctx = context! {
            root => Value::from_safe_string(root.into()),
            caller => caller,
            snapshot => snapshot,
            can_act => self.tokens.has_operator(),
        };
        self.render(template, ctx)
    }

    fn store(&self) -> &Store {
        self.cache.store()
    }
}

/// The routes of the page, to be merged into the daemon's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(campaigns))
        .route("/live", get(campaigns_live))
        .route("/campaigns/{id}", get(campaign))
        .route("/campaigns/{id}/live", get(campaign_live))
        .route(
            "/campaigns/{id}/{action}",
            post(actions::act).layer(DefaultBodyLimit::max(actions::MAX_FORM)),
        )
        .route("/api/status", get(api_all))
        .route("/api/status/{id}", get(api_one))
        .route("/login", get(login))
        .route("/assets/{file}", get(asset))
        .layer(axum::middleware::map_response(page_headers))
}

async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// The answer when the state has no page (a state built without it, as in some tests).
fn not_served() -> Response {
    (
        StatusCode::NOT_FOUND,
        "the status page is not served here\n",
    )
        .into_response()
}

/// A page of the state's status page, or [`not_served`] when it has none.
async fn view(
    state: &AppState,
    headers: &HeaderMap,
    key: Key,
    template: &str,
    root: &str,
) -> Response {
    match &state.page {
        Some(p) => p.view(headers, key, template, root).await,
        None => not_served(),
    }
}

async fn campaigns(State(state): State<AppState>, headers: HeaderMap) -> Response {
    view(&state, &headers, Key::List, "campaigns.html", "").await
}

async fn campaigns_live(State(state): State<AppState>, headers: HeaderMap) -> Response {
    view(&state, &headers, Key::List, "campaigns_live.html", "").await
}

async fn campaign(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    view(&state, &headers, Key::Campaign(id), "campaign.html", "../").await
}

async fn campaign_live(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    view(
        &state,
        &headers,
        Key::Campaign(id),
        "campaign_live.html",
        "../../",
    )
    .await
}

async fn api_all(State(state): State<AppState>, headers: HeaderMap) -> Response {
    api(&state, &headers, None).await
}

async fn api_one(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Response {
    api(&state, &headers, Some(id)).await
}

/// `status --json`'s output, byte for byte (pretty-printed, with its final newline).
async fn api(state: &AppState, headers: &HeaderMap, id: Option<i64>) -> Response {
    let Some(page) = state.page.clone() else {
        return not_served();
    };
    if let Err(r) = page.tokens.may_view(headers) {
        return refusal(r);
    }
    let rows = match page.cache.get(Key::Api(id)).await {
        Ok(Cached::Api(rows)) => rows,
        Ok(_) => unreachable!("the API's key holds the API's snapshot"),
        Err(e) => {
            if let Some(StoreError::UnknownCampaign(_)) = e.downcast_ref::<StoreError>() {
                return json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({ "error": e.to_string() }),
                );
            }
            return unavailable(&e);
        }
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{rows}\n"),
    )
        .into_response()
}

fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(mut text) => {
            text.push('\n');
            (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Asks the browser for a token (Basic; the token is the password) and sends the caller back to the
/// campaigns once it has one.
async fn login(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(page) = state.page.clone() else {
        return not_served();
    };
    match page.tokens.caller(&headers) {
        Ok(Caller::Token { .. }) => {
            (StatusCode::SEE_OTHER, [(header::LOCATION, "./")]).into_response()
        }
        Ok(Caller::Anonymous) => refusal(Refusal {
            status: StatusCode::UNAUTHORIZED,
            message: "sign in with a token as the password (any user name)".into(),
            challenge: true,
        }),
        Err(r) => refusal(r),
    }
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => {
            ([(header::CONTENT_TYPE, *content_type)], *body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// A refusal as a response: its status, its sentence, and a challenge when it asks for a token.
fn refusal(r: Refusal) -> Response {
    let mut response = (r.status, format!("refused: {}\n", r.message)).into_response();
    if r.challenge {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(auth::REALM),
        );
    }
    response
}

/// The database did not answer: logged, and said without its details.
fn unavailable(e: &anyhow::Error) -> Response {
    tracing::warn!(error = %e, "status page: cannot read the database");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the database did not answer; see the daemon's log\n",
    )
        .into_response()
}

/// `2026-12-02T11:06:27.123Z` (a serialised time) as `2026-12-02 11:06:27 UTC`.
fn time_filter(value: String) -> String {
    chrono::DateTime::parse_from_rfc3339(&value)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or(value)
}
