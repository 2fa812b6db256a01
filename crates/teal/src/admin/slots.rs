//! The two slots and what runs against the standby one: deploy, teardown, the canary weight,
//! the shadow share, validations and their reports.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Response, StatusCode};
use serde::Deserialize;
use teal_core::routing::{Color, RouteTable};

use super::context::{Admin, actor, error, json, parse_body, route_error, store_error};
use crate::control::rollout::record_change;
use crate::control::slots::SlotError;
use crate::control::validation::{Source, ValidationError};
use crate::routing::RouteError;

fn slot_error(e: SlotError) -> Response<Body> {
    match e {
        SlotError::Route(e) => route_error(e),
        SlotError::Busy(_) => error(StatusCode::CONFLICT, e.to_string()),
        SlotError::CommandsNotAllowed(_) => error(StatusCode::FORBIDDEN, e.to_string()),
        SlotError::Invalid(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        SlotError::Load { .. } => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        SlotError::Unrecorded(e) => store_error(e),
    }
}

pub(super) async fn deploy(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response<Body> {
    let config: teal_core::config::SlotConfig = match parse_body(
        &body,
        "body must describe the version like a config slot, e.g. {\"version\": \"v3\", \"kind\": \"onnx\", \"path\": \"/models/v3.onnx\"}",
    ) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    if let Err(response) = admin.not_during_rollout(&model, "a manual deploy") {
        return response;
    }
    if let Err(response) = admin.writable() {
        return response;
    }
    let record = admin.slot_record("deployed", actor(&headers));
    match admin.slots.deploy(&model, &config, Some(record)).await {
        Ok(outcome) => json(StatusCode::OK, &outcome),
        Err(e) => slot_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TeardownBody {
    #[serde(default)]
    slot: Option<Color>,
}

pub(super) async fn teardown(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response<Body> {
    let request: TeardownBody = if body.is_empty() {
        TeardownBody::default()
    } else {
        match parse_body(&body, "body must be {} or {\"slot\": \"blue\"|\"green\"}") {
            Ok(parsed) => parsed,
            Err(response) => return response,
        }
    };
    if let Err(response) = admin.not_during_rollout(&model, "a manual teardown") {
        return response;
    }
    if let Err(response) = admin.writable() {
        return response;
    }
    let record = admin.slot_record("torn_down", actor(&headers));
    match admin
        .slots
        .teardown(&model, request.slot, Some(record))
        .await
    {
        Ok(outcome) => json(StatusCode::OK, &outcome),
        Err(e) => slot_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryBody {
    /// Percent of new requests for the candidate, 0 to 100, to two decimals.
    percent: f64,
}

/// Reads `{"percent": 0 to 100}` as basis points.
fn parse_share(body: &[u8]) -> Result<u32, Response<Body>> {
    let request: CanaryBody = parse_body(body, "body must be {\"percent\": 0 to 100}")?;
    if !(0.0..=100.0).contains(&request.percent) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("percent must be between 0 and 100, not {}", request.percent),
        ));
    }
    Ok((request.percent * 100.0).round() as u32)
}

pub(super) async fn canary(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response<Body> {
    let share = match parse_share(&body) {
        Ok(share) => share,
        Err(response) => return response,
    };
    if let Err(response) = admin.not_during_rollout(&model, "a manual canary weight") {
        return response;
    }
    let (who, name) = (actor(&headers), model.clone());
    let changed = admin
        .change(move |routes, store| {
            let record = record_change(store, "canary", who, |table: &RouteTable| {
                serde_json::json!({ "candidate": table.candidate(), "weight_bp": table.candidate_weight })
            });
            routes.set_weight_recorded(&name, share, record)
        })
        .await;
    match changed {
        Ok(table) => {
            tracing::info!(model, candidate = %table.candidate(), weight_bp = table.candidate_weight, "canary weight set");
            json(
                StatusCode::OK,
                &serde_json::json!({ "model": model, "candidate": table.candidate(), "percent": f64::from(table.candidate_weight) / 100.0, "generation": table.generation }),
            )
        }
        Err(response) => response,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidateBody {
    #[serde(default)]
    holdout: Option<std::path::PathBuf>,
    #[serde(default, deserialize_with = "whole_number")]
    shadow: Option<usize>,
    #[serde(default, deserialize_with = "whole_number")]
    replay: Option<usize>,
    #[serde(default, deserialize_with = "whole_number")]
    window_ms: Option<u64>,
}

/// A count: JSON's `300` or `300.0` (the same number to JSON), never `300.5` or `-1`.
fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let value = Option::<f64>::deserialize(deserializer)?;
    match value {
        None => Ok(None),
        Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 => T::try_from(v as u64)
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{v} is too large"))),
        Some(v) => Err(serde::de::Error::custom(format!(
            "expected a whole number, not {v}"
        ))),
    }
}

pub(super) async fn validate(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response<Body> {
    let usage = "body must name one source: {\"holdout\": \"/path/file.jsonl\"}, {\"shadow\": N} or {\"replay\": N}";
    let request: ValidateBody = match parse_body(&body, usage) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    const MOST: usize = 100_000;
    if request.shadow.or(request.replay).is_some_and(|n| n > MOST) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("at most {MOST} samples per validation"),
        );
    }
    const LONGEST_MS: u64 = 86_400_000;
    if request
        .window_ms
        .is_some_and(|ms| ms == 0 || ms > LONGEST_MS)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("window_ms must be from 1 to {LONGEST_MS} (one day)"),
        );
    }
    let source = match (request.holdout, request.shadow, request.replay) {
        (Some(path), None, None) => Source::Holdout { path },
        (None, Some(samples), None) if samples > 0 => Source::Shadow {
            samples,
            window_ms: request.window_ms.unwrap_or(60_000),
        },
        (None, None, Some(samples)) if samples > 0 => Source::Replay { samples },
        _ => return error(StatusCode::BAD_REQUEST, usage.to_string()),
    };
    match admin.validator.start(&model, source) {
        Ok(id) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "id": id, "status": format!("/api/v1/validations/{id}") }),
        ),
        Err(e) => {
            let status = match e {
                ValidationError::UnknownModel(_) => StatusCode::NOT_FOUND,
                ValidationError::NoCandidate(_) | ValidationError::Busy(_) => StatusCode::CONFLICT,
                ValidationError::Holdout(_) => StatusCode::BAD_REQUEST,
            };
            error(status, e.to_string())
        }
    }
}

