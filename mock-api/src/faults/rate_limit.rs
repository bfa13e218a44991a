//! The real backend's rate limiter (contract §7), off unless
//! `RATE_LIMIT_MAX` is set: `RATE_LIMIT_MAX` requests per window (60 s,
//! `RATE_LIMIT_WINDOW_MS`) per client IP on `/api/*`, in fixed windows that
//! start at a client's first request, as express-rate-limit's memory store
//! counts them. Every limited response carries `RateLimit-Policy`,
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a
//! rejection is a 429 with the plain-text message and `Retry-After` too.
//! Injected 429s (`kind = "rate_limit"`) use the same answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use tokio::time::Instant;

/// The real backend's limit per window.
pub const DEFAULT_MAX: u32 = 300;
/// The real backend's window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// The real backend's 429 body.
pub const MESSAGE: &str = "Too many requests, please try again later.";

/// Above this many tracked clients, expired windows are dropped.
const PRUNE_ABOVE: usize = 10_000;

pub struct RateLimiter {
    max: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// The limiter's verdict on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the client's window resets.
    pub reset: Duration,
    pub window: Duration,
}

impl RateLimiter {
    pub fn new(max: u32, window: Duration) -> RateLimiter {
        RateLimiter {
            max,
            window: if window.is_zero() {
                DEFAULT_WINDOW
            } else {
                window
            },
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Counts a request of `ip` now.
    pub fn hit(&self, ip: IpAddr) -> Verdict {
        self.hit_at(ip, Instant::now())
    }

    pub fn hit_at(&self, ip: IpAddr, now: Instant) -> Verdict {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() > PRUNE_ABOVE {
            let window = self.window;
            clients.retain(|_, (start, _)| now.duration_since(*start) < window);
        }
        let entry = clients.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        let reset = self.window.saturating_sub(now.duration_since(entry.0));
        Verdict {
            allowed: entry.1 <= self.max,
            limit: self.max,
            remaining: self.max.saturating_sub(entry.1),
            reset,
            window: self.window,
        }
    }
}

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
    fn counts_per_ip_in_fixed_windows() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let t0 = Instant::now();
        let v = limiter.hit_at(a, t0);
        assert!(v.allowed);
        assert_eq!(v.remaining, 1);
        assert_eq!(v.reset, Duration::from_secs(60));
        assert!(limiter.hit_at(a, t0 + Duration::from_secs(1)).allowed);
        let v = limiter.hit_at(a, t0 + Duration::from_secs(2));
        assert!(!v.allowed);
        assert_eq!((v.remaining, v.reset), (0, Duration::from_secs(58)));
        assert!(limiter.hit_at(b, t0 + Duration::from_secs(2)).allowed);
        assert!(limiter.hit_at(a, t0 + Duration::from_secs(60)).allowed);
    }

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
