//! The signature the protocol's tests decode against: a model with one `[-1, 4]` FP32
//! input and two outputs, like the digits example.

use super::{Datatype, InferRequest, ProtocolError, Signature, TensorSpec};

pub(super) fn digits() -> Signature {
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

pub(super) fn decode(body: &str) -> Result<InferRequest, ProtocolError> {
    InferRequest::decode(body.as_bytes(), None, Some(&digits()))
}
