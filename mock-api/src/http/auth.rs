//! Login tokens and the extractors that check them.
//!
//! A token is the real backend's JWT (HS256, `{userId, email, iat, exp}`,
//! 7 days), read from the `token` cookie or, as our addition, from
//! `Authorization: Bearer`. Admin routes take the bearer form only, as the
//! real admin API does, and need the `role: "admin"` claim.

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use store::db::{Id, Timestamp};

use super::error::ApiError;
use super::AppState;

/// Seven days, as the real backend's tokens and cookie.
pub const TOKEN_LIFETIME_SECONDS: i64 = 7 * 24 * 3600;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    pub user_id: Id,
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

/// Equal secrets (passwords, tokens), compared in time that depends only
/// on the lengths, never on where a guess goes wrong.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Signs and checks tokens with one secret.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Tokens {
    /// With no configured secret, a random one: tokens then die with the
    /// process, which is what a load test wants (never a fixed default).
    pub fn new(secret: Option<&str>) -> Tokens {
        let secret = match secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "JWT_SECRET is unset: using a random secret; tokens end with this process"
                );
                let mut bytes = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut bytes);
                bytes
            }
        };
        Tokens {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
        }
    }

    pub fn issue(
        &self,
        user_id: Id,
        email: &str,
        role: Option<&str>,
        now: Timestamp,
    ) -> Result<String, ApiError> {
        let claims = Claims {
            user_id,
            email: email.to_string(),
            role: role.map(str::to_string),
            iat: now.timestamp(),
            exp: now.timestamp() + TOKEN_LIFETIME_SECONDS,
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("cannot sign a token: {e}")))
    }

    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &Validation::default())
            .ok()
            .map(|data| data.claims)
    }
}

/// The `Set-Cookie` value of a login issued at `now`, as Express's
/// `res.cookie` writes it with `maxAge`: `Max-Age` and `Expires` (an HTTP
/// date, `now` + 7 days).
pub fn login_cookie(token: &str, now: Timestamp) -> String {
    let expires = now + chrono::Duration::seconds(TOKEN_LIFETIME_SECONDS);
    format!(
        "token={token}; Max-Age={TOKEN_LIFETIME_SECONDS}; Path=/; Expires={}; HttpOnly; SameSite=Lax",
        expires.format("%a, %d %b %Y %H:%M:%S GMT")
    )
}

/// The `Set-Cookie` value of a logout, byte for byte the real one.
pub const LOGOUT_COOKIE: &str =
    "token=; Path=/; Expires=Thu, 01 Jan 1970 00:00:00 GMT; SameSite=Lax";

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim()).filter(|t| !t.is_empty())
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("token="))
        .find(|t| !t.is_empty())
}

/// What a request presented: no token, a bad one, or valid claims.
pub enum Presented {
    Missing,
    Invalid,
    Valid(Claims),
}

pub fn presented(headers: &HeaderMap, tokens: &Tokens) -> Presented {
    match cookie_token(headers).or_else(|| bearer(headers)) {
        None => Presented::Missing,
        Some(token) => tokens
            .verify(token)
            .map_or(Presented::Invalid, Presented::Valid),
    }
}

/// A logged-in user (the real `auth` middleware's wording on failure).
pub struct AuthUser(pub Claims);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match presented(&parts.headers, &state.tokens) {
            Presented::Missing => Err(ApiError::Unauthorized("No token, authorization denied")),
            Presented::Invalid => Err(ApiError::Unauthorized("Token is not valid")),
            Presented::Valid(claims) => Ok(AuthUser(claims)),
        }
    }
}

/// An admin holding a bearer token with the admin role.
pub struct AdminUser;

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = bearer(&parts.headers) else {
            return Err(ApiError::Unauthorized("No token, authorization denied"));
        };
        let claims = state
            .tokens
            .verify(token)
            .ok_or(ApiError::Unauthorized("Token is not valid"))?;
        if claims.role.as_deref() != Some("admin") {
            return Err(ApiError::Forbidden("Admin access required"));
        }
        Ok(AdminUser)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_cookie_is_express_s() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T20:06:17.640Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            login_cookie("abc", now),
            "token=abc; Max-Age=604800; Path=/; Expires=Thu, 10 Dec 2026 20:06:17 GMT; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn same_secret_compares() {
        assert!(same_secret("secret", "secret"));
        assert!(!same_secret("secret", "secreT"));
        assert!(!same_secret("secret", "secret1"));
        assert!(!same_secret("", "x"));
        assert!(same_secret("", ""));
    }
}
