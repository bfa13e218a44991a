//! `/api/auth/*` and `/api/user/credits` (contract §1).

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use store::db::{Id, Timestamp};
use store::ledger::{self, LotSource};
use store::users::{self, User};

use super::auth::{login_cookie, presented, AuthUser, Presented, LOGOUT_COOKIE};
use super::body::JsonObject;
use super::error::ApiError;
use super::AppState;

/// Credits a new account starts with, as the real register.
pub const REGISTER_CREDITS: i32 = 10;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/auth/register", post(register))
        .route("/api/auth/me", get(me))
        .route("/api/auth/logout", post(logout))
        .route("/api/user/credits", get(credits))
}

fn email_and_password(body: &JsonObject) -> Result<(String, String), ApiError> {
    let email = body.required_str("email", "email is required")?;
    let password = body.required_str("password", "password is required")?;
    Ok((email.trim().to_string(), password))
}

/// A login's e-mail and password. A body without an e-mail finds no user,
/// so it is refused as the real backend refuses it: 401 `Invalid
/// credentials`, before the password is looked at.
fn login_credentials(body: &JsonObject) -> Result<(String, String), ApiError> {
    let email = body.optional_str("email")?.unwrap_or_default();
    if email.trim().is_empty() {
        return Err(ApiError::Unauthorized("Invalid credentials"));
    }
    let password = body.required_str("password", "password is required")?;
    Ok((email.trim().to_string(), password))
}

fn with_login_cookie(token: &str, now: Timestamp, body: serde_json::Value) -> Response {
    ([(SET_COOKIE, login_cookie(token, now))], Json(body)).into_response()
}

async fn login(State(state): State<AppState>, body: JsonObject) -> Result<Response, ApiError> {
    let (email, password) = login_credentials(&body)?;
    let user = users::find_by_email(&state.db, &email).await?;
    let Some(user) = user else {
        return Err(ApiError::Unauthorized("Invalid credentials"));
    };
    if !state
        .login_cache
        .password_matches(password, user.password_hash.clone())
        .await
    {
        return Err(ApiError::Unauthorized("Invalid credentials"));
    }
    let now = chrono::Utc::now();
    users::record_login(&state.db, user.id, now).await?;
    let token = state.tokens.issue(user.id, &user.email, None, now)?;
    Ok(with_login_cookie(
        &token,
        now,
        json!({"id": user.id, "email": user.email, "credits": user.credits, "token": token}),
    ))
}

async fn register(State(state): State<AppState>, body: JsonObject) -> Result<Response, ApiError> {
    let (email, password) = email_and_password(&body)?;
    if !email.contains('@') {
        return Err(ApiError::BadRequest(
            "email must be an e-mail address".into(),
        ));
    }
    let cost = state.settings.bcrypt_cost;
    let hash = tokio::task::spawn_blocking(move || users::hash_password(&password, cost))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let now = chrono::Utc::now();
    let user = users::create(&state.db, &email, &hash, "user", now).await?;
    let credits = ledger::add_credits(
        &state.db,
        user.id,
        REGISTER_CREDITS,
        LotSource::Adjustment,
        now + chrono::Duration::days(365),
        "Welcome credits",
        now,
    )
    .await?;
    let token = state.tokens.issue(user.id, &user.email, None, now)?;
    Ok(with_login_cookie(
        &token,
        now,
        json!({"id": user.id, "email": user.email, "credits": credits}),
    ))
}

async fn current_user(state: &AppState, id: Id) -> Result<User, ApiError> {
    users::find_by_id(&state.db, id)
        .await?
        .ok_or(ApiError::NotFound("User not found"))
}

/// `/me` words its 401s differently from the auth middleware [real].
async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = match presented(&headers, &state.tokens) {
        Presented::Missing => return Err(ApiError::Unauthorized("Not authenticated")),
        Presented::Invalid => return Err(ApiError::Unauthorized("Invalid token")),
        Presented::Valid(claims) => claims,
    };
    let user = current_user(&state, claims.user_id).await?;
    Ok(Json(
        json!({"id": user.id, "email": user.email, "credits": user.credits}),
    ))
}

async fn logout() -> Response {
    (
        [(SET_COOKIE, LOGOUT_COOKIE)],
        Json(json!({"message": "Logged out successfully"})),
    )
        .into_response()
}

async fn credits(
    State(state): State<AppState>,
    AuthUser(claims): AuthUser,
) -> Result<Json<serde_json::Value>, ApiError> {
    let balance = ledger::balance(&state.db, claims.user_id, chrono::Utc::now()).await?;
    Ok(Json(json!({
        "credits": balance.credits,
        "available": balance.available,
        "reserved": balance.reserved,
    })))
}
