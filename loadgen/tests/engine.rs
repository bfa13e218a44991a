//! Engine mechanics against a small in-test server: stages, iteration
//! counts, arrival rate, dropped iterations, latency from the scheduled
//! start, and the JSON output.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{args, counter, run_in_process, start, Behaviour};
use loadgen::snapshot::Values;

async fn run(base: &str, extra: &[&str]) -> loadgen::run::RunOutcome {
    run_in_process(&args(base, extra)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vus_follow_the_stages() {
    let server = start(Behaviour::Stall(Duration::from_millis(20))).await;
    let outcome = run(&server.base, &["--stages", "1s:6,2s:6,1s:0"]).await;
    assert_eq!(outcome.exit_code, 0);
    // Seconds fully inside the hold at 6 VUs show 6; the end shows 0.
    let vus: Vec<u64> = outcome.series.iter().map(|p| p.vus).collect();
    assert!(vus.iter().filter(|v| **v == 6).count() >= 1, "{vus:?}");
    assert!(vus.iter().all(|v| *v <= 6), "{vus:?}");
    assert_eq!(vus.last(), Some(&0), "{vus:?}");
    let Some(Values::Gauge { max, .. }) = outcome.snapshot.metric("vus").map(|m| &m.values) else {
        panic!("no vus gauge")
    };
    assert_eq!(*max, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_vu_iterations_run_exactly_vus_times_iterations() {
    let server = start(Behaviour::Accept).await;
    let outcome = run(
        &server.base,
        &[
            "--executor",
            "per-vu-iterations",
            "--vus",
            "3",
            "--iterations",
            "4",
        ],
    )
    .await;
    assert_eq!(outcome.completed_iterations, 12);
    assert_eq!(counter(&outcome, "iterations"), 12.0);
    assert_eq!(server.generates.load(Ordering::Relaxed), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_iterations_share_the_total() {
    let server = start(Behaviour::Accept).await;
    let outcome = run(&server.base, &["--vus", "4", "--iterations", "10"]).await;
    assert_eq!(outcome.completed_iterations, 10);
    assert_eq!(server.generates.load(Ordering::Relaxed), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constant_arrival_rate_hits_its_target() {
    let server = start(Behaviour::Accept).await;
    let outcome = run(
        &server.base,
        &[
            "--executor",
            "constant-arrival-rate",
            "--rate",
            "100",
            "--duration",
            "2s",
            "--pre-allocated-vus",
            "10",
        ],
    )
    .await;
    // 100/s for 2 s: iteration i is due at i × 10 ms, so 0..=199 fall in
    // the test. A start cannot be lost, however busy the machine: a late
    // one still starts (or, with no VU free, is counted as dropped).
    let iterations = counter(&outcome, "iterations");
    let started = iterations + counter(&outcome, "dropped_iterations");
    assert_eq!(started, 200.0);
    assert_eq!(server.generates.load(Ordering::Relaxed) as f64, iterations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_drops_iterations_and_shows_in_latency() {
    let stall = Duration::from_millis(800);
    let server = start(Behaviour::Stall(stall)).await;
    let outcome = run(
        &server.base,
        &[
            "--executor",
            "constant-arrival-rate",
            "--rate",
            "20",
            "--duration",
            "1s",
            "--pre-allocated-vus",
            "2",
            "--max-vus",
            "2",
            "--no-thresholds",
        ],
    )
    .await;
    let dropped = counter(&outcome, "dropped_iterations");
    assert!(dropped >= 10.0, "dropped {dropped}");
    let Some(Values::Trend(t)) = outcome
        .snapshot
        .metric("iteration_duration")
        .map(|m| &m.values)
    else {
        panic!("no iteration_duration")
    };
    // Measured from the scheduled start, every iteration includes the stall.
    assert!(t.min >= stall.as_secs_f64() * 1000.0, "min {}", t.min);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_lines_are_k6_points() {
    let server = start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.json");
    let out = format!("json={}", file.display());
    run(
        &server.base,
        &["--vus", "1", "--iterations", "3", "--out", &out],
    )
    .await;
    let text = std::fs::read_to_string(&file).unwrap();
    let mut points = 0;
    let mut seen_metric_lines = std::collections::HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        match v["type"].as_str() {
            Some("Metric") => {
                assert!(seen_metric_lines.insert(v["metric"].as_str().unwrap().to_string()));
            }
            Some("Point") => {
                points += 1;
                let metric = v["metric"].as_str().unwrap();
                assert!(
                    seen_metric_lines.contains(metric),
                    "Point before its Metric: {metric}"
                );
                assert!(v["data"]["value"].is_number());
                chrono_like(v["data"]["time"].as_str().unwrap());
            }
            other => panic!("unexpected type {other:?}"),
        }
    }
    // 3 iterations × 2 requests × 8 http metrics at least.
    assert!(points >= 48, "{points} points");
    assert!(text.contains("\"http_req_duration\""));
}

fn chrono_like(time: &str) {
    assert!(
        time.len() >= 20 && time.as_bytes()[4] == b'-' && time.contains('T'),
        "not RFC 3339: {time}"
    );
}
