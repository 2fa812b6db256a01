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
pub(super) const EXTENSIONS: [&str; 3] = ["binary_tensor_data", "statistics", "model_repository"];

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

/// One version's statistics in the statistics extension's form (Triton's `model_stats`
/// entry): answered and failed requests with the time they took, from the slot's own counts
/// since it was loaded; for an in-process version also the time requests waited for a
/// worker (`queue`), the time of the calls they ran in (`compute_infer`; a batched request is
/// charged its batch's whole call, as Triton does), the calls (`execution_count`), the rows
/// they held (`inference_count`) and the calls by the rows they held (`batch_stats`). teal
/// does not time input and output conversion apart from the call, so those are zero. A model
/// server's queue and compute times are its own to report.
fn version_stats(model: &str, slot: &Slot) -> serde_json::Value {
    let totals = slot.stats.totals();
    let zero = serde_json::json!({ "count": 0, "ns": 0 });
    let timed = |count: u64, ns: u64| serde_json::json!({ "count": count, "ns": ns });
    let calls = slot.backend.calls();
    let (inferences, executions, queue, compute) = match &calls {
        Some(c) => (
            c.rows,
            c.calls,
            timed(c.requests, c.queue_ns),
            timed(c.requests, c.compute_ns),
        ),
        None => (totals.ok, totals.ok, zero.clone(), zero.clone()),
    };
    let batch_stats: Vec<serde_json::Value> = calls
        .iter()
        .flat_map(|c| &c.by_rows)
        .map(|(rows, n, ns)| {
            serde_json::json!({
                "batch_size": rows,
                "compute_input": timed(*n, 0),
                "compute_infer": timed(*n, *ns),
                "compute_output": timed(*n, 0),
            })
        })
        .collect();
    serde_json::json!({
        "name": model,
        "version": slot.version,
        "last_inference": totals.last_ms,
        "inference_count": inferences,
        "execution_count": executions,
        "inference_stats": {
            "success": { "count": totals.ok, "ns": totals.ok_ns },
            "fail": { "count": totals.failed, "ns": totals.failed_ns },
            "queue": queue,
            "compute_input": zero,
            "compute_infer": compute,
            "compute_output": zero,
            "cache_hit": zero,
            "cache_miss": zero,
        },
        "batch_stats": batch_stats,
    })
}

fn stats_response(entries: Vec<serde_json::Value>) -> Response<Body> {
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "model_stats": entries }),
    )
}

/// `GET /v2/models/stats`: every loaded version of every model.
pub(super) async fn all_stats(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    let snapshot = gateway.routes.load();
    let entries = snapshot
        .models
        .values()
        .flat_map(|routes| {
            routes
                .slots()
                .map(|slot| version_stats(&routes.name, slot))
                .collect::<Vec<_>>()
        })
        .collect();
    stats_response(entries)
}

/// `GET /v2/models/{model}/stats`: every loaded version of one model.
pub(super) async fn model_stats(
    State(gateway): State<Arc<Gateway>>,
    path: ModelPath,
) -> Response<Body> {
    let Path(model) = match path {
        Ok(p) => p,
        Err(e) => return path_error(e),
    };
    match find_model(&gateway, &model) {
        Ok(routes) => stats_response(
            routes
                .slots()
                .map(|slot| version_stats(&routes.name, slot))
                .collect(),
        ),
        Err(e) => error_response(&e),
    }
}

/// `GET /v2/models/{model}/versions/{version}/stats`: one version.
pub(super) async fn version_stats_endpoint(
    State(gateway): State<Arc<Gateway>>,
    path: VersionPath,
) -> Response<Body> {
    let Path((model, version)) = match path {
        Ok(p) => p,
        Err(e) => return path_error(e),
    };
    match find_model(&gateway, &model).and_then(|routes| find_version(&routes, &version)) {
        Ok(slot) => stats_response(vec![version_stats(&model, &slot)]),
        Err(e) => error_response(&e),
    }
}

/// `POST /v2/repository/index`: every model and its loaded versions, `READY` (teal serves
/// what it has loaded; a model whose versions could not load is not in the table). The body
/// may be empty or `{"ready": true}` (only ready models, which here is all of them); an index
/// of another repository than teal's own (`/v2/repository/{name}/index`) is not served.
pub(super) async fn repository_index(
    State(gateway): State<Arc<Gateway>>,
    body: axum::body::Bytes,
) -> Response<Body> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct IndexRequest {
            #[serde(default)]
            ready: bool,
        }
        if let Err(e) = serde_json::from_slice::<IndexRequest>(&body) {
            return error_response(&super::GatewayError::Protocol(
                teal_core::protocol::ProtocolError::Malformed(e.to_string()),
            ));
        }
    }
    let snapshot = gateway.routes.load();
    let index: Vec<serde_json::Value> = snapshot
        .models
        .values()
        .flat_map(|routes| {
            routes
                .slots()
                .map(|slot| {
                    serde_json::json!({
                        "name": routes.name,
                        "version": slot.version,
                        "state": "READY",
                        "reason": "",
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    json_response(StatusCode::OK, &serde_json::Value::Array(index))
}
