//! `/metrics` in Prometheus text format and the layer that counts every
//! request by route and status. A scrape also reads the queue depth
//! (`mock_queue_depth`) and the backlog in the database
//! (`mock_outbox_undispatched`, `mock_generations_processing`).
//!
//! The `metrics` recorder is process-global, so every server in a process
//! (tests start many) shares one registry; series carry no server label.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The process's Prometheus registry, installed on first use.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|builder| builder.install_recorder());
            match installed {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics disabled: cannot install the Prometheus recorder");
                    None
                }
            }
        })
        .as_ref()
}

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(state): State<AppState>) -> Response {
    if let Ok(depth) = state.queue.depth().await {
        metrics::gauge!("mock_queue_depth", "state" => "wait").set(depth.wait as f64);
        metrics::gauge!("mock_queue_depth", "state" => "active").set(depth.active as f64);
        metrics::gauge!("mock_queue_depth", "state" => "delayed").set(depth.delayed as f64);
    }
    if let Ok(backlog) = store::drain::backlog(&state.db).await {
        metrics::gauge!("mock_outbox_undispatched").set(backlog.undispatched as f64);
        metrics::gauge!("mock_generations_processing").set(backlog.processing as f64);
    }
    let body = prometheus().map(|h| h.render()).unwrap_or_default();
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Counts the request and times it, labelled by the route's pattern (not
/// the raw path, so ids do not explode the series).
pub async fn count_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("mock_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("mock_http_request_duration_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}
