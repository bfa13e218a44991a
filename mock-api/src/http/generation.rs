//! `/api/images/seedream4/*` (contract §2): enqueue-first generate, the
//! direct path, history and the single-session route.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::types::Json as SqlJson;
use store::db::{Id, Timestamp};
use store::ledger::{
    self, Accepted, GenerationParams, NewSession, ReserveRequest, DEFAULT_MODEL, DEFAULT_SIZE,
};
use store::with_pool;

use super::auth::AuthUser;
use super::body::JsonObject;
use super::error::ApiError;
use super::extract::{Path, Query};
use super::AppState;
use crate::jobs::{run_generation, GenerationResult};
use crate::provider::{GenerationRequest, Planned};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/images/seedream4/generate", post(generate))
        .route("/api/images/seedream4/history", get(history))
        .route("/api/images/seedream4/sessions/{id}", get(session))
}

/// A generate request, validated: what it asks for and its `clientKey`.
fn parse_generate(
    body: &JsonObject,
    max_outputs: i32,
) -> Result<(GenerationParams, String), ApiError> {
    let prompt = body.required_str("prompt", "Prompt is required")?;
    let outputs_error = || {
        ApiError::BadRequest(format!(
            "outputs must be an integer from 1 to {max_outputs}"
        ))
    };
    let outputs = match body.0.get("outputs") {
        None | Some(Value::Null) => 1,
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|n| (1..=i64::from(max_outputs)).contains(n))
            .ok_or_else(outputs_error)? as i32,
        Some(_) => return Err(outputs_error()),
    };
    let watermark = match body.0.get("watermark") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(ApiError::BadRequest("watermark must be a boolean".into())),
    };
    let client_key = body
        .optional_str("clientKey")?
        .filter(|k| !k.trim().is_empty())
        .unwrap_or_else(|| Id::random().to_string());
    if client_key.len() > 200 {
        return Err(ApiError::BadRequest(
            "clientKey must be at most 200 characters".into(),
        ));
    }
    let params = GenerationParams {
        prompt,
        model: body
            .optional_str("model")?
            .unwrap_or_else(|| DEFAULT_MODEL.into()),
        outputs,
        size: body
            .optional_str("size")?
            .unwrap_or_else(|| DEFAULT_SIZE.into()),
        guidance_scale: body.optional_f64("guidance_scale")?,
        seed: body.optional_i64("seed")?,
        aspect_ratio: body.optional_str("aspect_ratio")?,
        negative_prompt: body.optional_str("negative_prompt")?,
        watermark,
    };
    Ok((params, client_key))
}

