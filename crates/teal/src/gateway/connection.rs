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

use super::answer::{Answer, write_answer};
use super::request::Entry;
use super::{DataPlane, GatewayError, RequestHeaders};

/// Header lines a directly served request may have; one with more goes to hyper.
const MAX_HEADERS: usize = 64;
/// A head still incomplete at this size goes to hyper, which has its own limits.
const MAX_HEAD: usize = 16 * 1024;
/// How much more room a body being read gets at a time.
const BODY_STEP: usize = 64 * 1024;

/// How long each part of a connection's life may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A request head, from the first byte waited for (a kept-alive connection's idle time
    /// counts).
    pub header: Duration,
    /// A request body, from the end of its head.
    pub body: Duration,
    /// Writing an answer, or closing the connection.
    pub write: Duration,
}

/// The connection's one timer, armed once and moved only when it fires before the deadline
/// being waited for (or is set after it): a request whose parts arrive in time, as almost
/// all do, touches no timer.
struct Timer<'a> {
    sleep: Pin<&'a mut tokio::time::Sleep>,
    at: Instant,
}

impl Timer<'_> {
    /// Completes once `due` has passed.
    async fn until(&mut self, due: Instant) {
        if self.at > due {
            self.sleep.as_mut().reset(due);
            self.at = due;
        }
        loop {
            self.sleep.as_mut().await;
            if Instant::now() >= due {
                return;
            }
            // The timer fires once per deadline at most: at a deadline of an earlier wait
            // it is moved to this wait's, which it has not reached.
            self.sleep.as_mut().reset(due);
            self.at = due;
        }
    }
}

/// Serves one accepted connection until the client closes it, it times out waiting for a
/// request head, or `stopped` completes (teal is shutting down: a request whose body has
/// arrived is answered, with `connection: close`, and the connection closed; one whose body
/// is still arriving is answered 503 at once). A body must arrive within `timeouts.body`
/// (else 408) and an answer be written within `timeouts.write`; a client that goes away
/// while its request waits for the model takes the request with it.
pub async fn serve_connection(
    mut stream: TcpStream,
    plane: DataPlane,
    timeouts: Timeouts,
    stopped: impl Future<Output = ()>,
) {
    let mut stopped = std::pin::pin!(stopped);
    let mut stopping = false;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(1024);
    let sleep = tokio::time::sleep(timeouts.header);
    let mut timer = Timer {
        at: sleep.deadline(),
        sleep: std::pin::pin!(sleep),
    };
    loop {
        let waiting_since = Instant::now();
        let request = loop {
            match parse_head(&buf, plane.max_body_bytes()) {
                Head::Partial => {}
                Head::Infer(request) => break request,
                Head::Other => {
                    let read = buf.freeze();
                    return hand_over(stream, read, plane, timeouts, stopping, stopped.as_mut())
                        .await;
                }
            }
            // Stopping with no request begun: an idle connection is closed, but a request
            // that already reached the socket is read and answered (503 when its body is
            // still arriving, served and closed when it came whole) rather than dropped.
            if stopping && buf.is_empty() {
                // The socket itself is asked: the runtime may not have noticed bytes that
                // already arrived on a connection just accepted (a `try_read` would say
                // there are none, and the request would be dropped unanswered).
                let mut probe = [std::mem::MaybeUninit::<u8>::uninit()];
                match socket2::SockRef::from(&stream).peek(&mut probe) {
                    Ok(n) if n > 0 => {
                        buf.reserve(8 * 1024);
                        match stream.read_buf(&mut buf).await {
                            Ok(n) if n > 0 => continue,
                            _ => return,
                        }
                    }
                    _ => return,
                }
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
                () = timer.until(waiting_since + timeouts.header) => {
                    tracing::trace!("no whole request head within the header timeout; closing");
                    return;
                }
                () = &mut stopped, if !stopping => stopping = true,
            }
        };
        let head = buf.split_to(request.head_len).freeze();
        let headers = HeadLines {
            head: &head,
            lines: &request.lines,
        };
        let model = std::str::from_utf8(&head[request.model.clone()]).unwrap_or_default();
        // A model that is full refuses a request from its head: the 503 is written at once,
        // then the body is read and dropped, so the connection can carry the next request and
        // shedding never costs reading the body into memory or decoding it. A body that came
        // whole with its head is refused after, before it is decoded, for the same price,
        // and pays no lookup of its model here.
        let entry = if buf.len() < request.body_len {
            plane.check_head(model)
        } else {
            Entry::Open
        };
        if matches!(entry, Entry::Refused(_)) {
            let answer = plane.infer(model, &headers, Bytes::new(), entry).await;
            drop(head);
            let close = request.close || stopping;
            let due = Instant::now() + timeouts.write;
            let written = tokio::select! {
                biased;
                written = write_answer(&mut stream, &mut out, &answer, close) => written.is_ok(),
                () = timer.until(due) => false,
            };
            if !written {
                return;
            }
            // The body is read and dropped even when the connection closes after it: closing
            // with its bytes unread would reset the connection, and the client, still
            // sending, could lose the 503.
            let due = Instant::now() + timeouts.body;
            let mut left = request.body_len;
            loop {
                let n = buf.len().min(left);
                buf.advance(n);
                left -= n;
                if left == 0 {
                    break;
                }
                if stopping {
                    return;
                }
                buf.reserve(left.min(BODY_STEP));
                tokio::select! {
                    biased;
                    read = stream.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                    () = timer.until(due) => return,
                    () = &mut stopped, if !stopping => stopping = true,
                }
            }
            if close {
                tokio::select! {
                    biased;
                    _ = stream.shutdown() => {}
                    () = timer.until(due) => {}
                }
                return;
            }
            continue;
        }
        if buf.len() < request.body_len {
            let due = Instant::now() + timeouts.body;
            let refused = loop {
                if stopping {
                    break Some(GatewayError::ShuttingDown);
                }
                // Room as the body arrives, not all that it declares: a client that declares
                // a large body and sends nothing holds no memory for it.
                buf.reserve((request.body_len - buf.len()).min(BODY_STEP));
                tokio::select! {
                    biased;
                    read = stream.read_buf(&mut buf) => match read {
                        Ok(0) | Err(_) => return,
                        Ok(_) if buf.len() >= request.body_len => break None,
                        Ok(_) => {}
                    },
                    () = timer.until(due) => {
                        break Some(GatewayError::BodyTimeout {
                            ms: timeouts.body.as_millis() as u64,
                        });
                    }
                    () = &mut stopped, if !stopping => stopping = true,
                }
            };
            if let Some(error) = refused {
                let answer = Answer::error(&error);
                let due = Instant::now() + timeouts.write;
                tokio::select! {
                    biased;
                    _ = async {
                        write_answer(&mut stream, &mut out, &answer, true).await?;
                        stream.shutdown().await
                    } => {}
                    () = timer.until(due) => {}
                }
                return;
            }
        }
        let body = buf.split_to(request.body_len).freeze();
        let answer = tokio::select! {
            biased;
            answer = plane.infer(model, &headers, body, entry) => answer,
            () = client_gone(&stream) => {
                tracing::trace!("the client went away before its answer; dropping the request");
                return;
            }
        };
        drop(head);
        // Shutting down is noticed while waiting for a request, not here: a kept-alive
        // connection is then closed before its next request, as hyper closes idle ones.
        let close = request.close || stopping || answer.close;
        let due = Instant::now() + timeouts.write;
        let written = tokio::select! {
            biased;
            written = write_answer(&mut stream, &mut out, &answer, close) => written.is_ok(),
            () = timer.until(due) => false,
        };
        if !written || close {
            if written {
                tokio::select! {
                    biased;
                    _ = stream.shutdown() => {}
                    () = timer.until(due) => {}
                }
            }
            return;
        }
    }
}

