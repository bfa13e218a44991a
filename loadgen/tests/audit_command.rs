//! `loadgen audit` as a user runs it: the built binary against SQLite
//! databases built with the mock's ledger, clean or broken on purpose.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chrono::Utc;
use mock_api::db::{Db, Id};
use mock_api::ledger::{
    self, add_credits, finish_session, reserve_for_session, LotSource, NewImage, NewSession,
    SessionOutcome,
};
use mock_api::with_pool;
use serde_json::json;
use sqlx::types::Json;

const AUDIT_FAILED: i32 = 113;
const INVALID_CONFIG: i32 = 104;

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("audit")
        .args(args)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .expect("loadgen runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Fixture {
    user: Id,
    completed: (Id, Id),
    failed: (Id, Id),
}

async fn accept(db: &Db, user: Id, outputs: i32) -> (Id, Id) {
    let (id, reservation) = (Id::random(), Id::random());
    let client_key = format!("key-{id}");
    let session = NewSession {
        id,
        reservation_id: reservation,
        prompt: "a cat".into(),
        model: "seedream-4".into(),
        outputs,
        client_key: client_key.clone(),
        resolution: None,
        aspect_ratio: None,
        guidance_scale: None,
        seed: None,
        payload: json!({
            "payloadVersion": 1,
            "userId": user.to_string(),
            "clientKey": client_key,
            "reservationId": reservation.to_string(),
            "sessionId": id.to_string(),
        }),
        dispatched: false,
    };
    reserve_for_session(
        db,
        user,
        outputs,
        Duration::from_secs(600),
        &session,
        Utc::now(),
    )
    .await
    .unwrap();
    (id, reservation)
}

/// A user with two lots, a completed generation (spanning both lots) and a
/// failed one, written by the ledger.
async fn clean_database(dir: &Path) -> (String, Fixture) {
    let url = format!("sqlite:{}", dir.join("ledger.db").display());
    let db = Db::open(&url).await.unwrap();
    let now = Utc::now();
    let user = mock_api::users::create(&db, "audit@example.com", "x", "user", now)
        .await
        .unwrap()
        .id;
    let soon = now + chrono::Duration::days(1);
    let later = now + chrono::Duration::days(365);
    add_credits(&db, user, 1, LotSource::Subscription, soon, "sub", now)
        .await
        .unwrap();
    add_credits(&db, user, 50, LotSource::Adjustment, later, "adj", now)
        .await
        .unwrap();
    let completed = accept(&db, user, 2).await;
    let failed = accept(&db, user, 1).await;
    let images = (0..2)
        .map(|n| NewImage {
            url: format!("https://example.test/{n}.png"),
            width: 1024,
            height: 1024,
            storage_provider: "mock".into(),
            generation_tool: "seedream4".into(),
            client_key: None,
        })
        .collect();
    finish_session(
        &db,
        completed.1,
        &SessionOutcome::Completed {
            images,
            duration_ms: 3,
        },
        now,
    )
    .await
    .unwrap();
    finish_session(
        &db,
        failed.1,
        &SessionOutcome::Failed {
            error_details: json!({"error": "no"}),
            duration_ms: 3,
        },
        now,
    )
    .await
    .unwrap();
    db.close().await;
    (
        url,
        Fixture {
            user,
            completed,
            failed,
        },
    )
}

/// The clean database with every invariant broken at least once.
async fn broken_database(dir: &Path) -> (String, Fixture) {
    let (url, f) = clean_database(dir).await;
    let db = Db::connect(&url).await.unwrap();
    // I2: a generation left processing, its reservation left reserved.
    accept(&db, f.user, 1).await;
    let now = Utc::now();
    with_pool!(&db, pool => {
        // I1: the failed session's cost no longer matches its reservation.
        sqlx::query("UPDATE generation_sessions SET credit_cost = credit_cost + 1 WHERE id = $1")
            .bind(f.failed.0).execute(pool).await.unwrap();
        // I3: the completed generation's payload names another session.
        sqlx::query("UPDATE outbox SET payload = $1 WHERE reservation_id = $2")
            .bind(Json(json!({"sessionId": Id::random().to_string()})))
            .bind(f.completed.1).execute(pool).await.unwrap();
        // I4: the completed generation lost its images.
        sqlx::query("DELETE FROM images WHERE session_id = $1")
            .bind(f.completed.0).execute(pool).await.unwrap();
        // I5: an outbox row no generation accounts for.
        sqlx::query("INSERT INTO outbox (event_type, reservation_id, payload, created_at) VALUES ($1, $2, $3, $4)")
            .bind(ledger::GENERATION_EVENT).bind(Id::random()).bind(Json(json!({}))).bind(now)
            .execute(pool).await.unwrap();
        // I6: credits out of thin air.
        sqlx::query("UPDATE users SET credits = credits + 5 WHERE id = $1")
            .bind(f.user).execute(pool).await.unwrap();
        // I7: an overdraft in the ledger's history.
        sqlx::query("INSERT INTO credit_transactions (id, user_id, description, amount, balance_after, created_at) VALUES ($1, $2, 'overdraft', 0, -1, $3)")
            .bind(Id::random()).bind(f.user).bind(now).execute(pool).await.unwrap();
    });
    db.close().await;
    (url, f)
}

