//! k6's executors. Closed model (ramping-vus, constant-vus, per-vu and
//! shared iterations): a fixed set of VUs loops over iterations, so a slow
//! server slows the arrival of new iterations. Open model (constant and
//! ramping arrival rate): iterations start on a schedule that ignores
//! responses; when no VU is free the iteration is dropped and counted in
//! `dropped_iterations`, and `iteration_duration` runs from the *scheduled*
//! start, so a stalled server shows up in the percentiles instead of being
//! hidden by a late start (no coordinated omission).
//!
//! Stopping follows k6: at the end of a stage plan VUs finish their current
//! iteration within `gracefulStop` (or `gracefulRampDown` when the plan ramps
//! down); an iteration still running past that is interrupted and counted as
//! interrupted, not as an iteration.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::BaseUrl;
use crate::metrics::Collector;
use crate::scenario::Scenario;
use crate::vu::Vu;
use crate::workers::Workers;

/// `duration:target` of `--stages`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Executor {
    RampingVus {
        start_vus: u64,
        stages: Vec<Stage>,
        graceful_ramp_down: Duration,
        graceful_stop: Duration,
    },
    ConstantVus {
        vus: u64,
        duration: Duration,
        graceful_stop: Duration,
    },
    PerVuIterations {
        vus: u64,
        iterations: u64,
        max_duration: Duration,
        graceful_stop: Duration,
    },
    SharedIterations {
        vus: u64,
        iterations: u64,
        max_duration: Duration,
        graceful_stop: Duration,
    },
    ConstantArrivalRate {
        /// Iterations per `time_unit`.
        rate: f64,
        time_unit: Duration,
        duration: Duration,
        pre_allocated_vus: u64,
        max_vus: u64,
        graceful_stop: Duration,
    },
    RampingArrivalRate {
        start_rate: f64,
        time_unit: Duration,
        stages: Vec<Stage>,
        pre_allocated_vus: u64,
        max_vus: u64,
        graceful_stop: Duration,
    },
}

impl Executor {
    pub fn name(&self) -> &'static str {
        match self {
            Executor::RampingVus { .. } => "ramping-vus",
            Executor::ConstantVus { .. } => "constant-vus",
            Executor::PerVuIterations { .. } => "per-vu-iterations",
            Executor::SharedIterations { .. } => "shared-iterations",
            Executor::ConstantArrivalRate { .. } => "constant-arrival-rate",
            Executor::RampingArrivalRate { .. } => "ramping-arrival-rate",
        }
    }

    /// The most VUs the plan can use.
    pub fn max_vus(&self) -> u64 {
        match self {
            Executor::RampingVus {
                start_vus, stages, ..
            } => stages.iter().map(|s| s.target).fold(*start_vus, u64::max),
            Executor::ConstantVus { vus, .. }
            | Executor::PerVuIterations { vus, .. }
            | Executor::SharedIterations { vus, .. } => *vus,
            Executor::ConstantArrivalRate { max_vus, .. }
            | Executor::RampingArrivalRate { max_vus, .. } => *max_vus,
        }
    }

    /// The planned length without graceful periods (an upper bound for the
    /// iteration executors).
    pub fn planned_duration(&self) -> Duration {
        match self {
            Executor::RampingVus { stages, .. } | Executor::RampingArrivalRate { stages, .. } => {
                stages.iter().map(|s| s.duration).sum()
            }
            Executor::ConstantVus { duration, .. }
            | Executor::ConstantArrivalRate { duration, .. } => *duration,
            Executor::PerVuIterations { max_duration, .. }
            | Executor::SharedIterations { max_duration, .. } => *max_duration,
        }
    }
}

/// VU value of a ramp at `t`: linear from each stage's start to its target.
pub fn ramp_value(start: f64, stages: &[Stage], t: Duration) -> f64 {
    let mut from = start;
    let mut at = Duration::ZERO;
    for stage in stages {
        let to = stage.target as f64;
        if t < at + stage.duration {
            let progress = (t - at).as_secs_f64() / stage.duration.as_secs_f64().max(1e-9);
            return from + (to - from) * progress;
        }
        at += stage.duration;
        from = to;
    }
    from
}

