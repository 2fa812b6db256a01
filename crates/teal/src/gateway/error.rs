//! Data-plane errors, classified by who is at fault, and turned into a response in
//! exactly one place: `{"error": "..."}` with the status the fault calls for.

use axum::http::StatusCode;
use teal_core::protocol::ProtocolError;

use crate::backends::BackendError;

/// Everything a data-plane request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request itself is wrong.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("unknown model '{name}': served models are {served}")]
    UnknownModel { name: String, served: String },
    #[error("model '{model}' has no loaded version '{version}': loaded versions are {loaded}")]
    UnknownVersion {
        model: String,
        version: String,
        loaded: String,
    },
    #[error("model '{model}' has no {slot} slot: x-teal-slot must name a loaded slot")]
    EmptySlot { model: String, slot: &'static str },
    #[error("x-teal-slot must be blue or green, not '{0}'")]
    BadSlotHeader(String),
    #[error(
        "no such endpoint: {method} {path}; see /v2 for the server and /v2/models/{{model}} for a model"
    )]
    NoRoute { method: String, path: String },
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error(
        "request body is larger than the limit of {limit} bytes: send fewer rows per request, or raise server.max_body_bytes"
    )]
    TooLarge { limit: usize },
    #[error(
        "content type '{0}' is not accepted: send application/json (or application/octet-stream with Inference-Header-Content-Length for binary tensors)"
    )]
    ContentType(String),
    #[error("content encoding '{0}' is not accepted: send the body uncompressed")]
    ContentEncoding(String),
    #[error("Inference-Header-Content-Length must be a whole number of bytes, not '{0}'")]
    HeaderLength(String),
    #[error("could not read the request body: {0}")]
    Body(String),
    #[error("the path is not valid: {0}; model and version names are UTF-8 text")]
    Path(String),
    #[error("feedback body must be {{\"request_id\": \"...\", \"label\": ...}}: {0}")]
    Feedback(String),
    #[error(
        "no request '{id}' of model '{model}' in the request log: send feedback for a request teal answered, with the x-request-id it returned"
    )]
    UnknownRequest { model: String, id: String },
    #[error("feedback needs the request log: turn server.request_log on")]
    NoRequestLog,
    #[error("the state file failed: {0}")]
    Store(String),
    #[error(
        "the request body did not arrive within {ms} ms: send the whole body promptly, or raise server.body_timeout_ms"
    )]
    BodyTimeout { ms: u64 },
    #[error("teal is shutting down: retry the request on another replica")]
    ShuttingDown,
    #[error(
        "model '{model}' is at its limit of {running} requests running and {queued} waiting: retry after the time in Retry-After"
    )]
    Overloaded {
        model: String,
        running: usize,
        queued: usize,
    },
    #[error(
        "model '{model}' is overloaded: the request waited {ms} ms for one of its {running} places; retry after the time in Retry-After"
    )]
    WaitedTooLong {
        model: String,
        running: usize,
        ms: u64,
    },
    /// The model failed on a valid request.
    #[error("version {version} of model '{model}' failed: {source}")]
    Backend {
        model: String,
        version: String,
        source: BackendError,
    },
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Protocol(_)
            | GatewayError::BadSlotHeader(_)
            | GatewayError::HeaderLength(_)
            | GatewayError::Body(_)
            | GatewayError::Path(_)
            | GatewayError::Feedback(_) => StatusCode::BAD_REQUEST,
            GatewayError::UnknownRequest { .. } => StatusCode::NOT_FOUND,
            GatewayError::NoRequestLog => StatusCode::CONFLICT,
            GatewayError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::ShuttingDown
            | GatewayError::Overloaded { .. }
            | GatewayError::WaitedTooLong { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UnknownModel { .. }
            | GatewayError::UnknownVersion { .. }
            | GatewayError::EmptySlot { .. }
            | GatewayError::NoRoute { .. } => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::ContentType(_) | GatewayError::ContentEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            GatewayError::Backend {
                source: BackendError::Unavailable,
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Backend {
                source: BackendError::Timeout { .. } | BackendError::Deadline { .. },
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Backend { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// The kind of failure, for grouping log lines: a backend's by how it failed.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Backend { source, .. } => source.kind(),
            GatewayError::Store(_) => "state file",
            _ => "request",
        }
    }

    /// Whether the answer leaves the request body unread, so the connection cannot carry
    /// another request: the response then says `connection: close`, and clients do not
    /// reuse it.
    pub fn leaves_body_unread(&self) -> bool {
        matches!(
            self,
            GatewayError::TooLarge { .. }
                | GatewayError::ContentType(_)
                | GatewayError::ContentEncoding(_)
                | GatewayError::HeaderLength(_)
                | GatewayError::Body(_)
                | GatewayError::Path(_)
                | GatewayError::BodyTimeout { .. }
                | GatewayError::ShuttingDown
        )
    }

    /// Seconds after which a refused request may be sent again, for `Retry-After`: load shed
    /// at a limit is worth retrying soon.
    pub fn retry_after(&self) -> Option<u32> {
        matches!(
            self,
            GatewayError::Overloaded { .. }
                | GatewayError::WaitedTooLong { .. }
                | GatewayError::ShuttingDown
        )
        .then_some(1)
    }

    /// The JSON body of the response.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "error": self.to_string() })).unwrap_or_default()
    }
}
