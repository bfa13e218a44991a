//! The server's configuration: flags with environment fallbacks, named as
//! the real backend names its environment variables wherever it has one, so
//! a `.env` written for the real backend configures the mock too.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use store::db::{redact_url, DEFAULT_DATABASE_URL};
use store::group_commit::GroupCommitConfig;

use crate::faults::FaultSettings;
use crate::http::Settings as HttpSettings;
use crate::jobs::JobsConfig;
use crate::provider::ProviderConfig;

#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Address to listen on. Loopback by default; `PORT` alone changes only the port.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:5001")]
    pub bind: SocketAddr,
    /// Overrides the port of --bind (the real backend reads PORT).
    #[arg(long, env = "PORT")]
    pub port: Option<u16>,
    /// sqlite:FILE (created on first use) or postgres://USER:PASSWORD@HOST/DB.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// Redis for the queue (BullMQ layout); the embedded queue when unset.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// BullMQ queue name: keys are bull:<QUEUE_NAME>:*. The real backend uses cooly-generation.
    #[arg(long, env = "QUEUE_NAME", default_value = "main")]
    pub queue_name: String,
    /// HS256 secret for login tokens; random per process when unset.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Admin login e-mail; no admin login at all unless both admin variables are set.
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Admin login password.
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Do not create the test user on a first start with an empty users table.
    #[arg(long)]
    pub no_seed: bool,
    /// bcrypt cost of passwords set by register and the first-start seed.
    #[arg(long, env = "BCRYPT_COST", default_value_t = store::users::DEFAULT_BCRYPT_COST)]
    pub bcrypt_cost: u32,
    /// Serve a repeated login with an already verified password from a cache of keyed digests
    /// (false: every login pays bcrypt, as the real backend).
    #[arg(long, env = "LOGIN_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub login_cache: bool,
    /// Credits per generated image.
    #[arg(long, env = "CREDIT_COST_PER_OUTPUT", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub credit_cost_per_output: i32,
    /// Largest `outputs` a generate request may ask for.
    #[arg(long, env = "MAX_OUTPUTS", default_value_t = 15, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub max_outputs: i32,
    /// Seconds a reservation holds credits before the sweeper expires it.
    #[arg(long, env = "RESERVATION_TTL_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub reservation_ttl_seconds: u64,
    /// Answer generate with 202 and finish it in a queue worker (true), or
    /// run the provider in the request's background and answer 200 (false).
    #[arg(long, env = "ENABLE_ENQUEUE_FIRST", default_value_t = true, action = clap::ArgAction::Set)]
    pub enqueue_first: bool,
    /// Generation workers.
    #[arg(long, env = "GEN_WORKER_CONCURRENCY", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub worker_concurrency: u16,
    /// How often the relay looks for undispatched outbox rows (it is also woken by each 202).
    #[arg(long, env = "OUTBOX_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub outbox_poll_ms: u64,
    /// How often generations still processing whose job the queue lost are queued again.
    #[arg(long, env = "RECONCILE_EVERY_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..))]
    pub reconcile_every_ms: u64,
    /// Redis queue: how long a job's lock outlives its holder (BullMQ's lockDuration), renewed every third of it; a killed worker's jobs return after it.
    #[arg(long, env = "QUEUE_LOCK_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(30..))]
    pub queue_lock_ms: u64,
    /// While the Redis queue is known down, still answer generate 202 and keep the job in the
    /// outbox (false: 503 "queue temporarily unavailable, please retry", the contract's answer).
    #[arg(long, env = "ACCEPT_WHILE_QUEUE_DOWN", default_value_t = false, action = clap::ArgAction::Set)]
    pub accept_while_queue_down: bool,
    /// Outbox rows dispatched per poll.
    #[arg(long, env = "OUTBOX_BATCH", default_value_t = 25, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub outbox_batch: i64,
    /// Group commit: the most generate requests (or worker outcomes) one
    /// write transaction decides.
    #[arg(long, env = "GENERATE_BATCH_MAX", default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub generate_batch_max: u16,
    /// Group commit: committer tasks on PostgreSQL (a user's requests
    /// always share one); SQLite always has one.
    #[arg(long, env = "GENERATE_COMMITTERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub generate_committers: u16,
    /// Simulate the provider (the only mode: the mock never calls a real provider).
    #[arg(long, env = "MOCK_API", default_value_t = true, action = clap::ArgAction::Set)]
    pub mock_api: bool,
    /// The real backend's per-provider switch; either switch enables the simulator.
    #[arg(long, env = "MOCK_SEEDREAM4", action = clap::ArgAction::Set)]
    pub mock_seedream4: Option<bool>,
    /// Shortest simulated provider latency.
    #[arg(long, env = "SEEDREAM4_MOCK_MIN_MS", default_value_t = 3000)]
    pub mock_min_ms: u64,
    /// Longest simulated provider latency.
    #[arg(long, env = "SEEDREAM4_MOCK_MAX_MS", default_value_t = 8000)]
    pub mock_max_ms: u64,
    /// Seed for every random decision of the simulator (random when unset).
    #[arg(long, env = "MOCK_SEED")]
    pub mock_seed: Option<u64>,
    /// How long running jobs may take to finish at shutdown before they go back to the queue.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Fault plan file (TOML, or JSON when it starts with `{`); see "Reproducing failure modes".
    #[arg(long = "faults", env = "MOCK_FAULTS")]
    pub faults: Option<std::path::PathBuf>,
    /// Share (0..=1) of provider attempts that fail (a provider rule added to the plan).
    #[arg(long, env = "MOCK_PROVIDER_ERROR_RATE")]
    pub provider_error_rate: Option<f64>,
    /// Statuses of those failures and their weights: `500:1,502:1,503:2` (default 500).
    #[arg(long, env = "MOCK_PROVIDER_ERROR_STATUSES")]
    pub provider_error_statuses: Option<String>,
    /// Provider latency instead of the MIN_MS..MAX_MS range: `2s`, `1s..3s`, `normal:2s,500ms`, `lognormal:2s,20s` (p50,p99).
    #[arg(long, env = "MOCK_PROVIDER_LATENCY")]
    pub provider_latency: Option<String>,
    /// How long a provider call may take before it fails with 504 (default 120s).
    #[arg(long, env = "MOCK_PROVIDER_TIMEOUT")]
    pub provider_timeout: Option<String>,
    /// Token of the runtime control API (/__mock/*); the API is off when unset.
    #[arg(long, env = "MOCK_ADMIN_TOKEN", hide_env_values = true)]
    pub mock_admin_token: Option<String>,
    /// The real backend's rate limit: requests per window and IP on /api/* (off when unset).
    #[arg(long, env = "RATE_LIMIT_MAX", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_max: Option<u32>,
    /// The rate limit's window.
    #[arg(long, env = "RATE_LIMIT_WINDOW_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate_limit_window_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// A [`Config`] resolved and validated once, the fault plan read: what
