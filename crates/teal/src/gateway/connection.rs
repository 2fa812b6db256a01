//! The data plane's HTTP/1.1 connections.
//!
//! The request clients send by far the most, a V2 infer POST with a `Content-Length` body, is
//! read and answered here, in the connection's own task: parse the head, read the body,
//! run [`DataPlane::infer`], write the answer in one write. The first request on a
//! connection that is anything else (another method or path, a chunked body, `Expect`, an
//! upgrade, HTTP/1.0, a head this parser refuses or finds too large) hands the connection,
//! with every byte already read, to hyper, which serves that request and the rest of the
//! connection through the data-plane router. So every answer is the router's, and hyper
//! keeps the protocol's corner cases; what this loop saves is hyper's dispatcher, its
//! per-request timers and its buffers, about a third of a proxied request's instructions.
//!
//! A connection waiting for a request head (a new one, or kept alive between requests) is
//! closed when no whole head arrived within the header timeout, as hyper does; the timer
//! behind that is armed once and moved only when it fires, not on every request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::HeaderName;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::answer::write_answer;
use super::{DataPlane, RequestHeaders};

/// Header lines a directly served request may have; one with more goes to hyper.
const MAX_HEADERS: usize = 64;
/// A head still incomplete at this size goes to hyper, which has its own limits.
const MAX_HEAD: usize = 16 * 1024;
/// How much more room a body being read gets at a time.
const BODY_STEP: usize = 64 * 1024;

/// Serves one accepted connection until the client closes it, it times out waiting for a
/// request head, or `stopped` completes (teal is shutting down: a request already begun is
/// read and answered, with `connection: close`, and the connection closed).
pub async fn serve_connection(
    mut stream: TcpStream,
    plane: DataPlane,
    header_timeout: Duration,
    stopped: impl Future<Output = ()>,
) {
    let mut stopped = std::pin::pin!(stopped);
    let mut stopping = false;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(1024);
    let deadline = tokio::time::sleep(header_timeout);
    let mut deadline = std::pin::pin!(deadline);
    loop {
        let waiting_since = Instant::now();
        let request = loop {
            match parse_head(&buf, plane.max_body_bytes()) {
                Head::Partial => {}
                Head::Infer(request) => break request,
                Head::Other => {
                    let read = buf.freeze();
                    return hand_over(
                        stream,
                        read,
                        plane,
                        header_timeout,
                        stopping,
                        stopped.as_mut(),
                    )
                    .await;
                }
            }
            if stopping && buf.is_empty() {
                return;
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(8 * 1024);
            }
            tokio::select! {
                biased;
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = &mut deadline => {
                    // The timer fires once per timeout at most: at a deadline of an earlier
                    // wait it is moved to this wait's, which it has not reached.
                    let due = waiting_since + header_timeout;
                    if Instant::now() >= due {
                        tracing::trace!("no whole request head within the header timeout; closing");
                        return;
                    }
                    deadline.as_mut().reset(due);
                }
                () = &mut stopped, if !stopping => stopping = true,
            }
        };
        let head = buf.split_to(request.head_len).freeze();
        let headers = HeadLines {
            head: &head,
            lines: &request.lines,
        };
        while buf.len() < request.body_len {
            // Room as the body arrives, not all that it declares: a client that declares a
            // large body and sends nothing holds no memory for it.
            buf.reserve((request.body_len - buf.len()).min(BODY_STEP));
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        let body = buf.split_to(request.body_len).freeze();
        let model = std::str::from_utf8(&head[request.model.clone()]).unwrap_or_default();
        let answer = plane.infer(model, &headers, body).await;
        drop(head);
        // Shutting down is noticed while waiting for a request, not here: a kept-alive
        // connection is then closed before its next request, as hyper closes idle ones.
        let close = request.close || stopping || answer.close;
        if write_answer(&mut stream, &mut out, &answer, close)
            .await
            .is_err()
            || close
        {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// A request this module answers itself.
struct InferHead {
    /// Where the model's name is in the head.
    model: std::ops::Range<usize>,
    /// Where each header line's name and value are in the head.
    lines: Lines,
    head_len: usize,
    body_len: usize,
    /// The client asked to close the connection after the answer.
    close: bool,
}

// Boxing the head would cost an allocation per request; moving its kilobyte costs less.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// Not whole yet.
    Partial,
    Infer(InferHead),
    /// Anything else: hyper serves it.
    Other,
}

/// Where a head's header lines are: each name's and value's byte range, for at most
/// [`MAX_HEADERS`] lines (httparse refuses more, and such a head goes to hyper).
struct Lines {
    ranges: [(u32, u32, u32, u32); MAX_HEADERS],
    count: usize,
}

impl Default for Lines {
    fn default() -> Lines {
        Lines {
            ranges: [(0, 0, 0, 0); MAX_HEADERS],
            count: 0,
        }
    }
}

impl Lines {
    fn push(&mut self, name: std::ops::Range<usize>, value: std::ops::Range<usize>) {
        // A head not whole within `MAX_HEAD` bytes goes to hyper, so every offset fits.
        let r = |n: usize| n as u32;
        self.ranges[self.count] = (r(name.start), r(name.end), r(value.start), r(value.end));
        self.count += 1;
    }
}

/// A request's header lines, read where they lie in its head.
struct HeadLines<'a> {
    head: &'a [u8],
    lines: &'a Lines,
}

impl HeadLines<'_> {
    fn values<'s, 'n>(&'s self, name: &'n [u8]) -> impl Iterator<Item = &'s [u8]> + use<'s, 'n> {
        let lines = &self.lines.ranges[..self.lines.count];
        lines.iter().filter_map(move |&(n0, n1, v0, v1)| {
            let line = &self.head[n0 as usize..n1 as usize];
            line.eq_ignore_ascii_case(name)
                .then(|| &self.head[v0 as usize..v1 as usize])
        })
    }
}