async fn generate(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    body: JsonObject,
) -> Result<Response, ApiError> {
    let (params, client_key) = parse_generate(&body, state.settings.max_outputs)?;
    let user = claims.user_id;
    let cost = state.settings.credit_cost_per_output * params.outputs;
    let enqueue_first = state.settings.enqueue_first;
    // The contract's 503, before anything is reserved: no session, no
    // reservation, nothing for the client but a retry. The flag is the
    // queue's last known state, not a round trip per request.
    if enqueue_first && !state.settings.accept_while_queue_down && !state.queue.accepting() {
        metrics::counter!("mock_generate_rejected_total", "reason" => "queue_unavailable")
            .increment(1);
        return Err(ApiError::QueueUnavailable);
    }
    let mut new_session = NewSession::for_generation(user, client_key.clone(), &params);
    new_session.dispatched = !enqueue_first;
    let new_session_id = new_session.id;
    let accepted = state
        .group_commit
        .reserve(ReserveRequest::for_session(
            user,
            cost,
            state.settings.reservation_ttl,
            new_session,
        ))
        .await;
    let accepted = match accepted {
        Ok(accepted) => accepted,
        Err(e) => {
            metrics::counter!("mock_generate_rejected_total", "reason" => reject_reason(&e))
                .increment(1);
            return Err(e.into());
        }
    };
    let (session_id, reservation_id) = match accepted {
        Accepted::New(reservation) => {
            metrics::counter!("mock_credits_reserved_total").increment(cost as u64);
            if enqueue_first {
                if !state.group_commit.dispatches() {
                    state.relay_wake.notify_one();
                }
            } else {
                let request = GenerationRequest {
                    reservation_id: reservation.id,
                    session_id: new_session_id,
                    attempt: 1,
                    prompt: params.prompt,
                    model: params.model,
                    outputs: params.outputs,
                    size: Some(params.size),
                    client_key: client_key.clone(),
                };
                // The real direct path hands a failing provider's status to
                // the client; the decision is known up front, so a failure
                // is awaited and answered, a success runs in the background.
                if let Planned::Fail(_) = state.provider.decide(&request).outcome {
                    if let GenerationResult::Failed { failure, .. } =
                        run_generation(&state.db, &state.provider, request).await
                    {
                        return Err(ApiError::Provider {
                            status: failure.status,
                            message: failure.message,
                        });
                    }
                } else {
                    let db = state.db.clone();
                    let provider = state.provider.clone();
                    tokio::spawn(async move { run_generation(&db, &provider, request).await });
                }
            }
            (new_session_id, reservation.id)
        }
        Accepted::Replay {
            session_id,
            reservation_id,
        } => (session_id, reservation_id),
    };
    if enqueue_first {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "accepted": true,
                "clientKey": client_key,
                "reservationId": reservation_id,
                "sessionId": session_id,
                "session_id": session_id,
                "status": "queued",
            })),
        )
            .into_response());
    }
    let balance = ledger::balance(&state.db, user, chrono::Utc::now()).await?;
    Ok(Json(json!({
        "success": true,
        "sessionId": session_id,
        "clientKey": client_key,
        "creditsUsed": cost,
        "creditsLeft": balance.available,
        "status": "processing",
    }))
    .into_response())
}

fn reject_reason(e: &ledger::LedgerError) -> &'static str {
    match e {
        ledger::LedgerError::Insufficient { .. } => "insufficient_credits",
        ledger::LedgerError::UnknownUser(_) => "unknown_user",
        _ => "error",
    }
}

#[derive(Deserialize)]
struct Page {
    limit: Option<String>,
    offset: Option<String>,
}

fn page_number(value: Option<&str>, field: &str, default: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=max).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{field} must be an integer from 0 to {max}"))
            }),
    }
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    session_id: Id,
    prompt: String,
    model: Option<String>,
    status: String,
    created_at: Timestamp,
    completed_at: Option<Timestamp>,
    outputs: i32,
    aspect_ratio: Option<String>,
    resolution: Option<String>,
    guidance_scale: Option<f64>,
    credit_cost: i32,
    error_details: Option<SqlJson<Value>>,
    client_key: Option<String>,
    seed: Option<i64>,
    url: Option<String>,
    image_client_key: Option<String>,
    image_created_at: Option<Timestamp>,
    image_completed_at: Option<Timestamp>,
}

impl HistoryRow {
    /// Exactly the keys of a real history item (contract §2).
    fn to_item(&self) -> Value {
        json!({
            "session_id": self.session_id,
            "prompt": self.prompt,
            "model": self.model,
            "status": self.status,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "outputs": self.outputs,
            "aspect_ratio": self.aspect_ratio,
            "resolution": self.resolution,
            "guidance_scale": self.guidance_scale,
            "credit_cost": self.credit_cost,
            "error_details": self.error_details.as_ref().map(|j| &j.0),
            "ref_image_url": null,
            "ref_image_urls": [],
            "input_settings": {
                "outputs": self.outputs,
                "size": self.resolution,
                "aspect_ratio": self.aspect_ratio,
                "guidance_scale": self.guidance_scale,
                "seed": self.seed,
            },
            "client_key": self.client_key,
            "url": self.url,
            "b2_url": null,
            "image_client_key": self.image_client_key,
            "image_created_at": self.image_created_at,
            "image_completed_at": self.image_completed_at,
        })
    }
}

