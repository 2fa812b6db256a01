//! The declared inputs and outputs of a model, which every request is checked against.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Datatype;

/// The declared form of one input or output of a model, as V2 metadata publishes it and as
/// the config declares it for servers that publish none. A dimension of `-1` accepts any
/// size, usually the batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// The name requests use for this tensor.
    pub name: String,
    /// The only datatype accepted for it.
    pub datatype: Datatype,
    /// The dimensions, `-1` for any size; signed because the wire writes them so.
    pub shape: Vec<i64>,
}

impl TensorSpec {
    pub(super) fn describe(&self) -> String {
        format!(
            "{} ({} {})",
            self.name,
            self.datatype,
            shape_text(&self.shape)
        )
    }

    pub(super) fn accepts_shape(&self, shape: &[usize]) -> bool {
        shape.len() == self.shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(want, got)| *want < 0 || *want as u64 == *got as u64)
    }
}

/// What a model takes and gives: the part of its metadata a request is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The inputs, in the order the model takes them; decoded requests follow this order.
    pub inputs: Vec<TensorSpec>,
    /// The outputs a request may ask for.
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    pub(super) fn describe_inputs(&self) -> String {
        self.inputs
            .iter()
            .map(TensorSpec::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn describe_outputs(&self) -> String {
        self.outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// V2 model metadata (`GET /v2/models/{m}`): what client libraries such as `tritonclient`
/// read to build a request, so its form follows the protocol exactly.
#[derive(Clone, Debug, Serialize)]
pub struct ModelMetadata {
    /// The model's name as clients call it.
    pub name: String,
    /// The versions teal holds for the model, live first.
    pub versions: Vec<String>,
    /// The runtime behind the model, like `onnxruntime_onnx`.
    pub platform: String,
    /// The inputs a request must send.
    pub inputs: Vec<TensorSpec>,
    /// The outputs a request may ask for.
    pub outputs: Vec<TensorSpec>,
}

/// A shape as the error messages write it, like `[-1, 4]`.
pub(super) fn shape_text<T: fmt::Display>(shape: &[T]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("[{}]", dims.join(", "))
}
