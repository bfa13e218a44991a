//! `loadgen run --spawn-mock`, end to end with the binary: the hermetic run
//! from mock start to audit verdict.

mod common;

use std::process::Output;
use std::time::Duration;

use common::child::{expect_exit, loadgen, loadgen_spawn_mock, output, output_within, stderr};
use common::export::read_json;
use serde_json::Value;

fn spawn_run(extra: &[&str]) -> Output {
    output_within(
        loadgen_spawn_mock()
            .args([
                "--stages",
                "2s:5,3s:5,1s:0",
                "--think-time",
                "100ms..200ms",
                "--mock-latency",
                "20ms..80ms",
            ])
            .args(extra),
        Duration::from_secs(120),
    )
}

fn metric(summary: &Value, name: &str, field: &str) -> f64 {
    summary["metrics"][name][field]
        .as_f64()
        .unwrap_or_else(|| panic!("no {name}.{field} in the export"))
}

#[test]
fn hermetic_run_passes_its_checks_and_its_audit() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    let export = dir.path().join("summary.json");
    let out = spawn_run(&[
        "--report",
        report.to_str().unwrap(),
        "--summary-export",
        export.to_str().unwrap(),
        "--summary-trend-stats",
        "avg,p(99),count",
    ]);
    let stdout = expect_exit(&out, 0);
    for check in [
        "login successful",
        "login returned token",
        "status is 202",
        "has session_id",
        "has client_key",
    ] {
        assert!(stdout.contains(&format!("✓ {check}")), "{check}: {stdout}");
    }
    assert!(
        !stdout.contains("✗ login") && !stdout.contains("✗ status"),
        "{stdout}"
    );
    assert!(
        stdout.contains("AUDIT ✓ all 7 ledger invariants hold"),
        "{stdout}"
    );
    let html = std::fs::read_to_string(&report).unwrap();
    // Every chart, each drawn from points, in the order of the page.
    let captions = [
        "Active VUs",
        "Requests per second",
        "Response time: /api/auth/login",
        "Response time: seedream4",
        "Errors by kind",
        "Generation end to end (created_at → completed_at)",
    ];
    let figures: Vec<&str> = html.split("<figure class=\"chart\"").skip(1).collect();
    assert_eq!(figures.len(), captions.len(), "{html}");
    for (figure, caption) in figures.iter().zip(captions) {
        assert!(
            figure.contains(&format!("<figcaption>{caption} ")),
            "{caption}: {figure}"
        );
        let points: usize = figure
            .strip_prefix(" data-points=\"")
            .and_then(|rest| rest.split('"').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{caption}: no data-points"));
        assert!(points > 0, "{caption} has no points");
        assert!(
            figure.contains("<svg") && figure.contains("<polyline class=\"series\""),
            "{caption} is drawn"
        );
    }
    for section in ["Thresholds", "Checks", "Ledger audit", "Configuration"] {
        assert!(html.contains(&format!("<h2>{section}</h2>")), "{section}");
    }
    // The audit table: one passing row per invariant, in order.
    let mut at = 0;
    for id in ["I1", "I2", "I3", "I4", "I5", "I6", "I7"] {
        let row = format!("<tr class=\"ok\"><td>✓</td><td><b>{id}</b>");
        at += html[at..]
            .find(&row)
            .unwrap_or_else(|| panic!("no passing {id} row after the previous one"));
    }
    assert!(!html.contains("<tr class=\"bad\">"), "no failing row");
    let summary = read_json(&export);
    let completed = metric(&summary, "generation_completed", "count");
    assert!(completed > 0.0);
    assert_eq!(metric(&summary, "checks", "fails"), 0.0);
    // The trends carry the --summary-trend-stats, as k6 writes them.
    assert_eq!(metric(&summary, "generation_e2e", "count"), completed);
    let trend = summary["metrics"]["http_req_duration"].as_object().unwrap();
    let mut stats: Vec<&str> = trend
        .keys()
        .map(String::as_str)
        .filter(|key| *key != "thresholds")
        .collect();
    stats.sort_unstable();
    assert_eq!(stats, ["avg", "count", "p(99)"], "{trend:?}");
}

#[test]
fn few_credits_fail_the_thresholds_with_credit_errors_but_keep_the_ledger_clean() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("summary.json");
    let out = spawn_run(&[
        "--credits",
        "5",
        "--summary-export",
        export.to_str().unwrap(),
    ]);
    let stdout = expect_exit(&out, 99);
    let summary = read_json(&export);
    // One generate per iteration: all but the five accepted answered 402.
    let credit_errors = metric(&summary, "credit_errors", "count");
    assert!(credit_errors > 0.0);
    assert_eq!(credit_errors, metric(&summary, "iterations", "count") - 5.0);
    assert_eq!(metric(&summary, "generation_completed", "count"), 5.0);
    assert!(
        stdout.contains("AUDIT ✓ all 7 ledger invariants hold"),
        "{stdout}"
    );
}

#[test]
fn one_account_per_vu_with_users() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("users.db").display());
    let out = output_within(
        loadgen_spawn_mock()
            .args(["--executor", "per-vu-iterations", "--vus", "5"])
            .args(["--iterations", "2", "--think-time", "0"])
            .args(["--users", "5", "--credits", "50"])
            .args(["--mock-latency", "5ms..20ms", "--mock-database-url", &url]),
        Duration::from_secs(120),
    );
    let stdout = expect_exit(&out, 0);
    // From the database: each of the five accounts paid for exactly its
    // VU's two generations (one output each), so each VU had its own.
    let credits: Vec<i32> = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let db = store::db::Db::open(&url).await.unwrap();
            let mut credits = Vec::new();
            for n in 1..=5 {
                let email = format!("loadtest+{n:04}@example.com");
                let user = store::users::find_by_email(&db, &email)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{email} was seeded"));
                credits.push(user.credits);
            }
            db.close().await;
            credits
        });
    assert_eq!(credits, vec![48; 5], "{stdout}");
}

#[test]
fn bad_mock_options_are_one_line_errors() {
    for (args, wanted) in [
        (vec!["--mock-latency", "2s..1s"], "invalid --mock-latency"),
        (vec!["--drain-timeout", "soon"], "invalid --drain-timeout"),
        (vec!["--users", "0"], "invalid --users"),
        (
            vec!["--mock-database-url", "mysql://u:secret@h/db"],
            "unsupported database URL",
        ),
    ] {
        let out =
            output(loadgen(&["run", "--spawn-mock", "--quiet", "--iterations", "1"]).args(&args));
        let stderr = stderr(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("secret") && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}
