//! What V2 requests and responses share on the wire: the `parameters` object, datatype
//! names, and one tensor's elements from JSON `data` or from the binary tail.

use super::binary::{BinaryTail, binary_size, from_le_bytes};
use super::elements::{FlatData, typed};
use super::signature::shape_text;
use super::{Datatype, ProtocolError, TensorData};

/// A tensor's or a message's `parameters` object, kept as sent.
pub(super) type Parameters = Option<serde_json::Map<String, serde_json::Value>>;

/// How many elements a shape holds; `None` when the count overflows.
pub(super) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d))
}

/// The elements of one tensor, from JSON `data` or from the binary tail.
pub(super) fn tensor_data(
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
            let Some(count) = expected else {
                return Err(count_error(0));
            };
            from_le_bytes(datatype, bytes, count).map_err(count_error)?
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

/// A datatype by its wire name, refusing names the protocol does not have.
pub(super) fn parse_datatype(name: &str, datatype: &str) -> Result<Datatype, ProtocolError> {
    Datatype::parse(datatype).ok_or_else(|| {
        ProtocolError::Malformed(format!("tensor '{name}' has unknown datatype '{datatype}'"))
    })
}
