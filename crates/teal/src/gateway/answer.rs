//! The answer to a model request, and the two ways it leaves teal: written as it is by the
//! connection that read the request, or made a `Response` for the router's path. Both carry
//! the same headers, from [`Answer::for_each_header`], so a client cannot tell which path
//! served it.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use teal_core::protocol::{self, Tensor};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::routing::Slot;

use super::{GatewayError, names};

/// Answers up to this size are written together with their head, in one write.
const JOINED_BODY: usize = 64 * 1024;

/// The predicted label of a request, carried with its answer to the request log, where
/// feedback finds it.
pub(super) struct Predicted(pub(super) String);

/// The answer to a model request, before it is a `Response`: the data plane's connection
/// writes it as it is, the router's path makes it one ([`Answer::into_response`]). Building
/// a header map for every answer, and reading it back to record which version answered, was
/// a tenth of a proxied request's instructions.
pub(crate) struct Answer {
    pub(super) status: StatusCode,
    pub(super) content_type: &'static str,
    /// The binary extension's JSON length (`inference-header-content-length`).
    pub(super) json_len: Option<usize>,
    pub(super) body: bytes::Bytes,
    pub(super) request_id: String,
    /// The slot that answered, or failed to, with the route table that chose it.
    pub(super) served: Option<Served>,
    /// The request's body was left unread, so the connection cannot carry another request.
    pub(super) close: bool,
    /// The label it predicts, for the request log (only while the log is on).
    pub(super) predicted: Option<Predicted>,
    /// The number it answers (a regressor's output, a classifier's top score), for the
    /// slot's value histogram (only while the log is on, as `predicted`).
    pub(super) value: Option<f64>,
    /// The slot that failed this request before the old version answered it.
    pub(super) failed_over: Option<Arc<Slot>>,
    /// Seconds after which a refused request may be retried (`Retry-After`).
    pub(super) retry_after: Option<u32>,
}

/// The slot a request ran on and the generation of the route table that chose it: the
/// answer's headers name both, and the slot's metrics count the answer.
pub(super) struct Served {
    pub(super) slot: Arc<Slot>,
    pub(super) generation: u64,
}

impl Answer {
    /// An answer no slot has served yet.
    pub(super) fn new(
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<bytes::Bytes>,
    ) -> Answer {
        Answer {
            status,
            content_type,
            json_len: None,
            body: body.into(),
            request_id: String::new(),
            served: None,
            close: false,
            predicted: None,
            value: None,
            failed_over: None,
            retry_after: None,
        }
    }

    /// A JSON answer (serialising the value cannot fail for the types given here).
    pub(super) fn json(status: StatusCode, value: &impl serde::Serialize) -> Answer {
        Answer::new(
            status,
            "application/json",
            serde_json::to_vec(value).unwrap_or_default(),
        )
    }

    /// The answer to an error: its status and body, and `connection: close` when the
    /// request's body was left unread.
    pub(super) fn error(error: &GatewayError) -> Answer {
        Answer {
            close: error.leaves_body_unread(),
            retry_after: error.retry_after(),
            ..Answer::new(error.status(), "application/json", error.body())
        }
    }

    /// Names the slot (and route table) that served the answer.
    pub(super) fn routed(mut self, slot: &Arc<Slot>, generation: u64) -> Answer {
        self.served = Some(Served {
            slot: slot.clone(),
            generation,
        });
        self
    }

    /// The headers every answer carries beyond its content type and length, in order.
    pub(super) fn for_each_header(&self, mut header: impl FnMut(&HeaderName, &[u8])) {
        let mut number = itoa::Buffer::new();
        if let Some(n) = self.json_len {
            header(&names::JSON_LENGTH, number.format(n).as_bytes());
        }
        if let Some(served) = &self.served {
            header(&names::VERSION, served.slot.version_header.as_bytes());
            header(&names::SLOT, served.slot.color.as_str().as_bytes());
        }
        // Only model requests have one; it is always a valid header value (`request_id`).
        if !self.request_id.is_empty() {
            header(&names::REQUEST_ID, self.request_id.as_bytes());
        }
        if let Some(seconds) = self.retry_after {
            header(&header::RETRY_AFTER, number.format(seconds).as_bytes());
        }
        if let Some(served) = &self.served {
            header(
                &names::GENERATION,
                number.format(served.generation).as_bytes(),
            );
        }
        if let Some(failed) = &self.failed_over {
            header(&names::FAILOVER, failed.version_header.as_bytes());
        }
    }