pub(super) async fn validation_status(
    State(admin): State<Arc<Admin>>,
    UrlPath(id): UrlPath<String>,
) -> Response<Body> {
    match id.parse().ok().and_then(|id| admin.validator.status(id)) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(StatusCode::NOT_FOUND, format!("no validation {id}")),
    }
}

pub(super) async fn last_report(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
) -> Response<Body> {
    match admin.validator.report(&model).await {
        Some(report) => json(StatusCode::OK, &report),
        None => error(
            StatusCode::NOT_FOUND,
            format!("model '{model}' has no validation report yet: run teal validate {model}"),
        ),
    }
}

pub(super) async fn shadow(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response<Body> {
    let share = match parse_share(&body) {
        Ok(share) => share,
        Err(response) => return response,
    };
    if let Err(response) = admin.not_during_rollout(&model, "a manual shadow share") {
        return response;
    }
    let candidate = match admin.routes.load().models.get(&model) {
        Some(m) => m.slot(m.table.candidate()).is_some(),
        None => return route_error(RouteError::UnknownModel(model)),
    };
    if share > 0 && !candidate {
        return error(
            StatusCode::CONFLICT,
            format!("model '{model}' has no standby version to mirror to: deploy one first"),
        );
    }
    let (who, name) = (actor(&headers), model.clone());
    let changed = admin
        .change(move |routes, store| {
            let record = record_change(
                store,
                "shadow",
                who,
                |_: &u32| serde_json::json!({ "shadow_bp": share }),
            );
            routes.set_shadow_recorded(&name, share, record)
        })
        .await;
    match changed {
        Ok(_) => json(
            StatusCode::OK,
            &serde_json::json!({ "model": model, "percent": f64::from(share) / 100.0 }),
        ),
        Err(response) => response,
    }
}
