//! The request headers as the data plane reads them, and the header names shared by the data
//! plane and the model servers it calls. A leaf: the gateway, trace context and the upstream
//! client all read headers, and none of them should need another to do it.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The binary tensor extension's header: the length of the JSON part of the body.
pub const JSON_LENGTH_HEADER: &str = "inference-header-content-length";

/// A request's headers as the data plane reads them: the router's parsed map, or the lines of
/// a head the connection read, looked up where they lie (building a map for every request
/// was a tenth of a proxied request's instructions).
pub trait RequestHeaders {
    /// The first value of `name`.
    fn get(&self, name: &HeaderName) -> Option<&[u8]>;
    /// The first value of the header called `name` (lowercase), a name known only at run time.
    fn get_named(&self, name: &str) -> Option<&[u8]>;
    /// Every value of `name`, in order.
    fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]>;
}

impl RequestHeaders for HeaderMap {
    fn get(&self, name: &HeaderName) -> Option<&[u8]> {
        HeaderMap::get(self, name).map(HeaderValue::as_bytes)
    }

    fn get_named(&self, name: &str) -> Option<&[u8]> {
        HeaderMap::get(self, name).map(HeaderValue::as_bytes)
    }

    fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        HeaderMap::get_all(self, name)
            .iter()
            .map(HeaderValue::as_bytes)
    }
}

/// A header value as text when it is visible ASCII, as `HeaderValue::to_str` requires.
pub fn header_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (32..127).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}
