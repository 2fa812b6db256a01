//! The files served without the token: the dashboard's HTML, JavaScript and CSS, and the
//! OpenAPI document. All are built into the binary and hold no data.

use axum::body::Body;
use axum::http::{HeaderValue, Response, header};

/// The admin API's OpenAPI 3.1 document. Like `/healthz`, it needs no token: it describes
/// the API, it holds no data.
pub(super) async fn openapi() -> Response<Body> {
    let mut response = Response::new(Body::from(include_str!("openapi.json")));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The dashboard's files, built into the binary. They hold no data and need no token; every
/// call they make goes to the API with the token the user enters.
pub(super) fn asset(name: &str) -> Response<Body> {
    let (body, content_type): (&'static str, &'static str) = match name {
        "app.js" => (
            include_str!("dashboard/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (
            include_str!("dashboard/style.css"),
            "text/css; charset=utf-8",
        ),
        _ => (
            include_str!("dashboard/index.html"),
            "text/html; charset=utf-8",
        ),
    };
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
