//! Fault injection's domain: the [`Plan`] (replaceable while the mock
//! runs) and the decisions drawn from it, with no HTTP types. The fault
//! domain decides; the HTTP layer and the provider apply.
//!
//! - [`plan`]: the plan model, its TOML/JSON parsing and validation, the
//!   latency distributions and the scheduling windows.
//! - [`Faults`] (here): the live state — the active plan, the run epoch, the
//!   per-route request ordinals, the counters — and the seeded decisions
//!   ([`Faults::edge_faults`], [`Faults::provider_faults`]).
//! - [`rate_limit`]: the real rate limiter's counting (`RATE_LIMIT_MAX`).
//! - Applied by: the HTTP layer's `edge` (the middleware in front of the
//!   routes: latency, error, 429, reset, slow body, hang, and the rate
//!   limiter's answers) and `control` (`/__mock/*`, behind
//!   `MOCK_ADMIN_TOKEN`) modules, and [`crate::provider::Provider::decide`].
//!   Nothing here imports the HTTP layer.
//!
//! # Rules
//!
//! A rule has a `target` (`provider` or `edge`), a `kind`, a `rate` (the
//! share of matching requests or attempts it fires on) and an optional
//! window `from`/`until` relative to the run epoch (server start, or reset
//! by `POST /__mock/epoch`; `from` included, `until` excluded). Every rule
//! active at the moment is evaluated with its own draw; among the faults
//! that decide the answer (error, timeout, partial, rate_limit, reset,
//! hang) the first in plan order wins; latency and slow_body compose with
//! them.
//!
//! # Reproducibility
//!
//! Every decision is drawn from a SplitMix64 stream keyed by the seed
//! (`MOCK_SEED`), the rule's name, and a stable key of the request — never
//! from a shared generator — so it does not depend on thread scheduling:
//!
//! - **provider** rules (and the provider's base latency): the job key and
//!   the attempt number. The job key is the request's `clientKey`; when the
//!   client sends none and the engine is enabled with an explicit
//!   `MOCK_SEED`, the edge layer gives the request the key
//!   `auto-<ordinal>.<run>` where `<ordinal>` is the generate route's
//!   request ordinal and `<run>` a per-process tag, and only the ordinal
//!   part keys the draws.
//! - **edge** rules: `METHOD route` (the route's pattern, e.g.
//!   `GET /api/images/session/{id}`, or the raw path when no route matches)
//!   and the request's ordinal on that route since the epoch (0, 1, 2…).
//!
//! What that reproduces: with the same seed and the same plan, the *n*-th
//! request on a route gets the same edge decision, and a job with the same
//! key gets the same provider decision at every attempt (fault or not,
//! status, latency, outputs), whatever the number of workers. Under
//! concurrency the ordinals are handed out in arrival order, so *which*
//! request is the n-th on a route may change between runs; the sequence of
//! decisions per route (and therefore the count of each fault over the
//! first N requests) does not. Requests with client-chosen `clientKey`s
//! are reproduced per key even under concurrency. Windows are evaluated at
//! the time the request arrives or the attempt starts, so a request that
//! lands on the other side of a window edge in another run is decided with
//! the other plan; freeze the epoch (`POST /__mock/epoch` with `freeze`)
//! to remove time from the key.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod plan;
pub mod rate_limit;

pub use plan::{Action, Kind, Latency, Per, Plan, Rule, Target};

use crate::draws::{fnv1a, Rng};

/// The default provider deadline: how long a worker waits for a provider
/// answer before the attempt fails with 504.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The counter of injected faults, labelled `target`, `rule`, `kind`.
pub const INJECTED_METRIC: &str = "mock_faults_injected_total";

/// The fault settings of the configuration, before the server starts.
#[derive(Clone, Debug, Default)]
pub struct FaultSettings {
    /// The plan from the file and the simple variables, in that order.
    pub plan: Plan,
    /// Where the plan came from, for the log.
    pub plan_file: Option<PathBuf>,
    /// `MOCK_ADMIN_TOKEN`; the control API is off without it.
    pub admin_token: Option<String>,
    /// `RATE_LIMIT_MAX`: requests per window and IP; off when `None`.
    pub rate_limit_max: Option<u32>,
    pub rate_limit_window: Duration,
    /// The seed every decision derives from.
    pub seed: u64,
    /// Whether the seed was given (auto client keys are only handed out then).
    pub seed_given: bool,
}