#[tokio::test]
async fn a_clean_database_passes_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = clean_database(dir.path()).await;
    let out = loadgen(&["--database-url", &url]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", stderr(&out));
    assert!(text.contains("AUDIT ✓"), "{text}");
    for id in ["I1", "I2", "I3", "I4", "I5", "I6", "I7"] {
        assert!(text.contains(&format!("✓ {id} ")), "{id} not ✓:\n{text}");
    }
    assert!(!text.contains('✗'), "{text}");
    assert!(text.contains("sessions=2"), "{text}");
    // A window in the past changes nothing.
    let out = loadgen(&["--database-url", &url, "--since", "2020-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[tokio::test]
async fn a_broken_database_names_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let (url, f) = broken_database(dir.path()).await;
    let out = loadgen(&["--database-url", &url]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(AUDIT_FAILED),
        "{text}\n{}",
        stderr(&out)
    );
    for id in ["I1", "I2", "I3", "I4", "I5", "I6", "I7"] {
        assert!(text.contains(&format!("✗ {id} ")), "{id} not ✗:\n{text}");
    }
    assert!(text.contains(&f.user.to_string()), "user sample:\n{text}");
    assert!(
        text.contains(&f.failed.0.to_string()),
        "session sample:\n{text}"
    );
    assert!(text.contains("samples:"), "{text}");
}

#[tokio::test]
async fn json_output_parses_and_says_not_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (url, f) = broken_database(dir.path()).await;
    let out = loadgen(&["--database-url", &url, "--format", "json"]);
    assert_eq!(out.status.code(), Some(AUDIT_FAILED), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["clean"], false);
    let violations = json["violations"].as_array().unwrap();
    for id in ["I1", "I2", "I3", "I4", "I5", "I6", "I7"] {
        assert!(
            violations.iter().any(|v| v["invariant"] == id),
            "{id} missing: {json:#}"
        );
    }
    assert!(violations
        .iter()
        .flat_map(|v| v["samples"].as_array().unwrap())
        .any(|s| s == &json!(f.user.to_string())));
    assert_eq!(json["counts"]["sessions"], 3);
    assert!(json["counts"]["captured_credits"].is_i64());

    let (clean_url, _) = clean_database(tempfile::tempdir().unwrap().path()).await;
    let out = loadgen(&["--database-url", &clean_url, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["clean"], true);
    assert_eq!(json["violations"], json!([]));
}

fn assert_one_line_error(out: &Output) {
    let err = stderr(out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(out.status.code().is_some(), "killed by a signal: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.stdout.is_empty(), "{}", stdout(out));
}

#[test]
fn a_bad_url_scheme_is_a_one_line_error() {
    let out = loadgen(&["--database-url", "mysql://root:s3cret@localhost/db"]);
    assert_one_line_error(&out);
    assert_eq!(out.status.code(), Some(INVALID_CONFIG));
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
}

#[test]
fn an_unreachable_postgres_is_a_one_line_error_without_the_password() {
    // Port 1 on loopback: refused at once.
    let out = loadgen(&["--database-url", "postgres://app:s3cret@127.0.0.1:1/db"]);
    assert_one_line_error(&out);
    assert!(!stderr(&out).contains("s3cret"), "{}", stderr(&out));
}

#[test]
fn a_missing_sqlite_file_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.db");
    let url = format!("sqlite:{}", file.display());
    let out = loadgen(&["--database-url", &url]);
    assert_one_line_error(&out);
    assert!(!file.exists());
}

#[tokio::test]
async fn bad_since_and_format_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = clean_database(dir.path()).await;
    let out = loadgen(&["--database-url", &url, "--since", "yesterday"]);
    assert_one_line_error(&out);
    assert_eq!(out.status.code(), Some(INVALID_CONFIG));
    let out = loadgen(&["--database-url", &url, "--format", "yaml"]);
    assert_one_line_error(&out);
    assert_eq!(out.status.code(), Some(INVALID_CONFIG));
}
