//! The endpoints that describe the server and its models: `/v2`, liveness and readiness of
//! the server, each model and each loaded version, and a model's or version's metadata. They
//! read the route snapshot and never call a backend.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Response, StatusCode};

use crate::routing::{ModelRoutes, Slot};

use super::answer::{error_response, json_response};
use super::pick::{find_model, find_version, pick};
use super::{Gateway, ModelPath, VersionPath, path_error};

/// The protocol extensions the server metadata lists, on REST and gRPC alike.
pub(super) const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];

pub(super) async fn server_metadata() -> Response<Body> {
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "name": "teal",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": EXTENSIONS,
        }),
    )
}

pub(super) async fn live() -> Response<Body> {
    json_response(StatusCode::OK, &serde_json::json!({ "live": true }))
}

pub(super) async fn ready(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    let snapshot = gateway.routes.load();
    let ready = snapshot.models.values().all(|m| m.live().is_some());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &serde_json::json!({ "ready": ready }))
}

fn metadata_response(routes: &ModelRoutes, slot: &Slot) -> Response<Body> {
    let mut metadata = serde_json::to_value(routes.metadata(slot)).unwrap_or_default();
    if !slot.card.is_empty() {
        metadata["card"] = serde_json::to_value(&slot.card).unwrap_or_default();
    }
    json_response(StatusCode::OK, &metadata)
}

pub(super) async fn model_metadata(
    State(gateway): State<Arc<Gateway>>,
    path: ModelPath,
) -> Response<Body> {
    let Path(model) = match path {
        Ok(p) => p,
        Err(e) => return path_error(e),
    };
    match find_model(&gateway, &model).and_then(|routes| {
        let slot = pick(&routes, None, &HeaderMap::new())?;
        Ok(metadata_response(&routes, &slot))
    }) {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

pub(super) async fn version_metadata(
    State(gateway): State<Arc<Gateway>>,
    path: VersionPath,
) -> Response<Body> {
    let Path((model, version)) = match path {
        Ok(p) => p,
        Err(e) => return path_error(e),
    };
    match find_model(&gateway, &model).and_then(|routes| {
        let slot = find_version(&routes, &version)?;
        Ok(metadata_response(&routes, &slot))
    }) {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

pub(super) async fn model_ready(
    State(gateway): State<Arc<Gateway>>,
    path: ModelPath,
) -> Response<Body> {
    let Path(model) = match path {
        Ok(p) => p,
        Err(e) => return path_error(e),
    };
    match find_model(&gateway, &model) {
        Ok(routes) => {
            let ready = routes.live().is_some();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json_response(
                status,
                &serde_json::json!({ "name": model, "ready": ready }),
            )
        }
        Err(e) => error_response(&e),
    }
}

pub(super) async fn version_ready(
    State(gateway): State<Arc<Gateway>>,
    path: VersionPath,
) -> Response<Body> {
    let Path((model, version)) = match path {
        Ok(p) => p,
        Err(e) => return path_error(e),
    };
    match find_model(&gateway, &model).and_then(|routes| find_version(&routes, &version)) {
        Ok(_) => json_response(
            StatusCode::OK,
            &serde_json::json!({ "name": model, "version": version, "ready": true }),
        ),
        Err(e) => error_response(&e),
    }
}
