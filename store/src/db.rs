//! The database: SQLite (the embedded default) or PostgreSQL behind one `Db`
//! handle.
//!
//! Every query is written once with `$n` placeholders, which both drivers
//! accept, and run inside [`with_pool!`], which compiles the body once per
//! backend. The few dialect differences (row locks, JSON access) live in
//! [`Dialect`]. Ids are [`Id`]: a UUID stored as `uuid` on PostgreSQL (the
//! real backend's type) and as hyphenated text on SQLite, so one query text
//! binds and reads ids on both.

use std::str::FromStr;
use std::time::Duration;

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Database, Decode, Encode, Postgres, Sqlite, Transaction, Type};
use uuid::Uuid;

/// Used by `mock-api` and `seed` when neither `--database-url` nor
/// `DATABASE_URL` is given: a file in the working directory, created on
/// first use.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:testbed.db";

pub type Timestamp = chrono::DateTime<chrono::Utc>;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL {0:?}: expected sqlite:FILE or postgres://USER@HOST/DB")]
    UnknownScheme(String),
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot migrate database {url}: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A connection pool to either backend. Cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db`; the body
/// is compiled once per backend, so one SQL text serves both.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Appended to a `SELECT` that must lock the rows it reads until commit.
    /// SQLite needs none: its write transactions (`BEGIN IMMEDIATE`) already
    /// hold the database's single write lock.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Like [`for_update`](Self::for_update) but lets concurrent pollers
    /// take different rows instead of waiting.
    pub fn for_update_skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// A pool that can start a transaction which takes the write lock up front,
/// so two writers never deadlock upgrading a read lock.
pub trait BeginWrite {
    type Backend: Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<Transaction<'static, Self::Backend>, sqlx::Error>> + Send;
}

impl BeginWrite for SqlitePool {
    type Backend = Sqlite;
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Backend = Postgres;
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// A SQLite write transaction ([`BeginWrite`]), for code that runs several
/// ledger steps in one transaction (the group committer's round,
/// [`crate::group_commit`]).
pub type SqliteWrite = Transaction<'static, Sqlite>;

/// Whether [`Db::open_with`] may migrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migrations {
    /// Migrate an empty database or one that carries our migrations table;
    /// leave alone one that holds a `users` table without it (the real
    /// backend's database, built by its own migrations).
    Auto,
    /// Never migrate: the schema must be there already.
    Never,
}

/// Whose schema [`Db::open_with`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaOwner {
    /// Ours: migrated up to date by this open.
    Migrated,
    /// Not migrated by us; used as found.
    Foreign,
}

/// sqlx's bookkeeping table: its presence marks a database we migrated.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

impl Db {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Db, DbError> {
        let db = Db::connect(url).await?;
        db.migrate(url).await?;
        Ok(db)
    }

    /// Connects and migrates as `migrations` says; see [`Migrations`].
    pub async fn open_with(
        url: &str,
        migrations: Migrations,
    ) -> Result<(Db, SchemaOwner), DbError> {
        let db = Db::connect(url).await?;
        let migrate = migrations == Migrations::Auto
            && (db.has_table(MIGRATIONS_TABLE).await? || !db.has_table("users").await?);
        if !migrate {
            return Ok((db, SchemaOwner::Foreign));
        }
        db.migrate(url).await?;
        Ok((db, SchemaOwner::Migrated))
    }

    async fn migrate(&self, url: &str) -> Result<(), DbError> {
        let outcome = match self {
            Db::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        };
        outcome.map_err(|source| DbError::Migrate {
            url: redact_url(url),
            source,
        })
    }

    /// Whether the table exists (on PostgreSQL: in the current schema).
    pub async fn has_table(&self, table: &str) -> Result<bool, sqlx::Error> {
        let sql = match self.dialect() {
            Dialect::Sqlite => {
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)"
            }
            Dialect::Postgres => {
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1)"
            }
        };
        let (exists,): (bool,) =
            with_pool!(self, pool => sqlx::query_as(sql).bind(table).fetch_one(pool).await)?;
        Ok(exists)
    }

    /// The column names of `table` (none when it does not exist).
    pub async fn columns(&self, table: &str) -> Result<Vec<String>, sqlx::Error> {
        let sql = match self.dialect() {
            Dialect::Sqlite => "SELECT name FROM pragma_table_info($1)",
            Dialect::Postgres => {
                "SELECT CAST(column_name AS text) FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
        };
        let rows: Vec<(String,)> =
            with_pool!(self, pool => sqlx::query_as(sql).bind(table).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    /// Connects without touching the schema: for auditing a database this
    /// tool did not create (the real backend's).
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        let connect_error = |source| DbError::Connect {
            url: redact_url(url),
            source,
        };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_error)?
                .create_if_missing(true)
                // WAL with `synchronous = NORMAL`: a commit is in the WAL
                // before it is answered, so it survives the process being
                // killed (SIGKILL); only an OS crash or power loss can lose
                // the last commits (checkpoints are synced).
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // Statement journals (every multi-row statement inside a
                // batch's transaction keeps one) in memory, not temp files.
                .pragma("temp_store", "memory")
                // A 1 MiB page cache holds the hot index pages; the rest is
                // read through a memory map. A larger cache only fills with
                // the pages each generation appends, for no throughput
                // (BENCHMARKS.md, soak: 64 MiB grew RSS by 15 MiB in 9
                // minutes; 2 MiB still grew it through minute 2 at the
                // soak's rate, at the same req/s as 1 MiB).
                .pragma("cache_size", "-1024")
                .pragma("mmap_size", "268435456")
                // A batch's multi-row statements have one text per batch
                // size: keep them all prepared instead of parsing again.
                .statement_cache_capacity(1024);
            // One connection: SQLite has one writer anyway, and queueing in
            // the pool is cheaper than SQLite's sleeping busy handler. It
            // never checkpoints the WAL itself (a checkpoint inside a
            // commit stalls every writer queued behind it): a background
            // task does, on a connection of its own ([`checkpoint_wal`]).
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
                .await
                .map_err(connect_error)?;
            let checkpointer = SqliteConnection::connect_with(&options)
                .await
                .map_err(connect_error)?;
            tokio::spawn(checkpoint_wal(checkpointer, pool.clone()));
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Every statement planned for its own arguments and the tables'
            // size now: a generic plan cached while the tables were small
            // (a fresh database under load; autovacuum's first ANALYZE comes
            // late) kept scanning them whole once they had grown.
            let options = PgConnectOptions::from_str(url)
                .map_err(connect_error)?
                .options([("plan_cache_mode", "force_custom_plan")]);
            // A short acquire timeout: while PostgreSQL is down, requests
            // answer 503 within it instead of hanging (crash recovery).
            let pool = PgPoolOptions::new()
                .max_connections(20)
                .acquire_timeout(Duration::from_secs(3))
                .connect_with(options)
                .await
                .map_err(connect_error)?;
            Ok(Db::Postgres(pool))
        } else {
            Err(DbError::UnknownScheme(redact_url(url)))
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Answers whether the database takes a query now (for `/readyz`).
    pub async fn ping(&self) -> bool {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.is_ok())
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}

/// How often [`checkpoint_wal`] copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Checkpoints the WAL of `pool`'s database every [`CHECKPOINT_EVERY`] on
/// its own connection, until the pool is closed. `PASSIVE`: it never waits
/// for nor blocks the writer, and copies what is committed; the writer
/// starts the WAL over once a checkpoint has copied all of it, so the WAL
/// stays as small as a quarter second of writes.
async fn checkpoint_wal(mut connection: SqliteConnection, pool: SqlitePool) {
    let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !pool.is_closed() {
        ticks.tick().await;
        // A failed checkpoint (the database busy or gone) is tried again at
        // the next tick; meanwhile the WAL only grows.
        let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut connection)
            .await;
    }
    // The last connection to close checkpoints what is left.
    let _ = connection.close().await;
}

/// `$first, $first+1, …` for `count` parameters: the list of an `IN (…)`
/// or a `VALUES` row built for a batch.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The URL with any password replaced by `***`, fit for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// A row id: a UUID, stored natively on PostgreSQL and as hyphenated text
/// on SQLite. New ids are version 7 (time-ordered, 74 random bits), so
/// rows inserted together land on the same index pages instead of one
/// random page each.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Id(pub Uuid);

impl Id {
    /// A new version 7 id: the current Unix time in milliseconds, then 74
    /// random bits.
    pub fn random() -> Id {
        let random = Uuid::new_v4().into_bytes();
        // The v4 bytes that are all random (6 holds its version, 8 its
        // variant).
        let bits = [
            random[0], random[1], random[2], random[3], random[4], random[5], random[7], random[9],
            random[10], random[11],
        ];
        let millis = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0);
        Id(uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid())
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for Id {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Id, uuid::Error> {
        Uuid::parse_str(s).map(Id)
    }
}

impl Type<Sqlite> for Id {
    fn type_info() -> <Sqlite as Database>::TypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &<Sqlite as Database>::TypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Id {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Id {
    fn decode(value: <Sqlite as Database>::ValueRef<'r>) -> Result<Id, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(text.parse()?)
    }
}

impl Type<Postgres> for Id {
    fn type_info() -> <Postgres as Database>::TypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl<'q> Encode<'q, Postgres> for Id {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<'q, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Id {
    fn decode(value: <Postgres as Database>::ValueRef<'r>) -> Result<Id, BoxDynError> {
        Ok(Id(<Uuid as Decode<Postgres>>::decode(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@127.0.0.1:5432/cooly_db"),
            "postgres://app:***@127.0.0.1:5432/cooly_db"
        );
        assert_eq!(redact_url("postgres://app@h/db"), "postgres://app@h/db");
        assert_eq!(redact_url("sqlite:testbed.db"), "sqlite:testbed.db");
    }

    #[test]
    fn new_ids_are_version_7_and_carry_the_time() {
        let before = chrono::Utc::now().timestamp_millis() as u128;
        let ids: Vec<Id> = (0..100).map(|_| Id::random()).collect();
        let after = chrono::Utc::now().timestamp_millis() as u128;
        for id in &ids {
            assert_eq!(id.0.get_version_num(), 7, "{id}");
            let millis = id.0.as_u128() >> 80;
            assert!((before..=after).contains(&millis), "{id}");
        }
        let distinct: std::collections::HashSet<&Id> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    #[tokio::test]
    async fn unknown_scheme_is_a_clear_error() {
        let err = Db::open("mysql://root:pw@localhost/db").await.unwrap_err();
        assert!(matches!(err, DbError::UnknownScheme(_)));
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}