/// Completes when the client has closed the connection (or it failed); pending while the
/// connection is open, and for good once the client sent more (a pipelined request: it has
/// not gone). Clients that close their sending side after a request and wait for the answer
/// lose it, as with hyper's default.
async fn client_gone(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// The answer to a connection past `server.max_connections`.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 80\r\n\r\n{\"error\": \"teal has as many connections open as it takes: retry after a second\"}";

/// Refuses a connection past `server.max_connections`: a 503 written with one non-blocking
/// write (a new connection's send buffer is empty), then the connection closed, without
/// reading anything, so refusing costs almost nothing.
pub fn refuse_connection(stream: TcpStream) {
    let _ = stream.try_write(REFUSED);
    drop(stream);
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
    timeouts: Timeouts,
    stopping: bool,
    stopped: Pin<&mut impl Future<Output = ()>>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        // Shutting down: hyper answers the request it is given and closes.
        .keep_alive(!stopping);
    let io = Rewind::new(read, stream, timeouts.write);
    let connection = http.serve_connection(TokioIo::new(io), plane);
    let mut connection = std::pin::pin!(connection);
    if !stopping {
        // The connection first: a request whose head teal already holds is read and answered
        // (503 while stopping) rather than dropped unanswered, when the stop came before
        // hyper's first look at it.
        tokio::select! {
            biased;
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
/// A write that cannot make progress for `write_timeout` fails, so a client that stops
/// reading its answers cannot hold the connection (hyper has no write deadline of its own).
pub struct Rewind {
    read: Bytes,
    stream: TcpStream,
    write_timeout: Duration,
    /// Armed when a write waits for room, dropped when one makes progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Rewind {
    pub fn new(read: Bytes, stream: TcpStream, write_timeout: Duration) -> Rewind {
        Rewind {
            read,
            stream,
            write_timeout,
            stalled: None,
        }
    }

    /// Passes a write's outcome on, failing it once it has waited `write_timeout` for room.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        outcome: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let timeout = self.write_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client did not read its answer within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
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
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.deadline(cx, outcome)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.deadline(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_flush(cx);
        this.deadline(cx, outcome)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let outcome = Pin::new(&mut this.stream).poll_shutdown(cx);
        this.deadline(cx, outcome)
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
    fn the_refusal_past_the_connection_cap_is_a_whole_answer() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].is_string());
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
