//! Backends run a version of a model. A slot holds exactly one.
//!
//! Kinds: `onnx` (in-process, ONNX Runtime), `upstream` (replicas of a model server teal
//! fronts) and `process` (a model server teal starts and fronts). The gateway only sees
//! [`Backend`]: a validated request in, tensors out.

pub mod admission;
pub mod cache;
pub mod fetch;
pub mod http1;
pub mod onnx;
pub mod process;
pub mod python_env;
pub mod upstream;

use teal_core::protocol::{InferRequest, Signature, Tensor};

pub use onnx::{OnnxModel, OnnxRuntime};
pub use process::{ProcessModel, ProcessStatus};
pub use upstream::{ReplicaStatus, UpstreamModel};

/// Why a backend could not answer a request that passed teal's own checks.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The model ran and failed.
    #[error("the model failed: {0}")]
    Inference(String),
    /// The backend is shutting down or its workers are gone.
    #[error("the model's workers are not running")]
    Unavailable,
    /// The model server refused the request (4xx): the caller's input, as the server sees it.
    #[error("the model server refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The model server failed or answered something teal cannot read (said without the
    /// replica's address).
    #[error("{0}")]
    Upstream(String),
    /// One replica's answer did not come back whole, or came framed wrongly.
    #[error("{url}: {reason}")]
    Broken { url: String, reason: String },
    /// No answer within the slot's timeout.
    #[error("no answer from {url} within {ms} ms")]
    Timeout { url: String, ms: u64 },
    /// An in-process model did not answer within the model's deadline (`limits.timeout_ms`).
    #[error("no answer within the model's deadline of {ms} ms")]
    Deadline { ms: u64 },
    /// No replica could be reached at all.
    #[error("no replica could be reached: {0}")]
    Unreachable(String),
}

impl BackendError {
    /// What the caller is told: how the model failed, without teal's internals (a replica's
    /// address, a file, a runtime's message), which the log line of the failure carries. A
    /// model server's refusal of the caller's input is passed on: it is about that input.
    pub fn public_message(&self) -> String {
        match self {
            BackendError::Inference(_) => {
                "the model failed to run on this request; the server's log has the details".into()
            }
            BackendError::Unavailable
            | BackendError::Refused { .. }
            | BackendError::Deadline { .. }
            | BackendError::Upstream(_) => self.to_string(),
            BackendError::Broken { reason, .. } => format!("the model server's answer: {reason}"),
            BackendError::Timeout { ms, .. } => {
                format!("no answer from the model server within {ms} ms")
            }
            BackendError::Unreachable(_) => {
                "no replica of the model server could be reached".into()
            }
        }
    }

    /// The kind of failure, in a word or two.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::Inference(_) => "inference",
            BackendError::Unavailable => "unavailable",
            BackendError::Refused { .. } => "refused",
            BackendError::Upstream(_) | BackendError::Broken { .. } => "upstream",
            BackendError::Timeout { .. } => "timeout",
            BackendError::Deadline { .. } => "deadline",
            BackendError::Unreachable(_) => "unreachable",
        }
    }
}

/// Why a version could not be loaded into a slot.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Runtime(String),
    #[error("cannot load model {path}: {reason}")]
    Model { path: String, reason: String },
    #[error("{path}: {reason}")]
    Reference { path: String, reason: String },
    /// The model file could not be fetched from its source.
    #[error("{0}")]
    Source(String),
}

