//! The generation workers, and [`run_generation`] for the direct path.
//!
//! A worker takes a job, reads the contract §5 payload, runs the provider
//! and records the outcome:
//!
//! - success: [`ledger::finish_session`] `Completed` (capture + images),
//!   then the job is completed;
//! - provider failure: the queue decides. A retry changes nothing in the
//!   database (the session stays `processing`, the reservation `reserved`);
//!   out of attempts, `finish_session` `Failed` (release + `error_details`
//!   `{"error", "status", "attempts"}`), then the job is completed;
//! - a malformed job fails for good at once (its session failed, the job
//!   completed): retrying cannot fix it;
//! - a session already settled (a job run twice, a reservation the sweeper
//!   expired) or unknown: the ledger refuses the outcome or changes
//!   nothing (a session is only updated while `processing`, its images
//!   only stored then), and the job is completed. The worker reads nothing
//!   from the database before running a job: everything it needs is in
//!   the payload, and the finish answers the credits it settled.
//!
//! At shutdown the provider call gets the grace period; past it the job is
//! handed back to the queue unrecorded.
//!
//! Provider faults ([`crate::faults`]) reach the worker as ordinary
//! [`ProviderFailure`]s from [`Provider::generate`], so they follow the
//! same path: an injected error, a `timeout` (504 once the provider
//! deadline, `MOCK_PROVIDER_TIMEOUT`, has passed) and a `partial` result
//! (502: only k of n outputs, which the ledger cannot capture in part) are
//! failed attempts, retried per the queue policy and, out of attempts,
//! recorded as a `failed` session with its credits released.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use store::db::{Db, Id};
use store::group_commit::GroupCommit;
use store::ledger::{
    self, Finished, LedgerError, NewImage, ReservationStatus, SessionOutcome, Transition,
    GENERATION_EVENT,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::provider::{GenerationRequest, Provider, ProviderFailure};
use crate::queue::{AfterFailure, Job, Queue, QueueError};

/// `error_details.error` of a generation that outlived its reservation (the
/// sweeper's wording).
pub const EXPIRED_ERROR: &str = "reservation expired before the generation finished";

/// How long a worker waits before taking again after the queue failed.
const QUEUE_ERROR_PAUSE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct Worker {
    pub commits: Arc<GroupCommit>,
    pub queue: Arc<dyn Queue>,
    pub provider: Arc<Provider>,
    pub grace: Duration,
    pub take_wait: Duration,
    pub shutdown: CancellationToken,
    pub settling: Settling,
}

/// The outcomes handed over by the workers and not yet recorded: at most
/// as many as the permits, each a task of the tracker (which
/// [`super::Jobs::join`] waits for).
#[derive(Clone)]
pub(crate) struct Settling {
    pub permits: Arc<Semaphore>,
    pub tracker: TaskTracker,
}

impl Worker {
    fn recorder(&self) -> Recorder<'_> {
        Recorder::Batched(&self.commits)
    }

    pub async fn run(self, n: usize) {
        tracing::debug!(worker = n, "worker started");
        loop {
            // Shutdown interrupts a waiting `take` at once; dropping it
            // loses no job (see `Queue::take`).
            let taken = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                taken = self.queue.take(self.take_wait) => taken,
            };
            match taken {
                Ok(Some(job)) => {
                    if self.shutdown.is_cancelled() {
                        self.give_back(&job).await;
                        break;
                    }
                    self.handle(job).await;
                }
                Ok(None) => {}
                Err(e @ QueueError::Malformed { .. }) => {
                    metrics::counter!("mock_jobs_total", "outcome" => "failed").increment(1);
                    tracing::warn!(worker = n, error = %e, "malformed job dropped by the queue");
                }
                Err(e) => {
                    tracing::warn!(worker = n, error = %e, "cannot take a job");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(QUEUE_ERROR_PAUSE) => {}
                    }
                }
            }
        }
        tracing::debug!(worker = n, "worker stopped");
    }

    async fn handle(&self, job: Job) {
        let request = match parse_request(&job) {
            Ok(request) => request,
            Err(why) => return self.malformed(&job, &why).await,
        };
        let started = Instant::now();
        let generated = {
            let generation = self.provider.generate(&request);
            tokio::pin!(generation);
            tokio::select! {
                result = &mut generation => Some(result),
                _ = grace_over(&self.shutdown, self.grace) => None,
            }
        };
        let Some(generated) = generated else {
            tracing::info!(reservation = %job.id, attempt = job.attempt, "shutting down: job handed back unfinished");
            return self.give_back(&job).await;
        };
        let duration_ms = elapsed_ms(started);
        // The worker hands the outcome over and takes its next job while
        // the outcome waits for its group commit; the job stays `active`
        // (and locked) until then. A permit bounds the outcomes waiting.
        let permit = Arc::clone(&self.settling.permits)
            .acquire_owned()
            .await
            .expect("the settling permits are never closed");
        let worker = self.clone();
        self.settling.tracker.spawn(async move {
            worker.settle(job, generated, duration_ms).await;
            drop(permit);
        });
    }

    /// Records a provider call's outcome, then completes the job (or
    /// reports the failed attempt to the queue).
    async fn settle(
        &self,
        job: Job,
        generated: Result<Vec<NewImage>, ProviderFailure>,
        duration_ms: i32,
    ) {
        match generated {
            Ok(images) => {
                let outcome = SessionOutcome::Completed {
                    images,
                    duration_ms,
                };
                match record(self.recorder(), job.id, &outcome).await {
                    Ok(_) => self.complete(&job).await,
                    Err(Unrecorded::Settled(e)) => {
                        fail_if_expired(self.recorder(), job.id, &e, duration_ms).await;
                        self.complete(&job).await
                    }
                    Err(Unrecorded::Error(e)) => {
                        // Nothing was recorded: let the queue run it again.
                        tracing::error!(reservation = %job.id, error = %e, "cannot record a completed generation");
                        let failure = ProviderFailure {
                            status: 500,
                            message: format!("cannot record the generation: {e}"),
                        };
                        self.failed_attempt(&job, failure, duration_ms).await;
                    }
                }
            }
            Err(failure) => self.failed_attempt(&job, failure, duration_ms).await,
        }
    }

    /// Reports the failed attempt to the queue; out of attempts, records
    /// the failure for good.
    async fn failed_attempt(&self, job: &Job, failure: ProviderFailure, duration_ms: i32) {
        match self.queue.fail(job, &failure.to_string()).await {
            Ok(AfterFailure::RetryIn(delay)) => {
                metrics::counter!("mock_jobs_total", "outcome" => "retried").increment(1);
                tracing::debug!(reservation = %job.id, attempt = job.attempt, status = failure.status,
                    retry_in_ms = delay.as_millis() as u64, "generation attempt failed; retrying");
            }
            Ok(AfterFailure::Exhausted) => {
                let outcome = SessionOutcome::Failed {
                    error_details: failure_details(&failure, job.attempt),
                    duration_ms,
                };
                match record(self.recorder(), job.id, &outcome).await {
                    Ok(_) | Err(Unrecorded::Settled(_)) => {}
                    Err(Unrecorded::Error(e)) => {
                        // The sweeper expires the reservation at its TTL.
                        tracing::error!(reservation = %job.id, error = %e, "cannot record a failed generation");
                    }
                }
                self.complete(job).await;
            }
            Err(e) => {
                tracing::warn!(reservation = %job.id, error = %e, "cannot report a failed attempt to the queue");
            }
        }
    }

    async fn malformed(&self, job: &Job, why: &str) {
        tracing::warn!(job = %job.id, name = %job.name, why, "malformed job failed for good");
        if job.name == GENERATION_EVENT {
            let outcome = SessionOutcome::Failed {
                error_details: json!({ "error": format!("malformed job: {why}"), "attempts": job.attempt }),
                duration_ms: 0,
            };
            match record(self.recorder(), job.id, &outcome).await {
                Ok(Transition::Applied) => {}
                Ok(Transition::Unchanged(_)) | Err(Unrecorded::Settled(_)) => {}
                Err(Unrecorded::Error(e)) => {
                    tracing::warn!(job = %job.id, error = %e, "cannot fail the malformed job's session")
                }
            }
        } else {
            metrics::counter!("mock_jobs_total", "outcome" => "failed").increment(1);
        }
        self.complete(job).await;
    }

    async fn complete(&self, job: &Job) {
        if let Err(e) = self.queue.complete(job).await {
            tracing::warn!(reservation = %job.id, error = %e, "cannot complete a job");
        }
    }

    async fn give_back(&self, job: &Job) {
        if let Err(e) = self.queue.give_back(job).await {
            // With Redis the job's lock expires and it is recovered; the
            // reconciler of the next start queues an embedded queue's jobs
            // again.
            tracing::warn!(reservation = %job.id, error = %e, "cannot hand a job back");
        }
    }
}

