//! Seeding: creates the load-test account(s) and makes sure they have
//! credits to spend.
//!
//! Used by the `seed` binary, by the mock server on its first start and by
//! `loadgen run --spawn-mock`. It mirrors the real backend's seed (contract
//! §4): a user with a `$2b$` bcrypt hash and one `adjustment` lot expiring
//! in 365 days, so `users.credits` equals the lot sum.
//!
//! On a database whose schema is not ours (the real backend's, opened with
//! [`Db::open_with`](crate::db::Db::open_with) and not migrated),
//! [`check_schema`] first makes sure every column seeding touches exists,
//! so a different schema fails with the table and column named and
//! nothing written.
//!
//! Everything here is idempotent. An existing user keeps its password; its
//! *available* credits (credits − live reservations) are topped up to the
//! wanted amount with a new `adjustment` lot, and never lowered. (Two
//! seeders running at the same moment could both top the same user up;
//! run one at a time.) All
//! credits move through [`ledger::add_credits`], the ledger's only entry
//! for new credits, so the audit's invariants hold for seeded users too.
//!
//! bcrypt is deliberately slow (cost 10 ≈ 50 ms, cost 12 ≈ 200 ms), so a
//! password is hashed only when an account has to be created, once per
//! distinct password, off the async threads: seeding 1000 load-test users
//! costs one hash plus a few statements per user.

use std::collections::HashMap;
use std::fmt;

use futures::stream::{self, StreamExt, TryStreamExt};

use crate::db::{Db, Timestamp};
use crate::ledger::{self, LedgerError, LotSource};
use crate::users::{self, UserError};

/// The default account of contract §4: the `seed` binary's and loadgen's
/// defaults, and the account the mock creates on its first start.
pub const DEFAULT_EMAIL: &str = "test@example.com";
pub const DEFAULT_PASSWORD: &str = "testpassword123";
pub const DEFAULT_CREDITS: i64 = 1000;

/// How long a seeded lot lives, like the real seed's.
pub const LOT_LIFETIME_DAYS: i64 = 365;

/// The `description` of the ledger rows of seeded lots.
pub const LOT_DESCRIPTION: &str = "Seed: load-test credits";

/// bcrypt accepts these costs.
pub const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=31;

/// How many users [`ensure_users`] seeds at once (PostgreSQL serves them in
/// parallel; SQLite's single connection queues them).
const CONCURRENCY: usize = 8;

/// An account to seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedUser {
    pub email: String,
    pub password: String,
}

impl SeedUser {
    pub fn new(email: impl Into<String>, password: impl Into<String>) -> SeedUser {
        SeedUser {
            email: email.into(),
            password: password.into(),
        }
    }
}

/// One thing seeding did (or found already done), for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedAction {
    /// A new account with `credits` in one lot.
    Created { email: String, credits: i64 },
    /// The account was there already; its password is left alone.
    Exists { email: String },
    /// Its available credits were raised from `before` to `after`.
    ToppedUp {
        email: String,
        before: i64,
        after: i64,
    },
    /// It had at least the wanted credits available; nothing changed.
    AlreadyEnough { email: String, available: i64 },
}

impl SeedAction {
    pub fn email(&self) -> &str {
        match self {
            SeedAction::Created { email, .. }
            | SeedAction::Exists { email }
            | SeedAction::ToppedUp { email, .. }
            | SeedAction::AlreadyEnough { email, .. } => email,
        }
    }
}

