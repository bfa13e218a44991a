//! Background work of the enqueue-first path (contract §5): the outbox
//! relay, the generation workers, the reconciler and the reservation
//! sweeper.
//!
//! - The **relay** ([`relay`]) moves undispatched outbox rows into the
//!   [`Queue`]; the HTTP handler wakes it after each 202 and it also polls
//!   every `outbox_poll` (two loops on PostgreSQL, [`RELAYS_ON_POSTGRES`]).
//! - The **workers** ([`worker`]) take jobs, run the [`Provider`] and record
//!   the outcome with [`ledger::finish_session`] (capture + images, or
//!   release + error), retrying failed attempts as the queue says; the
//!   outcomes of all workers are group-committed (`GroupCommit::finish`),
//!   many in one transaction (on SQLite the same one as the generate
//!   path's reservations). A worker does not wait for its outcome's
//!   commit: it hands the outcome over and takes its next job, which stays
//!   `active` until the commit (at most [`SETTLING_PER_WORKER`] outcomes
//!   per worker wait so).
//! - The **reconciler** ([`reconciler`]) queues again, every
//!   `reconcile_every` while the mock serves, the generations still
//!   `processing` whose job the queue lost or finished unrecorded.
//! - The **sweeper** ([`sweeper`]) expires reservations past their TTL.
//!
//! # Nothing accepted is lost
//!
//! An accepted generation is a `processing` session plus an outbox row,
//! committed together. The relay marks a row dispatched only after the
//! queue took the job, and a worker completes a job only after its outcome
//! is committed. At shutdown a worker gets `grace` to finish its provider
//! call; past it, the job is handed back to the queue. On start the relay
//! re-dispatches every session still `processing` (see [`relay`]), so jobs
//! that lived only in an embedded queue run again. Recording an outcome is
//! idempotent (a session is only updated while `processing`, a reservation
//! is settled once), so a job that runs twice still completes once.
//!
//! [`ledger::finish_session`]: store::ledger::finish_session

use std::sync::Arc;
use std::time::Duration;

use store::db::{Db, Dialect};
use store::group_commit::{GroupCommit, GroupCommitConfig};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::provider::Provider;
use crate::queue::Queue;

pub mod reconciler;
pub mod relay;
pub mod sweeper;
pub mod worker;

pub use worker::{run_generation, GenerationResult};

/// Outcomes a worker may have handed over and not yet seen recorded: a
/// worker runs its next provider call while its last outcomes wait for
/// their group commit, so a commit round takes what all workers finished
/// meanwhile instead of one outcome per worker.
const SETTLING_PER_WORKER: usize = 4;

/// Relay loops on PostgreSQL. Their rounds take disjoint rows (`FOR UPDATE
/// SKIP LOCKED`), so while one round waits on its round trips another
/// dispatches: at a few thousand generations/s one loop of
/// `OUTBOX_BATCH`-row rounds fell behind the accepts (BENCHMARKS.md, "The
/// drain keeps pace"). On SQLite the generate path's committer dispatches
/// what it accepts, and one writer serialises rounds anyway: one loop.
const RELAYS_ON_POSTGRES: usize = 2;

#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// Workers running generations at once (`GEN_WORKER_CONCURRENCY`,
    /// default 5); 0 counts as 1.
    pub concurrency: usize,
    /// How often the relay looks at the outbox when nobody wakes it
    /// (`OUTBOX_POLL_MS`, default 1000 ms).
    pub outbox_poll: Duration,
    /// Outbox rows dispatched per transaction (`OUTBOX_BATCH`, default 25).
    pub outbox_batch: i64,
    /// At shutdown, how long a running provider call may take before its
    /// job is handed back to the queue (default 10 s).
    pub grace: Duration,
    /// How often overdue reservations are expired (default 5 s).
    pub sweep_every: Duration,
    /// How often the reconciler looks for stranded generations, and how
    /// long after its dispatch a generation may be one
    /// (`RECONCILE_EVERY_MS`, default 5 s).
    pub reconcile_every: Duration,
    /// How the workers' outcomes are batched into shared transactions
    /// (`GENERATE_BATCH_MAX`, `GENERATE_COMMITTERS`).
    pub group_commit: GroupCommitConfig,
    /// The longest single wait of a worker's `take`; shutdown interrupts
    /// it (default 500 ms).
    pub take_wait: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            concurrency: 5,
            outbox_poll: Duration::from_millis(1000),
            outbox_batch: 25,
            grace: Duration::from_secs(10),
            sweep_every: Duration::from_secs(5),
            reconcile_every: Duration::from_secs(5),
            take_wait: Duration::from_millis(500),
            group_commit: GroupCommitConfig::default(),
        }
    }
}

