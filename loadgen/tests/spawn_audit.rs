//! `loadgen run --spawn-mock`'s audit verdict: a ledger broken on purpose
//! (store's audit fixture, in the database given with
//! `--mock-database-url`) makes the run exit 113 with the invariant named,
//! the summary and files still written; and the I5 window that each
//! interrupted iteration widens keeps a run whose answers were cut off
//! clean.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::child::{expect_exit, loadgen_spawn_mock, output_within, stderr, stdout};
use common::export::read_json;
use store::audit::fixture;
use store::db::Db;

const DEADLINE: Duration = Duration::from_secs(120);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("ledger.db").display())
}

fn loadgen(url: &str, extra: &[&str]) -> Output {
    output_within(
        loadgen_spawn_mock()
            .args(["--mock-database-url", url, "--mock-latency", "5ms..20ms"])
            .args(extra),
        DEADLINE,
    )
}

#[test]
fn a_broken_ledger_exits_113_naming_the_invariant_and_still_writes_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // I6 per user ignores the audit's window, so the run's audit (rows of
    // this run only) still sees the fixture's user whose balance was bent.
    let broken_user = runtime().block_on(async {
        let db = Db::open(&url).await.unwrap();
        let f = fixture::clean(&db).await.unwrap();
        let sample = fixture::break_invariant(&db, &f, "I6").await.unwrap();
        db.close().await;
        sample.expect("I6 names the user")
    });
    let export = dir.path().join("summary.json");
    let report = dir.path().join("report.html");
    let out = loadgen(
        &url,
        &[
            "--vus",
            "2",
            "--iterations",
            "4",
            "--think-time",
            "0",
            "--summary-export",
            export.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    let stdout = expect_exit(&out, 113);
    assert!(
        stdout.contains("AUDIT ✗ 1 of 7 ledger invariants violated"),
        "{stdout}"
    );
    let i6 = stdout
        .lines()
        .find(|l| l.contains("✗ I6 "))
        .unwrap_or_else(|| panic!("no failing I6 line: {stdout}"));
    assert!(i6.contains("users.credits"), "{i6}");
    assert!(stdout.contains(&broken_user), "the sample names the user");
    for other in ["I1", "I2", "I3", "I4", "I5", "I7"] {
        assert!(stdout.contains(&format!("✓ {other} ")), "{other}: {stdout}");
    }
    // The run itself went through: its summary and files are there.
    assert!(stdout.contains("✓ status is 202"), "{stdout}");
    assert!(stdout.contains("iterations"), "{stdout}");
    let summary = read_json(&export);
    assert_eq!(
        summary["metrics"]["iterations"]["count"].as_f64(),
        Some(4.0)
    );
    let html = std::fs::read_to_string(&report).unwrap();
    let i6_row = html
        .split("<tr class=\"bad\"><td>✗</td><td><b>I6</b>")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("the report's audit table has a failing I6 row");
    assert!(i6_row.contains(&broken_user), "{i6_row}");
    assert_eq!(html.matches("<tr class=\"bad\">").count(), 1, "only I6");
    assert!(html.contains("audit ✗"), "the verdict badge");
}

/// Generate answers whose body trickles at 4 bytes/s: the session is
/// stored at once, the 202 (over 100 bytes) cannot arrive within the 5 s
/// test, which leaves each VU time for its login (bcrypt, slow in a debug
/// build on a busy machine) and its generate.
const SLOW_GENERATE: &str = r#"
[[rules]]
name = "slow-202"
target = "edge"
kind = "slow_body"
route = "POST /api/images/seedream4/generate"
bytes_per_second = 4
"#;

#[test]
fn interrupted_iterations_widen_the_i5_window() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let plan = dir.path().join("slow.toml");
    std::fs::write(&plan, SLOW_GENERATE).unwrap();
    let out = loadgen(
        &url,
        &[
            "--vus",
            "2",
            "--duration",
            "5s",
            "--graceful-stop",
            "0s",
            "--think-time",
            "0",
            "--no-thresholds",
            "--mock-faults",
            plan.to_str().unwrap(),
        ],
    );
    let (stdout, stderr) = (stdout(&out), stderr(&out));
    // Both VUs were cut off waiting for a 202 the server had accepted.
    assert!(
        stdout.contains("0 complete and 2 interrupted iterations"),
        "{stdout}\n{stderr}"
    );
    let sessions = runtime().block_on(async {
        let db = Db::open(&url).await.unwrap();
        let report = store::audit::audit(&db, None).await.unwrap();
        db.close().await;
        report.counts.sessions
    });
    assert_eq!(sessions, 2, "the server stored both generations");
    // 0 answers seen, 2 sessions stored: within 0 + 2 interrupted.
    assert!(
        stdout.contains("AUDIT ✓ all 7 ledger invariants hold"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
}
