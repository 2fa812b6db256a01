//! The data plane: Open Inference Protocol (V2) REST and the simple JSON predict endpoint.
//!
//! A request reads the route snapshot once, picks a slot, and keeps that slot until it
//! answers. Nothing here waits on storage or on the admin side.
//!
//! This file holds the shared [`Gateway`] state, the [`DataPlane`] service hyper calls and
//! the router. Each other file is one step or one kind of endpoint:
//! - `connection.rs`: the connection loop that answers plain infer POSTs itself and hands
//!   everything else to hyper and the router.
//! - `request.rs`: serving a model request, the same on both paths.
//! - `body.rs`: the body's headers checked, the body read within its limit.
//! - `pick.rs`: which slot answers (named version, slot header, weights, sticky session).
//! - `mirror.rs`: shadow copies to the candidate and captures for replay.
//! - `record.rs`: in-flight gauges, per-slot metrics and the request log.
//! - `answer.rs`: the `Answer` and how it is written, as bytes or as a `Response`.
//! - `metadata.rs`: server, model and version metadata, liveness and readiness.
//! - `feedback.rs`: delayed ground truth for requests teal answered.
//! - `error.rs`: every data-plane error, and its status, in one place.
//! - `door.rs`: a loopback listener where a rollout's candidate alone answers, for smoke
//!   tests.
//! - `grpc.rs`: the Open Inference Protocol over gRPC, on its own listener, each call
//!   served as the REST request it stands for.

mod answer;
mod body;
mod connection;
pub mod door;
mod error;
mod feedback;
pub mod grpc;
mod metadata;
mod mirror;
mod pick;
mod record;
mod request;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Method, Response, Uri};
use axum::routing::{get, post};

use answer::{Answer, error_response};
use body::Payload;
use feedback::feedback;
use metadata::{
    all_stats, live, model_metadata, model_ready, model_stats, ready, repository_index,
    server_metadata, version_metadata, version_ready, version_stats_endpoint,
};
use record::Gauge;
use request::{Endpoint, Entry, RequestIds, serve_request};

pub use connection::{Rewind, Timeouts, refuse_connection, serve_connection};
pub use error::GatewayError;

use crate::control::validation::taps::{Captures, ShadowHub};
use crate::log_throttle::LogThrottle;
use crate::metrics::Metrics;
use crate::routing::Routes;
use crate::state::store::RequestLog;

/// Header naming the version that answered.
pub const VERSION_HEADER: &str = "x-teal-version";
/// Header naming the slot that answered; on a request, asks for a slot (when the model allows it).
pub const SLOT_HEADER: &str = "x-teal-slot";
/// Header carrying the request id: the caller's, echoed, or one teal made.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header carrying the generation of the route table that routed the request.
pub const GENERATION_HEADER: &str = "x-teal-route-generation";
/// Names the version that failed a request the old version then answered (failover).
pub const FAILOVER_HEADER: &str = "x-teal-failover";
/// Header carrying the feedback token, when `server.feedback_token` asks for one.
pub const FEEDBACK_TOKEN_HEADER: &str = "x-teal-feedback-token";
pub use crate::headers::{JSON_LENGTH_HEADER, RequestHeaders, header_text};

/// The headers above as names made at compile time: a name given as a string is parsed and
/// hashed on every use, which showed in profiles of the request path.
mod names {
    use axum::http::HeaderName;
    pub static VERSION: HeaderName = HeaderName::from_static(super::VERSION_HEADER);
    pub static SLOT: HeaderName = HeaderName::from_static(super::SLOT_HEADER);
    pub static REQUEST_ID: HeaderName = HeaderName::from_static(super::REQUEST_ID_HEADER);
    pub static GENERATION: HeaderName = HeaderName::from_static(super::GENERATION_HEADER);
    pub static FAILOVER: HeaderName = HeaderName::from_static(super::FAILOVER_HEADER);
    pub static JSON_LENGTH: HeaderName = HeaderName::from_static(super::JSON_LENGTH_HEADER);
    pub static FEEDBACK_TOKEN: HeaderName = HeaderName::from_static(super::FEEDBACK_TOKEN_HEADER);
}

/// Shared state of the data plane: one value behind an `Arc` that every connection and the
/// router hold, so a request reaches everything it needs without a lock or a lookup.
pub struct Gateway {
    /// The route table, read once per request and swapped whole when it changes.
    pub routes: Arc<Routes>,
    /// The largest request body read; a larger one is refused, before a byte of it is read when
    /// its length is declared.
    pub max_body_bytes: usize,
    /// Where mirrored requests go while a shadow validation runs.
    pub shadows: Arc<ShadowHub>,
    /// Where a rollout's concurrent-baseline pairs go while it watches a candidate.
    pub baselines: Arc<ShadowHub>,
    /// Requests kept for replay.
    pub captures: Arc<Captures>,
    /// Where each routed request is recorded, when the request log is on.
    pub request_log: Option<Arc<RequestLog>>,
    /// The registry the admin API's `/metrics` renders; the gateway only counts into it.
    pub metrics: Arc<Metrics>,
    /// The state file, for feedback only (inference never waits on it).
    pub store: Option<Arc<crate::state::store::Store>>,
    /// The secret feedback must carry (`server.feedback_token`); none when unset.
    pub feedback_token: Option<String>,
    /// Requests in flight on a model above which live requests are not mirrored.
    pub shadow_headroom: i64,
    /// How long a request's whole body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Set when teal is shutting down: a body still arriving is then refused (503) rather
    /// than waited for.
    pub stopping: Option<tokio::sync::watch::Receiver<bool>>,
    /// Makes the id of a request that brought none.
    ids: RequestIds,
    /// Each served model's in-flight gauge, found by name without building a label set.
    in_flight: std::sync::RwLock<std::collections::HashMap<String, Gauge>>,
    /// Failed requests' log lines, at most one per model, version and kind of failure every
    /// [`FAILURE_LOG_INTERVAL`].
    failure_log: LogThrottle<(String, String, &'static str)>,
}

/// How often a model version's failures of one kind are logged at most: the first at once,
/// then one line per interval saying how many more there were.
pub const FAILURE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl Gateway {
    /// The data plane's state without the state file and the request log, which only feedback
    /// and the log itself need: the server sets them afterwards, and tests can leave them off.
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
            baselines: Arc::new(ShadowHub::new(shadows.dropped.clone())),
            shadows,
            captures,
            request_log: None,
            store: None,
            feedback_token: None,
            metrics,
            shadow_headroom: std::thread::available_parallelism().map_or(2, |n| n.get() as i64),
            body_timeout: std::time::Duration::from_secs(30),
            stopping: None,
            ids: RequestIds::new(),
            in_flight: Default::default(),
            failure_log: LogThrottle::new(FAILURE_LOG_INTERVAL),
        }
    }
}

