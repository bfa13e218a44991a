//! With execution segments, every VU-indexed choice follows the VU's
//! number in the whole test (k6's `exec.vu.idInTest`), as one process
//! would make it: three instances of one VU each pin to three different
//! `--api-base` targets, connect from three different `--local-addr`
//! source addresses and draw the prompts of one process's VUs (`--seed`).

use std::net::{IpAddr, SocketAddr};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

mod common;

/// The source address and prompt of every generate, in arrival order.
type Generates = Arc<Mutex<Vec<(IpAddr, String)>>>;

/// A backend that records the source address and prompt of every generate.
struct Target {
    base: String,
    generates: Generates,
}

async fn target() -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let generates: Generates = Arc::default();
    let app = Router::new()
        .route(
            "/api/auth/login",
            post(|| async {
                Json(
                    json!({"id": "u1", "email": "test@example.com", "credits": 10, "token": "t0k"}),
                )
            }),
        )
        .route(
            "/api/images/seedream4/generate",
            post(
                |State(generates): State<Generates>,
                 ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 Json(body): Json<serde_json::Value>| async move {
                    let prompt = body["prompt"].as_str().unwrap_or_default().to_string();
                    generates.lock().unwrap().push((peer.ip(), prompt));
                    (
                        StatusCode::ACCEPTED,
                        Json(json!({"accepted": true, "sessionId": "s1", "status": "queued"})),
                    )
                },
            ),
        )
        .with_state(generates.clone());
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    Target { base, generates }
}

/// `loadgen run` of 3 VUs, 4 iterations each, over `targets`, with `extra`.
fn run_over(targets: &[Target], extra: &[&str]) -> std::process::Command {
    let bases: Vec<&str> = targets.iter().map(|t| t.base.as_str()).collect();
    let mut command = common::child::loadgen_run(&bases.join(","));
    command
        .env_remove("JOB_COMPLETION_INDEX")
        .args(["--executor", "per-vu-iterations", "--vus", "3"])
        .args(["--iterations", "4", "--seed", "7", "--no-thresholds"])
        .args(["--local-addr", "127.0.0.1,127.0.0.2,127.0.0.3"])
        .args(extra);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_of_one_vu_pin_to_three_targets_and_source_addresses() {
    let whole = Arc::new([target().await, target().await, target().await]);
    let split = Arc::new([target().await, target().await, target().await]);
    let (w, sp) = (whole.clone(), split.clone());
    tokio::task::spawn_blocking(move || {
        common::child::expect_exit(
            &common::child::output_within(&mut run_over(&w[..], &[]), Duration::from_secs(60)),
            0,
        );
        let children: Vec<Child> = (0..3)
            .map(|i| {
                let index = i.to_string();
                let mut command = run_over(
                    &sp[..],
                    &["--instance-count", "3", "--instance-index", &index],
                );
                common::child::spawn_piped(&mut command)
            })
            .collect();
        for child in children {
            common::child::expect_exit(
                &common::child::wait_within(child, Duration::from_secs(60)),
                0,
            );
        }
    })
    .await
    .unwrap();
    // Global VU n (instance n - 1's only VU) on target n, from 127.0.0.n,
    // drawing the prompts VU n of the one process drew.
    for n in 0..3 {
        let expected: IpAddr = format!("127.0.0.{}", n + 1).parse().unwrap();
        let generates = split[n].generates.lock().unwrap().clone();
        assert_eq!(generates.len(), 4, "target {}: {generates:?}", n + 1);
        assert!(
            generates.iter().all(|(ip, _)| *ip == expected),
            "target {}: {generates:?}",
            n + 1
        );
        assert_eq!(
            generates,
            *whole[n].generates.lock().unwrap(),
            "target {}",
            n + 1
        );
    }
}
