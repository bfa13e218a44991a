//! The credit ledger (contract §3) on SQLite and PostgreSQL: random
//! concurrent reserve / capture / release against one user, checked by the
//! audit and by SQL; FIFO capture across lots; idempotent settling; expiry.
//!
//! Reservations are made the way the server makes them, for a generation
//! session (one credit per output), and settled with its outcome, so the
//! audit's session invariants (I1–I5) hold alongside the ledger's (I6, I7).
//!
//! The PostgreSQL halves use a throwaway server from `store::testing`
//! and print SKIP when none can be started (they fail in CI instead).

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use store::db::{Db, Id, Timestamp};
use store::ledger::{
    self, Accepted, GenerationParams, LedgerError, NewSession, Reservation, ReservationStatus,
    SessionOutcome, Transition,
};
use store::testing::{completed, postgres, sqlite, user_with};
use store::with_pool;

const TTL: Duration = Duration::from_secs(600);

/// Reserves `outputs` credits for a new generation session, as the server
/// does on `POST /api/images/seedream4/generate`.
async fn reserve_session(
    db: &Db,
    user: Id,
    outputs: i32,
    ttl: Duration,
    now: Timestamp,
) -> Result<Reservation, LedgerError> {
    let session = NewSession::for_generation(
        user,
        format!("key-{}", Id::random()),
        &GenerationParams::new("a ledger test", outputs),
    );
    match ledger::reserve_for_session(db, user, outputs, ttl, &session, now).await? {
        Accepted::New(reservation) => Ok(reservation),
        Accepted::Replay { .. } => panic!("a fresh clientKey was replayed"),
    }
}

/// Releases: the generation failed.
fn failed() -> SessionOutcome {
    SessionOutcome::Failed {
        error_details: json!({"error": "provider failed"}),
        duration_ms: 1,
    }
}

async fn credits(db: &Db, user: Id) -> i64 {
    ledger::balance(db, user, Utc::now()).await.unwrap().credits
}

async fn audit_is_clean(db: &Db) -> bool {
    let report = store::audit::audit(db, None).await.unwrap();
    if !report.is_clean() {
        eprintln!("audit: {:#?}", report.violations);
    }
    report.is_clean()
}

// ---------------------------------------------------------------------------
// (a) concurrency

const TASKS: usize = 32;
const OPS_PER_TASK: usize = 94; // ≈ 3000 operations in all
const INITIAL: i32 = 100;
/// Most settlements release: the 100 credits then last the whole run, so
/// reserves keep both succeeding and being refused until the end.
const CAPTURE_P: f64 = 0.05;

#[derive(Default)]
struct Tally {
    reserved: AtomicUsize,
    insufficient: AtomicUsize,
    captured: AtomicUsize,
    released: AtomicUsize,
    captured_credits: AtomicI64,
    negative_seen: AtomicUsize,
}

async fn settle(db: &Db, tally: &Tally, id: Id, amount: i32, capture: bool) {
    let now = Utc::now();
    if capture {
        let done = ledger::finish_session(db, id, &completed(amount), now)
            .await
            .unwrap();
        assert_eq!(done, Transition::Applied);
        tally.captured.fetch_add(1, Ordering::Relaxed);
        tally
            .captured_credits
            .fetch_add(amount.into(), Ordering::Relaxed);
    } else {
        let done = ledger::finish_session(db, id, &failed(), now)
            .await
            .unwrap();
        assert_eq!(done, Transition::Applied);
        tally.released.fetch_add(1, Ordering::Relaxed);
    }
}

