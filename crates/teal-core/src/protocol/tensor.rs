//! Tensors as teal carries them between the wire and the backends.

use serde::{Serialize, Serializer};

use super::Datatype;

/// The elements of a tensor, row-major, typed: one variant per datatype teal serves (see
/// [`super::SERVED_DATATYPES`]), so a backend never reinterprets bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `BOOL` elements.
    Bool(Vec<bool>),
    /// `INT32` elements.
    Int32(Vec<i32>),
    /// `INT64` elements.
    Int64(Vec<i64>),
    /// `FP32` elements.
    Fp32(Vec<f32>),
    /// `FP64` elements.
    Fp64(Vec<f64>),
}

impl TensorData {
    /// How many elements the tensor holds, whatever its datatype: the product of its shape.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
        }
    }

    /// Whether the tensor holds no elements, as a shape with a zero dimension does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The V2 datatype of the elements, which the response writes beside them.
    pub fn datatype(&self) -> Datatype {
        match self {
            TensorData::Bool(_) => Datatype::Bool,
            TensorData::Int32(_) => Datatype::Int32,
            TensorData::Int64(_) => Datatype::Int64,
            TensorData::Fp32(_) => Datatype::Fp32,
            TensorData::Fp64(_) => Datatype::Fp64,
        }
    }
}

impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            TensorData::Bool(v) => v.serialize(serializer),
            TensorData::Int32(v) => v.serialize(serializer),
            TensorData::Int64(v) => v.serialize(serializer),
            TensorData::Fp32(v) => v.serialize(serializer),
            TensorData::Fp64(v) => v.serialize(serializer),
        }
    }
}

/// A named tensor with its shape: one input or output as it travels between the wire and a
/// backend, already checked against the model's signature.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The input's or output's name in the model's signature.
    pub name: String,
    /// The dimensions; their product is the number of elements in `data`.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: TensorData,
}
