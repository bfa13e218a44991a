//! The resolved run: options validated and turned into an executor, a
//! scenario configuration, thresholds and outputs. Every invalid option is
//! one error naming the option and why (exit 104).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{OutputArgs, RunArgs, SplitArgs};
use crate::executor::{Executor, Stage};
use crate::exit::Failure;
use crate::http::tls::TlsOptions;
use crate::metrics::{definition, SubMetric};
use crate::output::summary::{SummaryMode, SummaryStyle, TimeUnit, TrendStat};
use crate::scenario::{LoginMode, ScenarioConfig, Tracking};
use crate::segment::{Segment, Sequence, Tuple};
use crate::start::StartAt;
use crate::thresholds::{self, ThresholdSpec};
use k6_duration as duration;

#[derive(Debug, thiserror::Error)]
#[error("invalid --{option}: {why}")]
pub struct PlanError {
    pub option: &'static str,
    pub why: String,
}

impl PlanError {
    pub fn new(option: &'static str, why: impl Into<String>) -> PlanError {
        PlanError {
            option,
            why: why.into(),
        }
    }
}

fn bad(option: &'static str, why: impl Into<String>) -> PlanError {
    PlanError::new(option, why)
}

#[derive(Clone, Debug, PartialEq)]
pub enum OutputTarget {
    Json(PathBuf),
    Csv(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Plan {
    /// Every target, comma-separated as given; see [`Plan::targets`].
    pub api_base: String,
    pub executor: Executor,
    pub accounts: Vec<(String, String)>,
    pub scenario: ScenarioConfig,
    /// Thresholds, summary, `--summary-export`, `--out` and `--report`.
    pub output: Outputs,
    pub seed: Option<u64>,
    pub quiet: bool,
    /// `--tag NAME=VALUE`: on every sample the streaming outputs write.
    pub tags: Vec<(&'static str, String)>,
    pub http_debug: bool,
    pub threads: usize,
    /// `--local-addr`: the VUs' source addresses, dealt round-robin.
    pub local_addrs: Vec<IpAddr>,
    /// `--insecure-skip-tls-verify` and `--tls-ca`'s certificates.
    pub tls: TlsOptions,
    /// This instance's execution segment (the whole test by default).
    pub segment: Tuple,
    /// `--shard-out`: where this instance's mergeable results go.
    pub shard_out: Option<PathBuf>,
    /// With `--shard-out`: the thresholds of the test even under
    /// `--no-thresholds` (the shard records their sub-metrics and names
    /// them, so that `loadgen merge` evaluates them on the whole).
    pub shard_thresholds: Vec<ThresholdSpec>,
    /// `--start-at` and `--start-tolerance`.
    pub start_at: Option<StartAt>,
    /// `--address`: where k6's REST API listens.
    pub address: Option<std::net::SocketAddr>,
    /// `--paused`.
    pub paused: bool,
}

/// `--local-addr`: IP addresses this machine has (a bind to port 0
/// succeeds), so a typo fails here and not on every connection.
fn local_addrs_of(texts: &[String]) -> Result<Vec<IpAddr>, PlanError> {
    texts
        .iter()
        .map(|text| {
            let addr: IpAddr = text
                .trim()
                .parse()
                .map_err(|_| bad("local-addr", format!("{text:?} is not an IP address")))?;
            std::net::UdpSocket::bind((addr, 0)).map_err(|e| {
                bad(
                    "local-addr",
                    format!("{addr} is not an address of this machine ({e})"),
                )
            })?;
            Ok(addr)
        })
        .collect()
}

/// The test of shared/scenario.md: 10 s → 5, 20 s → 10, 30 s at 10, 10 s → 0.
pub const DEFAULT_STAGES: &str = "10s:5,20s:10,30s:10,10s:0";

pub fn parse_duration(option: &'static str, text: &str) -> Result<Duration, PlanError> {
    duration::parse(text.trim()).ok_or_else(|| {
        bad(
            option,
            format!("{text:?} is not a duration like 90s, 1m30s, 500ms"),
        )
    })
}

pub fn parse_stages(text: &str) -> Result<Vec<Stage>, PlanError> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|stage| {
            let (d, target) = stage
                .split_once(':')
                .ok_or_else(|| bad("stages", format!("{stage:?} is not duration:target")))?;
            Ok(Stage {
                duration: parse_duration("stages", d)?,
                target: target
                    .trim()
                    .parse()
                    .map_err(|_| bad("stages", format!("target {target:?} is not a VU count")))?,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|stages| {
            if stages.is_empty() {
                Err(bad("stages", "no stage given"))
            } else {
                Ok(stages)
            }
        })
}

/// A range `1s..3s`, or one duration `500ms` / `0` (min = max).
pub fn parse_duration_range(
    option: &'static str,
    text: &str,
) -> Result<(Duration, Duration), PlanError> {
    match text.split_once("..") {
        Some((min, max)) => {
            let (min, max) = (parse_duration(option, min)?, parse_duration(option, max)?);
            if min > max {
                return Err(bad(
                    option,
                    format!("{text:?}: the minimum is above the maximum"),
                ));
            }
            Ok((min, max))
        }
        None => {
            let fixed = parse_duration(option, text)?;
            Ok((fixed, fixed))
        }
    }
}

fn read_accounts(path: &Path) -> Result<Vec<(String, String)>, PlanError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("users-file", format!("{}: {e}", path.display())))?;
    let accounts: Vec<(String, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && *l != "email,password")
        .map(|line| {
            line.split_once(',')
                .map(|(e, p)| (e.trim().to_string(), p.trim().to_string()))
                .ok_or_else(|| bad("users-file", format!("line {line:?} is not email,password")))
        })
        .collect::<Result<_, _>>()?;
    if accounts.is_empty() {
        return Err(bad(
            "users-file",
            format!("{} has no accounts", path.display()),
        ));
    }
    Ok(accounts)
}

fn positive(option: &'static str, value: Option<u64>) -> Result<Option<u64>, PlanError> {
    match value {
        Some(0) => Err(bad(option, "must be at least 1")),
        other => Ok(other),
    }
}

fn executor(args: &RunArgs) -> Result<Executor, PlanError> {
    let graceful_stop = parse_duration("graceful-stop", &args.graceful_stop)?;
    let graceful_ramp_down = parse_duration("graceful-ramp-down", &args.graceful_ramp_down)?;
    let vus = positive("vus", args.vus)?;
    let iterations = positive("iterations", args.iterations)?;
    let duration = args
        .duration
        .as_deref()
        .map(|d| parse_duration("duration", d))
        .transpose()?;
    let stages = if args.stages.is_empty() {
        None
    } else {
        Some(parse_stages(&args.stages.join(","))?)
    };
    let time_unit = parse_duration("time-unit", &args.time_unit)?;
    if time_unit.is_zero() {
        return Err(bad("time-unit", "must be longer than 0"));
    }
    let max_duration = duration.unwrap_or(Duration::from_secs(600));
    let name = match &args.executor {
        Some(name) => name.as_str(),
        None if stages.is_some() => "ramping-vus",
        None if iterations.is_some() => "shared-iterations",
        None if duration.is_some() => "constant-vus",
        None if vus.is_some() => {
            return Err(bad("vus", "needs --duration, --iterations or --stages"))
        }
        None => "ramping-vus",
    };
    let arrival_vus = |rate_per_sec: f64| -> Result<(u64, u64), PlanError> {
        let pre = positive("pre-allocated-vus", args.pre_allocated_vus)?
            .or(vus)
            .unwrap_or_else(|| (rate_per_sec.ceil() as u64).max(1));
        let max = positive("max-vus", args.max_vus)?
            .unwrap_or(pre.max(1) * 10)
            .max(pre);
        Ok((pre, max))
    };
    Ok(match name {
        "ramping-vus" => Executor::RampingVus {
            start_vus: vus.unwrap_or(if stages.is_some() { 1 } else { 0 }),
            stages: match stages {
                Some(s) => s,
                None => parse_stages(DEFAULT_STAGES)?,
            },
            graceful_ramp_down,
            graceful_stop,
        },
        "constant-vus" => Executor::ConstantVus {
            vus: vus.unwrap_or(1),
            duration: duration.ok_or_else(|| bad("duration", "constant-vus needs --duration"))?,
            graceful_stop,
        },
        "per-vu-iterations" => Executor::PerVuIterations {
            vus: vus.unwrap_or(1),
            iterations: iterations.unwrap_or(1),
            max_duration,
            graceful_stop,
        },
        "shared-iterations" => Executor::SharedIterations {
            vus: vus.unwrap_or(1),
            iterations: iterations.unwrap_or(1),
            max_duration,
            graceful_stop,
        },
        "constant-arrival-rate" => {
            let rate = args
                .rate
                .filter(|r| *r > 0.0 && r.is_finite())
                .ok_or_else(|| bad("rate", "constant-arrival-rate needs a positive --rate"))?;
            let (pre_allocated_vus, max_vus) = arrival_vus(rate / time_unit.as_secs_f64())?;
            Executor::ConstantArrivalRate {
                rate,
                time_unit,
                duration: duration.ok_or_else(|| bad("duration", "constant-arrival-rate needs --duration"))?,
                pre_allocated_vus,
                max_vus,
                graceful_stop,
            }
        }
        "ramping-arrival-rate" => {
            let stages = stages.ok_or_else(|| bad("stages", "ramping-arrival-rate needs --stages (duration:rate)"))?;
            let peak = stages.iter().map(|s| s.target).max().unwrap_or(1) as f64;
            let (pre_allocated_vus, max_vus) = arrival_vus(peak / time_unit.as_secs_f64())?;
            Executor::RampingArrivalRate {
                start_rate: args.rate.unwrap_or(0.0),
                time_unit,
                stages,
                pre_allocated_vus,
                max_vus,
                graceful_stop,
            }
        }
        "externally-controlled" => {
            let vus = vus.unwrap_or(1);
            Executor::ExternallyControlled {
                vus,
                max_vus: args.max_vus.unwrap_or(vus).max(vus),
                duration: duration.ok_or_else(|| bad("duration", "externally-controlled needs --duration (0: until stopped)"))?,
            }
        }
        other => {
            return Err(bad(
                "executor",
                format!("unknown executor {other:?} (ramping-vus, constant-vus, per-vu-iterations, shared-iterations, constant-arrival-rate, ramping-arrival-rate, externally-controlled)"),
            ))
        }
    })
}

/// Half the cores: the server under test runs on this machine too (load
/// goes to loopback only), and a second VU thread on a 2-core machine cost
/// a quarter more CPU per request in wake-ups without adding throughput.
pub fn default_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// The thresholds of a subcommand given no `--threshold`.
#[derive(Clone, Copy, Debug)]
pub enum DefaultThresholds<'a> {
    /// `loadgen run`: the five of the k6 test.
    TheTest,
    /// `loadgen http`: none.
    None,
    /// `loadgen merge`: the ones the shards name (the test's when empty).
    Named(&'a [String]),
}

/// What a test's results become ([`OutputArgs`] resolved), the same for
/// `run`, `http` and `merge`.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub thresholds: Vec<ThresholdSpec>,
    /// `--out`: the streams of every sample.
    pub streams: Vec<OutputTarget>,
    pub summary_export: Option<PathBuf>,
    /// `--summary-trend-stats`: the trends' stats in the summary and, as k6
    /// writes them, in the summary export.
    pub trend_stats: Vec<TrendStat>,
    pub report: Option<PathBuf>,
    /// The end-of-test summary's style; none with `--no-summary`.
    pub summary: Option<SummaryStyle>,
}

impl Outputs {
    pub fn from_args(args: &OutputArgs, defaults: DefaultThresholds) -> Result<Outputs, PlanError> {
        let thresholds = match defaults {
            _ if !args.thresholds.is_empty() => {
                threshold_specs(args.no_thresholds, &args.thresholds)?
            }
            DefaultThresholds::TheTest => threshold_specs(args.no_thresholds, &[])?,
            DefaultThresholds::None => Vec::new(),
            DefaultThresholds::Named(texts) => threshold_specs(args.no_thresholds, texts)?,
        };
        let trend_stats = TrendStat::parse_list(&args.summary_trend_stats)
            .map_err(|why| bad("summary-trend-stats", why))?;
        let style = SummaryStyle {
            mode: SummaryMode::parse(&args.summary_mode).map_err(|why| bad("summary-mode", why))?,
            trend_stats: trend_stats.clone(),
            time_unit: args
                .summary_time_unit
                .as_deref()
                .map(TimeUnit::parse)
                .transpose()
                .map_err(|why| bad("summary-time-unit", why))?,
            // As k6: no ANSI codes into a file or a pipe.
            color: !args.no_color
                && std::env::var_os("NO_COLOR").is_none()
                && std::io::stdout().is_terminal(),
        };
        Ok(Outputs {
            thresholds,
            streams: output_targets(&args.outputs_to)?,
            summary_export: args.summary_export.clone(),
            trend_stats,
            report: args.report.clone(),
            summary: (!args.no_summary).then_some(style),
        })
    }
}

/// `--threshold` texts (or the defaults, or none with `--no-thresholds`)
/// parsed and checked against the test's metrics.
pub fn threshold_specs(
    no_thresholds: bool,
    texts: &[String],
) -> Result<Vec<ThresholdSpec>, PlanError> {
    if no_thresholds {
        return Ok(Vec::new());
    }
    if texts.is_empty() {
        return Ok(thresholds::defaults());
    }
    texts
        .iter()
        .map(|text| {
            let spec = thresholds::parse(text).map_err(|e| bad("threshold", e.to_string()))?;
            let (_, metric_type, _) = definition(&spec.metric).ok_or_else(|| {
                bad(
                    "threshold",
                    format!("{text:?}: no metric named {:?} in this test", spec.metric),
                )
            })?;
            thresholds::validate(&spec, metric_type)
                .map_err(|e| bad("threshold", e.to_string()))?;
            Ok(spec)
        })
        .collect()
}

/// `--out` texts: `json=FILE` or `csv=FILE`.
pub fn output_targets(texts: &[String]) -> Result<Vec<OutputTarget>, PlanError> {
    texts
        .iter()
        .map(|out| match out.split_once('=') {
            Some(("json", file)) if !file.is_empty() => Ok(OutputTarget::Json(file.into())),
            Some(("csv", file)) if !file.is_empty() => Ok(OutputTarget::Csv(file.into())),
            _ => Err(bad(
                "out",
                format!("{out:?}: expected json=FILE or csv=FILE"),
            )),
        })
        .collect()
}

/// The `-e KEY=VALUE` pairs the k6 script reads.
const K6_ENV: &str = "API_BASE, TEST_EMAIL, TEST_PASSWORD, THINK_MIN_S, THINK_MAX_S";

/// `-e KEY=VALUE`s, the last of a key winning.
fn k6_env(args: &RunArgs) -> Result<BTreeMap<&str, &str>, PlanError> {
    let mut env = BTreeMap::new();
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad("env", format!("{pair:?}: expected KEY=VALUE")))?;
        if !K6_ENV.split(", ").any(|known| known == key) {
            return Err(bad(
                "env",
                format!("{key:?} is not read by the test: expected one of {K6_ENV}"),
            ));
        }
        env.insert(key, value);
    }
    Ok(env)
}

