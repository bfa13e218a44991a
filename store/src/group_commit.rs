//! Group commit: many reservations ([`GroupCommit`], with
//! [`ledger::reserve_batch`]) or many generation outcomes ([`FinishCommit`],
//! with [`ledger::finish_sessions`]) share one write transaction.
//!
//! [`GroupCommit::reserve`] hands its request to a committer task through a
//! channel and waits for the answer. A committer takes the first request
//! waiting, then every other one already queued (up to `max_batch`), runs
//! them as one batch and answers each only after the batch's commit; while
//! it commits, the next requests queue up and form the next batch. A batch
//! whose transaction fails answers every one of its requests with
//! [`LedgerError::BatchFailed`]: nothing of it was committed.
//!
//! SQLite has one writer, so it gets one committer. On PostgreSQL several
//! committers run at once; a user's reservations always go to the same one
//! (chosen by the user id), so one user's requests stay serialised in
//! arrival order while different users' commit in parallel. Outcomes are
//! spread by reservation id: the user-row lock orders them.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::db::{Db, Dialect, Id};
use crate::ledger::{self, Accepted, Finished, LedgerError, ReserveRequest, SessionOutcome};

/// How the committers batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// The most requests one transaction decides (at least 1).
    pub max_batch: usize,
    /// Committers on PostgreSQL (at least 1); SQLite always has one.
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
    /// Spawns the committers; `commit` runs one batch.
    fn start<F, Fut>(db: &Db, config: GroupCommitConfig, commit: F) -> Lanes<R, T>
    where
        F: Fn(Db, Vec<R>) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<Vec<Answer<T>>, sqlx::Error>> + Send + 'static,
    {
        let count = match db.dialect() {
            Dialect::Sqlite => 1,
            Dialect::Postgres => config.committers.max(1),
        };
        let max_batch = config.max_batch.max(1);
        let queues = (0..count)
            .map(|_| {
                let (queue, waiting) = mpsc::unbounded_channel();
                tokio::spawn(commit_batches(
                    db.clone(),
                    waiting,
                    max_batch,
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

/// The generate path's reservations, batched. The committers stop once it
/// is dropped and their queues are empty.
pub struct GroupCommit {
    lanes: Lanes<ReserveRequest, Accepted>,
}

impl GroupCommit {
    /// Spawns the committers on the current tokio runtime.
    pub fn start(db: Db, config: GroupCommitConfig) -> GroupCommit {
        let lanes = Lanes::start(&db, config, |db, requests| async move {
            ledger::reserve_batch(&db, &requests, chrono::Utc::now()).await
        });
        GroupCommit { lanes }
    }

    /// Makes the reservation as [`ledger::reserve_for_session`] would,
    /// sharing its transaction with whatever else is waiting; answers once
    /// that transaction has committed. A user's requests always go to the
    /// same committer.
    pub async fn reserve(&self, request: ReserveRequest) -> Answer<Accepted> {
        self.lanes.submit(request.user, request).await
    }
}

/// The workers' outcomes, batched: each recorded as
/// [`ledger::finish_session`] would, many in one transaction.
pub struct FinishCommit {
    lanes: Lanes<(Id, SessionOutcome), Finished>,
}

impl FinishCommit {
    /// Spawns the committers on the current tokio runtime.
    pub fn start(db: Db, config: GroupCommitConfig) -> FinishCommit {
        let lanes = Lanes::start(&db, config, |db, finishes| async move {
            ledger::finish_sessions(&db, &finishes, chrono::Utc::now()).await
        });
        FinishCommit { lanes }
    }

    /// Settles `reservation` with `outcome`; answers once committed.
    pub async fn finish(&self, reservation: Id, outcome: SessionOutcome) -> Answer<Finished> {
        self.lanes.submit(reservation, (reservation, outcome)).await
    }
}
