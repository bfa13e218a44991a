//! The outbox relay: moves undispatched outbox rows into the queue.
//!
//! Each round is one write transaction: up to `batch` undispatched rows in
//! id order (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so several instances
//! share the work; SQLite's write lock serialises them), pushed in order as
//! jobs whose ids are their reservation ids ([`Queue::push_all`]: one
//! round trip for the whole round on Redis), then all marked
//! `dispatched_at = now` with `dispatch_attempts + 1` by one `UPDATE`. A
//! push that fails leaves its row undispatched (its attempts counted) and
//! ends the round; that row and those behind it are tried again at the
//! next one. Pushing a job twice queues it once, so a row
//! dispatched twice (a crash between push and commit) is harmless.
//!
//! A row stays marked dispatched even if the queue later loses its job
//! (an embedded queue that died with the process, Redis restarted empty):
//! the reconciler ([`super::reconciler`]) queues those again.
//!
//! On SQLite the generate path's committer dispatches what it accepts
//! itself, through [`RoundDispatch`] (see `store::group_commit`): the relay
//! then only has the rows whose push failed, and those left by a crash.
//!
//! The transaction never awaits the pool itself (the SQLite pool has one
//! connection, so a pool query inside it would wait for ever) and only
//! awaits queue pushes, which are in memory or one Redis round trip.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::types::Json;
use store::db::{placeholders, BeginWrite, Db, Id};
use store::ledger::{Dispatch, OutboxJob};
use store::with_pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::queue::{NewJob, Queue};

/// Rows marked per `UPDATE … WHERE id IN (…)`.
const MARK_CHUNK: usize = 500;

pub(crate) struct RelayConfig {
    pub poll: Duration,
    pub batch: i64,
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Rows pushed and marked dispatched.
    pub dispatched: usize,
    /// Rows whose push failed (left undispatched).
    pub failed: usize,
    /// Rows read: a full batch means more may be waiting.
    pub read: usize,
}

pub(crate) async fn run(
    db: Db,
    queue: Arc<dyn Queue>,
    wake: Arc<Notify>,
    config: RelayConfig,
    shutdown: CancellationToken,
) {
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let round = match dispatch_round(&db, queue.as_ref(), config.batch).await {
            Ok(round) => round,
            Err(e) => {
                tracing::warn!(error = %e, "outbox relay round failed");
                Round::default()
            }
        };
        if round.dispatched > 0 {
            metrics::counter!("mock_outbox_dispatched_total").increment(round.dispatched as u64);
            tracing::debug!(jobs = round.dispatched, "outbox rows dispatched");
        }
        if round.failed > 0 {
            metrics::counter!("mock_outbox_dispatch_failures_total").increment(round.failed as u64);
        }
        report_depth(queue.as_ref()).await;
        let more = round.failed == 0 && round.read as i64 >= config.batch;
        if more {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(config.poll) => {}
        }
    }
    tracing::debug!("outbox relay stopped");
}

/// One round: up to `batch` undispatched rows pushed and marked.
pub async fn dispatch_round(db: &Db, queue: &dyn Queue, batch: i64) -> Result<Round, sqlx::Error> {
    let dialect = db.dialect();
    with_pool!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let rows: Vec<(i64, String, Option<Id>, Json<Value>)> = sqlx::query_as(&format!(
            "SELECT id, event_type, reservation_id, payload FROM outbox \
             WHERE dispatched_at IS NULL ORDER BY id LIMIT $1{}",
            dialect.for_update_skip_locked()
        ))
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let mut round = Round { read: rows.len(), ..Round::default() };
        let now = chrono::Utc::now();
        // Rows without a reservation id have no job id to give: marked, so
        // they do not block the outbox.
        let mut pushed: Vec<i64> = Vec::with_capacity(rows.len());
        let mut queued: Vec<i64> = Vec::with_capacity(rows.len());
        let mut jobs: Vec<NewJob> = Vec::with_capacity(rows.len());
        for (row, event_type, reservation, Json(payload)) in rows {
            match reservation {
                Some(id) => {
                    queued.push(row);
                    jobs.push(NewJob { id, name: event_type, payload });
                }
                None => {
                    tracing::warn!(outbox_id = row, "outbox row without a reservation id skipped");
                    pushed.push(row);
                }
            }
        }
        let (count, outcome) = queue.push_all(jobs).await;
        pushed.extend_from_slice(&queued[..count]);
        let failed = match outcome {
            Ok(()) => None,
            Err(why) => {
                // The queue is likely down: the rows behind the failed one
                // wait for the next round.
                tracing::warn!(outbox_id = queued[count], error = %why,
                    "cannot push a job; it stays in the outbox");
                Some(queued[count])
            }
        };
        // One UPDATE marks every pushed row.
        for chunk in pushed.chunks(MARK_CHUNK) {
            let sql = format!(
                "UPDATE outbox SET dispatched_at = $1, dispatch_attempts = dispatch_attempts + 1 WHERE id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(now);
            for row in chunk {
                query = query.bind(*row);
            }
            query.execute(&mut *tx).await?;
        }
        round.dispatched = pushed.len();
        if let Some(row) = failed {
            sqlx::query("UPDATE outbox SET dispatch_attempts = dispatch_attempts + 1 WHERE id = $1")
                .bind(row)
                .execute(&mut *tx)
                .await?;
            round.failed = 1;
        }
        tx.commit().await?;
        Ok(round)
    })
}

/// The relay's push, for the committer that dispatches the jobs of the
/// generations it accepts inside its own transaction
/// (`GroupCommit::start_dispatching`). A job the queue refuses stays in the
/// outbox undispatched, and the relay is woken for it.
pub struct RoundDispatch {
    pub queue: Arc<dyn Queue>,
    pub wake: Arc<Notify>,
}

impl Dispatch for RoundDispatch {
    fn dispatch(&self, jobs: Vec<OutboxJob>) -> futures::future::BoxFuture<'_, usize> {
        Box::pin(async move {
            let jobs: Vec<NewJob> = jobs
                .into_iter()
                .map(|job| NewJob {
                    id: job.id,
                    name: job.name.to_string(),
                    payload: job.payload,
                })
                .collect();
            let ids: Vec<Id> = jobs.iter().map(|job| job.id).collect();
            let (taken, outcome) = self.queue.push_all(jobs).await;
            if let Err(e) = outcome {
                tracing::warn!(reservation = ?ids.get(taken), error = %e,
                    "cannot push a job; it stays in the outbox");
                metrics::counter!("mock_outbox_dispatch_failures_total").increment(1);
                self.wake.notify_one();
            }
            metrics::counter!("mock_outbox_dispatched_total").increment(taken as u64);
            taken
        })
    }
}

async fn report_depth(queue: &dyn Queue) {
    match queue.depth().await {
        Ok(depth) => {
            metrics::gauge!("mock_queue_depth", "state" => "wait").set(depth.wait as f64);
            metrics::gauge!("mock_queue_depth", "state" => "active").set(depth.active as f64);
            metrics::gauge!("mock_queue_depth", "state" => "delayed").set(depth.delayed as f64);
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the queue depth"),
    }
}