/// An option's value: the flag when given on the command line, else the
/// `-e` variable of the k6 script when set, else the flag's environment
/// variable or default.
fn flag_or_env<'a>(
    args: &RunArgs,
    env: &BTreeMap<&str, &'a str>,
    id: &str,
    key: &str,
    flag: &'a str,
) -> &'a str {
    if args.given.iter().any(|given| given == id) {
        return flag;
    }
    env.get(key).copied().unwrap_or(flag)
}

/// The test account (`--email`/`--password`, `-e TEST_EMAIL=…`).
pub fn test_account(args: &RunArgs) -> Result<(String, String), PlanError> {
    let env = k6_env(args)?;
    Ok((
        flag_or_env(args, &env, "email", "TEST_EMAIL", &args.email).to_string(),
        flag_or_env(args, &env, "password", "TEST_PASSWORD", &args.password).to_string(),
    ))
}

/// `--think-time`, or the k6 script's THINK_MIN_S/THINK_MAX_S (seconds).
fn think_time(args: &RunArgs) -> Result<(Duration, Duration), PlanError> {
    let flag = parse_duration_range("think-time", &args.think_time)?;
    let env = k6_env(args)?;
    let seconds = |key: &str, default: Duration| -> Result<Duration, PlanError> {
        match env.get(key) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| bad("env", format!("{key}={text:?} is not a number of seconds"))),
        }
    };
    let (min, max) = (
        seconds("THINK_MIN_S", flag.0)?,
        seconds("THINK_MAX_S", flag.1)?,
    );
    if args.given.iter().any(|given| given == "think_time") {
        return Ok(flag);
    }
    if min > max {
        return Err(bad("env", "THINK_MIN_S is above THINK_MAX_S"));
    }
    Ok((min, max))
}

