//! The element types a V2 tensor may have, by their wire names.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// The element type of a tensor, by its V2 name: every type the protocol has (BF16 as
/// Triton has it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Datatype {
    /// `BOOL`: one byte per element, zero for false.
    Bool,
    /// `UINT8`: the usual type of image pixels.
    Uint8,
    /// `UINT16`: unsigned, two bytes.
    Uint16,
    /// `UINT32`: unsigned, four bytes.
    Uint32,
    /// `UINT64`: unsigned, eight bytes.
    Uint64,
    /// `INT8`: signed, one byte, as quantized models use it.
    Int8,
    /// `INT16`: signed, two bytes.
    Int16,
    /// `INT32`: signed, four bytes.
    Int32,
    /// `INT64`: signed, eight bytes; the labels scikit-learn classifiers give.
    Int64,
    /// `FP16`: half precision, two bytes.
    Fp16,
    /// `BF16`: bfloat16, two bytes, the upper half of an `FP32`.
    Bf16,
    /// `FP32`: single precision, the type most models take and give.
    Fp32,
    /// `FP64`: double precision, for models exported without casting to `FP32`.
    Fp64,
    /// `BYTES`: strings of any length, which the binary extension prefixes with their length.
    Bytes,
}

impl Datatype {
    /// The name the wire and the model metadata use, like `FP32`.
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Bf16 => "BF16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    /// The datatype a wire name stands for; `None` for a name the protocol does not have, so
    /// the caller can say which tensor carried it.
    pub fn parse(name: &str) -> Option<Datatype> {
        Some(match name {
            "BOOL" => Datatype::Bool,
            "UINT8" => Datatype::Uint8,
            "UINT16" => Datatype::Uint16,
            "UINT32" => Datatype::Uint32,
            "UINT64" => Datatype::Uint64,
            "INT8" => Datatype::Int8,
            "INT16" => Datatype::Int16,
            "INT32" => Datatype::Int32,
            "INT64" => Datatype::Int64,
            "FP16" => Datatype::Fp16,
            "BF16" => Datatype::Bf16,
            "FP32" => Datatype::Fp32,
            "FP64" => Datatype::Fp64,
            "BYTES" => Datatype::Bytes,
            _ => return None,
        })
    }

    /// Bytes per element in the binary tensor format (`None` for variable-length BYTES).
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 | Datatype::Bf16 => 2,
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => 4,
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
            Datatype::Bytes => return None,
        })
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Datatype {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Datatype::parse(&name)
            .ok_or_else(|| de::Error::custom(format!("unknown datatype '{name}'")))
    }
}

impl Serialize for Datatype {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}
