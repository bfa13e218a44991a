//! `/api/admin/*` (contract §7): an admin login from `ADMIN_EMAIL` /
//! `ADMIN_PASSWORD` (absent when they are unset) and the credit top-up.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use store::db::Id;
use store::ledger::{self, LotSource};

use super::auth::{same_secret, AdminUser};
use super::body::JsonObject;
use super::error::ApiError;
use super::extract::Path;
use super::AppState;

/// The configured admin. It has no row in `users`: it administers, it does
/// not generate.
pub struct AdminAccount {
    pub id: Id,
    pub email: String,
    pub password: String,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/login", post(login))
        .route("/api/admin/users/{id}/credits", post(add_credits))
}

async fn login(State(state): State<AppState>, body: JsonObject) -> Result<Json<Value>, ApiError> {
    let email = body.required_str("email", "email is required")?;
    let password = body.required_str("password", "password is required")?;
    let Some(admin) = state.admin.as_deref() else {
        return Err(ApiError::Unauthorized("Invalid credentials"));
    };
    let email_ok = email.trim().eq_ignore_ascii_case(&admin.email);
    if !(same_secret(&password, &admin.password) && email_ok) {
        return Err(ApiError::Unauthorized("Invalid credentials"));
    }
    let token = state
        .tokens
        .issue(admin.id, &admin.email, Some("admin"), chrono::Utc::now())?;
    Ok(Json(json!({
        "token": token,
        "admin": {"id": admin.id, "email": admin.email, "role": "admin"},
    })))
}

async fn add_credits(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    body: JsonObject,
) -> Result<Json<Value>, ApiError> {
    let user: Id = id
        .parse()
        .map_err(|_| ApiError::NotFound("User not found"))?;
    let amount = body
        .optional_i64("amount")?
        .filter(|a| (1..=i64::from(i32::MAX)).contains(a))
        .ok_or_else(|| ApiError::BadRequest("amount must be a positive integer".into()))?;
    let reason = body
        .optional_str("reason")?
        .unwrap_or_else(|| "Admin adjustment".into());
    let now = chrono::Utc::now();
    let new_credits = ledger::add_credits(
        &state.db,
        user,
        amount as i32,
        LotSource::OneOff,
        now + chrono::Duration::days(365),
        &reason,
        now,
    )
    .await?;
    Ok(Json(json!({"success": true, "newCredits": new_credits})))
}