/// A running version of a model.
pub enum Backend {
    Onnx(OnnxModel),
    Upstream(UpstreamModel),
    Process(ProcessModel),
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Onnx(_) => "onnx",
            Backend::Upstream(_) => "upstream",
            Backend::Process(_) => "process",
        }
    }

    /// The V2 `platform` reported in model metadata.
    pub fn platform(&self) -> &'static str {
        match self {
            Backend::Onnx(_) => "onnxruntime_onnx",
            Backend::Upstream(_) | Backend::Process(_) => "teal_upstream",
        }
    }

    /// What the model takes and gives, when known. Requests are checked against it; a model
    /// server that publishes no metadata gets requests as they were sent.
    pub fn signature(&self) -> Option<&Signature> {
        match self {
            Backend::Onnx(model) => Some(model.signature()),
            Backend::Upstream(model) => model.signature(),
            Backend::Process(model) => model.upstream.signature(),
        }
    }

    /// Whether the backend can take traffic now.
    pub fn ready(&self) -> bool {
        match self {
            Backend::Onnx(_) => true,
            Backend::Upstream(model) => model.ready(),
            Backend::Process(model) => model.running() && model.upstream.ready(),
        }
    }

    pub fn replicas(&self) -> Vec<ReplicaStatus> {
        match self {
            Backend::Onnx(_) => Vec::new(),
            Backend::Upstream(model) => model.replicas(),
            Backend::Process(model) => model.upstream.replicas(),
        }
    }

    /// Resident memory (MiB) and CPU seconds of the slot's server, when teal runs it.
    pub fn usage(&self) -> Option<(f64, f64)> {
        match self {
            Backend::Process(model) => model.usage(),
            _ => None,
        }
    }

    /// An in-process version's calls since it was loaded (queue and call times, rows per
    /// call); a model server keeps its own.
    pub fn calls(&self) -> Option<onnx::CallTotals> {
        match self {
            Backend::Onnx(model) => Some(model.calls()),
            _ => None,
        }
    }

    pub fn process(&self) -> Option<ProcessStatus> {
        match self {
            Backend::Process(model) => Some(model.status()),
            _ => None,
        }
    }

    /// Runs one inference. The request was validated against [`Backend::signature`]; an
    /// in-process backend takes its inputs.
    pub async fn infer(&self, request: &mut InferRequest) -> Result<Vec<Tensor>, BackendError> {
        match self {
            Backend::Onnx(model) => model.infer(std::mem::take(&mut request.inputs)).await,
            Backend::Upstream(model) => model.infer(request).await,
            Backend::Process(model) => model.upstream.infer(request).await,
        }
    }

    /// Runs one inference for a client waiting until `deadline`: an in-process model gives up
    /// at it (and does not start a job whose deadline has passed or whose caller is gone);
    /// a model server's call keeps the slot's own timeout.
    pub async fn infer_by(
        &self,
        request: &mut InferRequest,
        deadline: tokio::time::Instant,
        timeout_ms: u64,
    ) -> Result<Vec<Tensor>, BackendError> {
        match self {
            Backend::Onnx(model) => {
                let inputs = std::mem::take(&mut request.inputs);
                match tokio::time::timeout_at(
                    deadline,
                    model.infer_until(inputs, Some((deadline, timeout_ms))),
                )
                .await
                {
                    Ok(answer) => answer.0,
                    Err(_) => Err(BackendError::Deadline { ms: timeout_ms }),
                }
            }
            Backend::Upstream(model) => model.infer(request).await,
            Backend::Process(model) => model.upstream.infer(request).await,
        }
    }

    /// Runs one inference and says how long the backend itself took (the session's run, or
    /// the model server's round trip), apart from time spent queued inside teal. The
    /// validation judges latency on it, so a burst of load on one side of a pair does not
    /// read as a slower model.
    pub async fn infer_timed(
        &self,
        request: &mut InferRequest,
    ) -> (
        Result<Vec<Tensor>, BackendError>,
        Option<std::time::Duration>,
    ) {
        match self {
            Backend::Onnx(model) => model.infer_timed(std::mem::take(&mut request.inputs)).await,
            Backend::Upstream(model) => model.infer_timed(request).await,
            Backend::Process(model) => model.upstream.infer_timed(request).await,
        }
    }

    /// The V2 model server behind this slot, when requests can pass to it unchanged.
    pub fn v2_upstream(&self) -> Option<&UpstreamModel> {
        let upstream = match self {
            Backend::Onnx(_) => return None,
            Backend::Upstream(model) => model,
            Backend::Process(model) => &model.upstream,
        };
        (upstream.protocol() == teal_core::config::WireProtocol::V2).then_some(upstream)
    }

    /// Releases what the backend holds outside teal's memory (a process slot's server).
    pub async fn stop(&self) {
        if let Backend::Process(model) = self {
            model.stop().await;
        }
    }
}
