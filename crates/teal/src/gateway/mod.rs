//! The data plane: Open Inference Protocol (V2) REST and the simple JSON predict endpoint.
//!
//! A request reads the route snapshot once, picks a slot, and keeps that slot until it
//! answers. Nothing here waits on storage or on the admin side.

mod answer;
mod body;
mod connection;
mod error;
mod feedback;
mod metadata;
mod pick;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, Response, StatusCode, Uri};
use axum::routing::{get, post};
use teal_core::protocol::{
    self, Datatype, InferRequest, ProtocolError, Signature, Tensor, TensorSpec,
};
use teal_core::routing::WHOLE;

use answer::{Answer, Served, error_response, predicted};
use body::{Payload, body_headers, read_body};
use feedback::feedback;
use metadata::{
    live, model_metadata, model_ready, ready, server_metadata, version_metadata, version_ready,
};
use pick::{find_model, pick};

pub use connection::serve_connection;
pub use error::GatewayError;

use std::time::Instant;

use crate::control::validation::taps::{Captured, Captures, ShadowHub, answer};
use crate::metrics::{ErrorLabels, Metrics, ModelLabels, RequestLabels, SlotLabels};
use crate::state::store::{RequestLog, RequestRecord};

use crate::routing::{ModelRoutes, Routes, Slot};

/// Header naming the version that answered.
pub const VERSION_HEADER: &str = "x-teal-version";
/// Header naming the slot that answered; on a request, asks for a slot (when the model allows it).
pub const SLOT_HEADER: &str = "x-teal-slot";
/// Header carrying the request id: the caller's, echoed, or one teal made.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header carrying the generation of the route table that routed the request.
pub const GENERATION_HEADER: &str = "x-teal-route-generation";
pub use crate::headers::{JSON_LENGTH_HEADER, RequestHeaders, header_text};

/// The headers above as names made at compile time: a name given as a string is parsed and
/// hashed on every use, which showed in profiles of the request path.
mod names {
    use axum::http::HeaderName;
    pub static VERSION: HeaderName = HeaderName::from_static(super::VERSION_HEADER);
    pub static SLOT: HeaderName = HeaderName::from_static(super::SLOT_HEADER);
    pub static REQUEST_ID: HeaderName = HeaderName::from_static(super::REQUEST_ID_HEADER);
    pub static GENERATION: HeaderName = HeaderName::from_static(super::GENERATION_HEADER);
    pub static JSON_LENGTH: HeaderName = HeaderName::from_static(super::JSON_LENGTH_HEADER);
}

/// Shared state of the data plane.
pub struct Gateway {
    pub routes: Arc<Routes>,
    pub max_body_bytes: usize,
    /// Where mirrored requests go while a shadow validation runs.
    pub shadows: Arc<ShadowHub>,
    /// Requests kept for replay.
    pub captures: Arc<Captures>,
    /// Where each routed request is recorded, when the request log is on.
    pub request_log: Option<Arc<RequestLog>>,
    pub metrics: Arc<Metrics>,
    /// The state file, for feedback only (inference never waits on it).
    pub store: Option<Arc<crate::state::store::Store>>,
    /// Requests in flight on a model above which live requests are not mirrored.
    pub shadow_headroom: i64,
    ids: RequestIds,
    /// Each served model's in-flight gauge, found by name without building a label set.
    in_flight: std::sync::RwLock<std::collections::HashMap<String, Gauge>>,
}

type Gauge = prometheus_client::metrics::gauge::Gauge;

/// Decrements the in-flight gauge when the request is done.
struct ActiveGuard(Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Makes request ids that are unique within and across runs without a syscall per request.
struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds {
            prefix: fastrand::u32(..),
            counter: AtomicU64::new(0),
        }
    }

    /// 20 hex digits: the prefix, then the counter. Written by hand: this runs on every
    /// request, where the formatting machinery showed in profiles.
    fn next(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = (u128::from(self.prefix) << 48) | u128::from(n & 0xffff_ffff_ffff);
        let mut digits = [0u8; 20];
        for (i, digit) in digits.iter_mut().rev().enumerate() {
            *digit = HEX[(id >> (4 * i)) as usize & 0xf];
        }
        String::from_utf8_lossy(&digits).into_owned()
    }
}

