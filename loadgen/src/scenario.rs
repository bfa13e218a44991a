//! The users' k6 generation test (`shared/scenario.md`): the setup login,
//! one iteration (login, random prompt, generate, checks, custom metrics,
//! think time) and, with `--track-sessions`, the end-to-end follow-up of
//! each accepted generation.
//!
//! Two real-backend shapes are handled where the k6 test is not: the token
//! is taken from the login body or, when absent, from `Set-Cookie: token=`;
//! and `has session_id` passes on `session_id` or `sessionId`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use rand::Rng;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::http::{cookie_pair, BaseUrl, Client, FailureKind, Response};
use crate::metrics::Collector;
use crate::vu::Vu;

pub const PROMPTS: [&str; 8] = [
    "A scenic landscape at sunset",
    "A futuristic city skyline",
    "A peaceful forest scene",
    "An abstract geometric pattern",
    "A cute cat playing with yarn",
    "A modern minimalist interior",
    "A vibrant street art mural",
    "A serene ocean beach",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginMode {
    /// Log in at the start of every iteration, as the k6 test does.
    PerIteration,
    /// Log in once per VU and reuse the token.
    Once,
}

/// Follow-up of accepted generations until they finish.
#[derive(Clone, Debug)]
pub struct Tracking {
    pub poll_interval: Duration,
    pub deadline: Duration,
}

#[derive(Clone, Debug)]
pub struct ScenarioConfig {
    pub login_path: String,
    pub generate_path: String,
    pub model: String,
    pub outputs: u32,
    pub login_timeout: Duration,
    pub generate_timeout: Duration,
    pub login: LoginMode,
    pub think_time: (Duration, Duration),
    pub tracking: Option<Tracking>,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            login_path: "/api/auth/login".into(),
            generate_path: "/api/images/seedream4/generate".into(),
            model: "seedream-4-0-t2i-250415".into(),
            outputs: 1,
            login_timeout: Duration::from_secs(10),
            generate_timeout: Duration::from_secs(60),
            login: LoginMode::PerIteration,
            think_time: (Duration::from_secs(1), Duration::from_secs(3)),
            tracking: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("could not obtain auth token: connection refused at {0} (is the backend running? start it or pass --spawn-mock)")]
    Refused(String),
    #[error("could not obtain auth token: {0} answered 401 (wrong credentials? check TEST_EMAIL / TEST_PASSWORD or run seed)")]
    Unauthorized(String),
    #[error("could not obtain auth token from {base}: {why}")]
    Other { base: String, why: String },
}

pub struct Scenario {
    pub config: ScenarioConfig,
    pub base: BaseUrl,
    trackers: std::sync::Mutex<JoinSet<()>>,
    pub accepted: AtomicU64,
}

impl Scenario {
    pub fn new(config: ScenarioConfig, base: BaseUrl) -> Arc<Scenario> {
        Arc::new(Scenario {
            config,
            base,
            trackers: std::sync::Mutex::new(JoinSet::new()),
            accepted: AtomicU64::new(0),
        })
    }