impl fmt::Display for SeedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedAction::Created { email, credits } => {
                write!(f, "created {email} with {credits} credits")
            }
            SeedAction::Exists { email } => {
                write!(f, "{email} exists (password left unchanged)")
            }
            SeedAction::ToppedUp {
                email,
                before,
                after,
            } => write!(f, "topped up {email}: {before} → {after} available credits"),
            SeedAction::AlreadyEnough { email, available } => write!(
                f,
                "{email} already has {available} available credits (never lowered)"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("bcrypt cost must be between 4 and 31, got {0}")]
    BadCost(u32),
    #[error("credits must be between 0 and {max}, got {0}", max = i32::MAX)]
    BadCredits(i64),
    #[error("not a usable e-mail address: {0:?}")]
    BadEmail(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("cannot top up {email}: {available} available credits is too far from {wanted}")]
    TopUpOverflow {
        email: String,
        available: i64,
        wanted: i64,
    },
    #[error("seeding {email}: {why}")]
    Conflict { email: String, why: String },
    #[error("the database has no table {0}, so no Cooly schema to seed; nothing was written")]
    MissingTable(&'static str),
    #[error("the database lacks column {table}.{column}, which seeding writes or reads; nothing was written")]
    MissingColumn {
        table: &'static str,
        column: &'static str,
    },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
}

impl SeedError {
    /// Whether the caller asked for something impossible (a usage error)
    /// rather than the database failing.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SeedError::BadCost(_) | SeedError::BadCredits(_) | SeedError::BadEmail(_)
        )
    }
}

impl From<UserError> for SeedError {
    fn from(e: UserError) -> SeedError {
        match e {
            UserError::BadCost(cost) => SeedError::BadCost(cost),
            UserError::Db(e) => SeedError::Db(e),
            UserError::Hash(e) => SeedError::Hash(e.to_string()),
            UserError::EmailTaken => SeedError::Hash("unexpected duplicate e-mail".to_string()),
        }
    }
}

/// Every column seeding writes or reads, per table: the rows the real
/// backend's seed writes (a user, a lot, its ledger row, `users.credits`)
/// and the live reservations the available balance subtracts.
pub const COLUMNS_USED: [(&str, &[&str]); 4] = [
    (
        "users",
        &[
            "id",
            "email",
            "password_hash",
            "credits",
            "provider",
            "role",
            "created_at",
            "deleted_at",
        ],
    ),
    (
        "credit_lots",
        &[
            "id",
            "user_id",
            "source",
            "amount",
            "remaining",
            "expires_at",
            "created_at",
        ],
    ),
    (
        "credit_transactions",
        &[
            "id",
            "user_id",
            "description",
            "amount",
            "balance_after",
            "lot_id",
            "created_at",
        ],
    ),
    (
        "credit_reservations",
        &["user_id", "amount", "status", "expires_at"],
    ),
];

/// Checks that the database has every table and column of
/// [`COLUMNS_USED`], so a schema that differs fails before anything is
/// written. The first one missing is the error.
pub async fn check_schema(db: &Db) -> Result<(), SeedError> {
    for (table, needed) in COLUMNS_USED {
        let present = db.columns(table).await?;
        if present.is_empty() {
            return Err(SeedError::MissingTable(table));
        }
        if let Some(column) = needed.iter().find(|c| !present.iter().any(|p| p == *c)) {
            return Err(SeedError::MissingColumn { table, column });
        }
    }
    Ok(())
}

/// `n` load-test accounts `loadtest+0001@example.com`, … (at least four
/// digits, more when `n` needs them), all with `password`.
pub fn loadtest_users(n: usize, password: &str) -> Vec<SeedUser> {
    let width = n.to_string().len().max(4);
    (1..=n)
        .map(|i| SeedUser::new(format!("loadtest+{i:0width$}@example.com"), password))
        .collect()
}

/// Writes `users` as the users file `loadgen run --users-file` reads:
/// `email,password` lines, no header.
pub fn write_users_file(path: &std::path::Path, users: &[SeedUser]) -> std::io::Result<()> {
    let mut text = String::with_capacity(users.len() * 48);
    for user in users {
        text.push_str(&user.email);
        text.push(',');
        text.push_str(&user.password);
        text.push('\n');
    }
    std::fs::write(path, text)
}

/// Checks the arguments every seeding shares, before touching the database.
pub fn validate(credits: i64, bcrypt_cost: u32) -> Result<(), SeedError> {
    if !BCRYPT_COSTS.contains(&bcrypt_cost) {
        return Err(SeedError::BadCost(bcrypt_cost));
    }
    if !(0..=i64::from(i32::MAX)).contains(&credits) {
        return Err(SeedError::BadCredits(credits));
    }
    Ok(())
}

