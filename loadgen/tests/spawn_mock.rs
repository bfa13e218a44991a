//! `loadgen run --spawn-mock`, end to end with the binary: the hermetic run
//! from mock start to audit verdict.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn spawn_run(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--spawn-mock",
            "--quiet",
            "--no-color",
            "--stages",
            "2s:5,3s:5,1s:0",
            "--think-time",
            "100ms..200ms",
            "--mock-latency",
            "20ms..80ms",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("loadgen runs")
}

fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
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
    ]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
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
    assert!(
        html.contains("I6") && html.contains("<svg"),
        "the report has the audit and charts"
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    let completed = metric(&summary, "generation_completed", "count");
    assert!(completed > 0.0);
    assert_eq!(metric(&summary, "checks", "fails"), 0.0);
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
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(99), "{stdout}\n{stderr}");
    let summary: Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
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
    let out = spawn_run(&["--users", "5"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("users=5 "), "{stdout}");
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
        let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["run", "--spawn-mock", "--quiet", "--iterations", "1"])
            .args(&args)
            .output()
            .unwrap();
        let (_, stderr) = texts(&out);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("secret") && !stderr.contains("panicked"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}
