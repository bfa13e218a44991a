//! The rate limiter's HTTP answers (contract §7): the four `RateLimit-*`
//! headers on every limited response and the 429 with `Retry-After`, for
//! the real limiter ([`crate::faults::rate_limit`]) and injected 429s alike.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

/// The real backend's 429 body.
pub const MESSAGE: &str = "Too many requests, please try again later.";

/// Whole seconds, rounded up (what express-rate-limit reports).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The four `RateLimit-*` headers.
pub fn add_headers(
    headers: &mut HeaderMap,
    limit: u32,
    remaining: u32,
    reset: Duration,
    window: Duration,
) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set(
        "ratelimit-policy",
        format!("{limit};w={}", ceil_secs(window)),
    );
    set("ratelimit-limit", limit.to_string());
    set("ratelimit-remaining", remaining.to_string());
    set("ratelimit-reset", ceil_secs(reset).to_string());
}

/// The 429 of the real limiter, with its five headers.
pub fn too_many(limit: u32, reset: Duration, window: Duration) -> Response {
    let mut response = Response::new(Body::from(MESSAGE));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    add_headers(headers, limit, 0, reset, window);
    if let Ok(v) = HeaderValue::from_str(&ceil_secs(reset).to_string()) {
        headers.insert(axum::http::header::RETRY_AFTER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_429_has_five_headers() {
        let r = too_many(300, Duration::from_millis(41_200), Duration::from_secs(60));
        assert_eq!(r.status(), 429);
        let h = r.headers();
        assert_eq!(h["ratelimit-policy"], "300;w=60");
        assert_eq!(h["ratelimit-limit"], "300");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-reset"], "42");
        assert_eq!(h["retry-after"], "42");
    }
}
