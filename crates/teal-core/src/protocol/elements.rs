//! Tensor elements as JSON sends them, and their conversion to a datatype.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{Datatype, ProtocolError, TensorData};

/// One JSON element before it is given its datatype.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Scalar {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// A string: a BYTES element.
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::UInt(u) => write!(f, "{u}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Str(text) => {
                // Long strings are cut in messages.
                let cut: String = text.chars().take(40).collect();
                let more = if cut.len() < text.len() { "..." } else { "" };
                write!(f, "{:?}", format!("{cut}{more}"))
            }
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
        f.write_str("an array of numbers, booleans or strings (flat or nested)")
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
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.out.push(Scalar::Str(v.to_string()));
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(
            "null is not a tensor element: send numbers, booleans or strings",
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

/// `x` as an `f32` rounded to odd: exact when it fits, else its neighbour toward zero with
/// the last bit set. Rounding that again to FP16 or BF16 (to nearest, ties to even) gives
/// what rounding `x` once would, as `f32` has more than two bits beyond either; rounding to
/// nearest twice would not (a value just above a tie would first become the tie).
fn to_f32_odd(x: f64) -> f32 {
    let nearest = x as f32;
    if !nearest.is_finite() || f64::from(nearest) == x {
        return nearest;
    }
    let mut bits = nearest.to_bits();
    if f64::from(nearest).abs() > x.abs() {
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

/// Converts JSON elements to `datatype`, refusing values that do not fit it: integers out of
/// the type's range, fractions for integer types, non-finite or out-of-range floats, strings
/// for anything but BYTES, and anything but strings for BYTES.
pub(super) fn typed(
    name: &str,
    datatype: Datatype,
    values: Vec<Scalar>,
) -> Result<TensorData, ProtocolError> {
    let mut first_bad: Option<(usize, Scalar)> = None;
    fn as_int(v: &Scalar) -> Option<i128> {
        match v {
            Scalar::Int(i) => Some(i128::from(*i)),
            Scalar::UInt(u) => Some(i128::from(*u)),
            // An integral float such as 3.0 is accepted; 3.5 is not.
            Scalar::Float(x)
                if x.fract() == 0.0
                    && (-1.8446744073709552e19..1.8446744073709552e19).contains(x) =>
            {
                Some(*x as i128)
            }
            _ => None,
        }
    }
    fn as_float(v: &Scalar) -> Option<f64> {
        match v {
            Scalar::Int(i) => Some(*i as f64),
            Scalar::UInt(u) => Some(*u as f64),
            Scalar::Float(x) => Some(*x),
            Scalar::Bool(_) | Scalar::Str(_) => None,
        }
    }
    // Each element converted, or the first that does not fit noted (and a placeholder kept,
    // so the conversion stays one pass without a second allocation).
    macro_rules! convert {
        ($variant:ident, $default:expr, $f:expr) => {
            TensorData::$variant(
                values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match $f(&v) {
                        Some(x) => x,
                        None => {
                            if first_bad.is_none() {
                                first_bad = Some((i, v));
                            }
                            $default
                        }
                    })
                    .collect(),
            )
        };
    }
    macro_rules! int {
        ($variant:ident, $t:ty) => {
            convert!($variant, 0, |v: &Scalar| as_int(v)
                .and_then(|x| <$t>::try_from(x).ok()))
        };
    }
    let data = match datatype {
        Datatype::Fp32 => convert!(Fp32, 0.0, |v: &Scalar| as_float(v)
            .map(|x| x as f32)
            .filter(|x| x.is_finite())),
        Datatype::Fp64 => convert!(Fp64, 0.0, as_float),
        Datatype::Fp16 => convert!(Fp16, 0, |v: &Scalar| as_float(v)
            .map(|x| half::f16::from_f32(to_f32_odd(x)))
            .filter(|x| x.is_finite())
            .map(half::f16::to_bits)),
        Datatype::Bf16 => convert!(Bf16, 0, |v: &Scalar| as_float(v)
            .map(|x| half::bf16::from_f32(to_f32_odd(x)))
            .filter(|x| x.is_finite())
            .map(half::bf16::to_bits)),
        Datatype::Int8 => int!(Int8, i8),
        Datatype::Int16 => int!(Int16, i16),
        Datatype::Int32 => int!(Int32, i32),
        Datatype::Int64 => int!(Int64, i64),
        Datatype::Uint8 => int!(Uint8, u8),
        Datatype::Uint16 => int!(Uint16, u16),
        Datatype::Uint32 => int!(Uint32, u32),
        Datatype::Uint64 => int!(Uint64, u64),
        Datatype::Bool => convert!(Bool, false, |v: &Scalar| match v {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        }),
        Datatype::Bytes => convert!(Bytes, Vec::new(), |v: &Scalar| match v {
            Scalar::Str(text) => Some(text.clone().into_bytes()),
            _ => None,
        }),
    };
    match first_bad {
        Some((index, value)) => Err(ProtocolError::Value {
            name: name.to_string(),
            index,
            value: value.to_string(),
            datatype,
        }),
        None => Ok(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_from_json_rounds_once() {
        let one = |datatype, x: f64| match typed("x", datatype, vec![Scalar::Float(x)]) {
            Ok(TensorData::Fp16(v) | TensorData::Bf16(v)) => v[0],
            other => panic!("{other:?}"),
        };
        // Just above the tie between 1 and the next FP16 (1 + 2^-10): up, not to even.
        assert_eq!(one(Datatype::Fp16, 1.000_488_281_250_01), 0x3c01);
        assert_eq!(one(Datatype::Fp16, 1.000_488_281_25), 0x3c00); // the tie: to even
        assert_eq!(one(Datatype::Bf16, 1.003_906_250_000_01), 0x3f81);
        assert_eq!(one(Datatype::Bf16, 1.003_906_25), 0x3f80);
        assert_eq!(one(Datatype::Fp16, -2.5), 0xc100);
        assert_eq!(one(Datatype::Fp16, 65504.0), 0x7bff);
        assert!(typed("x", Datatype::Fp16, vec![Scalar::Float(65520.0)]).is_err());
    }
}
