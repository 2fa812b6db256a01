//! The V2 response decoder, which reads what an upstream model server answers.
#![no_main]

mod wire;

use libfuzzer_sys::fuzz_target;
use teal_core::protocol::decode_response;

fuzz_target!(|data: &[u8]| {
    let Some(input) = wire::split(data) else {
        return;
    };
    let _ = decode_response(input.body, input.json_len);
});
