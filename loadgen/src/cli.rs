//! Command-line options, with k6's names wherever k6 has one.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use store::seeding::{DEFAULT_EMAIL, DEFAULT_PASSWORD};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "A k6-grade load generator for the Cooly generation test"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the generation test (shared/scenario.md) against API_BASE, or
    /// against an in-process mock with --spawn-mock.
    Run(Box<RunArgs>),
    /// Load one URL in the style of oha, hey and wrk (closed model, or an
    /// open model with -q), with run's summary, outputs and thresholds.
    Http(Box<crate::raw::args::HttpArgs>),
    /// Check the ledger invariants I1-I7 on a database with the Cooly schema.
    Audit(AuditArgs),
    /// Merge the --shard-out files of one test split over execution
    /// segments: summary, thresholds and outputs of the whole.
    Merge(MergeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// API base URL (http:// or https://); several (repeated or
    /// comma-separated): each VU is pinned to one, round-robin.
    #[arg(
        long,
        env = "API_BASE",
        default_value = "http://localhost:5001",
        value_delimiter = ',',
        action = clap::ArgAction::Append
    )]
    pub api_base: Vec<String>,
    /// k6's `-e KEY=VALUE` (repeatable), as the k6 script reads them:
    /// API_BASE, TEST_EMAIL, TEST_PASSWORD, THINK_MIN_S, THINK_MAX_S. Over
    /// the environment; a flag given on the command line wins.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", action = clap::ArgAction::Append)]
    pub env: Vec<String>,
    /// The options given on the command line (not from the environment or
    /// a default), by id; [`parse_from`] fills it.
    #[arg(skip)]
    pub given: Vec<String>,
    /// Test account e-mail.
    #[arg(long, env = "TEST_EMAIL", default_value = DEFAULT_EMAIL)]
    pub email: String,
    /// Test account password.
    #[arg(
        long,
        env = "TEST_PASSWORD",
        default_value = DEFAULT_PASSWORD,
        hide_env_values = true
    )]
    pub password: String,
    /// `email,password` lines (the seed's --users-file); VU n of the whole
    /// test (its global number with a segment) uses account (n-1) mod N.
    #[arg(long)]
    pub users_file: Option<PathBuf>,

    /// Number of VUs (constant-vus with --duration, shared-iterations with --iterations).
    #[arg(long, short = 'u')]
    pub vus: Option<u64>,
    /// Test duration, k6 form: 90s, 1m30s, 2h.
    #[arg(long, short = 'd')]
    pub duration: Option<String>,
    /// Ramping stages `duration:target,...`, e.g. "10s:5,20s:10,30s:10,10s:0".
    #[arg(long = "stages", short = 's', visible_alias = "stage", action = clap::ArgAction::Append)]
    pub stages: Vec<String>,
    /// Total iterations (shared-iterations), or per VU with per-vu-iterations.
    #[arg(long, short = 'i')]
    pub iterations: Option<u64>,
    /// ramping-vus | constant-vus | per-vu-iterations | shared-iterations |
    /// constant-arrival-rate | ramping-arrival-rate.
    #[arg(long)]
    pub executor: Option<String>,
    /// Iterations per --time-unit (arrival-rate executors).
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value = "1s")]
    pub time_unit: String,
    #[arg(long)]
    pub pre_allocated_vus: Option<u64>,
    #[arg(long)]
    pub max_vus: Option<u64>,
    #[arg(long, default_value = "30s")]
    pub graceful_stop: String,
    #[arg(long, default_value = "30s")]
    pub graceful_ramp_down: String,

    /// per-iteration (as the k6 test) or once per VU.
    #[arg(long, default_value = "per-iteration")]
    pub login: String,
    /// `1s..3s` (uniform range), `500ms` (fixed) or `0` (none).
    #[arg(long, default_value = "1s..3s")]
    pub think_time: String,
    #[arg(long, default_value = "/api/auth/login")]
    pub login_path: String,
    #[arg(long, default_value = "/api/images/seedream4/generate")]
    pub generate_path: String,
    #[arg(long, default_value = "seedream-4-0-t2i-250415")]
    pub model: String,
    #[arg(long, default_value_t = 1)]
    pub outputs: u32,
    #[arg(long, default_value = "10s")]
    pub login_timeout: String,
    #[arg(long, default_value = "60s")]
    pub generate_timeout: String,

    #[command(flatten)]
    pub output: OutputArgs,
    /// `NAME=VALUE` (repeatable): a tag on every sample, in the --out streams.
    #[arg(long = "tag", value_name = "NAME=VALUE", action = clap::ArgAction::Append)]
    pub tags: Vec<String>,
    /// Seed for prompts and think times.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print every request and response.
    #[arg(long)]
    pub http_debug: bool,
    /// Accept any TLS certificate (self-signed, expired, another host's).
    #[arg(
        long,
        env = "K6_INSECURE_SKIP_TLS_VERIFY",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure_skip_tls_verify: bool,
    /// Also trust the CA certificate(s) in this PEM file (a private CA).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Threads that run the VUs (default: half the cores, at least one —
    /// the server under test shares this machine, load goes to loopback only).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Source address(es) of the VUs' connections, repeatable or a comma
    /// list (127.0.0.1,127.0.0.2): VU n connects from address n mod N, so
    /// N addresses give N times the ~28k ephemeral ports of one.
    #[arg(long = "local-addr", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub local_addr: Vec<String>,

    /// Follow each accepted generation to completed/failed (generation_e2e).
    /// On by default with --spawn-mock.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub track_sessions: Option<bool>,
    #[arg(long, default_value = "250ms")]
    pub poll_interval: String,
    #[arg(long, default_value = "120s")]
    pub session_deadline: String,

    /// Start mock-api in this process (temp SQLite + embedded queue), seed
    /// it, run the test against it, drain its queue and audit its ledger.
    #[arg(long)]
    pub spawn_mock: bool,
    /// With --spawn-mock: use this database instead of a temp SQLite file.
    #[arg(long)]
    pub mock_database_url: Option<String>,
    /// With --spawn-mock: use the Redis (BullMQ) queue at this URL.
    #[arg(long)]
    pub mock_redis_url: Option<String>,
    /// With --spawn-mock: credits for the test user(s) (default: enough for the plan).
    #[arg(long)]
    pub credits: Option<i32>,
    /// With --spawn-mock: create N accounts, one per VU.
    #[arg(long)]
    pub users: Option<u32>,
    /// With --spawn-mock: how long to wait for the queue to drain.
    #[arg(long, default_value = "60s")]
    pub drain_timeout: String,
    /// With --spawn-mock: the simulated provider's latency range.
    #[arg(long, default_value = "200ms..800ms")]
    pub mock_latency: String,
    /// With --spawn-mock: seed of the mock's random decisions.
    #[arg(long)]
    pub mock_seed: Option<u64>,
    /// With --spawn-mock: a fault plan file (TOML or JSON) for the mock.
    #[arg(long)]
    pub mock_faults: Option<PathBuf>,

    #[command(flatten)]
    pub split: SplitArgs,
    #[command(flatten)]
    pub rest_api: RestApiArgs,
}

