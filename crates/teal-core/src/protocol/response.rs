//! V2 infer responses: encoding teal's answer to a client, and decoding a model server's.

use serde::{Deserialize, Serialize};

use super::binary::split_body;
use super::elements::FlatData;
use super::wire::{Parameters, parse_datatype, tensor_data};
use super::{Datatype, InferRequest, ProtocolError, Tensor, TensorData};

/// An encoded V2 infer response body, with the header value the gateway must send beside it
/// when the body carries binary outputs.
pub struct EncodedResponse {
    /// The JSON, followed by the binary outputs when there are any.
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

#[cfg(test)]
mod tests {
    use crate::protocol::fixtures::decode;

    use super::*;

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
}