/// What the direct path's generation ended as.
#[derive(Debug)]
pub enum GenerationResult {
    /// Images stored and the reservation captured (`Unchanged`: it had
    /// been already).
    Completed(Transition),
    /// The provider failed; the reservation was released.
    Failed {
        failure: ProviderFailure,
        transition: Transition,
    },
    /// The session was settled before the provider answered (e.g. its
    /// reservation expired); nothing changed.
    AlreadySettled(LedgerError),
    /// The outcome could not be recorded; the sweeper expires the
    /// reservation at its TTL.
    Error(LedgerError),
}

/// The direct path: one provider attempt, no queue, no retry; records the
/// outcome like a worker does.
pub async fn run_generation(
    db: &Db,
    provider: &Provider,
    request: GenerationRequest,
) -> GenerationResult {
    let started = Instant::now();
    let generated = provider.generate(&request).await;
    let duration_ms = elapsed_ms(started);
    let (outcome, failure) = match generated {
        Ok(images) => (
            SessionOutcome::Completed {
                images,
                duration_ms,
            },
            None,
        ),
        Err(failure) => (
            SessionOutcome::Failed {
                error_details: failure_details(&failure, request.attempt),
                duration_ms,
            },
            Some(failure),
        ),
    };
    match (
        record(Recorder::Direct(db), request.reservation_id, &outcome).await,
        failure,
    ) {
        (Ok(transition), None) => GenerationResult::Completed(transition),
        (Ok(transition), Some(failure)) => {
            tracing::info!(reservation = %request.reservation_id, status = failure.status,
                "direct generation failed");
            GenerationResult::Failed {
                failure,
                transition,
            }
        }
        (Err(Unrecorded::Settled(e)), _) => {
            fail_if_expired(
                Recorder::Direct(db),
                request.reservation_id,
                &e,
                duration_ms,
            )
            .await;
            tracing::info!(reservation = %request.reservation_id, error = %e,
                "direct generation finished after its session was settled");
            GenerationResult::AlreadySettled(e)
        }
        (Err(Unrecorded::Error(e)), _) => {
            tracing::error!(reservation = %request.reservation_id, error = %e,
                "cannot record a direct generation");
            GenerationResult::Error(e)
        }
    }
}