    /// The answer as the router's response.
    pub(super) fn into_response(self) -> Response<Body> {
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        self.for_each_header(|name, value| {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.insert(name.clone(), value);
            }
        });
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let mut response = Response::new(Body::from(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = headers;
        response
    }
}

/// The label a request's answer predicts: the named prediction output (or the first integer
/// or string output), one value per row; one row gives the value itself, several give a JSON array.
pub(super) fn predicted(outputs: &[Tensor], prediction_output: Option<&str>) -> Option<Predicted> {
    let is_label = |t: &&Tensor| match prediction_output {
        Some(name) => t.name == name,
        // A classifier's labels: INT64 or INT32, or one string (BYTES) per row for one
        // trained on text labels; not any integer tensor (an image's UINT8 mask is no label).
        None => match t.data {
            protocol::TensorData::Int64(_) | protocol::TensorData::Int32(_) => true,
            protocol::TensorData::Bytes(_) => t.shape.len() == 1,
            _ => false,
        },
    };
    let tensor = outputs.iter().find(is_label)?;
    let values = protocol::predictions(tensor);
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match values.as_slice() {
        [] => None,
        [one] => Some(Predicted(text(one))),
        many => Some(Predicted(
            serde_json::Value::Array(many.to_vec()).to_string(),
        )),
    }
}

/// The number an answer's first row gives, as the slot's value histogram counts it: with a
/// label output (the named one, or the first integer output), the highest score of the first
/// two-dimensional float output (the classifier's confidence); without one, the first value of
/// the named output, or of the first float output (a regressor's answer).
pub(super) fn predicted_value(outputs: &[Tensor], prediction_output: Option<&str>) -> Option<f64> {
    let is_int = |t: &Tensor| {
        matches!(
            t.data,
            protocol::TensorData::Int64(_) | protocol::TensorData::Int32(_)
        )
    };
    let label = match prediction_output {
        Some(name) => outputs.iter().find(|t| t.name == name && is_int(t)),
        None => outputs.iter().find(|t| is_int(t)),
    };
    if label.is_some() {
        let scores = outputs.iter().find(|t| !is_int(t) && t.shape.len() == 2)?;
        let rows = scores.shape[0].max(1);
        let width = scores.data.len() / rows;
        return (0..width)
            .filter_map(|i| scores.data.json_value(i).as_f64())
            .reduce(f64::max);
    }
    prediction_output
        .and_then(|name| outputs.iter().find(|t| t.name == name))
        .or_else(|| outputs.iter().find(|t| !is_int(t)))
        .filter(|t| !t.data.is_empty())
        .and_then(|t| t.data.json_value(0).as_f64())
}

/// A JSON answer as a response, for the endpoints that only the router serves.
pub(super) fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    Answer::json(status, value).into_response()
}

/// An error as a response: the one place the router's endpoints turn an error into one.
pub(super) fn error_response(error: &GatewayError) -> Response<Body> {
    Answer::error(error).into_response()
}

/// Writes an answer: its head, and its body in the same write when it is small.
pub(super) async fn write_answer(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    answer: &Answer,
    close: bool,
) -> std::io::Result<()> {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(answer.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(answer.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: ");
    out.extend_from_slice(answer.content_type.as_bytes());
    out.extend_from_slice(b"\r\n");
    answer.for_each_header(|name, value| {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    });
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(itoa::Buffer::new().format(answer.body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"\r\nconnection: close");
    }
    out.extend_from_slice(b"\r\ndate: ");
    http_date(out);
    out.extend_from_slice(b"\r\n\r\n");
    if answer.body.len() <= JOINED_BODY {
        out.extend_from_slice(&answer.body);
        stream.write_all(out).await
    } else {
        stream.write_all(out).await?;
        stream.write_all(&answer.body).await
    }
}

/// Appends the current time as an HTTP date, formatted once a second per thread.
fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}
