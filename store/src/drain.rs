//! Waiting until every accepted generation has finished, and the backlog
//! of accepted work: the database is the only place that knows, so this
//! polls it.

use crate::db::Db;

/// How waiting for the queue to drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// No session is `processing` any more.
    Drained,
    /// The deadline passed with this many still `processing`.
    TimedOut { processing: i64 },
}

/// How much accepted work is still ahead: for `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    /// Outbox rows the relay has not dispatched yet.
    pub undispatched: i64,
    /// Generation sessions still `processing`.
    pub processing: i64,
}

/// The [`Backlog`] now, in one statement.
pub async fn backlog(db: &Db) -> Result<Backlog, sqlx::Error> {
    let (undispatched, processing): (i64, i64) = crate::with_pool!(db, pool => sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM outbox WHERE dispatched_at IS NULL), \
         (SELECT COUNT(*) FROM generation_sessions WHERE status = 'processing')"
    )
    .fetch_one(pool)
    .await)?;
    Ok(Backlog {
        undispatched,
        processing,
    })
}

/// Waits until no generation session is `processing` (every accepted job
/// has completed or failed), up to `timeout`. The database is the only
/// place that knows, so this polls it.
pub async fn wait_for_drain(db: &Db, timeout: std::time::Duration) -> Result<Drain, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut every = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        every.tick().await;
        let (processing,): (i64,) = crate::with_pool!(db, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM generation_sessions WHERE status = 'processing'"
        )
        .fetch_one(pool)
        .await)?;
        if processing == 0 {
            return Ok(Drain::Drained);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Drain::TimedOut { processing });
        }
    }
}