impl FaultSettings {
    /// Whether anything at all is configured (a plan, the control API or
    /// the rate limiter).
    pub fn enabled(&self) -> bool {
        !self.plan.rules.is_empty()
            || self.plan.provider_timeout.is_some()
            || self.admin_token.is_some()
            || self.rate_limit_max.is_some()
    }
}

/// One rule's injected faults so far.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CounterKey {
    target: &'static str,
    rule: String,
    kind: &'static str,
}

/// What the provider should do for one attempt, as the rules decide it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderFaults {
    /// Replaces the provider's own latency.
    pub latency: Option<Duration>,
    /// The terminal fault, if any.
    pub outcome: Option<ProviderFault>,
    /// Every fault that fired, for the counters: (rule, kind).
    pub fired: Vec<(String, Kind)>,
    pub deadline: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProviderFault {
    Error { status: u16, message: String },
    Timeout,
    Partial { produced: u32 },
}

/// What the edge should do to one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeFaults {
    pub delay: Option<Duration>,
    pub outcome: Option<EdgeFault>,
    pub bytes_per_second: Option<u64>,
    pub fired: Vec<(String, Kind)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EdgeFault {
    Error {
        status: u16,
        body: Value,
    },
    RateLimit {
        limit: u32,
        window: Duration,
        retry_after: Duration,
    },
    Reset,
    Hang {
        max: Duration,
    },
}

struct Epoch {
    start: Instant,
    frozen: Option<Duration>,
}

