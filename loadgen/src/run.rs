//! One run from start to verdict: setup, the executor, the once-a-second
//! aggregation (streaming outputs, progress, abortOnFail), thresholds and
//! the exit code (k6's).

use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::control::{Control, ExternalVus};
use crate::executor::{self, Executor, RunContext, VuOptions};
use crate::exit::{self, Failure};
use crate::http::proxy::ProxyEnv;
use crate::http::{BaseUrl, RouteError};
use crate::metrics::{Collector, SeriesPoint};
use crate::output::csv::CsvWriter;
use crate::output::ndjson::NdjsonWriter;
use crate::plan::{OutputTarget, Plan};
use crate::progress::{Progress, Status};
use crate::sample::Sample;
use crate::scenario::{Scenario, SetupError};
use crate::snapshot::Snapshot;
use crate::start::StartMissed;
use crate::thresholds::{self, ThresholdSpec};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot write {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid --api-base: {0}")]
    BaseUrl(#[from] crate::http::BaseUrlError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("cannot start the VU runtimes: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("cannot start the REST API on {address}: {source}")]
    RestApi {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    StartMissed(#[from] StartMissed),
}

impl RunError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Setup(_) => exit::SETUP_FAILED,
            RunError::Output { .. } | RunError::BaseUrl(_) | RunError::Route(_) => {
                exit::INVALID_CONFIG
            }
            RunError::Runtime(_) => exit::RUNTIME_FAILED,
            RunError::RestApi { .. } => exit::CANNOT_START_REST_API,
            RunError::StartMissed(_) => exit::START_MISSED,
        }
    }
}

pub struct RunOutcome {
    pub snapshot: Snapshot,
    pub series: Vec<SeriesPoint>,
    pub exit_code: i32,
    pub completed_iterations: u64,
    pub interrupted_iterations: u64,
    /// 202 answers seen (accepted generations).
    pub accepted_generations: u64,
}

/// A `--out` stream: k6's JSON lines or CSV.
pub enum Writer {
    Json(NdjsonWriter<BufWriter<File>>),
    Csv(CsvWriter<BufWriter<File>>),
}

impl Writer {
    pub fn write(&mut self, sample: &Sample) -> std::io::Result<()> {
        match self {
            Writer::Json(w) => w.write(sample),
            Writer::Csv(w) => w.write(sample),
        }
    }

    pub fn finish(self) -> std::io::Result<()> {
        match self {
            Writer::Json(w) => w.finish().map(drop),
            Writer::Csv(w) => w.finish().map(drop),
        }
    }
}

/// Creates the `--out` files (the JSON lines name the thresholds).
pub fn open_writers(
    outputs: &[OutputTarget],
    thresholds: &[ThresholdSpec],
) -> Result<Vec<Writer>, RunError> {
    outputs
        .iter()
        .map(|target| {
            let path = match target {
                OutputTarget::Json(p) | OutputTarget::Csv(p) => p,
            };
            let file = File::create(path).map_err(|source| RunError::Output {
                path: path.display().to_string(),
                source,
            })?;
            Ok(match target {
                OutputTarget::Json(_) => Writer::Json(
                    NdjsonWriter::new(BufWriter::new(file)).with_thresholds(thresholds),
                ),
                OutputTarget::Csv(_) => Writer::Csv(CsvWriter::new(BufWriter::new(file))),
            })
        })
        .collect()
}