/// k6's REST API: inspect, pause, resume, scale or stop a running test.
#[derive(Args, Debug, Clone, Default)]
pub struct RestApiArgs {
    /// Serve k6's REST API (`/v1/status`, `/v1/metrics`) on HOST:PORT, e.g.
    /// 127.0.0.1:6565. No authentication, as k6's: keep it on loopback.
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// Start paused: nothing runs until `PATCH /v1/status {"paused": false}`.
    #[arg(long)]
    pub paused: bool,
}

/// Parses the arguments (the program's name first), noting which `run`
/// options were given on the command line.
pub fn parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Run(args), Some(("run", run))) = (&mut cli.command, matches.subcommand()) {
        args.given = run
            .ids()
            .filter(|id| {
                run.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            })
            .map(|id| id.to_string())
            .collect();
    }
    Ok(cli)
}

#[derive(Args, Debug, Clone)]
pub struct AuditArgs {
    /// sqlite:FILE or postgres://USER@HOST/DB.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Only rows created at or after this RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// text or json.
    #[arg(long, default_value = "text")]
    pub format: String,
}

/// Running one part of a test split over many processes (k6's names).
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitArgs {
    /// This instance's share: `1/3:2/3`, `0.5:0.75`, `50%:75%`; `x` means `0:x`.
    #[arg(long)]
    pub execution_segment: Option<String>,
    /// Every instance's segment, e.g. `0,1/3,2/3,1`.
    #[arg(long)]
    pub execution_segment_sequence: Option<String>,
    /// With --instance-count: run equal segment I of N (default: the
    /// JOB_COMPLETION_INDEX environment variable of a Kubernetes Indexed Job).
    #[arg(long)]
    pub instance_index: Option<u64>,
    /// Split the test into N equal segments (shorthand for the two above).
    #[arg(long)]
    pub instance_count: Option<u64>,
    /// Write this instance's mergeable results to FILE (`loadgen merge`).
    #[arg(long)]
    pub shard_out: Option<PathBuf>,
    /// Start the executor at this RFC 3339 time or unix-ms value (every
    /// instance the same), after setup.
    #[arg(long, env = "START_AT")]
    pub start_at: Option<String>,
    /// With --start-at: how late an instance may still start (default 10s);
    /// later, it exits 114 without running.
    #[arg(long, env = "START_TOLERANCE")]
    pub start_tolerance: Option<String>,
}

