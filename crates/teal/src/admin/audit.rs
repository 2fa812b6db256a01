//! The audit log: a model's history, the hash chain's check, and which version served at a
//! time or a given request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Response, StatusCode};

use super::context::{Admin, error, json, route_error, with_store};
use crate::routing::RouteError;

pub(super) async fn history(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response<Body> {
    let limit = match query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
    {
        None => 100,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => n,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be a whole number from 1 to 10000, not '{text}'"),
                );
            }
        },
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

/// A query value with its `%XX` escapes decoded (bytes that are not UTF-8 become U+FFFD,
/// which no time or request id contains).
fn percent_decoded(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) if hex(hi).is_some() && hex(lo).is_some() => {
                out.push((hex(hi).unwrap_or(0) * 16 + hex(lo).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Which version served: `?at=TIME` (the live version then) or `?request=ID`.
pub(super) async fn audit_model(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response<Body> {
    let query = query.unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .map(percent_decoded)
    };
    if let Some(id) = param("request") {
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
        return json(StatusCode::OK, &serde_json::json!({ "requests": records }));
    }
    // Without a time: the version live now.
    let at = param("at").unwrap_or_else(|| crate::state::store::now_ms().to_string());
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