impl Gateway {
    pub fn new(
        routes: Arc<Routes>,
        max_body_bytes: usize,
        shadows: Arc<ShadowHub>,
        captures: Arc<Captures>,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        Gateway {
            routes,
            max_body_bytes,
            shadows,
            captures,
            request_log: None,
            store: None,
            metrics,
            shadow_headroom: std::thread::available_parallelism().map_or(2, |n| n.get() as i64),
            ids: RequestIds::new(),
            in_flight: Default::default(),
        }
    }

    /// Counts a request in flight on a served model until the guard drops.
    fn active(&self, model: &str) -> Option<ActiveGuard> {
        let gauge = self.in_flight_gauge(model)?;
        gauge.inc();
        Some(ActiveGuard(gauge))
    }

    /// The in-flight gauge of a model teal serves (or served); none for other names, so a
    /// caller cannot grow the label set.
    fn in_flight_gauge(&self, model: &str) -> Option<Gauge> {
        let known = self.in_flight.read().unwrap_or_else(|p| p.into_inner());
        if let Some(gauge) = known.get(model) {
            return Some(gauge.clone());
        }
        drop(known);
        if !self.routes.load().models.contains_key(model) {
            return None;
        }
        let gauge = self.metrics.active.get_or_create_owned(&ModelLabels {
            model: model.to_string(),
        });
        let mut known = self.in_flight.write().unwrap_or_else(|p| p.into_inner());
        known.insert(model.to_string(), gauge.clone());
        Some(gauge)
    }

    /// Records which version and slot answered a request: metrics, and the request log (off
    /// the request path). Requests for models teal does not serve add no metric labels, so a
    /// caller cannot grow the label set.
    fn record(&self, model: &str, endpoint: Endpoint, started: Instant, answer: &mut Answer) {
        let status = answer.status.as_u16();
        let elapsed = started.elapsed();
        let snapshot = self.routes.load();
        let routes = snapshot.models.get(model);
        let answered = answer.served.as_ref().map(|s| &s.slot);
        // The slot's own series, while it is still the one in the table.
        let served = match (routes, answered) {
            (Some(routes), Some(slot)) => routes
                .slot(slot.color)
                .filter(|s| s.version == slot.version),
            _ => None,
        };
        if let Some(served) = served {
            // The common case: the slot's series, resolved on its first answer.
            served.stats.observe(elapsed, status >= 500);
            let handles = served.metrics.get_or_init(|| {
                self.metrics
                    .slot_handles(model, &served.version, &served.color.to_string())
            });
            handles.requests[endpoint as usize].inc();
            handles.latency.observe(elapsed.as_secs_f64());
            match status {
                500.. => handles.backend_errors.inc(),
                400..500 => handles.client_errors.inc(),
                _ => 0,
            };
        } else if answered.is_some() || routes.is_some() {
            // Refused before a slot answered (or by a slot no longer in the table).
            let version = answered.map_or("", |s| s.version.as_str());
            let slot = answered.map_or("", |s| s.color.as_str());
            self.metrics
                .requests
                .get_or_create(&RequestLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    slot: slot.to_string(),
                    endpoint: endpoint.label().to_string(),
                })
                .inc();
            self.metrics
                .latency
                .get_or_create(&SlotLabels {
                    model: model.to_string(),
                    version: version.to_string(),
                    slot: slot.to_string(),
                })
                .observe(elapsed.as_secs_f64());
            if status >= 400 {
                let error_type = if status >= 500 { "backend" } else { "client" };
                self.metrics
                    .errors
                    .get_or_create(&ErrorLabels {
                        model: model.to_string(),
                        version: version.to_string(),
                        slot: slot.to_string(),
                        error_type: error_type.to_string(),
                    })
                    .inc();
            }
        }
        let Some(log) = &self.request_log else { return };
        log.log(RequestRecord {
            request_id: answer.request_id.clone(),
            at_ms: crate::state::store::now_ms() - elapsed.as_millis() as i64,
            model: model.to_string(),
            version: answered.map(|s| s.version.clone()),
            slot: answered.map(|s| s.color.to_string()),
            status,
            latency_us: elapsed.as_micros() as u64,
            prediction: answer.predicted.take().map(|p| p.0),
        });
    }

    /// The candidate to mirror this request to, when the model's shadow share picks it and a
    /// shadow session is listening. Only requests the live slot answers are mirrored.
    fn mirror_target(&self, routes: &ModelRoutes, slot: &Slot) -> Option<Arc<Slot>> {
        let table = &routes.table;
        if table.shadow == 0 || slot.color != table.active || fastrand::u32(..WHOLE) >= table.shadow
        {
            return None;
        }
        let candidate = routes.slot(table.candidate())?.clone();
        if !self.shadows.is_open(&routes.name) {
            return None;
        }
        // Mirroring yields to live traffic: with more requests in flight on the model than
        // the machine has cores, a copy would compete with live requests for the CPU.
        let in_flight = self.in_flight_gauge(&routes.name).map_or(0, |g| g.get());
        if in_flight > self.shadow_headroom {
            self.shadows.dropped.inc();
            return None;
        }
        Some(candidate)
    }

    /// Keeps a sample of answered requests for replay.
    fn capture(&self, routes: &ModelRoutes, body: &bytes::Bytes, json_len: Option<usize>) {
        if routes.capture_rate > 0.0 && fastrand::f64() < routes.capture_rate {
            self.captures.keep(
                &routes.name,
                routes.capture_limit,
                Captured {
                    body: body.clone(),
                    json_len,
                },
            );
        }
    }

    /// The caller's request id when it is a sane header value (visible ASCII, as `to_str`
    /// requires), otherwise a new one.
    fn request_id(&self, headers: &impl RequestHeaders) -> String {
        headers
            .get(&names::REQUEST_ID)
            .and_then(header_text)
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(|| self.ids.next(), str::to_string)
    }
}

