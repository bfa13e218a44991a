//! Group commit of the generate path: many reservations share one write
//! transaction ([`ledger::reserve_batch`]).
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
//! committers run at once; a user's requests always go to the same one
//! (chosen by the user id), so one user's requests stay serialised in
//! arrival order while different users' commit in parallel.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::db::{Db, Dialect, Id};
use crate::ledger::{self, Accepted, LedgerError, ReserveRequest};

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

type Answer = Result<Accepted, LedgerError>;

struct Pending {
    request: ReserveRequest,
    answer: oneshot::Sender<Answer>,
}

/// The committers' front door. Cheap to share behind an `Arc`; the
/// committers stop once it is dropped and their queues are empty.
pub struct GroupCommit {
    committers: Vec<mpsc::UnboundedSender<Pending>>,
}

impl GroupCommit {
    /// Spawns the committers on the current tokio runtime.
    pub fn start(db: Db, config: GroupCommitConfig) -> GroupCommit {
        let count = match db.dialect() {
            Dialect::Sqlite => 1,
            Dialect::Postgres => config.committers.max(1),
        };
        let max_batch = config.max_batch.max(1);
        let committers = (0..count)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(commit_batches(db.clone(), rx, max_batch));
                tx
            })
            .collect();
        GroupCommit { committers }
    }

    /// Makes the reservation as [`ledger::reserve_for_session`] would,
    /// sharing its transaction with whatever else is waiting; answers once
    /// that transaction has committed.
    pub async fn reserve(&self, request: ReserveRequest) -> Answer {
        let committer = &self.committers[committer_of(request.user, self.committers.len())];
        let (answer, answered) = oneshot::channel();
        if committer.send(Pending { request, answer }).is_err() {
            return Err(LedgerError::Db(sqlx::Error::PoolClosed));
        }
        // A committer that went away without answering (the runtime shuts
        // down) counts as a closed database.
        answered
            .await
            .unwrap_or(Err(LedgerError::Db(sqlx::Error::PoolClosed)))
    }
}

/// Which committer serves `user`: always the same one.
fn committer_of(user: Id, committers: usize) -> usize {
    let bytes = user.0.as_u128();
    (bytes % committers as u128) as usize
}

async fn commit_batches(db: Db, mut queue: mpsc::UnboundedReceiver<Pending>, max_batch: usize) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let (requests, answers): (Vec<ReserveRequest>, Vec<oneshot::Sender<Answer>>) = batch
            .drain(..)
            .map(|pending| (pending.request, pending.answer))
            .unzip();
        match ledger::reserve_batch(&db, &requests, chrono::Utc::now()).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    // The requester may have gone (client disconnected):
                    // its reservation stands, like any committed one.
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
