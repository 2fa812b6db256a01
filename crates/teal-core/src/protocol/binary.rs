//! Triton's binary tensor extension: a JSON header of `Inference-Header-Content-Length`
//! bytes, then the raw little-endian elements of each tensor that declares a
//! `binary_data_size`, in order.

use super::wire::Parameters;
use super::{Datatype, ProtocolError, TensorData};

impl TensorData {
    /// Appends the elements as little-endian bytes, the binary tensor extension's layout
    /// (and gRPC's raw contents'): clients that ask for binary outputs skip JSON's cost for
    /// large tensors. A BYTES element is its length as 4 little-endian bytes, then its bytes.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        macro_rules! le {
            ($v:expr) => {
                $v.iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()))
            };
        }
        match self {
            TensorData::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
            TensorData::Uint8(v) => out.extend_from_slice(v),
            TensorData::Uint16(v) | TensorData::Fp16(v) | TensorData::Bf16(v) => le!(v),
            TensorData::Uint32(v) => le!(v),
            TensorData::Uint64(v) => le!(v),
            TensorData::Int8(v) => le!(v),
            TensorData::Int16(v) => le!(v),
            TensorData::Int32(v) => le!(v),
            TensorData::Int64(v) => le!(v),
            TensorData::Fp32(v) => le!(v),
            TensorData::Fp64(v) => le!(v),
            TensorData::Bytes(v) => {
                for element in v {
                    // An element is a part of a body or a model's answer: far below 4 GiB.
                    out.extend_from_slice(&(element.len() as u32).to_le_bytes());
                    out.extend_from_slice(element);
                }
            }
        }
    }

    pub(super) fn byte_len(&self) -> usize {
        match self {
            TensorData::Bytes(v) => v.iter().map(|e| 4 + e.len()).sum(),
            other => other.len() * other.datatype().element_size().unwrap_or(0),
        }
    }
}

/// A boolean parameter such as `binary_data_output`; absent is false.
pub(super) fn flag(parameters: &Parameters, key: &str) -> Result<bool, ProtocolError> {
    match parameters.as_ref().and_then(|p| p.get(key)) {
        None => Ok(false),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ProtocolError::Malformed(format!(
            "parameter '{key}' must be true or false, not {other}"
        ))),
    }
}

/// The `binary_data_size` parameter of one tensor, when it is sent in binary.
pub(super) fn binary_size(parameters: &Parameters) -> Result<Option<usize>, ProtocolError> {
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

/// The elements of one tensor from its little-endian bytes, which must hold `count` of
/// them exactly (for BYTES, `count` length-prefixed elements filling the bytes).
pub(super) fn from_le_bytes(
    datatype: Datatype,
    bytes: &[u8],
    count: usize,
) -> Result<TensorData, usize> {
    macro_rules! le {
        ($variant:ident, $t:ty) => {{
            const SIZE: usize = std::mem::size_of::<$t>();
            if bytes.len() % SIZE != 0 || bytes.len() / SIZE != count {
                return Err(bytes.len() / SIZE);
            }
            TensorData::$variant(
                bytes
                    .chunks_exact(SIZE)
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            )
        }};
    }
    Ok(match datatype {
        Datatype::Bool => {
            if bytes.len() != count {
                return Err(bytes.len());
            }
            TensorData::Bool(bytes.iter().map(|b| *b != 0).collect())
        }
        Datatype::Uint8 => {
            if bytes.len() != count {
                return Err(bytes.len());
            }
            TensorData::Uint8(bytes.to_vec())
        }
        Datatype::Uint16 => le!(Uint16, u16),
        Datatype::Uint32 => le!(Uint32, u32),
        Datatype::Uint64 => le!(Uint64, u64),
        Datatype::Int8 => {
            if bytes.len() != count {
                return Err(bytes.len());
            }
            TensorData::Int8(bytes.iter().map(|b| *b as i8).collect())
        }
        Datatype::Int16 => le!(Int16, i16),
        Datatype::Int32 => le!(Int32, i32),
        Datatype::Int64 => le!(Int64, i64),
        Datatype::Fp16 => le!(Fp16, u16),
        Datatype::Bf16 => le!(Bf16, u16),
        Datatype::Fp32 => le!(Fp32, f32),
        Datatype::Fp64 => le!(Fp64, f64),
        Datatype::Bytes => {
            // Each element is checked against what is left before it is copied, so a
            // declared length can never ask for more than the body holds.
            let mut elements = Vec::with_capacity(count.min(bytes.len() / 4));
            let mut rest = bytes;
            while rest.len() >= 4 {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len > rest.len() - 4 {
                    return Err(elements.len() + 1);
                }
                elements.push(rest[4..4 + len].to_vec());
                rest = &rest[4 + len..];
            }
            if !rest.is_empty() || elements.len() != count {
                return Err(elements.len() + usize::from(!rest.is_empty()));
            }
            TensorData::Bytes(elements)
        }
    })
}

/// The binary part of a body (after the JSON header), handed out to tensors in order.
pub(super) struct BinaryTail<'a> {
    pub(super) bytes: &'a [u8],
    /// Whether the body declared a JSON length at all (the binary extension is in use).
    pub(super) declared: bool,
}

pub(super) fn split_body(
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
    pub(super) fn finish(self) -> Result<(), ProtocolError> {
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

#[cfg(test)]
mod tests {
    use crate::protocol::InferRequest;
    use crate::protocol::fixtures::digits;

    use super::*;

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
}
