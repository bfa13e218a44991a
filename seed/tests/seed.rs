//! The `seed` binary end to end against temp SQLite files, the bad-input
//! paths (one `seed: …` line, the documented exit code), hashes made by other
//! bcrypt implementations, and `ensure_user` on PostgreSQL.

use std::path::Path;
use std::process::{Command, Output};

use store::db::Db;
use store::seeding::{ensure_user, SeedAction, SeedUser};
use store::{ledger, users};

fn seed(db_url: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seed"));
    cmd.arg("--database-url").arg(db_url);
    if !args.contains(&"--bcrypt-cost") {
        // Cheap hashes keep the tests fast.
        cmd.args(["--bcrypt-cost", "4"]);
    }
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("TEST_PASSWORD")
        .output()
        .expect("run seed")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "seed failed: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

fn sqlite(dir: &Path) -> String {
    store::testing::sqlite_url(dir)
}

async fn available(url: &str, email: &str) -> (i64, i64) {
    let db = Db::connect(url).await.unwrap();
    let user = users::find_by_email(&db, email).await.unwrap().unwrap();
    let balance = ledger::balance(&db, user.id, chrono::Utc::now())
        .await
        .unwrap();
    db.close().await;
    (balance.credits, balance.available)
}

/// Asserts a failed run printed exactly one `seed: ` line and exited `code`.
fn one_error_line(out: &Output, code: i32) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {err:?}");
    assert!(lines[0].starts_with("seed: "), "{err:?}");
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

#[tokio::test]
async fn rerun_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(dir.path());
    let first = ok(&seed(&url, &[]));
    assert!(
        first.contains("created test@example.com with 1000 credits"),
        "{first}"
    );
    assert!(!first.contains("$2b$"), "no hash in the output: {first}");
    let second = ok(&seed(&url, &[]));
    assert!(second.contains("test@example.com exists"), "{second}");
    assert!(second.contains("already has 1000 available"), "{second}");
    assert!(!second.contains("created"), "{second}");

    let db = Db::connect(&url).await.unwrap();
    assert_eq!(users::count(&db).await.unwrap(), 1);
    let user = users::find_by_email(&db, "test@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user.credits, 1000);
    let hash = user.password_hash.unwrap();
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    assert!(users::verify_password("testpassword123", &hash));
    // Like the real seed: one adjustment lot of 1000 expiring in ~365 days.
    let lots: Vec<(String, i32, i32, chrono::DateTime<chrono::Utc>)> = match &db {
        Db::Sqlite(pool) => sqlx::query_as(
            "SELECT source, amount, remaining, expires_at FROM credit_lots WHERE user_id = $1",
        )
        .bind(user.id)
        .fetch_all(pool)
        .await
        .unwrap(),
        Db::Postgres(_) => unreachable!(),
    };
    assert_eq!(lots.len(), 1, "{lots:?}");
    assert_eq!(
        (lots[0].0.as_str(), lots[0].1, lots[0].2),
        ("adjustment", 1000, 1000)
    );
    let days = (lots[0].3 - chrono::Utc::now()).num_days();
    assert!((364..=365).contains(&days), "{days}");
    let report = store::audit::audit(&db, None).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.violations);
}

#[tokio::test]
async fn credits_top_up_and_never_lower() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(dir.path());
    ok(&seed(&url, &["--email", "a@example.com"]));
    let up = ok(&seed(
        &url,
        &["--email", "a@example.com", "--credits", "1500"],
    ));
    assert!(
        up.contains("topped up a@example.com: 1000 → 1500 available credits"),
        "{up}"
    );
    assert_eq!(available(&url, "a@example.com").await, (1500, 1500));
    let down = ok(&seed(
        &url,
        &["--email", "a@example.com", "--credits", "10"],
    ));
    assert!(down.contains("already has 1500 available"), "{down}");
    assert_eq!(available(&url, "a@example.com").await, (1500, 1500));
}