impl RequestHeaders for HeadLines<'_> {
    fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        self.values(name.as_str().as_bytes()).next()
    }

    fn get_named(&self, name: &str) -> Option<&[u8]> {
        self.values(name.as_bytes()).next()
    }

    fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.values(name.as_str().as_bytes())
    }
}

/// Reads a request head. Only what is plainly an infer POST with a known body length is
/// taken; everything else, including anything malformed, is hyper's to answer.
fn parse_head(buf: &[u8], max_body: usize) -> Head {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => return Head::Partial,
        _ => return Head::Other,
    };
    if request.method != Some("POST") || request.version != Some(1) {
        return Head::Other;
    }
    let Some(model) = request.path.and_then(super::infer_path_model) else {
        return Head::Other;
    };
    // The name's place in the head: the target is a slice of `buf`.
    let start = model.as_ptr() as usize - buf.as_ptr() as usize;
    let model = start..start + model.len();
    let mut lines = Lines::default();
    let mut body_len = None;
    let mut close = false;
    for line in request.headers.iter() {
        // The characters a header value may hold (as `HeaderValue` has them); httparse
        // checked the names.
        let valid = |b: &u8| *b == b'\t' || (*b >= 0x20 && *b != 0x7f);
        if !line.value.iter().all(valid) {
            return Head::Other;
        }
        let at = |part: &[u8]| {
            let start = part.as_ptr() as usize - buf.as_ptr() as usize;
            start..start + part.len()
        };
        lines.push(at(line.name.as_bytes()), at(line.value));
        let name = line.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match (body_len, digits(line.value)) {
                (None, Some(n)) => body_len = Some(n),
                _ => return Head::Other,
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            let value = line.value.trim_ascii();
            if value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !value.eq_ignore_ascii_case(b"keep-alive") {
                return Head::Other;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Head::Other;
        }
    }
    match body_len {
        Some(body_len) if body_len <= max_body => Head::Infer(InferHead {
            model,
            lines,
            head_len,
            body_len,
            close,
        }),
        // No length, or a body over the limit: hyper reads (or refuses) it.
        _ => Head::Other,
    }
}

/// A `Content-Length` value: decimal digits only, as the specification has it.
fn digits(value: &[u8]) -> Option<usize> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 15 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
}

