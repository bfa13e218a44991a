//! `/healthz` and `/readyz` (contract §7): plain text, as the real ones.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
}

/// Ready only when the database and the queue's backing service answer.
async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let (db, queue) = tokio::join!(state.db.ping(), state.queue.ping());
    if db && queue {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not-ready")
    }
}
