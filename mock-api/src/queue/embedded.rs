//! The in-process queue: the default when no Redis is configured.
//!
//! It keeps BullMQ's life of a job (see [`super::bullmq`]) in memory: a
//! `wait` deque, an `active` set, `delayed` retries ordered by due time and
//! an attempts counter per job. Job ids are remembered once pushed
//! (finished ones too, the latest [`FINISHED_KEPT`]), so pushing a known id
//! is a no-op, as with a BullMQ job hash.
//!
//! Nothing here survives the process: durability comes from the database
//! outbox. The reconciler ([`crate::jobs::reconciler`]) revives every
//! generation still `processing` that this queue does not hold, so jobs
//! that were waiting, running or delayed when the process died run again
//! in the next one.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use store::db::Id;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{AfterFailure, Depth, Job, NewJob, Queue, QueueError, BACKOFF_BASE, MAX_ATTEMPTS};

/// An in-memory [`Queue`]. Cheap to share behind an `Arc`.
pub struct EmbeddedQueue {
    state: Mutex<State>,
    /// Woken on every change that may make a job ready (push, retry
    /// scheduled, give back), one taker at a time.
    ready: Notify,
    backoff_base: Duration,
}

struct Entry {
    name: String,
    payload: serde_json::Value,
    /// Failed attempts so far (BullMQ's `attemptsMade`).
    attempts_made: u32,
}

#[derive(Default)]
struct State {
    /// Queued and held jobs, by id.
    jobs: HashMap<Id, Entry>,
    /// Ready ids, taken from the front.
    wait: VecDeque<Id>,
    active: HashSet<Id>,
    /// Retries, by due time.
    delayed: BTreeSet<(Instant, Id)>,
    /// Ids that left the queue (completed or out of attempts): still known,
    /// so they are not queued again. Only the latest [`FINISHED_KEPT`] are
    /// kept, oldest first in `finished_order`, so memory stays bounded in
    /// long runs; a job pushed again after that is harmless anyway (the
    /// worker finds its session settled and completes it unrun).
    finished: HashSet<Id>,
    finished_order: VecDeque<Id>,
}

/// How many finished ids an [`EmbeddedQueue`] remembers.
pub const FINISHED_KEPT: usize = 200_000;

impl State {
    /// Queues `job` as new (no attempt made), ready at the back of `wait`.
    fn enqueue(&mut self, job: NewJob) {
        self.jobs.insert(
            job.id,
            Entry {
                name: job.name,
                payload: job.payload,
                attempts_made: 0,
            },
        );
        self.wait.push_back(job.id);
    }

    /// Moves the retries that fell due to the back of `wait`.
    fn promote_due(&mut self, now: Instant) {
        while let Some(&(due, id)) = self.delayed.first() {
            if due > now {
                break;
            }
            self.delayed.pop_first();
            self.wait.push_back(id);
        }
    }

