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
//!
//! While the run is paused ([`Control`]) no VU starts an iteration and the
//! executors' clocks stand still, as k6's do.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::control::{Control, Mark};
use crate::http::BaseUrl;
use crate::metrics::Collector;
use crate::scenario::Scenario;
use crate::schedule::{self, ArrivalTimes, VuStep};
use crate::segment::Tuple;
use crate::vu::Vu;
use crate::workers::Workers;

pub use crate::schedule::Stage;

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
    /// k6's: `vus` loop until `duration` (0: until stopped), their number
    /// set through the REST API up to `max_vus`.
    ExternallyControlled {
        vus: u64,
        max_vus: u64,
        duration: Duration,
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
            Executor::ExternallyControlled { .. } => "externally-controlled",
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
            | Executor::RampingArrivalRate { max_vus, .. }
            | Executor::ExternallyControlled { max_vus, .. } => *max_vus,
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
            | Executor::ConstantArrivalRate { duration, .. }
            | Executor::ExternallyControlled { duration, .. } => *duration,
            Executor::PerVuIterations { max_duration, .. }
            | Executor::SharedIterations { max_duration, .. } => *max_duration,
        }
    }
}

/// What one execution segment runs of an executor: its own VU counts and
/// iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// VUs (ramping: the most at once; arrival rates: pre-allocated).
    pub vus: u64,
    pub max_vus: u64,
    /// shared-iterations: this segment's iterations; per-vu: per VU.
    pub iterations: u64,
}

impl Executor {
    /// This segment's VUs and iterations, as k6 scales them: VU counts by
    /// the segment (`ScaleInt64`), shared iterations by the segment re-split
    /// over the VUs, so a segment without VUs has no iterations.
    pub fn share(&self, segment: &Tuple) -> Share {
        let vus = |vus: u64| segment.scale(vus);
        match self {
            Executor::RampingVus {
                start_vus, stages, ..
            } => {
                let most = schedule::vu_steps(*start_vus, stages, segment)
                    .iter()
                    .map(|s| s.vus)
                    .max()
                    .unwrap_or(0);
                Share {
                    vus: most,
                    max_vus: most,
                    iterations: 0,
                }
            }
            Executor::ConstantVus { vus: n, .. } => Share {
                vus: vus(*n),
                max_vus: vus(*n),
                iterations: 0,
            },
            Executor::PerVuIterations {
                vus: n, iterations, ..
            } => Share {
                vus: vus(*n),
                max_vus: vus(*n),
                iterations: *iterations,
            },
            Executor::SharedIterations {
                vus: n, iterations, ..
            } => Share {
                vus: vus(*n),
                max_vus: vus(*n),
                iterations: segment
                    .resplit(*n)
                    .map_or(0, |by_vus| by_vus.scale(*iterations)),
            },
            Executor::ConstantArrivalRate {
                pre_allocated_vus,
                max_vus,
                ..
            }
            | Executor::RampingArrivalRate {
                pre_allocated_vus,
                max_vus,
                ..
            } => Share {
                vus: vus(*pre_allocated_vus),
                max_vus: vus(*max_vus),
                iterations: 0,
            },
            // Not split: the plan refuses it with a segment, as k6 does.
            Executor::ExternallyControlled { vus, max_vus, .. } => Share {
                vus: *vus,
                max_vus: *max_vus,
                iterations: 0,
            },
        }
    }

    /// The iteration start times of an arrival-rate executor for this
    /// segment, whose iterations are dealt by the segment re-split over the
    /// max VUs (as k6 does); None for the other executors.
    pub fn arrival_times(&self, segment: &Tuple) -> Option<ArrivalTimes> {
        match self {
            Executor::ConstantArrivalRate {
                rate,
                time_unit,
                duration,
                max_vus,
                ..
            } => Some(ArrivalTimes::constant(
                rate / time_unit.as_secs_f64(),
                *duration,
                segment.resplit(*max_vus),
            )),
            Executor::RampingArrivalRate {
                start_rate,
                time_unit,
                stages,
                max_vus,
                ..
            } => Some(ArrivalTimes::ramping(
                start_rate / time_unit.as_secs_f64(),
                stages
                    .iter()
                    .map(|s| (s.duration, s.target as f64 / time_unit.as_secs_f64()))
                    .collect(),
                segment.resplit(*max_vus),
            )),
            _ => None,
        }
    }
}

