//! `loadgen audit` as a user runs it: the built binary against SQLite
//! databases built with the mock's ledger, clean or broken on purpose.

mod common;

use std::path::Path;
use std::process::Output;

use common::child::{expect_exit, output, stderr, stdout};
use serde_json::json;
use store::audit::fixture::{self, Fixture};
use store::audit::INVARIANTS;
use store::db::Db;

const AUDIT_FAILED: i32 = 113;
const INVALID_CONFIG: i32 = 104;

fn loadgen(args: &[&str]) -> Output {
    output(
        common::child::loadgen(&["audit"])
            .args(args)
            .env_remove("DATABASE_URL"),
    )
}

/// A user with two lots and a completed, a failed and an expired
/// generation, written by the mock's ledger.
async fn clean_database(dir: &Path) -> (String, Fixture) {
    let url = format!("sqlite:{}", dir.join("ledger.db").display());
    let db = Db::open(&url).await.unwrap();
    let f = fixture::clean(&db).await.unwrap();
    db.close().await;
    (url, f)
}

/// The clean database with every invariant broken at least once; returns
/// the ids the audit should name.
async fn broken_database(dir: &Path) -> (String, Vec<String>) {
    let (url, f) = clean_database(dir).await;
    let db = Db::connect(&url).await.unwrap();
    let mut samples = Vec::new();
    for (id, _) in INVARIANTS {
        samples.extend(fixture::break_invariant(&db, &f, id).await.unwrap());
    }
    db.close().await;
    (url, samples)
}

#[tokio::test]
async fn a_clean_database_passes_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = clean_database(dir.path()).await;
    let out = loadgen(&["--database-url", &url]);
    let text = expect_exit(&out, 0);
    assert!(text.contains("AUDIT ✓"), "{text}");
    for id in ["I1", "I2", "I3", "I4", "I5", "I6", "I7"] {
        assert!(text.contains(&format!("✓ {id} ")), "{id} not ✓:\n{text}");
    }
    assert!(!text.contains('✗'), "{text}");
    assert!(text.contains("sessions=4"), "{text}");
    // A window in the past changes nothing.
    let out = loadgen(&["--database-url", &url, "--since", "2020-01-01T00:00:00Z"]);
    expect_exit(&out, 0);
}

#[tokio::test]
async fn a_broken_database_names_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let (url, samples) = broken_database(dir.path()).await;
    let out = loadgen(&["--database-url", &url]);
    let text = expect_exit(&out, AUDIT_FAILED);
    for id in ["I1", "I2", "I3", "I4", "I5", "I6", "I7"] {
        assert!(text.contains(&format!("✗ {id} ")), "{id} not ✗:\n{text}");
    }
    assert_eq!(samples.len(), 6);
    for sample in &samples {
        assert!(
            text.contains(sample.as_str()),
            "sample {sample} missing:\n{text}"
        );
    }
    assert!(text.contains("samples:"), "{text}");
}

#[tokio::test]
async fn json_output_parses_and_says_not_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (url, samples) = broken_database(dir.path()).await;
    let out = loadgen(&["--database-url", &url, "--format", "json"]);
    expect_exit(&out, AUDIT_FAILED);
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
        .any(|s| s == &json!(samples[0])));
    assert_eq!(json["counts"]["sessions"], 4);
    assert!(json["counts"]["captured_credits"].is_i64());

    let clean_dir = tempfile::tempdir().unwrap();
    let (clean_url, _) = clean_database(clean_dir.path()).await;
    let out = loadgen(&["--database-url", &clean_url, "--format", "json"]);
    expect_exit(&out, 0);
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

#[tokio::test]
async fn a_postgres_database_is_audited_too() {
    let Some(url) = store::testing::postgres_url().await else {
        eprintln!("SKIP: no PostgreSQL for the audit command");
        return;
    };
    let db = Db::open(&url).await.unwrap();
    let f = fixture::clean(&db).await.unwrap();
    let out = loadgen(&["--database-url", &url]);
    expect_exit(&out, 0);
    let sample = fixture::break_invariant(&db, &f, "I6")
        .await
        .unwrap()
        .unwrap();
    db.close().await;
    let out = loadgen(&["--database-url", &url, "--format", "json"]);
    expect_exit(&out, AUDIT_FAILED);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["clean"], false);
    assert_eq!(json["violations"][0]["invariant"], "I6");
    assert_eq!(json["violations"][0]["samples"][0], json!(sample));
}
