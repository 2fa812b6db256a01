//! The Open Inference Protocol (V2) REST wire format, as KServe, Triton and MLServer speak
//! it, including Triton's binary tensor extension that `tritonclient` uses by default, and
//! teal's simple JSON predict format.
//!
//! Decoding checks a request against the model's signature, so everything after it (the
//! backends) may assume names, datatypes, shapes and element counts are right. Every
//! failure here is the caller's: a [`ProtocolError`] is always answered with a 4xx.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The element type of a tensor, by its V2 name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Datatype {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

/// Datatypes whose tensors teal can carry through its own backends.
pub const SERVED_DATATYPES: [Datatype; 5] = [
    Datatype::Bool,
    Datatype::Int32,
    Datatype::Int64,
    Datatype::Fp32,
    Datatype::Fp64,
];

impl Datatype {
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
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

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
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 => 2,
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

/// The declared form of one input or output of a model. A dimension of `-1` accepts any size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: Datatype,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    fn describe(&self) -> String {
        format!(
            "{} ({} {})",
            self.name,
            self.datatype,
            shape_text(&self.shape)
        )
    }

    fn accepts_shape(&self, shape: &[usize]) -> bool {
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
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    fn describe_inputs(&self) -> String {
        self.inputs
            .iter()
            .map(TensorSpec::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn describe_outputs(&self) -> String {
        self.outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// V2 model metadata (`GET /v2/models/{m}`).
#[derive(Clone, Debug, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// The elements of a tensor, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::Bool(v) => v.len(),
            TensorData::Int32(v) => v.len(),
            TensorData::Int64(v) => v.len(),
            TensorData::Fp32(v) => v.len(),
            TensorData::Fp64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn datatype(&self) -> Datatype {
        match self {
            TensorData::Bool(_) => Datatype::Bool,
            TensorData::Int32(_) => Datatype::Int32,
            TensorData::Int64(_) => Datatype::Int64,
            TensorData::Fp32(_) => Datatype::Fp32,
            TensorData::Fp64(_) => Datatype::Fp64,
        }
    }

    /// The element at `index` as a JSON value (for the simple predict format).
    pub fn json_value(&self, index: usize) -> serde_json::Value {
        match self {
            TensorData::Bool(v) => v[index].into(),
            TensorData::Int32(v) => v[index].into(),
            TensorData::Int64(v) => v[index].into(),
            TensorData::Fp32(v) => serde_json::Number::from_f64(f64::from(v[index]))
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            TensorData::Fp64(v) => serde_json::Number::from_f64(v[index])
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
        }
    }

    /// Little-endian bytes, the binary tensor extension's layout.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        match self {
            TensorData::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
            TensorData::Int32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Int64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            TensorData::Fp64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }

    fn byte_len(&self) -> usize {
        self.len() * self.datatype().element_size().unwrap_or(0)
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

/// A named tensor with its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// An output the caller asked for, and whether it wants it in binary form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    pub binary: bool,
}

/// A decoded, validated inference request.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    /// Inputs in the model's declared order.
    pub inputs: Vec<Tensor>,
    /// The outputs to return; `None` means all of them.
    pub outputs: Option<Vec<RequestedOutput>>,
    /// Whether outputs not named in `outputs` come back in binary form.
    pub binary_output: bool,
}

/// Why a request was refused. Always the caller's fault; always a 4xx.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("request body is not valid JSON for this endpoint: {0}")]
    Malformed(String),
    #[error("{0}")]
    Binary(String),
    #[error("unknown input '{name}': the model takes {expected}")]
    UnknownInput { name: String, expected: String },
    #[error("input '{0}' appears more than once: send each input once")]
    DuplicateInput(String),
    #[error("missing input '{name}': the model takes {expected}")]
    MissingInput { name: String, expected: String },
    #[error("input '{name}' has datatype {got} but the model expects {want}")]
    Datatype {
        name: String,
        got: String,
        want: Datatype,
    },
    #[error("input '{name}' has shape {got} but the model expects {want} (-1 is any size)")]
    Shape {
        name: String,
        got: String,
        want: String,
    },
    #[error(
        "input '{name}' has shape {shape}, which holds {expected} elements, but {got} were sent"
    )]
    ElementCount {
        name: String,
        shape: String,
        expected: String,
        got: usize,
    },
    #[error("input '{name}': element {index} is {value}, which is not a valid {datatype}")]
    Value {
        name: String,
        index: usize,
        value: String,
        datatype: Datatype,
    },
    #[error(
        "input '{0}' has no data: send \"data\" or, with the binary extension, binary_data_size"
    )]
    MissingData(String),
    #[error("unknown output '{name}': the model gives {expected}")]
    UnknownOutput { name: String, expected: String },
    #[error("{0}")]
    Unsupported(String),
}

