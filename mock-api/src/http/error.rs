//! The one error type of the routes: every failure a handler can meet maps
//! to a status and the JSON body the real backend sends for it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use store::ledger::LedgerError;
use store::users::UserError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with the message as `error`.
    #[error("{0}")]
    BadRequest(String),
    /// 401 with the real backend's wording for the route.
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("Insufficient credits")]
    InsufficientCredits,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("queue temporarily unavailable, please retry")]
    QueueUnavailable,
    /// The provider's own failure, passed through on the direct path.
    #[error("{message}")]
    Provider { status: u16, message: String },
    /// Anything unexpected: logged in full, answered without details.
    #[error("internal: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Provider { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
            ApiError::Internal(why) => {
                tracing::error!(error = %why, "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &self {
            ApiError::Internal(_) => "Server error".to_string(),
            other => other.to_string(),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        match e {
            LedgerError::Insufficient { .. } => ApiError::InsufficientCredits,
            LedgerError::InvalidAmount(_) => ApiError::BadRequest(e.to_string()),
            LedgerError::UnknownUser(_) => ApiError::NotFound("User not found"),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> ApiError {
        match e {
            UserError::EmailTaken => ApiError::BadRequest(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}
