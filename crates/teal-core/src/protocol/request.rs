//! V2 infer requests: decoding and checking what a client sends, and encoding a request
//! as JSON to pass it on to a model server.

use serde::{Deserialize, Serialize};

use super::binary::{flag, split_body};
use super::elements::FlatData;
use super::signature::shape_text;
use super::wire::{Parameters, parse_datatype, tensor_data};
use super::{Datatype, ProtocolError, Signature, Tensor, TensorData};

/// An output the caller asked for, and whether it wants it in binary form: the response
/// returns only these, in this order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    /// The output's name, checked against the model's outputs when they are known.
    pub name: String,
    /// Whether this output comes back as raw bytes after the JSON header.
    pub binary: bool,
}

/// A decoded, validated inference request: what every backend receives, so none of them
/// checks names, datatypes or shapes again.
#[derive(Clone, Debug, PartialEq)]
pub struct InferRequest {
    /// The caller's request id, echoed in the response so it can match answers to requests.
    pub id: Option<String>,
    /// Inputs in the model's declared order.
    pub inputs: Vec<Tensor>,
    /// The outputs to return; `None` means all of them.
    pub outputs: Option<Vec<RequestedOutput>>,
    /// Whether outputs not named in `outputs` come back in binary form.
    pub binary_output: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRequest {
    id: Option<String>,
    #[serde(default)]
    parameters: Parameters,
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
    parameters: Parameters,
    #[serde(default)]
    data: Option<FlatData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireOutput {
    name: String,
    #[serde(default)]
    parameters: Parameters,
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
            let data = &input.data;
            let floats = matches!(
                data.datatype(),
                Datatype::Fp16 | Datatype::Bf16 | Datatype::Fp32 | Datatype::Fp64
            );
            let non_finite = match floats {
                true => (0..data.len())
                    .find_map(|i| data.number(i).filter(|x| !x.is_finite()).map(|x| (i, x))),
                false => None,
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
}

#[cfg(test)]
mod tests {
    use crate::protocol::TensorSpec;
    use crate::protocol::fixtures::{decode, digits};

    use super::*;

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
                r#"element 2 is "a", which is not a valid FP32"#,
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
                "element 0 is 1, which is not a valid BYTES",
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

    #[test]
    fn every_datatype_decodes_from_json_and_binary_and_refuses_what_does_not_fit() {
        let cases: [(&str, &str, TensorData); 13] = [
            ("BOOL", "[true, false]", TensorData::Bool(vec![true, false])),
            ("UINT8", "[0, 255]", TensorData::Uint8(vec![0, 255])),
            ("UINT16", "[0, 65535]", TensorData::Uint16(vec![0, 65535])),
            (
                "UINT32",
                "[0, 4294967295]",
                TensorData::Uint32(vec![0, u32::MAX]),
            ),
            (
                "UINT64",
                "[0, 18446744073709551615]",
                TensorData::Uint64(vec![0, u64::MAX]),
            ),
            ("INT8", "[-128, 127]", TensorData::Int8(vec![-128, 127])),
            (
                "INT16",
                "[-32768, 32767]",
                TensorData::Int16(vec![i16::MIN, i16::MAX]),
            ),
            ("INT32", "[-1, 2]", TensorData::Int32(vec![-1, 2])),
            ("INT64", "[-1, 2]", TensorData::Int64(vec![-1, 2])),
            (
                "FP16",
                "[1.5, -2.5]",
                TensorData::Fp16(vec![0x3e00, 0xc100]),
            ),
            (
                "BF16",
                "[1.5, -2.5]",
                TensorData::Bf16(vec![0x3fc0, 0xc020]),
            ),
            ("FP32", "[1.5, -2.5]", TensorData::Fp32(vec![1.5, -2.5])),
            (
                "BYTES",
                r#"["héllo", ""]"#,
                TensorData::Bytes(vec!["héllo".into(), vec![]]),
            ),
        ];
        for (datatype, data, want) in cases {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"{datatype}","data":{data}}}]}}"#
            );
            let request = InferRequest::decode(body.as_bytes(), None, None).expect(&body);
            assert_eq!(request.inputs[0].data, want, "{datatype} from JSON");
            // The same elements in binary form decode to the same tensor.
            let mut raw = Vec::new();
            want.write_le_bytes(&mut raw);
            let head = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"{datatype}","parameters":{{"binary_data_size":{}}}}}]}}"#,
                raw.len()
            );
            let mut body = head.clone().into_bytes();
            body.extend_from_slice(&raw);
            let request = InferRequest::decode(&body, Some(head.len()), None).expect(&head);
            assert_eq!(request.inputs[0].data, want, "{datatype} from binary");
            // And back to JSON.
            assert_eq!(
                serde_json::to_value(&want).unwrap(),
                serde_json::from_str::<serde_json::Value>(data).unwrap(),
                "{datatype} to JSON"
            );
        }
        for (datatype, data) in [
            ("UINT8", "[256, 0]"),
            ("UINT16", "[-1, 0]"),
            ("INT8", "[128, 0]"),
            ("INT16", "[1.5, 0]"),
            ("FP16", "[70000, 0]"),
            ("BYTES", r#"["a", 1]"#),
            ("BOOL", "[1, 0]"),
        ] {
            let body = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"{datatype}","data":{data}}}]}}"#
            );
            let err = InferRequest::decode(body.as_bytes(), None, None)
                .expect_err(&body)
                .to_string();
            assert!(
                err.contains(&format!("not a valid {datatype}")),
                "{body}: {err}"
            );
        }
        // BYTES in binary form: a length that runs past the body, or one element short.
        for raw in [
            [&3u32.to_le_bytes()[..], b"ab"].concat(),
            [&1u32.to_le_bytes()[..], b"a"].concat(),
            [&1u32.to_le_bytes()[..], b"a", &[0, 0]].concat(),
        ] {
            let head = format!(
                r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
                raw.len()
            );
            let mut body = head.clone().into_bytes();
            body.extend_from_slice(&raw);
            let err = InferRequest::decode(&body, Some(head.len()), None)
                .expect_err("a bad BYTES tail")
                .to_string();
            assert!(err.contains("holds 2 elements"), "{err}");
        }
    }
}