/// The live fault state. Share it behind an `Arc`.
pub struct Faults {
    seed: u64,
    /// Tags the auto client keys of this process.
    run_tag: String,
    auto_keys: bool,
    /// Counting ordinals (and evaluating edge rules) at all.
    enabled: bool,
    admin_token: Option<String>,
    pub(crate) rate_limiter: Option<rate_limit::RateLimiter>,
    plan: RwLock<Arc<Plan>>,
    has_edge_rules: AtomicBool,
    epoch: Mutex<Epoch>,
    ordinals: Mutex<HashMap<String, u64>>,
    counters: Mutex<BTreeMap<CounterKey, u64>>,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("seed", &self.seed)
            .field("enabled", &self.enabled)
            .field("control", &self.admin_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// No faults, no control API, no rate limiter.
    pub fn disabled() -> Faults {
        Faults::new(FaultSettings::default(), CancellationToken::new())
    }

    /// The state of `settings`; hung requests end when `shutdown` is cancelled.
    pub fn new(settings: FaultSettings, shutdown: CancellationToken) -> Faults {
        let enabled = settings.enabled();
        let has_edge = settings.plan.rules.iter().any(|r| r.target.is_edge());
        Faults {
            seed: settings.seed,
            run_tag: format!("{:08x}", rand::random::<u32>()),
            auto_keys: enabled && settings.seed_given,
            enabled,
            rate_limiter: settings
                .rate_limit_max
                .map(|max| rate_limit::RateLimiter::new(max, settings.rate_limit_window)),
            admin_token: settings.admin_token.filter(|t| !t.is_empty()),
            plan: RwLock::new(Arc::new(settings.plan)),
            has_edge_rules: AtomicBool::new(has_edge),
            epoch: Mutex::new(Epoch {
                start: Instant::now(),
                frozen: None,
            }),
            ordinals: Mutex::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            shutdown,
        }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn control_enabled(&self) -> bool {
        self.admin_token.is_some()
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// `MOCK_ADMIN_TOKEN`, which the control API requires.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    pub fn plan(&self) -> Arc<Plan> {
        self.plan.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the plan (already validated).
    pub fn set_plan(&self, plan: Plan) {
        let has_edge = plan.rules.iter().any(|r| r.target.is_edge());
        *self.plan.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(plan);
        self.has_edge_rules.store(has_edge, Ordering::Release);
    }

    /// Adds one rule; the plan is unchanged when its name is taken.
    pub fn add_rule(&self, rule: Rule) -> Result<Arc<Plan>, String> {
        let mut guard = self.plan.write().unwrap_or_else(|e| e.into_inner());
        let mut plan = (**guard).clone();
        plan.push(rule)?;
        let plan = Arc::new(plan);
        *guard = plan.clone();
        self.has_edge_rules.store(
            plan.rules.iter().any(|r| r.target.is_edge()),
            Ordering::Release,
        );
        Ok(plan)
    }

    pub(crate) fn has_edge_rules(&self) -> bool {
        self.has_edge_rules.load(Ordering::Acquire)
    }

    /// Time since the run epoch (frozen when the epoch was set frozen).
    pub fn elapsed(&self) -> Duration {
        let epoch = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
        epoch.frozen.unwrap_or_else(|| epoch.start.elapsed())
    }

    /// Restarts the run: the epoch is now minus `at`, frozen there when
    /// asked, and every route's ordinal starts again at 0.
    pub fn reset_epoch(&self, at: Duration, freeze: bool) {
        {
            let mut epoch = self.epoch.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            epoch.start = now.checked_sub(at).unwrap_or(now);
            epoch.frozen = freeze.then_some(at);
        }
        self.ordinals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The next ordinal of `route` since the epoch (0 first).
    pub fn next_ordinal(&self, route: &str) -> u64 {
        let mut ordinals = self.ordinals.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: route patterns are few; unmatched paths share one entry.
        let slot = match ordinals.get_mut(route) {
            Some(slot) => slot,
            None => ordinals.entry(route.to_string()).or_insert(0),
        };
        let n = *slot;
        *slot += 1;
        n
    }

    /// The client key the edge gives a generate request that has none
    /// (only with an explicit seed and the engine enabled).
    pub(crate) fn auto_client_key(&self, ordinal: u64) -> Option<String> {
        self.auto_keys
            .then(|| format!("auto-{ordinal}.{}", self.run_tag))
    }

    /// The stable key of a job: its client key, or the ordinal part of an
    /// auto key of this process.
    pub fn job_key<'a>(&self, client_key: &'a str) -> &'a str {
        client_key
            .strip_prefix("auto-")
            .and_then(|rest| rest.strip_suffix(self.run_tag.as_str()))
            .and_then(|rest| rest.strip_suffix('.'))
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or(client_key)
    }

    /// Counts fired faults, in `/metrics` and for `GET /__mock/faults`;
    /// `target` is [`plan::PROVIDER`] or [`plan::EDGE`].
    pub fn record(&self, target: &'static str, fired: &[(String, Kind)]) {
        if fired.is_empty() {
            return;
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for (rule, kind) in fired {
            metrics::counter!(INJECTED_METRIC, "target" => target, "rule" => rule.clone(), "kind" => kind.as_str())
                .increment(1);
            *counters
                .entry(CounterKey {
                    target,
                    rule: rule.clone(),
                    kind: kind.as_str(),
                })
                .or_insert(0) += 1;
        }
    }

    /// The provider faults of one attempt of the job `job_key`.
    pub fn provider_faults(&self, job_key: &str, attempt: u32, outputs: u32) -> ProviderFaults {
        let plan = self.plan();
        let mut decided = ProviderFaults {
            deadline: plan.provider_timeout.unwrap_or(DEFAULT_PROVIDER_TIMEOUT),
            ..ProviderFaults::default()
        };
        if plan.rules.is_empty() {
            return decided;
        }
        let elapsed = self.elapsed();
        let key = fnv1a(job_key.as_bytes());
        for rule in &plan.rules {
            let Target::Provider(per) = rule.target else {
                continue;
            };
            if !rule.active_at(elapsed) {
                continue;
            }
            let draw = match per {
                Per::Attempt => u64::from(attempt),
                Per::Job => 0,
            };
            let mut rng = Rng::keyed(
                self.seed,
                &[fnv1a(b"provider"), fnv1a(rule.name.as_bytes()), key, draw],
            );
            if rng.unit() >= rule.rate {
                continue;
            }
            let terminal_taken = decided.outcome.is_some();
            match &rule.action {
                Action::Latency(latency) => {
                    if decided.latency.is_some() {
                        continue;
                    }
                    decided.latency = Some(latency.sample(rng.unit(), rng.unit()));
                }
                _ if terminal_taken => continue,
                Action::Error {
                    statuses, message, ..
                } => {
                    let status = pick_status(statuses, &mut rng);
                    let message = message
                        .clone()
                        .unwrap_or_else(|| format!("mock provider error {status} (injected)"));
                    decided.outcome = Some(ProviderFault::Error { status, message });
                }
                Action::Timeout => decided.outcome = Some(ProviderFault::Timeout),
                Action::Partial { produced } => {
                    if outputs < 2 {
                        continue;
                    }
                    let produced = match produced {
                        Some(k) => (*k).min(outputs - 1),
                        None => 1 + rng.below(u64::from(outputs - 1)) as u32,
                    };
                    decided.outcome = Some(ProviderFault::Partial { produced });
                }
                // Edge actions: the parser refuses them on provider rules.
                _ => continue,
            }
            decided.fired.push((rule.name.clone(), rule.kind()));
        }
        decided
    }

    /// The edge faults of request `ordinal` on `route` (`METHOD pattern`),
    /// whose raw method and path the rules match.
    pub fn edge_faults(&self, route: &str, ordinal: u64, method: &str, path: &str) -> EdgeFaults {
        let plan = self.plan();
        let mut decided = EdgeFaults::default();
        let elapsed = self.elapsed();
        let key = fnv1a(route.as_bytes());
        for rule in &plan.rules {
            let Target::Edge(route) = &rule.target else {
                continue;
            };
            if !rule.active_at(elapsed) || !route.matches(method, path) {
                continue;
            }
            let mut rng = Rng::keyed(
                self.seed,
                &[fnv1a(b"edge"), fnv1a(rule.name.as_bytes()), key, ordinal],
            );
            if rng.unit() >= rule.rate {
                continue;
            }
            let terminal_taken = decided.outcome.is_some();
            match &rule.action {
                Action::Latency(latency) => {
                    if decided.delay.is_some() {
                        continue;
                    }
                    decided.delay = Some(latency.sample(rng.unit(), rng.unit()));
                }
                Action::SlowBody { bytes_per_second } => {
                    if decided.bytes_per_second.is_some() {
                        continue;
                    }
                    decided.bytes_per_second = Some(*bytes_per_second);
                }
                _ if terminal_taken => continue,
                Action::Error {
                    statuses,
                    message,
                    body,
                } => {
                    let status = pick_status(statuses, &mut rng);
                    let body = body.clone().unwrap_or_else(|| {
                        json!({"error": message.clone().unwrap_or_else(|| format!("mock edge error {status} (injected)"))})
                    });
                    decided.outcome = Some(EdgeFault::Error { status, body });
                }
                Action::RateLimit { limit, retry_after } => {
                    decided.outcome = Some(EdgeFault::RateLimit {
                        limit: limit
                            .or(self.rate_limiter.as_ref().map(|l| l.max()))
                            .unwrap_or(rate_limit::DEFAULT_MAX),
                        window: self
                            .rate_limiter
                            .as_ref()
                            .map_or(rate_limit::DEFAULT_WINDOW, |l| l.window()),
                        retry_after: retry_after.unwrap_or(rate_limit::DEFAULT_WINDOW),
                    });
                }
                Action::Reset => decided.outcome = Some(EdgeFault::Reset),
                Action::Hang { max } => {
                    decided.outcome = Some(EdgeFault::Hang {
                        max: max.unwrap_or(Duration::from_secs(600)),
                    });
                }
                // Provider actions: the parser refuses them on edge rules.
                Action::Timeout | Action::Partial { .. } => continue,
            }
            decided.fired.push((rule.name.clone(), rule.kind()));
        }
        decided
    }

    /// The plan, the epoch and the counters, for `GET /__mock/faults`.
    pub fn snapshot(&self) -> Value {
        let plan = self.plan();
        let elapsed = self.elapsed();
        let frozen = self
            .epoch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .frozen
            .is_some();
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut rules = plan.to_json();
        if let Some(Value::Array(items)) = rules.get_mut("rules") {
            for (item, rule) in items.iter_mut().zip(&plan.rules) {
                item["active"] = json!(rule.active_at(elapsed));
            }
        }
        json!({
            "plan": rules,
            "seed": self.seed,
            "epoch": {"elapsed_ms": elapsed.as_millis() as u64, "frozen": frozen},
            "rate_limit": self.rate_limiter.as_ref().map(|l| json!({"max": l.max(), "window_ms": l.window().as_millis() as u64})),
            "counters": counters.iter().map(|(k, n)| json!({"target": k.target, "rule": k.rule, "kind": k.kind, "injected": n})).collect::<Vec<_>>(),
        })
    }
}

/// A weighted status (weights validated non-zero in sum).
fn pick_status(statuses: &[(u16, u32)], rng: &mut Rng) -> u16 {
    let total: u64 = statuses.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut n = rng.below(total.max(1));
    for (status, weight) in statuses {
        let w = u64::from(*weight);
        if n < w {
            return *status;
        }
        n -= w;
    }
    statuses.first().map_or(500, |(s, _)| *s)
}

/// The simple variables' rules: `MOCK_PROVIDER_ERROR_RATE` (+
/// `MOCK_PROVIDER_ERROR_STATUSES`, e.g. `500:1,502:1,503:2`) and
/// `MOCK_PROVIDER_LATENCY` (e.g. `lognormal:2s,20s`).
pub fn simple_plan(
    error_rate: Option<f64>,
    error_statuses: Option<&str>,
    latency: Option<&str>,
    timeout: Option<&str>,
) -> Result<Plan, (&'static str, String)> {
    let mut plan = Plan::default();
    if let Some(spec) = timeout {
        let d = plan::parse_duration(spec).map_err(|e| ("MOCK_PROVIDER_TIMEOUT", e))?;
        if d.is_zero() {
            return Err(("MOCK_PROVIDER_TIMEOUT", "must be above 0".into()));
        }
        plan.provider_timeout = Some(d);
    }
    if let Some(rate) = error_rate {
        if !(0.0..=1.0).contains(&rate) {
            return Err((
                "MOCK_PROVIDER_ERROR_RATE",
                format!("must be between 0 and 1, got {rate}"),
            ));
        }
        let mut statuses = serde_json::Map::new();
        for part in error_statuses
            .unwrap_or("500")
            .split(',')
            .filter(|p| !p.trim().is_empty())
        {
            let (status, weight) = part.split_once(':').unwrap_or((part, "1"));
            let weight: u64 = weight.trim().parse().map_err(|_| {
                (
                    "MOCK_PROVIDER_ERROR_STATUSES",
                    format!("{part:?} is not STATUS or STATUS:WEIGHT"),
                )
            })?;
            statuses.insert(status.trim().to_string(), json!(weight));
        }
        let rule = json!({"name": "env-provider-error", "target": "provider", "kind": "error",
            "rate": rate, "statuses": statuses});
        let rule = Rule::from_json(&rule, "env-provider-error").map_err(|e| {
            let field = if e.starts_with("statuses") {
                "MOCK_PROVIDER_ERROR_STATUSES"
            } else {
                "MOCK_PROVIDER_ERROR_RATE"
            };
            (field, e)
        })?;
        plan.rules.push(rule);
    } else if error_statuses.is_some() {
        return Err((
            "MOCK_PROVIDER_ERROR_STATUSES",
            "needs MOCK_PROVIDER_ERROR_RATE".into(),
        ));
    }
    if let Some(spec) = latency {
        let latency = Latency::parse_spec(spec).map_err(|e| ("MOCK_PROVIDER_LATENCY", e))?;
        plan.rules.push(Rule {
            name: "env-provider-latency".into(),
            target: Target::Provider(Per::Attempt),
            rate: 1.0,
            from: None,
            until: None,
            action: Action::Latency(latency),
        });
    }
    Ok(plan)
}

/// Reads a plan file (TOML, or JSON when it starts with `{`).
pub fn read_plan(path: &std::path::Path) -> Result<Plan, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Plan::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(plan: &str, seed: u64) -> Faults {
        Faults::new(
            FaultSettings {
                plan: Plan::parse(plan).unwrap(),
                seed,
                seed_given: true,
                ..FaultSettings::default()
            },
            CancellationToken::new(),
        )
    }

    #[test]
    fn provider_decisions_are_pure_in_seed_and_key() {
        let plan = r#"{"rules":[{"name":"e","target":"provider","kind":"error","rate":0.5,"statuses":{"500":1,"503":1}},
            {"name":"l","target":"provider","kind":"latency","latency":"lognormal:1s,10s"}]}"#;
        let a = faults(plan, 1);
        let b = faults(plan, 1);
        let c = faults(plan, 2);
        let mut differ = 0;
        for i in 0..200 {
            let key = format!("k{i}");
            assert_eq!(a.provider_faults(&key, 1, 2), b.provider_faults(&key, 1, 2));
            if a.provider_faults(&key, 1, 2) != c.provider_faults(&key, 1, 2) {
                differ += 1;
            }
        }
        assert!(differ > 100);
    }