async fn worker(db: Db, user: Id, seed: u64, tally: Arc<Tally>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut held: Vec<(Id, i32)> = Vec::new();
    for op in 0..OPS_PER_TASK {
        let settle_one = !held.is_empty() && rng.gen_bool(0.55);
        if settle_one {
            let (id, amount) = held.swap_remove(rng.gen_range(0..held.len()));
            settle(&db, &tally, id, amount, rng.gen_bool(CAPTURE_P)).await;
        } else {
            let amount: i32 = rng.gen_range(1..=8);
            match reserve_session(&db, user, amount, TTL, Utc::now()).await {
                Ok(reservation) => {
                    assert_eq!(reservation.amount, amount);
                    tally.reserved.fetch_add(1, Ordering::Relaxed);
                    held.push((reservation.id, amount));
                }
                Err(LedgerError::Insufficient {
                    available,
                    requested,
                }) => {
                    assert_eq!(requested, amount);
                    assert!(
                        available < i64::from(requested),
                        "refused {requested} with {available} available"
                    );
                    assert!(available >= 0, "available went negative: {available}");
                    tally.insufficient.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => panic!("reserve: {e}"),
            }
        }
        if op % 8 == 0 {
            // One statement, so a consistent snapshot on both backends.
            let b = ledger::balance(&db, user, Utc::now()).await.unwrap();
            if b.available < 0 || b.credits < 0 {
                tally.negative_seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Settle everything still held before the audit.
    for (id, amount) in held {
        settle(&db, &tally, id, amount, rng.gen_bool(CAPTURE_P)).await;
    }
}

async fn concurrent_ledger(db: Db) {
    let started = std::time::Instant::now();
    let user = user_with(&db, "hot@example.com", &[(INITIAL, 365)], Utc::now()).await;
    let tally = Arc::new(Tally::default());
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| tokio::spawn(worker(db.clone(), user, 0x5eed + i as u64, tally.clone())))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let reserved = tally.reserved.load(Ordering::Relaxed);
    let insufficient = tally.insufficient.load(Ordering::Relaxed);
    let captured = tally.captured.load(Ordering::Relaxed);
    let released = tally.released.load(Ordering::Relaxed);
    let captured_credits = tally.captured_credits.load(Ordering::Relaxed);
    eprintln!(
        "{:?}: {} ops in {:?}: {reserved} reserved, {insufficient} insufficient, \
         {captured} captured ({captured_credits} credits), {released} released",
        db.dialect(),
        reserved + insufficient + captured + released,
        started.elapsed()
    );
    assert_eq!(reserved, captured + released, "every reservation settled");
    assert!(
        reserved + insufficient + captured + released >= 3000,
        "≈3000 operations"
    );
    assert!(
        insufficient > 0,
        "the test must exhaust the credits sometimes"
    );
    assert!(captured > 0 && released > 0);
    assert_eq!(tally.negative_seen.load(Ordering::Relaxed), 0);

    // Credits that left = credits captured.
    let now = Utc::now();
    let balance = ledger::balance(&db, user, now).await.unwrap();
    assert_eq!(i64::from(INITIAL) - balance.credits, captured_credits);
    assert_eq!(balance.reserved, 0);
    assert_eq!(balance.available, balance.credits);
    assert!(balance.credits >= 0);

    // Never a negative balance, lot or credits, by SQL.
    let (negative_rows, ledger_sum): (i64, i64) = with_pool!(&db, pool => sqlx::query_as(
        "SELECT CAST(COUNT(*) FILTER (WHERE balance_after < 0) AS BIGINT), \
         CAST(COALESCE(SUM(amount) FILTER (WHERE reservation_id IS NOT NULL), 0) AS BIGINT) \
         FROM credit_transactions WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap());
    assert_eq!(negative_rows, 0, "a balance_after below zero");
    assert_eq!(ledger_sum, -captured_credits);
    let (negative_lots, lot_sum): (i64, i64) = with_pool!(&db, pool => sqlx::query_as(
        "SELECT CAST(COUNT(*) FILTER (WHERE remaining < 0) AS BIGINT), \
         CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM credit_lots WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap());
    assert_eq!(negative_lots, 0);
    assert_eq!(lot_sum, balance.credits, "users.credits = Σ remaining");
    // Σ ledger amounts per captured reservation = −amount; none for the rest.
    let mismatched: i64 = with_pool!(&db, pool => sqlx::query_as::<_, (i64,)>(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM credit_reservations r WHERE r.user_id = $1 AND \
         COALESCE((SELECT SUM(t.amount) FROM credit_transactions t WHERE t.reservation_id = r.id), 0) \
         <> CASE WHEN r.status = 'captured' THEN -r.amount ELSE 0 END",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
    .0);
    assert_eq!(mismatched, 0);
    let still_reserved: i64 = with_pool!(&db, pool => sqlx::query_as::<_, (i64,)>(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM credit_reservations WHERE status = 'reserved'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
    .0);
    assert_eq!(still_reserved, 0);

    assert!(audit_is_clean(&db).await, "the audit found violations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reserve_capture_release_sqlite() {
    let (_dir, db) = sqlite().await;
    concurrent_ledger(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reserve_capture_release_postgres() {
    if let Some(db) = postgres("concurrent_reserve_capture_release_postgres").await {
        concurrent_ledger(db).await;
    }
}

// ---------------------------------------------------------------------------
// (b) FIFO capture across lots

async fn fifo_capture(db: Db) {
    let now = Utc::now();
    // The later-expiring lot is granted first: the order is by expiry, not
    // by creation.
    let user = user_with(&db, "fifo@example.com", &[(100, 365), (30, 10)], now).await;
    let lots: Vec<(Id, i32)> = with_pool!(&db, pool => sqlx::query_as(
        "SELECT id, amount FROM credit_lots WHERE user_id = $1 ORDER BY expires_at",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap());
    let (soon, late) = (lots[0], lots[1]);
    assert_eq!((soon.1, late.1), (30, 100));
    assert_eq!(credits(&db, user).await, 130);

    // Within the first lot: one row.
    let small = reserve_session(&db, user, 10, TTL, now).await.unwrap();
    assert_eq!(
        ledger::finish_session(&db, small.id, &completed(10), now)
            .await
            .unwrap(),
        Transition::Applied
    );
    // Larger than what is left of the first lot: spans both.
    let big = reserve_session(&db, user, 50, TTL, now).await.unwrap();
    assert_eq!(
        ledger::finish_session(&db, big.id, &completed(50), now)
            .await
            .unwrap(),
        Transition::Applied
    );

    let rows = |reservation: Id| {
        let db = db.clone();
        async move {
            let rows: Vec<(Option<Id>, i32, i32)> = with_pool!(&db, pool => sqlx::query_as(
                "SELECT lot_id, amount, balance_after FROM credit_transactions \
                 WHERE reservation_id = $1 ORDER BY balance_after DESC",
            )
            .bind(reservation)
            .fetch_all(pool)
            .await
            .unwrap());
            rows
        }
    };
    assert_eq!(rows(small.id).await, vec![(Some(soon.0), -10, 120)]);
    assert_eq!(
        rows(big.id).await,
        vec![(Some(soon.0), -20, 100), (Some(late.0), -30, 70)]
    );
    let remaining: Vec<(Id, i32, bool)> = with_pool!(&db, pool => sqlx::query_as(
        "SELECT id, remaining, closed_at IS NOT NULL FROM credit_lots WHERE user_id = $1 ORDER BY expires_at",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap());
    assert_eq!(remaining, vec![(soon.0, 0, true), (late.0, 70, false)]);
    assert_eq!(credits(&db, user).await, 70);
    assert!(audit_is_clean(&db).await);
}

#[tokio::test]
async fn fifo_capture_sqlite() {
    let (_dir, db) = sqlite().await;
    fifo_capture(db).await;
}

#[tokio::test]
async fn fifo_capture_postgres() {
    if let Some(db) = postgres("fifo_capture_postgres").await {
        fifo_capture(db).await;
    }
}

// ---------------------------------------------------------------------------
// (c) idempotent settling

async fn idempotency(db: Db) {
    let now = Utc::now();
    let user = user_with(&db, "idem@example.com", &[(100, 365)], now).await;

    let r = reserve_session(&db, user, 7, TTL, now).await.unwrap();
    assert_eq!(
        ledger::finish_session(&db, r.id, &completed(7), now)
            .await
            .unwrap(),
        Transition::Applied
    );
    assert_eq!(
        ledger::capture(&db, r.id, now).await.unwrap(),
        Transition::Unchanged(ReservationStatus::Captured)
    );
    assert_eq!(
        ledger::finish_session(&db, r.id, &completed(7), now)
            .await
            .unwrap(),
        Transition::Unchanged(ReservationStatus::Captured),
        "a redelivered job completes nothing twice"
    );
    assert_eq!(credits(&db, user).await, 93, "captured once only");
    match ledger::release(&db, r.id, now).await {
        Err(LedgerError::WrongState { id, status, .. }) => {
            assert_eq!((id, status), (r.id, ReservationStatus::Captured));
        }
        other => panic!("release after capture: {other:?}"),
    }

    let r = reserve_session(&db, user, 5, TTL, now).await.unwrap();
    assert_eq!(
        ledger::finish_session(&db, r.id, &failed(), now)
            .await
            .unwrap(),
        Transition::Applied
    );
    assert_eq!(
        ledger::release(&db, r.id, now).await.unwrap(),
        Transition::Unchanged(ReservationStatus::Released)
    );
    assert!(matches!(
        ledger::capture(&db, r.id, now).await,
        Err(LedgerError::WrongState {
            status: ReservationStatus::Released,
            ..
        })
    ));
    assert!(matches!(
        ledger::capture(&db, Id::random(), now).await,
        Err(LedgerError::UnknownReservation(_))
    ));
    // Plain reservations (no session) settle the same way.
    let plain = ledger::reserve(&db, user, 3, TTL, "plain", now)
        .await
        .unwrap();
    assert_eq!(
        ledger::release(&db, plain.id, now).await.unwrap(),
        Transition::Applied
    );
    assert_eq!(
        ledger::release(&db, plain.id, now).await.unwrap(),
        Transition::Unchanged(ReservationStatus::Released)
    );
    let balance = ledger::balance(&db, user, now).await.unwrap();
    assert_eq!((balance.credits, balance.available), (93, 93));
    let images: i64 = with_pool!(&db, pool => sqlx::query_as::<_, (i64,)>(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM images",
    )
    .fetch_one(pool)
    .await
    .unwrap()
    .0);
    assert_eq!(images, 7, "no images stored twice");
    assert!(audit_is_clean(&db).await);
}

#[tokio::test]
async fn idempotency_sqlite() {
    let (_dir, db) = sqlite().await;
    idempotency(db).await;
}

#[tokio::test]
async fn idempotency_postgres() {
    if let Some(db) = postgres("idempotency_postgres").await {
        idempotency(db).await;
    }
}

// ---------------------------------------------------------------------------
// (d) expiry

async fn expiry(db: Db) {
    let now = Utc::now();
    let user = user_with(&db, "expiry@example.com", &[(100, 365)], now).await;
    let r = reserve_session(&db, user, 40, Duration::from_secs(60), now)
        .await
        .unwrap();
    let keep = reserve_session(&db, user, 10, TTL, now).await.unwrap();
    assert_eq!(ledger::balance(&db, user, now).await.unwrap().available, 50);

    assert!(ledger::expire_overdue(&db, now).await.unwrap().is_empty());
    let later = now + chrono::Duration::seconds(61);
    assert_eq!(
        ledger::expire_overdue(&db, later).await.unwrap(),
        vec![r.id]
    );
    assert!(ledger::expire_overdue(&db, later).await.unwrap().is_empty());

    let status: String = with_pool!(&db, pool => sqlx::query_as::<_, (String,)>(
        "SELECT status FROM credit_reservations WHERE id = $1",
    )
    .bind(r.id)
    .fetch_one(pool)
    .await
    .unwrap()
    .0);
    assert_eq!(status, "expired");
    let session: String = with_pool!(&db, pool => sqlx::query_as::<_, (String,)>(
        "SELECT status FROM generation_sessions WHERE reservation_id = $1",
    )
    .bind(r.id)
    .fetch_one(pool)
    .await
    .unwrap()
    .0);
    assert_eq!(session, "failed", "the sweeper fails the waiting session");
    let moved: i64 = with_pool!(&db, pool => sqlx::query_as::<_, (i64,)>(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM credit_transactions WHERE reservation_id = $1",
    )
    .bind(r.id)
    .fetch_one(pool)
    .await
    .unwrap()
    .0);
    assert_eq!(moved, 0, "no credits move on expiry");
    let balance = ledger::balance(&db, user, later).await.unwrap();
    assert_eq!((balance.credits, balance.available), (100, 90));
    // An expired reservation cannot be captured; releasing it is a no-op.
    assert!(matches!(
        ledger::capture(&db, r.id, later).await,
        Err(LedgerError::WrongState {
            status: ReservationStatus::Expired,
            ..
        })
    ));
    assert_eq!(
        ledger::release(&db, r.id, later).await.unwrap(),
        Transition::Unchanged(ReservationStatus::Expired)
    );
    ledger::finish_session(&db, keep.id, &failed(), later)
        .await
        .unwrap();
    assert_eq!(credits(&db, user).await, 100);
    assert!(audit_is_clean(&db).await);
}

#[tokio::test]
async fn expiry_sqlite() {
    let (_dir, db) = sqlite().await;
    expiry(db).await;
}

#[tokio::test]
async fn expiry_postgres() {
    if let Some(db) = postgres("expiry_postgres").await {
        expiry(db).await;
    }
}

/// The worker and `settle` find a job's session by its reservation; without
/// an index each lookup scanned every session and a long run slowed down.
async fn session_by_reservation_index(db: Db) {
    let sql = match db {
        Db::Sqlite(_) => "SELECT name FROM sqlite_master WHERE type = 'index' AND name = $1",
        Db::Postgres(_) => "SELECT indexname FROM pg_indexes WHERE indexname = $1",
    };
    let found: Vec<(String,)> = with_pool!(&db, pool => sqlx::query_as(sql)
        .bind("generation_sessions_reservation")
        .fetch_all(pool)
        .await)
    .unwrap();
    assert_eq!(
        found.len(),
        1,
        "index generation_sessions_reservation missing"
    );
}

#[tokio::test]
async fn session_by_reservation_is_indexed_sqlite() {
    let (_dir, db) = sqlite().await;
    session_by_reservation_index(db.clone()).await;
    // And SQLite's planner uses it for the worker's lookup.
    let plan: Vec<(i64, i64, i64, String)> = with_pool!(&db, pool => sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT status, credit_cost FROM generation_sessions WHERE reservation_id = $1",
    )
    .bind(Id::random())
    .fetch_all(pool)
    .await)
    .unwrap();
    assert!(
        plan.iter()
            .any(|(_, _, _, detail)| detail.contains("USING INDEX generation_sessions_reservation")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn session_by_reservation_is_indexed_postgres() {
    if let Some(db) = postgres("session_by_reservation_is_indexed_postgres").await {
        session_by_reservation_index(db).await;
    }
}
