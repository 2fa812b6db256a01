//! W3C trace context: a caller's `traceparent` is kept for the span of its request, written
//! in the request's log lines, and forwarded to upstream and process slots, so one request
//! can be followed across services.

use axum::http::HeaderName;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

tokio::task_local! {
    static TRACE_PARENT: Option<String>;
}

/// The request's `traceparent` when it is well formed (`00-<32 hex>-<16 hex>-<2 hex>`, ids
/// not all zeros); an invalid one is dropped, as the specification asks.
pub fn parse(headers: &impl crate::headers::RequestHeaders) -> Option<String> {
    let value = crate::headers::header_text(headers.get(&TRACEPARENT)?)?.trim();
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    let [version, trace_id, parent_id, flags] = parts.as_slice() else {
        return None;
    };
    let valid = hex(version, 2)
        && *version != "ff"
        && hex(trace_id, 32)
        && hex(parent_id, 16)
        && hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && parent_id.bytes().any(|b| b != b'0');
    valid.then(|| value.to_string())
}

/// The trace id part of a `traceparent`, for log lines.
pub fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or("")
}

/// Runs `work` with `traceparent` as the current request's trace context. Work without one
/// runs outside any scope: most requests carry none, and a scope costs a swap on every poll.
pub async fn scope<F: Future>(traceparent: Option<String>, work: F) -> F::Output {
    match traceparent {
        Some(_) => TRACE_PARENT.scope(traceparent, work).await,
        None => work.await,
    }
}

/// The current request's `traceparent`, if it came with one.
pub fn current() -> Option<String> {
    TRACE_PARENT.try_with(Clone::clone).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("traceparent", value.parse().unwrap());
        h
    }

    #[test]
    fn only_well_formed_trace_contexts_are_kept() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(&headers(good)).as_deref(), Some(good));
        assert_eq!(trace_id(good), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(parse(&headers(bad)), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_context_is_visible_inside_its_scope_only() {
        assert_eq!(current(), None);
        let inside = scope(Some("x".into()), async { current() }).await;
        assert_eq!(inside.as_deref(), Some("x"));
        assert_eq!(current(), None);
        assert_eq!(scope(None, async { current() }).await, None);
    }
}
