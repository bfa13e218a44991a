//! Group commit: many reservations and many generation outcomes share one
//! write transaction ([`ledger::reserve_in`] and [`ledger::finish_in`] on
//! SQLite; [`ledger::reserve_batch`] and [`ledger::finish_sessions`] on
//! PostgreSQL).
//!
//! [`GroupCommit::reserve`] and [`GroupCommit::finish`] hand their request
//! to a committer task through a channel and wait for the answer. A
//! committer takes the first request waiting, then every other one already
//! queued (up to `max_batch`), runs them as one round and answers each only
//! after the round's commit; while it commits, the next requests queue up
//! and form the next round. A round whose transaction fails answers every
//! one of its requests with [`LedgerError::BatchFailed`]: nothing of it was
//! committed.
//!
//! SQLite has one writer, so it gets one committer for everything: a round
//! records the outcomes waiting, then makes the reservations waiting, and
//! (started with [`GroupCommit::start_dispatching`]) hands the accepted
//! generations' jobs to the queue and writes their outbox rows already
//! marked dispatched, so one commit does what took three transactions
//! (accept, relay, finish). A job may be taken before its round commits:
//! its outcome comes back to the same committer, so it is recorded in a
//! later round, after that commit.
//!
//! On PostgreSQL several committers run at once: reservations go to one
//! set, a user's always to the same one (chosen by the user id), so one
//! user's requests stay serialised in arrival order while different users'
//! commit in parallel; outcomes go to another set, spread by reservation
//! id (`ledger::postgres` orders them). The relay dispatches: a job queued
//! before its reservation commits could be finished on another connection
//! that cannot see it yet.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::db::{BeginWrite, Db, Dialect, Id};
use crate::ledger::{
    self, Accepted, Dispatch, Finished, LedgerError, ReserveRequest, SessionOutcome,
};

/// How the committers batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// The most requests one transaction decides (at least 1).
    pub max_batch: usize,
    /// Committers on PostgreSQL (at least 1) for reservations, and as many
    /// for outcomes; SQLite always has one for both.
    pub committers: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            max_batch: 256,
            committers: 4,
        }
    }
}

type Answer<T> = Result<T, LedgerError>;

struct Pending<R, T> {
    request: R,
    answer: oneshot::Sender<Answer<T>>,
}

/// Committer tasks, each fed by its own queue.
struct Lanes<R, T> {
    queues: Vec<mpsc::UnboundedSender<Pending<R, T>>>,
}

impl<R: Send + 'static, T: Send + 'static> Lanes<R, T> {
    /// Spawns `count` committers; `commit` runs one round.
    fn start<F, Fut>(db: &Db, count: usize, max_batch: usize, commit: F) -> Lanes<R, T>
    where
        F: Fn(Db, Vec<R>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Vec<Answer<T>>, sqlx::Error>> + Send + 'static,
    {
        let queues = (0..count.max(1))
            .map(|_| {
                let (queue, waiting) = mpsc::unbounded_channel();
                tokio::spawn(commit_batches(
                    db.clone(),
                    waiting,
                    max_batch.max(1),
                    commit.clone(),
                ));
                queue
            })
            .collect();
        Lanes { queues }
    }

    /// Queues `request` on the committer of `key` and waits for its answer.
    async fn submit(&self, key: Id, request: R) -> Answer<T> {
        let lane = (key.0.as_u128() % self.queues.len() as u128) as usize;
        let (answer, answered) = oneshot::channel();
        if self.queues[lane].send(Pending { request, answer }).is_err() {
            return Err(LedgerError::Db(sqlx::Error::PoolClosed));
        }
        // A committer that went away without answering (the runtime shuts
        // down) counts as a closed database.
        answered
            .await
            .unwrap_or(Err(LedgerError::Db(sqlx::Error::PoolClosed)))
    }
}

async fn commit_batches<R, T, F, Fut>(
    db: Db,
    mut waiting: mpsc::UnboundedReceiver<Pending<R, T>>,
    max_batch: usize,
    commit: F,
) where
    F: Fn(Db, Vec<R>) -> Fut,
    Fut: Future<Output = Result<Vec<Answer<T>>, sqlx::Error>>,
{
    let mut batch: Vec<Pending<R, T>> = Vec::with_capacity(max_batch);
    while waiting.recv_many(&mut batch, max_batch).await > 0 {
        let (requests, answers): (Vec<R>, Vec<oneshot::Sender<Answer<T>>>) = batch
            .drain(..)
            .map(|pending| (pending.request, pending.answer))
            .unzip();
        match commit(db.clone(), requests).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    // The requester may have gone (client disconnected):
                    // what committed stands.
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                let failure = Arc::new(e);
                for answer in answers {
                    let _ = answer.send(Err(LedgerError::BatchFailed(Arc::clone(&failure))));
                }
            }
        }
    }
}

/// What a committer is asked to do.
enum Work {
    Reserve(Box<ReserveRequest>),
    Finish(Id, SessionOutcome),
}

/// What it answers.
enum Done {
    Reserved(Accepted),
    Finished(Finished),
}

