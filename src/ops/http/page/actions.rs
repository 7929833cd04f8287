//! `POST /campaigns/{id}/{pause|resume|cancel|release-wave}`: an operator's action from the page.
//!
//! In order: the cross-site check and an operator token ([`super::auth`]); a form
//! (`application/x-www-form-urlencoded`, at most [`MAX_FORM`] bytes, only the fields `reason` and
//! `confirm`, each once, in UTF-8); a reason of 1 to [`MAX_REASON`] characters without control
//! characters; then the change, with the actor `http:NAME`, recorded in `campaign_events` (state
//! changes by the database's trigger, a wave's release as a note). Cancelling asks first: without
//! `confirm=yes` the answer is a confirmation page. A done action answers `303 See Other` to the
//! campaign's page (a relative `Location`), so a reload does not post again.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use minijinja::{Value, context};

use super::{Page, not_served, refusal};
use crate::campaign::{preflight, waves};
use crate::ops::http::AppState;
use crate::store::{CampaignState, StoreError};

/// The largest form read (bytes); a larger one is answered 413.
pub const MAX_FORM: usize = 16 * 1024;
/// The longest reason accepted (characters).
pub const MAX_REASON: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Pause,
    Resume,
    Cancel,
    ReleaseWave,
}

impl Action {
    fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "cancel" => Action::Cancel,
            "release-wave" => Action::ReleaseWave,
            _ => return None,
        })
    }
}

/// The fields of an action's form.
#[derive(Debug, Default, PartialEq, Eq)]
struct Form {
    reason: String,
    confirmed: bool,
}

/// A refusal of the form: its status and what is wrong with it.
type FormError = (StatusCode, String);

impl Form {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, FormError> {
        let bad = |m: String| Err((StatusCode::BAD_REQUEST, m));
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("send a form (application/x-www-form-urlencoded), not {content_type:?}"),
            ));
        }
        if std::str::from_utf8(body).is_err() {
            return bad("the form is not UTF-8".into());
        }
        let (mut reason, mut confirm) = (None, None);
        for (key, value) in form_urlencoded::parse(body) {
            if value.contains('\u{FFFD}') {
                return bad(format!("field {key}: not UTF-8 once decoded"));
            }
            let slot = match key.as_ref() {
                "reason" => &mut reason,
                "confirm" => &mut confirm,
                other => return bad(format!("unknown field {other:?}: only reason and confirm")),
            };
            if slot.replace(value.into_owned()).is_some() {
                return bad(format!("field {key} given twice"));
            }
        }
        let reason = reason.unwrap_or_default().trim().to_string();
        if reason.is_empty() {
            return bad("a reason is required (it is recorded in the campaign's history)".into());
        }
        if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
            return bad(format!(
                "the reason must be one line of at most {MAX_REASON} characters"
            ));
        }
        Ok(Form {
            reason,
            confirmed: confirm.as_deref() == Some("yes"),
        })
    }
}

/// What an action came to.
enum Done {
    /// Back to the campaign's page.
    Changed,
    /// Cancel without `confirm=yes`: ask.
    Confirm,
}