    #[test]
    fn first_terminal_wins_and_latency_composes() {
        let f = faults(
            r#"{"rules":[{"name":"t","target":"provider","kind":"timeout"},
              {"name":"e","target":"provider","kind":"error"},
              {"name":"l","target":"provider","kind":"latency","latency":"5ms"}]}"#,
            3,
        );
        let d = f.provider_faults("x", 1, 1);
        assert_eq!(d.outcome, Some(ProviderFault::Timeout));
        assert_eq!(d.latency, Some(Duration::from_millis(5)));
        assert_eq!(d.fired.len(), 2);
    }

    #[test]
    fn partial_needs_two_outputs() {
        let f = faults(
            r#"{"rules":[{"name":"p","target":"provider","kind":"partial"}]}"#,
            3,
        );
        assert_eq!(f.provider_faults("x", 1, 1).outcome, None);
        for n in 2..10 {
            match f.provider_faults("x", 1, n).outcome {
                Some(ProviderFault::Partial { produced }) => assert!((1..n).contains(&produced)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn windows_follow_the_epoch() {
        let f = faults(
            r#"{"rules":[{"name":"w","target":"edge","kind":"reset","from":"2s","until":"4s"}]}"#,
            3,
        );
        for (at, active) in [
            (0, false),
            (1999, false),
            (2000, true),
            (3999, true),
            (4000, false),
        ] {
            f.reset_epoch(Duration::from_millis(at), true);
            let d = f.edge_faults("GET /x", 0, "GET", "/x");
            assert_eq!(d.outcome.is_some(), active, "{at}");
        }
    }

    #[test]
    fn ordinals_count_per_route_and_restart_with_the_epoch() {
        let f = Faults::disabled();
        assert_eq!(f.next_ordinal("GET /a"), 0);
        assert_eq!(f.next_ordinal("GET /a"), 1);
        assert_eq!(f.next_ordinal("GET /b"), 0);
        f.reset_epoch(Duration::ZERO, false);
        assert_eq!(f.next_ordinal("GET /a"), 0);
    }

    #[test]
    fn auto_keys_map_to_their_ordinal() {
        let f = faults(r#"{"rules":[]}"#, 1);
        let f = Faults {
            auto_keys: true,
            ..f
        };
        let key = f.auto_client_key(17).unwrap();
        assert_eq!(f.job_key(&key), "17");
        assert_eq!(f.job_key("auto-17.other"), "auto-17.other");
        assert_eq!(f.job_key("my-key"), "my-key");
    }

    #[test]
    fn simple_variables_make_rules() {
        let plan = simple_plan(
            Some(0.2),
            Some("500:1,503:3"),
            Some("lognormal:2s,20s"),
            Some("30s"),
        )
        .unwrap();
        assert_eq!(plan.rules.len(), 2);
        assert_eq!(plan.provider_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            simple_plan(Some(1.2), None, None, None).unwrap_err().0,
            "MOCK_PROVIDER_ERROR_RATE"
        );
        assert_eq!(
            simple_plan(Some(0.2), Some("5xx"), None, None)
                .unwrap_err()
                .0,
            "MOCK_PROVIDER_ERROR_STATUSES"
        );
        assert_eq!(
            simple_plan(None, None, Some("2 parsecs"), None)
                .unwrap_err()
                .0,
            "MOCK_PROVIDER_LATENCY"
        );
        assert_eq!(
            simple_plan(None, None, None, Some("0s")).unwrap_err().0,
            "MOCK_PROVIDER_TIMEOUT"
        );
    }
}