fn shape_text<T: fmt::Display>(shape: &[T]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// One JSON element before it is given its datatype.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scalar {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::UInt(u) => write!(f, "{u}"),
            Scalar::Float(x) => write!(f, "{x}"),
        }
    }
}

/// Tensor data as JSON sends it: flat or nested arrays, flattened row-major on the way in.
#[derive(Debug, Default, PartialEq)]
struct FlatData(Vec<Scalar>);

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        deserializer.deserialize_any(FlatVisitor { out: &mut out })?;
        Ok(FlatData(out))
    }
}

struct FlatVisitor<'a> {
    out: &'a mut Vec<Scalar>,
}

impl<'de> Visitor<'de> for FlatVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of numbers or booleans (flat or nested)")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.out.push(Scalar::Bool(v));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.out.push(Scalar::Int(v));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.out.push(Scalar::UInt(v));
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.out.push(Scalar::Float(v));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(
            "string elements belong to BYTES tensors, which teal does not serve: send numbers or booleans",
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(
            "null is not a tensor element: send numbers or booleans",
        ))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(FlatSeed {
                out: &mut *self.out,
            })?
            .is_some()
        {}
        Ok(())
    }
}

struct FlatSeed<'a> {
    out: &'a mut Vec<Scalar>,
}

impl<'de> de::DeserializeSeed<'de> for FlatSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(FlatVisitor { out: self.out })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    inputs: Vec<WireInput>,
    #[serde(default)]
    outputs: Option<Vec<WireOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireInput {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    data: Option<FlatData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOutput {
    name: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

fn flag(
    parameters: &Option<serde_json::Map<String, serde_json::Value>>,
    key: &str,
) -> Result<bool, ProtocolError> {
    match parameters.as_ref().and_then(|p| p.get(key)) {
        None => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ProtocolError::Malformed(format!(
            "parameter '{key}' must be true or false, not {other}"
        ))),
    }
}

fn binary_size(
    parameters: &Option<serde_json::Map<String, serde_json::Value>>,
) -> Result<Option<usize>, ProtocolError> {
    match parameters.as_ref().and_then(|p| p.get("binary_data_size")) {
        None => Ok(None),
        Some(value) => value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                ProtocolError::Binary(format!(
                    "binary_data_size must be a non-negative integer, not {value}"
                ))
            }),
    }
}

fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d))
}

/// Converts JSON elements to `datatype`, refusing values that do not fit it.
fn typed(name: &str, datatype: Datatype, values: Vec<Scalar>) -> Result<TensorData, ProtocolError> {
    let bad = |index: usize, value: Scalar| ProtocolError::Value {
        name: name.to_string(),
        index,
        value: value.to_string(),
        datatype,
    };
    fn as_int(v: Scalar) -> Option<i64> {
        match v {
            Scalar::Int(i) => Some(i),
            Scalar::UInt(u) => i64::try_from(u).ok(),
            // An integral float such as 3.0 is accepted; 3.5 is not.
            Scalar::Float(x)
                if x.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&x) =>
            {
                Some(x as i64)
            }
            _ => None,
        }
    }
    fn as_float(v: Scalar) -> Option<f64> {
        match v {
            Scalar::Int(i) => Some(i as f64),
            Scalar::UInt(u) => Some(u as f64),
            Scalar::Float(x) => Some(x),
            Scalar::Bool(_) => None,
        }
    }
    let mut convert_err = None;
    let data = match datatype {
        Datatype::Fp32 => TensorData::Fp32(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| match as_float(v).map(|x| x as f32) {
                    Some(x) if x.is_finite() => x,
                    _ => {
                        convert_err.get_or_insert(bad(i, v));
                        0.0
                    }
                })
                .collect(),
        ),
        Datatype::Fp64 => TensorData::Fp64(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    as_float(v).unwrap_or_else(|| {
                        convert_err.get_or_insert(bad(i, v));
                        0.0
                    })
                })
                .collect(),
        ),
        Datatype::Int64 => TensorData::Int64(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    as_int(v).unwrap_or_else(|| {
                        convert_err.get_or_insert(bad(i, v));
                        0
                    })
                })
                .collect(),
        ),
        Datatype::Int32 => TensorData::Int32(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    as_int(v)
                        .and_then(|x| i32::try_from(x).ok())
                        .unwrap_or_else(|| {
                            convert_err.get_or_insert(bad(i, v));
                            0
                        })
                })
                .collect(),
        ),
        Datatype::Bool => TensorData::Bool(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Scalar::Bool(b) => b,
                    other => {
                        convert_err.get_or_insert(bad(i, other));
                        false
                    }
                })
                .collect(),
        ),
        other => return Err(unsupported_datatype(name, other)),
    };
    match convert_err {
        Some(err) => Err(err),
        None => Ok(data),
    }
}

