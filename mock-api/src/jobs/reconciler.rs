//! The reconciler: queues again every generation still `processing` whose
//! job the queue no longer runs.
//!
//! A generation is stranded when its outbox row is marked dispatched but
//! the queue lost its job or finished it without the outcome being
//! recorded:
//!
//! - the embedded queue died with the process (a crash, SIGKILL);
//! - Redis restarted empty, or its key space was flushed;
//! - the database was down when a worker recorded the outcome, so the job
//!   completed in the queue and the session stayed `processing`.
//!
//! Every `every`, while the mock serves, the reconciler reads the sessions
//! still `processing` whose outbox row was dispatched at least `every` ago
//! (younger ones are very likely still on their way), a page at a time,
//! and hands their jobs to [`Queue::revive`], which atomically skips the
//! ones waiting, delayed or held and queues the others with fresh attempts.
//! Its first round, at start, takes every age: nothing can be in an
//! embedded queue that was just created.
//!
//! A job whose worker died holding it is not the reconciler's: in Redis it
//! is live until its lock expires, and then the stalled-job recovery puts
//! it back; an embedded queue dies with its workers.
//!
//! Running a generation twice is harmless: the job id is the reservation
//! id, so it is queued once, and recording an outcome only changes a
//! session still `processing`. The only race left (a job that finishes
//! between the read and the revive) queues a job whose session is settled,
//! which a worker completes without running it.
//!
//! Undispatched rows are the relay's, so the reconciler never touches the
//! outbox.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::types::Json;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::queue::{NewJob, Queue};
use store::db::{Db, Id};
use store::with_pool;

/// Sessions read and revived at a time.
const PAGE: i64 = 500;

pub(crate) async fn run(
    db: Db,
    queue: Arc<dyn Queue>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let every = every.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut min_age = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        match reconcile(&db, queue.as_ref(), min_age).await {
            Ok(0) => {}
            Ok(revived) => {
                metrics::counter!("mock_jobs_revived_total").increment(revived as u64);
                tracing::warn!(
                    jobs = revived,
                    "generations still processing were no longer in the queue; queued again"
                );
            }
            Err(e) => tracing::warn!(error = %e, "reconciler round failed"),
        }
        min_age = every;
    }
    tracing::debug!("reconciler stopped");
}

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}

/// One round: every session still `processing` whose outbox row was
/// dispatched more than `min_age` ago, offered to [`Queue::revive`].
/// Returns how many jobs were queued again.
pub async fn reconcile(
    db: &Db,
    queue: &dyn Queue,
    min_age: Duration,
) -> Result<usize, ReconcileError> {
    let now = chrono::Utc::now();
    let dispatched_before = chrono::Duration::from_std(min_age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .unwrap_or(now);
    let mut after = Id(uuid::Uuid::nil());
    let mut revived = 0;
    loop {
        let rows: Vec<(Id, String, Json<Value>)> = with_pool!(db, pool => {
            sqlx::query_as(
                "SELECT o.reservation_id, o.event_type, o.payload FROM generation_sessions s \
                 JOIN outbox o ON o.reservation_id = s.reservation_id \
                 WHERE s.status = 'processing' AND s.reservation_id > $1 \
                 AND o.dispatched_at IS NOT NULL AND o.dispatched_at < $2 \
                 ORDER BY s.reservation_id LIMIT $3",
            )
            .bind(after)
            .bind(dispatched_before)
            .bind(PAGE)
            .fetch_all(pool)
            .await
        })?;
        let full = rows.len() as i64 == PAGE;
        let Some(last) = rows.last().map(|(id, _, _)| *id) else {
            break;
        };
        after = last;
        let jobs = rows
            .into_iter()
            .map(|(id, name, Json(payload))| NewJob { id, name, payload })
            .collect();
        revived += queue.revive(jobs).await?;
        if !full {
            break;
        }
    }
    Ok(revived)
}
