//! Serving a model request, the same on both paths (the connection's and the router's): read
//! and check the body, pick the slot, call its backend (or pass the bytes through to a V2
//! server), encode the answer, then count it and log it. Every error becomes its answer here,
//! in one place.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use teal_core::protocol::{
    self, Datatype, InferRequest, ProtocolError, Signature, Tensor, TensorSpec,
};

use crate::backends::admission::{Admission, Place, Refused};
use crate::log_throttle::Verdict;
use crate::routing::{ModelRoutes, Slot};

use super::answer::{Answer, Served, predicted, predicted_value};
use super::body::{BodyDeadline, Payload, body_headers, read_body};
use super::mirror::run_and_mirror;
use super::pick::{find_model, pick};
use super::{Gateway, GatewayError, RequestHeaders, header_text, names};

/// The data-plane endpoints that run a model (the order of [`SlotHandles::requests`]).
///
/// [`SlotHandles::requests`]: crate::metrics::SlotHandles
#[derive(Clone, Copy)]
pub(super) enum Endpoint {
    Infer = 0,
    /// teal's simple format, `/v1/models/{m}/predict` with `{"features": ...}`.
    Predict = 1,
    /// KServe's V1 protocol, `/v1/models/{m}:predict` with `{"instances": ...}`.
    KServeV1 = 2,
    /// The Open Inference Protocol over gRPC, `ModelInfer` (`grpc.rs`).
    GrpcInfer = 3,
}

impl Endpoint {
    /// The `endpoint` label of the request metrics.
    pub(super) fn label(self) -> &'static str {
        match self {
            Endpoint::Infer => "infer",
            Endpoint::Predict => "predict",
            Endpoint::KServeV1 => "kserve_v1",
            Endpoint::GrpcInfer => "grpc_infer",
        }
    }
}

/// A request's admission as it stands when its head has arrived, before its body is read.
pub(super) enum Entry {
    /// Not checked yet: the router's path, whose body is still arriving, checks before
    /// reading it.
    Unchecked,
    /// The model had room (or is not served; its error comes once the body is read), or the
    /// body had arrived with the head, so refusing early would save nothing: the request
    /// asks for its place once its body is read, before it is decoded.
    Open,
    /// The model was full: every place taken and its queue full. The request is refused
    /// without its body being decoded (the connection reads and drops it).
    Refused(GatewayError),
}

/// Whether a model has room for a request whose head has arrived. A full model refuses it
/// for the price of reading its head, not of decoding its body. No place is taken here: a
/// client sending its body slowly holds no place of the model while it does.
pub(super) fn check_head(gateway: &Gateway, model: &str) -> Entry {
    let snapshot = gateway.routes.load();
    let Some(routes) = snapshot.models.get(model) else {
        return Entry::Open;
    };
    if !routes.admission.is_full() {
        return Entry::Open;
    }
    let limits = routes.admission.limits();
    Entry::Refused(GatewayError::Overloaded {
        model: routes.name.clone(),
        running: limits.running(),
        queued: routes.admission.queue_limit(),
    })
}

/// A request's place and deadline, once its body is read; refused (503) when its head found
/// the model full, when the queue is full now, or when it waited in the queue until its
/// deadline.
async fn enter(
    entry: Entry,
    routes: &ModelRoutes,
    body_len: usize,
) -> Result<(Place, Deadline), Failure> {
    if let Entry::Refused(error) = entry {
        return Err(error.into());
    }
    let deadline = Deadline::starting_now(&routes.admission);
    let place = admit(&routes.name, &routes.admission, deadline.at, body_len).await?;
    Ok((place, deadline))
}

/// A request refused with its head is refused before anything more is read; on the router's
/// path (whose body is still arriving) the head is checked here.
fn refuse_early(gateway: &Gateway, model: &str, entry: Entry) -> Result<Entry, Failure> {
    let entry = match entry {
        Entry::Unchecked => check_head(gateway, model),
        checked => checked,
    };
    match entry {
        Entry::Refused(error) => Err(error.into()),
        open => Ok(open),
    }
}

