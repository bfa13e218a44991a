//! `loadgen http URL`: one request, as fast as it goes or at a fixed rate,
//! in the style of oha, hey and wrk, with `loadgen run`'s outputs (summary,
//! `--summary-export`, `--out`, `--report`, thresholds, exit codes,
//! progress).
//!
//! The raw path pays nothing for the scenario's machinery: [`request`]
//! serialises the request once, [`engine`] runs the connections (buffers
//! kept for the run, only the answer's status and framing parsed), and
//! [`tally`] records per thread, merged once a second by [`command`].
//! [`args`] holds the options and their validation; [`alarm`] starts the
//! open model's requests on time (a `timerfd` on Linux).

pub mod alarm;
pub mod args;
pub mod engine;
pub mod request;
pub mod tally;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::exit::{self, Failure};
use crate::output::{report, summary, write_snapshot_files};
use crate::progress::{Progress, Status};
use crate::run::{open_writers, Writer};
use crate::sample::Sample;
use crate::snapshot::Snapshot;
use crate::thresholds;
use args::{HttpArgs, RawPlan};
use engine::{lock, Engine};
use request::PreparedRequest;
use tally::Tally;

/// The run's totals so far and the per-second series.
struct Aggregate {
    totals: Tally,
    series: Vec<crate::metrics::SeriesPoint>,
    /// Reused for each second's merge.
    second: Tally,
}

impl Aggregate {
    /// Merges what each thread recorded since the last call.
    fn collect(
        &mut self,
        tallies: &[Arc<Mutex<Tally>>],
        second: u32,
        plan: &RawPlan,
    ) -> Vec<Sample> {
        let mut samples = Vec::new();
        self.second.take_samples_and_clear();
        for tally in tallies {
            let mut tally = lock(tally);
            self.second.merge(&tally);
            samples.append(&mut tally.take_samples_and_clear());
        }
        self.totals.merge(&self.second);
        if self.second.requests > 0 {
            self.series.push(self.second.series_point(
                second,
                plan.load.connections,
                &plan.request.url,
            ));
        }
        samples.sort_by_key(|s| s.time);
        samples
    }

    fn snapshot(&self, elapsed: Duration, plan: &RawPlan) -> Snapshot {
        self.totals
            .snapshot(elapsed, plan.load.connections, plan.load.rate.is_some())
    }
}

/// `loadgen http`: runs, prints, writes, and answers the exit code.
pub async fn command(args: HttpArgs, interrupt: Arc<AtomicBool>) -> Result<i32, Failure> {
    let plan = RawPlan::from_args(&args)?;
    let request = PreparedRequest::new(&plan.request, &plan.tls)?;
    let mut writers = open_writers(&plan.output.streams, &plan.output.thresholds)?;
    let engine = Engine::start(
        request,
        plan.load.clone(),
        plan.timeout,
        plan.threads,
        !writers.is_empty(),
    )
    .map_err(|e| {
        Failure::new(
            exit::RUNTIME_FAILED,
            format!("cannot start the threads: {e}"),
        )
    })?;
    let started = engine.shared.started;
    let tallies = engine.tallies.clone();
    let shared = engine.shared.clone();
    let mut finished = tokio::task::spawn_blocking(move || engine.join());
    let mut aggregate = Aggregate {
        totals: Tally::default(),
        series: Vec::new(),
        second: Tally::default(),
    };
    let mut progress = Progress::new(plan.quiet, plan.planned());
    let abort_specs = plan.output.thresholds.iter().any(|spec| spec.abort_on_fail);
    let mut aborted = false;
    let mut write_error = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut second = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut finished => break,
        }
        if interrupt.load(Ordering::Relaxed) {
            shared.stop();
        }
        let samples = aggregate.collect(&tallies, second, &plan);
        second += 1;
        write_samples(&mut writers, &samples, &mut write_error);
        let elapsed = started.elapsed();
        if abort_specs
            && !aborted
            && thresholds::should_abort(
                &plan.output.thresholds,
                &aggregate.snapshot(elapsed, &plan),
                elapsed,
            )
            .is_some()
        {
            aborted = true;
            shared.stop();
        }
        let totals = &aggregate.totals;
        progress.update(&Status {
            elapsed,
            vus: plan.load.connections,
            vus_max: plan.load.connections,
            iterations: totals.requests,
            requests: totals.requests as f64,
            failed_rate: totals.failed as f64 / totals.requests.max(1) as f64,
        });
    }
    progress.finish();
    let elapsed = started.elapsed();
    let samples = aggregate.collect(&tallies, second, &plan);
    write_samples(&mut writers, &samples, &mut write_error);
    for writer in writers {
        if let Err(e) = writer.finish() {
            write_error.get_or_insert(e);
        }
    }
    if let Some(e) = write_error {
        tracing::warn!("streaming output incomplete: {e}");
    }
    let mut snapshot = aggregate.snapshot(elapsed, &plan);
    snapshot.thresholds = thresholds::evaluate(&plan.output.thresholds, &snapshot);
    let code = if interrupt.load(Ordering::Relaxed) {
        exit::INTERRUPTED
    } else if aborted {
        exit::ABORTED_BY_THRESHOLD
    } else if snapshot.thresholds.iter().any(|t| !t.ok) {
        exit::THRESHOLDS_FAILED
    } else {
        exit::OK
    };
    println!(
        "\n     http: {} {}, {} connections, {}, {} requests in {:.1}s",
        plan.request.method,
        plan.request.url,
        plan.load.connections,
        match plan.load.rate {
            Some(rate) => format!("open model at {} req/s", rate.per_second),
            None => "closed model".to_string(),
        },
        aggregate.totals.requests,
        elapsed.as_secs_f64()
    );
    if let Some(style) = &plan.output.summary {
        print!("{}", summary::render(&snapshot, style));
    }
    let report = plan.output.report.as_deref().map(|path| {
        (
            path,
            report::Report {
                title: format!("loadgen http — {}", plan.request.url),
                snapshot: &snapshot,
                charts: report::charts(&aggregate.series),
                audit: None,
                config: config_rows(&plan),
            },
        )
    });
    let written = write_snapshot_files(
        &snapshot,
        &plan.output.trend_stats,
        plan.output.summary_export.as_deref(),
        report.as_ref().map(|(path, report)| (*path, report)),
    );
    exit::after(code, written)
}

fn write_samples(writers: &mut [Writer], samples: &[Sample], error: &mut Option<std::io::Error>) {
    for writer in writers {
        for sample in samples {
            if let Err(e) = writer.write(sample) {
                error.get_or_insert(e);
            }
        }
    }
}

/// The report's configuration table.
fn config_rows(plan: &RawPlan) -> Vec<(String, String)> {
    let load = &plan.load;
    vec![
        ("url".into(), plan.request.url.clone()),
        ("method".into(), plan.request.method.clone()),
        ("connections".into(), load.connections.to_string()),
        ("requests".into(), format!("{:?}", load.requests)),
        ("duration".into(), format!("{:?}", load.duration)),
        ("rate".into(), format!("{:?}", load.rate)),
        ("threads".into(), plan.threads.to_string()),
        ("keep_alive".into(), plan.request.keep_alive.to_string()),
        (
            "thresholds".into(),
            plan.output
                .thresholds
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    ]
}