#[tokio::test]
async fn many_users_and_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(dir.path());
    let file = dir.path().join("users.csv");
    let out = ok(&seed(
        &url,
        &[
            "--users",
            "50",
            "--users-file",
            file.to_str().unwrap(),
            "--password",
            "pw-for-all",
        ],
    ));
    assert!(out.contains("wrote 50 accounts"), "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 50);
    assert_eq!(lines[0], "loadtest+0001@example.com,pw-for-all");
    assert_eq!(lines[49], "loadtest+0050@example.com,pw-for-all");
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(users::count(&db).await.unwrap(), 50);
    let last = users::find_by_email(&db, "loadtest+0050@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.credits, 1000);
    assert!(users::verify_password(
        "pw-for-all",
        &last.password_hash.unwrap()
    ));
    db.close().await;
    // A rerun creates nobody.
    let again = ok(&seed(
        &url,
        &["--users", "50", "--users-file", file.to_str().unwrap()],
    ));
    assert!(!again.contains("created"), "{again}");
}

/// Hashes of `testpassword123` made by other bcrypt implementations, as the
/// real backend's seed would store them.
#[test]
fn foreign_hashes_verify() {
    let hashes = [
        // python3 -c "import bcrypt; print(bcrypt.hashpw(b'testpassword123',
        //   bcrypt.gensalt(12, prefix=b'2b')).decode())"   (pyca bcrypt 5.0.0)
        "$2b$12$B/4RrAq1tPJkhI9OlLyEUeW/atbWicbsCiHZdUmu9eqZx0wcUBaYS",
        // the same with prefix=b'2a'
        "$2a$12$VKWm/bpfQ9Y0SgaepE2HYuNpyZg5BKNL.CFb8C1sGhZ0DPOazqrU6",
        // htpasswd -nbBC 12 test testpassword123   (Apache 2.4 apache2-utils)
        "$2y$12$ujyM1KKF9eFfvBWT23Gfl.tU3L062kfFa5Qza57U6PYA/RhdZyi6q",
        // perl -e 'print crypt("testpassword123", q($2y$12$abcdefghijklmnopqrstuu))'
        //   (glibc/libxcrypt crypt(3))
        "$2y$12$abcdefghijklmnopqrstuukKS3ZFYvHjYaE7h58uqGioFNvyWhXT.",
    ];
    for hash in hashes {
        assert!(users::verify_password("testpassword123", hash), "{hash}");
        assert!(!users::verify_password("testpassword124", hash), "{hash}");
    }
}

#[test]
fn unknown_scheme_is_one_usage_line() {
    let out = seed("mysql://x", &[]);
    let line = one_error_line(&out, 2);
    assert!(line.contains("mysql://x"), "{line}");
}

#[test]
fn bad_cost_is_one_usage_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = seed(&sqlite(dir.path()), &["--bcrypt-cost", "99"]);
    let line = one_error_line(&out, 2);
    assert!(line.contains("bcrypt cost"), "{line}");
    assert!(!dir.path().join("test.db").exists(), "nothing touched");
}

#[test]
fn negative_credits_is_one_usage_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = seed(&sqlite(dir.path()), &["--credits", "-5"]);
    let line = one_error_line(&out, 2);
    assert!(line.contains("credits must be between 0 and"), "{line}");
}

#[test]
fn clap_usage_errors_exit_2() {
    let out = seed("sqlite:unused.db", &["--users", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = seed("sqlite:unused.db", &["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn unreachable_postgres_is_one_runtime_line_without_the_password() {
    let out = seed("postgres://u:secret@127.0.0.1:1/db", &[]);
    let line = one_error_line(&out, 1);
    assert!(!line.contains("secret"), "{line}");
    assert!(line.contains("127.0.0.1:1"), "{line}");
}

#[tokio::test]
async fn ensure_user_on_postgres() {
    let Some(url) = store::testing::postgres_url().await else {
        eprintln!("SKIP ensure_user_on_postgres: no PostgreSQL");
        return;
    };
    let db = Db::open(&url).await.unwrap();
    let now = chrono::Utc::now();
    let user = SeedUser::new("test@example.com", "testpassword123");
    let created = ensure_user(&db, &user, 1000, 4, now).await.unwrap();
    assert_eq!(
        created,
        vec![SeedAction::Created {
            email: user.email.clone(),
            credits: 1000
        }]
    );
    let again = ensure_user(&db, &user, 1200, 4, now).await.unwrap();
    assert_eq!(
        again,
        vec![
            SeedAction::Exists {
                email: user.email.clone()
            },
            SeedAction::ToppedUp {
                email: user.email.clone(),
                before: 1000,
                after: 1200
            }
        ]
    );
    let found = users::find_by_email(&db, "TEST@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.credits, 1200);
    assert!(users::verify_password(
        "testpassword123",
        &found.password_hash.unwrap()
    ));
    // The seeding CLI against the same server.
    let out = ok(&seed(&url, &["--credits", "1200"]));
    assert!(out.contains("already has 1200 available"), "{out}");
    db.close().await;
}
