//! Ledger throughput: reserve + capture cycles per second, for one hot user
//! (every cycle contends for the same row lock) and for 100 users, with 32
//! concurrent tasks, on SQLite (a temp file) and PostgreSQL (a throwaway
//! server from `store::testing`).
//!
//! ```text
//! cargo bench -p store --features testing --bench ledger
//! ```
//!
//! `LEDGER_BENCH_SECS` sets the measuring time per case (default 5 s).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use store::db::{Db, Id};
use store::ledger::{self, LotSource, Transition};
use store::users;

const TASKS: usize = 32;
const TTL: Duration = Duration::from_secs(600);
/// Enough credits that no cycle is ever refused.
const CREDITS: i32 = 1_000_000_000;

async fn users_with_credits(db: &Db, prefix: &str, n: usize) -> Vec<Id> {
    let now = Utc::now();
    let hash = users::hash_password("pw", 4).expect("hash");
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let user = users::create(db, &format!("{prefix}{i}@example.com"), &hash, "user", now)
            .await
            .expect("create user");
        ledger::add_credits(
            db,
            user.id,
            CREDITS,
            LotSource::Adjustment,
            now + chrono::Duration::days(365),
            "bench",
            now,
        )
        .await
        .expect("add credits");
        ids.push(user.id);
    }
    ids
}

async fn cycle(db: &Db, user: Id) {
    let reservation = ledger::reserve(db, user, 1, TTL, "bench", Utc::now())
        .await
        .expect("reserve");
    let done = ledger::capture(db, reservation.id, Utc::now())
        .await
        .expect("capture");
    assert_eq!(done, Transition::Applied);
}

/// Cycles per second over `secs`, after a short warm-up.
async fn measure(db: &Db, users: &[Id], secs: f64) -> f64 {
    for &user in users.iter().take(TASKS) {
        cycle(db, user).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let cycles = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (db, users) = (db.clone(), users.to_vec());
            let (stop, cycles) = (stop.clone(), cycles.clone());
            tokio::spawn(async move {
                let mut next = task;
                while !stop.load(Ordering::Relaxed) {
                    cycle(&db, users[next % users.len()]).await;
                    cycles.fetch_add(1, Ordering::Relaxed);
                    next += TASKS;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("bench task");
    }
    cycles.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn bench_backend(name: &str, db: Db, secs: f64) {
    let hot = users_with_credits(&db, "hot", 1).await;
    let hot_rate = measure(&db, &hot, secs).await;
    println!("{name:<10} 1 hot user   {TASKS} tasks  {hot_rate:>8.0} reserve+capture cycles/s");
    let many = users_with_credits(&db, "spread", 100).await;
    let many_rate = measure(&db, &many, secs).await;
    println!("{name:<10} 100 users    {TASKS} tasks  {many_rate:>8.0} reserve+capture cycles/s");
    // The cycles have no generation session, so only the ledger's own
    // invariants apply (the session ones, I1–I5, would flag every capture).
    let report = store::audit::audit(&db, None).await.expect("audit");
    for invariant in ["I6", "I7"] {
        assert_eq!(
            report.count_of(invariant),
            0,
            "the bench broke {invariant}: {:?}",
            report.violations
        );
    }
    db.close().await;
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let secs: f64 = std::env::var("LEDGER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("ledger bench: {cores} cores, {TASKS} concurrent tasks, {secs} s per case");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&store::testing::sqlite_url(dir.path()))
            .await
            .expect("open SQLite");
        bench_backend("SQLite", db, secs).await;
        match store::testing::postgres_url().await {
            Some(url) => {
                let db = Db::open(&url).await.expect("open PostgreSQL");
                bench_backend("PostgreSQL", db, secs).await;
            }
            None => println!("PostgreSQL skipped: no server"),
        }
    });
}
