//! The target dies in the middle of a `loadgen run`: the requests after it
//! fail with an `error` tag and are counted, the run goes on to its end,
//! the summary and the exports are written, and the exit code follows the
//! thresholds.

mod common;

use std::time::{Duration, Instant};

use common::child::{expect_exit, loadgen_run, spawn_piped, stderr, wait_within, DEADLINE};
use common::export::{points, read_json};
use mock_api::testing::{self, TestServer};
use store::seeding::SeedUser;

const EMAIL: &str = "dies@example.com";
const PASSWORD: &str = "dies-password-1";

/// `mock_credits_reserved_total` from the mock's `/metrics`.
async fn reserved_credits(base: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    socket.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("mock_credits_reserved_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_dies_mid_run_fails_requests_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let config = testing::test_config(&store::testing::sqlite_url(dir.path()));
    let (server, db) =
        TestServer::start_with_user(config, &SeedUser::new(EMAIL, PASSWORD), 100_000).await;
    let export = dir.path().join("summary.json");
    let stream = dir.path().join("samples.json");
    let mut command = loadgen_run(&server.base);
    command
        .args(["--email", EMAIL, "--password", PASSWORD])
        .args(["--vus", "2", "--duration", "4s", "--generate-timeout", "5s"])
        .arg("--summary-export")
        .arg(&export)
        .arg("--out")
        .arg(format!("json={}", stream.display()))
        .args(["--tag", "testid=target-dies"]);
    let child = spawn_piped(&mut command);

    // The signal that the run is under way: the mock has accepted
    // generations (its Prometheus counter of reserved credits).
    let deadline = Instant::now() + Duration::from_secs(20);
    while reserved_credits(&server.base).await < 3.0 {
        assert!(Instant::now() < deadline, "no generation reached the mock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await.expect("the mock stops cleanly");
    db.close().await;

    let out = tokio::task::spawn_blocking(move || wait_within(child, DEADLINE))
        .await
        .unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    // The default thresholds (errors, http_req_failed) fail: exit 99.
    let stdout = expect_exit(&out, 99);
    assert!(stdout.contains("http_req_failed"), "{stdout}");
    assert!(stdout.contains("✗ errors"), "{stdout}");

    let summary = read_json(&export);
    let failed = &summary["metrics"]["http_req_failed"];
    assert!(failed["passes"].as_u64().unwrap() > 0, "{failed}");

    // After the mock stopped, requests failed at the socket with an `error` tag.
    let refused = points(&stream)
        .iter()
        .filter(|point| point["metric"] == "http_reqs")
        .filter(|point| {
            matches!(
                point["data"]["tags"]["error"].as_str(),
                Some("connection refused" | "connection reset")
            )
        })
        .count();
    assert!(
        refused > 0,
        "no http_reqs sample with a connection error tag"
    );
}
