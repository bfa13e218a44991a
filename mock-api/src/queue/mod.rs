//! The generation job queue (contract §5): a [`Queue`] trait with an
//! embedded implementation (in-process, fed from the database outbox) and a
//! Redis implementation in BullMQ's key layout.
//!
//! The outbox is the source of truth: the relay moves undispatched outbox
//! rows into the queue, workers take jobs from it, and a job's id is its
//! reservation id, so pushing the same job twice queues it once.

use std::time::Duration;

use store::db::Id;

pub mod bullmq;
pub mod embedded;

/// BullMQ's retry policy of the real backend: 5 attempts, exponential
/// backoff from 1000 ms.
pub const MAX_ATTEMPTS: u32 = 5;
pub const BACKOFF_BASE: Duration = Duration::from_millis(1000);

/// The delay before attempt `attempt + 1` after attempt `attempt` (1-based)
/// failed: 1 s, 2 s, 4 s, 8 s.
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE * 2u32.saturating_pow(attempt.saturating_sub(1))
}

/// A job as the relay pushes it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// The reservation id.
    pub id: Id,
    /// `gen.seedream4`.
    pub name: String,
    /// The outbox row's payload (contract §5).
    pub payload: serde_json::Value,
}

/// A job a worker holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: Id,
    pub name: String,
    pub payload: serde_json::Value,
    /// 1 for the first run.
    pub attempt: u32,
}

/// What happens to a job after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    RetryIn(Duration),
    /// No attempts left: the worker records the failure for good.
    Exhausted,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Depth {
    pub wait: u64,
    pub active: u64,
    pub delayed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("malformed job {id}: {why}")]
    Malformed { id: String, why: String },
}

#[async_trait::async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Queues a job unless a job with its id is already known.
    async fn push(&self, job: NewJob) -> Result<(), QueueError>;
    /// Pushes `jobs` in order, as [`push`](Self::push) would each, and
    /// stops at the first failure: returns how many were pushed, and that
    /// failure. The Redis queue pushes them all in one round trip (then
    /// all or none).
    async fn push_all(&self, jobs: Vec<NewJob>) -> (usize, Result<(), QueueError>) {
        let mut pushed = 0;
        for job in jobs {
            if let Err(e) = self.push(job).await {
                return (pushed, Err(e));
            }
            pushed += 1;
        }
        (pushed, Ok(()))
    }
    /// Queues again each job that is neither waiting, delayed nor held
    /// (including one the queue finished, or one it never had or lost),
    /// with its attempts counted from zero; returns how many were queued.
    /// The reconciler ([`crate::jobs::reconciler`]) calls it for sessions
    /// still `processing` whose job the queue no longer runs.
    async fn revive(&self, jobs: Vec<NewJob>) -> Result<usize, QueueError>;
    /// The next job ready to run, held (locked) by this worker; waits up to
    /// `wait` for one.
    ///
    /// Dropping the future midway loses no job: the embedded queue hands a
    /// job over without awaiting, and a Redis job moved or locked for a
    /// take that never returned is put back by the stalled-job recovery
    /// (at its next look if it was not locked yet, after the lock TTL if it
    /// was).
    async fn take(&self, wait: Duration) -> Result<Option<Job>, QueueError>;
    /// The job finished (successfully or for good): it leaves the queue.
    async fn complete(&self, job: &Job) -> Result<(), QueueError>;
    /// An attempt failed: the queue retries it later or gives up.
    async fn fail(&self, job: &Job, error: &str) -> Result<AfterFailure, QueueError>;
    /// Hands a held job back unfinished (shutdown), to run again later.
    async fn give_back(&self, job: &Job) -> Result<(), QueueError>;
    async fn depth(&self) -> Result<Depth, QueueError>;
    /// Whether the queue's backing service answers (for `/readyz`).
    async fn ping(&self) -> bool;
    /// Whether the queue can take a job now, as last seen: no round trip,
    /// so generate reads it on every request. The Redis queue keeps it from
    /// its pushes and a ping every [`bullmq::HEALTH_EVERY`]; the embedded
    /// queue always can.
    fn accepting(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second() {
        let delays: Vec<u64> = (1..MAX_ATTEMPTS)
            .map(|a| backoff(a).as_millis() as u64)
            .collect();
        assert_eq!(delays, vec![1000, 2000, 4000, 8000]);
    }
}