/// Where outcomes are recorded: the workers share transactions through
/// the [`GroupCommit`]; the direct path records its one generation alone.
#[derive(Clone, Copy)]
enum Recorder<'a> {
    Batched(&'a GroupCommit),
    Direct(&'a Db),
}

impl Recorder<'_> {
    async fn finish(
        self,
        reservation: Id,
        outcome: &SessionOutcome,
    ) -> Result<Finished, LedgerError> {
        match self {
            Recorder::Batched(commits) => commits.finish(reservation, outcome.clone()).await,
            Recorder::Direct(db) => {
                let finish = [(reservation, outcome.clone())];
                let mut answers = ledger::finish_sessions(db, &finish, chrono::Utc::now()).await?;
                answers.pop().expect("one answer per finish")
            }
        }
    }
}

enum Unrecorded {
    /// The reservation was settled otherwise (expired by the sweeper,
    /// settled the other way by an earlier run): nothing to record.
    Settled(LedgerError),
    Error(LedgerError),
}

/// `finish_session`, with its metrics.
async fn record(
    recorder: Recorder<'_>,
    reservation: Id,
    outcome: &SessionOutcome,
) -> Result<Transition, Unrecorded> {
    match recorder.finish(reservation, outcome).await {
        Ok(Finished { transition, amount }) => {
            let (label, credits) = match outcome {
                SessionOutcome::Completed { .. } => ("completed", "mock_credits_captured_total"),
                SessionOutcome::Failed { .. } => ("failed", "mock_credits_released_total"),
            };
            metrics::counter!("mock_jobs_total", "outcome" => label).increment(1);
            if transition == Transition::Applied {
                metrics::counter!(credits).increment(u64::try_from(amount).unwrap_or(0));
            }
            Ok(transition)
        }
        Err(e @ (LedgerError::WrongState { .. } | LedgerError::UnknownReservation(_))) => {
            tracing::info!(%reservation, error = %e, "generation outcome not recorded: already settled");
            Err(Unrecorded::Settled(e))
        }
        Err(e) => Err(Unrecorded::Error(e)),
    }
}

/// A generation that finished after its reservation expired: the capture
/// was refused (the ledger marked the reservation `expired`), so the session
/// is failed here; releasing an expired reservation changes nothing, and
/// the session is only updated while still `processing`.
async fn fail_if_expired(
    recorder: Recorder<'_>,
    reservation: Id,
    refused: &LedgerError,
    duration_ms: i32,
) {
    if !matches!(
        refused,
        LedgerError::WrongState {
            status: ReservationStatus::Expired,
            ..
        }
    ) {
        return;
    }
    let outcome = SessionOutcome::Failed {
        error_details: json!({ "error": EXPIRED_ERROR }),
        duration_ms,
    };
    if let Err(e) = recorder.finish(reservation, &outcome).await {
        tracing::warn!(%reservation, error = %e, "cannot fail the session of an expired reservation");
    } else {
        metrics::counter!("mock_jobs_total", "outcome" => "failed").increment(1);
    }
}

