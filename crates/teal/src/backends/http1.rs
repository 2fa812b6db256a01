//! A small HTTP/1.1 client for talking to model servers, with a keep-alive pool per
//! replica. The request task writes and reads the socket itself, with no connection task
//! in between, which is what keeps teal's added latency as a proxy small.
//!
//! It says whether a failed request could have reached the server: a connect error, or a
//! write that failed before the whole request was sent, means it did not, and the caller may
//! try another replica.

use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use teal_core::http1::{self, Chunked, Framing, FramingError, Parsed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Idle connections older than this are not reused: servers close idle keep-alive
/// connections after a few seconds (uvicorn after 5), and a request must not race that.
const IDLE_LIMIT: Duration = Duration::from_secs(4);
const MAX_IDLE: usize = 256;

/// Why a request failed, and whether it may have reached the server.
#[derive(Debug, thiserror::Error)]
pub enum Http1Error {
    /// Nothing reached the server: connecting or writing the request failed.
    #[error("{0}")]
    NotSent(String),
    /// The request was sent; the answer did not come back whole.
    #[error("{0}")]
    Failed(String),
    /// No whole answer within the request's timeout.
    #[error("no answer within the timeout")]
    TimedOut,
    /// The request could not be written as HTTP (a control character in its path or a
    /// header), so it was not sent anywhere; another replica would fare no better.
    #[error("{0}")]
    Unsendable(String),
}

/// An answer: status, the binary extension's JSON length if present, and the body.
pub struct Http1Answer {
    pub status: u16,
    pub json_len: Option<usize>,
    pub body: Bytes,
}

/// Keep-alive connections to one server.
pub struct Http1Pool {
    /// `host:port` to connect to, also sent as `Host`.
    authority: String,
    idle: Mutex<Vec<Idle>>,
}

/// A kept-alive connection, with the timer that times its requests. A timer made (and
/// registered) once per connection instead of once per request: between requests it keeps its
/// old deadline, and is moved only when it fires before the current request's.
struct Idle {
    stream: TcpStream,
    since: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Http1Pool {
    /// A pool for a base URL like `http://127.0.0.1:8080`.
    pub fn new(base_url: &str) -> Http1Pool {
        let authority = base_url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        Http1Pool {
            authority,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(connection) = idle.pop() {
            if connection.since.elapsed() >= IDLE_LIMIT {
                continue;
            }
            // A connection the server closed (it restarted, or timed the connection out)
            // reads as end of stream at once; writing to it would look like a request lost
            // in flight, which must not be retried.
            let mut probe = [0u8; 1];
            if !matches!(connection.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                continue;
            }
            return Some(connection);
        }
        None
    }

    fn give_back(&self, stream: TcpStream, timer: Pin<Box<Sleep>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                stream,
                since: Instant::now(),
                timer,
            });
        }
    }

    async fn connect(&self) -> Result<TcpStream, Http1Error> {
        let stream = TcpStream::connect(&self.authority).await.map_err(|e| {
            Http1Error::NotSent(format!("cannot connect to {}: {e}", self.authority))
        })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Sends one request and reads the whole answer, all within `timeout`.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Http1Answer, Http1Error> {
        check_writable(method, path, headers).map_err(|what| {
            Http1Error::Unsendable(format!(
                "refusing to send {what}: it would not be one HTTP request"
            ))
        })?;
        // Written piece by piece: the formatting machinery showed in profiles of the proxy path.
        let mut message = Vec::with_capacity(256 + body.len());
        for piece in [method, " ", path, " HTTP/1.1\r\nhost: ", &self.authority] {
            message.extend_from_slice(piece.as_bytes());
        }
        message.extend_from_slice(b"\r\ncontent-length: ");
        message.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        message.extend_from_slice(b"\r\n");
        for (name, value) in headers {
            for piece in [name, ": ", value, "\r\n"] {
                message.extend_from_slice(piece.as_bytes());
            }
        }
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(body);

        let due = Instant::now() + timeout;
        let (reused, mut timer) = match self.take_idle() {
            Some(idle) => (Some(idle.stream), idle.timer),
            None => (None, Box::pin(tokio::time::sleep_until(due))),
        };
        let exchange = async {
            // A reused connection may have been closed by the server while idle; if writing
            // to it fails, nothing was delivered, so one fresh connection is tried.
            let mut stream = match reused {
                Some(mut reused) => match reused.write_all(&message).await {
                    Ok(()) => reused,
                    Err(_) => self.fresh(&message).await?,
                },
                None => self.fresh(&message).await?,
            };
            let (answer, keep_alive) = read_answer(&mut stream, method == "HEAD").await?;
            Ok((answer, keep_alive.then_some(stream)))
        };
        let (answer, stream) = within(due, timer.as_mut(), exchange)
            .await
            .ok_or(Http1Error::TimedOut)??;
        if let Some(stream) = stream {
            self.give_back(stream, timer);
        }
        Ok(answer)
    }

    async fn fresh(&self, message: &[u8]) -> Result<TcpStream, Http1Error> {
        let mut stream = self.connect().await?;
        stream
            .write_all(message)
            .await
            .map_err(|e| Http1Error::NotSent(format!("cannot send to {}: {e}", self.authority)))?;
        Ok(stream)
    }
}

/// Checks that a request's parts cannot change its framing on the wire: a CR or LF (or any
/// control character, or a space) in the path would end the request line early and let the
/// rest be read as headers or as a second request. Says which part is wrong, quoted.
/// The bytes of an HTTP token (RFC 9110 `tchar`): a method or a header name.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

fn check_writable(method: &str, path: &str, headers: &[(&str, &str)]) -> Result<(), String> {
    // Every byte is looked at on every proxied request, so each check is a table lookup or
    // a comparison folded over the whole text (no early exit, which the compiler can run
    // many bytes at a time); the error path says which part was wrong.
    let token = |text: &str| !text.is_empty() && text.bytes().all(|b| TCHAR[b as usize]);
    if !token(method) {
        return Err(format!("the method {method:?}"));
    }
    let control = |text: &str| {
        text.bytes().fold(false, |bad, b| {
            bad | ((b < b' ') & (b != b'\t')) | (b == 0x7f)
        })
    };
    if path.is_empty()
        || path
            .bytes()
            .fold(false, |bad, b| bad | (b <= b' ') | (b == 0x7f))
    {
        return Err(format!(
            "the path {path:?}, which holds a control character or space"
        ));
    }
    for (name, value) in headers {
        if !token(name) {
            return Err(format!("the header name {name:?}"));
        }
        if control(value) {
            return Err(format!(
                "the {name} header's value {value:?}, which holds a control character"
            ));
        }
    }
    Ok(())
}

/// Runs `work` until `due`, timed by `timer`, a timer that may still be set for an earlier
/// deadline (it is then moved when it fires) or a later one (moved now).
async fn within<T>(
    due: Instant,
    mut timer: Pin<&mut Sleep>,
    work: impl Future<Output = T>,
) -> Option<T> {
    if timer.deadline() > due {
        timer.as_mut().reset(due);
    }
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            done = &mut work => return Some(done),
            () = timer.as_mut() => {
                if Instant::now() >= due {
                    return None;
                }
                timer.as_mut().reset(due);
            }
        }
    }
}

