//! Accounts: creation, lookup by e-mail, and bcrypt password hashes.

use crate::db::{Db, Id, Timestamp};
use crate::with_pool;

/// The bcrypt cost of new hashes unless a caller chooses another (the real
/// backend's seed uses 12; 10 keeps log-ins cheap under load).
pub const DEFAULT_BCRYPT_COST: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("Email already registered")]
    EmailTaken,
    #[error("bcrypt cost must be between 4 and 31, got {0}")]
    BadCost(u32),
    #[error("password hashing failed: {0}")]
    Hash(#[from] bcrypt::BcryptError),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: Id,
    pub email: String,
    pub password_hash: Option<String>,
    pub credits: i32,
    pub role: String,
}

/// A `$2b$` bcrypt hash of `password`.
pub fn hash_password(password: &str, cost: u32) -> Result<String, UserError> {
    if !(4..=31).contains(&cost) {
        return Err(UserError::BadCost(cost));
    }
    Ok(bcrypt::hash_with_result(password, cost)?.format_for_version(bcrypt::Version::TwoB))
}

/// Verifies any standard `$2a$`, `$2b$` or `$2y$` hash; a malformed hash
/// verifies nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

const USER_COLUMNS: &str = "id, email, password_hash, credits, COALESCE(role, 'user')";

type UserRow = (Id, String, Option<String>, i32, String);

fn from_row((id, email, password_hash, credits, role): UserRow) -> User {
    User {
        id,
        email,
        password_hash,
        credits,
        role,
    }
}

/// The active (not soft-deleted) user with this e-mail, matched
/// case-insensitively.
pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<User>, UserError> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1) AND deleted_at IS NULL"
    );
    let row: Option<UserRow> =
        with_pool!(db, pool => sqlx::query_as(&sql).bind(email).fetch_optional(pool).await)?;
    Ok(row.map(from_row))
}

pub async fn find_by_id(db: &Db, id: Id) -> Result<Option<User>, UserError> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL");
    let row: Option<UserRow> =
        with_pool!(db, pool => sqlx::query_as(&sql).bind(id).fetch_optional(pool).await)?;
    Ok(row.map(from_row))
}

/// Creates a user with no credits (grant them with `ledger::add_credits`).
/// The unique index on `lower(email)` makes a concurrent duplicate fail
/// with [`UserError::EmailTaken`] rather than create two accounts.
pub async fn create(
    db: &Db,
    email: &str,
    password_hash: &str,
    role: &str,
    now: Timestamp,
) -> Result<User, UserError> {
    let id = Id::random();
    let inserted = with_pool!(db, pool => sqlx::query(
        "INSERT INTO users (id, email, password_hash, credits, provider, role, created_at) \
         VALUES ($1, $2, $3, 0, 'local', $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(email)
    .bind(password_hash)
    .bind(role)
    .bind(now)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    if inserted == 0 {
        return Err(UserError::EmailTaken);
    }
    Ok(User {
        id,
        email: email.to_string(),
        password_hash: Some(password_hash.to_string()),
        credits: 0,
        role: role.to_string(),
    })
}

/// Replaces a user's password hash (a password change). Returns whether
/// such an active user exists.
pub async fn set_password_hash(db: &Db, id: Id, password_hash: &str) -> Result<bool, UserError> {
    let changed = with_pool!(db, pool => sqlx::query(
        "UPDATE users SET password_hash = $2 WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(password_hash)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(changed == 1)
}

pub async fn record_login(db: &Db, id: Id, now: Timestamp) -> Result<(), UserError> {
    with_pool!(db, pool => sqlx::query("UPDATE users SET last_login_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await
        .map(drop))?;
    Ok(())
}

pub async fn count(db: &Db) -> Result<i64, UserError> {
    let (n,): (i64,) = with_pool!(db, pool => sqlx::query_as("SELECT COUNT(*) FROM users WHERE deleted_at IS NULL").fetch_one(pool).await)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_2b_and_verify() {
        let hash = hash_password("testpassword123", 4).unwrap();
        assert!(hash.starts_with("$2b$04$"), "{hash}");
        assert!(verify_password("testpassword123", &hash));
        assert!(!verify_password("wrong", &hash));
    }

    #[test]
    fn other_prefixes_verify() {
        let hash = hash_password("pw", 4).unwrap();
        for prefix in ["$2a$", "$2y$"] {
            let other = format!("{prefix}{}", &hash[4..]);
            assert!(verify_password("pw", &other), "{other}");
        }
        assert!(!verify_password("pw", "not-a-hash"));
    }

    #[test]
    fn bad_cost_is_an_error() {
        assert!(matches!(hash_password("pw", 3), Err(UserError::BadCost(3))));
        assert!(matches!(
            hash_password("pw", 32),
            Err(UserError::BadCost(32))
        ));
    }
}
