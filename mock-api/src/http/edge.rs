//! The edge: a middleware in front of every route (but `/__mock/*`) that
//! applies the plan's edge rules, then the real rate limiter.
//!
//! Per request, when the engine is enabled: the request gets the next
//! ordinal of its route (`METHOD pattern`), which with the seed and each
//! rule's name keys the rule's draw (see [`crate::faults`]): the fault
//! domain decides, this layer applies. Then,
//! in this order: added latency; a terminal fault (error with a JSON body,
//! 429 with the rate-limit headers, reset, hang) instead of the route;
//! the rate limiter; the route; a slow body.
//!
//! - **reset**: the response's body fails before its head is written, so
//!   hyper closes the connection without a byte: the client sees a
//!   connection error (closed before the message completed).
//! - **hang**: nothing is answered until the client gives up (its request
//!   is dropped), the rule's `max` (default 10 min) passes or the server
//!   shuts down; then the connection is closed like a reset.
//! - **slow_body**: the route's answer is sent in small chunks at
//!   `bytes_per_second`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::body::BODY_LIMIT;
use super::{rate_limit, ApiError};
use crate::faults::{plan, EdgeFault, Faults};

/// The route whose requests get auto client keys.
pub const GENERATE_ROUTE: &str = "/api/images/seedream4/generate";

/// Paths the edge never touches: the control API.
pub const CONTROL_PREFIX: &str = "/__mock";

pub async fn layer(State(faults): State<Arc<Faults>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !faults.enabled() || path.starts_with(CONTROL_PREFIX) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = path.to_string();
    let pattern = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let route = format!("{method} {}", pattern.as_deref().unwrap_or("unmatched"));
    let ordinal = faults.next_ordinal(&route);
    let mut request = request;
    if method == Method::POST && pattern.as_deref() == Some(GENERATE_ROUTE) {
        if let Some(key) = faults.auto_client_key(ordinal) {
            request = match with_client_key(request, &key).await {
                Ok(r) => r,
                Err(response) => return response,
            };
        }
    }
    let decided = if faults.has_edge_rules() {
        let decided = faults.edge_faults(&route, ordinal, method.as_str(), &path);
        faults.record(plan::EDGE, &decided.fired);
        if !decided.fired.is_empty() {
            tracing::debug!(%route, ordinal, fired = ?decided.fired, "edge faults");
        }
        decided
    } else {
        Default::default()
    };
    if let Some(delay) = decided.delay {
        tokio::time::sleep(delay).await;
    }
    match decided.outcome {
        Some(EdgeFault::Error { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, axum::Json(body)).into_response();
        }
        Some(EdgeFault::RateLimit {
            limit,
            window,
            retry_after,
        }) => return rate_limit::too_many(limit, retry_after, window),
        Some(EdgeFault::Reset) => return reset(),
        Some(EdgeFault::Hang { max }) => {
            tokio::select! {
                _ = tokio::time::sleep(max) => {}
                _ = faults.shutdown().cancelled() => {}
            }
            return reset();
        }
        None => {}
    }
    let mut limited = None;
    if let Some(limiter) = &faults.rate_limiter {
        if path.starts_with("/api/") {
            let ip = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
            let verdict = limiter.hit(ip);
            if !verdict.allowed {
                metrics::counter!("mock_rate_limit_rejected_total").increment(1);
                return rate_limit::too_many(verdict.limit, verdict.reset, verdict.window);
            }
            limited = Some(verdict);
        }
    }
    let mut response = next.run(request).await;
    if let Some(v) = limited {
        rate_limit::add_headers(
            response.headers_mut(),
            v.limit,
            v.remaining,
            v.reset,
            v.window,
        );
    }
    match decided.bytes_per_second {
        Some(bps) => slow(response, bps).await,
        None => response,
    }
}

/// The request with `clientKey` set to `key` when its JSON object body has
/// none; any other body is passed on untouched for the route to judge.
async fn with_client_key(request: Request, key: &str) -> Result<Request, Response> {
    let (mut parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => return Err(ApiError::PayloadTooLarge(BODY_LIMIT).into_response()),
    };
    let rewritten = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut map)) => {
            let has_key =
                matches!(map.get("clientKey"), Some(Value::String(s)) if !s.trim().is_empty());
            if has_key {
                None
            } else {
                map.insert("clientKey".into(), Value::String(key.to_string()));
                serde_json::to_vec(&Value::Object(map)).ok()
            }
        }
        _ => None,
    };
    let bytes = match rewritten {
        Some(new) => {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(new.len()));
            Bytes::from(new)
        }
        None => bytes,
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// A response whose body fails at once: hyper drops the connection before
/// writing the head.
fn reset() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset (injected)",
        ))
    });
    let mut response = Response::new(Body::from_stream(failing));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The response with its body sent at about `bps` bytes per second.
async fn slow(response: Response, bps: u64) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(_) => return reset(),
    };
    parts.headers.remove(CONTENT_LENGTH);
    // Ten chunks a second, at least one byte each.
    let chunk = (bps / 10).max(1) as usize;
    let pause = Duration::from_secs_f64(chunk as f64 / bps.max(1) as f64);
    let stream = futures::stream::unfold((bytes, true), move |(mut rest, first)| async move {
        if rest.is_empty() {
            return None;
        }
        if !first {
            tokio::time::sleep(pause).await;
        }
        let piece = rest.split_to(chunk.min(rest.len()));
        Some((Ok::<Bytes, std::io::Error>(piece), (rest, false)))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}