/// The data plane as a connection's service: a POST to a model's infer endpoint goes straight
/// to its handler, every other request through the router (matching, path extraction and
/// their allocations were a twentieth of a proxied request's instructions). A path the direct
/// match does not take as it is (percent-encoded, an empty name) goes through the router too,
/// so every answer is the one the router gives.
#[derive(Clone)]
pub struct DataPlane {
    gateway: Arc<Gateway>,
    router: hyper_util::service::TowerToHyperService<Router>,
}

impl DataPlane {
    pub fn new(gateway: Arc<Gateway>) -> DataPlane {
        DataPlane {
            router: hyper_util::service::TowerToHyperService::new(router(gateway.clone())),
            gateway,
        }
    }

    /// The largest request body accepted.
    pub fn max_body_bytes(&self) -> usize {
        self.gateway.max_body_bytes
    }

    /// Answers a `/v2/models/{model}/infer` POST whose body the connection has read whole;
    /// the answer is the one the router would give.
    async fn infer(
        &self,
        model: &str,
        headers: &impl RequestHeaders,
        body: bytes::Bytes,
    ) -> Answer {
        let body = Payload::Whole(body);
        serve_request(&self.gateway, model, None, Endpoint::Infer, headers, body).await
    }
}

type Routed = std::pin::Pin<
    Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>,
>;

impl hyper::service::Service<axum::http::Request<hyper::body::Incoming>> for DataPlane {
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Routed;

    fn call(&self, request: axum::http::Request<hyper::body::Incoming>) -> Routed {
        if request.method() == Method::POST
            && let Some(model) = infer_path_model(request.uri().path())
        {
            let gateway = self.gateway.clone();
            let model = model.to_string();
            let (parts, body) = request.into_parts();
            let body = Payload::Arriving(Body::new(body));
            return Box::pin(async move {
                let headers = &parts.headers;
                let answer = serve_request(&gateway, &model, None, Endpoint::Infer, headers, body);
                Ok(answer.await.into_response())
            });
        }
        Box::pin(self.router.call(request))
    }
}

/// The model of a `/v2/models/{model}/infer` target, when the name is made of characters a
/// URI never encodes (anything else goes through the router, which decodes it); a query is
/// ignored, as the router ignores it. Both the connection loop and [`DataPlane`] use it.
fn infer_path_model(target: &str) -> Option<&str> {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let model = path.strip_prefix("/v2/models/")?.strip_suffix("/infer")?;
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    (!model.is_empty() && model.bytes().all(plain)).then_some(model)
}