fn unsupported_datatype(name: &str, datatype: Datatype) -> ProtocolError {
    let served: Vec<&str> = SERVED_DATATYPES.iter().map(|d| d.as_str()).collect();
    ProtocolError::Unsupported(format!(
        "input '{name}' has datatype {datatype}, which teal does not serve yet (served: {})",
        served.join(", ")
    ))
}

fn from_le_bytes(
    name: &str,
    datatype: Datatype,
    bytes: &[u8],
) -> Result<TensorData, ProtocolError> {
    Ok(match datatype {
        Datatype::Bool => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
        Datatype::Int32 => TensorData::Int32(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ),
        Datatype::Int64 => TensorData::Int64(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ),
        Datatype::Fp32 => TensorData::Fp32(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ),
        Datatype::Fp64 => TensorData::Fp64(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ),
        other => return Err(unsupported_datatype(name, other)),
    })
}

/// The binary part of a body (after the JSON header), handed out to tensors in order.
struct BinaryTail<'a> {
    bytes: &'a [u8],
    /// Whether the body declared a JSON length at all (the binary extension is in use).
    declared: bool,
}

fn split_body(
    body: &[u8],
    json_len: Option<usize>,
) -> Result<(&[u8], BinaryTail<'_>), ProtocolError> {
    match json_len {
        None => Ok((
            body,
            BinaryTail {
                bytes: &[],
                declared: false,
            },
        )),
        Some(n) if n <= body.len() => {
            let (json, bytes) = body.split_at(n);
            Ok((
                json,
                BinaryTail {
                    bytes,
                    declared: true,
                },
            ))
        }
        Some(n) => Err(ProtocolError::Binary(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        ))),
    }
}

impl BinaryTail<'_> {
    fn finish(self) -> Result<(), ProtocolError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Binary(format!(
                "{} bytes follow the JSON header that no tensor claims: check each binary_data_size",
                self.bytes.len()
            )))
        }
    }
}

type Parameters = Option<serde_json::Map<String, serde_json::Value>>;

/// The elements of one tensor, from JSON `data` or from the binary tail.
fn tensor_data(
    name: &str,
    datatype: Datatype,
    wire_shape: &[u64],
    parameters: &Parameters,
    data: Option<FlatData>,
    tail: &mut BinaryTail<'_>,
) -> Result<(Vec<usize>, TensorData), ProtocolError> {
    let shape: Vec<usize> = wire_shape
        .iter()
        .map(|d| usize::try_from(*d).unwrap_or(usize::MAX))
        .collect();
    let expected = element_count(&shape);
    let count_error = |got: usize| ProtocolError::ElementCount {
        name: name.to_string(),
        shape: shape_text(wire_shape),
        expected: expected.map_or_else(|| "too many".to_string(), |n| n.to_string()),
        got,
    };
    let data = match (binary_size(parameters)?, data) {
        (Some(_), Some(_)) => {
            return Err(ProtocolError::Binary(format!(
                "tensor '{name}' has both binary_data_size and data: send one of them"
            )));
        }
        (Some(size), None) => {
            if !tail.declared {
                return Err(ProtocolError::Binary(format!(
                    "tensor '{name}' declares binary_data_size but there is no Inference-Header-Content-Length header"
                )));
            }
            if size > tail.bytes.len() {
                return Err(ProtocolError::Binary(format!(
                    "tensor '{name}' declares {size} binary bytes but only {} remain in the body",
                    tail.bytes.len()
                )));
            }
            let (bytes, rest) = tail.bytes.split_at(size);
            tail.bytes = rest;
            let element = datatype.element_size().unwrap_or(1);
            if size % element != 0 || Some(size / element) != expected {
                return Err(count_error(size / element));
            }
            from_le_bytes(name, datatype, bytes)?
        }
        (None, Some(FlatData(values))) => {
            if Some(values.len()) != expected {
                return Err(count_error(values.len()));
            }
            typed(name, datatype, values)?
        }
        (None, None) => return Err(ProtocolError::MissingData(name.to_string())),
    };
    Ok((shape, data))
}

fn parse_datatype(name: &str, datatype: &str) -> Result<Datatype, ProtocolError> {
    Datatype::parse(datatype).ok_or_else(|| {
        ProtocolError::Malformed(format!("tensor '{name}' has unknown datatype '{datatype}'"))
    })
}

