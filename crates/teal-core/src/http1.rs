//! The framing of an HTTP/1.1 answer, as teal's upstream client reads a model server's:
//! the head (status, how the body is delimited, whether the connection may be reused) and a
//! chunked body. Pure: the client feeds it the bytes it has read so far. An answer whose
//! framing is ambiguous or malformed is refused with what was wrong, since reading it one way
//! when the server meant another would hand one request's answer to the next; and no size in
//! it, however large, can overflow or make the reader reserve more than [`MAX_BODY`].

/// The longest head (status line and headers) read before giving up.
pub const MAX_HEAD: usize = 64 * 1024;
/// The largest body read.
pub const MAX_BODY: usize = 256 * 1024 * 1024;
/// The longest chunk size line (with its extensions), and the most trailer bytes.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// What was wrong with an answer's framing. Each names the problem, for the 502 it becomes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The head does not parse as an HTTP/1.x answer.
    #[error("upstream answer is not HTTP/1.1: {0}")]
    NotHttp(String),
    /// The head is longer than [`MAX_HEAD`], or has more than 64 headers.
    #[error("upstream answer's head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// Two ways to delimit one body: which one the server meant cannot be known.
    #[error("upstream answer had both Content-Length and Transfer-Encoding")]
    LengthAndTransferEncoding,
    /// Two lengths that disagree.
    #[error("upstream answer had two different Content-Lengths ({0} and {1})")]
    TwoLengths(String, String),
    /// A length that is not plain decimal digits, or too large to hold.
    #[error("upstream answer's Content-Length is not a number: {0}")]
    BadLength(String),
    /// A transfer coding other than one `chunked`.
    #[error("upstream answer's Transfer-Encoding is {0}: only chunked is read")]
    TransferEncoding(String),
    /// A protocol switch nobody asked for.
    #[error("upstream answered 101 Switching Protocols to a request that asked for no upgrade")]
    SwitchingProtocols,
    /// A body (declared, or chunks adding up) past [`MAX_BODY`].
    #[error("upstream answer is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// A chunk size line that is not hex digits (with perhaps extensions).
    #[error("upstream answer's chunk size is not a hex number: {0}")]
    ChunkSize(String),
    /// A chunk size line without its end in sight.
    #[error("upstream answer's chunk size line is longer than {MAX_CHUNK_LINE} bytes")]
    ChunkLine,
    /// A chunk longer than its size said.
    #[error("upstream answer's chunk does not end with CRLF")]
    ChunkEnd,
    /// Trailers without their end in sight.
    #[error("upstream answer's trailers are larger than {MAX_CHUNK_LINE} bytes")]
    Trailers,
}

/// How an answer's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0 for answers that have no body).
    Length(usize),
    /// `Transfer-Encoding: chunked`: decode with [`Chunked`].
    Chunked,
    /// Neither: the body is everything until the server closes the connection.
    UntilClose,
}

/// A final answer's head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// The binary tensor extension's `Inference-Header-Content-Length`, when present.
    pub json_len: Option<usize>,
    /// Whether the connection may carry another request after this answer.
    pub keep_alive: bool,
}

/// What the bytes read so far hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet: read more.
    Partial,
    /// An interim (1xx) answer of `len` bytes, such as `100 Continue`: skip it and read the
    /// final answer after it.
    Interim {
        /// The interim answer's length.
        len: usize,
    },
    /// The final answer's head, `len` bytes long; its body follows.
    Final {
        /// The head.
        head: Head,
        /// Its length: the body starts after it.
        len: usize,
    },
}

