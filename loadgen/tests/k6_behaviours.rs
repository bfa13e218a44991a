//! The k6 test's behaviours the README promises, checked from the server's
//! side with a small in-test server in the real backend's shapes: the
//! login body carries no token (only `Set-Cookie: token=`), the 202 names
//! `sessionId` only, and generate needs the cookie of a token it issued.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{counter, run_args, run_in_process};
use loadgen::run::RunOutcome;
use loadgen::snapshot::{TrendValues, Values};
use serde_json::{json, Value};

#[derive(Default)]
struct Backend {
    /// Generate answers this status (a provider failure) instead of 202.
    generate_status: Option<StatusCode>,
    /// Generate answers only after this long.
    generate_delay: Option<Duration>,
    /// Logins per email.
    logins: Mutex<HashMap<String, u64>>,
    /// Tokens issued, to whom.
    tokens: Mutex<HashMap<String, String>>,
    /// Accepted-or-failed generates in arrival order: (email, prompt).
    generates: Mutex<Vec<(String, String)>>,
    /// Generates without a valid token cookie.
    unauthorised: AtomicU64,
    issued: AtomicU64,
    /// How the accepted session `s` is followed up (`--track-sessions`).
    session: Option<SessionScript>,
}

/// The session `s`: `processing` for two polls, then `completed` with these
/// timestamps, on the mock's single-session route or, without it (a 404
/// there, as the real backend), on the history.
struct SessionScript {
    single_route: bool,
    created_at: Option<&'static str>,
    completed_at: Option<&'static str>,
    polls: AtomicU64,
}

impl SessionScript {
    fn new(single_route: bool, times: Option<(&'static str, &'static str)>) -> SessionScript {
        SessionScript {
            single_route,
            created_at: times.map(|t| t.0),
            completed_at: times.map(|t| t.1),
            polls: AtomicU64::new(0),
        }
    }

    /// The session as the next poll sees it.
    fn poll(&self) -> Value {
        let poll = self.polls.fetch_add(1, Ordering::Relaxed);
        // Two polls per session see it still processing.
        let status = if poll % 3 < 2 {
            "processing"
        } else {
            "completed"
        };
        let mut session = json!({"session_id": "s", "status": status});
        if let (Some(created), Some(completed)) = (self.created_at, self.completed_at) {
            session["created_at"] = json!(created);
            session["completed_at"] = json!(if status == "completed" {
                Value::from(completed)
            } else {
                Value::Null
            });
        }
        session
    }
}

struct Server {
    base: String,
    backend: Arc<Backend>,
}

async fn start(backend: Backend) -> Server {
    let backend = Arc::new(backend);
    let app = Router::new()
        .route("/api/auth/login", post(login))
        .route("/api/images/seedream4/generate", post(generate))
        .route("/api/images/seedream4/sessions/{id}", get(single_session))
        .route("/api/images/seedream4/history", get(history))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { base, backend }
}

/// The real backend's login: the user in the body, the token in a cookie.
async fn login(State(b): State<Arc<Backend>>, Json(body): Json<Value>) -> Response {
    let email = body["email"].as_str().unwrap_or_default().to_string();
    *b.logins.lock().unwrap().entry(email.clone()).or_default() += 1;
    let token = format!("tok{}", b.issued.fetch_add(1, Ordering::Relaxed));
    b.tokens
        .lock()
        .unwrap()
        .insert(token.clone(), email.clone());
    (
        StatusCode::OK,
        [(
            header::SET_COOKIE,
            format!("token={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age=604800"),
        )],
        Json(json!({"id": "u1", "email": email, "credits": 100})),
    )
        .into_response()
}

