//! The users' k6 generation test (`shared/scenario.md`): the setup login,
//! one iteration (login, random prompt, generate, checks, custom metrics,
//! think time) and, with `--track-sessions`, the end-to-end follow-up of
//! each accepted generation: polling only detects that a session ended;
//! `generation_e2e` is the session's own `completed_at − created_at`
//! (tagged `source:timestamps`), or the time from the generate request to
//! the poll that saw it completed when the server gives no timestamps
//! (`source:polling`).
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
    #[error("TLS certificate of {host} rejected: {reason}; trust its CA with --tls-ca FILE or skip the check with --insecure-skip-tls-verify")]
    Certificate { host: String, reason: &'static str },
    #[error("could not obtain auth token from {base}: {why}")]
    Other { base: String, why: String },
}

pub struct Scenario {
    pub config: ScenarioConfig,
    pub base: Arc<BaseUrl>,
    /// The generate request's body for each of [`PROMPTS`], serialised
    /// once rather than per request.
    generate_bodies: [Vec<u8>; PROMPTS.len()],
    trackers: std::sync::Mutex<JoinSet<()>>,
    pub accepted: AtomicU64,
}

impl Scenario {
    pub fn new(config: ScenarioConfig, base: BaseUrl) -> Arc<Scenario> {
        let generate_bodies = PROMPTS.map(|prompt| {
            let body = GenerateRequest {
                model: &config.model,
                outputs: config.outputs,
                prompt,
            };
            // Two strings and a number: serialising cannot fail.
            serde_json::to_vec(&body).unwrap_or_default()
        });
        Arc::new(Scenario {
            generate_bodies,
            config,
            base: Arc::new(base),
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
            (_, Some(FailureKind::Tls(failure))) if failure.is_certificate() => {
                SetupError::Certificate {
                    host: self.base.host.clone(),
                    reason: failure.reason(),
                }
            }
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
                serde_json::to_vec(&json!({"email": email, "password": password}))
                    .ok()
                    .as_deref(),
                &[],
                self.config.login_timeout,
            )
            .await
    }

    /// One iteration of the k6 test.
    pub async fn iteration(self: &Arc<Self>, vu: &mut Vu, collector: &Arc<Collector>) {
        // Boxed: the requests' state (buffers, timeouts, ~3 KB) lives on the
        // heap only while they run, so the VU's task, sized for its largest
        // state, holds little more than the think time's timer.
        Box::pin(self.requests(vu, collector)).await;
        // Only now, with the responses dropped: a VU in think time holds its
        // socket and cookies, no buffer.
        self.think(vu).await;
    }

    /// The iteration's login (unless reused) and generate.
    async fn requests(self: &Arc<Self>, vu: &mut Vu, collector: &Arc<Collector>) {
        if self.login(vu, collector).await {
            self.generate(vu, collector).await;
        } else {
            collector.add("errors", 1.0, &[]);
        }
    }

    /// Whether the VU has its token (in [`Vu::cookie`]), from a login
    /// unless `--login once` has one already.
    async fn login(&self, vu: &mut Vu, collector: &Collector) -> bool {
        if self.config.login == LoginMode::Once && vu.cookie.is_some() {
            return true;
        }
        let response = self
            .login_request(&mut vu.client, &vu.email, &vu.password)
            .await;
        record_http(collector, &response, "POST", &self.config.login_path, None);
        let token = token_of(&response);
        collector.check("login successful", response.status == 200);
        collector.check("login returned token", token.is_some());
        vu.cookie = token.map(|token| format!("token={token}"));
        vu.cookie.is_some()
    }

    /// The generate request, its checks and custom metrics; the VU has its
    /// token.
    async fn generate(self: &Arc<Self>, vu: &mut Vu, collector: &Arc<Collector>) {
        let Vu {
            client,
            rng,
            cookie: Some(cookie),
            ..
        } = vu
        else {
            return;
        };
        let body = &self.generate_bodies[rng.gen_range(0..PROMPTS.len())];
        let started = Instant::now();
        let response = client
            .send(
                Method::POST,
                &self.config.generate_path,
                Some(body),
                &[("Cookie", cookie)],
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
        let answer: GenerateAnswer = serde_json::from_slice(&response.body).unwrap_or_default();
        let session_id = match answer.session_id.or(answer.session_id_camel) {
            Some(Value::String(id)) => Some(id),
            _ => None,
        };
        let status_ok = response.status == 202;
        let has_client_key = answer.client_key;
        collector.check("status is 202", status_ok);
        collector.check("has session_id", session_id.is_some());
        collector.check("has client_key", has_client_key);
        if status_ok && session_id.is_some() && has_client_key {
            collector.add_all(&[("generation_success", 1.0), ("errors", 0.0)], &[]);
            self.accepted.fetch_add(1, Ordering::Relaxed);
            if let (Some(tracking), Some(id)) = (&self.config.tracking, session_id) {
                self.track(
                    tracking.clone(),
                    client.fresh(),
                    id,
                    cookie.clone(),
                    started,
                    collector.clone(),
                );
            }
        } else {
            collector.add_all(&[("generation_success", 0.0), ("errors", 1.0)], &[]);
            let message = answer
                .error
                .as_ref()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            if matches!(response.status, 400 | 402) && message.contains("credit") {
                collector.add("credit_errors", 1.0, &[]);
            } else if response.status >= 500 {
                collector.add("provider_errors", 1.0, &[]);
            }
        }
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
    /// test; its requests are not counted in `http_reqs`. `client` (the VU's
    /// [`Client::fresh`]) polls the target the session was created on, and
    /// the samples carry the VU's `target` tag, as the iteration's do.
    fn track(
        self: &Arc<Self>,
        tracking: Tracking,
        mut client: Client,
        session_id: String,
        cookie: String,
        accepted_at: Instant,
        collector: Arc<Collector>,
    ) {
        let target = crate::metrics::TARGET.try_with(Arc::clone).ok();
        let task = async move {
            let single = format!("/api/images/seedream4/sessions/{session_id}");
            let mut use_history = false;
            loop {
                if accepted_at.elapsed() > tracking.deadline {
                    collector.add("generation_timeout", 1.0, &[]);
                    return;
                }
                let session = if use_history {
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
                            })
                            .cloned()
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
                    response.json().map(|j| match j.get("session") {
                        Some(inner) if inner.is_object() => inner.clone(),
                        _ => j,
                    })
                };
                let status = session
                    .as_ref()
                    .and_then(|s| s.get("status"))
                    .and_then(Value::as_str);
                match status {
                    Some("completed") => {
                        let (e2e_ms, source) = match session.as_ref().and_then(server_duration_ms) {
                            Some(ms) => (ms, "timestamps"),
                            None => (accepted_at.elapsed().as_secs_f64() * 1000.0, "polling"),
                        };
                        collector.add("generation_completed", 1.0, &[]);
                        collector.add("generation_e2e", e2e_ms, &[("source", source)]);
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
            match target {
                Some(target) => trackers.spawn(crate::metrics::TARGET.scope(target, task)),
                None => trackers.spawn(task),
            };
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

/// `completed_at − created_at` of a session (the mock's session route or a
/// history item of the real backend), in milliseconds: the generation's end
/// to end as the server stamped it, free of the polling step. RFC 3339
/// (`…Z`, `…+00:00`) or, for a timestamp without a zone, UTC.
fn server_duration_ms(session: &Value) -> Option<f64> {
    let at = |key: &str| -> Option<chrono::DateTime<chrono::Utc>> {
        let text = session.get(key)?.as_str()?;
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.to_utc())
            .or_else(|_| {
                chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| {
                        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                    })
                    .map(|t| t.and_utc())
            })
            .ok()
    };
    let elapsed = at("completed_at")? - at("created_at")?;
    let ms = elapsed.num_microseconds()? as f64 / 1000.0;
    (ms >= 0.0).then_some(ms)
}

/// The body of a generate request; fields in the order `json!` sorted them.
#[derive(serde::Serialize)]
struct GenerateRequest<'a> {
    model: &'a str,
    outputs: u32,
    prompt: &'a str,
}

/// What the checks read of a generate answer, parsed without building the
/// whole document. A field holds its value even when `null`, and the last of
/// duplicate keys wins, as with `Value::get`; a body that is not an object
/// fails to parse, which reads as all fields absent, as before.
#[derive(Default)]
struct GenerateAnswer {
    session_id: Option<Value>,
    session_id_camel: Option<Value>,
    client_key: bool,
    error: Option<Value>,
}

impl<'de> serde::Deserialize<'de> for GenerateAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, Visitor};

        #[derive(serde::Deserialize)]
        #[serde(field_identifier)]
        enum Field {
            #[serde(rename = "session_id")]
            SessionId,
            #[serde(rename = "sessionId")]
            SessionIdCamel,
            #[serde(rename = "clientKey")]
            ClientKey,
            #[serde(rename = "error")]
            Error,
            #[serde(other)]
            Other,
        }

        struct Answer;
        impl<'de> Visitor<'de> for Answer {
            type Value = GenerateAnswer;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GenerateAnswer, A::Error> {
                let mut answer = GenerateAnswer::default();
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::SessionId => answer.session_id = Some(map.next_value()?),
                        Field::SessionIdCamel => answer.session_id_camel = Some(map.next_value()?),
                        Field::ClientKey => {
                            map.next_value::<IgnoredAny>()?;
                            answer.client_key = true;
                        }
                        Field::Error => answer.error = Some(map.next_value()?),
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(answer)
            }
        }

        deserializer.deserialize_map(Answer)
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
        .header_values("set-cookie")
        .into_iter()
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
    let code = http::StatusCode::from_u16(response.status).ok();
    let status = code.as_ref().map_or("0", http::StatusCode::as_str);
    // k6's default expected statuses: 200..=399.
    let failed = !(200..400).contains(&response.status);
    let mut tags: [(&'static str, &str); 6] = [
        ("method", method),
        ("name", name),
        ("status", status),
        ("expected_response", if failed { "false" } else { "true" }),
        ("", ""),
        ("", ""),
    ];
    let mut len = 4;
    for tag in [
        endpoint.map(|e| ("endpoint", e)),
        response.failure.map(|f| ("error", f.as_tag())),
    ]
    .into_iter()
    .flatten()
    {
        tags[len] = tag;
        len += 1;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let t = &response.timings;
    // As k6 (Go's httptrace GetConn → GotConn): blocked is the time to get
    // a connection, so the connect and the TLS handshake of a new one; a
    // plain http:// request has a TLS handshake of 0.
    let handshake = t.tls_handshaking.unwrap_or_default();
    collector.add_all(
        &[
            ("http_reqs", 1.0),
            ("http_req_duration", ms(t.duration)),
            ("http_req_blocked", ms(t.connecting + handshake)),
            ("http_req_connecting", ms(t.connecting)),
            ("http_req_tls_handshaking", ms(handshake)),
            ("http_req_sending", ms(t.sending)),
            ("http_req_waiting", ms(t.waiting)),
            ("http_req_receiving", ms(t.receiving)),
            ("http_req_failed", if failed { 1.0 } else { 0.0 }),
            ("data_sent", response.bytes_sent as f64),
            ("data_received", response.bytes_received as f64),
        ],
        &tags[..len],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> GenerateAnswer {
        serde_json::from_str(body).unwrap_or_default()
    }

    #[test]
    fn server_durations_read_every_timestamp_shape() {
        let of = |created: &str, completed: &str| {
            server_duration_ms(&json!({"created_at": created, "completed_at": completed}))
        };
        // The mock (chrono, nanoseconds), the real backend (JS Date, ms).
        assert_eq!(
            of(
                "2026-01-01T00:00:00.100000000Z",
                "2026-01-01T00:00:01.437250Z"
            ),
            Some(1337.25)
        );
        assert_eq!(
            of("2026-01-01T00:00:59.999Z", "2026-01-01T00:01:00.012Z"),
            Some(13.0)
        );
        assert_eq!(
            of("2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00.5Z"),
            Some(500.0)
        );
        // Without a zone, both read as UTC.
        assert_eq!(
            of("2026-01-01 00:00:00.25", "2026-01-01T00:00:01"),
            Some(750.0)
        );
        assert_eq!(of("2026-01-01T00:00:01Z", "2026-01-01T00:00:00Z"), None);
        assert_eq!(of("yesterday", "2026-01-01T00:00:00Z"), None);
        assert_eq!(
            server_duration_ms(
                &json!({"created_at": "2026-01-01T00:00:00Z", "completed_at": null})
            ),
            None
        );
    }

    #[test]
    fn generate_answers_read_as_value_get_would() {
        let a = answer(r#"{"sessionId":"b","x":[1,{"y":null}],"clientKey":null,"session_id":"a"}"#);
        assert_eq!(a.session_id, Some(json!("a")));
        assert_eq!(a.session_id_camel, Some(json!("b")));
        assert!(a.client_key);
        let a = answer(r#"{"session_id":null,"session_id":7,"error":"No credits"}"#);
        assert_eq!(a.session_id, Some(json!(7)));
        assert_eq!(a.error, Some(json!("No credits")));
        assert!(!a.client_key);
        let a = answer(r#"["session_id","s","clientKey","k"]"#);
        assert!(a.session_id.is_none() && !a.client_key);
        assert!(answer("not json").session_id.is_none());
    }

    #[test]
    fn generate_requests_serialize_as_the_json_macro_did() {
        let body = GenerateRequest {
            model: "m",
            outputs: 2,
            prompt: "p \"q\"",
        };
        assert_eq!(
            serde_json::to_vec(&body).unwrap(),
            serde_json::to_vec(&json!({"prompt": "p \"q\"", "model": "m", "outputs": 2})).unwrap()
        );
    }
}
