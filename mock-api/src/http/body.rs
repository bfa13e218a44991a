//! The JSON request body extractor: a wrong content type, an oversized or
//! malformed body become a 400 (413 for size) with a JSON `error` saying
//! what is wrong, where the real backend answers 500.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Bodies above this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON object body, validated field by field by the handler so each
/// wrong field gets its own message.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::BadRequest(
                "Content-Type must be application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(BODY_LIMIT)
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(JsonObject(map)),
            Ok(_) => Err(ApiError::BadRequest("body must be a JSON object".into())),
            Err(e) => Err(ApiError::BadRequest(format!("malformed JSON: {e}"))),
        }
    }
}

impl JsonObject {
    /// A required non-blank string field.
    pub fn required_str(&self, field: &str, missing: &str) -> Result<String, ApiError> {
        match self.0.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                Err(ApiError::BadRequest(missing.into()))
            }
            Some(_) => Err(ApiError::BadRequest(format!("{field} must be a string"))),
        }
    }

    /// An optional string field (null or absent is `None`).
    pub fn optional_str(&self, field: &str) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::BadRequest(format!("{field} must be a string"))),
        }
    }

    pub fn optional_f64(&self, field: &str) -> Result<Option<f64>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(ApiError::BadRequest(format!("{field} must be a number"))),
        }
    }

    pub fn optional_i64(&self, field: &str) -> Result<Option<i64>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| ApiError::BadRequest(format!("{field} must be an integer"))),
            Some(_) => Err(ApiError::BadRequest(format!("{field} must be an integer"))),
        }
    }
}