fn validate_email(email: &str) -> Result<(), SeedError> {
    let plausible = email.len() <= 254
        && !email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if plausible {
        Ok(())
    } else {
        Err(SeedError::BadEmail(email.to_string()))
    }
}

/// Creates `user` with `credits`, or tops its available credits up to
/// `credits`; see the module doc. Returns what it did, in order.
pub async fn ensure_user(
    db: &Db,
    user: &SeedUser,
    credits: i64,
    bcrypt_cost: u32,
    now: Timestamp,
) -> Result<Vec<SeedAction>, SeedError> {
    ensure_users(db, std::slice::from_ref(user), credits, bcrypt_cost, now).await
}

/// [`ensure_user`] for many users. Each distinct password is hashed at most
/// once (and only if some account with it must be created); users are
/// seeded a few at a time; a repeated e-mail is seeded once. The actions
/// come in the order of `users`.
pub async fn ensure_users(
    db: &Db,
    users: &[SeedUser],
    credits: i64,
    bcrypt_cost: u32,
    now: Timestamp,
) -> Result<Vec<SeedAction>, SeedError> {
    validate(credits, bcrypt_cost)?;
    let mut seen = std::collections::HashSet::new();
    let mut unique = Vec::with_capacity(users.len());
    for user in users {
        validate_email(&user.email)?;
        // E-mails match case-insensitively; seeding one account twice at
        // once could top it up twice.
        if seen.insert(user.email.to_lowercase()) {
            unique.push(user);
        }
    }
    let hashes = HashCache::new(bcrypt_cost);
    // The futures are made before the stream, not by a closure inside it:
    // a closure there makes the future not provably `Send` for every
    // lifetime, and the server seeds from inside a spawned task.
    let seeding: Vec<_> = unique
        .into_iter()
        .map(|user| ensure_one(db, user, credits, &hashes, now))
        .collect();
    let per_user: Vec<Vec<SeedAction>> = stream::iter(seeding)
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    Ok(per_user.into_iter().flatten().collect())
}

/// Hashes each distinct password once, on a blocking thread.
struct HashCache {
    cost: u32,
    hashes: tokio::sync::Mutex<HashMap<String, String>>,
}