/// One round: the outcomes among `works`, then the reservations, in one
/// transaction; answers in the order of `works`.
async fn commit_round(
    db: Db,
    works: Vec<Work>,
    dispatch: Option<Arc<dyn Dispatch>>,
) -> Result<Vec<Answer<Done>>, sqlx::Error> {
    let now = chrono::Utc::now();
    let mut reserves = Vec::new();
    let mut finishes = Vec::new();
    let kinds: Vec<bool> = works
        .into_iter()
        .map(|work| match work {
            Work::Reserve(request) => {
                reserves.push(*request);
                false
            }
            Work::Finish(reservation, outcome) => {
                finishes.push((reservation, outcome));
                true
            }
        })
        .collect();
    let (finished, reserved) = match &db {
        Db::Sqlite(pool) => {
            let mut tx = pool.begin_write().await?;
            let finished = if finishes.is_empty() {
                Vec::new()
            } else {
                ledger::finish_in(&mut tx, &finishes, now).await?
            };
            let reserved = if reserves.is_empty() {
                Vec::new()
            } else {
                ledger::reserve_in(&mut tx, &reserves, now, dispatch.as_deref()).await?
            };
            tx.commit().await?;
            (finished, reserved)
        }
        // A PostgreSQL round holds one kind of work (reservations and
        // outcomes have lanes of their own), each batch in a transaction
        // of its own (`ledger::postgres`).
        Db::Postgres(_) => {
            let finished = if finishes.is_empty() {
                Vec::new()
            } else {
                ledger::finish_sessions(&db, &finishes, now).await?
            };
            let reserved = if reserves.is_empty() {
                Vec::new()
            } else {
                ledger::reserve_batch(&db, &reserves, now).await?
            };
            (finished, reserved)
        }
    };
    let (mut finished, mut reserved) = (finished.into_iter(), reserved.into_iter());
    Ok(kinds
        .into_iter()
        .map(|is_finish| {
            if is_finish {
                let answer = finished.next().expect("one answer per outcome");
                answer.map(Done::Finished)
            } else {
                let answer = reserved.next().expect("one answer per reservation");
                answer.map(Done::Reserved)
            }
        })
        .collect())
}

/// The generate path's reservations and the workers' outcomes, batched.
/// The committers stop once it is dropped and their queues are empty.
pub struct GroupCommit {
    reserves: Lanes<Work, Done>,
    /// `None`: outcomes share the reservations' committer (SQLite).
    finishes: Option<Lanes<Work, Done>>,
    dispatches: bool,
}

impl GroupCommit {
    /// Spawns the committers on the current tokio runtime; the relay
    /// dispatches every accepted generation.
    pub fn start(db: Db, config: GroupCommitConfig) -> GroupCommit {
        GroupCommit::start_with(db, config, None)
    }

    /// Like [`start`](Self::start), and on SQLite each round hands the jobs
    /// it accepts to `dispatch` itself (see the module doc); on PostgreSQL
    /// `dispatch` is not used and the relay dispatches.
    pub fn start_dispatching(
        db: Db,
        config: GroupCommitConfig,
        dispatch: Arc<dyn Dispatch>,
    ) -> GroupCommit {
        GroupCommit::start_with(db, config, Some(dispatch))
    }

    fn start_with(
        db: Db,
        config: GroupCommitConfig,
        dispatch: Option<Arc<dyn Dispatch>>,
    ) -> GroupCommit {
        let round = |dispatch: Option<Arc<dyn Dispatch>>| {
            move |db: Db, works: Vec<Work>| commit_round(db, works, dispatch.clone())
        };
        match db.dialect() {
            Dialect::Sqlite => GroupCommit {
                dispatches: dispatch.is_some(),
                reserves: Lanes::start(&db, 1, config.max_batch, round(dispatch)),
                finishes: None,
            },
            Dialect::Postgres => GroupCommit {
                dispatches: false,
                reserves: Lanes::start(&db, config.committers, config.max_batch, round(None)),
                finishes: Some(Lanes::start(
                    &db,
                    config.committers,
                    config.max_batch,
                    round(None),
                )),
            },
        }
    }

    /// Whether the rounds dispatch the jobs they accept themselves: then
    /// the relay need not be woken for them.
    pub fn dispatches(&self) -> bool {
        self.dispatches
    }

    /// Makes the reservation as [`ledger::reserve_for_session`] would,
    /// sharing its transaction with whatever else is waiting; answers once
    /// that transaction has committed. A user's requests always go to the
    /// same committer.
    pub async fn reserve(&self, request: ReserveRequest) -> Answer<Accepted> {
        match self
            .reserves
            .submit(request.user, Work::Reserve(Box::new(request)))
            .await?
        {
            Done::Reserved(accepted) => Ok(accepted),
            Done::Finished(_) => unreachable!("a reservation is answered as one"),
        }
    }

    /// Settles `reservation` with `outcome` as [`ledger::finish_session`]
    /// would, sharing its transaction; answers once committed.
    pub async fn finish(&self, reservation: Id, outcome: SessionOutcome) -> Answer<Finished> {
        let lanes = self.finishes.as_ref().unwrap_or(&self.reserves);
        match lanes
            .submit(reservation, Work::Finish(reservation, outcome))
            .await?
        {
            Done::Finished(finished) => Ok(finished),
            Done::Reserved(_) => unreachable!("an outcome is answered as one"),
        }
    }
}
