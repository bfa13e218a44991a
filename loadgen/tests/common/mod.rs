//! A tiny stand-in for the backend, on 127.0.0.1:0, whose behaviour each
//! test chooses: the engine's mechanics are tested without the mock.

#![allow(dead_code)]

pub mod child;
pub mod export;
pub mod pki;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    Accept,
    /// Login answers 401.
    RejectLogin,
    /// Generate answers 500.
    FailGenerate,
    /// Generate answers after this long.
    Stall(Duration),
    /// Every n-th generate answers 402 Insufficient credits.
    RefuseEvery(u64),
}

pub struct Server {
    pub base: String,
    pub generates: Arc<AtomicU64>,
    /// Session polls, of a session this server created and of any other.
    pub polls: Arc<Polls>,
    /// The email of every login, in arrival order.
    pub logins: Arc<Mutex<Vec<String>>>,
}

#[derive(Default)]
pub struct Polls {
    pub own: AtomicU64,
    pub foreign: AtomicU64,
}

/// What every handler shares: the behaviour, the generates answered, the
/// prefix of this server's session ids (its port), the polls and logins.
#[derive(Clone)]
struct AppState {
    behaviour: Behaviour,
    generates: Arc<AtomicU64>,
    sessions: String,
    polls: Arc<Polls>,
    logins: Arc<Mutex<Vec<String>>>,
}

pub async fn start(behaviour: Behaviour) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let state = AppState {
        behaviour,
        generates: Arc::new(AtomicU64::new(0)),
        sessions: format!("s{}-", address.port()),
        polls: Arc::default(),
        logins: Arc::default(),
    };
    let server = Server {
        base: format!("http://{address}"),
        generates: state.generates.clone(),
        polls: state.polls.clone(),
        logins: state.logins.clone(),
    };
    let app = Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/images/seedream4/generate", post(generate))
        .route("/api/images/seedream4/sessions/{id}", get(session))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    server
}

/// A session of this server is completed at the first poll; any other is
/// counted and not found.
async fn session(State(state): State<AppState>, Path(id): Path<String>) -> impl IntoResponse {
    if id.starts_with(&state.sessions) {
        state.polls.own.fetch_add(1, Ordering::Relaxed);
        (StatusCode::OK, Json(json!({"status": "completed"})))
    } else {
        state.polls.foreign.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such session"})),
        )
    }
}

async fn login(State(state): State<AppState>, body: axum::body::Bytes) -> impl IntoResponse {
    let email = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|b| b["email"].as_str().map(str::to_string))
        .unwrap_or_default();
    state.logins.lock().unwrap().push(email);
    match state.behaviour {
        Behaviour::RejectLogin => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Invalid credentials"})),
        ),
        _ => (
            StatusCode::OK,
            Json(json!({"id": "u1", "email": "test@example.com", "credits": 10, "token": "t0k"})),
        ),
    }
}

async fn generate(State(state): State<AppState>) -> impl IntoResponse {
    let nth = state.generates.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("{}{nth}", state.sessions);
    match state.behaviour {
        Behaviour::RefuseEvery(n) if nth % n == 0 => (
            StatusCode::PAYMENT_REQUIRED,
            Json(json!({"error": "Insufficient credits"})),
        ),
        Behaviour::FailGenerate => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "provider exploded"})),
        ),
        Behaviour::Stall(delay) => {
            tokio::time::sleep(delay).await;
            accepted(&id)
        }
        _ => accepted(&id),
    }
}

fn accepted(id: &str) -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::ACCEPTED,
        Json(
            json!({"accepted": true, "clientKey": "k", "reservationId": "r", "sessionId": id, "session_id": id, "status": "queued"}),
        ),
    )
}

/// Reads one request (head plus `Content-Length` body) off `stream`.
pub async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                return Some(buf);
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Options for a short run against `base` with no think time.
pub fn args(base: &str, extra: &[&str]) -> loadgen::cli::RunArgs {
    let mut argv = vec!["--think-time", "0"];
    argv.extend_from_slice(extra);
    run_args(base, &argv)
}

/// `loadgen run --quiet --api-base base extra`'s options.
pub fn run_args(base: &str, extra: &[&str]) -> loadgen::cli::RunArgs {
    use clap::Parser;
    let mut argv = vec!["loadgen", "run", "--quiet", "--api-base", base];
    argv.extend_from_slice(extra);
    match loadgen::cli::Cli::parse_from(argv).command {
        loadgen::cli::Command::Run(args) => *args,
        _ => unreachable!("run was given"),
    }
}

/// Runs the plan of `args` in this process, to its end.
pub async fn run_in_process(args: &loadgen::cli::RunArgs) -> loadgen::run::RunOutcome {
    let plan = loadgen::plan::Plan::from_args(args).expect("valid plan");
    loadgen::run::execute(plan, Arc::new(std::sync::atomic::AtomicBool::new(false)))
        .await
        .expect("run")
}

/// A counter's count in a run's outcome; 0 when it counted nothing.
pub fn counter(outcome: &loadgen::run::RunOutcome, key: &str) -> f64 {
    match outcome.snapshot.metric(key).map(|m| &m.values) {
        Some(loadgen::snapshot::Values::Counter { count }) => *count,
        _ => 0.0,
    }
}
