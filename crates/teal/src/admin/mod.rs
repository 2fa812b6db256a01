//! The admin API, on its own listener: status and routing changes, behind a bearer token.
//!
//! None of these routes exist on the data plane's router, so they cannot be reached there.

pub mod metrics;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::middleware::{self, Next};
use axum::routing::{get, post};
use serde::Deserialize;
use teal_core::routing::Color;

use crate::control::rollout::{RolloutError, Rollouts, remember_change};
use crate::control::slots::{SlotError, SlotManager};
use crate::control::validation::{Source, ValidationError, Validator};
use crate::routing::RolloutView;
use crate::routing::{ModelStatus, RouteError, Routes};
use crate::state::store::Store;

/// Shared state of the admin API.
pub struct Admin {
    pub routes: Arc<Routes>,
    pub slots: Arc<SlotManager>,
    pub validator: Arc<Validator>,
    pub store: Arc<Store>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub rollouts: Arc<Rollouts>,
    token: String,
    token_hint: String,
    in_flight: tokio::sync::Semaphore,
}

impl Admin {
    pub fn new(
        slots: Arc<SlotManager>,
        validator: Arc<Validator>,
        store: Arc<Store>,
        metrics: Arc<crate::metrics::Metrics>,
        rollouts: Arc<Rollouts>,
        token: String,
        token_hint: String,
    ) -> Admin {
        Admin {
            routes: slots.routes.clone(),
            rollouts,
            slots,
            validator,
            store,
            metrics,
            token,
            token_hint,
            in_flight: tokio::sync::Semaphore::new(ADMIN_MAX_CONCURRENT),
        }
    }
}

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
    Router::new()
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
        })
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

/// The admin API's OpenAPI 3.1 document. Like `/healthz`, it needs no token: it describes
/// the API, it holds no data.
async fn openapi() -> Response<Body> {
    let mut response = Response::new(Body::from(include_str!("openapi.json")));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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

/// The dashboard's files, built into the binary. They hold no data and need no token; every
/// call they make goes to the API with the token the user enters.
fn asset(name: &str) -> Response<Body> {
    let (body, content_type): (&'static str, &'static str) = match name {
        "app.js" => (
            include_str!("dashboard/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (
            include_str!("dashboard/style.css"),
            "text/css; charset=utf-8",
        ),
        _ => (
            include_str!("dashboard/index.html"),
            "text/html; charset=utf-8",
        ),
    };
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut response = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: String) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Reads a JSON request body; a body that does not fit is a 400 saying what it should be.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    usage: &str,
) -> Result<T, Response<Body>> {
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("{usage}: {e}")))
}

fn route_error(e: RouteError) -> Response<Body> {
    let status = match e {
        RouteError::UnknownModel(_) => StatusCode::NOT_FOUND,
        RouteError::EmptySlot { .. }
        | RouteError::NothingToRollBack { .. }
        | RouteError::NotReady { .. }
        | RouteError::SlotIsLive { .. } => StatusCode::CONFLICT,
    };
    error(status, e.to_string())
}

/// Compares in time that does not depend on where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

async fn status_all(State(admin): State<Arc<Admin>>) -> Response<Body> {
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
    json(
        StatusCode::OK,
        &serde_json::json!({ "models": models, "state": state }),
    )
}

async fn status_one(
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

async fn switch(
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
    match admin.routes.switch(&model, request.to) {
        Ok(outcome) => {
            if outcome.changed {
                admin.live_changed(&outcome, "switched", &headers).await;
            }
            json(StatusCode::OK, &outcome)
        }
        Err(e) => route_error(e),
    }
}

async fn rollback(
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
    match admin.routes.rollback(&model) {
        Ok(outcome) => {
            admin.live_changed(&outcome, "rolled_back", &headers).await;
            json(StatusCode::OK, &outcome)
        }
        Err(e) => route_error(e),
    }
}

/// Prometheus metrics. Like `/healthz`, readable without the token: the admin listener
/// is not public, and scrapers rarely carry one.
///
/// A scraper that asks for OpenMetrics gets it; anyone else gets the classic text format
/// (version 0.0.4), which `promtool check metrics` and older tools read.
/// Who asked: the `x-teal-actor` header the CLI sends (user@host), else "admin-api".
fn actor(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-teal-actor")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .unwrap_or("admin-api")
        .to_string()
}

impl Admin {
    fn status_of(&self, routes: &crate::routing::ModelRoutes) -> ModelStatus {
        ModelStatus {
            rollout: self.rollouts.active(&routes.name).map(RolloutView::of),
            ..ModelStatus::of(routes)
        }
    }

    /// What a hand-made switch or rollback leaves behind: the remembered route, a log line,
    /// the switch counter and an audit event with who asked.
    async fn live_changed(
        &self,
        outcome: &crate::routing::SwitchOutcome,
        kind: &str,
        headers: &axum::http::HeaderMap,
    ) {
        let model = &outcome.model;
        tracing::info!(model = %model, from = %outcome.from, to = %outcome.to, version = %outcome.to_version, generation = outcome.generation, kind);
        self.metrics
            .switches
            .get_or_create(&crate::metrics::ModelLabels {
                model: model.clone(),
            })
            .inc();
        self.record(
            model,
            kind,
            actor(headers),
            serde_json::to_value(outcome).unwrap_or_default(),
        )
        .await;
    }

    /// Refuses a hand-made routing or slot change while a rollout drives the model.
    fn not_during_rollout(&self, model: &str, what: &str) -> Result<(), Response<Body>> {
        match self.rollouts.active(model) {
            Some(r) => Err(error(
                StatusCode::CONFLICT,
                format!(
                    "model '{model}' has rollout {} in progress ({}): {what} would fight it; use teal promote, abort or rollback",
                    r.id,
                    r.phase.name()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Writes the model's slots and route with an audit event of the change (with the live
    /// slot after it) in one transaction.
    async fn record(&self, model: &str, kind: &str, actor: String, detail: serde_json::Value) {
        remember_change(&self.routes, &self.store, model, kind, actor, detail).await;
    }
}

/// Runs a store call on the blocking pool; a failure is a 500 with the reason.
async fn with_store<T: Send + 'static>(
    admin: &Admin,
    call: impl FnOnce(&Store) -> Result<T, crate::state::store::StoreError> + Send + 'static,
) -> Result<T, Response<Body>> {
    let store = admin.store.clone();
    match tokio::task::spawn_blocking(move || call(&store)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) if e.unwritable() => Err(error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "{e}: free space on the state folder's disk (or raise server.state_max_bytes), then retry"
            ),
        )),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the state file task failed: {e}"),
        )),
    }
}

