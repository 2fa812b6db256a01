//! The upstream client's reading of a model server's answer (`teal_core::http1`): any bytes
//! are an answer or a refusal, never a panic, an overflow or a body past the limit; and how
//! the bytes are cut into pieces as they arrive changes nothing. The control byte: bit 0,
//! the answer is to a HEAD request; the other bits, the size of the pieces (1 to 128 bytes).
#![no_main]

mod limits;

use libfuzzer_sys::fuzz_target;
use teal_core::http1::{self, Chunked, Framing, FramingError, Parsed};

fuzz_target!(init: limits::init(), |data: &[u8]| {
    let Some((&control, answer)) = data.split_first() else {
        return;
    };
    let no_body = control & 1 != 0;
    let step = usize::from(control >> 1) + 1;
    let whole = read(answer, no_body, answer.len().max(1));
    let pieces = read(answer, no_body, step);
    assert_eq!(whole, pieces, "read whole, then {step} bytes at a time");
    if let Some(Ok((_, body))) = &whole {
        assert!(body.len() <= http1::MAX_BODY);
    }
});

/// An answer read: its status and body, or why it was refused.
type Read = Result<(u16, Vec<u8>), FramingError>;

/// Reads an answer the way the client does (the head, skipping interim answers, then the
/// body as its head says), `step` bytes arriving at a time. `None`: the bytes ended first.
fn read(data: &[u8], no_body: bool, step: usize) -> Option<Read> {
    let mut arriving = data.chunks(step);
    let mut buf: Vec<u8> = Vec::new();
    let head = loop {
        match http1::parse_head(&buf, no_body) {
            Err(e) => return Some(Err(e)),
            Ok(Parsed::Partial) => buf.extend_from_slice(arriving.next()?),
            Ok(Parsed::Interim { len }) => {
                buf.drain(..len);
            }
            Ok(Parsed::Final { head, len }) => {
                buf.drain(..len);
                break head;
            }
        }
    };
    let body = match head.framing {
        Framing::Length(n) => {
            while buf.len() < n {
                buf.extend_from_slice(arriving.next()?);
            }
            buf.truncate(n);
            buf
        }
        Framing::Chunked => {
            let mut decoder = Chunked::new();
            let mut body = Vec::new();
            loop {
                match decoder.decode(&buf, &mut body) {
                    Err(e) => return Some(Err(e)),
                    Ok((used, done)) => {
                        buf.drain(..used);
                        if done {
                            break body;
                        }
                    }
                }
                buf.extend_from_slice(arriving.next()?);
            }
        }
        Framing::UntilClose => {
            buf.extend(arriving.flatten());
            if buf.len() > http1::MAX_BODY {
                return Some(Err(FramingError::TooLarge));
            }
            buf
        }
    };
    Some(Ok((head.status, body)))
}