/// Runs one request on a model: counts it in flight, turns any error into its response in
/// one place, and records which version answered.
pub(super) async fn serve_request(
    gateway: &Gateway,
    model: &str,
    version: Option<&str>,
    endpoint: Endpoint,
    headers: &impl RequestHeaders,
    body: Payload,
    entry: Entry,
) -> Answer {
    let request_id = gateway.request_id(headers);
    let started = Instant::now();
    let _active = gateway.active(model);
    let traceparent = crate::trace::parse(headers);
    let work = async {
        match endpoint {
            Endpoint::Infer | Endpoint::GrpcInfer => {
                run_infer(gateway, model, version, endpoint, headers, body, entry).await
            }
            Endpoint::Predict | Endpoint::KServeV1 => {
                run_predict(gateway, model, endpoint, headers, body, entry).await
            }
        }
    };
    let outcome = crate::trace::scope(traceparent.clone(), work).await;
    let trace_id = traceparent.as_deref().map(crate::trace::trace_id);
    let mut answer = match outcome {
        Ok(answer) => answer,
        Err(Failure { error: e, served }) => {
            if e.status().is_server_error() {
                let version = served.as_ref().map_or("", |s| s.slot.version.as_str());
                let group = (model.to_string(), version.to_string(), e.kind());
                match gateway
                    .failure_log
                    .check(group, || format!("{request_id}: {e}"))
                {
                    Verdict::Quiet => {}
                    Verdict::Log => {
                        tracing::warn!(request_id = %request_id, trace_id, model, error = %e, "request failed");
                    }
                    Verdict::LogWithHeld(held) => {
                        tracing::warn!(request_id = %request_id, trace_id, model, error = %e, held = held.count, first_held = %held.example,
                            "request failed; {} more like this in the last {} s", held.count, held.over.as_secs());
                    }
                }
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

/// Runs a V2 infer request (`/v2/models/{model}[/versions/{version}]/infer`).
async fn run_infer(
    gateway: &Gateway,
    model: &str,
    version: Option<&str>,
    endpoint: Endpoint,
    headers: &impl RequestHeaders,
    body: Payload,
    entry: Entry,
) -> Result<Answer, Failure> {
    let json_len = body_headers(headers, true)?;
    let entry = refuse_early(gateway, model, entry)?;
    // A gRPC call's message was held to the limit before it was decoded; the REST body it
    // became may be larger (small integers take one byte in protobuf, four or eight here).
    let limit = match endpoint {
        Endpoint::GrpcInfer => usize::MAX,
        _ => gateway.max_body_bytes,
    };
    let body = read_body(body, headers, limit, gateway.body_deadline()).await?;
    let routes = find_model(gateway, model)?;
    let (_place, deadline) = enter(entry, &routes, body.len()).await?;
    let slot = pick(&routes, version, headers)?;
    let routed = version.is_none() && headers.get(&names::SLOT).is_none();
    let started = Instant::now();
    let first = infer_on(gateway, &routes, &slot, routed, &body, json_len, deadline).await;
    match failover(&routes, &slot, routed, &first) {
        Some(old) => {
            gateway.failed_over(&routes.name, &slot, endpoint, started);
            // The old version gets a deadline of its own: the candidate may have used all
            // of the first (an in-process model that timed out).
            let again = Deadline::starting_now(&routes.admission);
            let mut answer = infer_on(gateway, &routes, &old, false, &body, json_len, again).await;
            if let Ok(answer) = &mut answer {
                answer.failed_over = Some(slot.clone());
            }
            answer
        }
        None => first,
    }
}

/// The slot that answers instead when the route table's choice failed: the old version,
/// while a rollout watches the candidate with failover on (the table's `fallback`). Only
/// for requests the table routed (a caller who named a version or slot gets its answer),
/// and only for a failure on the slot's side: a backend error answered with a 5xx (a
/// timeout, a deadline, a failed model), or a server's 5xx answer.
fn failover(
    routes: &ModelRoutes,
    slot: &Arc<Slot>,
    routed: bool,
    outcome: &Result<Answer, Failure>,
) -> Option<Arc<Slot>> {
    let fallback = routes.table.fallback?;
    if !routed || fallback == slot.color {
        return None;
    }
    let failed = match outcome {
        Ok(answer) => answer.status.is_server_error(),
        // The model server refusing the caller's input (4xx) would refuse it again.
        Err(failure) => failure.served.is_some() && failure.error.status().is_server_error(),
    };
    if !failed {
        return None;
    }
    routes
        .slot(fallback)
        .filter(|old| old.version != slot.version)
        .cloned()
}

/// Runs a V2 infer request's body on one slot.
async fn infer_on(
    gateway: &Gateway,
    routes: &ModelRoutes,
    slot: &Arc<Slot>,
    routed: bool,
    body: &bytes::Bytes,
    json_len: Option<usize>,
    deadline: Deadline,
) -> Result<Answer, Failure> {
    let model = routes.name.as_str();
    let _in_flight = slot.enter();
    let generation = routes.table.generation;
    let mirror = gateway.mirror_target(routes, slot, routed);
    if slot.cache.is_none()
        && mirror.is_none()
        && let Some(upstream) = slot.backend.v2_upstream()
    {
        // Fast path: check the request when the server published its inputs, then pass the
        // bytes through both ways.
        if let Some(signature) = slot.backend.signature() {
            InferRequest::decode(body, json_len, Some(signature))?;
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
        let (label, value) = match routes.prediction_output.as_deref() {
            Some(name) if gateway.request_log.is_some() && status.is_success() => {
                match protocol::decode_response(&answer.body, answer.json_len) {
                    Ok(outputs) => (
                        predicted(&outputs, Some(name)),
                        predicted_value(&outputs, Some(name)),
                    ),
                    Err(_) => (None, None),
                }
            }
            _ => (None, None),
        };
        let mut reply = Answer::new(status, content_type, answer.body).routed(slot, generation);
        reply.json_len = answer.json_len;
        if (200..300).contains(&answer.status) {
            gateway.capture(routes, body, json_len);
            reply.predicted = label;
            reply.value = value;
        }
        return Ok(reply);
    }
    let mut request = InferRequest::decode(body, json_len, slot.backend.signature())?;
    let outputs = run_and_mirror(routes, slot, mirror, &mut request, deadline)
        .await
        .map_err(|e| Failure::on(slot, generation, e))?;
    gateway.capture(routes, body, json_len);
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
        reply.value = predicted_value(&outputs, routes.prediction_output.as_deref());
    }
    Ok(reply)
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

/// Runs a simple predict request (`/v1/models/{model}/predict`), or KServe V1's
/// (`/v1/models/{model}:predict`): rows in, the predictions of one output back.
async fn run_predict(
    gateway: &Gateway,
    model: &str,
    endpoint: Endpoint,
    headers: &impl RequestHeaders,
    body: Payload,
    entry: Entry,
) -> Result<Answer, Failure> {
    body_headers(headers, false)?;
    let entry = refuse_early(gateway, model, entry)?;
    let body = read_body(
        body,
        headers,
        gateway.max_body_bytes,
        gateway.body_deadline(),
    )
    .await?;
    let routes = find_model(gateway, model)?;
    let (_place, deadline) = enter(entry, &routes, body.len()).await?;
    let slot = pick(&routes, None, headers)?;
    let routed = headers.get(&names::SLOT).is_none();
    let started = Instant::now();
    let first = predict_on(gateway, &routes, &slot, routed, endpoint, &body, deadline).await;
    match failover(&routes, &slot, routed, &first) {
        Some(old) => {
            gateway.failed_over(&routes.name, &slot, endpoint, started);
            let again = Deadline::starting_now(&routes.admission);
            let mut answer =
                predict_on(gateway, &routes, &old, false, endpoint, &body, again).await;
            if let Ok(answer) = &mut answer {
                answer.failed_over = Some(slot.clone());
            }
            answer
        }
        None => first,
    }
}

/// Runs a simple predict request's body on one slot.
async fn predict_on(
    gateway: &Gateway,
    routes: &ModelRoutes,
    slot: &Arc<Slot>,
    routed: bool,
    endpoint: Endpoint,
    body: &bytes::Bytes,
    deadline: Deadline,
) -> Result<Answer, Failure> {
    let _in_flight = slot.enter();
    let assumed;
    let signature = match slot.backend.signature() {
        Some(signature) => signature,
        None => {
            assumed = assumed_signature();
            &assumed
        }
    };
    let mut request = match endpoint {
        Endpoint::KServeV1 => InferRequest::from_instances(body, signature)?,
        _ => InferRequest::from_features(body, signature)?,
    };
    let wanted = routes
        .prediction_output
        .as_deref()
        .or_else(|| signature.outputs.first().map(|o| o.name.as_str()));
    let generation = routes.table.generation;
    let mirror = gateway.mirror_target(routes, slot, routed);
    let outputs = run_and_mirror(routes, slot, mirror, &mut request, deadline)
        .await
        .map_err(|e| Failure::on(slot, generation, e))?;
    let chosen = match wanted {
        Some(name) => outputs.iter().find(|o| o.name == name),
        None => outputs.first(),
    };
    let predictions = chosen.map(protocol::predictions).unwrap_or_default();
    // KServe's V1 answer is the predictions alone; the version and slot are in the headers.
    let body = match endpoint {
        Endpoint::KServeV1 => serde_json::json!({ "predictions": predictions }),
        _ => {
            serde_json::json!({ "predictions": predictions, "model_version": slot.version, "slot": slot.color })
        }
    };
    let mut answer = Answer::json(StatusCode::OK, &body).routed(slot, generation);
    if gateway.request_log.is_some() {
        answer.predicted = predicted(&outputs, wanted);
        answer.value = predicted_value(&outputs, routes.prediction_output.as_deref());
    }
    Ok(answer)
}

/// When a request's client stops waiting: its model's `limits.timeout_ms` after the request
/// asked for a place.
#[derive(Clone, Copy)]
pub(super) struct Deadline {
    pub(super) at: tokio::time::Instant,
    pub(super) ms: u64,
}

impl Deadline {
    fn starting_now(admission: &Admission) -> Deadline {
        let ms = admission.limits().timeout_ms;
        Deadline {
            at: tokio::time::Instant::now() + std::time::Duration::from_millis(ms),
            ms,
        }
    }
}

/// A place among the model's running requests, or the 503 that sheds the request: the
/// queue is full, or the request waited in it until its deadline.
async fn admit(
    model: &str,
    admission: &Admission,
    deadline: tokio::time::Instant,
    body_len: usize,
) -> Result<Place, Failure> {
    let limits = admission.limits();
    admission
        .enter(deadline, body_len)
        .await
        .map_err(|refused| {
            let model = model.to_string();
            let error = match refused {
                Refused::Full => GatewayError::Overloaded {
                    model,
                    running: limits.running(),
                    queued: admission.queue_limit(),
                },
                Refused::Waited => GatewayError::WaitedTooLong {
                    model,
                    running: limits.running(),
                    ms: limits.timeout_ms,
                },
            };
            Failure::from(error)
        })
}

/// Runs a decoded request on a slot, through the slot's cache when it has one; an
/// in-process model gives up at the request's deadline.
pub(super) async fn run_on_slot(
    slot: &Slot,
    model: &str,
    request: &mut InferRequest,
    deadline: Deadline,
) -> Result<Arc<Vec<Tensor>>, GatewayError> {
    if let crate::backends::Backend::Onnx(_) = &slot.backend {
        crate::backends::onnx::check_text(&request.inputs)?;
    }
    let key = slot.cache.as_ref().and_then(|cache| cache.key(request));
    if let (Some(cache), Some(key)) = (&slot.cache, &key)
        && let Some(outputs) = cache.get(key)
    {
        return Ok(outputs);
    }
    let outputs = slot
        .backend
        .infer_by(request, deadline.at, deadline.ms)
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

/// Makes request ids: 128 bits from the operating system's random source, as 32 hex digits,
/// so no caller can guess the id of another's request (feedback is matched by it). Each
/// thread reads the source 4 KiB at a time, so a request costs no system call of its own.
pub(super) struct RequestIds;

/// Random bytes read ahead from `/dev/urandom`, one pool per thread.
struct RandomPool {
    bytes: [u8; 4096],
    used: usize,
}

thread_local! {
    static RANDOM: std::cell::RefCell<RandomPool> = const {
        std::cell::RefCell::new(RandomPool { bytes: [0; 4096], used: 4096 })
    };
}

impl RandomPool {
    fn take16(&mut self) -> [u8; 16] {
        if self.used + 16 > self.bytes.len() {
            self.refill();
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&self.bytes[self.used..self.used + 16]);
        self.used += 16;
        out
    }

    fn refill(&mut self) {
        use std::io::Read;
        let read =
            std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut self.bytes));
        if let Err(e) = read {
            // teal read its admin token from the same source at start-up, so this is a
            // machine that lost it since; ids stay unique, if no longer unguessable.
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::error!(error = %e, "cannot read /dev/urandom: request ids fall back to a weaker generator");
            });
            for chunk in self.bytes.chunks_mut(16) {
                chunk.copy_from_slice(&fastrand::u128(..).to_le_bytes());
            }
        }
        self.used = 0;
    }
}

impl RequestIds {
    pub(super) fn new() -> RequestIds {
        RequestIds
    }

    /// 32 hex digits. Written by hand: this runs on every request, where the formatting
    /// machinery showed in profiles.
    fn next(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let random = RANDOM.with(|pool| pool.borrow_mut().take16());
        let mut digits = [0u8; 32];
        for (i, byte) in random.iter().enumerate() {
            digits[2 * i] = HEX[usize::from(byte >> 4)];
            digits[2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        // ASCII by construction; `from_utf8` checks 32 bytes a word at a time, where the
        // lossy conversion walked them as chunks (about 280 instructions a request).
        std::str::from_utf8(&digits)
            .map(str::to_owned)
            .unwrap_or_default()
    }
}

impl Gateway {
    /// How long a body still arriving may take, and teal's shutdown, which ends the wait.
    pub(super) fn body_deadline(&self) -> BodyDeadline<'_> {
        BodyDeadline {
            timeout: self.body_timeout,
            stopping: self.stopping.as_ref(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_128_random_bits_in_hex() {
        let ids = RequestIds::new();
        let many: std::collections::HashSet<String> = (0..10_000).map(|_| ids.next()).collect();
        assert_eq!(many.len(), 10_000, "no id repeats");
        for id in &many {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
        }
        // Every hex digit position varies: no prefix or counter shared between ids.
        for position in 0..32 {
            let digits: std::collections::HashSet<u8> =
                many.iter().map(|id| id.as_bytes()[position]).collect();
            assert!(digits.len() > 8, "position {position} barely varies");
        }
    }
}
