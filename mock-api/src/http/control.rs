//! The runtime control API, `/__mock/*`: off (404, like any unknown route)
//! unless `MOCK_ADMIN_TOKEN` is set; every call needs that token, as
//! `Authorization: Bearer <token>` or `X-Mock-Admin-Token`, compared in
//! constant time.
//!
//! - `GET /__mock/faults`: the plan, each rule's `active` flag, the epoch,
//!   the seed and the injected-fault counters.
//! - `PUT /__mock/faults`: replace the plan (TOML, or JSON when the body
//!   starts with `{`).
//! - `POST /__mock/faults/rules`: add one rule (a JSON object or a TOML table).
//! - `DELETE /__mock/faults`: clear the plan.
//! - `POST /__mock/epoch`: restart the run epoch (windows and ordinals);
//!   body `{"at": "3s", "freeze": true}` (both optional) sets the epoch so
//!   that `at` has elapsed, frozen there until the next reset.
//!
//! An invalid plan or rule is refused with 400 `{"error": "<field>: <why>"}`
//! and the plan in force stays. Every change is logged (never the token).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::same_secret;
use super::{ApiError, AppState};
use crate::faults::plan::{duration_of, Plan, Rule};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/__mock/faults", get(show).put(replace).delete(clear))
        .route("/__mock/faults/rules", post(add_rule))
        .route("/__mock/epoch", post(epoch))
}

/// 404 when the control API is off, 401 without the right token.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if !state.faults.control_enabled() {
        return Err(ApiError::NotFound("Not found"));
    }
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| {
            headers
                .get("x-mock-admin-token")
                .and_then(|v| v.to_str().ok())
        });
    match presented {
        Some(token)
            if state
                .faults
                .admin_token()
                .is_some_and(|admin| same_secret(admin, token.trim())) =>
        {
            Ok(())
        }
        _ => {
            tracing::warn!("control API: refused a request without the admin token");
            Err(ApiError::Unauthorized("Unauthorized"))
        }
    }
}

fn text(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))
}

async fn show(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.faults.snapshot()).into_response())
}

async fn replace(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let plan = Plan::parse(text(&body)?).map_err(|e| {
        tracing::info!(error = %e, "control API: invalid plan refused; the plan in force stays");
        ApiError::BadRequest(e)
    })?;
    let names: Vec<&str> = plan.names().into_iter().collect();
    tracing::info!(rules = plan.rules.len(), names = ?names, "control API: fault plan replaced");
    state.faults.set_plan(plan);
    Ok(Json(state.faults.snapshot()).into_response())
}

async fn add_rule(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let text = text(&body)?;
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?
    } else {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("invalid TOML: {}", e.message().trim())))?;
        serde_json::to_value(table)
            .map_err(|e| ApiError::BadRequest(format!("invalid TOML: {e}")))?
    };
    let default_name = format!("rule-{}", state.faults.plan().rules.len() + 1);
    let rule = Rule::from_json(&value, &default_name).map_err(ApiError::BadRequest)?;
    let name = rule.name.clone();
    let plan = state.faults.add_rule(rule).map_err(ApiError::BadRequest)?;
    tracing::info!(rule = %name, rules = plan.rules.len(), "control API: fault rule added");
    Ok((
        axum::http::StatusCode::CREATED,
        Json(state.faults.snapshot()),
    )
        .into_response())
}

async fn clear(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    state.faults.set_plan(Plan::default());
    tracing::info!("control API: fault plan cleared");
    Ok(Json(state.faults.snapshot()).into_response())
}

async fn epoch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let (at, freeze) = if body.iter().all(u8::is_ascii_whitespace) {
        (std::time::Duration::ZERO, false)
    } else {
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::BadRequest(
                "the body must be an object {at, freeze}".into(),
            ));
        };
        if let Some(k) = map.keys().find(|k| !["at", "freeze"].contains(&k.as_str())) {
            return Err(ApiError::BadRequest(format!(
                "{k}: unknown field (expected at, freeze)"
            )));
        }
        let at = match map.get("at") {
            None | Some(Value::Null) => std::time::Duration::ZERO,
            Some(v) => duration_of(v).map_err(|e| ApiError::BadRequest(format!("at: {e}")))?,
        };
        let freeze = match map.get("freeze") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::BadRequest("freeze: must be true or false".into())),
        };
        (at, freeze)
    };
    state.faults.reset_epoch(at, freeze);
    tracing::info!(
        at_ms = at.as_millis() as u64,
        freeze,
        "control API: run epoch reset"
    );
    Ok(Json(json!({
        "elapsed_ms": state.faults.elapsed().as_millis() as u64,
        "frozen": freeze,
    }))
    .into_response())
}
