//! The V2 infer request decoder: any body, with or without the binary extension's header
//! length, against a known signature or none, is decoded or refused, never a panic. What it
//! accepts re-encodes to JSON that decodes to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use teal_core::protocol::{Datatype, InferRequest, Signature, TensorSpec};

fuzz_target!(|data: &[u8]| {
    // A control byte: bit 0, the model's signature is known; bit 1, the binary extension's
    // header length follows as two little-endian bytes. Then the body.
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (json_len, body) = match (control & 2 != 0, rest) {
        (true, [lo, hi, body @ ..]) => (Some(u16::from_le_bytes([*lo, *hi]) as usize), body),
        (true, _) => return,
        (false, body) => (None, body),
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
    let known = (control & 1 != 0).then_some(&signature);
    if let Ok(request) = InferRequest::decode(body, json_len, known)
        && let Ok(json) = request.encode_json()
    {
        let again = InferRequest::decode(&json, None, known)
            .expect("a decoded request re-encodes to one that decodes");
        assert_eq!(again.inputs, request.inputs);
    }
});