impl InferRequest {
    /// Decodes a V2 infer request body and, when the model's `signature` is known, checks
    /// the request against it. Without a signature (a model server that publishes none)
    /// the inputs are taken as sent, in the order sent.
    ///
    /// `json_len` is the `Inference-Header-Content-Length` header of the binary tensor
    /// extension: the body's first `json_len` bytes are JSON and the rest holds the inputs
    /// that declare a `binary_data_size`, in order.
    pub fn decode(
        body: &[u8],
        json_len: Option<usize>,
        signature: Option<&Signature>,
    ) -> Result<InferRequest, ProtocolError> {
        let (json, mut tail) = split_body(body, json_len)?;
        let wire: WireRequest =
            serde_json::from_slice(json).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let binary_output = flag(&wire.parameters, "binary_data_output")?;

        let mut sent: Vec<Tensor> = Vec::with_capacity(wire.inputs.len());
        for input in wire.inputs {
            if sent.iter().any(|t| t.name == input.name) {
                return Err(ProtocolError::DuplicateInput(input.name));
            }
            let datatype = match signature {
                None => parse_datatype(&input.name, &input.datatype)?,
                Some(signature) => {
                    let Some(spec) = signature.inputs.iter().find(|s| s.name == input.name) else {
                        return Err(ProtocolError::UnknownInput {
                            name: input.name,
                            expected: signature.describe_inputs(),
                        });
                    };
                    if input.datatype != spec.datatype.as_str() {
                        return Err(ProtocolError::Datatype {
                            name: input.name,
                            got: input.datatype,
                            want: spec.datatype,
                        });
                    }
                    let shape: Vec<usize> = input
                        .shape
                        .iter()
                        .map(|d| usize::try_from(*d).unwrap_or(usize::MAX))
                        .collect();
                    if !spec.accepts_shape(&shape) {
                        return Err(ProtocolError::Shape {
                            name: input.name,
                            got: shape_text(&input.shape),
                            want: shape_text(&spec.shape),
                        });
                    }
                    spec.datatype
                }
            };
            let (shape, data) = tensor_data(
                &input.name,
                datatype,
                &input.shape,
                &input.parameters,
                input.data,
                &mut tail,
            )?;
            sent.push(Tensor {
                name: input.name,
                shape,
                data,
            });
        }
        tail.finish()?;

        let inputs = match signature {
            None => sent,
            Some(signature) => {
                // The model's declared order, every input present.
                let mut ordered = Vec::with_capacity(signature.inputs.len());
                for spec in &signature.inputs {
                    let Some(position) = sent.iter().position(|t| t.name == spec.name) else {
                        return Err(ProtocolError::MissingInput {
                            name: spec.name.clone(),
                            expected: signature.describe_inputs(),
                        });
                    };
                    ordered.push(sent.swap_remove(position));
                }
                ordered
            }
        };
        let outputs = match wire.outputs {
            None => None,
            Some(list) => {
                let mut requested = Vec::with_capacity(list.len());
                for output in list {
                    if let Some(signature) = signature
                        && !signature.outputs.iter().any(|s| s.name == output.name)
                    {
                        return Err(ProtocolError::UnknownOutput {
                            name: output.name,
                            expected: signature.describe_outputs(),
                        });
                    }
                    let binary = flag(&output.parameters, "binary_data")?;
                    requested.push(RequestedOutput {
                        name: output.name,
                        binary,
                    });
                }
                Some(requested)
            }
        };
        Ok(InferRequest {
            id: wire.id,
            inputs,
            outputs,
            binary_output,
        })
    }