/// [`crate::server::run`] starts from.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub queue_name: String,
    /// How long a Redis job's lock outlives its holder (`QUEUE_LOCK_MS`).
    pub queue_lock: Duration,
    /// Create the test user on a first start with an empty users table.
    pub seed_test_user: bool,
    pub bcrypt_cost: u32,
    pub jwt_secret: Option<String>,
    /// Admin login e-mail and password, when both are set.
    pub admin: Option<(String, String)>,
    pub provider: ProviderConfig,
    pub jobs: JobsConfig,
    pub group_commit: GroupCommitConfig,
    pub faults: FaultSettings,
    pub http: HttpSettings,
}

/// A configuration the server refuses to start with.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {why}")]
pub struct ConfigError {
    pub field: &'static str,
    pub why: String,
}

impl Config {
    /// The defaults, as if no flag and no variable were given: for a mock
    /// embedded in another process (`loadgen --spawn-mock`, tests), whose
    /// environment may be meant for a real backend.
    pub fn defaults() -> Config {
        use clap::{Args as _, FromArgMatches};
        let command =
            Config::augment_args(clap::Command::new("mock-api")).mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["mock-api"]);
        Config::from_arg_matches(&matches).expect("the defaults are valid")
    }

    pub fn listen_addr(&self) -> SocketAddr {
        let mut addr = self.bind;
        if let Some(port) = self.port {
            addr.set_port(port);
        }
        addr
    }

    /// Checks every setting and reads the fault plan: the settings the
    /// server starts from, or the first setting it refuses.
    pub fn resolve(&self) -> Result<ServerSettings, ConfigError> {
        let simulated = self.mock_api || self.mock_seedream4 == Some(true);
        if !simulated {
            return Err(ConfigError {
                field: "MOCK_API",
                why: "the mock has no real provider; MOCK_API must stay true".into(),
            });
        }
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(ConfigError {
                field: "BCRYPT_COST",
                why: format!("{} is outside bcrypt's 4..=31", self.bcrypt_cost),
            });
        }
        let provider = self.provider_config();
        provider.validate().map_err(|why| ConfigError {
            field: "SEEDREAM4_MOCK_MIN_MS/SEEDREAM4_MOCK_MAX_MS",
            why,
        })?;
        if self.admin_email.is_some() != self.admin_password.is_some() {
            return Err(ConfigError {
                field: "ADMIN_EMAIL/ADMIN_PASSWORD",
                why: "set both or neither".into(),
            });
        }
        let faults = self.fault_settings()?;
        if self.queue_name.is_empty() || self.queue_name.contains(':') {
            return Err(ConfigError {
                field: "QUEUE_NAME",
                why: format!("{:?} must be non-empty and contain no ':'", self.queue_name),
            });
        }
        Ok(ServerSettings {
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            queue_name: self.queue_name.clone(),
            queue_lock: Duration::from_millis(self.queue_lock_ms),
            seed_test_user: !self.no_seed,
            bcrypt_cost: self.bcrypt_cost,
            jwt_secret: self.jwt_secret.clone(),
            admin: self.admin_email.clone().zip(self.admin_password.clone()),
            provider,
            jobs: self.jobs_config(),
            group_commit: self.group_commit_config(),
            faults,
            http: HttpSettings {
                credit_cost_per_output: self.credit_cost_per_output,
                max_outputs: self.max_outputs,
                reservation_ttl: self.reservation_ttl(),
                enqueue_first: self.enqueue_first,
                bcrypt_cost: self.bcrypt_cost,
                login_cache: self.login_cache,
                accept_while_queue_down: self.accept_while_queue_down,
            },
        })
    }

    /// [`Config::resolve`] without keeping the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(drop)
    }

    fn reservation_ttl(&self) -> Duration {
        Duration::from_secs(self.reservation_ttl_seconds)
    }

    fn provider_config(&self) -> ProviderConfig {
        ProviderConfig {
            min_ms: self.mock_min_ms,
            max_ms: self.mock_max_ms,
            seed: self.mock_seed,
        }
    }

    fn group_commit_config(&self) -> GroupCommitConfig {
        GroupCommitConfig {
            max_batch: usize::from(self.generate_batch_max),
            committers: usize::from(self.generate_committers),
        }
    }

    fn jobs_config(&self) -> JobsConfig {
        JobsConfig {
            concurrency: usize::from(self.worker_concurrency),
            outbox_poll: Duration::from_millis(self.outbox_poll_ms),
            outbox_batch: self.outbox_batch,
            grace: Duration::from_millis(self.shutdown_grace_ms),
            reconcile_every: Duration::from_millis(self.reconcile_every_ms),
            group_commit: self.group_commit_config(),
            ..JobsConfig::default()
        }
    }

    /// The fault plan (file, then the simple variables), the control API
    /// and the rate limiter. Reads the plan file.
    fn fault_settings(&self) -> Result<crate::faults::FaultSettings, ConfigError> {
        let mut plan = match &self.faults {
            Some(path) => crate::faults::read_plan(path).map_err(|why| ConfigError {
                field: "MOCK_FAULTS",
                why,
            })?,
            None => crate::faults::Plan::default(),
        };
        let simple = crate::faults::simple_plan(
            self.provider_error_rate,
            self.provider_error_statuses.as_deref(),
            self.provider_latency.as_deref(),
            self.provider_timeout.as_deref(),
        )
        .map_err(|(field, why)| ConfigError { field, why })?;
        plan = plan.merge(simple).map_err(|why| ConfigError {
            field: "MOCK_FAULTS",
            why,
        })?;
        if self.mock_admin_token.as_deref() == Some("") {
            return Err(ConfigError {
                field: "MOCK_ADMIN_TOKEN",
                why: "is empty; unset it to turn the control API off".into(),
            });
        }
        Ok(crate::faults::FaultSettings {
            plan,
            plan_file: self.faults.clone(),
            admin_token: self.mock_admin_token.clone(),
            rate_limit_max: self.rate_limit_max,
            rate_limit_window: Duration::from_millis(self.rate_limit_window_ms),
            seed: self.mock_seed.unwrap_or_else(rand::random),
            seed_given: self.mock_seed.is_some(),
        })
    }

    /// One line per setting for the start-up log, secrets masked.
    pub fn describe(&self) -> String {
        let masked = |set: bool| if set { "(set)" } else { "(unset)" };
        format!(
            "listen={} database={} queue={} queue_name={} jwt_secret={} admin={} seed_on_first_start={} \
             enqueue_first={} workers={} outbox_poll_ms={} outbox_batch={} reconcile_every_ms={} queue_lock_ms={} accept_while_queue_down={} cost_per_output={} max_outputs={} \
             reservation_ttl_s={} provider_latency_ms={}..{} mock_seed={} bcrypt_cost={} login_cache={} shutdown_grace_ms={} \
             faults={} provider_error_rate={} provider_error_statuses={} provider_latency={} provider_timeout={} \
             control_api={} rate_limit={}",
            self.listen_addr(),
            redact_url(&self.database_url),
            if self.redis_url.is_some() { "redis" } else { "embedded" },
            self.queue_name,
            masked(self.jwt_secret.is_some()),
            self.admin_email.as_deref().unwrap_or("(disabled)"),
            !self.no_seed,
            self.enqueue_first,
            self.worker_concurrency,
            self.outbox_poll_ms,
            self.outbox_batch,
            self.reconcile_every_ms,
            self.queue_lock_ms,
            self.accept_while_queue_down,
            self.credit_cost_per_output,
            self.max_outputs,
            self.reservation_ttl_seconds,
            self.mock_min_ms,
            self.mock_max_ms,
            self.mock_seed.map_or("(random)".to_string(), |s| s.to_string()),
            self.bcrypt_cost,
            self.login_cache,
            self.shutdown_grace_ms,
            self.faults
                .as_ref()
                .map_or("(none)".to_string(), |p| p.display().to_string()),
            self.provider_error_rate
                .map_or("(none)".to_string(), |r| r.to_string()),
            self.provider_error_statuses.as_deref().unwrap_or("(default)"),
            self.provider_latency.as_deref().unwrap_or("(min..max)"),
            self.provider_timeout.as_deref().unwrap_or("(default 120s)"),
            if self.mock_admin_token.is_some() {
                "on, token (set)"
            } else {
                "off"
            },
            self.rate_limit_max.map_or("off".to_string(), |m| format!(
                "{m}/{}ms",
                self.rate_limit_window_ms
            )),
        )
    }
}