/// The running relay, workers, reconciler and sweeper.
pub struct Jobs {
    wake: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
    settling: TaskTracker,
}

impl Jobs {
    /// Spawns the relay, `concurrency` workers, the reconciler and the
    /// sweeper; they run
    /// until `shutdown` is cancelled.
    pub fn start(
        db: Db,
        queue: Arc<dyn Queue>,
        provider: Arc<Provider>,
        config: JobsConfig,
        shutdown: CancellationToken,
    ) -> Jobs {
        let commits = Arc::new(GroupCommit::start(db.clone(), config.group_commit));
        Jobs::start_shared(
            db,
            queue,
            provider,
            config,
            shutdown,
            Arc::new(Notify::new()),
            commits,
        )
    }

    /// Like [`start`](Self::start), with the relay woken through `wake`
    /// and the outcomes recorded through `commits`, shared with the
    /// generate path (for an app state built before the jobs start).
    pub fn start_shared(
        db: Db,
        queue: Arc<dyn Queue>,
        provider: Arc<Provider>,
        config: JobsConfig,
        shutdown: CancellationToken,
        wake: Arc<Notify>,
        commits: Arc<GroupCommit>,
    ) -> Jobs {
        tracing::info!(
            workers = config.concurrency.max(1),
            outbox_poll_ms = config.outbox_poll.as_millis() as u64,
            outbox_batch = config.outbox_batch,
            grace_ms = config.grace.as_millis() as u64,
            reconcile_every_ms = config.reconcile_every.as_millis() as u64,
            provider_seed = provider.seed(),
            "starting the outbox relay, the workers, the reconciler and the sweeper"
        );
        let relays = match db.dialect() {
            Dialect::Postgres => RELAYS_ON_POSTGRES,
            Dialect::Sqlite => 1,
        };
        let mut tasks = Vec::with_capacity(config.concurrency.max(1) + relays + 2);
        for _ in 0..relays {
            tasks.push(tokio::spawn(relay::run(
                db.clone(),
                Arc::clone(&queue),
                Arc::clone(&wake),
                relay::RelayConfig {
                    poll: config.outbox_poll,
                    batch: config.outbox_batch.max(1),
                },
                shutdown.clone(),
            )));
        }
        tasks.push(tokio::spawn(reconciler::run(
            db.clone(),
            Arc::clone(&queue),
            config.reconcile_every,
            shutdown.clone(),
        )));
        let settling = worker::Settling {
            permits: Arc::new(Semaphore::new(
                config.concurrency.max(1) * SETTLING_PER_WORKER,
            )),
            tracker: TaskTracker::new(),
        };
        let worker = worker::Worker {
            commits,
            queue,
            provider,
            grace: config.grace,
            take_wait: config.take_wait,
            shutdown: shutdown.clone(),
            settling: settling.clone(),
        };
        for n in 0..config.concurrency.max(1) {
            tasks.push(tokio::spawn(worker.clone().run(n)));
        }
        tasks.push(tokio::spawn(sweeper::run(db, config.sweep_every, shutdown)));
        Jobs {
            wake,
            tasks,
            settling: settling.tracker,
        }
    }

    /// Makes the relay dispatch now instead of at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The relay's wake-up, for the HTTP state.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Waits for every task to end. They end only once the shutdown token
    /// is cancelled; workers then finish (within the grace) or hand back
    /// their jobs, and the outcomes they handed over are recorded.
    pub async fn join(self) {
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a background job task panicked");
            }
        }
        self.settling.close();
        self.settling.wait().await;
        tracing::info!("background jobs stopped");
    }
}
