//! The V2 response decoder, which reads what an upstream model server answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use teal_core::protocol::decode_response;

fuzz_target!(|data: &[u8]| {
    // A control byte: bit 1, the binary extension's header length follows as two
    // little-endian bytes. Then the body.
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (json_len, body) = match (control & 2 != 0, rest) {
        (true, [lo, hi, body @ ..]) => (Some(u16::from_le_bytes([*lo, *hi]) as usize), body),
        (true, _) => return,
        (false, body) => (None, body),
    };
    let _ = decode_response(body, json_len);
});