    /// Encodes the request as plain V2 JSON (no binary parts), to send to a model server.
    /// JSON has no NaN or infinity, which the binary extension can carry: a request holding
    /// one is refused rather than sent with `null` in its place.
    pub fn encode_json(&self) -> Result<Vec<u8>, ProtocolError> {
        for input in &self.inputs {
            let non_finite = match &input.data {
                TensorData::Fp32(v) => v
                    .iter()
                    .position(|x| !x.is_finite())
                    .map(|i| (i, v[i].to_string())),
                TensorData::Fp64(v) => v
                    .iter()
                    .position(|x| !x.is_finite())
                    .map(|i| (i, v[i].to_string())),
                _ => None,
            };
            if let Some((i, value)) = non_finite {
                return Err(ProtocolError::Unsupported(format!(
                    "input '{}': element {i} is {value}, which the model server's JSON protocol cannot carry: send finite numbers",
                    input.name
                )));
            }
        }
        #[derive(Serialize)]
        struct Input<'a> {
            name: &'a str,
            shape: &'a [usize],
            datatype: Datatype,
            data: &'a TensorData,
        }
        #[derive(Serialize)]
        struct Output<'a> {
            name: &'a str,
        }
        #[derive(Serialize)]
        struct Request<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a str>,
            inputs: Vec<Input<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            outputs: Option<Vec<Output<'a>>>,
        }
        let request = Request {
            id: self.id.as_deref(),
            inputs: self
                .inputs
                .iter()
                .map(|t| Input {
                    name: &t.name,
                    shape: &t.shape,
                    datatype: t.data.datatype(),
                    data: &t.data,
                })
                .collect(),
            outputs: self
                .outputs
                .as_ref()
                .map(|o| o.iter().map(|r| Output { name: &r.name }).collect()),
        };
        serde_json::to_vec(&request).map_err(|e| ProtocolError::Malformed(e.to_string()))
    }

    /// Builds a request from the simple JSON format, `{"features": [[...], ...]}` or one
    /// row `{"features": [...]}`, for a model with one two-dimensional input.
    pub fn from_features(
        body: &[u8],
        signature: &Signature,
    ) -> Result<InferRequest, ProtocolError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Predict {
            features: serde_json::Value,
        }
        let [spec] = signature.inputs.as_slice() else {
            return Err(ProtocolError::Unsupported(format!(
                "this model takes {} inputs ({}); the simple predict endpoint serves one-input models: use the V2 infer endpoint",
                signature.inputs.len(),
                signature.describe_inputs()
            )));
        };
        if spec.shape.len() != 2 {
            return Err(ProtocolError::Unsupported(format!(
                "this model's input is {}; the simple predict endpoint serves models with a [rows, features] input: use the V2 infer endpoint",
                spec.describe()
            )));
        }
        let predict: Predict =
            serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let rows: Vec<&serde_json::Value> = match &predict.features {
            serde_json::Value::Array(items)
                if items.iter().all(serde_json::Value::is_array) && !items.is_empty() =>
            {
                items.iter().collect()
            }
            serde_json::Value::Array(items) if items.iter().all(|v| !v.is_array()) => {
                vec![&predict.features]
            }
            _ => {
                return Err(ProtocolError::Malformed(
                    "\"features\" must be one row of numbers or a list of rows, like [[0.1, 2.0], [3.5, 4.0]]".to_string(),
                ));
            }
        };
        let width = rows[0].as_array().map_or(0, Vec::len);
        let mut values = Vec::with_capacity(rows.len() * width);
        for (index, row) in rows.iter().enumerate() {
            let items = row.as_array().map(Vec::as_slice).unwrap_or_default();
            if items.len() != width {
                return Err(ProtocolError::Malformed(format!(
                    "row {index} has {} features but row 0 has {width}: every row needs the same number",
                    items.len()
                )));
            }
            for item in items {
                values.push(match item {
                    serde_json::Value::Bool(b) => Scalar::Bool(*b),
                    serde_json::Value::Number(n) => n
                        .as_i64()
                        .map(Scalar::Int)
                        .or_else(|| n.as_u64().map(Scalar::UInt))
                        .or_else(|| n.as_f64().map(Scalar::Float))
                        .unwrap_or(Scalar::Float(f64::NAN)),
                    other => {
                        return Err(ProtocolError::Malformed(format!(
                            "row {index} has {other}, which is not a number: features are numbers"
                        )));
                    }
                });
            }
        }
        let shape = vec![rows.len(), width];
        if !spec.accepts_shape(&shape) {
            return Err(ProtocolError::Shape {
                name: spec.name.clone(),
                got: shape_text(&shape),
                want: shape_text(&spec.shape),
            });
        }
        let data = typed(&spec.name, spec.datatype, values)?;
        Ok(InferRequest {
            id: None,
            inputs: vec![Tensor {
                name: spec.name.clone(),
                shape,
                data,
            }],
            outputs: None,
            binary_output: false,
        })
    }
}

/// An encoded V2 infer response body.
pub struct EncodedResponse {
    pub body: Vec<u8>,
    /// `Some(n)` when the body carries binary outputs: the JSON header is the first `n` bytes,
    /// sent as `Inference-Header-Content-Length`.
    pub json_len: Option<usize>,
}

#[derive(Serialize)]
struct WireResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<WireOutputTensor<'a>>,
}

#[derive(Serialize)]
struct WireOutputTensor<'a> {
    name: &'a str,
    datatype: Datatype,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

#[derive(Serialize)]
struct BinaryParameters {
    binary_data_size: usize,
}