async fn history(
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

async fn audit_verify(State(admin): State<Arc<Admin>>) -> Response<Body> {
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
async fn audit_model(
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

fn slot_error(e: SlotError) -> Response<Body> {
    match e {
        SlotError::Route(e) => route_error(e),
        SlotError::Busy(_) => error(StatusCode::CONFLICT, e.to_string()),
        SlotError::Invalid(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        SlotError::Load { .. } => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    }
}

async fn deploy(
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
    match admin.slots.deploy(&model, &config).await {
        Ok(outcome) => {
            admin
                .record(
                    &model,
                    "deployed",
                    actor(&headers),
                    serde_json::to_value(&outcome).unwrap_or_default(),
                )
                .await;
            json(StatusCode::OK, &outcome)
        }
        Err(e) => slot_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TeardownBody {
    #[serde(default)]
    slot: Option<Color>,
}

async fn teardown(
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
    match admin.slots.teardown(&model, request.slot).await {
        Ok(outcome) => {
            admin
                .record(
                    &model,
                    "torn_down",
                    actor(&headers),
                    serde_json::to_value(&outcome).unwrap_or_default(),
                )
                .await;
            json(StatusCode::OK, &outcome)
        }
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

async fn canary(
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
    match admin.routes.set_weight(&model, share) {
        Ok(table) => {
            tracing::info!(model, candidate = %table.candidate(), weight_bp = table.candidate_weight, "canary weight set");
            admin.record(&model, "canary", actor(&headers), serde_json::json!({ "candidate": table.candidate(), "weight_bp": table.candidate_weight })).await;
            json(
                StatusCode::OK,
                &serde_json::json!({ "model": model, "candidate": table.candidate(), "percent": f64::from(table.candidate_weight) / 100.0, "generation": table.generation }),
            )
        }
        Err(e) => route_error(e),
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

async fn validate(
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

async fn validation_status(
    State(admin): State<Arc<Admin>>,
    UrlPath(id): UrlPath<String>,
) -> Response<Body> {
    match id.parse().ok().and_then(|id| admin.validator.status(id)) {
        Some(status) => json(StatusCode::OK, &status),
        None => error(StatusCode::NOT_FOUND, format!("no validation {id}")),
    }
}

async fn last_report(
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

async fn shadow(
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
    match admin.routes.set_shadow(&model, share) {
        Ok(_) => {
            admin
                .record(
                    &model,
                    "shadow",
                    actor(&headers),
                    serde_json::json!({ "shadow_bp": share }),
                )
                .await;
            json(
                StatusCode::OK,
                &serde_json::json!({ "model": model, "percent": f64::from(share) / 100.0 }),
            )
        }
        Err(e) => route_error(e),
    }
}

fn rollout_error(e: RolloutError) -> Response<Body> {
    let status = match e {
        RolloutError::UnknownModel(_) => StatusCode::NOT_FOUND,
        RolloutError::InProgress { .. } | RolloutError::NoRollout(_) | RolloutError::Refused(_) => {
            StatusCode::CONFLICT
        }
        RolloutError::Invalid(_) => StatusCode::BAD_REQUEST,
        RolloutError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        RolloutError::Unwritable(_) => StatusCode::INSUFFICIENT_STORAGE,
    };
    error(status, e.to_string())
}

/// A rollout request: the version like a config slot, and any settings to override.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    candidate: teal_core::config::SlotConfig,
    /// Replaces the model's configured settings, key by key (`strategy`, `auto_switch`, ...).
    #[serde(default)]
    settings: Option<serde_json::Map<String, serde_json::Value>>,
}

async fn start_rollout(
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
    if let Some((reason, since_ms)) = admin.store.write_error() {
        return error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the state file cannot be written since {} ({reason}): free space on the state folder's disk (or raise server.state_max_bytes), then retry",
                crate::state::store::format_time(since_ms)
            ),
        );
    }
    let mut settings = admin.rollouts.settings(&model);
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
                        "settings: {e} (keys: strategy, auto_switch, switch_delay_ms, observe_ms, keep_warm_ms, abort_removes_green, evidence, rules)"
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

async fn list_rollouts(
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
async fn current_rollout(
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

async fn promote(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
) -> Response<Body> {
    let event = teal_core::rollout::Event::Promote {
        actor: actor(&headers),
    };
    rollout_command(&admin, &model, event).await
}

async fn abort(
    State(admin): State<Arc<Admin>>,
    UrlPath(model): UrlPath<String>,
    headers: axum::http::HeaderMap,
) -> Response<Body> {
    let event = teal_core::rollout::Event::Abort {
        actor: actor(&headers),
    };
    rollout_command(&admin, &model, event).await
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