/// Resolves `grace` after shutdown was requested.
async fn grace_over(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

fn elapsed_ms(started: Instant) -> i32 {
    i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX)
}

fn failure_details(failure: &ProviderFailure, attempts: u32) -> Value {
    json!({ "error": failure.message, "status": failure.status, "attempts": attempts })
}

/// The provider request of a contract §5 payload:
/// `{payloadVersion, jobType, userId, clientKey, mock, reservationId,
/// sessionId, params: {prompt, model, outputs, size, …}}`.
pub fn parse_request(job: &Job) -> Result<GenerationRequest, String> {
    if job.name != GENERATION_EVENT {
        return Err(format!("unknown job name {:?}", job.name));
    }
    let payload = &job.payload;
    let text = |value: &Value, field: &str| -> Result<String, String> {
        match value.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!("{field} is not a string: {other}")),
            None => Err(format!("{field} is missing")),
        }
    };
    let id = |field: &str| -> Result<Id, String> {
        text(payload, field)?
            .parse()
            .map_err(|e| format!("{field} is not a UUID: {e}"))
    };
    if payload.get("reservationId").is_some() {
        let reservation = id("reservationId")?;
        if reservation != job.id {
            return Err(format!(
                "reservationId {reservation} is not the job id {}",
                job.id
            ));
        }
    }
    let session_id = id("sessionId")?;
    let client_key = text(payload, "clientKey")?;
    let params = payload
        .get("params")
        .filter(|p| p.is_object())
        .ok_or("params is missing or not an object")?;
    let prompt = text(params, "prompt")?;
    let model = text(params, "model")?;
    let outputs = match params.get("outputs") {
        None | Some(Value::Null) => 1,
        Some(value) => value
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("outputs is not a positive integer: {value}"))?,
    };
    let size = match params.get("size") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("size is not a string: {other}")),
    };
    Ok(GenerationRequest {
        reservation_id: job.id,
        session_id,
        attempt: job.attempt,
        prompt,
        model,
        outputs,
        size,
        client_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(payload: Value) -> Job {
        Job {
            id: "6f1c1a36-5a4e-4d7b-9a55-0d6c1c2f0b11".parse().unwrap(),
            name: GENERATION_EVENT.into(),
            payload,
            attempt: 2,
        }
    }

    fn payload() -> Value {
        json!({
            "payloadVersion": 1,
            "jobType": "gen.seedream4",
            "userId": "0b5cf5e4-8f2b-4a43-9a77-3f6e5f0e9a01",
            "clientKey": "ck-1",
            "mock": true,
            "reservationId": "6f1c1a36-5a4e-4d7b-9a55-0d6c1c2f0b11",
            "sessionId": "9d8e2c1b-0a4f-4e3d-8c2b-1a0f9e8d7c6b",
            "params": {"prompt": "a cat", "model": "m", "outputs": 3, "size": "2048x1024", "seed": null}
        })
    }

    #[test]
    fn parses_the_contract_payload() {
        let request = parse_request(&job(payload())).unwrap();
        assert_eq!(
            request.reservation_id.to_string(),
            "6f1c1a36-5a4e-4d7b-9a55-0d6c1c2f0b11"
        );
        assert_eq!(
            request.session_id.to_string(),
            "9d8e2c1b-0a4f-4e3d-8c2b-1a0f9e8d7c6b"
        );
        assert_eq!(request.attempt, 2);
        assert_eq!(request.prompt, "a cat");
        assert_eq!(request.model, "m");
        assert_eq!(request.outputs, 3);
        assert_eq!(request.size.as_deref(), Some("2048x1024"));
        assert_eq!(request.client_key, "ck-1");
    }

    #[test]
    fn rejects_malformed_payloads() {
        let mut cases = Vec::new();
        let mut p = payload();
        p["sessionId"] = json!("nope");
        cases.push(p);
        let mut p = payload();
        p["params"]["outputs"] = json!("abc");
        cases.push(p);
        let mut p = payload();
        p["params"]["outputs"] = json!(0);
        cases.push(p);
        let mut p = payload();
        p["params"] = json!(null);
        cases.push(p);
        let mut p = payload();
        p["reservationId"] = json!("0b5cf5e4-8f2b-4a43-9a77-3f6e5f0e9a01");
        cases.push(p);
        let mut p = payload();
        p.as_object_mut().unwrap().remove("clientKey");
        cases.push(p);
        for p in cases {
            assert!(parse_request(&job(p.clone())).is_err(), "{p}");
        }
        let mut other = job(payload());
        other.name = "something.else".into();
        assert!(parse_request(&other).is_err());
    }
}
