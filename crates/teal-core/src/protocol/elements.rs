//! Tensor elements as JSON sends them, and their conversion to a datatype.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{Datatype, ProtocolError, TensorData};

/// One JSON element before it is given its datatype.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Scalar {
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
pub(super) struct FlatData(pub(super) Vec<Scalar>);

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

/// Converts JSON elements to `datatype`, refusing values that do not fit it.
pub(super) fn typed(
    name: &str,
    datatype: Datatype,
    values: Vec<Scalar>,
) -> Result<TensorData, ProtocolError> {
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
        other => return Err(ProtocolError::unsupported_datatype(name, other)),
    };
    match convert_err {
        Some(err) => Err(err),
        None => Ok(data),
    }
}
