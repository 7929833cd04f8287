//! `POST /webhooks/sendgrid` and `POST /webhooks/ses`: a request is checked ([`super::sendgrid`],
//! [`super::sns`]), its report stored (`bounce::ingest`, once per SHA-256: a replay stores nothing
//! new) and answered at once; the daemon's bounce role processes it afterwards. Refused (403) when no
//! key or topic is configured, so an endpoint left open accepts nothing. A database that cannot
//! store answers 503, which both providers retry.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;

use super::Rejected;
use super::certs::CertificateSource;
use super::sendgrid::SendGridVerifier;
use super::sns::{SnsMessage, SnsVerifier};
use crate::bounce::ingest::{Stored, store_report};
use crate::config::BounceSettings;
use crate::ops::http::AppState;
use crate::store::{ReportSource, Store};

/// What the webhook routes need: the store and the verifiers configured.
pub struct Webhooks {
    store: Store,
    sendgrid: Option<SendGridVerifier>,
    sns: Option<SnsVerifier>,
    max_bytes: usize,
}

impl Webhooks {
    /// The verifiers `[bounces]` configures; an error names the key that is wrong.
    pub fn new(store: Store, settings: &BounceSettings) -> anyhow::Result<Arc<Webhooks>> {
        let tolerance = Duration::from_secs(settings.webhook_tolerance_seconds);
        let sendgrid = match &settings.sendgrid_key {
            Some(key) => Some(
                SendGridVerifier::from_base64_spki(key, tolerance)
                    .map_err(|e| anyhow::anyhow!("bounces.sendgrid_key_file: {e}"))?,
            ),
            None => None,
        };
        let sns = if settings.ses_topic_arns.is_empty() {
            None
        } else {
            let certificates = if settings.ses_certificate_files.is_empty() {
                CertificateSource::fetch()
            } else {
                CertificateSource::pinned_files(&settings.ses_certificate_files)
                    .map_err(|e| anyhow::anyhow!("bounces.ses_certificate_files: {e}"))?
            };
            Some(SnsVerifier::new(
                settings.ses_topic_arns.iter().cloned(),
                certificates,
            ))
        };
        Ok(Arc::new(Webhooks {
            store,
            sendgrid,
            sns,
            max_bytes: settings.max_report_bytes,
        }))
    }

    /// Stores one report as it arrived (`bounce::ingest`: once per SHA-256).
    async fn store(&self, source: ReportSource, raw: &[u8]) -> crate::store::Result<Stored> {
        store_report(&self.store, source, raw, None, self.max_bytes).await
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks/sendgrid", post(sendgrid))
        .route("/webhooks/ses", post(ses))
}

type Answer = (StatusCode, String);

fn refused(r: &Rejected, source: &str) -> Answer {
    tracing::warn!(source, reason = %r, "webhook request refused");
    (r.status(), format!("refused: {r}\n"))
}

fn not_configured(what: &str) -> Answer {
    (
        StatusCode::FORBIDDEN,
        format!("refused: {what} is not configured, so no request can be verified\n"),
    )
}

async fn sendgrid(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    let hooks = state.webhooks.as_deref();
    let Some((hooks, verifier)) = hooks.and_then(|h| Some((h, h.sendgrid.as_ref()?))) else {
        return not_configured("bounces.sendgrid_key_file");
    };
    if let Err(r) = verifier.verify_headers(&headers, &body, Utc::now()) {
        return refused(&r, "sendgrid");
    }
    // One report per event: each names one message, and a replayed event is found by its own hash.
    let events: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(events) => events,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "not a JSON array of events (line {}, column {})\n",
                    e.line(),
                    e.column()
                ),
            );
        }
    };
    let mut stored = 0;
    for event in &events {
        let bytes = serde_json::to_vec(event).unwrap_or_default();
        match hooks.store(ReportSource::Sendgrid, &bytes).await {
            Ok(Stored::New(_)) => stored += 1,
            Ok(Stored::Duplicate) => {}
            Err(e) => return unavailable(&e),
        }
    }
    tracing::info!(
        events = events.len(),
        stored,
        "sendgrid webhook: events stored"
    );
    (
        StatusCode::OK,
        format!("stored {stored} of {} events\n", events.len()),
    )
}

async fn ses(State(state): State<AppState>, body: Bytes) -> Answer {
    let hooks = state.webhooks.as_deref();
    let Some((hooks, verifier)) = hooks.and_then(|h| Some((h, h.sns.as_ref()?))) else {
        return not_configured("bounces.ses_topic_arns");
    };
    match verifier.verify(&body, Utc::now()).await {
        Err(r) => refused(&r, "ses"),
        Ok(SnsMessage::Notification(_)) => match hooks.store(ReportSource::Ses, &body).await {
            Ok(Stored::New(id)) => (StatusCode::OK, format!("stored as report {id}\n")),
            Ok(Stored::Duplicate) => (StatusCode::OK, "already stored\n".into()),
            Err(e) => unavailable(&e),
        },
        Ok(SnsMessage::SubscriptionConfirmation {
            topic_arn,
            subscribe_url,
            ..
        }) => {
            // Not followed automatically: subscribing is the operator's decision (docs/bounces.md).
            tracing::warn!(topic = %topic_arn, subscribe_url = %subscribe_url, "SNS subscription waiting for confirmation: open the SubscribeURL once to confirm it");
            (
                StatusCode::OK,
                "subscription noted: confirm it with its SubscribeURL (see the daemon's log)\n"
                    .into(),
            )
        }
        Ok(SnsMessage::UnsubscribeConfirmation { topic_arn, .. }) => {
            tracing::warn!(topic = %topic_arn, "SNS says this endpoint was unsubscribed");
            (StatusCode::OK, "noted\n".into())
        }
    }
}

fn unavailable(e: &crate::store::StoreError) -> Answer {
    tracing::warn!(error = %e, "webhook: the report cannot be stored now; the provider will retry");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "cannot store the report now; try again later\n".into(),
    )
}
