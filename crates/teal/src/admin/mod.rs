//! The admin API, on its own listener: status and routing changes, behind a bearer token.
//!
//! None of these routes exist on the data plane's router, so they cannot be reached there.
//!
//! This file holds the router and what every request passes through: the token check, the
//! body limit, the concurrency limit and the rewriting of framework errors into JSON. The
//! handlers live by resource: `status` (status, switch, rollback), `slots` (deploy, teardown,
//! canary, shadow, validations), `rollouts`, `audit`, `metrics`, and `assets` (the dashboard
//! and the OpenAPI document); `context` holds the state and helpers they share.

// A handler's error is the response it answers with, built once per refused request; boxing
// it would only add an allocation.
#![allow(clippy::result_large_err)]

mod assets;
mod audit;
mod context;
pub mod metrics;
mod rollouts;
mod slots;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::middleware::{self, Next};
use axum::routing::{get, post};

use assets::{asset, openapi};
use audit::{audit_model, audit_verify, history};
pub use context::Admin;
use context::error;
use rollouts::{abort, current_rollout, list_rollouts, promote, start_rollout};
use slots::{canary, deploy, last_report, shadow, teardown, validate, validation_status};
use status::{rollback, status_all, status_one, switch};

use crate::state::token::same_secret;

/// The admin router; every route but `/healthz`, `/metrics`, the dashboard's files and the
/// OpenAPI document needs the token.
pub fn router(admin: Arc<Admin>) -> Router {
    let protected = Router::new()
        .route("/api/v1/status", get(status_all))
        .route("/api/v1/models/{model}", get(status_one))
        .route("/api/v1/models/{model}/switch", post(switch))
        .route("/api/v1/models/{model}/rollback", post(rollback))
        .route("/api/v1/models/{model}/deploy", post(deploy))
        .route("/api/v1/models/{model}/teardown", post(teardown))
        .route("/api/v1/models/{model}/validate", post(validate))
        .route("/api/v1/models/{model}/canary", post(canary))
        .route("/api/v1/models/{model}/shadow", post(shadow))
        .route(
            "/api/v1/models/{model}/rollouts",
            post(start_rollout).get(list_rollouts),
        )
        .route("/api/v1/models/{model}/rollout", get(current_rollout))
        .route("/api/v1/models/{model}/promote", post(promote))
        .route("/api/v1/models/{model}/abort", post(abort))
        .route("/api/v1/models/{model}/history", get(history))
        .route("/api/v1/models/{model}/audit", get(audit_model))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/models/{model}/report", get(last_report))
        .route("/api/v1/validations/{id}", get(validation_status))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token));
    let router = Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route("/dashboard", get(|| async { asset("index.html") }))
        .route("/dashboard/app.js", get(|| async { asset("app.js") }))
        .route("/dashboard/style.css", get(|| async { asset("style.css") }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::metrics))
        .merge(protected)
        .fallback(|uri: axum::http::Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                format!("no admin endpoint {}: see /api/v1/status", uri.path()),
            )
        });
    guarded(router, admin)
}

/// The metrics listener's router (`server.metrics_listen`): `GET /metrics` and nothing else,
/// without the token, so a scraper can reach it at an address the admin API is not on.
pub fn metrics_router(admin: Arc<Admin>) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics::metrics))
        .fallback(|uri: axum::http::Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "no endpoint {} here: this listener serves GET /metrics only",
                    uri.path()
                ),
            )
        });
    guarded(router, admin)
}

/// What both listeners' routers share: a JSON 405, the body limit, the bound on concurrent
/// calls, and every error answered in JSON.
fn guarded(router: Router<Arc<Admin>>, admin: Arc<Admin>) -> Router {
    router
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{method} is not allowed on {}", uri.path()),
                )
            },
        )
        .layer(DefaultBodyLimit::max(ADMIN_MAX_BODY))
        .layer(middleware::from_fn_with_state(
            admin.clone(),
            limit_concurrency,
        ))
        .layer(middleware::map_response(json_errors))
        .with_state(admin)
}

/// The largest admin request body: the biggest is a rollout with its settings, a few KB.
const ADMIN_MAX_BODY: usize = 1024 * 1024;

/// Admin requests served at once; more are refused with 429 rather than queued, so a
/// runaway script cannot pile work onto the process that serves the models.
const ADMIN_MAX_CONCURRENT: usize = 64;

async fn limit_concurrency(
    State(admin): State<Arc<Admin>>,
    request: Request,
    next: Next,
) -> Response<Body> {
    match admin.in_flight.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {ADMIN_MAX_CONCURRENT} admin requests at once: wait for some to finish, then retry"
            ),
        ),
    }
}

/// Errors the framework answers by itself (a body over the limit, a path that is not
/// UTF-8) come as plain text; the admin API speaks JSON, so they are wrapped in
/// `{"error": ...}` like every other error.
async fn json_errors(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = match (status, text.is_empty()) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            format!("the request body is larger than the limit of {ADMIN_MAX_BODY} bytes")
        }
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string(),
        (_, false) => text,
    };
    let mut response = error(status, message);
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The body was not read: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn require_token(
    State(admin): State<Arc<Admin>>,
    request: Request,
    next: Next,
) -> Response<Body> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if same_secret(token.as_bytes(), admin.token.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                format!(
                    "missing or wrong admin token: send Authorization: Bearer <token> ({})",
                    admin.token_hint
                ),
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
