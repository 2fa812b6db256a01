//! The V2 infer request decoder: any body, with or without the binary extension's header
//! length, against a known signature or none, is decoded or refused, never a panic. What it
//! accepts re-encodes to JSON that decodes to the same request.
#![no_main]

mod limits;
mod wire;

use libfuzzer_sys::fuzz_target;
use teal_core::protocol::{Datatype, InferRequest, Signature, TensorSpec};

fuzz_target!(init: limits::init(), |data: &[u8]| {
    let Some(input) = wire::split(data) else {
        return;
    };
    let signature = Signature {
        inputs: vec![TensorSpec {
            name: "input".into(),
            datatype: Datatype::Fp32,
            shape: vec![-1, 4],
        }],
        outputs: vec![TensorSpec {
            name: "label".into(),
            datatype: Datatype::Int64,
            shape: vec![-1],
        }],
    };
    let known = input.signature_known.then_some(&signature);
    if let Ok(request) = InferRequest::decode(input.body, input.json_len, known)
        && let Ok(json) = request.encode_json()
    {
        let again = InferRequest::decode(&json, None, known)
            .expect("a decoded request re-encodes to one that decodes");
        assert_eq!(again.inputs, request.inputs);
    }
});