/// What each new VU is made from.
pub struct VuOptions {
    /// The `--api-base` targets: VU n is pinned to target (n - 1) mod their
    /// number, n its number in the whole test (k6's `exec.vu.idInTest`: with
    /// an execution segment, the global VU it is, the `segment`'s m-th for
    /// the instance's m-th); so are the choices below.
    pub targets: Vec<Arc<BaseUrl>>,
    /// VU n uses account (n − 1) mod their number: the instances of a split
    /// test use the accounts one process would, none twice.
    pub accounts: Vec<(String, String)>,
    pub segment: Tuple,
    pub seed: Option<u64>,
    pub http_debug: bool,
    /// `--local-addr`: VU n connects from address (n − 1) mod the count.
    pub local_addrs: Vec<IpAddr>,
}

/// What every VU of a run shares.
pub struct RunContext {
    pub scenario: Arc<Scenario>,
    pub collector: Arc<Collector>,
    pub vus: VuOptions,
    /// With several targets, each one's `target` tag value.
    target_tags: Vec<Arc<str>>,
    /// Cancelled on Ctrl-C, abortOnFail or the REST API's stop: stop
    /// starting iterations.
    pub stop: CancellationToken,
    /// Pause, stop and the externally-controlled VUs (the REST API's).
    pub control: Arc<Control>,
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
        vus: VuOptions,
        threads: usize,
        control: Arc<Control>,
    ) -> std::io::Result<Arc<RunContext>> {
        let target_tags = match vus.targets.len() {
            1 => Vec::new(),
            _ => vus
                .targets
                .iter()
                .map(|t| Arc::from(t.original.as_str()))
                .collect(),
        };
        Ok(Arc::new(RunContext {
            scenario,
            collector,
            vus,
            target_tags,
            stop: control.stop_token(),
            control,
            interrupted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            next_vu: AtomicU64::new(1),
            workers: Workers::start(threads)?,
            done: CancellationToken::new(),
        }))
    }

    /// The instance's next VU, numbered as k6's `exec.vu.idInTest`: with an
    /// execution segment, the global VU it is. Every VU-indexed choice
    /// (target, account, source address, random stream) follows that
    /// number, so the instances of a split test make the choices one
    /// process would.
    fn new_vu(&self) -> Vu {
        let local = self.next_vu.fetch_add(1, Ordering::Relaxed);
        let id = self.vus.segment.nth_index(local - 1) + 1;
        let nth_of = |count: usize| ((id - 1) % count.max(1) as u64) as usize;
        Vu::new(
            id,
            self.workers.pick(),
            &self.vus.targets[nth_of(self.vus.targets.len())],
            self.vus.accounts[nth_of(self.vus.accounts.len())].clone(),
            self.vus.seed,
            self.vus
                .local_addrs
                .get(nth_of(self.vus.local_addrs.len()))
                .copied(),
            self.vus.http_debug,
        )
    }

    /// Runs one iteration unless `hard` fires first; true when it finished.
    /// With several targets, its samples carry the VU's `target` tag.
    async fn iterate(&self, vu: &mut Vu, hard: &CancellationToken, started: Instant) -> bool {
        match self.target_tags.len() {
            0 => self.iterate_untagged(vu, hard, started).await,
            n => {
                let tag = self.target_tags[((vu.id - 1) % n as u64) as usize].clone();
                crate::metrics::TARGET
                    .scope(tag, self.iterate_untagged(vu, hard, started))
                    .await
            }
        }
    }

    async fn iterate_untagged(
        &self,
        vu: &mut Vu,
        hard: &CancellationToken,
        started: Instant,
    ) -> bool {
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

fn spawn_looping_vu(ctx: &Arc<RunContext>, budget: Budget) -> LoopingVu {
    let leave = Arc::new(AtomicBool::new(false));
    let hard = CancellationToken::new();
    let vu = ctx.new_vu();
    let runtime = vu.runtime.clone();
    let task = runtime.spawn(looping_vu(
        ctx.clone(),
        vu,
        budget,
        leave.clone(),
        hard.clone(),
    ));
    LoopingVu { leave, hard, task }
}

/// A looping VU's task: iterations until its budget, `leave` or the run's
/// stop. Its size is what an idle VU keeps besides its [`Vu`]: the
/// iteration's requests are boxed (see [`RunContext::iterate`]), so the
/// task holds only the think time's timer while the VU waits.
async fn looping_vu(
    ctx: Arc<RunContext>,
    mut vu: Vu,
    mut budget: Budget,
    leave: Arc<AtomicBool>,
    hard: CancellationToken,
) {
    ctx.collector.vu_started();
    while !leave.load(Ordering::Relaxed) && !ctx.stop.is_cancelled() {
        if ctx.control.is_paused() {
            tokio::select! {
                _ = ctx.control.resumed() => {}
                _ = hard.cancelled() => break,
            }
            continue;
        }
        if !budget.take() || !ctx.iterate(&mut vu, &hard, Instant::now()).await {
            break;
        }
    }
    ctx.collector.vu_stopped();
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

/// Runs this execution segment of the executor to its end (or until
/// `ctx.stop`); [`Tuple::full`] runs all of it.
pub async fn run(ctx: Arc<RunContext>, executor: Executor, segment: &Tuple) {
    let share = executor.share(segment);
    ctx.collector.set_vus_max(share.max_vus);
    match executor {
        Executor::RampingVus {
            start_vus,
            stages,
            graceful_ramp_down,
            graceful_stop,
        } => {
            let steps = schedule::vu_steps(start_vus, &stages, segment);
            let total = stages.iter().map(|s| s.duration).sum();
            ramping(ctx, steps, total, graceful_ramp_down, graceful_stop).await
        }
        Executor::ConstantVus {
            vus,
            duration,
            graceful_stop,
        } => {
            let stages = [Stage {
                duration,
                target: vus,
            }];
            let steps = schedule::vu_steps(vus, &stages, segment);
            ramping(ctx, steps, duration, graceful_stop, graceful_stop).await
        }
        Executor::PerVuIterations {
            max_duration,
            graceful_stop,
            ..
        } => {
            let budgets = (0..share.vus)
                .map(|_| Budget::PerVu(share.iterations))
                .collect();
            iterations_executor(ctx, budgets, max_duration, graceful_stop).await
        }
        Executor::SharedIterations {
            max_duration,
            graceful_stop,
            ..
        } => {
            let shared = Arc::new(AtomicI64::new(share.iterations as i64));
            let budgets = (0..share.vus)
                .map(|_| Budget::Shared(shared.clone()))
                .collect();
            iterations_executor(ctx, budgets, max_duration, graceful_stop).await
        }
        Executor::ConstantArrivalRate { graceful_stop, .. }
        | Executor::RampingArrivalRate { graceful_stop, .. } => {
            let total = executor.planned_duration();
            let times = executor
                .arrival_times(segment)
                .expect("an arrival-rate executor has arrival times");
            arrival(ctx, times, total, share, graceful_stop).await
        }
        Executor::ExternallyControlled { duration, .. } => {
            externally_controlled(ctx, duration).await
        }
    }
}

/// Follows the planned VU steps until `total`.
async fn ramping(
    ctx: Arc<RunContext>,
    steps: Vec<VuStep>,
    total: Duration,
    graceful_ramp_down: Duration,
    graceful_stop: Duration,
) {
    let started = ctx.control.mark();
    let mut active: Vec<LoopingVu> = Vec::new();
    let mut leaving: Vec<JoinHandle<()>> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let elapsed = ctx.control.active_since(&started);
        if elapsed >= total || ctx.stop.is_cancelled() {
            break;
        }
        let target = schedule::planned_vus(&steps, elapsed) as usize;
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
    let started = ctx.control.mark();
    let all_done = futures::future::join_all(vus.iter_mut().map(|vu| &mut vu.task));
    tokio::select! {
        _ = all_done => {}
        _ = ctx.control.until_active(&started, max_duration) => {}
        _ = ctx.stop.cancelled() => {}
    }
    retire(vus, graceful_stop).await;
}

/// k6's externally-controlled executor: the VUs the REST API asks for,
/// looping until `duration` (0: until stopped). VUs taken away finish
/// their iteration; at the end the ones still running are interrupted.
async fn externally_controlled(ctx: Arc<RunContext>, duration: Duration) {
    let Some(mut wanted) = ctx.control.external_vus() else {
        return;
    };
    let started: Mark = ctx.control.mark();
    let end = async {
        if duration.is_zero() {
            std::future::pending::<()>().await;
        }
        ctx.control.until_active(&started, duration).await;
    };
    tokio::pin!(end);
    let mut active: Vec<LoopingVu> = Vec::new();
    let mut leaving: Vec<LoopingVu> = Vec::new();
    loop {
        let target = *wanted.borrow_and_update();
        ctx.collector.set_vus_max(target.max_vus);
        while (active.len() as u64) < target.vus {
            active.push(spawn_looping_vu(&ctx, Budget::Unlimited));
        }
        for vu in active.split_off((target.vus as usize).min(active.len())) {
            vu.leave.store(true, Ordering::Relaxed);
            leaving.push(vu);
        }
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { break },
            _ = &mut end => break,
            _ = ctx.stop.cancelled() => break,
        }
    }
    active.append(&mut leaving);
    retire(active, Duration::ZERO).await;
}

async fn arrival(
    ctx: Arc<RunContext>,
    times: ArrivalTimes,
    total: Duration,
    share: Share,
    graceful_stop: Duration,
) {
    let (free_tx, mut free_rx) = tokio::sync::mpsc::unbounded_channel::<Vu>();
    for _ in 0..share.vus {
        let _ = free_tx.send(ctx.new_vu());
    }
    let mut allocated = share.vus;
    let hard = CancellationToken::new();
    let mut running = tokio::task::JoinSet::new();
    let started = ctx.control.mark();
    for scheduled in times {
        if scheduled >= total || ctx.stop.is_cancelled() {
            break;
        }
        // The wall time it came due at, pauses left out of the schedule.
        let due = ctx.control.until_active(&started, scheduled).await;
        if ctx.stop.is_cancelled() {
            break;
        }
        let vu = match free_rx.try_recv() {
            Ok(vu) => Some(vu),
            Err(_) if allocated < share.max_vus => {
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
                let scheduled_at = due;
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
    use crate::segment::{Segment, Sequence};
    use rand::{Rng, SeedableRng};

    #[test]
    fn an_idle_looping_vu_is_small() {
        let base = crate::http::BaseUrl::parse("http://127.0.0.1:9").unwrap();
        let scenario = Scenario::new(crate::scenario::ScenarioConfig::default(), base.clone());
        let collector = Collector::new(Vec::new(), false);
        let vus = VuOptions {
            targets: vec![Arc::new(base)],
            accounts: vec![("a".into(), "b".into())],
            segment: Tuple::full(),
            seed: Some(1),
            http_debug: false,
            local_addrs: Vec::new(),
        };
        let control = Arc::new(Control::new(false, CancellationToken::new(), None));
        let ctx = RunContext::new(scenario, collector, vus, 1, control).unwrap();
        let vu = ctx.new_vu();
        let hard = CancellationToken::new();
        let task = looping_vu(ctx.clone(), vu, Budget::PerVu(1), Arc::default(), hard);
        let size = std::mem::size_of_val(&task);
        // With the requests' state in the task it was 3,160 bytes (debug).
        assert!(size <= 1024, "a looping VU's task is {size} bytes");
    }

    fn shared(vus: u64, iterations: u64) -> Executor {
        Executor::SharedIterations {
            vus,
            iterations,
            max_duration: Duration::from_secs(600),
            graceful_stop: Duration::from_secs(30),
        }
    }

    fn all_of(seq: &Sequence) -> Vec<Tuple> {
        seq.segments()
            .iter()
            .map(|s| Tuple::new(*s, Some(seq)).unwrap())
            .collect()
    }

    #[test]
    fn shares_add_up_and_shared_iterations_follow_vus() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(99);
        for _ in 0..200 {
            let seq = Sequence::equal(rng.gen_range(1..8)).unwrap();
            let (vus, iterations) = (rng.gen_range(1..30), rng.gen_range(0..500));
            let shares: Vec<Share> = all_of(&seq)
                .iter()
                .map(|t| shared(vus, iterations).share(t))
                .collect();
            assert_eq!(shares.iter().map(|s| s.vus).sum::<u64>(), vus);
            assert_eq!(shares.iter().map(|s| s.iterations).sum::<u64>(), iterations);
            // A segment without VUs gets no iterations.
            assert!(shares.iter().all(|s| s.vus > 0 || s.iterations == 0));
        }
        // k6's case: 0:1/3 of 0,1/3,2/3,1, 20 VUs sharing 50 iterations.
        let t = Tuple::new(
            Segment::parse("0:1/3").unwrap(),
            Some(&Sequence::parse("0,1/3,2/3,1").unwrap()),
        )
        .unwrap();
        assert_eq!(
            shared(20, 50).share(&t),
            Share {
                vus: 7,
                max_vus: 7,
                iterations: 18
            }
        );
    }

    #[test]
    fn arrival_executors_split_their_iterations_by_max_vus() {
        let executor = Executor::ConstantArrivalRate {
            rate: 7.0,
            time_unit: Duration::from_secs(1),
            duration: Duration::from_secs(10),
            pre_allocated_vus: 2,
            max_vus: 5,
            graceful_stop: Duration::from_secs(30),
        };
        let whole: Vec<Duration> = executor.arrival_times(&Tuple::full()).unwrap().collect();
        assert_eq!(whole.len(), 70);
        let seq = Sequence::equal(3).unwrap();
        let parts: Vec<Vec<Duration>> = all_of(&seq)
            .iter()
            .map(|t| executor.arrival_times(t).unwrap().collect())
            .collect();
        // 5 VUs over thirds: 2, 2, 1, so the iterations split 2:2:1.
        assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [28, 28, 14]);
        let mut union: Vec<Duration> = parts.concat();
        union.sort();
        assert_eq!(union, whole);
    }
}