/// The data-plane router.
fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/feedback", post(feedback))
        .route("/v1/models/{model}/feedback", post(feedback))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(version_infer),
        )
        .route("/v1/models/{model}/predict", post(predict))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
}

fn path_error(rejection: axum::extract::rejection::PathRejection) -> Response<Body> {
    error_response(&GatewayError::Path(rejection.body_text()))
}

type ModelPath = Result<Path<String>, axum::extract::rejection::PathRejection>;
type VersionPath = Result<Path<(String, String)>, axum::extract::rejection::PathRejection>;

/// Runs a decoded request on a slot, through the slot's cache when it has one.
async fn run_on_slot(
    slot: &Slot,
    model: &str,
    request: &mut InferRequest,
) -> Result<Arc<Vec<Tensor>>, GatewayError> {
    let key = slot.cache.as_ref().and_then(|cache| cache.key(request));
    if let (Some(cache), Some(key)) = (&slot.cache, &key)
        && let Some(outputs) = cache.get(key)
    {
        return Ok(outputs);
    }
    let outputs = slot
        .backend
        .infer(request)
        .await
        .map_err(|source| GatewayError::Backend {
            model: model.to_string(),
            version: slot.version.clone(),
            source,
        })?;
    let outputs = Arc::new(outputs);
    if let (Some(cache), Some(key)) = (&slot.cache, key) {
        cache.put(key, outputs.clone());
    }
    Ok(outputs)
}

/// Runs a request on its slot and, when `mirror` names a candidate, sends a copy there after
/// the live answer exists (the copy never delays or changes it).
async fn run_and_mirror(
    gateway: &Gateway,
    routes: &ModelRoutes,
    slot: &Slot,
    mirror: Option<Arc<Slot>>,
    request: &mut InferRequest,
) -> Result<Arc<Vec<Tensor>>, GatewayError> {
    let copy = mirror.as_ref().map(|_| request.clone());
    let started = Instant::now();
    let outputs = run_on_slot(slot, &routes.name, request).await?;
    if let (Some(candidate), Some(copy)) = (mirror, copy) {
        let output = routes.prediction_output.clone();
        let live = answer(
            Some(&outputs),
            started.elapsed().as_secs_f64() * 1000.0,
            output.as_deref(),
        );
        gateway
            .shadows
            .mirror(&routes.name, candidate, copy, live, output);
    }
    Ok(outputs)
}

async fn run_infer(
    gateway: &Gateway,
    model: &str,
    version: Option<&str>,
    headers: &impl RequestHeaders,
    body: Payload,
) -> Result<Answer, Failure> {
    let json_len = body_headers(headers, true)?;
    let body = read_body(body, headers, gateway.max_body_bytes).await?;
    let routes = find_model(gateway, model)?;
    let in_flight = pick(&routes, version, headers)?.enter();
    let slot = in_flight.slot();
    let generation = routes.table.generation;
    let mirror = gateway.mirror_target(&routes, slot);
    if slot.cache.is_none()
        && mirror.is_none()
        && let Some(upstream) = slot.backend.v2_upstream()
    {
        // Fast path: check the request when the server published its inputs, then pass the
        // bytes through both ways.
        if let Some(signature) = slot.backend.signature() {
            InferRequest::decode(&body, json_len, Some(signature))?;
        }
        let answer = upstream
            .forward(body.clone(), json_len)
            .await
            .map_err(|source| Failure::backend(model, slot, generation, source))?;
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = if answer.json_len.is_some() {
            "application/octet-stream"
        } else {
            "application/json"
        };
        // Reading the answer costs a parse, so only models that name their prediction output
        // (and so can take feedback) pay it.
        let label = match routes.prediction_output.as_deref() {
            Some(name) if gateway.request_log.is_some() && status.is_success() => {
                protocol::decode_response(&answer.body, answer.json_len)
                    .ok()
                    .and_then(|outputs| predicted(&outputs, Some(name)))
            }
            _ => None,
        };
        let mut reply = Answer::new(status, content_type, answer.body).routed(slot, generation);
        reply.json_len = answer.json_len;
        if (200..300).contains(&answer.status) {
            gateway.capture(&routes, &body, json_len);
            reply.predicted = label;
        }
        return Ok(reply);
    }
    let mut request = InferRequest::decode(&body, json_len, slot.backend.signature())?;
    let outputs = run_and_mirror(gateway, &routes, slot, mirror, &mut request)
        .await
        .map_err(|e| Failure::on(slot, generation, e))?;
    gateway.capture(&routes, &body, json_len);
    let encoded = protocol::encode_response(model, &slot.version, &request, &outputs);
    let content_type = match encoded.json_len {
        None => "application/json",
        Some(_) => "application/octet-stream",
    };
    let mut reply =
        Answer::new(StatusCode::OK, content_type, encoded.body).routed(slot, generation);
    reply.json_len = encoded.json_len;
    if gateway.request_log.is_some() {
        reply.predicted = predicted(&outputs, routes.prediction_output.as_deref());
    }
    Ok(reply)
}