    /// Logs in once before any load, to fail fast with a clear reason.
    pub async fn setup(&self, email: &str, password: &str) -> Result<(), SetupError> {
        let mut client = Client::new(self.base.clone(), false);
        let response = self.login_request(&mut client, email, password).await;
        if token_of(&response).is_some() {
            return Ok(());
        }
        let base = self.base.original.clone();
        Err(match (response.status, response.failure) {
            (_, Some(FailureKind::ConnectionRefused)) => SetupError::Refused(base),
            (401, _) => SetupError::Unauthorized(base),
            (_, Some(kind)) => SetupError::Other {
                base,
                why: kind.as_tag().to_string(),
            },
            (status, None) => SetupError::Other {
                base,
                why: format!(
                    "login answered {status} without a token: {}",
                    String::from_utf8_lossy(&response.body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            },
        })
    }

    async fn login_request(&self, client: &mut Client, email: &str, password: &str) -> Response {
        client
            .send(
                Method::POST,
                &self.config.login_path,
                Some(&json!({"email": email, "password": password})),
                &[],
                self.config.login_timeout,
            )
            .await
    }

    /// One iteration of the k6 test.
    pub async fn iteration(self: &Arc<Self>, vu: &mut Vu, collector: &Arc<Collector>) {
        let token = match (self.config.login, vu.token.clone()) {
            (LoginMode::Once, Some(token)) => Some(token),
            _ => {
                let response = self
                    .login_request(&mut vu.client, &vu.email, &vu.password)
                    .await;
                record_http(collector, &response, "POST", &self.config.login_path, None);
                let token = token_of(&response);
                collector.check("login successful", response.status == 200);
                collector.check("login returned token", token.is_some());
                vu.token = token.clone();
                token
            }
        };
        let Some(token) = token else {
            collector.add("errors", 1.0, &[]);
            self.think(vu).await;
            return;
        };
        let prompt = PROMPTS[vu.rng.gen_range(0..PROMPTS.len())];
        let body =
            json!({"prompt": prompt, "model": self.config.model, "outputs": self.config.outputs});
        let cookie = format!("token={token}");
        let started = Instant::now();
        let response = vu
            .client
            .send(
                Method::POST,
                &self.config.generate_path,
                Some(&body),
                &[("Cookie", &cookie)],
                self.config.generate_timeout,
            )
            .await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        record_http(
            collector,
            &response,
            "POST",
            &self.config.generate_path,
            Some("seedream4"),
        );
        collector.add("response_time", elapsed_ms, &[]);
        let json = response.json();
        let session_id = json.as_ref().and_then(|j| {
            j.get("session_id")
                .or_else(|| j.get("sessionId"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let status_ok = response.status == 202;
        let has_client_key = json.as_ref().is_some_and(|j| j.get("clientKey").is_some());
        collector.check("status is 202", status_ok);
        collector.check("has session_id", session_id.is_some());
        collector.check("has client_key", has_client_key);
        if status_ok && session_id.is_some() && has_client_key {
            collector.add("generation_success", 1.0, &[]);
            collector.add("errors", 0.0, &[]);
            self.accepted.fetch_add(1, Ordering::Relaxed);
            if let (Some(tracking), Some(id)) = (&self.config.tracking, session_id) {
                self.track(tracking.clone(), id, token, started, collector.clone());
            }
        } else {
            collector.add("generation_success", 0.0, &[]);
            collector.add("errors", 1.0, &[]);
            let message = json
                .as_ref()
                .and_then(|j| j.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            if matches!(response.status, 400 | 402) && message.contains("credit") {
                collector.add("credit_errors", 1.0, &[]);
            } else if response.status >= 500 {
                collector.add("provider_errors", 1.0, &[]);
            }
        }
        self.think(vu).await;
    }

    async fn think(&self, vu: &mut Vu) {
        let (min, max) = self.config.think_time;
        let pause = if max > min {
            vu.rng.gen_range(min..=max)
        } else {
            min
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }

    /// Polls the session on its own connection, outside the iteration, so
    /// the iteration's timing and the `http_*` metrics stay those of the k6
    /// test; its requests are not counted in `http_reqs`.
    fn track(
        self: &Arc<Self>,
        tracking: Tracking,
        session_id: String,
        token: String,
        accepted_at: Instant,
        collector: Arc<Collector>,
    ) {
        let scenario = self.clone();
        let task = async move {
            let mut client = Client::new(scenario.base.clone(), false);
            let cookie = format!("token={token}");
            let single = format!("/api/images/seedream4/sessions/{session_id}");
            let mut use_history = false;
            loop {
                if accepted_at.elapsed() > tracking.deadline {
                    collector.add("generation_timeout", 1.0, &[]);
                    return;
                }
                let status = if use_history {
                    let response = client
                        .send(
                            Method::GET,
                            "/api/images/seedream4/history?limit=50&offset=0",
                            None,
                            &[("Cookie", &cookie)],
                            Duration::from_secs(10),
                        )
                        .await;
                    response.json().and_then(|j| {
                        j.get("items")?
                            .as_array()?
                            .iter()
                            .find(|i| {
                                i.get("session_id").and_then(Value::as_str) == Some(&session_id)
                            })?
                            .get("status")?
                            .as_str()
                            .map(str::to_string)
                    })
                } else {
                    let response = client
                        .send(
                            Method::GET,
                            &single,
                            None,
                            &[("Cookie", &cookie)],
                            Duration::from_secs(10),
                        )
                        .await;
                    if response.status == 404 {
                        // The real backend has no single-session route.
                        use_history = true;
                        continue;
                    }
                    response.json().and_then(|j| {
                        j.get("status")
                            .or_else(|| j.get("session").and_then(|s| s.get("status")))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                };
                match status.as_deref() {
                    Some("completed") => {
                        collector.add("generation_completed", 1.0, &[]);
                        collector.add(
                            "generation_e2e",
                            accepted_at.elapsed().as_secs_f64() * 1000.0,
                            &[],
                        );
                        return;
                    }
                    Some("failed") => {
                        collector.add("generation_failed", 1.0, &[]);
                        return;
                    }
                    _ => tokio::time::sleep(tracking.poll_interval).await,
                }
            }
        };
        if let Ok(mut trackers) = self.trackers.lock() {
            trackers.spawn(task);
        }
    }

    /// Waits for every session follow-up to end (each has its deadline).
    pub async fn wait_for_trackers(&self) {
        let mut trackers = match self.trackers.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        while trackers.join_next().await.is_some() {}
    }
}

/// The token from the login body, else from `Set-Cookie: token=`.
fn token_of(response: &Response) -> Option<String> {
    if response.status != 200 {
        return None;
    }
    if let Some(token) = response
        .json()
        .and_then(|j| j.get("token").and_then(Value::as_str).map(str::to_string))
    {
        return Some(token);
    }
    response
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(cookie_pair)
        .find(|(name, value)| *name == "token" && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

/// k6's built-in HTTP metrics for one request.
pub fn record_http(
    collector: &Collector,
    response: &Response,
    method: &'static str,
    name: &str,
    endpoint: Option<&str>,
) {
    let status = response.status.to_string();
    let mut tags: Vec<(&'static str, &str)> =
        vec![("method", method), ("name", name), ("status", &status)];
    if let Some(endpoint) = endpoint {
        tags.push(("endpoint", endpoint));
    }
    if let Some(failure) = response.failure {
        tags.push(("error", failure.as_tag()));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let t = &response.timings;
    collector.add("http_reqs", 1.0, &tags);
    collector.add("http_req_duration", ms(t.duration), &tags);
    collector.add("http_req_connecting", ms(t.connecting), &tags);
    collector.add("http_req_sending", ms(t.sending), &tags);
    collector.add("http_req_waiting", ms(t.waiting), &tags);
    collector.add("http_req_receiving", ms(t.receiving), &tags);
    let failed = !(200..400).contains(&response.status);
    collector.add("http_req_failed", if failed { 1.0 } else { 0.0 }, &tags);
    collector.add("data_sent", response.bytes_sent as f64, &tags);
    collector.add("data_received", response.bytes_received as f64, &tags);
}
