//! The simulated image provider of MOCK_API mode (contract §6).
//!
//! A generation takes a uniform random time between `min_ms` and `max_ms`,
//! then yields `outputs` images with placeholder URLs on `mock.invalid`
//! (a reserved name that never resolves) and `storage_provider = 'mock'`.
//!
//! # Reproducibility
//!
//! Every random choice of an attempt is drawn from a generator seeded by
//! (provider seed, job key, attempt) alone — never from a shared
//! generator — so what happens to a job does not depend on how workers
//! were scheduled, and a run with the same seed repeats exactly. The job
//! key is the request's `clientKey` (see [`crate::faults`] for the keys the
//! edge hands out to requests without one). The generator is
//! [`crate::draws`]' keyed SplitMix64 stream.
//!
//! # Fault injection
//!
//! [`Provider::decide`] is a function from a request to a [`Decision`]
//! (how long to take and what to answer), pure in the seed, the job key,
//! the attempt and the fault plan in force (with its windows) when it is
//! called; [`Provider::generate`] only sleeps, counts the injected faults
//! and applies it. The provider rules of the plan ([`crate::faults`]):
//!
//! - `latency`: replaces the uniform `min_ms..max_ms` latency;
//! - `error`: the attempt fails with a status of the rule's mix;
//! - `timeout`: no answer within the provider deadline (`provider_timeout`,
//!   `MOCK_PROVIDER_TIMEOUT`, default 120 s): the attempt fails with 504
//!   after the deadline. Any latency at or above the deadline ends the same way;
//! - `partial`: only k of the n outputs come back. The ledger captures
//!   whole reservations and the audit requires a completed session to hold
//!   exactly `outputs` images (I4), so an incomplete batch is a failed
//!   attempt (502, `partial result: k of n outputs`): retried per the queue
//!   policy and, out of attempts, failed with its credits released —
//!   a partial result charges nothing and stores no image.

use std::sync::Arc;
use std::time::Duration;
use store::db::Id;
use store::ledger::NewImage;

use crate::draws::{fnv1a, Rng};
use crate::faults::{plan, Faults, Kind, ProviderFault};

/// The generation tool recorded on every image.
pub const GENERATION_TOOL: &str = "byteplus-seedream-4";
/// The storage provider recorded on every image.
pub const STORAGE_PROVIDER: &str = "mock";
/// Placeholder images live under this base; `.invalid` never resolves.
pub const URL_BASE: &str = "https://mock.invalid/seedream4";
const DEFAULT_SIDE: i32 = 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct ProviderConfig {
    /// Shortest simulated generation (ms).
    pub min_ms: u64,
    /// Longest simulated generation (ms), at least `min_ms`.
    pub max_ms: u64,
    /// `None`: a random seed, drawn once when the provider is built (see
    /// [`Provider::seed`] to log it and replay the run).
    pub seed: Option<u64>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            min_ms: 3000,
            max_ms: 8000,
            seed: None,
        }
    }
}

impl ProviderConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.min_ms > self.max_ms {
            return Err(format!(
                "the provider's minimum latency ({} ms) is above its maximum ({} ms)",
                self.min_ms, self.max_ms
            ));
        }
        Ok(())
    }
}

/// One attempt at a generation, as a worker or the direct path asks for it.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationRequest {
    pub reservation_id: Id,
    pub session_id: Id,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub prompt: String,
    pub model: String,
    pub outputs: i32,
    /// `WIDTHxHEIGHT` (or `1K`/`2K`/`4K`); `None` means 1024x1024.
    pub size: Option<String>,
    pub client_key: String,
}

/// A failed attempt, as the provider's HTTP answer would report it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("provider answered {status}: {message}")]
pub struct ProviderFailure {
    pub status: u16,
    pub message: String,
}