async fn generate(
    State(b): State<Arc<Backend>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let email = cookie
        .split(';')
        .filter_map(|pair| pair.trim().strip_prefix("token="))
        .find_map(|token| b.tokens.lock().unwrap().get(token).cloned());
    let Some(email) = email else {
        b.unauthorised.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Token is not valid"})),
        )
            .into_response();
    };
    let prompt = body["prompt"].as_str().unwrap_or_default().to_string();
    b.generates.lock().unwrap().push((email, prompt));
    if let Some(delay) = b.generate_delay {
        tokio::time::sleep(delay).await;
    }
    match b.generate_status {
        Some(status) => (status, Json(json!({"error": "Provider request failed"}))).into_response(),
        None => (
            StatusCode::ACCEPTED,
            Json(json!({"accepted": true, "clientKey": "k", "sessionId": "s", "status": "queued"})),
        )
            .into_response(),
    }
}

async fn single_session(State(b): State<Arc<Backend>>) -> Response {
    match &b.session {
        Some(script) if script.single_route => Json(script.poll()).into_response(),
        _ => (StatusCode::NOT_FOUND, Json(json!({"error": "Cannot GET"}))).into_response(),
    }
}

async fn history(State(b): State<Arc<Backend>>) -> Response {
    let items: Vec<Value> = b.session.iter().map(SessionScript::poll).collect();
    Json(json!({"items": items, "pagination": {"total": items.len(), "limit": 50, "offset": 0, "hasMore": false}}))
        .into_response()
}

async fn run(base: &str, extra: &[&str]) -> RunOutcome {
    run_in_process(&run_args(base, extra)).await
}

