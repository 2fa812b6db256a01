//! Triton's binary tensor extension: a JSON header of `Inference-Header-Content-Length`
//! bytes, then the raw little-endian elements of each tensor that declares a
//! `binary_data_size`, in order.

use super::wire::Parameters;
use super::{Datatype, ProtocolError, TensorData};

impl TensorData {
    /// Appends the elements as little-endian bytes, the binary tensor extension's layout:
    /// clients that ask for binary outputs skip JSON's cost for large tensors.
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

    pub(super) fn byte_len(&self) -> usize {
        self.len() * self.datatype().element_size().unwrap_or(0)
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

/// The elements of one tensor from its little-endian bytes.
pub(super) fn from_le_bytes(
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
        other => return Err(ProtocolError::unsupported_datatype(name, other)),
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