fn failed(e: impl std::fmt::Display) -> Http1Error {
    Http1Error::Failed(e.to_string())
}

/// Reads more bytes into `buf`; an end of stream is an error (the answer is not whole).
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<(), Http1Error> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    match stream.read_buf(buf).await {
        Ok(0) => Err(failed(
            "the server closed the connection before its answer was complete",
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(failed(e)),
    }
}

async fn read_answer(
    stream: &mut TcpStream,
    no_body: bool,
) -> Result<(Http1Answer, bool), Http1Error> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let head = loop {
        match http1::parse_head(&buf, no_body).map_err(failed)? {
            Parsed::Partial => fill(stream, &mut buf).await?,
            // An interim answer (100 Continue, 103 Early Hints) comes before the real one.
            Parsed::Interim { len } => buf.advance(len),
            Parsed::Final { head, len } => {
                buf.advance(len);
                break head;
            }
        }
    };
    let mut keep_alive = head.keep_alive;
    let body = match head.framing {
        Framing::Length(n) => {
            while buf.len() < n {
                fill(stream, &mut buf).await?;
            }
            // Bytes past the body would be a protocol error; do not reuse such a connection.
            keep_alive &= buf.len() == n;
            buf.split_to(n).freeze()
        }
        Framing::Chunked => {
            let body = read_chunked(stream, &mut buf).await?;
            keep_alive &= buf.is_empty();
            body
        }
        Framing::UntilClose => {
            keep_alive = false;
            loop {
                if buf.len() > http1::MAX_BODY {
                    return Err(failed(FramingError::TooLarge));
                }
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(16 * 1024);
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(failed(e)),
                }
            }
            buf.freeze()
        }
    };
    Ok((
        Http1Answer {
            status: head.status,
            json_len: head.json_len,
            body,
        },
        keep_alive,
    ))
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Bytes, Http1Error> {
    let mut decoder = Chunked::new();
    let mut body = Vec::new();
    loop {
        let (used, done) = decoder.decode(buf, &mut body).map_err(failed)?;
        buf.advance(used);
        if done {
            return Ok(Bytes::from(body));
        }
        fill(stream, buf).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const SECOND: Duration = Duration::from_secs(1);

    /// A server that answers each request on a connection with the next canned answer.
    async fn canned(answers: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read one request (these tests send bodies of known size "hello").
                while !seen.ends_with(b"hello") {
                    let n = socket.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&chunk[..n]);
                }
                socket.write_all(answer).await.unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_length_and_chunked_answers_on_one_connection() {
        let url = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ninference-header-content-length: 3\r\n\r\nabcde",
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        ])
        .await;
        let pool = Http1Pool::new(&url);
        let first = pool
            .send("POST", "/x", &[], b"hello", SECOND)
            .await
            .unwrap();
        assert_eq!(
            (first.status, first.json_len, &first.body[..]),
            (200, Some(3), &b"abcde"[..])
        );
        let second = pool
            .send("POST", "/x", &[], b"hello", SECOND)
            .await
            .unwrap();
        assert_eq!((second.status, &second.body[..]), (404, &b"abcde"[..]));
    }

    #[tokio::test]
    async fn a_refused_connection_was_not_sent_and_a_cut_answer_failed() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = Http1Pool::new(&format!("http://127.0.0.1:{port}"))
            .send("POST", "/", &[], b"hello", SECOND)
            .await;
        assert!(matches!(refused, Err(Http1Error::NotSent(_))));
        let url = canned(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nshort"]).await;
        let cut = Http1Pool::new(&url)
            .send("POST", "/", &[], b"hello", SECOND)
            .await;
        assert!(matches!(cut, Err(Http1Error::Failed(_))), "{:?}", cut.err());
    }

    #[tokio::test]
    async fn an_interim_answer_is_skipped_and_malformed_framing_is_refused() {
        let url = canned(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let answer = Http1Pool::new(&url)
            .send("POST", "/", &[], b"hello", SECOND)
            .await
            .unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"ok"[..]));
        for (canned_answer, says) in [
            (
                &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffff\r\n"[..],
                "larger than",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n",
                "both Content-Length and Transfer-Encoding",
            ),
        ] {
            let url = canned(vec![canned_answer]).await;
            let refused = Http1Pool::new(&url)
                .send("POST", "/", &[], b"hello", SECOND)
                .await;
            assert!(
                matches!(&refused, Err(Http1Error::Failed(why)) if why.contains(says)),
                "{says}: {:?}",
                refused.err()
            );
        }
    }

    #[tokio::test]
    async fn a_control_character_in_a_path_or_header_is_never_written() {
        // Nothing listens here: a request that got past the check would fail to connect.
        let pool = Http1Pool::new("http://127.0.0.1:9");
        for (path, headers) in [
            ("/v2/models/a\r\nx: y/infer", &[][..]),
            ("/v2/models/a b", &[]),
            ("/v2/models/a\u{0}", &[]),
            ("/ok", &[("traceparent", "x\r\ninjected: 1")]),
            ("/ok", &[("bad name", "x")]),
        ] {
            let refused = pool.send("POST", path, headers, b"hello", SECOND).await;
            assert!(
                matches!(&refused, Err(Http1Error::Unsendable(why)) if why.starts_with("refusing to send")),
                "{path:?}: {:?}",
                refused.err()
            );
        }
    }

    #[tokio::test]
    async fn an_answer_until_close_is_read_whole() {
        let url = canned(vec![b"HTTP/1.0 200 OK\r\n\r\nall of it"]).await;
        let answer = Http1Pool::new(&url)
            .send("POST", "/", &[], b"hello", SECOND)
            .await
            .unwrap();
        assert_eq!(&answer.body[..], b"all of it");
    }
}