fn rate(outcome: &RunOutcome, key: &str) -> (u64, u64) {
    match outcome.snapshot.metric(key).map(|m| &m.values) {
        Some(Values::Rate { passes, fails }) => (*passes, *fails),
        other => panic!("{key} is not a rate: {}", other.is_some()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_taken_from_set_cookie_when_the_body_has_none() {
    let server = start(Backend::default()).await;
    let outcome = run(
        &server.base,
        &["--vus", "1", "--iterations", "3", "--think-time", "0"],
    )
    .await;
    let b = &server.backend;
    assert_eq!(b.unauthorised.load(Ordering::Relaxed), 0);
    assert_eq!(b.generates.lock().unwrap().len(), 3, "each with its cookie");
    // Five checks per iteration, all passing: `has session_id` on `sessionId`.
    assert_eq!(rate(&outcome, "checks"), (15, 0));
    assert_eq!(rate(&outcome, "generation_success"), (3, 0));
    assert_eq!(outcome.accepted_generations, 3);
    assert_eq!(outcome.exit_code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_answer_to_generate_counts_as_a_provider_error() {
    let server = start(Backend {
        generate_status: Some(StatusCode::BAD_GATEWAY),
        ..Backend::default()
    })
    .await;
    let outcome = run(
        &server.base,
        &["--vus", "2", "--iterations", "6", "--think-time", "0"],
    )
    .await;
    assert_eq!(server.backend.generates.lock().unwrap().len(), 6);
    assert_eq!(counter(&outcome, "provider_errors"), 6.0);
    assert_eq!(counter(&outcome, "credit_errors"), 0.0);
    assert_eq!(rate(&outcome, "errors"), (6, 0), "errors is a rate of 1s");
    assert_eq!(outcome.accepted_generations, 0);
    assert_eq!(outcome.exit_code, 99, "the default thresholds fail");
}

async fn prompts_with_seed(seed: &str, think_time: &str) -> Vec<String> {
    let server = start(Backend::default()).await;
    run(
        &server.base,
        &[
            "--vus",
            "1",
            "--iterations",
            "12",
            "--think-time",
            think_time,
            "--seed",
            seed,
        ],
    )
    .await;
    let generates = server.backend.generates.lock().unwrap();
    generates.iter().map(|(_, prompt)| prompt.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_sends_the_same_prompts_and_think_times() {
    let first = prompts_with_seed("42", "1ms..3ms").await;
    let second = prompts_with_seed("42", "1ms..3ms").await;
    let other = prompts_with_seed("43", "1ms..3ms").await;
    let without_think = prompts_with_seed("42", "0").await;
    assert_eq!(first.len(), 12);
    assert_eq!(first, second);
    // Another seed draws another sequence (8¹² possibilities).
    assert_ne!(first, other);
    // Think times are drawn from the same seeded generator, between the
    // prompts: without them (no draw) the same seed sends other prompts.
    // So a seed that repeats its prompts repeats its think times too (a
    // think time drawn from elsewhere would leave the prompts unchanged).
    assert_ne!(first, without_think);
    let distinct: std::collections::HashSet<_> = first.iter().collect();
    assert!(distinct.len() > 1, "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_once_logs_in_once_per_vu() {
    for (mode, logins) in [("once", 3), ("per-iteration", 12)] {
        let server = start(Backend::default()).await;
        run(
            &server.base,
            &[
                "--executor",
                "per-vu-iterations",
                "--vus",
                "3",
                "--iterations",
                "4",
                "--think-time",
                "0",
                "--login",
                mode,
            ],
        )
        .await;
        let b = &server.backend;
        let counted: u64 = b.logins.lock().unwrap().values().sum();
        // One more for the setup login, as the k6 test's setup().
        assert_eq!(counted, logins + 1, "--login {mode}");
        assert_eq!(b.generates.lock().unwrap().len(), 12);
        assert_eq!(b.unauthorised.load(Ordering::Relaxed), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_file_gives_vu_n_account_n_mod_count() {
    let server = start(Backend::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.csv");
    std::fs::write(
        &file,
        "a@example.com,pa\nb@example.com,pb\nc@example.com,pc\n",
    )
    .unwrap();
    run(
        &server.base,
        &[
            "--executor",
            "per-vu-iterations",
            "--vus",
            "5",
            "--iterations",
            "2",
            "--think-time",
            "0",
            "--users-file",
            file.to_str().unwrap(),
        ],
    )
    .await;
    let mut per_user: HashMap<String, u64> = HashMap::new();
    for (email, _) in server.backend.generates.lock().unwrap().iter() {
        *per_user.entry(email.clone()).or_default() += 1;
    }
    // VUs 1..5 use accounts 0,1,2,0,1: two iterations each.
    let wanted: HashMap<String, u64> = [
        ("a@example.com".to_string(), 4),
        ("b@example.com".to_string(), 4),
        ("c@example.com".to_string(), 2),
    ]
    .into();
    assert_eq!(per_user, wanted);
}

/// Two VUs for `duration` with `--graceful-stop grace`, against a backend
/// whose generate answers after `delay`: the generates it got, and the
/// outcome.
async fn graceful_stop_run(delay: Duration, duration: &str, grace: &str) -> (usize, RunOutcome) {
    let server = start(Backend {
        generate_delay: Some(delay),
        ..Backend::default()
    })
    .await;
    let outcome = run(
        &server.base,
        &[
            "--vus",
            "2",
            "--duration",
            duration,
            "--graceful-stop",
            grace,
            "--think-time",
            "0",
            "--no-thresholds",
        ],
    )
    .await;
    let generates = server.backend.generates.lock().unwrap().len();
    (generates, outcome)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_counts_a_cut_iteration_as_interrupted_not_complete() {
    let (generates, outcome) = graceful_stop_run(Duration::from_secs(30), "2s", "0s").await;
    // Both VUs are inside generate (a 30 s answer, long past the 2 s of the
    // test, which leaves each time to log in) when the stop comes: as
    // k6, they are interrupted, and `iterations` does not count them.
    assert_eq!(generates, 2);
    assert_eq!(outcome.interrupted_iterations, 2);
    assert_eq!(outcome.completed_iterations, 0);
    assert_eq!(counter(&outcome, "iterations"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_lets_an_iteration_finish_within_it() {
    let (generates, outcome) = graceful_stop_run(Duration::from_millis(1500), "1s", "30s").await;
    // Each VU's first generate outlives the 1 s test but not the 30 s grace:
    // it completes and counts.
    assert_eq!(generates, 2);
    assert_eq!(outcome.interrupted_iterations, 0);
    assert_eq!(outcome.completed_iterations, 2);
    assert_eq!(counter(&outcome, "iterations"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramping_arrival_rate_starts_the_iterations_its_stages_integrate_to() {
    // Iterations started = ∫ rate dt over the stages (k6 starts iteration i
    // when the integral reaches i), whatever the machine's speed: late
    // starts are dropped and counted, not lost. Areas here are not whole
    // numbers, so no iteration falls due at the very end of the test.
    for (stages, started) in [
        ("1s:20,1s:21", 30.0),
        ("2s:15,1s:2", 23.0),
        ("1s:0,1s:9", 4.0),
    ] {
        let server = start(Backend::default()).await;
        let outcome = run(
            &server.base,
            &[
                "--executor",
                "ramping-arrival-rate",
                "--rate",
                "0",
                "--stages",
                stages,
                "--pre-allocated-vus",
                "5",
                "--think-time",
                "0",
            ],
        )
        .await;
        let iterations = counter(&outcome, "iterations");
        let dropped = counter(&outcome, "dropped_iterations");
        assert_eq!(iterations + dropped, started, "{stages}");
        assert_eq!(
            server.backend.generates.lock().unwrap().len() as f64,
            iterations,
            "{stages}"
        );
    }
}

/// `generation_e2e` of `sessions` tracked sessions scripted by `script`:
/// the trend of the `source` sub-metric, and the polls the server answered.
async fn tracked_e2e(script: SessionScript, sessions: u64, source: &str) -> (TrendValues, u64) {
    let server = start(Backend {
        session: Some(script),
        ..Backend::default()
    })
    .await;
    let sub = format!("generation_e2e{{source:{source}}}");
    let outcome = run(
        &server.base,
        &[
            "--vus",
            "1",
            "--iterations",
            &sessions.to_string(),
            "--think-time",
            "0",
            "--track-sessions",
            "--poll-interval",
            "250ms",
            "--threshold",
            &format!("{sub}:max<600000"),
        ],
    )
    .await;
    assert_eq!(counter(&outcome, "generation_completed"), sessions as f64);
    let polls = server
        .backend
        .session
        .as_ref()
        .unwrap()
        .polls
        .load(Ordering::Relaxed);
    let whole = match outcome.snapshot.metric("generation_e2e").map(|m| &m.values) {
        Some(Values::Trend(trend)) => trend.count(),
        _ => panic!("no generation_e2e"),
    };
    match outcome.snapshot.metric(&sub).map(|m| &m.values) {
        Some(Values::Trend(trend)) => {
            assert_eq!(trend.count(), whole, "every sample from {source}");
            (trend.clone(), polls)
        }
        _ => panic!("no {sub}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_e2e_is_the_sessions_own_completed_at_minus_created_at() {
    // The mock's single-session route, chrono's nanosecond timestamps: the
    // value is not a multiple of the 250 ms polling step. Completions are
    // seen on every third poll: four polls saw a session processing.
    let (trend, polls) = tracked_e2e(
        SessionScript::new(
            true,
            Some((
                "2026-01-01T00:00:00.100000000Z",
                "2026-01-01T00:00:01.437250Z",
            )),
        ),
        2,
        "timestamps",
    )
    .await;
    assert_eq!(polls, 6);
    assert_eq!((trend.count(), trend.min, trend.max), (2, 1337.25, 1337.25));

    // The real backend: no single-session route (404), the history's items
    // with JavaScript's millisecond timestamps.
    let (trend, polls) = tracked_e2e(
        SessionScript::new(
            false,
            Some(("2026-01-01T00:00:59.999Z", "2026-01-01T00:01:00.986Z")),
        ),
        2,
        "timestamps",
    )
    .await;
    assert_eq!(polls, 6);
    assert_eq!((trend.count(), trend.min, trend.max), (2, 987.0, 987.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_e2e_falls_back_to_polling_without_timestamps() {
    // Completion seen on the third poll, two 250 ms steps after the 202.
    let (trend, polls) = tracked_e2e(SessionScript::new(true, None), 1, "polling").await;
    assert_eq!(polls, 3);
    assert_eq!(trend.count(), 1);
    assert!(trend.min >= 500.0, "{}", trend.min);
}
