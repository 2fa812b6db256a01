//! How the V2 targets read their input: a control byte (bit 0: the model's signature is
//! known; bit 1: the binary extension's header length follows as two little-endian bytes),
//! then the body.
#![allow(dead_code)] // each target reads the parts it needs

pub struct Input<'a> {
    pub signature_known: bool,
    pub json_len: Option<usize>,
    pub body: &'a [u8],
}

pub fn split(data: &[u8]) -> Option<Input<'_>> {
    let (&control, rest) = data.split_first()?;
    let (json_len, body) = match (control & 2 != 0, rest) {
        (true, [lo, hi, body @ ..]) => (Some(u16::from_le_bytes([*lo, *hi]) as usize), body),
        (true, _) => return None,
        (false, body) => (None, body),
    };
    Some(Input {
        signature_known: control & 1 != 0,
        json_len,
        body,
    })
}
