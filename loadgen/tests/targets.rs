//! Several `--api-base` targets: each VU pinned to one, round-robin, and
//! every sample of its iterations and of its session follow-ups tagged
//! `target`; a follow-up polls the target its session was created on.

mod common;

use common::child::{expect_exit, loadgen_run, output, stderr};
use common::export::points;
use common::{start, Behaviour};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_three_mocks_shows_each_targets_share() {
    let servers = [
        start(Behaviour::Accept).await,
        start(Behaviour::Accept).await,
        start(Behaviour::Accept).await,
    ];
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("samples.ndjson");
    let out = {
        let (bases, json) = (bases.clone(), json.clone());
        tokio::task::spawn_blocking(move || {
            // Repeated and comma-separated at once.
            let mut command = loadgen_run(&format!("{},{}", bases[0], bases[1]));
            command
                .args(["--api-base", &bases[2], "--vus", "6", "--duration", "1s"])
                .args(["--track-sessions", "--poll-interval", "50ms"])
                .arg("--out")
                .arg(format!("json={}", json.display()));
            output(&mut command)
        })
        .await
        .unwrap()
    };
    expect_exit(&out, 0);
    let mut requests: BTreeMap<String, u64> = BTreeMap::new();
    let mut iterations: BTreeMap<String, u64> = BTreeMap::new();
    let mut e2e: BTreeMap<String, u64> = BTreeMap::new();
    for point in points(&json) {
        let target = point["data"]["tags"]["target"].as_str().map(str::to_string);
        match point["metric"].as_str().unwrap() {
            "http_reqs" => {
                *requests
                    .entry(target.expect("every request sample has its target"))
                    .or_default() += 1
            }
            "iterations" => {
                *iterations
                    .entry(target.expect("every iteration sample has its target"))
                    .or_default() += 1
            }
            "generation_e2e" => {
                *e2e.entry(target.expect("every generation_e2e sample has its target"))
                    .or_default() += 1
            }
            _ => {}
        }
    }
    // Each target has its share, and its requests are the ones it served
    // (a login and a generate per iteration).
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(e2e.len(), 3, "{e2e:?}");
    for server in &servers {
        let generates = server.generates.load(Ordering::Relaxed);
        assert!(generates > 0, "{} got no load", server.base);
        assert_eq!(requests[&server.base], 2 * generates, "{requests:?}");
        assert_eq!(iterations[&server.base], generates, "{iterations:?}");
        // Each session is followed up on its own target (completed at the
        // first poll there), under that target's tag.
        assert_eq!(server.polls.foreign.load(Ordering::Relaxed), 0);
        assert_eq!(server.polls.own.load(Ordering::Relaxed), generates);
        assert_eq!(e2e[&server.base], generates, "{e2e:?}");
    }
}

#[test]
fn an_invalid_target_among_several_is_104() {
    let out = output(loadgen_run("http://127.0.0.1:9,ftp://x").args(["--iterations", "1"]));
    expect_exit(&out, 104);
    assert!(stderr(&out).contains("--api-base"), "{}", stderr(&out));
}