/// One item per image (a session without images yet is one item with a
/// null `url`), newest session first, as the real history.
async fn history(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let limit = page_number(page.limit.as_deref(), "limit", 10, 100)?;
    let offset = page_number(page.offset.as_deref(), "offset", 0, i64::from(i32::MAX))?;
    let user = claims.user_id;
    let (total, rows): (i64, Vec<HistoryRow>) = with_pool!(&state.db, pool => {
        let (total,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM generation_sessions s LEFT JOIN images i ON i.session_id = s.id WHERE s.user_id = $1",
        )
        .bind(user)
        .fetch_one(pool)
        .await?;
        let rows = sqlx::query_as(
            "SELECT s.id AS session_id, s.prompt, s.model, s.status, s.created_at, s.completed_at, s.outputs, \
             s.aspect_ratio, s.resolution, s.guidance_scale, s.credit_cost, s.error_details, s.client_key, s.seed, \
             i.url, i.client_key AS image_client_key, i.created_at AS image_created_at, \
             i.completed_at AS image_completed_at \
             FROM generation_sessions s LEFT JOIN images i ON i.session_id = s.id \
             WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id, i.url LIMIT $2 OFFSET $3",
        )
        .bind(user)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
        (total, rows)
    });
    let items: Vec<Value> = rows.iter().map(HistoryRow::to_item).collect();
    let has_more = offset + (items.len() as i64) < total;
    Ok(Json(json!({
        "items": items,
        "pagination": {"total": total, "limit": limit, "offset": offset, "hasMore": has_more},
    })))
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Id,
    status: String,
    prompt: String,
    model: Option<String>,
    outputs: i32,
    credit_cost: i32,
    reservation_id: Option<Id>,
    client_key: Option<String>,
    error_details: Option<SqlJson<Value>>,
    created_at: Timestamp,
    completed_at: Option<Timestamp>,
    duration_ms: Option<i32>,
}

#[derive(sqlx::FromRow)]
struct ImageRow {
    id: Id,
    url: Option<String>,
    width: Option<i32>,
    height: Option<i32>,
    storage_provider: Option<String>,
    created_at: Timestamp,
}

/// Our addition: one session, its status and its images, so a client can
/// follow a generation without paging the history.
async fn session(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: Id = id
        .parse()
        .map_err(|_| ApiError::NotFound("Session not found"))?;
    let user = claims.user_id;
    let found: Option<(SessionRow, Vec<ImageRow>)> = with_pool!(&state.db, pool => {
        let session: Option<SessionRow> = sqlx::query_as(
            "SELECT id, status, prompt, model, outputs, credit_cost, reservation_id, client_key, error_details, \
             created_at, completed_at, duration_ms FROM generation_sessions WHERE id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user)
        .fetch_optional(pool)
        .await?;
        match session {
            None => None,
            Some(session) => {
                let images: Vec<ImageRow> = sqlx::query_as(
                    "SELECT id, url, width, height, storage_provider, created_at FROM images \
                     WHERE session_id = $1 ORDER BY url",
                )
                .bind(id)
                .fetch_all(pool)
                .await?;
                Some((session, images))
            }
        }
    });
    let (s, images) = found.ok_or(ApiError::NotFound("Session not found"))?;
    let images: Vec<Value> = images
        .iter()
        .map(|i| {
            json!({"id": i.id, "url": i.url, "width": i.width, "height": i.height,
                   "storage_provider": i.storage_provider, "created_at": i.created_at})
        })
        .collect();
    Ok(Json(json!({
        "id": s.id,
        "session_id": s.id,
        "status": s.status,
        "prompt": s.prompt,
        "model": s.model,
        "outputs": s.outputs,
        "credit_cost": s.credit_cost,
        "reservation_id": s.reservation_id,
        "client_key": s.client_key,
        "error_details": s.error_details.map(|j| j.0),
        "created_at": s.created_at,
        "completed_at": s.completed_at,
        "duration_ms": s.duration_ms,
        "images": images,
    })))
}
