//! The reservation sweeper (contract §3 step 5): every `every`, reservations
//! past their TTL become `expired` and the sessions still waiting on them
//! `failed`; no credits move.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use store::db::Db;
use store::ledger;

pub(crate) async fn run(db: Db, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticks.tick() => {}
        }
        sweep(&db).await;
    }
    tracing::debug!("reservation sweeper stopped");
}

/// One sweep; returns how many reservations expired.
pub async fn sweep(db: &Db) -> usize {
    match ledger::expire_overdue(db, chrono::Utc::now()).await {
        Ok(expired) => {
            if !expired.is_empty() {
                metrics::counter!("mock_reservations_expired_total")
                    .increment(expired.len() as u64);
                tracing::warn!(
                    reservations = expired.len(),
                    "reservations expired before their generation finished"
                );
            }
            expired.len()
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot expire overdue reservations");
            0
        }
    }
}