/// What an attempt will do.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub latency: Duration,
    pub outcome: Planned,
    /// The injected faults, (rule, kind), counted when the attempt runs.
    pub faults: Vec<(String, Kind)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Planned {
    /// Succeed with this many images.
    Images(u32),
    Fail(ProviderFailure),
}

/// The simulated provider. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Provider {
    config: ProviderConfig,
    seed: u64,
    faults: Option<Arc<Faults>>,
}

impl Provider {
    /// A provider; an invalid config (see [`ProviderConfig::validate`]) is
    /// made usable: the latency bounds are swapped. Use
    /// [`Provider::try_new`] to reject it instead.
    pub fn new(mut config: ProviderConfig) -> Provider {
        if config.min_ms > config.max_ms {
            std::mem::swap(&mut config.min_ms, &mut config.max_ms);
        }
        let seed = config.seed.unwrap_or_else(rand::random);
        Provider {
            config,
            seed,
            faults: None,
        }
    }

    /// A provider whose attempts also follow the provider rules of
    /// `faults` (its seed is the provider's).
    pub fn with_faults(config: ProviderConfig, faults: Arc<Faults>) -> Provider {
        let mut provider = Provider::new(config);
        provider.seed = faults.seed();
        provider.faults = Some(faults);
        provider
    }

    pub fn try_new(config: ProviderConfig) -> Result<Provider, String> {
        config.validate()?;
        Ok(Provider::new(config))
    }

    /// The seed every decision derives from (the configured one or the one
    /// drawn at construction).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// What the attempt will do: a pure function of the provider's seed and
    /// config, the fault plan in force, and the request's job key and
    /// attempt.
    pub fn decide(&self, request: &GenerationRequest) -> Decision {
        let key = match &self.faults {
            Some(faults) => faults.job_key(&request.client_key),
            None => request.client_key.as_str(),
        };
        let mut draws = Rng::keyed(
            self.seed,
            &[fnv1a(key.as_bytes()), u64::from(request.attempt)],
        );
        let span = self.config.max_ms - self.config.min_ms;
        let latency_ms = self.config.min_ms + draws.below(span.saturating_add(1));
        let outputs = request.outputs.max(0) as u32;
        let mut outcome = Planned::Images(outputs);
        let mut latency = Duration::from_millis(latency_ms);
        let Some(faults) = &self.faults else {
            return Decision {
                latency,
                outcome,
                faults: Vec::new(),
            };
        };
        let decided = faults.provider_faults(key, request.attempt, outputs);
        if let Some(l) = decided.latency {
            latency = l;
        }
        let deadline = decided.deadline;
        match decided.outcome {
            Some(ProviderFault::Error { status, message }) => {
                outcome = Planned::Fail(ProviderFailure { status, message });
            }
            Some(ProviderFault::Timeout) => latency = deadline,
            Some(ProviderFault::Partial { produced }) => {
                outcome = Planned::Fail(ProviderFailure {
                    status: 502,
                    message: format!("partial result: {produced} of {outputs} outputs (injected)"),
                });
            }
            None => {}
        }
        if latency >= deadline {
            latency = deadline;
            outcome = Planned::Fail(ProviderFailure {
                status: 504,
                message: format!(
                    "mock provider did not answer within {} ms (timeout)",
                    deadline.as_millis()
                ),
            });
        }
        Decision {
            latency,
            outcome,
            faults: decided.fired,
        }
    }

    /// Runs the attempt: waits its latency, then answers its images or its
    /// failure. Injected faults are counted when the attempt starts.
    pub async fn generate(
        &self,
        request: &GenerationRequest,
    ) -> Result<Vec<NewImage>, ProviderFailure> {
        let decision = self.decide(request);
        if let Some(faults) = &self.faults {
            faults.record(plan::PROVIDER, &decision.faults);
        }
        tokio::time::sleep(decision.latency).await;
        match decision.outcome {
            Planned::Images(count) => Ok(images(request, count)),
            Planned::Fail(failure) => Err(failure),
        }
    }
}