/// Encodes the outputs a request asked for, in the order it asked (all outputs when it
/// named none), as JSON or with the binary tensor extension.
pub fn encode_response(
    model: &str,
    version: &str,
    request: &InferRequest,
    outputs: &[Tensor],
) -> EncodedResponse {
    let selected: Vec<(&Tensor, bool)> = match &request.outputs {
        None => outputs.iter().map(|t| (t, request.binary_output)).collect(),
        Some(wanted) => wanted
            .iter()
            .filter_map(|w| {
                outputs
                    .iter()
                    .find(|t| t.name == w.name)
                    .map(|t| (t, w.binary || request.binary_output))
            })
            .collect(),
    };
    let wire = WireResponse {
        model_name: model,
        model_version: version,
        id: request.id.as_deref(),
        outputs: selected
            .iter()
            .map(|(t, binary)| WireOutputTensor {
                name: &t.name,
                datatype: t.data.datatype(),
                shape: &t.shape,
                parameters: binary.then(|| BinaryParameters {
                    binary_data_size: t.data.byte_len(),
                }),
                data: (!binary).then_some(&t.data),
            })
            .collect(),
    };
    let mut body = serde_json::to_vec(&wire).unwrap_or_default();
    if !selected.iter().any(|(_, binary)| *binary) {
        return EncodedResponse {
            body,
            json_len: None,
        };
    }
    let json_len = body.len();
    for (tensor, binary) in &selected {
        if *binary {
            tensor.data.write_le_bytes(&mut body);
        }
    }
    EncodedResponse {
        body,
        json_len: Some(json_len),
    }
}

#[derive(Deserialize)]
struct WireAnswer {
    #[serde(default)]
    outputs: Vec<WireAnswerTensor>,
}

#[derive(Deserialize)]
struct WireAnswerTensor {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    parameters: Parameters,
    #[serde(default)]
    data: Option<FlatData>,
}

/// Decodes a V2 infer response from a model server into its output tensors.
pub fn decode_response(body: &[u8], json_len: Option<usize>) -> Result<Vec<Tensor>, ProtocolError> {
    let (json, mut tail) = split_body(body, json_len)?;
    let wire: WireAnswer =
        serde_json::from_slice(json).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let mut outputs = Vec::with_capacity(wire.outputs.len());
    for output in wire.outputs {
        let datatype = parse_datatype(&output.name, &output.datatype)?;
        let (shape, data) = tensor_data(
            &output.name,
            datatype,
            &output.shape,
            &output.parameters,
            output.data,
            &mut tail,
        )?;
        outputs.push(Tensor {
            name: output.name,
            shape,
            data,
        });
    }
    tail.finish()?;
    Ok(outputs)
}