/// `--tag NAME=VALUE`s. The names live as long as the process, as the
/// engine's own tag names do.
fn tags_of(args: &RunArgs) -> Result<Vec<(&'static str, String)>, PlanError> {
    args.tags
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.is_empty() && !name.contains(['{', '}', ',', ':']) => {
                let name: &'static str = Box::leak(name.to_string().into_boxed_str());
                Ok((name, value.to_string()))
            }
            _ => Err(bad("tag", format!("{pair:?}: expected NAME=VALUE"))),
        })
        .collect()
}

impl Plan {
    /// The plan aimed at another target (the `--spawn-mock` mock): its
    /// address, and the accounts of the users file it wrote, if any.
    pub fn against(
        mut self,
        api_base: String,
        users_file: Option<&Path>,
    ) -> Result<Plan, PlanError> {
        crate::http::BaseUrl::parse(&api_base).map_err(|e| bad("api-base", e.to_string()))?;
        self.api_base = api_base;
        if let Some(path) = users_file {
            self.accounts = read_accounts(path)?;
        }
        Ok(self)
    }

    pub fn from_args(args: &RunArgs) -> Result<Plan, PlanError> {
        let login = match args.login.as_str() {
            "per-iteration" => LoginMode::PerIteration,
            "once" => LoginMode::Once,
            other => {
                return Err(bad(
                    "login",
                    format!("{other:?}: expected per-iteration or once"),
                ))
            }
        };
        let threads = match args.threads {
            Some(0) => return Err(bad("threads", "must be at least 1")),
            Some(n) => n,
            None => default_threads(),
        };
        if args.outputs == 0 {
            return Err(bad("outputs", "must be at least 1"));
        }
        if args.spawn_mock && args.split != SplitArgs::default() {
            return Err(bad(
                "spawn-mock",
                "runs the whole test against its own mock: no segment or --shard-out",
            ));
        }
        let tracking = if args.track_sessions.unwrap_or(args.spawn_mock) {
            Some(Tracking {
                poll_interval: parse_duration("poll-interval", &args.poll_interval)?,
                deadline: parse_duration("session-deadline", &args.session_deadline)?,
            })
        } else {
            None
        };
        let accounts = match &args.users_file {
            Some(path) => read_accounts(path)?,
            None => vec![test_account(args)?],
        };
        let given = args.api_base.join(",");
        let api_base = flag_or_env(args, &k6_env(args)?, "api_base", "API_BASE", &given);
        for target in api_base.split(',') {
            crate::http::BaseUrl::parse(target).map_err(|e| bad("api-base", e.to_string()))?;
        }
        Plan {
            api_base: api_base.to_string(),
            executor: executor(args)?,
            accounts,
            scenario: ScenarioConfig {
                login_path: args.login_path.clone(),
                generate_path: args.generate_path.clone(),
                model: args.model.clone(),
                outputs: args.outputs,
                login_timeout: parse_duration("login-timeout", &args.login_timeout)?,
                generate_timeout: parse_duration("generate-timeout", &args.generate_timeout)?,
                login,
                think_time: think_time(args)?,
                tracking,
            },
            output: Outputs::from_args(&args.output, DefaultThresholds::TheTest)?,
            seed: args.seed,
            quiet: args.quiet,
            tags: tags_of(args)?,
            http_debug: args.http_debug,
            threads,
            local_addrs: local_addrs_of(&args.local_addr)?,
            tls: TlsOptions::new(args.insecure_skip_tls_verify, args.tls_ca.as_deref())
                .map_err(|why| bad("tls-ca", why))?,
            segment: segment_of(&args.split)?,
            shard_out: args.split.shard_out.clone(),
            shard_thresholds: match args.split.shard_out {
                Some(_) => threshold_specs(false, &args.output.thresholds)?,
                None => Vec::new(),
            },
            start_at: start_at_of(&args.split)?,
            address: address_of(&args.rest_api)?,
            paused: args.rest_api.paused,
        }
        .checked()
    }

