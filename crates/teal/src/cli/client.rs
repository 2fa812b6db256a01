//! A small HTTP/1 client with pooled keep-alive connections, used by the CLI (to reach
//! the admin API) and by the demo (to send traffic like any client would).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a call did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid request to {url}: {reason}")]
    Request { url: String, reason: String },
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("no answer from {url} within {seconds} s")]
    Timeout { url: String, seconds: u64 },
}

/// An answer: status, headers and the whole body.
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error` field of an error answer, or the body as text.
    pub fn error_message(&self) -> String {
        match self.json().get("error").and_then(|e| e.as_str()) {
            Some(message) => message.to_string(),
            None => String::from_utf8_lossy(&self.body).into_owned(),
        }
    }
}

/// A client bound to one base URL.
#[derive(Clone)]
pub struct HttpClient {
    base: String,
    token: Option<String>,
    extra: Vec<(String, String)>,
    timeout: Duration,
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    pub fn new(base: &str) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        HttpClient {
            base: base.trim_end_matches('/').to_string(),
            token: None,
            extra: Vec::new(),
            timeout: Duration::from_secs(30),
            inner: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Sends `Authorization: Bearer <token>` with every call.
    pub fn with_token(mut self, token: Option<String>) -> HttpClient {
        self.token = token;
        self
    }

    /// Sends this header with every call.
    pub fn with_header(mut self, name: &str, value: &str) -> HttpClient {
        self.extra.push((name.to_string(), value.to_string()));
        self
    }

    /// How long a call may take before it fails.
    pub fn with_timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> Result<Answer, ClientError> {
        self.send("GET", path, &[], Bytes::new()).await
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Answer, ClientError> {
        self.send(
            "POST",
            path,
            &[(CONTENT_TYPE.as_str(), "application/json")],
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// Sends one request with extra headers and a body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut builder = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in &self.extra {
            builder = builder.header(name.as_str(), value.as_str());
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| ClientError::Request {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let call = async {
            let response =
                self.inner
                    .request(request)
                    .await
                    .map_err(|e| ClientError::Unreachable {
                        url: url.clone(),
                        reason: describe(&e),
                    })?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ClientError::Timeout {
                url: url.clone(),
                seconds: self.timeout.as_secs(),
            })?
    }
}

/// The innermost cause: "connection refused" says more than "client error (Connect)".
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}