/// The simple format's predictions: one entry per row of `output`, a scalar for a
/// one-dimensional output (or one column, `[rows, 1]`) and a list otherwise.
pub fn predictions(output: &Tensor) -> Vec<serde_json::Value> {
    let rows = output.shape.first().copied().unwrap_or(0);
    if rows == 0 {
        return Vec::new();
    }
    let per_row = output.data.len() / rows;
    (0..rows)
        .map(|r| {
            if output.shape.len() == 1 || per_row == 1 {
                output.data.json_value(r)
            } else {
                serde_json::Value::Array(
                    (0..per_row)
                        .map(|i| output.data.json_value(r * per_row + i))
                        .collect(),
                )
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "input".into(),
                datatype: Datatype::Fp32,
                shape: vec![-1, 4],
            }],
            outputs: vec![
                TensorSpec {
                    name: "label".into(),
                    datatype: Datatype::Int64,
                    shape: vec![-1],
                },
                TensorSpec {
                    name: "probabilities".into(),
                    datatype: Datatype::Fp32,
                    shape: vec![-1, 3],
                },
            ],
        }
    }

    fn decode(body: &str) -> Result<InferRequest, ProtocolError> {
        InferRequest::decode(body.as_bytes(), None, Some(&digits()))
    }

    #[test]
    fn decodes_flat_and_nested_data_alike() {
        let flat = decode(r#"{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8.5]}]}"#).unwrap();
        let nested = decode(r#"{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,8.5]]}]}"#).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(
            flat.inputs[0].data,
            TensorData::Fp32(vec![1., 2., 3., 4., 5., 6., 7., 8.5])
        );
        assert_eq!(flat.inputs[0].shape, vec![2, 4]);
    }

    #[test]
    fn refuses_wrong_names_types_shapes_and_counts() {
        let cases = [
            (
                r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
                "unknown input 'x'",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP64","data":[1,2,3,4]}]}"#,
                "datatype FP64 but the model expects FP32",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}"#,
                "has shape [1, 5] but the model expects [-1, 4]",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[1,2,3,4]}]}"#,
                "holds 8 elements, but 4 were sent",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,true,4]}]}"#,
                "element 2 is true",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,"a",4]}]}"#,
                "BYTES tensors",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,1e300,4]}]}"#,
                "not a valid FP32",
            ),
            (r#"{"inputs":[]}"#, "missing input 'input'"),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"nope"}]}"#,
                "unknown output 'nope'",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"extra":1}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32"}]}"#,
                "has no data",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[-1,4],"datatype":"FP32","data":[]}]}"#,
                "not valid JSON",
            ),
            (r#"{"inputs": ["#, "not valid JSON"),
        ];
        for (body, expected) in cases {
            let err = decode(body).expect_err(body).to_string();
            assert!(
                err.contains(expected),
                "{body}: got {err:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn a_huge_shape_is_refused_without_overflow() {
        let body = r#"{"inputs":[{"name":"input","shape":[18446744073709551615,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
        assert!(matches!(
            decode(body),
            Err(ProtocolError::ElementCount { .. })
        ));
    }

    #[test]
    fn integer_inputs_refuse_fractions_and_accept_integral_floats() {
        let signature = Signature {
            inputs: vec![TensorSpec {
                name: "ids".into(),
                datatype: Datatype::Int64,
                shape: vec![-1],
            }],
            outputs: vec![],
        };
        let ok = InferRequest::decode(
            br#"{"inputs":[{"name":"ids","shape":[2],"datatype":"INT64","data":[3.0,-4]}]}"#,
            None,
            Some(&signature),
        )
        .unwrap();
        assert_eq!(ok.inputs[0].data, TensorData::Int64(vec![3, -4]));
        let err = InferRequest::decode(
            br#"{"inputs":[{"name":"ids","shape":[1],"datatype":"INT64","data":[3.5]}]}"#,
            None,
            Some(&signature),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("element 0 is 3.5, which is not a valid INT64"),
            "{err}"
        );
    }

    #[test]
    fn decodes_the_binary_tensor_extension() {
        let json = br#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],"parameters":{"binary_data_output":true}}"#;
        let mut body = json.to_vec();
        for x in [1.5f32, 2.0, -3.25, 4.0] {
            body.extend_from_slice(&x.to_le_bytes());
        }
        let request = InferRequest::decode(&body, Some(json.len()), Some(&digits())).unwrap();
        assert_eq!(
            request.inputs[0].data,
            TensorData::Fp32(vec![1.5, 2.0, -3.25, 4.0])
        );
        assert!(request.binary_output);

        let short =
            InferRequest::decode(&body[..body.len() - 1], Some(json.len()), Some(&digits()))
                .unwrap_err();
        assert!(
            short
                .to_string()
                .contains("declares 16 binary bytes but only 15 remain"),
            "{short}"
        );
        let too_long =
            InferRequest::decode(&body, Some(body.len() + 1), Some(&digits())).unwrap_err();
        assert!(matches!(too_long, ProtocolError::Binary(_)));
    }

    #[test]
    fn encodes_binary_outputs_after_the_json_header() {
        let request = decode(r#"{"id":"r1","inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"probabilities","parameters":{"binary_data":true}},{"name":"label"}]}"#).unwrap();
        let outputs = vec![
            Tensor {
                name: "label".into(),
                shape: vec![1],
                data: TensorData::Int64(vec![2]),
            },
            Tensor {
                name: "probabilities".into(),
                shape: vec![1, 3],
                data: TensorData::Fp32(vec![0.25, 0.25, 0.5]),
            },
        ];
        let encoded = encode_response("digits", "v1", &request, &outputs);
        let json_len = encoded.json_len.expect("binary output");
        let header: serde_json::Value = serde_json::from_slice(&encoded.body[..json_len]).unwrap();
        assert_eq!(header["id"], "r1");
        assert_eq!(header["outputs"][0]["name"], "probabilities");
        assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 12);
        assert_eq!(header["outputs"][1]["data"], serde_json::json!([2]));
        let tail = &encoded.body[json_len..];
        assert_eq!(tail.len(), 12);
        assert_eq!(f32::from_le_bytes(tail[8..12].try_into().unwrap()), 0.5);
    }

    #[test]
    fn simple_features_accept_one_row_or_many() {
        let one = InferRequest::from_features(br#"{"features":[1,2,3,4]}"#, &digits()).unwrap();
        assert_eq!(one.inputs[0].shape, vec![1, 4]);
        let two = InferRequest::from_features(br#"{"features":[[1,2,3,4],[5,6,7,8]]}"#, &digits())
            .unwrap();
        assert_eq!(two.inputs[0].shape, vec![2, 4]);
        for (body, expected) in [
            (
                r#"{"features":[[1,2,3,4],[5,6,7]]}"#,
                "row 1 has 3 features",
            ),
            (r#"{"features":[1,2,3]}"#, "has shape [1, 3]"),
            (r#"{"features":"abc"}"#, "must be one row"),
            (r#"{"features":[]}"#, "has shape [1, 0]"),
            (r#"{"rows":[]}"#, "unknown field `rows`"),
        ] {
            let err = InferRequest::from_features(body.as_bytes(), &digits())
                .expect_err(body)
                .to_string();
            assert!(err.contains(expected), "{body}: got {err:?}");
        }
    }

    #[test]
    fn without_a_signature_inputs_are_taken_as_sent_but_still_checked_for_form() {
        let body = br#"{"inputs":[{"name":"b","shape":[2],"datatype":"INT64","data":[1,2]},{"name":"a","shape":[1],"datatype":"FP64","data":[0.5]}],"outputs":[{"name":"anything"}]}"#;
        let request = InferRequest::decode(body, None, None).unwrap();
        assert_eq!(
            request
                .inputs
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(request.outputs.unwrap()[0].name, "anything");
        for (body, expected) in [
            (
                r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1]}]}"#,
                "holds 2 elements",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP99","data":[1]}]}"#,
                "unknown datatype",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":[1]}]}"#,
                "does not serve",
            ),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]},{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#,
                "more than once",
            ),
        ] {
            let err = InferRequest::decode(body.as_bytes(), None, None)
                .expect_err(body)
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn encoded_requests_decode_to_the_same_tensors() {
        let request = decode(r#"{"id":"7","inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1.5,2,3,4]}],"outputs":[{"name":"label"}]}"#).unwrap();
        let again =
            InferRequest::decode(&request.encode_json().unwrap(), None, Some(&digits())).unwrap();
        assert_eq!(again.inputs, request.inputs);
        assert_eq!(again.id.as_deref(), Some("7"));
        assert_eq!(again.outputs.unwrap()[0].name, "label");
    }

    #[test]
    fn responses_decode_from_json_and_binary() {
        let outputs = decode_response(br#"{"model_name":"m","outputs":[{"name":"predict","shape":[2,1],"datatype":"INT64","parameters":{"content_type":"np"},"data":[3,4]}]}"#, None).unwrap();
        assert_eq!(outputs[0].shape, vec![2, 1]);
        assert_eq!(outputs[0].data, TensorData::Int64(vec![3, 4]));
        let json = br#"{"outputs":[{"name":"p","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&0.25f32.to_le_bytes());
        body.extend_from_slice(&0.75f32.to_le_bytes());
        let binary = decode_response(&body, Some(json.len())).unwrap();
        assert_eq!(binary[0].data, TensorData::Fp32(vec![0.25, 0.75]));
        assert!(decode_response(b"<html>", None).is_err());
        assert!(
            decode_response(
                br#"{"outputs":[{"name":"p","shape":[3],"datatype":"FP32","data":[1]}]}"#,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn predictions_follow_the_output_rank() {
        let labels = Tensor {
            name: "label".into(),
            shape: vec![2],
            data: TensorData::Int64(vec![7, 1]),
        };
        assert_eq!(
            predictions(&labels),
            vec![serde_json::json!(7), serde_json::json!(1)]
        );
        let scores = Tensor {
            name: "p".into(),
            shape: vec![2, 2],
            data: TensorData::Fp32(vec![0.5, 0.5, 1.0, 0.0]),
        };
        assert_eq!(predictions(&scores)[1], serde_json::json!([1.0, 0.0]));
        let column = Tensor {
            name: "predict".into(),
            shape: vec![2, 1],
            data: TensorData::Int64(vec![4, 5]),
        };
        assert_eq!(
            predictions(&column),
            vec![serde_json::json!(4), serde_json::json!(5)]
        );
    }

    // Found by the v2_request fuzz target: a binary input holding NaN decoded, and re-encoding
    // it for a model server wrote `null` in its place.
    #[test]
    fn a_request_holding_nan_is_not_sent_as_json() {
        let header = br#"{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}"#;
        let mut body = header.to_vec();
        for x in [f32::NAN, 1.0, 2.0, 3.0] {
            body.extend_from_slice(&x.to_le_bytes());
        }
        let request = InferRequest::decode(&body, Some(header.len()), Some(&digits())).unwrap();
        let refused = request.encode_json().unwrap_err().to_string();
        assert!(
            refused.contains("element 0 is NaN") && refused.contains("cannot carry"),
            "{refused}"
        );
    }

    // Found by the v2_request fuzz target: numbers in JSON parsed to a neighbouring double,
    // so a request passed on to a model server changed in its last digit.
    #[test]
    fn numbers_round_trip_exactly() {
        let body = br#"{"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1.1111111111111109e102, 0.30000000000000004]}]}"#;
        let request = InferRequest::decode(body, None, None).unwrap();
        assert_eq!(
            request.inputs[0].data,
            TensorData::Fp64(vec![1.1111111111111109e102, 0.30000000000000004])
        );
        let again = InferRequest::decode(&request.encode_json().unwrap(), None, None).unwrap();
        assert_eq!(again.inputs, request.inputs);
    }
}
