//! The audit log: a model's history, the hash chain's check, and which version served at a
//! time or a given request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Response, StatusCode};
use serde::Deserialize;

use super::context::{Admin, Query, error, json, route_error, with_store};
use crate::routing::RouteError;

/// `?limit=N` on a model's history. The value stays text until [`HistoryQuery::limit`]
/// reads it, so a refusal can quote what was sent.
#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    limit: Option<String>,
}

impl HistoryQuery {
    /// The most events to answer with: 100 unless asked, at most 10000 so one call cannot
    /// make the process read the whole log into memory.
    fn limit(&self) -> Result<usize, Response<Body>> {
        let Some(text) = self.limit.as_deref() else {
            return Ok(100);
        };
        match text.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                format!("limit must be a whole number from 1 to 10000, not '{text}'"),
            )),
        }
    }
}

pub(super) async fn history(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    Query(query): Query<HistoryQuery>,
) -> Response<Body> {
    let limit = match query.limit() {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let served = admin.routes.load().models.contains_key(&model);
    let name = model.clone();
    match with_store(&admin, move |store| store.events(&name, limit)).await {
        // A model no longer served keeps its history; one never seen has none.
        Ok(events) if events.is_empty() && !served => route_error(RouteError::UnknownModel(model)),
        Ok(events) => json(StatusCode::OK, &serde_json::json!({ "events": events })),
        Err(response) => response,
    }
}

pub(super) async fn audit_verify(State(admin): State<Arc<Admin>>) -> Response<Body> {
    match with_store(&admin, |store| store.verify()).await {
        Ok(verification) => json(StatusCode::OK, &verification),
        Err(response) => response,
    }
}

/// `?at=TIME` or `?request=ID` on a model's audit. Both stay text: a time is read by the
/// store's parser, which names the forms it accepts when it refuses one.
#[derive(Deserialize)]
pub(super) struct AuditQuery {
    at: Option<String>,
    request: Option<String>,
}

/// Which version served: `?at=TIME` (the live version then) or `?request=ID`.
pub(super) async fn audit_model(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    Query(query): Query<AuditQuery>,
) -> Response<Body> {
    if let Some(id) = query.request {
        let records = match with_store(&admin, move |store| store.request(&id)).await {
            Ok(records) => records,
            Err(response) => return response,
        };
        let records: Vec<_> = records.into_iter().filter(|r| r.model == model).collect();
        if records.is_empty() {
            return error(
                StatusCode::NOT_FOUND,
                format!("no request with that id for model '{model}' in the request log"),
            );
        }
        // Where the serving version's model file came from: the slot's, while it is loaded,
        // else the newest audit event that recorded it (a deploy or a rollout's fetch).
        let snapshot = admin.slots.routes.load();
        let loaded = |version: &str| {
            snapshot
                .models
                .get(&model)
                .and_then(|m| {
                    m.slots
                        .iter()
                        .flatten()
                        .find(|s| s.version == version)
                        .cloned()
                })
                .and_then(|s| s.provenance.clone())
                .and_then(|p| serde_json::to_value(p).ok())
        };
        let name = model.clone();
        let events = with_store(&admin, move |store| store.events(&name, 10_000))
            .await
            .unwrap_or_default();
        let recorded = |version: &str| {
            events
                .iter()
                .find(|e| e.detail["version"] == version && e.detail["provenance"].is_object())
                .map(|e| e.detail["provenance"].clone())
        };
        let requests: Vec<serde_json::Value> = records
            .into_iter()
            .map(|record| {
                let provenance = record
                    .version
                    .as_deref()
                    .and_then(|v| loaded(v).or_else(|| recorded(v)));
                let mut value = serde_json::to_value(&record).unwrap_or_default();
                if let Some(provenance) = provenance {
                    value["provenance"] = provenance;
                }
                value
            })
            .collect();
        return json(StatusCode::OK, &serde_json::json!({ "requests": requests }));
    }
    // Without a time: the version live now.
    let at = query
        .at
        .unwrap_or_else(|| crate::state::store::now_ms().to_string());
    let Some(at_ms) = crate::state::store::parse_time(&at) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "'{at}' is not a time: write it like 2026-11-22T01:02:03Z, or as epoch milliseconds"
            ),
        );
    };
    match with_store(&admin, move |store| store.live_at(&model, at_ms)).await {
        Ok(Some(event)) => json(
            StatusCode::OK,
            &serde_json::json!({ "at": crate::state::store::format_time(at_ms), "live_slot": event.live_slot, "live_version": event.live_version, "since": event }),
        ),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            format!(
                "the audit log has nothing about that model at or before {}",
                crate::state::store::format_time(at_ms)
            ),
        ),
        Err(response) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit read from `?limit=TEXT`, or the refusal's status and message.
    async fn limit(text: Option<&str>) -> Result<usize, (StatusCode, String)> {
        let query = HistoryQuery {
            limit: text.map(str::to_string),
        };
        match query.limit() {
            Ok(limit) => Ok(limit),
            Err(response) => {
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 4096)
                    .await
                    .expect("a small body");
                let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                Err((
                    status,
                    body["error"].as_str().unwrap_or_default().to_string(),
                ))
            }
        }
    }

    #[tokio::test]
    async fn history_answers_a_hundred_events_unless_asked() {
        assert_eq!(limit(None).await, Ok(100));
        assert_eq!(limit(Some("1")).await, Ok(1));
        assert_eq!(limit(Some("10000")).await, Ok(10_000));
    }

    #[tokio::test]
    async fn a_limit_outside_one_to_ten_thousand_is_a_400_quoting_it() {
        for bad in ["", "0", "-1", "10001", "abc", "99999999999999999999"] {
            assert_eq!(
                limit(Some(bad)).await,
                Err((
                    StatusCode::BAD_REQUEST,
                    format!("limit must be a whole number from 1 to 10000, not '{bad}'")
                )),
            );
        }
    }
}
