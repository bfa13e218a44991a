//! axum's `Query` and `Path` extractors with the API's error shape: a
//! rejection (a repeated or malformed query parameter, a path segment that
//! is not valid UTF-8) is a 400 with a JSON `{"error": …}`, never the
//! framework's plain text.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::FromRequestParts;

use super::error::ApiError;

/// `axum::extract::Query`, rejected as a JSON 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path`, rejected as a JSON 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::BadRequest(rejection.body_text())
    }
}