/// `count` placeholder images for the request's session.
pub fn images(request: &GenerationRequest, count: u32) -> Vec<NewImage> {
    let (width, height) = dimensions(request.size.as_deref());
    (1..=count)
        .map(|n| NewImage {
            url: format!("{URL_BASE}/{}/{n}.png", request.session_id),
            width,
            height,
            storage_provider: STORAGE_PROVIDER.into(),
            generation_tool: GENERATION_TOOL.into(),
            client_key: Some(request.client_key.clone()),
        })
        .collect()
}

/// `1024x1024`, `2048*1536`, `2K`…; anything else is 1024x1024.
fn dimensions(size: Option<&str>) -> (i32, i32) {
    let default = (DEFAULT_SIDE, DEFAULT_SIDE);
    let Some(size) = size.map(str::trim) else {
        return default;
    };
    match size.to_ascii_uppercase().as_str() {
        "1K" => return (1024, 1024),
        "2K" => return (2048, 2048),
        "4K" => return (4096, 4096),
        _ => {}
    }
    let Some((w, h)) = size.split_once(['x', 'X', '*']) else {
        return default;
    };
    match (w.trim().parse::<i32>(), h.trim().parse::<i32>()) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(min_ms: u64, max_ms: u64, seed: u64) -> ProviderConfig {
        ProviderConfig {
            min_ms,
            max_ms,
            seed: Some(seed),
        }
    }

    /// A provider whose attempts fail with a 500 at `rate`, by a plan rule.
    fn failing(rate: f64, seed: u64) -> Provider {
        let plan = crate::faults::Plan::parse(&format!(
            r#"{{"rules":[{{"name":"fail","target":"provider","kind":"error","rate":{rate},"status":500}}]}}"#
        ))
        .unwrap();
        let settings = crate::faults::FaultSettings {
            plan,
            seed,
            seed_given: true,
            ..Default::default()
        };
        let faults = Faults::new(settings, tokio_util::sync::CancellationToken::new());
        Provider::with_faults(config(0, 0, seed), Arc::new(faults))
    }

    /// A request whose job key (its client key) is the reservation id.
    fn request(reservation_id: Id, attempt: u32) -> GenerationRequest {
        GenerationRequest {
            reservation_id,
            session_id: Id::random(),
            attempt,
            prompt: "a cat".into(),
            model: "seedream-4-0-250828".into(),
            outputs: 2,
            size: None,
            client_key: reservation_id.to_string(),
        }
    }

    #[test]
    fn same_seed_and_key_decide_the_same() {
        let a = Provider::new(config(100, 5000, 42));
        let b = Provider::new(config(100, 5000, 42));
        for _ in 0..50 {
            let r = request(Id::random(), 1);
            assert_eq!(a.decide(&r), b.decide(&r));
            // The session, prompt… do not matter; only the key does.
            let mut other = request(r.reservation_id, 1);
            other.prompt = "a dog".into();
            assert_eq!(a.decide(&r), a.decide(&other));
        }
    }

    #[test]
    fn the_seed_and_the_attempt_change_the_decision() {
        let a = Provider::new(config(0, 1_000_000, 1));
        let b = Provider::new(config(0, 1_000_000, 2));
        let r = request(Id::random(), 1);
        assert_ne!(a.decide(&r).latency, b.decide(&r).latency);
        assert_ne!(
            a.decide(&r).latency,
            a.decide(&request(r.reservation_id, 2)).latency
        );
    }

    #[test]
    fn a_random_seed_is_drawn_once() {
        let p = Provider::new(ProviderConfig::default());
        let r = request(Id::random(), 1);
        assert_eq!(p.decide(&r), p.decide(&r));
        let replay = Provider::new(ProviderConfig {
            seed: Some(p.seed()),
            ..ProviderConfig::default()
        });
        assert_eq!(p.decide(&r), replay.decide(&r));
    }

    #[test]
    fn latency_stays_within_bounds_and_spreads() {
        let p = Provider::new(config(3000, 8000, 7));
        let latencies: Vec<u128> = (0..2000)
            .map(|_| p.decide(&request(Id::random(), 1)).latency.as_millis())
            .collect();
        assert!(latencies.iter().all(|ms| (3000..=8000).contains(ms)));
        assert!(latencies.iter().any(|&ms| ms < 3500));
        assert!(latencies.iter().any(|&ms| ms > 7500));
    }

    #[test]
    fn equal_bounds_give_that_latency() {
        let p = Provider::new(config(250, 250, 3));
        for _ in 0..20 {
            assert_eq!(
                p.decide(&request(Id::random(), 1)).latency,
                Duration::from_millis(250)
            );
        }
        let zero = Provider::new(config(0, 0, 3));
        assert_eq!(
            zero.decide(&request(Id::random(), 1)).latency,
            Duration::ZERO
        );
    }

    #[test]
    fn validate_rejects_inverted_bounds() {
        assert!(config(10, 5, 0).validate().is_err());
        assert!(config(5, 5, 0).validate().is_ok());
        assert!(ProviderConfig::default().validate().is_ok());
        assert!(Provider::try_new(config(10, 5, 0)).is_err());
        // `new` still makes something usable of it.
        let swapped = Provider::new(config(10, 5, 0));
        let ms = swapped
            .decide(&request(Id::random(), 1))
            .latency
            .as_millis();
        assert!((5..=10).contains(&ms));
    }

    #[test]
    fn error_rate_zero_never_fails_and_one_always_fails() {
        let never = failing(0.0, 9);
        let always = failing(1.0, 9);
        for attempt in 1..=5 {
            let r = request(Id::random(), attempt);
            assert_eq!(never.decide(&r).outcome, Planned::Images(2));
            assert!(matches!(
                always.decide(&r).outcome,
                Planned::Fail(ProviderFailure { status: 500, .. })
            ));
        }
    }

    #[test]
    fn an_error_rate_fails_about_that_share() {
        let p = failing(0.3, 11);
        let failed = (0..10_000)
            .filter(|_| {
                matches!(
                    p.decide(&request(Id::random(), 1)).outcome,
                    Planned::Fail(_)
                )
            })
            .count();
        crate::testing::assert_binomial("failed attempts", failed as u64, 10_000, 0.3);
    }

    #[tokio::test]
    async fn generate_makes_placeholder_images() {
        let p = Provider::new(config(1, 5, 5));
        let mut r = request(Id::random(), 1);
        r.outputs = 3;
        r.size = Some("2048x1536".into());
        let images = p.generate(&r).await.unwrap();
        assert_eq!(images.len(), 3);
        for (n, image) in images.iter().enumerate() {
            assert_eq!(
                image.url,
                format!(
                    "https://mock.invalid/seedream4/{}/{}.png",
                    r.session_id,
                    n + 1
                )
            );
            assert_eq!((image.width, image.height), (2048, 1536));
            assert_eq!(image.storage_provider, "mock");
            assert_eq!(image.generation_tool, "byteplus-seedream-4");
            assert_eq!(image.client_key.as_deref(), Some(r.client_key.as_str()));
        }
    }

    #[tokio::test]
    async fn generate_reports_a_planned_failure() {
        let p = failing(1.0, 5);
        let err = p.generate(&request(Id::random(), 1)).await.unwrap_err();
        assert_eq!(err.status, 500);
    }

    #[test]
    fn sizes_parse_or_default() {
        assert_eq!(dimensions(None), (1024, 1024));
        assert_eq!(dimensions(Some("1024x1024")), (1024, 1024));
        assert_eq!(dimensions(Some("2048*1152")), (2048, 1152));
        assert_eq!(dimensions(Some("2K")), (2048, 2048));
        assert_eq!(dimensions(Some("square")), (1024, 1024));
        assert_eq!(dimensions(Some("0x10")), (1024, 1024));
    }
}