/// Gives the connection to hyper, which reads `read` (the bytes this loop had taken) first.
async fn hand_over(
    stream: TcpStream,
    read: Bytes,
    plane: DataPlane,
    header_timeout: Duration,
    stopping: bool,
    stopped: Pin<&mut impl Future<Output = ()>>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Shutting down: hyper answers the request it is given and closes.
        .keep_alive(!stopping);
    let connection = http.serve_connection(TokioIo::new(Rewind { read, stream }), plane);
    let mut connection = std::pin::pin!(connection);
    if !stopping {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = stopped => connection.as_mut().graceful_shutdown(),
        }
    }
    if let Err(e) = connection.await {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// A connection whose first bytes were already read: they are read again, then the socket.
struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.read.is_empty() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(head: &str) -> Option<InferHead> {
        match parse_head(head.as_bytes(), 1024) {
            Head::Infer(request) => Some(request),
            _ => None,
        }
    }

    #[test]
    fn a_plain_infer_post_with_a_length_is_served_directly() {
        let head = "POST /v2/models/digits/infer?trace=1 HTTP/1.1\r\nHost: teal\r\nContent-Length: 12\r\nConnection: keep-alive\r\nX-Request-Id: a\r\n\r\n{\"inputs\"";
        let request = infer(head).expect("served directly");
        assert_eq!(&head[request.model.clone()], "digits");
        assert_eq!(request.body_len, 12);
        assert_eq!(request.head_len, head.find("\r\n\r\n").unwrap() + 4);
        assert!(!request.close);
        let lines = HeadLines {
            head: head.as_bytes(),
            lines: &request.lines,
        };
        let id = HeaderName::from_static("x-request-id");
        assert_eq!(lines.get(&id), Some(&b"a"[..]));
        assert_eq!(lines.get_named("host"), Some(&b"teal"[..]));
        assert_eq!(lines.get(&HeaderName::from_static("x-none")), None);
        assert_eq!(request.lines.count, 4);
        let closing = "POST /v2/models/digits/infer HTTP/1.1\r\ncontent-length: 0\r\nconnection: Close\r\n\r\n";
        assert!(infer(closing).unwrap().close);
    }

    #[test]
    fn an_incomplete_head_waits_for_more_bytes() {
        assert!(matches!(
            parse_head(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: te", 1024),
            Head::Partial
        ));
        assert!(matches!(parse_head(b"", 1024), Head::Partial));
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            // Other methods, paths, versions.
            "GET /v2/models/digits/infer HTTP/1.1\r\n\r\n",
            "POST /v2/models/digits/versions/v1/infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models/dig%69ts/infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models//infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            "POST /v1/models/digits/predict HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            "POST http://teal/v2/models/digits/infer HTTP/1.1\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models/digits/infer HTTP/1.0\r\ncontent-length: 2\r\n\r\n",
            // Bodies this loop does not read.
            "POST /v2/models/digits/infer HTTP/1.1\r\n\r\n",
            "POST /v2/models/digits/infer HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST /v2/models/digits/infer HTTP/1.1\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n",
            "POST /v2/models/digits/infer HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            "POST /v2/models/digits/infer HTTP/1.1\r\ncontent-length: +2\r\n\r\n",
            "POST /v2/models/digits/infer HTTP/1.1\r\ncontent-length: 2000\r\n\r\n",
            "POST /v2/models/digits/infer HTTP/1.1\r\ncontent-length: 2\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
            // Malformed heads: hyper gives its own answer.
            "POST /v2/models/digits/infer HTTP/1.1\r\nbad header\r\n\r\n",
            "POST  HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(head.as_bytes(), 1024), Head::Other),
                "{head:?}"
            );
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let head =
            format!("POST /v2/models/digits/infer HTTP/1.1\r\ncontent-length: 2\r\n{many}\r\n");
        assert!(matches!(parse_head(head.as_bytes(), 1024), Head::Other));
        let huge = format!(
            "POST /v2/models/digits/infer HTTP/1.1\r\nx: {}",
            "a".repeat(MAX_HEAD)
        );
        assert!(matches!(parse_head(huge.as_bytes(), 1024), Head::Other));
    }

    #[test]
    fn content_lengths_are_plain_decimal_digits() {
        assert_eq!(digits(b"0"), Some(0));
        assert_eq!(digits(b" 123 "), Some(123));
        for bad in [
            &b""[..],
            b"-1",
            b"1 2",
            b"0x10",
            b"1e3",
            b"9999999999999999",
        ] {
            assert_eq!(digits(bad), None, "{bad:?}");
        }
    }
}
