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
    #[error(
        "version '{version}' of model '{model}' is not live, and this model takes requests for its live version only: call /v2/models/{model}/infer"
    )]
    VersionNotLive { model: String, version: String },
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
    #[error(
        "missing or wrong feedback token: send the one the operator gave you in the x-teal-feedback-token header"
    )]
    FeedbackToken,
    #[error(
        "request '{id}' of model '{model}' already has the label {given}: a label once given is kept, not replaced"
    )]
    LabelGiven {
        model: String,
        id: String,
        given: String,
    },
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
            GatewayError::VersionNotLive { .. } => StatusCode::FORBIDDEN,
            GatewayError::FeedbackToken => StatusCode::UNAUTHORIZED,
            GatewayError::LabelGiven { .. } => StatusCode::CONFLICT,
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
            // The model server refused the caller's input: the caller's fault, as it said.
            GatewayError::Backend {
                source: BackendError::Refused { status, .. },
                ..
            } if (400..500).contains(status) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST)
            }
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

    /// What the caller is told: what it did wrong, or which version failed and how, but
    /// none of teal's internals (a replica's address, a file, a database's message). The
    /// whole error, `Display`, is for the log.
    pub fn public_message(&self) -> String {
        match self {
            GatewayError::Backend { model, version, source } => format!(
                "version {version} of model '{model}' failed: {}",
                source.public_message()
            ),
            GatewayError::Store(_) => {
                "the server could not read or write its state file; the server's log has the details".into()
            }
            other => other.to_string(),
        }
    }

    /// The JSON body of the response.
    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "error": self.public_message() }))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_name_the_failure_but_not_the_replica_or_the_file() {
        let failures = [
            BackendError::Timeout {
                url: "http://10.1.2.3:8081".into(),
                ms: 250,
            },
            BackendError::Unreachable("http://10.1.2.3:8081: connection refused".into()),
            BackendError::Broken {
                url: "http://10.1.2.3:8081/v2/models/digits/infer".into(),
                reason: "connection reset by peer".into(),
            },
            BackendError::Inference("/srv/models/secret/model.onnx: bad shape".into()),
        ];
        for source in failures {
            let logged = source.to_string();
            let error = GatewayError::Backend {
                model: "digits".into(),
                version: "v2".into(),
                source,
            };
            let body = String::from_utf8(error.body()).unwrap();
            assert!(
                body.contains("version v2 of model 'digits' failed"),
                "{body}"
            );
            for secret in ["10.1.2.3", "/srv/models"] {
                assert!(!body.contains(secret), "{body}");
            }
            assert!(
                error.to_string().contains(&logged),
                "the log keeps the details"
            );
        }
        let store = GatewayError::Store("unable to open /var/lib/teal/teal.db".into());
        let body = String::from_utf8(store.body()).unwrap();
        assert!(!body.contains("/var/lib"), "{body}");
        assert_eq!(store.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
