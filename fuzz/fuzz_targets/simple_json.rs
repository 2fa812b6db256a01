//! The simple JSON decoder (`{"features": ...}`): any body is a request or a refusal.
#![no_main]

mod limits;

use libfuzzer_sys::fuzz_target;
use teal_core::protocol::{Datatype, InferRequest, Signature, TensorSpec};

fuzz_target!(init: limits::init(), |data: &[u8]| {
    let signature = Signature {
        inputs: vec![TensorSpec {
            name: "input".into(),
            datatype: Datatype::Fp32,
            shape: vec![-1, 3],
        }],
        outputs: vec![],
    };
    let _ = InferRequest::from_features(data, &signature);
});