/// What a test's results become, the same for `run`, `http` and `merge`:
/// thresholds, the end-of-test summary, `--summary-export`, the `--out`
/// streams and the HTML report. Resolved by
/// [`crate::plan::ResultOutputs::from_args`]; where a subcommand differs
/// (its thresholds' default, its trend columns) it says so with `mut_arg`.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// `metric:expression` (repeatable; replaces the five defaults), e.g.
    /// 'http_req_duration{endpoint:seedream4}:p(95)<500;abortOnFail'.
    #[arg(long = "threshold", action = clap::ArgAction::Append)]
    pub thresholds: Vec<String>,
    #[arg(long)]
    pub no_thresholds: bool,
    /// `json=FILE` or `csv=FILE` (repeatable).
    #[arg(long = "out", short = 'o', action = clap::ArgAction::Append)]
    pub outputs_to: Vec<String>,
    #[arg(long)]
    pub summary_export: Option<PathBuf>,
    /// Trend columns of the summary, k6's list: `avg,min,med,max,p(90),p(95),p(99),count`.
    #[arg(long, default_value = "avg,min,med,max,p(90),p(95)")]
    pub summary_trend_stats: String,
    /// Time values of the summary in this unit: s, ms or us (default: humanized).
    #[arg(long)]
    pub summary_time_unit: Option<String>,
    /// legacy (the classic layout, default), compact or full (k6 1.x's grouped layout).
    #[arg(long, default_value = "legacy")]
    pub summary_mode: String,
    /// No end-of-test summary on stdout (files asked for are still written).
    #[arg(long)]
    pub no_summary: bool,
    /// Self-contained HTML report.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("thresholds", |a| a.help("`metric:expression` (repeatable; replaces the five defaults), as in run")),
    mut_arg("outputs_to", |a| a.help("`json=FILE` or `csv=FILE` (repeatable): every sample of the whole, from the shards' own --out json streams (else json= holds the totals)")),
    mut_arg("report", |a| a.help("Self-contained HTML report of the whole")),
)]
pub struct MergeArgs {
    /// The --shard-out files of every instance.
    #[arg(required = true, num_args = 1..)]
    pub shards: Vec<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}
