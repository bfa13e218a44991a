//! k6's REST API (`--address`), JSON:API documents as k6's: `GET` and
//! `PATCH /v1/status` (paused, stopped, vus, vus-max) and `GET
//! /v1/metrics`. Thin: it reads the [`Collector`] and writes the
//! [`Control`]; no authentication, as in k6, so it binds where it is told
//! (loopback in every example).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::control::Control;
use crate::metrics::Collector;
use crate::snapshot::{MetricType, Values};

/// k6's `execution.Status` numbers the API reports.
const STATUS_SETUP: u8 = 6;
const STATUS_RUNNING: u8 = 7;
const STATUS_ENDED: u8 = 9;

#[derive(Clone)]
struct Api {
    control: Arc<Control>,
    /// Set once the test starts (after `--start-at` and an initial pause).
    collector: Arc<OnceLock<Arc<Collector>>>,
}

/// The served API; dropping it stops the server.
pub struct ApiServer {
    pub address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `address` and serves the API until the [`ApiServer`] is dropped.
pub async fn serve(
    address: SocketAddr,
    control: Arc<Control>,
    collector: Arc<OnceLock<Arc<Collector>>>,
) -> std::io::Result<ApiServer> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/v1/status", get(status).patch(patch_status))
        .route("/v1/metrics", get(metrics))
        .with_state(Api { control, collector });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("REST API: {e}");
        }
    });
    Ok(ApiServer { address, task })
}

fn status_document(api: &Api) -> Value {
    let collector = api.collector.get();
    let ended = api.control.is_stopping();
    json!({"data": {"type": "status", "id": "default", "attributes": {
        "status": match collector {
            None => STATUS_SETUP,
            Some(_) if ended => STATUS_ENDED,
            Some(_) => STATUS_RUNNING,
        },
        "paused": api.control.is_paused(),
        "vus": collector.map_or(0, |c| c.active_vus()),
        "vus-max": collector.map_or(0, |c| c.vus_max()),
        "stopped": api.control.stopped_by_api(),
        "running": collector.is_some() && !ended,
        "tainted": false,
    }}})
}

async fn status(State(api): State<Api>) -> Json<Value> {
    Json(status_document(&api))
}

/// k6's error document.
fn api_error(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = json!({"errors": [{"status": status.as_u16().to_string(), "title": title, "detail": detail}]});
    (status, Json(body)).into_response()
}

#[derive(Deserialize)]
struct StatusPatch {
    data: StatusData,
}

#[derive(Deserialize)]
struct StatusData {
    attributes: StatusAttributes,
}

#[derive(Deserialize)]
struct StatusAttributes {
    paused: Option<bool>,
    #[serde(default)]
    stopped: bool,
    vus: Option<u64>,
    #[serde(rename = "vus-max")]
    vus_max: Option<u64>,
}

async fn patch_status(State(api): State<Api>, body: axum::body::Bytes) -> Response {
    let patch: StatusPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "Invalid data", &e.to_string()),
    };
    let attributes = patch.data.attributes;
    if attributes.stopped {
        api.control.stop();
    } else {
        if let Some(paused) = attributes.paused {
            api.control.set_paused(paused);
        }
        if attributes.vus.is_some() || attributes.vus_max.is_some() {
            if let Err(why) = api
                .control
                .set_external_vus(attributes.vus, attributes.vus_max)
            {
                return api_error(StatusCode::BAD_REQUEST, "Config update error", &why);
            }
        }
    }
    Json(status_document(&api)).into_response()
}

/// k6's `sample` of a metric: what its sink reports.
fn sample(values: &Values, per_second: impl Fn(f64) -> f64) -> Value {
    match values {
        Values::Counter { count } => json!({"count": count, "rate": per_second(*count)}),
        Values::Gauge { value, .. } => json!({"value": value}),
        Values::Rate { passes, fails } => {
            let total = passes + fails;
            json!({"rate": if total > 0 { *passes as f64 / total as f64 } else { 0.0 }})
        }
        Values::Trend(trend) => json!({
            "avg": trend.avg(),
            "max": trend.max_or_zero(),
            "med": trend.med(),
            "min": trend.min_or_zero(),
            "p(90)": trend.percentile(90.0),
            "p(95)": trend.percentile(95.0),
        }),
    }
}

async fn metrics(State(api): State<Api>) -> Json<Value> {
    let Some(collector) = api.collector.get() else {
        return Json(json!({"data": []}));
    };
    let snapshot = collector.snapshot(collector.elapsed());
    let data: Vec<Value> = snapshot
        .metrics
        .iter()
        .map(|metric| {
            json!({"type": "metrics", "id": metric.key(), "attributes": {
                "type": match metric.metric_type {
                    MetricType::Counter => "counter",
                    MetricType::Gauge => "gauge",
                    MetricType::Rate => "rate",
                    MetricType::Trend => "trend",
                },
                "contains": metric.contains,
                "tainted": null,
                "sample": sample(&metric.values, |count| snapshot.per_second(count)),
            }})
        })
        .collect();
    Json(json!({ "data": data }))
}