/// The samples with the `--tag`s added.
fn tagged(mut samples: Vec<Sample>, tags: &[(&'static str, String)]) -> Vec<Sample> {
    if !tags.is_empty() {
        for sample in &mut samples {
            sample.tags.extend(tags.iter().cloned());
        }
    }
    samples
}

/// Runs the plan against its targets. `interrupt` stops it gracefully
/// (Ctrl-C in the binary); the outcome then carries exit code 105. The
/// executor starts after setup, at `--start-at` and once not `--paused`.
pub async fn execute(plan: Plan, interrupt: Arc<AtomicBool>) -> Result<RunOutcome, RunError> {
    let proxies = ProxyEnv::from_process();
    let targets = plan
        .targets()
        .map(|target| {
            Ok(Arc::new(
                BaseUrl::parse(target)?.with_route(&plan.tls, &proxies)?,
            ))
        })
        .collect::<Result<Vec<_>, RunError>>()?;
    let (email, password) = &plan.accounts[0];
    // Every target is checked before any load; the first one's scenario runs.
    for target in targets.iter().skip(1) {
        Scenario::new(plan.scenario.clone(), BaseUrl::clone(target))
            .setup(email, password)
            .await?;
    }
    let scenario = Scenario::new(plan.scenario.clone(), BaseUrl::clone(&targets[0]));
    scenario.setup(email, password).await?;
    let external = match plan.executor {
        Executor::ExternallyControlled { vus, max_vus, .. } => Some(ExternalVus { vus, max_vus }),
        _ => None,
    };
    let control = Arc::new(Control::new(
        plan.paused,
        CancellationToken::new(),
        external,
    ));
    let started_collector = Arc::new(OnceLock::new());
    let _api = match plan.address {
        Some(address) => {
            let api =
                crate::control_api::serve(address, control.clone(), started_collector.clone())
                    .await
                    .map_err(|source| RunError::RestApi { address, source })?;
            eprintln!("loadgen: REST API on http://{}", api.address);
            Some(api)
        }
        None => None,
    };
    if let Some(start_at) = &plan.start_at {
        start_at.wait().await?;
    }
    control.resumed().await;
    let mut writers = open_writers(&plan.output.streams, &plan.output.thresholds)?;
    let collector = Collector::new(plan.sub_metrics(), !writers.is_empty());
    if plan.shard_out.is_some() {
        collector.keep_second_trends();
    }
    let _ = started_collector.set(collector.clone());
    let ctx = RunContext::new(
        scenario.clone(),
        collector.clone(),
        VuOptions {
            targets,
            accounts: plan.accounts.clone(),
            segment: plan.segment.clone(),
            seed: plan.seed,
            http_debug: plan.http_debug,
            local_addrs: plan.local_addrs.clone(),
        },
        plan.threads,
        control.clone(),
    )?;
    let aborted = Arc::new(AtomicBool::new(false));
    let planned = plan.executor.planned_duration();
    // This segment's VUs, known before the first sample (k6 initialises
    // them before the test); the externally-controlled executor raises it
    // with the REST API's `vus-max`, and the progress line follows.
    collector.set_vus_max(plan.executor.share(&plan.segment).max_vus);
    let aggregator = {
        let (collector, ctx, aborted, interrupt) = (
            collector.clone(),
            ctx.clone(),
            aborted.clone(),
            interrupt.clone(),
        );
        let specs = plan.output.thresholds.clone();
        let tags = plan.tags.clone();
        let abort_specs = specs.iter().any(|spec| spec.abort_on_fail);
        let quiet = plan.quiet;
        tokio::spawn(async move {
            let mut progress = Progress::new(quiet, planned);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut write_error = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = ctx.done.cancelled() => break,
                }
                if interrupt.load(Ordering::Relaxed) {
                    ctx.stop.cancel();
                }
                let samples = tagged(collector.tick(), &tags);
                for writer in &mut writers {
                    for sample in &samples {
                        if let Err(e) = writer.write(sample) {
                            write_error.get_or_insert(e);
                        }
                    }
                }
                // A snapshot copies every histogram: only for abortOnFail.
                if abort_specs
                    && thresholds::should_abort(
                        &specs,
                        &collector.snapshot(collector.elapsed()),
                        collector.elapsed(),
                    )
                    .is_some()
                {
                    aborted.store(true, Ordering::Relaxed);
                    ctx.stop.cancel();
                }
                progress.update(&Status::of(&collector));
            }
            progress.finish();
            (writers, write_error)
        })
    };
    executor::run(ctx.clone(), plan.executor.clone(), &plan.segment).await;
    scenario.wait_for_trackers().await;
    ctx.done.cancel();
    let (writers, write_error) = aggregator.await.unwrap_or_default();
    let samples = tagged(collector.tick(), &plan.tags);
    let mut finish_error = write_error;
    for mut writer in writers {
        for sample in &samples {
            if let Err(e) = writer.write(sample) {
                finish_error.get_or_insert(e);
            }
        }
        if let Err(e) = writer.finish() {
            finish_error.get_or_insert(e);
        }
    }
    if let Some(e) = finish_error {
        tracing::warn!("streaming output incomplete: {e}");
    }
    let mut snapshot = collector.snapshot(collector.elapsed());
    snapshot.thresholds = thresholds::evaluate(&plan.output.thresholds, &snapshot);
    let exit_code = if interrupt.load(Ordering::Relaxed) {
        exit::INTERRUPTED
    } else if control.stopped_by_api() {
        exit::STOPPED_FROM_REST_API
    } else if aborted.load(Ordering::Relaxed) {
        exit::ABORTED_BY_THRESHOLD
    } else if snapshot.thresholds.iter().any(|t| !t.ok) {
        exit::THRESHOLDS_FAILED
    } else {
        exit::OK
    };
    Ok(RunOutcome {
        series: collector.series(),
        snapshot,
        exit_code,
        completed_iterations: ctx.completed.load(Ordering::Relaxed),
        interrupted_iterations: ctx.interrupted.load(Ordering::Relaxed),
        accepted_generations: scenario.accepted.load(Ordering::Relaxed),
    })
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Failure {
        Failure::new(e.exit_code(), e.to_string())
    }
}
