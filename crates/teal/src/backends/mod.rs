//! Backends run a version of a model. A slot holds exactly one.
//!
//! Kinds: `onnx` (in-process, ONNX Runtime). The gateway only sees [`Backend`]: decoded,
//! validated tensors in, tensors out.

pub mod onnx;

use teal_core::protocol::{Signature, Tensor};

pub use onnx::{OnnxModel, OnnxRuntime};

/// Why a backend could not answer. Never the caller's fault: the request was valid.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The model ran and failed.
    #[error("the model failed: {0}")]
    Inference(String),
    /// The backend is shutting down or its workers are gone.
    #[error("the model's workers are not running")]
    Unavailable,
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
}

/// A running version of a model.
pub enum Backend {
    Onnx(OnnxModel),
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Onnx(_) => "onnx",
        }
    }

    /// The V2 `platform` reported in model metadata.
    pub fn platform(&self) -> &'static str {
        match self {
            Backend::Onnx(_) => "onnxruntime_onnx",
        }
    }

    pub fn signature(&self) -> &Signature {
        match self {
            Backend::Onnx(model) => model.signature(),
        }
    }

    /// Runs one inference. The inputs were validated against [`Backend::signature`].
    pub async fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        match self {
            Backend::Onnx(model) => model.infer(inputs).await,
        }
    }
}
