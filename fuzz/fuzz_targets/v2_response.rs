//! The V2 response decoder, which reads what an upstream model server answers; and the
//! envelope check of the pass-through path, against serde_json reading the same envelope.
#![no_main]

mod limits;
mod wire;

use libfuzzer_sys::fuzz_target;
use teal_core::protocol::decode_response;

#[derive(serde::Deserialize)]
struct Envelope {
    #[allow(dead_code)]
    outputs: Vec<serde::de::IgnoredAny>,
}

fuzz_target!(init: limits::init(), |data: &[u8]| {
    let Some(input) = wire::split(data) else {
        return;
    };
    let _ = decode_response(input.body, input.json_len);
    let json = &input.body[..input.json_len.unwrap_or(input.body.len()).min(input.body.len())];
    let checked = teal_core::envelope::check(json);
    let serde = serde_json::from_slice::<Envelope>(json).is_ok();
    // The two differences the check documents: names with escapes, and a list for the object.
    let differs_by_design =
        json.contains(&b'\\') || json.trim_ascii_start().first() == Some(&b'[');
    if checked.is_ok() != serde && !differs_by_design {
        panic!(
            "envelope check {checked:?}, serde_json accepts: {serde}, on {:?}",
            String::from_utf8_lossy(json)
        );
    }
});
