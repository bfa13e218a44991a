//! `seed` against a database built like the real backend's: the tables of
//! contract §4 made by plain SQL here, without our migrations table. seed
//! must migrate nothing, create no table, write only an account's rows, and
//! refuse (one line naming table.column, exit 1, nothing written) when a
//! column it needs is missing. `--no-migrate` on an empty database is a
//! clear error too.

use std::process::{Command, Output};

use sqlx::PgPool;
use store::db::Db;
use store::users;

/// The real backend's columns (contract §4), as its own migrations make
/// them; `without` leaves one `table.column` out.
fn real_schema(without: Option<&str>) -> Vec<String> {
    let tables: [(&str, &[&str]); 7] = [
        (
            "users",
            &[
                "id uuid PRIMARY KEY",
                "email text NOT NULL",
                "password_hash text",
                "credits int NOT NULL DEFAULT 0",
                "provider text DEFAULT 'local'",
                "last_login_at timestamptz",
                "role text DEFAULT 'user'",
                "created_at timestamptz NOT NULL DEFAULT now()",
                "deleted_at timestamptz",
            ],
        ),
        (
            "credit_lots",
            &[
                "id uuid PRIMARY KEY",
                "user_id uuid NOT NULL REFERENCES users(id)",
                "source text NOT NULL CHECK (source IN ('subscription','one_off','adjustment'))",
                "amount int NOT NULL CHECK (amount >= 0)",
                "remaining int NOT NULL CHECK (remaining >= 0)",
                "expires_at timestamptz NOT NULL",
                "created_at timestamptz NOT NULL DEFAULT now()",
                "closed_at timestamptz",
            ],
        ),
        (
            "credit_reservations",
            &[
                "id uuid PRIMARY KEY",
                "user_id uuid NOT NULL REFERENCES users(id)",
                "amount int NOT NULL CHECK (amount > 0)",
                "status text NOT NULL",
                "session_id uuid",
                "description text",
                "created_at timestamptz NOT NULL DEFAULT now()",
                "expires_at timestamptz NOT NULL",
                "captured_at timestamptz",
                "released_at timestamptz",
            ],
        ),
        (
            "credit_transactions",
            &[
                "id uuid PRIMARY KEY",
                "user_id uuid NOT NULL REFERENCES users(id)",
                "description text",
                "amount int NOT NULL",
                "balance_after int NOT NULL",
                "reservation_id uuid",
                "lot_id uuid",
                "created_at timestamptz NOT NULL DEFAULT now()",
            ],
        ),
        (
            "generation_sessions",
            &[
                "id uuid PRIMARY KEY",
                "user_id uuid NOT NULL REFERENCES users(id)",
                "prompt text NOT NULL",
                "model text",
                "status text NOT NULL",
                "outputs int NOT NULL DEFAULT 1",
                "credit_cost int NOT NULL DEFAULT 0",
                "reservation_id uuid",
                "client_key text",
                "error_details jsonb",
                "created_at timestamptz NOT NULL DEFAULT now()",
                "completed_at timestamptz",
                "duration_ms int",
                "resolution text",
                "aspect_ratio text",
                "guidance_scale double precision",
                "seed bigint",
            ],
        ),
        (
            "images",
            &[
                "id uuid PRIMARY KEY",
                "session_id uuid NOT NULL REFERENCES generation_sessions(id) ON DELETE CASCADE",
                "url text",
                "width int",
                "height int",
                "storage_provider text",
                "generation_tool text",
                "client_key text",
                "created_at timestamptz NOT NULL DEFAULT now()",
                "completed_at timestamptz",
            ],
        ),
        (
            "outbox",
            &[
                "id bigserial PRIMARY KEY",
                "event_type text NOT NULL",
                "reservation_id uuid",
                "payload jsonb NOT NULL",
                "created_at timestamptz NOT NULL DEFAULT now()",
                "dispatched_at timestamptz",
                "dispatch_attempts int NOT NULL DEFAULT 0",
            ],
        ),
    ];
    let mut statements: Vec<String> = tables
        .iter()
        .map(|(table, columns)| {
            let kept: Vec<&str> = columns
                .iter()
                .copied()
                .filter(|column| {
                    let name = column.split(' ').next().unwrap();
                    without != Some(format!("{table}.{name}").as_str())
                })
                .collect();
            format!("CREATE TABLE {table} ({})", kept.join(", "))
        })
        .collect();
    statements.push(
        "CREATE UNIQUE INDEX users_email_lower ON users (lower(email)) WHERE deleted_at IS NULL"
            .to_string(),
    );
    statements
}

/// A fresh PostgreSQL database holding the real schema (minus `without`),
/// or `None` (SKIP) locally when PostgreSQL cannot be had.
async fn real_database(test: &str, without: Option<&str>) -> Option<(String, PgPool)> {
    let Some(url) = store::testing::postgres_url().await else {
        eprintln!("SKIP {test}: no PostgreSQL");
        return None;
    };
    let pool = PgPool::connect(&url).await.unwrap();
    for statement in real_schema(without) {
        sqlx::query(&statement).execute(&pool).await.unwrap();
    }
    Some((url, pool))
}

