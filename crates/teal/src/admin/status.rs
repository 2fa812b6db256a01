//! The routing state and the hand-made changes to it: status, switch and rollback.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Response, StatusCode};
use serde::Deserialize;
use teal_core::routing::Color;

use super::context::{Admin, actor, json, parse_body, rollout_error, route_error};
use crate::control::rollout::record_change;
use crate::routing::{ModelStatus, RolloutView, RouteError, SwitchOutcome};

pub(super) async fn status_all(State(admin): State<Arc<Admin>>) -> Response<Body> {
    let snapshot = admin.routes.load();
    let models: Vec<ModelStatus> = snapshot
        .models
        .values()
        .map(|m| admin.status_of(m))
        .collect();
    let state = match admin.store.write_error() {
        None => serde_json::json!({ "writable": true }),
        Some((error, since_ms)) => serde_json::json!({
            "writable": false,
            "error": error,
            "since": crate::state::store::format_time(since_ms),
        }),
    };
    let mut answer = serde_json::json!({ "models": models, "state": state });
    if !admin.not_started.is_empty() {
        answer["not_started"] = serde_json::json!(admin.not_started);
    }
    json(StatusCode::OK, &answer)
}

pub(super) async fn status_one(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
) -> Response<Body> {
    match admin.routes.load().models.get(&model) {
        Some(routes) => json(StatusCode::OK, &admin.status_of(routes)),
        None => route_error(RouteError::UnknownModel(model)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchBody {
    to: Color,
}

pub(super) async fn switch(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response<Body> {
    let request: SwitchBody = match parse_body(&body, "body must be {\"to\": \"blue\"|\"green\"}") {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    if let Err(response) = admin.not_during_rollout(&model, "a manual switch") {
        return response;
    }
    let who = actor(&headers);
    let changed = admin
        .change(move |routes, store| {
            let record = record_change(store, "switched", who, outcome_detail);
            routes.switch_recorded(&model, request.to, record)
        })
        .await;
    match changed {
        Ok(outcome) => {
            if outcome.changed {
                admin.live_changed(&outcome, "switched");
            }
            json(StatusCode::OK, &outcome)
        }
        Err(response) => response,
    }
}

pub(super) async fn rollback(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
) -> Response<Body> {
    if let Some(r) = admin.rollouts.active(&model) {
        // A rollout's rollback goes through the rollout, so it ends there with a record.
        let event = teal_core::rollout::Event::Rollback {
            actor: actor(&headers),
        };
        if r.accepts(&event).is_ok() {
            return match admin.rollouts.command(&model, event).await {
                Ok(r) => json(StatusCode::OK, &RolloutView::of(r)),
                Err(e) => rollout_error(e),
            };
        }
        if let Err(response) = admin.not_during_rollout(&model, "a manual rollback") {
            return response;
        }
    }
    let who = actor(&headers);
    let changed = admin
        .change(move |routes, store| {
            let record = record_change(store, "rolled_back", who, outcome_detail);
            routes.rollback_recorded(&model, record)
        })
        .await;
    match changed {
        Ok(outcome) => {
            admin.live_changed(&outcome, "rolled_back");
            json(StatusCode::OK, &outcome)
        }
        Err(response) => response,
    }
}

/// A switch's audit detail: its outcome as the API answers it.
fn outcome_detail(outcome: &SwitchOutcome) -> serde_json::Value {
    serde_json::to_value(outcome).unwrap_or_default()
}