/// What every VU of a run shares.
pub struct RunContext {
    pub scenario: Arc<Scenario>,
    pub collector: Arc<Collector>,
    pub base: Arc<BaseUrl>,
    pub accounts: Vec<(String, String)>,
    pub seed: Option<u64>,
    pub http_debug: bool,
    /// Cancelled on Ctrl-C or abortOnFail: stop starting iterations.
    pub stop: CancellationToken,
    pub interrupted: AtomicU64,
    pub completed: AtomicU64,
    next_vu: AtomicU64,
    workers: Workers,
    /// Cancelled when every VU and session follow-up has ended.
    pub done: CancellationToken,
}

impl RunContext {
    pub fn new(
        scenario: Arc<Scenario>,
        collector: Arc<Collector>,
        accounts: Vec<(String, String)>,
        seed: Option<u64>,
        http_debug: bool,
        threads: usize,
    ) -> std::io::Result<Arc<RunContext>> {
        let base = scenario.base.clone();
        Ok(Arc::new(RunContext {
            scenario,
            collector,
            base,
            accounts,
            seed,
            http_debug,
            stop: CancellationToken::new(),
            interrupted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            next_vu: AtomicU64::new(1),
            workers: Workers::start(threads)?,
            done: CancellationToken::new(),
        }))
    }

    fn new_vu(&self) -> Vu {
        let id = self.next_vu.fetch_add(1, Ordering::Relaxed);
        Vu::new(
            id,
            self.workers.pick(),
            &self.base,
            &self.accounts,
            self.seed,
            self.http_debug,
        )
    }

    /// Runs one iteration unless `hard` fires first; true when it finished.
    async fn iterate(&self, vu: &mut Vu, hard: &CancellationToken, started: Instant) -> bool {
        let finished = tokio::select! {
            biased;
            _ = hard.cancelled() => false,
            _ = self.scenario.iteration(vu, &self.collector) => true,
        };
        if finished {
            self.completed.fetch_add(1, Ordering::Relaxed);
            self.collector.add_all(
                &[
                    ("iterations", 1.0),
                    (
                        "iteration_duration",
                        started.elapsed().as_secs_f64() * 1000.0,
                    ),
                ],
                &[],
            );
        } else {
            self.interrupted.fetch_add(1, Ordering::Relaxed);
        }
        finished
    }
}

/// How many iterations a looping VU may still start.
#[derive(Clone)]
enum Budget {
    Unlimited,
    PerVu(u64),
    Shared(Arc<AtomicI64>),
}

impl Budget {
    fn take(&mut self) -> bool {
        match self {
            Budget::Unlimited => true,
            Budget::PerVu(left) => {
                if *left == 0 {
                    return false;
                }
                *left -= 1;
                true
            }
            Budget::Shared(left) => left.fetch_sub(1, Ordering::Relaxed) > 0,
        }
    }
}

struct LoopingVu {
    leave: Arc<AtomicBool>,
    hard: CancellationToken,
    task: JoinHandle<()>,
}

fn spawn_looping_vu(ctx: &Arc<RunContext>, mut budget: Budget) -> LoopingVu {
    let leave = Arc::new(AtomicBool::new(false));
    let hard = CancellationToken::new();
    let mut vu = ctx.new_vu();
    let task = {
        let (ctx, leave, hard) = (ctx.clone(), leave.clone(), hard.clone());
        vu.runtime.clone().spawn(async move {
            ctx.collector.vu_started();
            while !leave.load(Ordering::Relaxed) && !ctx.stop.is_cancelled() && budget.take() {
                if !ctx.iterate(&mut vu, &hard, Instant::now()).await {
                    break;
                }
            }
            ctx.collector.vu_stopped();
        })
    };
    LoopingVu { leave, hard, task }
}