fn seed(db_url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seed"))
        .arg("--database-url")
        .arg(db_url)
        .args(["--bcrypt-cost", "4"])
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("TEST_PASSWORD")
        .output()
        .expect("run seed")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "seed failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The one `seed: ` line of a run that exited 1.
fn runtime_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err:?}");
    assert!(lines[0].starts_with("seed: "), "{err:?}");
    lines[0].to_string()
}

async fn tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT CAST(table_name AS text) FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn row_counts(pool: &PgPool) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in ["users", "credit_lots", "credit_transactions"] {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        counts.push(sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap());
    }
    counts
}

#[tokio::test]
async fn seeds_the_real_schema_without_migrating() {
    let Some((url, pool)) = real_database("seeds_the_real_schema_without_migrating", None).await
    else {
        return;
    };
    let before = tables(&pool).await;
    let created = ok(&seed(&url, &[]));
    assert!(
        created.contains("existing schema, not migrated"),
        "{created}"
    );
    assert!(
        created.contains("created test@example.com with 1000 credits"),
        "{created}"
    );
    let topped = ok(&seed(&url, &["--credits", "1500"]));
    assert!(
        topped.contains("topped up test@example.com: 1000 → 1500 available credits"),
        "{topped}"
    );
    assert_eq!(tables(&pool).await, before, "no table created");
    assert!(
        !before.iter().any(|t| t == "_sqlx_migrations"),
        "{before:?}"
    );

    // The rows the real seed writes: a $2b$ hash, adjustment lots,
    // users.credits = the lot sum.
    let (hash, credits): (String, i32) =
        sqlx::query_as("SELECT password_hash, credits FROM users WHERE email = 'test@example.com'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    assert!(users::verify_password("testpassword123", &hash));
    let lots: Vec<(String, i32)> =
        sqlx::query_as("SELECT source, remaining FROM credit_lots ORDER BY amount DESC")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        lots,
        vec![
            ("adjustment".to_string(), 1000),
            ("adjustment".to_string(), 500)
        ]
    );
    assert_eq!(credits, 1500);

    let db = Db::connect(&url).await.unwrap();
    let report = store::audit::audit(&db, None).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
    db.close().await;

    // --no-migrate takes the same path.
    let forced = ok(&seed(&url, &["--no-migrate", "--credits", "1500"]));
    assert!(forced.contains("already has 1500 available"), "{forced}");
    assert_eq!(tables(&pool).await, before);
    pool.close().await;
}

#[tokio::test]
async fn a_missing_column_is_named_and_nothing_is_written() {
    let Some((url, pool)) = real_database(
        "a_missing_column_is_named_and_nothing_is_written",
        Some("credit_transactions.balance_after"),
    )
    .await
    else {
        return;
    };
    // An account that is already there must not be touched either.
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, credits) \
         VALUES (gen_random_uuid(), 'old@example.com', NULL, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let tables_before = tables(&pool).await;
    let rows_before = row_counts(&pool).await;
    for args in [
        &[][..],
        &["--email", "old@example.com"][..],
        &["--no-migrate"][..],
    ] {
        let line = runtime_error(&seed(&url, args));
        assert!(line.contains("credit_transactions.balance_after"), "{line}");
    }
    assert_eq!(tables(&pool).await, tables_before, "no table created");
    assert_eq!(row_counts(&pool).await, rows_before, "no row written");
    pool.close().await;
}

#[tokio::test]
async fn no_migrate_on_an_empty_database_is_a_clear_error() {
    let Some(url) = store::testing::postgres_url().await else {
        eprintln!("SKIP no_migrate_on_an_empty_database_is_a_clear_error: no PostgreSQL");
        return;
    };
    let line = runtime_error(&seed(&url, &["--no-migrate"]));
    assert!(line.contains("no table users"), "{line}");
    let pool = PgPool::connect(&url).await.unwrap();
    assert!(tables(&pool).await.is_empty(), "nothing created");
    pool.close().await;
    // Without the flag an empty database is migrated as before.
    let out = ok(&seed(&url, &[]));
    assert!(out.contains("(migrated)"), "{out}");
}

#[tokio::test]
async fn no_migrate_on_sqlite_checks_columns_too() {
    let dir = tempfile::tempdir().unwrap();
    let url = store::testing::sqlite_url(dir.path());
    let line = runtime_error(&seed(&url, &["--no-migrate"]));
    assert!(line.contains("no table users"), "{line}");
    ok(&seed(&url, &[]));
    let again = ok(&seed(&url, &["--no-migrate"]));
    assert!(again.contains("already has 1000 available"), "{again}");
}