impl Gateway {
    /// Writes a line for each model version and kind of failure whose failed requests were
    /// held back from the log and have had no line for a whole interval: how many, and the
    /// first of them. Called every [`FAILURE_LOG_INTERVAL`].
    pub fn log_held_failures(&self) {
        for ((model, version, kind), held) in self.failure_log.due() {
            tracing::warn!(model, version, kind, held = held.count, first_held = %held.example,
                "{} more requests failed like this in the last {} s", held.count, held.over.as_secs());
        }
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
    /// Builds the router once; every connection gets a clone of this value, which shares it.
    pub fn new(gateway: Arc<Gateway>) -> DataPlane {
        DataPlane {
            router: hyper_util::service::TowerToHyperService::new(router(gateway.clone())),
            gateway,
        }
    }

    /// The largest request body accepted: the connection loop serves a request itself only
    /// when its declared body fits, and leaves a larger one to hyper and the router.
    pub fn max_body_bytes(&self) -> usize {
        self.gateway.max_body_bytes
    }

    /// Whether the model of a `/v2/models/{model}/infer` POST whose head the connection has
    /// read has room for it, before the body is read: a full model refuses it here.
    fn check_head(&self, model: &str) -> Entry {
        request::check_head(&self.gateway, model)
    }

    /// Answers a `/v2/models/{model}/infer` POST whose body the connection has read whole
    /// (or, refused with its head, read and dropped); the answer is the one the router would
    /// give.
    async fn infer(
        &self,
        model: &str,
        headers: &impl RequestHeaders,
        body: bytes::Bytes,
        entry: Entry,
    ) -> Answer {
        let body = Payload::Whole(body);
        serve_request(
            &self.gateway,
            model,
            None,
            Endpoint::Infer,
            headers,
            body,
            entry,
        )
        .await
    }
}

/// The future of a request hyper hands over, boxed: a service's future is one named type,
/// and the direct path and the router's return different ones.
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
                let answer = serve_request(
                    &gateway,
                    &model,
                    None,
                    Endpoint::Infer,
                    headers,
                    body,
                    Entry::Unchecked,
                );
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
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/stats", get(model_stats))
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
            "/v2/models/{model}/versions/{version}/stats",
            get(version_stats_endpoint),
        )
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(version_infer),
        )
        .route("/v1/models/{model}/predict", post(predict))
        // KServe V1: readiness, and `{model}:predict` (a name and a verb in one segment).
        .route("/v1/models/{model}", get(model_ready).post(kserve_v1))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
}

/// A path the router matched but could not decode (a name that is not UTF-8).
fn path_error(rejection: axum::extract::rejection::PathRejection) -> Response<Body> {
    error_response(&GatewayError::Path(rejection.body_text()))
}

/// A model's path, or why it could not be read, so the handler answers with teal's error.
type ModelPath = Result<Path<String>, axum::extract::rejection::PathRejection>;
/// A version's path, or why it could not be read.
type VersionPath = Result<Path<(String, String)>, axum::extract::rejection::PathRejection>;

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
    serve_request(
        gateway,
        model,
        version,
        endpoint,
        &parts.headers,
        body,
        Entry::Unchecked,
    )
    .await
    .into_response()
}

/// `POST /v2/models/{model}/infer`, for requests the connection loop did not serve itself.
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

/// `POST /v2/models/{model}/versions/{version}/infer`: a request pinned to one version.
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

/// `POST /v1/models/{model}/predict`: the simple JSON endpoint.
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

/// `POST /v1/models/{model}:predict`: KServe's V1 protocol, `{"instances": [...]}` in and
/// `{"predictions": [...]}` out. Its other verbs (`:explain`) are not served.
async fn kserve_v1(
    State(gateway): State<Arc<Gateway>>,
    path: ModelPath,
    request: axum::extract::Request,
) -> Response<Body> {
    match path {
        Ok(Path(target)) => match target.strip_suffix(":predict") {
            Some(model) if !model.is_empty() => {
                serve_routed(&gateway, model, None, Endpoint::KServeV1, request).await
            }
            _ => error_response(&GatewayError::NoRoute {
                method: "POST".into(),
                path: format!("/v1/models/{target}"),
            }),
        },
        Err(e) => path_error(e),
    }
}

/// Any path the router does not know.
async fn no_route(method: Method, uri: Uri) -> Response<Body> {
    error_response(&GatewayError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_string(),
    })
}

/// A known path asked with the wrong method.
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
}
