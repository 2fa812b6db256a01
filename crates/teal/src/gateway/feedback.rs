//! Delayed ground truth (`POST /v2/models/{model}/feedback`): the true label of a request teal
//! answered, matched through the request log to the version that served it and the label it
//! predicted. The one data-plane endpoint that waits on the state file; inference never does.
//! When `server.feedback_token` is set, feedback must carry it in `x-teal-feedback-token`
//! (401 otherwise); a request's label, once given, is kept (409 for a different one).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode};

use super::answer::{error_response, json_response};
use super::body::{Payload, body_headers, read_body};
use super::pick::find_model;
use super::{Gateway, GatewayError, ModelPath, names, path_error};
use crate::state::store::FeedbackOutcome;
use crate::state::token::same_secret;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    request_id: String,
    label: serde_json::Value,
}

/// Delayed ground truth: the true label of a request teal answered, matched through the
/// request log to the version that served it and the label it predicted.
pub(super) async fn feedback(
    State(gateway): State<Arc<Gateway>>,
    path: ModelPath,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let model = match path {
        Ok(Path(model)) => model,
        Err(e) => return path_error(e),
    };
    match record_feedback(&gateway, &model, &headers, body).await {
        Ok(response) => response,
        Err(e) => {
            if e.status().is_server_error() {
                // The answer names no internals; the details are here.
                tracing::warn!(model, error = %e, "feedback failed");
            }
            error_response(&e)
        }
    }
}

async fn record_feedback(
    gateway: &Gateway,
    model: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response<Body>, GatewayError> {
    body_headers(headers, false)?;
    let body = read_body(
        Payload::Arriving(body),
        headers,
        gateway.max_body_bytes,
        gateway.body_deadline(),
    )
    .await?;
    if let Some(expected) = &gateway.feedback_token {
        let presented = headers
            .get(&names::FEEDBACK_TOKEN)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same_secret(presented, expected.as_bytes()) {
            return Err(GatewayError::FeedbackToken);
        }
    }
    find_model(gateway, model)?;
    let request: FeedbackBody =
        serde_json::from_slice(&body).map_err(|e| GatewayError::Feedback(e.to_string()))?;
    if request.request_id.is_empty() || request.request_id.len() > 256 {
        return Err(GatewayError::Feedback(
            "request_id must be 1 to 256 characters".into(),
        ));
    }
    let label = match &request.label {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null | serde_json::Value::Object(_) => {
            return Err(GatewayError::Feedback(
                "label must be the true class: a number, a string, or a list for a many-row request".into(),
            ));
        }
        other => other.to_string(),
    };
    let (Some(store), Some(_)) = (&gateway.store, &gateway.request_log) else {
        return Err(GatewayError::NoRequestLog);
    };
    // The request log writes in batches; a label sent right after its answer may be a
    // moment ahead of it.
    for attempt in 0..4 {
        let (store, m, id, l) = (
            store.clone(),
            model.to_string(),
            request.request_id.clone(),
            label.clone(),
        );
        let outcome = tokio::task::spawn_blocking(move || store.record_feedback(&m, &id, &l))
            .await
            .map_err(|e| GatewayError::Store(e.to_string()))?
            .map_err(|e| GatewayError::Store(e.to_string()))?;
        match outcome {
            FeedbackOutcome::Recorded(feedback) => {
                return Ok(json_response(StatusCode::OK, &feedback));
            }
            FeedbackOutcome::AlreadyLabelled { label: given } => {
                return Err(GatewayError::LabelGiven {
                    model: model.to_string(),
                    id: request.request_id,
                    given,
                });
            }
            FeedbackOutcome::UnknownRequest => {}
        }
        if attempt < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Err(GatewayError::UnknownRequest {
        model: model.to_string(),
        id: request.request_id,
    })
}
