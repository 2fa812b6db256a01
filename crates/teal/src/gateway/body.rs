//! A request's body: the headers that describe it, checked before it is read, and the bytes
//! read whole within the size limit, whether they are still arriving through the router or
//! the connection already read them.

use axum::body::Body;
use axum::http::header;
use http_body_util::BodyExt;

use super::{GatewayError, RequestHeaders, header_text, names};

/// Checks the headers that describe the body, and returns the binary extension's JSON length.
pub(super) fn body_headers(
    headers: &impl RequestHeaders,
    allow_binary: bool,
) -> Result<Option<usize>, GatewayError> {
    if let Some(encoding) = headers.get(&header::CONTENT_ENCODING) {
        let encoding = header_text(encoding).unwrap_or("?").trim();
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(GatewayError::ContentEncoding(encoding.to_string()));
        }
    }
    let json_len = match headers.get(&names::JSON_LENGTH).filter(|_| allow_binary) {
        None => None,
        Some(value) => {
            let text = header_text(value).unwrap_or("?").trim();
            Some(
                text.parse::<usize>()
                    .map_err(|_| GatewayError::HeaderLength(text.to_string()))?,
            )
        }
    };
    if let Some(content_type) = headers.get(&header::CONTENT_TYPE) {
        let text = header_text(content_type).unwrap_or("?");
        // The common case first, without splitting off parameters.
        let media = if text.eq_ignore_ascii_case("application/json") {
            text
        } else {
            text.split(';').next().unwrap_or("").trim()
        };
        let suffix = media.len().checked_sub(5).map(|at| &media.as_bytes()[at..]);
        let accepted = media.eq_ignore_ascii_case("application/json")
            || suffix.is_some_and(|s| s.eq_ignore_ascii_case(b"+json"))
            || (allow_binary && media.eq_ignore_ascii_case("application/octet-stream"));
        if !accepted {
            return Err(GatewayError::ContentType(text.to_string()));
        }
    }
    Ok(json_len)
}

/// A request body: still arriving (through the router), or already read whole (by the
/// connection, which read exactly its declared length).
pub(crate) enum Payload {
    Arriving(Body),
    Whole(bytes::Bytes),
}

/// How long a body may take to arrive, and what ends the wait early.
pub(super) struct BodyDeadline<'a> {
    pub(super) timeout: std::time::Duration,
    /// Set when teal is shutting down.
    pub(super) stopping: Option<&'a tokio::sync::watch::Receiver<bool>>,
}

/// Reads a body whole, refusing it once it passes `limit` bytes (a declared length over the
/// limit is refused before a byte is read), when it has not arrived whole within its
/// deadline (408), or when teal starts shutting down while it arrives (503).
pub(super) async fn read_body(
    body: Payload,
    headers: &impl RequestHeaders,
    limit: usize,
    deadline: BodyDeadline<'_>,
) -> Result<bytes::Bytes, GatewayError> {
    let body = match body {
        Payload::Whole(whole) if whole.len() > limit => {
            return Err(GatewayError::TooLarge { limit });
        }
        Payload::Whole(whole) => return Ok(whole),
        Payload::Arriving(body) => body,
    };
    let declared = headers
        .get(&header::CONTENT_LENGTH)
        .and_then(header_text)
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::TooLarge { limit });
    }
    let refused = |e: Box<dyn std::error::Error + Send + Sync>| {
        if e.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            GatewayError::TooLarge { limit }
        } else {
            GatewayError::Body(e.to_string())
        }
    };
    let timeout = deadline.timeout;
    let mut stopping = deadline.stopping.cloned();
    let stopped = async {
        match &mut stopping {
            Some(stop) => {
                let _ = stop.wait_for(|stopped| *stopped).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        read = tokio::time::timeout(timeout, collect(body, limit, refused)) => match read {
            Ok(read) => read,
            Err(_) => Err(GatewayError::BodyTimeout {
                ms: timeout.as_millis() as u64,
            }),
        },
        () = stopped => Err(GatewayError::ShuttingDown),
    }
}

/// Reads an arriving body's frames into one buffer, within `limit`.
async fn collect(
    body: Body,
    limit: usize,
    refused: impl Fn(Box<dyn std::error::Error + Send + Sync>) -> GatewayError,
) -> Result<bytes::Bytes, GatewayError> {
    // A body that arrives in one piece, as most do, is kept as it came, without a copy.
    let mut body = http_body_util::Limited::new(body, limit);
    let mut first = bytes::Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(&refused)?.into_data() else {
            continue;
        };
        match &mut joined {
            Some(joined) => joined.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut both = bytes::BytesMut::with_capacity(first.len() + data.len());
                both.extend_from_slice(&first);
                both.extend_from_slice(&data);
                joined = Some(both);
            }
        }
    }
    Ok(joined.map_or(first, bytes::BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn arriving(pieces: &[&'static str]) -> Payload {
        let frames = pieces
            .iter()
            .map(|p| Ok::<_, std::io::Error>(bytes::Bytes::from_static(p.as_bytes())));
        Payload::Arriving(Body::from_stream(futures::stream::iter(
            frames.collect::<Vec<_>>(),
        )))
    }

    fn within(seconds: u64) -> BodyDeadline<'static> {
        BodyDeadline {
            timeout: std::time::Duration::from_secs(seconds),
            stopping: None,
        }
    }

    #[tokio::test]
    async fn a_body_is_read_whole_in_one_piece_or_many_and_within_its_limit() {
        let none = HeaderMap::new();
        let one = read_body(arriving(&["{\"a\":1}"]), &none, 64, within(5)).await;
        assert_eq!(one.unwrap().as_ref(), b"{\"a\":1}");
        let many = read_body(arriving(&["{\"a\"", ":", "", "1}"]), &none, 64, within(5)).await;
        assert_eq!(many.unwrap().as_ref(), b"{\"a\":1}");
        let empty = read_body(arriving(&[]), &none, 64, within(5)).await;
        assert!(empty.unwrap().is_empty());
        let large = read_body(
            arriving(&["0123456789", "0123456789"]),
            &none,
            15,
            within(5),
        )
        .await;
        assert!(matches!(large, Err(GatewayError::TooLarge { limit: 15 })));
    }

    /// A body that never finishes: one piece, then nothing.
    fn stalled() -> Payload {
        use futures::StreamExt;
        let first =
            futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{"))]);
        Payload::Arriving(Body::from_stream(first.chain(futures::stream::pending())))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_is_refused_at_its_deadline_or_when_teal_stops() {
        let none = HeaderMap::new();
        let started = tokio::time::Instant::now();
        let late = read_body(stalled(), &none, 64, within(2)).await;
        assert!(matches!(late, Err(GatewayError::BodyTimeout { ms: 2000 })));
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(2));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let deadline = BodyDeadline {
            timeout: std::time::Duration::from_secs(30),
            stopping: Some(&stopping),
        };
        let reading = read_body(stalled(), &none, 64, deadline);
        let stopper = async {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            stop.send(true).unwrap();
            std::future::pending::<()>().await
        };
        let stopped = tokio::select! { read = reading => read, () = stopper => unreachable!() };
        assert!(matches!(stopped, Err(GatewayError::ShuttingDown)));
    }
}