pub async fn act(
    State(state): State<AppState>,
    Path((id, action)): Path<(i64, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(page) = state.page.clone() else {
        return not_served();
    };
    let Some(action) = Action::parse(&action) else {
        return (
            StatusCode::NOT_FOUND,
            "no such action: pause, resume, cancel or release-wave\n",
        )
            .into_response();
    };
    let name = match page.tokens.may_act(&headers) {
        Ok(name) => name,
        Err(r) => return refusal(r),
    };
    let form = match Form::parse(&headers, &body) {
        Ok(f) => f,
        Err((status, message)) => return message_page(&page, status, &message, id, &name),
    };
    let actor = format!("http:{name}");
    let result = perform(&page, id, action, &form, &actor).await;
    page.cache.clear();
    match result {
        Ok(Done::Changed) => {
            tracing::info!(campaign_id = id, action = ?action, actor, "status page: campaign changed");
            let location = format!("../{id}");
            (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
        }
        Ok(Done::Confirm) => confirm_page(&page, id, &form, &name).await,
        Err((status, message)) => message_page(&page, status, &message, id, &name),
    }
}

async fn perform(
    page: &Arc<Page>,
    id: i64,
    action: Action,
    form: &Form,
    actor: &str,
) -> Result<Done, FormError> {
    let store = page.store();
    let reason = Some(form.reason.as_str());
    let to = match action {
        Action::Pause => CampaignState::Paused,
        Action::Resume => {
            let campaign = store.require_campaign(id).await.map_err(store_error)?;
            if campaign.state != CampaignState::Paused {
                return Err((
                    StatusCode::CONFLICT,
                    format!(
                        "campaign {id} is {}, not paused: nothing changed",
                        campaign.state
                    ),
                ));
            }
            // As `campaign resume`: the templates are checked against real recipients again.
            let report = preflight::check(store, &campaign)
                .await
                .map_err(other_error)?;
            if let Some(problem) = report.problem() {
                return Err((
                    StatusCode::CONFLICT,
                    format!("campaign {id} cannot resume: {problem}"),
                ));
            }
            CampaignState::Running
        }
        Action::Cancel if !form.confirmed => return Ok(Done::Confirm),
        Action::Cancel => CampaignState::Cancelled,
        Action::ReleaseWave => {
            let wave = waves::release_next(store, id, actor, reason)
                .await
                .map_err(other_error)?;
            let note = format!("wave {wave} released: {}", form.reason);
            store
                .record_campaign_note(id, actor, &note, Utc::now())
                .await
                .map_err(store_error)?;
            return Ok(Done::Changed);
        }
    };
    store
        .set_campaign_state(id, to, actor, reason)
        .await
        .map_err(store_error)?;
    Ok(Done::Changed)
}

fn store_error(e: StoreError) -> FormError {
    match e {
        StoreError::UnknownCampaign(_) => (StatusCode::NOT_FOUND, e.to_string()),
        StoreError::IllegalTransition { .. } => (StatusCode::CONFLICT, e.to_string()),
        other => {
            tracing::warn!(error = %other, "status page: an action could not reach the database");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database did not answer; nothing changed (see the daemon's log)".into(),
            )
        }
    }
}

/// An error of the campaign layer (a wave, the pre-flight): a store error keeps its meaning, any
/// other is the operator's to read.
fn other_error(e: anyhow::Error) -> FormError {
    match e.downcast::<StoreError>() {
        Ok(store) => store_error(store),
        Err(e) => (StatusCode::CONFLICT, format!("{e:#}")),
    }
}

/// What the header says about the operator who acted.
fn signed_in(name: &str) -> String {
    format!("{name} (operator)")
}

/// Why an operator's action was not done, with a link back to the campaign.
fn message_page(page: &Page, status: StatusCode, message: &str, id: i64, name: &str) -> Response {
    let ctx = context! {
        root => Value::from_safe_string("../../".into()),
        caller => signed_in(name),
        heading => "Not done",
        message => message,
        back => Value::from_safe_string(format!("../{id}")),
    };
    let mut response = page.render("message.html", ctx);
    *response.status_mut() = status;
    response
}

async fn confirm_page(page: &Page, id: i64, form: &Form, name: &str) -> Response {
    let campaign_name = match page.store().campaign(id).await {
        Ok(Some(c)) => c.name,
        Ok(None) => {
            let message = StoreError::UnknownCampaign(id).to_string();
            return message_page(page, StatusCode::NOT_FOUND, &message, id, name);
        }
        Err(e) => {
            let (status, message) = store_error(e);
            return message_page(page, status, &message, id, name);
        }
    };
    let ctx = context! {
        root => Value::from_safe_string("../../".into()),
        caller => signed_in(name),
        id => id,
        name => campaign_name,
        reason => form.reason,
    };
    page.render("confirm.html", ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn form_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=UTF-8"),
        );
        h
    }

    #[test]
    fn a_form_needs_a_reason_and_only_known_fields() {
        let h = form_headers();
        let ok = Form::parse(&h, b"reason=relay+maintenance&confirm=yes").unwrap();
        assert_eq!(
            ok,
            Form {
                reason: "relay maintenance".into(),
                confirmed: true
            }
        );
        for (body, expected) in [
            (&b"confirm=yes"[..], "a reason is required"),
            (b"reason=%20%20", "a reason is required"),
            (b"reason=a&reason=b", "given twice"),
            (b"reason=a&email=x", "unknown field"),
            (b"reason=a%0Ab", "one line"),
            (b"reason=%FF", "not UTF-8"),
            (b"reason=\xff", "not UTF-8"),
        ] {
            let (status, message) = Form::parse(&h, body).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(message.contains(expected), "{body:?}: {message}");
        }
        let long = format!("reason={}", "x".repeat(MAX_REASON + 1));
        assert!(Form::parse(&h, long.as_bytes()).is_err());
        let (status, _) = Form::parse(&HeaderMap::new(), b"reason=a").unwrap_err();
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
