//! Tensors as teal carries them between the wire and the backends.

use serde::{Serialize, Serializer};

use super::Datatype;

/// The elements of a tensor, row-major, typed: one variant per V2 datatype, so a backend
/// never reinterprets bytes. FP16 and BF16 elements are kept as their 16 bits.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `BOOL` elements.
    Bool(Vec<bool>),
    /// `UINT8` elements.
    Uint8(Vec<u8>),
    /// `UINT16` elements.
    Uint16(Vec<u16>),
    /// `UINT32` elements.
    Uint32(Vec<u32>),
    /// `UINT64` elements.
    Uint64(Vec<u64>),
    /// `INT8` elements.
    Int8(Vec<i8>),
    /// `INT16` elements.
    Int16(Vec<i16>),
    /// `INT32` elements.
    Int32(Vec<i32>),
    /// `INT64` elements.
    Int64(Vec<i64>),
    /// `FP16` elements, as the bits of IEEE half precision.
    Fp16(Vec<u16>),
    /// `BF16` elements, as the bits of bfloat16.
    Bf16(Vec<u16>),
    /// `FP32` elements.
    Fp32(Vec<f32>),
    /// `FP64` elements.
    Fp64(Vec<f64>),
    /// `BYTES` elements: byte strings of any length (ONNX string tensors hold UTF-8 text).
    Bytes(Vec<Vec<u8>>),
}

/// Runs `$body` with `$v` bound to the elements, whatever the variant.
macro_rules! with_elements {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Bf16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

impl TensorData {
    /// How many elements the tensor holds, whatever its datatype: the product of its shape.
    pub fn len(&self) -> usize {
        with_elements!(self, v => v.len())
    }

    /// Whether the tensor holds no elements, as a shape with a zero dimension does.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The V2 datatype of the elements, which the response writes beside them.
    pub fn datatype(&self) -> Datatype {
        match self {
            TensorData::Bool(_) => Datatype::Bool,
            TensorData::Uint8(_) => Datatype::Uint8,
            TensorData::Uint16(_) => Datatype::Uint16,
            TensorData::Uint32(_) => Datatype::Uint32,
            TensorData::Uint64(_) => Datatype::Uint64,
            TensorData::Int8(_) => Datatype::Int8,
            TensorData::Int16(_) => Datatype::Int16,
            TensorData::Int32(_) => Datatype::Int32,
            TensorData::Int64(_) => Datatype::Int64,
            TensorData::Fp16(_) => Datatype::Fp16,
            TensorData::Bf16(_) => Datatype::Bf16,
            TensorData::Fp32(_) => Datatype::Fp32,
            TensorData::Fp64(_) => Datatype::Fp64,
            TensorData::Bytes(_) => Datatype::Bytes,
        }
    }

    /// The element at `index` as a number, for the numeric types (FP16 and BF16 widened);
    /// `None` for BOOL and BYTES.
    pub fn number(&self, index: usize) -> Option<f64> {
        Some(match self {
            TensorData::Uint8(v) => f64::from(v[index]),
            TensorData::Uint16(v) => f64::from(v[index]),
            TensorData::Uint32(v) => f64::from(v[index]),
            TensorData::Uint64(v) => v[index] as f64,
            TensorData::Int8(v) => f64::from(v[index]),
            TensorData::Int16(v) => f64::from(v[index]),
            TensorData::Int32(v) => f64::from(v[index]),
            TensorData::Int64(v) => v[index] as f64,
            TensorData::Fp16(v) => f64::from(half::f16::from_bits(v[index])),
            TensorData::Bf16(v) => f64::from(half::bf16::from_bits(v[index])),
            TensorData::Fp32(v) => f64::from(v[index]),
            TensorData::Fp64(v) => v[index],
            TensorData::Bool(_) | TensorData::Bytes(_) => return None,
        })
    }

    /// Appends a copy of `other`'s elements after these, when both hold the same datatype;
    /// false (and nothing appended) otherwise.
    pub fn extend_from(&mut self, other: &TensorData) -> bool {
        macro_rules! same {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((TensorData::$variant(into), TensorData::$variant(from)) => {
                        into.extend_from_slice(from);
                        true
                    })*
                    _ => false,
                }
            };
        }
        same!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Bf16, Fp32, Fp64,
            Bytes
        )
    }

    /// Splits the elements at `at`: these keep `[0, at)` and the rest are returned, of the
    /// same datatype. Panics when `at` is past the end, as `Vec::split_off` does.
    pub fn split_off(&mut self, at: usize) -> TensorData {
        macro_rules! same {
            ($($variant:ident),*) => {
                match self {
                    $(TensorData::$variant(v) => TensorData::$variant(v.split_off(at)),)*
                }
            };
        }
        same!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Bf16, Fp32, Fp64,
            Bytes
        )
    }

    /// Whether the elements are integers (a classifier's labels are).
    pub fn is_integer(&self) -> bool {
        matches!(
            self,
            TensorData::Uint8(_)
                | TensorData::Uint16(_)
                | TensorData::Uint32(_)
                | TensorData::Uint64(_)
                | TensorData::Int8(_)
                | TensorData::Int16(_)
                | TensorData::Int32(_)
                | TensorData::Int64(_)
        )
    }
}

impl Serialize for TensorData {
    /// JSON elements: numbers (FP16 and BF16 as the value they stand for), booleans, and
    /// BYTES as strings. A BYTES element that is not UTF-8 cannot be JSON: the caller asks
    /// for that output in binary form instead.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        match self {
            TensorData::Fp16(v) => {
                serializer.collect_seq(v.iter().map(|b| half::f16::from_bits(*b).to_f32()))
            }
            TensorData::Bf16(v) => {
                serializer.collect_seq(v.iter().map(|b| half::bf16::from_bits(*b).to_f32()))
            }
            TensorData::Bytes(v) => {
                let mut seq = serializer.serialize_seq(Some(v.len()))?;
                for element in v {
                    let text = std::str::from_utf8(element).map_err(|_| {
                        S::Error::custom(
                            "a BYTES element is not UTF-8 text: ask for the output in binary form",
                        )
                    })?;
                    seq.serialize_element(text)?;
                }
                seq.end()
            }
            other => with_elements!(other, v => v.serialize(serializer)),
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