/// Asks VUs to leave after their iteration, waits `grace`, then interrupts.
async fn retire(vus: Vec<LoopingVu>, grace: Duration) {
    for vu in &vus {
        vu.leave.store(true, Ordering::Relaxed);
    }
    let deadline = tokio::time::Instant::now() + grace;
    for vu in vus {
        let LoopingVu { hard, mut task, .. } = vu;
        // Finished ones may have been awaited already (and must not be again).
        if task.is_finished() {
            continue;
        }
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            hard.cancel();
            let _ = task.await;
        }
    }
}

/// Runs the executor to its end (or until `ctx.stop`).
pub async fn run(ctx: Arc<RunContext>, executor: Executor) {
    ctx.collector.set_vus_max(executor.max_vus());
    match executor {
        Executor::RampingVus {
            start_vus,
            stages,
            graceful_ramp_down,
            graceful_stop,
        } => {
            ramping(
                ctx,
                start_vus as f64,
                stages,
                graceful_ramp_down,
                graceful_stop,
            )
            .await
        }
        Executor::ConstantVus {
            vus,
            duration,
            graceful_stop,
        } => {
            let stages = vec![Stage {
                duration,
                target: vus,
            }];
            ramping(ctx, vus as f64, stages, graceful_stop, graceful_stop).await
        }
        Executor::PerVuIterations {
            vus,
            iterations,
            max_duration,
            graceful_stop,
        } => {
            let budgets = (0..vus).map(|_| Budget::PerVu(iterations)).collect();
            iterations_executor(ctx, budgets, max_duration, graceful_stop).await
        }
        Executor::SharedIterations {
            vus,
            iterations,
            max_duration,
            graceful_stop,
        } => {
            let shared = Arc::new(AtomicI64::new(iterations as i64));
            let budgets = (0..vus).map(|_| Budget::Shared(shared.clone())).collect();
            iterations_executor(ctx, budgets, max_duration, graceful_stop).await
        }
        Executor::ConstantArrivalRate {
            rate,
            time_unit,
            duration,
            pre_allocated_vus,
            max_vus,
            graceful_stop,
        } => {
            let per_second = rate / time_unit.as_secs_f64();
            let stages = vec![Stage {
                duration,
                target: 0,
            }];
            arrival(
                ctx,
                move |_| per_second,
                stages,
                pre_allocated_vus,
                max_vus,
                graceful_stop,
            )
            .await
        }
        Executor::RampingArrivalRate {
            start_rate,
            time_unit,
            stages,
            pre_allocated_vus,
            max_vus,
            graceful_stop,
        } => {
            let unit = time_unit.as_secs_f64();
            let ramp = stages.clone();
            arrival(
                ctx,
                move |t| ramp_value(start_rate, &ramp, t) / unit,
                stages,
                pre_allocated_vus,
                max_vus,
                graceful_stop,
            )
            .await
        }
    }
}

async fn ramping(
    ctx: Arc<RunContext>,
    start: f64,
    stages: Vec<Stage>,
    graceful_ramp_down: Duration,
    graceful_stop: Duration,
) {
    let total: Duration = stages.iter().map(|s| s.duration).sum();
    let started = tokio::time::Instant::now();
    let mut active: Vec<LoopingVu> = Vec::new();
    let mut leaving: Vec<JoinHandle<()>> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let elapsed = started.elapsed();
        if elapsed >= total || ctx.stop.is_cancelled() {
            break;
        }
        let target = ramp_value(start, &stages, elapsed).round() as usize;
        while active.len() < target {
            active.push(spawn_looping_vu(&ctx, Budget::Unlimited));
        }
        if active.len() > target {
            let surplus = active.split_off(target);
            leaving.push(tokio::spawn(retire(surplus, graceful_ramp_down)));
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.stop.cancelled() => {}
        }
    }
    retire(active, graceful_stop).await;
    for task in leaving {
        let _ = task.await;
    }
}

