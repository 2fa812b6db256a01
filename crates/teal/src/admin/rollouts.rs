//! Rollouts: start one, list them, read the current one, promote or abort it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Response, StatusCode};
use serde::Deserialize;

use super::context::{
    Admin, actor, error, json, parse_body, rollout_error, route_error, with_store,
};
use crate::routing::{RolloutView, RouteError};

/// A rollout request: the version like a config slot, and any settings to override.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    candidate: teal_core::config::SlotConfig,
    /// Replaces the model's configured settings, key by key (`strategy`, `auto_switch`, ...).
    #[serde(default)]
    settings: Option<serde_json::Map<String, serde_json::Value>>,
}

pub(super) async fn start_rollout(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response<Body> {
    let request: RolloutBody = match parse_body(
        &body,
        "body must be {\"candidate\": {\"version\": \"v3\", \"kind\": \"onnx\", \"path\": \"/models/v3.onnx\"}, \"settings\": {...}}",
    ) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    if !admin.routes.load().models.contains_key(&model) {
        return route_error(RouteError::UnknownModel(model));
    }
    // A rollout records every step before it takes it; one that could not would stall.
    if let Err(response) = admin.writable() {
        return response;
    }
    let mut settings = admin.rollouts.settings(&model);
    if let Some(key) = request
        .settings
        .iter()
        .flat_map(|o| o.keys())
        .find(|k| teal_core::rollout::RolloutSettings::OPERATOR_ONLY.contains(&k.as_str()))
    {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "settings.{key}: analyses, webhooks and smoke tests reach addresses and run commands, so they come only from the config file ([[model.rollout.{key}]]); the rollout uses the config file's"
            ),
        );
    }
    if let Some(overrides) = request.settings {
        let mut merged = match serde_json::to_value(&settings) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        for (key, value) in overrides {
            if key == "rules"
                && let (Some(serde_json::Value::Object(base)), serde_json::Value::Object(more)) =
                    (merged.get_mut("rules"), &value)
            {
                base.extend(more.clone());
                continue;
            }
            merged.insert(key, value);
        }
        settings = match serde_json::from_value(serde_json::Value::Object(merged)) {
            Ok(s) => s,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "settings: {e} (keys: strategy, auto_switch, switch_delay_ms, observe_ms, keep_warm_ms, abort_removes_green, evidence, rules, failover, on_inconclusive, max_extensions)"
                    ),
                );
            }
        };
    }
    match admin
        .rollouts
        .start(&model, request.candidate, settings, &actor(&headers))
        .await
    {
        Ok(r) => json(StatusCode::ACCEPTED, &RolloutView::of(r)),
        Err(e) => rollout_error(e),
    }
}

pub(super) async fn list_rollouts(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
) -> Response<Body> {
    let m = model.clone();
    match with_store(&admin, move |store| store.rollouts(&m, 100)).await {
        Ok(list) => json(
            StatusCode::OK,
            &serde_json::json!({ "model": model, "rollouts": list.into_iter().map(RolloutView::of).collect::<Vec<_>>() }),
        ),
        Err(response) => response,
    }
}

/// The rollout in progress, else the newest one.
pub(super) async fn current_rollout(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
) -> Response<Body> {
    if let Some(r) = admin.rollouts.active(&model) {
        return json(StatusCode::OK, &RolloutView::of(r));
    }
    let m = model.clone();
    match with_store(&admin, move |store| store.rollouts(&m, 1)).await {
        Ok(mut list) => match list.pop() {
            Some(r) => json(StatusCode::OK, &RolloutView::of(r)),
            None => error(
                StatusCode::NOT_FOUND,
                format!("model '{model}' has had no rollout: start one with teal deploy"),
            ),
        },
        Err(response) => response,
    }
}

async fn rollout_command(
    admin: &Admin,
    model: &str,
    event: teal_core::rollout::Event,
) -> Response<Body> {
    match admin.rollouts.command(model, event).await {
        Ok(r) => json(StatusCode::OK, &RolloutView::of(r)),
        Err(e) => rollout_error(e),
    }
}

pub(super) async fn promote(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
) -> Response<Body> {
    let event = teal_core::rollout::Event::Promote {
        actor: actor(&headers),
    };
    rollout_command(&admin, &model, event).await
}

pub(super) async fn abort(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
) -> Response<Body> {
    let event = teal_core::rollout::Event::Abort {
        actor: actor(&headers),
    };
    rollout_command(&admin, &model, event).await
}