    /// The options that only make sense together.
    fn checked(self) -> Result<Plan, PlanError> {
        if self.paused && self.address.is_none() {
            return Err(bad(
                "paused",
                "needs --address (only the REST API can resume the run)",
            ));
        }
        if matches!(self.executor, Executor::ExternallyControlled { .. })
            && self.segment != Tuple::full()
        {
            return Err(bad(
                "executor",
                "externally-controlled cannot run with an execution segment (as in k6)",
            ));
        }
        Ok(self)
    }

    /// The `--api-base` targets; VU n is pinned to target (n - 1) mod their number.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.api_base.split(',')
    }

    /// k6's built-in `http_req_duration{expected_response:true}`, then the
    /// sub-metrics the thresholds refer to.
    pub fn sub_metrics(&self) -> Vec<SubMetric> {
        let mut subs: Vec<SubMetric> = vec![SubMetric {
            metric: "http_req_duration".into(),
            tags: [("expected_response".to_string(), "true".to_string())].into(),
        }];
        for spec in self.output.thresholds.iter().chain(&self.shard_thresholds) {
            let sub = SubMetric {
                metric: spec.metric.clone(),
                tags: spec.tags.clone(),
            };
            if !spec.tags.is_empty() && !subs.contains(&sub) {
                subs.push(sub);
            }
        }
        subs
    }

    /// The most generations the plan can request (for seeding credits).
    pub fn max_generations(&self) -> u64 {
        let (min_think, _) = self.scenario.think_time;
        // An iteration takes at least a few ms even against a fast mock.
        let per_vu_per_sec = 1.0 / (min_think.as_secs_f64() + 0.002);
        let seconds = self.executor.planned_duration().as_secs_f64() + 1.0;
        let by_time = (self.executor.max_vus() as f64 * per_vu_per_sec * seconds).ceil() as u64;
        match &self.executor {
            Executor::PerVuIterations {
                vus, iterations, ..
            } => vus * iterations,
            Executor::SharedIterations { iterations, .. } => *iterations,
            Executor::ConstantArrivalRate {
                rate,
                time_unit,
                duration,
                ..
            } => (rate / time_unit.as_secs_f64() * duration.as_secs_f64()).ceil() as u64 + 1,
            _ => by_time,
        }
    }
}