async fn iterations_executor(
    ctx: Arc<RunContext>,
    budgets: Vec<Budget>,
    max_duration: Duration,
    graceful_stop: Duration,
) {
    let mut vus: Vec<LoopingVu> = budgets
        .into_iter()
        .map(|budget| spawn_looping_vu(&ctx, budget))
        .collect();
    let all_done = futures::future::join_all(vus.iter_mut().map(|vu| &mut vu.task));
    tokio::select! {
        _ = all_done => {}
        _ = tokio::time::sleep(max_duration) => {}
        _ = ctx.stop.cancelled() => {}
    }
    retire(vus, graceful_stop).await;
}

async fn arrival(
    ctx: Arc<RunContext>,
    rate_at: impl Fn(Duration) -> f64,
    stages: Vec<Stage>,
    pre_allocated: u64,
    max_vus: u64,
    graceful_stop: Duration,
) {
    let total: Duration = stages.iter().map(|s| s.duration).sum();
    let (free_tx, mut free_rx) = tokio::sync::mpsc::unbounded_channel::<Vu>();
    for _ in 0..pre_allocated {
        let _ = free_tx.send(ctx.new_vu());
    }
    let mut allocated = pre_allocated;
    let hard = CancellationToken::new();
    let mut running = tokio::task::JoinSet::new();
    let started = tokio::time::Instant::now();
    let mut scheduled = Duration::ZERO;
    loop {
        let rate = rate_at(scheduled);
        let step = if rate > 0.0 {
            Duration::from_secs_f64(1.0 / rate)
        } else {
            // Nothing to start now: look again a little later.
            Duration::from_millis(10)
        };
        if rate <= 0.0 {
            scheduled += step;
            if scheduled >= total {
                break;
            }
            continue;
        }
        if scheduled >= total || ctx.stop.is_cancelled() {
            break;
        }
        let due = started + scheduled;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = ctx.stop.cancelled() => break,
        }
        let vu = match free_rx.try_recv() {
            Ok(vu) => Some(vu),
            Err(_) if allocated < max_vus => {
                allocated += 1;
                ctx.collector.set_vus_max(allocated);
                Some(ctx.new_vu())
            }
            Err(_) => None,
        };
        match vu {
            Some(mut vu) => {
                let (ctx, free_tx, hard) = (ctx.clone(), free_tx.clone(), hard.clone());
                // The iteration's clock starts at its scheduled time.
                let scheduled_at = due.into_std();
                let runtime = vu.runtime.clone();
                running.spawn_on(
                    async move {
                        ctx.collector.vu_started();
                        ctx.iterate(&mut vu, &hard, scheduled_at).await;
                        ctx.collector.vu_stopped();
                        let _ = free_tx.send(vu);
                    },
                    &runtime,
                );
            }
            None => ctx.collector.add("dropped_iterations", 1.0, &[]),
        }
        while running.try_join_next().is_some() {}
        scheduled += step;
    }
    let drained = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(graceful_stop, drained).await.is_err() {
        hard.cancel();
        while running.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_interpolates_each_stage() {
        let stages = [
            Stage {
                duration: Duration::from_secs(10),
                target: 5,
            },
            Stage {
                duration: Duration::from_secs(10),
                target: 5,
            },
            Stage {
                duration: Duration::from_secs(10),
                target: 0,
            },
        ];
        assert_eq!(ramp_value(1.0, &stages, Duration::ZERO), 1.0);
        assert_eq!(ramp_value(1.0, &stages, Duration::from_secs(5)), 3.0);
        assert_eq!(ramp_value(1.0, &stages, Duration::from_secs(15)), 5.0);
        assert_eq!(ramp_value(1.0, &stages, Duration::from_secs(25)), 2.5);
        assert_eq!(ramp_value(1.0, &stages, Duration::from_secs(40)), 0.0);
    }
}