/// Why a model request failed, with the slot it failed on when a slot's backend failed:
/// the answer then names the version, and the failure counts against it (the rollback
/// rules read that). A request refused before its backend was asked names none.
struct Failure {
    error: GatewayError,
    served: Option<Served>,
}

impl From<GatewayError> for Failure {
    fn from(error: GatewayError) -> Failure {
        Failure {
            error,
            served: None,
        }
    }
}

impl From<ProtocolError> for Failure {
    fn from(error: ProtocolError) -> Failure {
        GatewayError::from(error).into()
    }
}

impl Failure {
    /// An error of `slot`'s backend, or any other error raised while it ran.
    fn on(slot: &Arc<Slot>, generation: u64, error: GatewayError) -> Failure {
        let served = matches!(error, GatewayError::Backend { .. }).then(|| Served {
            slot: slot.clone(),
            generation,
        });
        Failure { error, served }
    }

    fn backend(
        model: &str,
        slot: &Arc<Slot>,
        generation: u64,
        source: crate::backends::BackendError,
    ) -> Failure {
        let error = GatewayError::Backend {
            model: model.to_string(),
            version: slot.version.clone(),
            source,
        };
        Failure::on(slot, generation, error)
    }
}

/// The data-plane endpoints that run a model (the order of [`SlotHandles::requests`]).
///
/// [`SlotHandles::requests`]: crate::metrics::SlotHandles
#[derive(Clone, Copy)]
enum Endpoint {
    Infer = 0,
    Predict = 1,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Infer => "infer",
            Endpoint::Predict => "predict",
        }
    }
}

/// Runs one request on a model: counts it in flight, turns any error into its response in
/// one place, and records which version answered.
async fn serve_request(
    gateway: &Gateway,
    model: &str,
    version: Option<&str>,
    endpoint: Endpoint,
    headers: &impl RequestHeaders,
    body: Payload,
) -> Answer {
    let request_id = gateway.request_id(headers);
    let started = Instant::now();
    let _active = gateway.active(model);
    let traceparent = crate::trace::parse(headers);
    let work = async {
        match endpoint {
            Endpoint::Infer => run_infer(gateway, model, version, headers, body).await,
            Endpoint::Predict => run_predict(gateway, model, headers, body).await,
        }
    };
    let outcome = crate::trace::scope(traceparent.clone(), work).await;
    let trace_id = traceparent.as_deref().map(crate::trace::trace_id);
    let mut answer = match outcome {
        Ok(answer) => answer,
        Err(Failure { error: e, served }) => {
            if e.status().is_server_error() {
                tracing::warn!(request_id = %request_id, trace_id, model, error = %e, "request failed");
            } else {
                tracing::debug!(request_id = %request_id, trace_id, model, error = %e, "request refused");
            }
            Answer {
                served,
                ..Answer::error(&e)
            }
        }
    };
    answer.request_id = request_id;
    tracing::debug!(
        request_id = %answer.request_id,
        trace_id,
        model,
        version = answer.served.as_ref().map(|s| s.slot.version.as_str()),
        status = answer.status.as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "served"
    );
    gateway.record(model, endpoint, started, &mut answer);
    answer
}

/// A model request that came through the router.
async fn serve_routed(
    gateway: &Gateway,
    model: &str,
    version: Option<&str>,
    endpoint: Endpoint,
    request: axum::extract::Request,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let body = Payload::Arriving(body);
    serve_request(gateway, model, version, endpoint, &parts.headers, body)
        .await
        .into_response()
}