/// The execution segment of `--execution-segment` and
/// `--execution-segment-sequence`, or of `--instance-index` (default
/// `JOB_COMPLETION_INDEX`) and `--instance-count`.
pub fn segment_of(split: &SplitArgs) -> Result<Tuple, PlanError> {
    if let Some(count) = split.instance_count {
        if split.execution_segment.is_some() || split.execution_segment_sequence.is_some() {
            return Err(bad(
                "instance-count",
                "use either --instance-count or --execution-segment(-sequence), not both",
            ));
        }
        let index = match split.instance_index {
            Some(index) => index,
            None => match std::env::var("JOB_COMPLETION_INDEX") {
                Ok(text) => text.trim().parse().map_err(|_| {
                    bad(
                        "instance-index",
                        format!("JOB_COMPLETION_INDEX={text:?} is not an index"),
                    )
                })?,
                Err(_) => {
                    return Err(bad(
                        "instance-count",
                        "needs --instance-index or the JOB_COMPLETION_INDEX variable",
                    ))
                }
            },
        };
        return Tuple::instance(index, count).map_err(|e| bad("instance-index", e.to_string()));
    }
    if split.instance_index.is_some() {
        return Err(bad("instance-index", "needs --instance-count"));
    }
    let segment = match &split.execution_segment {
        Some(text) => Segment::parse(text).map_err(|e| bad("execution-segment", e.to_string()))?,
        None => Segment::FULL,
    };
    let sequence = split
        .execution_segment_sequence
        .as_deref()
        .map(Sequence::parse)
        .transpose()
        .map_err(|e| bad("execution-segment-sequence", e.to_string()))?;
    Tuple::new(segment, sequence.as_ref()).map_err(|e| bad("execution-segment", e.to_string()))
}