/// Parses the head at the start of `buf`. `no_body` is for an answer to `HEAD`, which has
/// none whatever its headers say.
pub fn parse_head(buf: &[u8], no_body: bool) -> Result<Parsed, FramingError> {
    // Left uninitialised: httparse writes the lines it finds (64 empty headers written
    // first showed in the proxy path's instruction count).
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut headers,
    );
    let len = match parsed {
        // Refused whole as in pieces: how the bytes arrived must not decide.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(FramingError::HeadTooLarge);
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(FramingError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(FramingError::HeadTooLarge),
        Err(e) => return Err(FramingError::NotHttp(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    match status {
        101 => return Err(FramingError::SwitchingProtocols),
        100..200 => return Ok(Parsed::Interim { len }),
        _ => {}
    }
    let mut length: Option<(usize, &[u8])> = None;
    let mut chunked = false;
    let mut json_len = None;
    let mut keep_alive = response.version == Some(1);
    for header in response.headers.iter() {
        let value = header.value.trim_ascii();
        if header.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(value)?;
            if let Some((before, text)) = length
                && before != n
            {
                return Err(FramingError::TwoLengths(shown(text), shown(value)));
            }
            length = Some((n, value));
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // teal decodes no content coding, so chunked is the one transfer coding it takes,
            // and only once.
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(FramingError::TransferEncoding(shown(value)));
            }
            chunked = true;
        } else if header.name.eq_ignore_ascii_case("connection") {
            let close = value
                .split(|&b| b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
            keep_alive = !close;
        } else if header
            .name
            .eq_ignore_ascii_case("inference-header-content-length")
        {
            json_len = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        }
    }
    let framing = match (length, chunked) {
        (Some(_), true) => return Err(FramingError::LengthAndTransferEncoding),
        _ if no_body || status == 204 || status == 304 => Framing::Length(0),
        (Some((n, _)), false) if n > MAX_BODY => return Err(FramingError::TooLarge),
        (Some((n, _)), false) => Framing::Length(n),
        (None, true) => Framing::Chunked,
        (None, false) => Framing::UntilClose,
    };
    Ok(Parsed::Final {
        head: Head {
            status,
            framing,
            json_len,
            keep_alive,
        },
        len,
    })
}

/// A Content-Length: decimal digits only (no sign, no list), and no wider than a `usize`.
fn content_length(value: &[u8]) -> Result<usize, FramingError> {
    let digits = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
    digits
        .then(|| std::str::from_utf8(value).ok()?.parse::<usize>().ok())
        .flatten()
        .ok_or_else(|| FramingError::BadLength(shown(value)))
}

/// A header value or line from the answer, quoted and cut short, for an error message.
fn shown(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(&value[..value.len().min(40)]);
    let cut = if value.len() > 40 { "..." } else { "" };
    format!("{:?}{cut}", text)
}

/// A chunked body's decoder: fed the bytes after the head as they arrive, it appends the
/// body's bytes and says how much of its input it used and whether the body is whole.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    /// Body bytes so far, against [`MAX_BODY`].
    body_len: usize,
    /// Trailer bytes so far, against [`MAX_CHUNK_LINE`].
    trailer_len: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Before a chunk size line.
    #[default]
    Size,
    /// Inside a chunk, with this many bytes to go.
    Data(usize),
    /// After a chunk's bytes, before its CRLF.
    DataEnd,
    /// After the last (zero) chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

impl Chunked {
    /// A decoder at the start of a body.
    pub fn new() -> Chunked {
        Chunked::default()
    }

    /// Decodes what it can of `buf`, appending body bytes to `body`. Returns how many bytes
    /// of `buf` it used (the caller drops them) and whether the body is complete; when it is
    /// not, the caller reads more and calls again with what was left and the new bytes.
    pub fn decode(
        &mut self,
        buf: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<(usize, bool), FramingError> {
        let mut used = 0;
        loop {
            let rest = &buf[used..];
            match self.state {
                ChunkState::Done => return Ok((used, true)),
                ChunkState::Size => {
                    let Some(end) = line_end(rest) else {
                        // Too long whatever comes next (the last byte may be the CR).
                        if rest.len() > MAX_CHUNK_LINE + 1 {
                            return Err(FramingError::ChunkLine);
                        }
                        return Ok((used, false));
                    };
                    if end > MAX_CHUNK_LINE {
                        return Err(FramingError::ChunkLine);
                    }
                    let size = chunk_size(&rest[..end])?;
                    // Checked against what is left of the limit, so no size can overflow.
                    if size > MAX_BODY - self.body_len {
                        return Err(FramingError::TooLarge);
                    }
                    self.state = match size {
                        0 => ChunkState::Trailers,
                        n => ChunkState::Data(n),
                    };
                    used += end + 2;
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok((used, false));
                    }
                    let take = left.min(rest.len());
                    body.extend_from_slice(&rest[..take]);
                    self.body_len += take;
                    used += take;
                    self.state = match left - take {
                        0 => ChunkState::DataEnd,
                        n => ChunkState::Data(n),
                    };
                }
                ChunkState::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        used += 2;
                        self.state = ChunkState::Size;
                    }
                    [] | [b'\r'] => return Ok((used, false)),
                    _ => return Err(FramingError::ChunkEnd),
                },
                ChunkState::Trailers => {
                    let Some(end) = line_end(rest) else {
                        if self.trailer_len + rest.len() > MAX_CHUNK_LINE {
                            return Err(FramingError::Trailers);
                        }
                        return Ok((used, false));
                    };
                    self.trailer_len += end + 2;
                    if self.trailer_len > MAX_CHUNK_LINE {
                        return Err(FramingError::Trailers);
                    }
                    used += end + 2;
                    if end == 0 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// Where the line at the start of `buf` ends (the index of its CRLF), if it does.
fn line_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A chunk size line: hex digits, then perhaps `;extensions`. At most 16 significant digits,
/// so the size fits in 64 bits; the caller checks it against the body limit.
fn chunk_size(line: &[u8]) -> Result<usize, FramingError> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let significant = digits
        .iter()
        .position(|&b| b != b'0')
        .map_or(&digits[digits.len()..], |i| &digits[i..]);
    let valid =
        !digits.is_empty() && digits.iter().all(u8::is_ascii_hexdigit) && significant.len() <= 16;
    let size = valid
        .then(|| {
            let text = std::str::from_utf8(significant).ok()?;
            match text {
                "" => Some(0),
                _ => u64::from_str_radix(text, 16).ok(),
            }
        })
        .flatten()
        .ok_or_else(|| FramingError::ChunkSize(shown(line)))?;
    // A size past usize (on 32-bit targets) is past the body limit as well.
    Ok(usize::try_from(size).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Parsed, FramingError> {
        parse_head(text.as_bytes(), false)
    }

    fn final_head(text: &str) -> Head {
        match head(text) {
            Ok(Parsed::Final { head, .. }) => head,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    /// Decodes a whole chunked body, fed `step` bytes at a time.
    fn chunked(body: &[u8], step: usize) -> Result<Vec<u8>, FramingError> {
        let mut decoder = Chunked::new();
        let (mut out, mut pending) = (Vec::new(), Vec::new());
        for piece in body.chunks(step) {
            pending.extend_from_slice(piece);
            let (used, done) = decoder.decode(&pending, &mut out)?;
            pending.drain(..used);
            if done {
                return Ok(out);
            }
        }
        panic!("not whole: {body:?}")
    }

    #[test]
    fn heads_say_how_their_body_is_delimited() {
        let h = final_head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ninference-header-content-length: 3\r\n\r\n",
        );
        assert_eq!(
            (h.status, h.framing, h.json_len, h.keep_alive),
            (200, Framing::Length(5), Some(3), true)
        );
        let h = final_head("HTTP/1.1 404 Not Found\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        let h = final_head("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = final_head(
            "HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n",
        );
        assert!(!h.keep_alive);
        let h = final_head("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        // The same length twice is one length.
        let h = final_head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(2));
        assert_eq!(head("HTTP/1.1 200 OK\r\ncontent-le"), Ok(Parsed::Partial));
    }

    #[test]
    fn interim_answers_are_skipped_and_101_is_refused() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let Ok(Parsed::Interim { len }) = head(text) else {
            panic!("{:?}", head(text))
        };
        assert_eq!(final_head(&text[len..]).status, 200);
        assert_eq!(
            head("HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n"),
            Err(FramingError::SwitchingProtocols)
        );
    }

    #[test]
    fn ambiguous_or_malformed_heads_are_refused_by_name() {
        for (text, says) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                "both Content-Length and Transfer-Encoding",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                "two different Content-Lengths (\"5\" and \"6\")",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n",
                "not a number",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 999999999999\r\n\r\n",
                "larger than",
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                "only chunked",
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
                "only chunked",
            ),
            ("\u{0}\u{1}garbage, not HTTP\r\n\r\n", "not HTTP/1.1"),
        ] {
            let err = head(text).expect_err(text).to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert_eq!(head(&huge), Err(FramingError::HeadTooLarge));
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_pieces_they_arrive_in() {
        let body = b"3\r\nabc\r\n2;x=y\r\nde\r\n000\r\nTrailer: 1\r\n\r\n";
        for step in 1..body.len() {
            assert_eq!(chunked(body, step).unwrap(), b"abcde", "step {step}");
        }
    }

    #[test]
    fn chunk_sizes_past_the_limit_or_malformed_are_refused_without_overflow() {
        for (body, want) in [
            (&b"ffffffffffffffff\r\n"[..], FramingError::TooLarge),
            (b"fffffffffffffffe\r\n", FramingError::TooLarge),
            (b"10000001\r\n", FramingError::TooLarge),
        ] {
            assert_eq!(chunked(body, body.len()), Err(want), "{body:?}");
        }
        for body in [
            &b"1ffffffffffffffff\r\n"[..],
            b"+5\r\n",
            b"-1\r\n",
            b"\r\n",
            b"0x5\r\n",
        ] {
            assert!(
                matches!(chunked(body, body.len()), Err(FramingError::ChunkSize(_))),
                "{body:?}"
            );
        }
        assert_eq!(chunked(b"3\r\nabcX", 8), Err(FramingError::ChunkEnd));
        let long = [b"1;".as_slice(), &[b'a'; 5000]].concat();
        assert_eq!(chunked(&long, long.len()), Err(FramingError::ChunkLine));
        let trailers = [b"0\r\n".as_slice(), &b"t: 1\r\n".repeat(1000)].concat();
        assert_eq!(chunked(&trailers, 100), Err(FramingError::Trailers));
        // Many chunks adding up past the limit.
        let mut decoder = Chunked::new();
        let mut out = Vec::new();
        decoder.body_len = MAX_BODY - 1;
        assert_eq!(
            decoder.decode(b"2\r\n", &mut out),
            Err(FramingError::TooLarge)
        );
    }
}