async fn infer(
    State(gateway): State<Arc<Gateway>>,
    path: ModelPath,
    request: axum::extract::Request,
) -> Response<Body> {
    match path {
        Ok(Path(model)) => serve_routed(&gateway, &model, None, Endpoint::Infer, request).await,
        Err(e) => path_error(e),
    }
}

async fn version_infer(
    State(gateway): State<Arc<Gateway>>,
    path: VersionPath,
    request: axum::extract::Request,
) -> Response<Body> {
    match path {
        Ok(Path((model, version))) => {
            serve_routed(&gateway, &model, Some(&version), Endpoint::Infer, request).await
        }
        Err(e) => path_error(e),
    }
}

async fn predict(
    State(gateway): State<Arc<Gateway>>,
    path: ModelPath,
    request: axum::extract::Request,
) -> Response<Body> {
    match path {
        Ok(Path(model)) => serve_routed(&gateway, &model, None, Endpoint::Predict, request).await,
        Err(e) => path_error(e),
    }
}

/// The form the simple endpoint assumes for a model server that publishes no metadata.
fn assumed_signature() -> Signature {
    Signature {
        inputs: vec![TensorSpec {
            name: "input".into(),
            datatype: Datatype::Fp64,
            shape: vec![-1, -1],
        }],
        outputs: Vec::new(),
    }
}

async fn run_predict(
    gateway: &Gateway,
    model: &str,
    headers: &impl RequestHeaders,
    body: Payload,
) -> Result<Answer, Failure> {
    body_headers(headers, false)?;
    let body = read_body(body, headers, gateway.max_body_bytes).await?;
    let routes = find_model(gateway, model)?;
    let in_flight = pick(&routes, None, headers)?.enter();
    let slot = in_flight.slot();
    let assumed;
    let signature = match slot.backend.signature() {
        Some(signature) => signature,
        None => {
            assumed = assumed_signature();
            &assumed
        }
    };
    let mut request = InferRequest::from_features(&body, signature)?;
    let wanted = routes
        .prediction_output
        .as_deref()
        .or_else(|| signature.outputs.first().map(|o| o.name.as_str()));
    let generation = routes.table.generation;
    let mirror = gateway.mirror_target(&routes, slot);
    let outputs = run_and_mirror(gateway, &routes, slot, mirror, &mut request)
        .await
        .map_err(|e| Failure::on(slot, generation, e))?;
    let chosen = match wanted {
        Some(name) => outputs.iter().find(|o| o.name == name),
        None => outputs.first(),
    };
    let predictions = chosen.map(protocol::predictions).unwrap_or_default();
    let mut answer = Answer::json(
        StatusCode::OK,
        &serde_json::json!({ "predictions": predictions, "model_version": slot.version, "slot": slot.color }),
    )
    .routed(slot, generation);
    if gateway.request_log.is_some() {
        answer.predicted = predicted(&outputs, wanted);
    }
    Ok(answer)
}

async fn no_route(method: Method, uri: Uri) -> Response<Body> {
    error_response(&GatewayError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    })
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response<Body> {
    error_response(&GatewayError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_infer_paths_skip_the_router() {
        assert_eq!(infer_path_model("/v2/models/digits/infer"), Some("digits"));
        assert_eq!(
            infer_path_model("/v2/models/a.b-c_1/infer"),
            Some("a.b-c_1")
        );
        for other in [
            "/v2/models//infer",
            "/v2/models/digits%2Fx/infer",
            "/v2/models/digits/versions/v1/infer",
            "/v2/models/digits/infer/",
            "/v2/models/digits",
            "/v1/models/digits/predict",
        ] {
            assert_eq!(infer_path_model(other), None, "{other}");
        }
    }

    #[test]
    fn request_ids_are_the_prefix_then_the_counter_in_hex() {
        let ids = RequestIds {
            prefix: 0x0a1b_2c3d,
            counter: AtomicU64::new(0xfff),
        };
        assert_eq!(ids.next(), "0a1b2c3d000000000fff");
        assert_eq!(ids.next(), "0a1b2c3d000000001000");
    }
}
