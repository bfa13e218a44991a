//! The real backend's rate limiter (contract §7), off unless
//! `RATE_LIMIT_MAX` is set: `RATE_LIMIT_MAX` requests per window (60 s,
//! `RATE_LIMIT_WINDOW_MS`) per client IP on `/api/*`, in fixed windows that
//! start at a client's first request, as express-rate-limit's memory store
//! counts them. Every limited response carries `RateLimit-Policy`,
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a
//! rejection is a 429 with the plain-text message and `Retry-After` too
//! (the HTTP layer's `rate_limit` module builds it). Injected 429s
//! (`kind = "rate_limit"`) use the same answer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The real backend's limit per window.
pub const DEFAULT_MAX: u32 = 300;
/// The real backend's window.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

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
}