/// `--start-at` and `--start-tolerance`.
fn start_at_of(split: &SplitArgs) -> Result<Option<StartAt>, PlanError> {
    let tolerance = match &split.start_tolerance {
        Some(text) if split.start_at.is_none() => {
            return Err(bad("start-tolerance", format!("{text:?} needs --start-at")))
        }
        Some(text) => parse_duration("start-tolerance", text)?,
        None => Duration::from_secs(10),
    };
    split
        .start_at
        .as_deref()
        .map(|text| StartAt::parse(text, tolerance).map_err(|why| bad("start-at", why)))
        .transpose()
}

/// `--address HOST:PORT` (an IP address: no name lookups).
fn address_of(
    rest_api: &crate::cli::RestApiArgs,
) -> Result<Option<std::net::SocketAddr>, PlanError> {
    rest_api
        .address
        .as_deref()
        .map(|text| {
            text.parse().map_err(|_| {
                bad(
                    "address",
                    format!("{text:?} is not IP:PORT, e.g. 127.0.0.1:6565"),
                )
            })
        })
        .transpose()
}

impl From<PlanError> for Failure {
    fn from(e: PlanError) -> Failure {
        Failure::invalid_config(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        let argv = ["loadgen", "run"].iter().chain(argv).copied();
        match crate::cli::parse_from(argv).unwrap().command {
            crate::cli::Command::Run(args) => *args,
            _ => unreachable!("run was given"),
        }
    }

    #[test]
    fn env_sets_what_no_flag_on_the_command_line_set() {
        let args = run_args(&[
            "-e",
            "API_BASE=http://127.0.0.1:7",
            "-e",
            "TEST_EMAIL=env@example.com",
            "-e",
            "TEST_PASSWORD=from-env",
            "-e",
            "THINK_MIN_S=0.5",
            "-e",
            "THINK_MAX_S=2",
            "--email",
            "flag@example.com",
        ]);
        let plan = Plan::from_args(&args).unwrap();
        assert_eq!(plan.api_base, "http://127.0.0.1:7");
        assert_eq!(
            plan.accounts,
            vec![("flag@example.com".to_string(), "from-env".to_string())]
        );
        assert_eq!(
            plan.scenario.think_time,
            (Duration::from_millis(500), Duration::from_secs(2))
        );
        let args = run_args(&["-e", "THINK_MIN_S=5", "--think-time", "1s"]);
        assert_eq!(
            Plan::from_args(&args).unwrap().scenario.think_time,
            (Duration::from_secs(1), Duration::from_secs(1))
        );
        let args = run_args(&["-e", "THINK_MIN_S=5"]);
        assert_eq!(
            Plan::from_args(&args).unwrap_err().to_string(),
            "invalid --env: THINK_MIN_S is above THINK_MAX_S"
        );
    }

    #[test]
    fn tags_and_summary_options() {
        let args = run_args(&[
            "--tag",
            "testid=run-7",
            "--tag",
            "env=staging",
            "--summary-trend-stats",
            "avg,p(99),count",
            "--summary-time-unit",
            "ms",
            "--summary-mode",
            "compact",
        ]);
        let plan = Plan::from_args(&args).unwrap();
        assert_eq!(
            plan.tags,
            vec![
                ("testid", "run-7".to_string()),
                ("env", "staging".to_string())
            ]
        );
        let style = plan.output.summary.unwrap();
        assert_eq!(style.mode, SummaryMode::Compact);
        assert_eq!(
            style.trend_stats,
            vec![
                TrendStat::Avg,
                TrendStat::Percentile(99.0),
                TrendStat::Count
            ]
        );
        assert_eq!(style.time_unit, Some(TimeUnit::Millis));
        let plan = Plan::from_args(&run_args(&["--no-summary"])).unwrap();
        assert!(plan.output.summary.is_none());
        assert_eq!(
            Plan::from_args(&run_args(&["--tag", "=x"]))
                .unwrap_err()
                .to_string(),
            "invalid --tag: \"=x\": expected NAME=VALUE"
        );
    }

    #[test]
    fn stages_and_think_times() {
        let stages = parse_stages(DEFAULT_STAGES).unwrap();
        assert_eq!(stages.len(), 4);
        assert_eq!(
            stages[2],
            Stage {
                duration: Duration::from_secs(30),
                target: 10
            }
        );
        assert!(parse_stages("10s").is_err());
        assert!(parse_stages("10x:5").is_err());
        assert_eq!(
            parse_duration_range("think-time", "50ms..100ms").unwrap(),
            (Duration::from_millis(50), Duration::from_millis(100))
        );
        assert_eq!(
            parse_duration_range("think-time", "0").unwrap(),
            (Duration::ZERO, Duration::ZERO)
        );
        assert!(parse_duration_range("think-time", "3s..1s").is_err());
    }
}