impl HashCache {
    fn new(cost: u32) -> HashCache {
        HashCache {
            cost,
            hashes: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn get(&self, password: &str) -> Result<String, SeedError> {
        // Held across the hashing so concurrent callers wait for the one
        // hash instead of computing their own.
        let mut hashes = self.hashes.lock().await;
        if let Some(hash) = hashes.get(password) {
            return Ok(hash.clone());
        }
        let (owned, cost) = (password.to_string(), self.cost);
        let hash = tokio::task::spawn_blocking(move || users::hash_password(&owned, cost))
            .await
            .map_err(|e| SeedError::Hash(e.to_string()))??;
        hashes.insert(password.to_string(), hash.clone());
        Ok(hash)
    }
}

async fn ensure_one(
    db: &Db,
    user: &SeedUser,
    credits: i64,
    hashes: &HashCache,
    now: Timestamp,
) -> Result<Vec<SeedAction>, SeedError> {
    let email = &user.email;
    let existing =
        match users::find_by_email(db, email).await? {
            Some(found) => found,
            None => {
                let hash = hashes.get(&user.password).await?;
                match users::create(db, email, &hash, "user", now).await {
                    Ok(created) => {
                        if credits > 0 {
                            grant(db, created.id, credits, now).await?;
                        }
                        return Ok(vec![SeedAction::Created {
                            email: email.clone(),
                            credits,
                        }]);
                    }
                    // Someone else created it meanwhile: top it up like any
                    // existing user.
                    Err(UserError::EmailTaken) => users::find_by_email(db, email)
                        .await?
                        .ok_or_else(|| SeedError::Conflict {
                            email: email.clone(),
                            why: "created concurrently, then not found".to_string(),
                        })?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
    let mut actions = vec![SeedAction::Exists {
        email: existing.email.clone(),
    }];
    let before = ledger::balance(db, existing.id, now).await?.available;
    if before >= credits {
        actions.push(SeedAction::AlreadyEnough {
            email: existing.email,
            available: before,
        });
        return Ok(actions);
    }
    let missing = credits - before;
    if i32::try_from(missing).is_err() {
        return Err(SeedError::TopUpOverflow {
            email: existing.email,
            available: before,
            wanted: credits,
        });
    }
    grant(db, existing.id, missing, now).await?;
    let after = ledger::balance(db, existing.id, now).await?.available;
    actions.push(SeedAction::ToppedUp {
        email: existing.email,
        before,
        after,
    });
    Ok(actions)
}

async fn grant(db: &Db, user: crate::db::Id, amount: i64, now: Timestamp) -> Result<(), SeedError> {
    let amount = i32::try_from(amount).map_err(|_| SeedError::BadCredits(amount))?;
    ledger::add_credits(
        db,
        user,
        amount,
        LotSource::Adjustment,
        now + chrono::Duration::days(LOT_LIFETIME_DAYS),
        LOT_DESCRIPTION,
        now,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sqlite;

    #[test]
    fn loadtest_emails_have_four_digits_at_least() {
        let users = loadtest_users(3, "pw");
        assert_eq!(users[0].email, "loadtest+0001@example.com");
        assert_eq!(users[2].email, "loadtest+0003@example.com");
        assert!(users.iter().all(|u| u.password == "pw"));
        let many = loadtest_users(12345, "pw");
        assert_eq!(many[0].email, "loadtest+00001@example.com");
        assert_eq!(many[12344].email, "loadtest+12345@example.com");
        assert!(loadtest_users(0, "pw").is_empty());
    }

    #[test]
    fn validation_explains_itself() {
        assert!(validate(1000, 10).is_ok());
        assert!(validate(0, 4).is_ok());
        assert!(validate(i64::from(i32::MAX), 31).is_ok());
        let err = validate(1000, 99).unwrap_err();
        assert!(err.is_usage());
        assert_eq!(
            err.to_string(),
            "bcrypt cost must be between 4 and 31, got 99"
        );
        let err = validate(-1, 10).unwrap_err();
        assert!(err.is_usage());
        assert_eq!(
            err.to_string(),
            "credits must be between 0 and 2147483647, got -1"
        );
        assert!(validate(i64::from(i32::MAX) + 1, 10).is_err());
        assert!(validate_email("a@b").is_ok());
        assert!(validate_email("nope").is_err());
        assert!(validate_email("a,b@c").is_err());
        assert!(validate_email("@c").is_err());
    }

    #[test]
    fn actions_read_as_one_line() {
        let line = SeedAction::ToppedUp {
            email: "a@b".into(),
            before: 10,
            after: 1500,
        }
        .to_string();
        assert_eq!(line, "topped up a@b: 10 → 1500 available credits");
        for action in [
            SeedAction::Created {
                email: "a@b".into(),
                credits: 1,
            },
            SeedAction::Exists {
                email: "a@b".into(),
            },
            SeedAction::AlreadyEnough {
                email: "a@b".into(),
                available: 3,
            },
        ] {
            let text = action.to_string();
            assert!(!text.contains('\n') && text.contains("a@b"), "{text}");
            assert_eq!(action.email(), "a@b");
        }
    }

    #[tokio::test]
    async fn creates_then_tops_up_and_never_lowers() {
        let (_dir, db) = sqlite().await;
        let now = chrono::Utc::now();
        let user = SeedUser::new("test@example.com", "testpassword123");
        let actions = ensure_user(&db, &user, 1000, 4, now).await.unwrap();
        assert_eq!(
            actions,
            vec![SeedAction::Created {
                email: user.email.clone(),
                credits: 1000
            }]
        );
        let found = users::find_by_email(&db, &user.email)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.credits, 1000);
        let hash = found.password_hash.unwrap();
        assert!(hash.starts_with("$2b$04$"), "{hash}");
        assert!(users::verify_password("testpassword123", &hash));

        let again = ensure_user(&db, &user, 1000, 4, now).await.unwrap();
        assert_eq!(
            again,
            vec![
                SeedAction::Exists {
                    email: user.email.clone()
                },
                SeedAction::AlreadyEnough {
                    email: user.email.clone(),
                    available: 1000
                }
            ]
        );
        // A live reservation lowers the available balance; the top-up
        // restores the available credits, not the total.
        ledger::reserve(
            &db,
            found.id,
            300,
            std::time::Duration::from_secs(600),
            "t",
            now,
        )
        .await
        .unwrap();
        let topped = ensure_user(&db, &user, 1500, 4, now).await.unwrap();
        assert_eq!(
            topped[1],
            SeedAction::ToppedUp {
                email: user.email.clone(),
                before: 700,
                after: 1500
            }
        );
        let balance = ledger::balance(&db, found.id, now).await.unwrap();
        assert_eq!((balance.credits, balance.available), (1800, 1500));
        let lower = ensure_user(&db, &user, 10, 4, now).await.unwrap();
        assert!(matches!(
            lower[1],
            SeedAction::AlreadyEnough {
                available: 1500,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn zero_credits_creates_a_user_without_lots() {
        let (_dir, db) = sqlite().await;
        let now = chrono::Utc::now();
        let user = SeedUser::new("zero@example.com", "pw");
        let actions = ensure_user(&db, &user, 0, 4, now).await.unwrap();
        assert!(matches!(actions[0], SeedAction::Created { credits: 0, .. }));
        let found = users::find_by_email(&db, &user.email)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.credits, 0);
    }

    #[tokio::test]
    async fn bad_input_touches_nothing() {
        let (_dir, db) = sqlite().await;
        let now = chrono::Utc::now();
        let user = SeedUser::new("x@example.com", "pw");
        assert!(matches!(
            ensure_user(&db, &user, 10, 3, now).await,
            Err(SeedError::BadCost(3))
        ));
        assert!(matches!(
            ensure_user(&db, &user, -5, 4, now).await,
            Err(SeedError::BadCredits(-5))
        ));
        let bad = SeedUser::new("not an email", "pw");
        assert!(matches!(
            ensure_user(&db, &bad, 10, 4, now).await,
            Err(SeedError::BadEmail(_))
        ));
        assert_eq!(users::count(&db).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_thousand_users_are_quick() {
        let (_dir, db) = sqlite().await;
        let now = chrono::Utc::now();
        let users = loadtest_users(1000, "pw");
        let started = std::time::Instant::now();
        let actions = ensure_users(&db, &users, 100, 4, now).await.unwrap();
        let took = started.elapsed();
        assert_eq!(actions.len(), 1000);
        assert!(actions
            .iter()
            .all(|a| matches!(a, SeedAction::Created { credits: 100, .. })));
        assert_eq!(users::count(&db).await.unwrap(), 1000);
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
        let hashes: std::collections::HashSet<String> = {
            let mut set = std::collections::HashSet::new();
            for user in &users[..10] {
                let found = users::find_by_email(&db, &user.email)
                    .await
                    .unwrap()
                    .unwrap();
                set.insert(found.password_hash.unwrap());
            }
            set
        };
        assert_eq!(hashes.len(), 1, "one hash shared by all");
        let rerun = ensure_users(&db, &users, 100, 4, now).await.unwrap();
        assert_eq!(rerun.len(), 2000);
        let twice = [
            users[0].clone(),
            SeedUser::new("LOADTEST+0001@example.com", "x"),
        ];
        let once = ensure_users(&db, &twice, 150, 4, now).await.unwrap();
        assert_eq!(once.len(), 2, "{once:?}");
        assert!(matches!(
            once[1],
            SeedAction::ToppedUp {
                before: 100,
                after: 150,
                ..
            }
        ));
    }
}
