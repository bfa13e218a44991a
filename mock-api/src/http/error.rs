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
    /// The database did not answer (down, restarting, or no connection
    /// within the pool's acquire timeout): 503, so clients retry.
    #[error("database temporarily unavailable, please retry")]
    DatabaseUnavailable(String),
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
            ApiError::DatabaseUnavailable(why) => {
                tracing::warn!(error = %why, "database unavailable; answered 503");
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            LedgerError::Db(e) => e.into(),
            LedgerError::BatchFailed(e) => ApiError::from_sqlx(&e),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> ApiError {
        match e {
            UserError::EmailTaken => ApiError::BadRequest(e.to_string()),
            UserError::Db(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::from_sqlx(&e)
    }
}

impl ApiError {
    fn from_sqlx(e: &sqlx::Error) -> ApiError {
        if database_unavailable(e) {
            ApiError::DatabaseUnavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

/// Whether the database failed to answer rather than refused the query:
/// no connection in time, a broken connection, PostgreSQL's connection
/// exceptions (class 08) and shutdown states (57P01..57P03), SQLite busy
/// or locked.
fn database_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("57P") || code == "5" || code == "6"
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_503_and_other_errors_500() {
        let unavailable = [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ];
        for e in unavailable {
            let response = ApiError::from(e).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
        let response = ApiError::from(sqlx::Error::RowNotFound).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let response = ApiError::from(LedgerError::Db(sqlx::Error::PoolTimedOut)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        // Every request of a failed group-commit batch answers as the batch's error.
        let shared = std::sync::Arc::new(sqlx::Error::PoolTimedOut);
        let response = ApiError::from(LedgerError::BatchFailed(shared)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let shared = std::sync::Arc::new(sqlx::Error::RowNotFound);
        let response = ApiError::from(LedgerError::BatchFailed(shared)).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