    /// The job left the queue for good.
    fn finish(&mut self, id: Id) {
        self.jobs.remove(&id);
        if self.finished.insert(id) {
            self.finished_order.push_back(id);
            while self.finished_order.len() > FINISHED_KEPT {
                if let Some(old) = self.finished_order.pop_front() {
                    self.finished.remove(&old);
                }
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.delayed.first().map(|&(due, _)| due)
    }

    /// Removes the job from `active`, or answers that it is not held.
    fn release_held(&mut self, job: &Job) -> Result<(), QueueError> {
        if self.active.remove(&job.id) {
            Ok(())
        } else {
            Err(QueueError::Malformed {
                id: job.id.to_string(),
                why: "the job is not held by a worker".into(),
            })
        }
    }
}

impl Default for EmbeddedQueue {
    fn default() -> Self {
        EmbeddedQueue::new()
    }
}

impl EmbeddedQueue {
    /// A queue with the real backend's retry policy ([`BACKOFF_BASE`]).
    pub fn new() -> EmbeddedQueue {
        EmbeddedQueue::with_backoff_base(BACKOFF_BASE)
    }

    /// A queue whose first retry waits `base` (later ones double), so tests
    /// can run through every attempt quickly.
    pub fn with_backoff_base(base: Duration) -> EmbeddedQueue {
        EmbeddedQueue {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            backoff_base: base,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The delay before attempt `attempt + 1` after attempt `attempt` failed.
    fn retry_delay(&self, attempt: u32) -> Duration {
        self.backoff_base
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
    }
}

#[async_trait::async_trait]
impl Queue for EmbeddedQueue {
    async fn push(&self, job: NewJob) -> Result<(), QueueError> {
        {
            let mut state = self.state();
            if state.jobs.contains_key(&job.id) || state.finished.contains(&job.id) {
                return Ok(());
            }
            state.enqueue(job);
        }
        self.ready.notify_one();
        Ok(())
    }

    async fn revive(&self, jobs: Vec<NewJob>) -> Result<usize, QueueError> {
        let mut queued = 0;
        {
            let mut state = self.state();
            for job in jobs {
                if state.jobs.contains_key(&job.id) {
                    continue;
                }
                // Forgotten as finished, so `finish` remembers it again.
                state.finished.remove(&job.id);
                state.enqueue(job);
                queued += 1;
            }
        }
        if queued > 0 {
            self.ready.notify_one();
        }
        Ok(queued)
    }

    async fn take(&self, wait: Duration) -> Result<Option<Job>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            let next_due = {
                let mut state = self.state();
                // Registered while the state is locked, so a push after the
                // lock is released wakes this taker.
                notified.as_mut().enable();
                state.promote_due(Instant::now());
                if let Some(id) = state.wait.pop_front() {
                    state.active.insert(id);
                    let more = !state.wait.is_empty();
                    let entry = state.jobs.get(&id).expect("every queued id has an entry");
                    let job = Job {
                        id,
                        name: entry.name.clone(),
                        payload: entry.payload.clone(),
                        attempt: entry.attempts_made + 1,
                    };
                    drop(state);
                    if more {
                        // Notify permits do not add up: pass the wake on so
                        // another idle taker picks up the next job.
                        self.ready.notify_one();
                    }
                    return Ok(Some(job));
                }
                state.next_due()
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let until = next_due.map_or(deadline, |due| due.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn complete(&self, job: &Job) -> Result<(), QueueError> {
        let mut state = self.state();
        state.release_held(job)?;
        state.finish(job.id);
        Ok(())
    }

    async fn fail(&self, job: &Job, error: &str) -> Result<AfterFailure, QueueError> {
        let after = {
            let mut state = self.state();
            state.release_held(job)?;
            let entry = state
                .jobs
                .get_mut(&job.id)
                .expect("every held id has an entry");
            entry.attempts_made += 1;
            let attempts = entry.attempts_made;
            if attempts >= MAX_ATTEMPTS {
                state.finish(job.id);
                tracing::debug!(job = %job.id, attempts, error, "job out of attempts");
                AfterFailure::Exhausted
            } else {
                let delay = self.retry_delay(attempts);
                state.delayed.insert((Instant::now() + delay, job.id));
                tracing::debug!(job = %job.id, attempts, error, ?delay, "job retry scheduled");
                AfterFailure::RetryIn(delay)
            }
        };
        if matches!(after, AfterFailure::RetryIn(_)) {
            // A taker asleep until its deadline must now wake at the due time.
            self.ready.notify_one();
        }
        Ok(after)
    }

    async fn give_back(&self, job: &Job) -> Result<(), QueueError> {
        {
            let mut state = self.state();
            state.release_held(job)?;
            state.wait.push_front(job.id);
        }
        self.ready.notify_one();
        Ok(())
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let state = self.state();
        Ok(Depth {
            wait: state.wait.len() as u64,
            active: state.active.len() as u64,
            delayed: state.delayed.len() as u64,
        })
    }

    async fn ping(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(5);

    fn new_job(n: u32) -> NewJob {
        NewJob {
            id: Id::random(),
            name: "gen.seedream4".into(),
            payload: json!({ "n": n }),
        }
    }

    fn fast() -> EmbeddedQueue {
        EmbeddedQueue::with_backoff_base(Duration::from_millis(5))
    }

    #[tokio::test]
    async fn jobs_come_out_in_order_with_their_data() {
        let queue = fast();
        let jobs: Vec<NewJob> = (0..3).map(new_job).collect();
        for job in &jobs {
            queue.push(job.clone()).await.unwrap();
        }
        assert_eq!(
            queue.depth().await.unwrap(),
            Depth {
                wait: 3,
                active: 0,
                delayed: 0
            }
        );
        for expected in &jobs {
            let job = queue.take(PATIENCE).await.unwrap().unwrap();
            assert_eq!(job.id, expected.id);
            assert_eq!(job.name, expected.name);
            assert_eq!(job.payload, expected.payload);
            assert_eq!(job.attempt, 1);
        }
        assert_eq!(queue.depth().await.unwrap().active, 3);
        assert!(queue.ping().await);
    }

    #[tokio::test]
    async fn a_known_id_is_queued_once_even_after_it_finished() {
        let queue = fast();
        let job = new_job(1);
        queue.push(job.clone()).await.unwrap();
        queue.push(job.clone()).await.unwrap();
        assert_eq!(queue.depth().await.unwrap().wait, 1);
        let held = queue.take(PATIENCE).await.unwrap().unwrap();
        queue.push(job.clone()).await.unwrap();
        assert_eq!(queue.depth().await.unwrap().wait, 0);
        queue.complete(&held).await.unwrap();
        queue.push(job).await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), Depth::default());
        assert!(queue
            .take(Duration::from_millis(20))
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn take_times_out_empty_and_wakes_on_push() {
        let queue = Arc::new(fast());
        let started = std::time::Instant::now();
        assert!(queue
            .take(Duration::from_millis(50))
            .await
            .unwrap()
            .is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));

        let taker = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.take(PATIENCE).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        let job = new_job(7);
        let started = std::time::Instant::now();
        queue.push(job.clone()).await.unwrap();
        let taken = taker.await.unwrap().unwrap().unwrap();
        assert_eq!(taken.id, job.id);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn many_idle_takers_all_get_jobs() {
        let queue = Arc::new(fast());
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let queue = Arc::clone(&queue);
                tokio::spawn(async move { queue.take(PATIENCE).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let started = std::time::Instant::now();
        for n in 0..4 {
            queue.push(new_job(n)).await.unwrap();
        }
        let mut ids = HashSet::new();
        for taker in takers {
            ids.insert(taker.await.unwrap().unwrap().unwrap().id);
        }
        assert_eq!(ids.len(), 4);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn failures_retry_with_backoff_until_out_of_attempts() {
        let queue = fast();
        let job = new_job(1);
        queue.push(job.clone()).await.unwrap();
        for attempt in 1..=MAX_ATTEMPTS {
            let held = queue.take(PATIENCE).await.unwrap().unwrap();
            assert_eq!(held.id, job.id);
            assert_eq!(held.attempt, attempt);
            let after = queue.fail(&held, "boom").await.unwrap();
            if attempt < MAX_ATTEMPTS {
                let delay = Duration::from_millis(5) * 2u32.pow(attempt - 1);
                assert_eq!(after, AfterFailure::RetryIn(delay));
                assert_eq!(queue.depth().await.unwrap().delayed, 1);
            } else {
                assert_eq!(after, AfterFailure::Exhausted);
            }
        }
        assert_eq!(queue.depth().await.unwrap(), Depth::default());
        queue.push(job).await.unwrap();
        assert_eq!(queue.depth().await.unwrap().wait, 0);
    }

    #[tokio::test]
    async fn a_retry_is_not_taken_before_it_is_due() {
        let queue = EmbeddedQueue::with_backoff_base(Duration::from_millis(200));
        queue.push(new_job(1)).await.unwrap();
        let held = queue.take(PATIENCE).await.unwrap().unwrap();
        let failed_at = std::time::Instant::now();
        queue.fail(&held, "boom").await.unwrap();
        assert!(queue
            .take(Duration::from_millis(50))
            .await
            .unwrap()
            .is_none());
        let again = queue.take(PATIENCE).await.unwrap().unwrap();
        assert!(failed_at.elapsed() >= Duration::from_millis(200));
        assert_eq!(again.attempt, 2);
    }

    #[tokio::test]
    async fn given_back_jobs_go_first_without_using_an_attempt() {
        let queue = fast();
        let first = new_job(1);
        let second = new_job(2);
        queue.push(first.clone()).await.unwrap();
        queue.push(second.clone()).await.unwrap();
        let held = queue.take(PATIENCE).await.unwrap().unwrap();
        assert_eq!(held.id, first.id);
        queue.give_back(&held).await.unwrap();
        let again = queue.take(PATIENCE).await.unwrap().unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(again.attempt, 1);
    }

    #[tokio::test]
    async fn revive_queues_finished_and_unknown_jobs_but_not_live_ones() {
        let queue = fast();
        let finished = new_job(1);
        let waiting = new_job(2);
        let unknown = new_job(3);
        queue.push(finished.clone()).await.unwrap();
        let held = queue.take(PATIENCE).await.unwrap().unwrap();
        queue.complete(&held).await.unwrap();
        queue.push(waiting.clone()).await.unwrap();
        let revived = queue
            .revive(vec![finished.clone(), waiting.clone(), unknown.clone()])
            .await
            .unwrap();
        assert_eq!(revived, 2);
        assert_eq!(queue.depth().await.unwrap().wait, 3);
        let mut taken = Vec::new();
        for _ in 0..3 {
            let job = queue.take(PATIENCE).await.unwrap().unwrap();
            assert_eq!(job.attempt, 1);
            taken.push(job.id);
        }
        assert_eq!(taken, vec![waiting.id, finished.id, unknown.id]);
        // Held jobs are live: not queued twice.
        assert_eq!(queue.revive(vec![finished, unknown]).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn settling_a_job_not_held_is_an_error() {
        let queue = fast();
        let job = new_job(1);
        queue.push(job.clone()).await.unwrap();
        let fake = Job {
            id: job.id,
            name: job.name,
            payload: job.payload,
            attempt: 1,
        };
        assert!(queue.complete(&fake).await.is_err());
        assert!(queue.fail(&fake, "x").await.is_err());
        assert!(queue.give_back(&fake).await.is_err());
        let held = queue.take(PATIENCE).await.unwrap().unwrap();
        queue.complete(&held).await.unwrap();
        assert!(queue.complete(&held).await.is_err());
    }
}
