//! The outbox relay, the workers and the sweeper end to end: real SQLite
//! with the embedded queue, and real PostgreSQL with the Redis (BullMQ)
//! queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mock_api::faults::{FaultSettings, Faults, Plan};
use mock_api::jobs::relay::RoundDispatch;
use mock_api::jobs::{run_generation, GenerationResult, Jobs, JobsConfig};
use mock_api::provider::{GenerationRequest, Provider, ProviderConfig};
use mock_api::queue::bullmq::{BullOptions, BullQueue};
use mock_api::queue::embedded::EmbeddedQueue;
use mock_api::queue::{AfterFailure, Depth, Job, NewJob, Queue, QueueError, MAX_ATTEMPTS};
use mock_api::testing::redis_url;
use serde_json::{json, Value};
use sqlx::types::Json;
use store::db::{Db, Id};
use store::group_commit::{GroupCommit, GroupCommitConfig};
use store::ledger::{
    self, Accepted, GenerationParams, NewSession, ReserveRequest, Transition, GENERATION_EVENT,
};
use store::testing::{postgres_url, sqlite, unique_name, user_with};
use store::with_pool;
use tempfile::TempDir;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const INITIAL_CREDITS: i32 = 1000;
const TTL: Duration = Duration::from_secs(600);
/// A run that takes longer fails the test rather than hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

struct Fixture {
    db: Db,
    user: Id,
    _dir: Option<TempDir>,
}

/// An accepted generation.
#[derive(Clone, Copy, Debug)]
struct Accepted1 {
    session: Id,
    reservation: Id,
    outputs: i32,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let (dir, db) = sqlite().await;
        Fixture::with_user(db, Some(dir)).await
    }

    async fn postgres() -> Option<Fixture> {
        let url = postgres_url().await?;
        let db = Db::open(&url).await.unwrap();
        Some(Fixture::with_user(db, None).await)
    }

    async fn with_user(db: Db, dir: Option<TempDir>) -> Fixture {
        let user = user_with(
            &db,
            "jobs@example.com",
            &[(INITIAL_CREDITS, 365)],
            chrono::Utc::now(),
        )
        .await;
        Fixture {
            db,
            user,
            _dir: dir,
        }
    }

    /// Accepts a generation as the enqueue-first handler does: reservation,
    /// `processing` session and outbox row in one transaction.
    async fn accept(&self, outputs: i32) -> Accepted1 {
        self.accept_with(outputs, TTL, false, None).await
    }

    async fn accept_with(
        &self,
        outputs: i32,
        ttl: Duration,
        dispatched: bool,
        payload: Option<Value>,
    ) -> Accepted1 {
        let mut params = GenerationParams::new("a lighthouse", outputs);
        params.model = "seedream-4-0-t2i-250415".into();
        let mut new =
            NewSession::for_generation(self.user, format!("ck-{}", Id::random()), &params);
        new.dispatched = dispatched;
        if let Some(payload) = payload {
            new.payload = payload;
        }
        let (session, reservation) = (new.id, new.reservation_id);
        let accepted = ledger::reserve_for_session(
            &self.db,
            self.user,
            outputs,
            ttl,
            &new,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        assert!(matches!(accepted, Accepted::New(_)), "{accepted:?}");
        Accepted1 {
            session,
            reservation,
            outputs,
        }
    }

    async fn credits(&self) -> i32 {
        with_pool!(&self.db, pool => {
            let (credits,): (i32,) = sqlx::query_as("SELECT credits FROM users WHERE id = $1")
                .bind(self.user)
                .fetch_one(pool)
                .await
                .unwrap();
            credits
        })
    }

    async fn session_status(&self, session: Id) -> String {
        with_pool!(&self.db, pool => {
            let (status,): (String,) = sqlx::query_as("SELECT status FROM generation_sessions WHERE id = $1")
                .bind(session)
                .fetch_one(pool)
                .await
                .unwrap();
            status
        })
    }

    async fn error_details(&self, session: Id) -> Option<Value> {
        with_pool!(&self.db, pool => {
            let (details,): (Option<Json<Value>>,) =
                sqlx::query_as("SELECT error_details FROM generation_sessions WHERE id = $1")
                    .bind(session)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            details.map(|Json(v)| v)
        })
    }

    async fn reservation_status(&self, reservation: Id) -> String {
        with_pool!(&self.db, pool => {
            let (status,): (String,) = sqlx::query_as("SELECT status FROM credit_reservations WHERE id = $1")
                .bind(reservation)
                .fetch_one(pool)
                .await
                .unwrap();
            status
        })
    }

    async fn image_urls(&self, session: Id) -> Vec<String> {
        with_pool!(&self.db, pool => {
            let rows: Vec<(String,)> = sqlx::query_as("SELECT url FROM images WHERE session_id = $1 ORDER BY url")
                .bind(session)
                .fetch_all(pool)
                .await
                .unwrap();
            rows.into_iter().map(|(u,)| u).collect()
        })
    }

    async fn count_processing(&self) -> i64 {
        with_pool!(&self.db, pool => {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT CAST(COUNT(*) AS BIGINT) FROM generation_sessions WHERE status = 'processing'",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            n
        })
    }

    async fn dispatch_attempts(&self, reservation: Id) -> i32 {
        with_pool!(&self.db, pool => {
            let (n,): (i32,) = sqlx::query_as("SELECT dispatch_attempts FROM outbox WHERE reservation_id = $1")
                .bind(reservation)
                .fetch_one(pool)
                .await
                .unwrap();
            n
        })
    }

    /// Waits (bounded) until fewer than `count` sessions are `processing`:
    /// the signal that workers are running generations.
    async fn wait_processing_below(&self, count: i64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.count_processing().await >= count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no generation finished within {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until no session is `processing`.
    async fn wait_settled(&self) {
        let polled = tokio::time::timeout(PATIENCE, async {
            loop {
                if self.count_processing().await == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            polled.is_ok(),
            "{} sessions still processing after {PATIENCE:?}",
            self.count_processing().await
        );
    }

    /// Each session completed exactly once: `outputs` distinct images,
    /// its reservation captured; the user paid for all of them.
    async fn assert_all_completed(&self, accepted: &[Accepted1]) {
        let mut cost = 0;
        for a in accepted {
            assert_eq!(self.session_status(a.session).await, "completed", "{a:?}");
            assert_eq!(
                self.reservation_status(a.reservation).await,
                "captured",
                "{a:?}"
            );
            let urls = self.image_urls(a.session).await;
            let expected: Vec<String> = (1..=a.outputs)
                .map(|n| format!("https://mock.invalid/seedream4/{}/{n}.png", a.session))
                .collect();
            assert_eq!(urls, expected, "{a:?}");
            cost += a.outputs;
        }
        assert_eq!(self.credits().await, INITIAL_CREDITS - cost);
    }
}

/// A provider whose attempts fail with a 500 at `fail_rate` (0 or 1 here),
/// by a provider error rule of a fault plan.
fn provider(min_ms: u64, max_ms: u64, fail_rate: f64) -> Arc<Provider> {
    let config = ProviderConfig {
        min_ms,
        max_ms,
        seed: Some(7),
    };
    config.validate().unwrap();
    let plan = format!(
        r#"{{"rules":[{{"name":"fail","target":"provider","kind":"error","rate":{fail_rate},"status":500}}]}}"#
    );
    let settings = FaultSettings {
        plan: Plan::parse(&plan).unwrap(),
        seed: 7,
        seed_given: true,
        ..FaultSettings::default()
    };
    let faults = Faults::new(settings, CancellationToken::new());
    Arc::new(Provider::with_faults(config, Arc::new(faults)))
}

fn fast_config() -> JobsConfig {
    JobsConfig {
        concurrency: 4,
        outbox_poll: Duration::from_millis(50),
        outbox_batch: 25,
        grace: Duration::from_secs(5),
        sweep_every: Duration::from_secs(1),
        reconcile_every: Duration::from_millis(200),
        take_wait: Duration::from_millis(50),
        ..JobsConfig::default()
    }
}

fn fast_queue() -> Arc<dyn Queue> {
    Arc::new(EmbeddedQueue::with_backoff_base(Duration::from_millis(5)))
}

struct Running {
    jobs: Jobs,
    shutdown: CancellationToken,
}

impl Running {
    fn start(
        db: &Db,
        queue: Arc<dyn Queue>,
        provider: Arc<Provider>,
        config: JobsConfig,
    ) -> Running {
        let shutdown = CancellationToken::new();
        let jobs = Jobs::start(db.clone(), queue, provider, config, shutdown.clone());
        Running { jobs, shutdown }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.jobs.join())
            .await
            .expect("the jobs stop within the grace");
    }
}

async fn end_to_end(fx: &Fixture, queue: Arc<dyn Queue>) -> Vec<Accepted1> {
    let mut accepted = Vec::new();
    // Some before the jobs start (found by the poll), some after (woken).
    for n in 0..10 {
        accepted.push(fx.accept(1 + n % 3).await);
    }
    let running = Running::start(&fx.db, queue, provider(5, 20, 0.0), fast_config());
    for n in 0..10 {
        accepted.push(fx.accept(1 + n % 4).await);
        running.jobs.wake();
    }
    fx.wait_settled().await;
    running.stop().await;
    fx.assert_all_completed(&accepted).await;
    for a in &accepted {
        assert_eq!(fx.dispatch_attempts(a.reservation).await, 1);
    }
    accepted
}

#[tokio::test]
async fn embedded_queue_completes_every_generation() {
    let fx = Fixture::sqlite().await;
    end_to_end(&fx, fast_queue()).await;
}

/// SQLite: the committer shared by the generate path and the workers
/// dispatches what it accepts in its own round (no relay), and the
/// workers' outcomes come back to it.
#[tokio::test]
async fn the_sqlite_committer_dispatches_what_it_accepts() {
    let fx = Fixture::sqlite().await;
    let queue = fast_queue();
    let wake = Arc::new(Notify::new());
    let commits = Arc::new(GroupCommit::start_dispatching(
        fx.db.clone(),
        GroupCommitConfig::default(),
        Arc::new(RoundDispatch {
            queue: Arc::clone(&queue),
            wake: Arc::clone(&wake),
        }),
    ));
    assert!(commits.dispatches());
    let shutdown = CancellationToken::new();
    let config = JobsConfig {
        // The relay's own rounds never come in this test.
        outbox_poll: Duration::from_secs(3600),
        ..fast_config()
    };
    let jobs = Jobs::start_shared(
        fx.db.clone(),
        queue,
        provider(1, 3, 0.0),
        config,
        shutdown.clone(),
        Arc::clone(&wake),
        Arc::clone(&commits),
    );
    let requests = (0..20).map(|n| {
        let params = GenerationParams::new("a lighthouse", 1 + n % 3);
        let new = NewSession::for_generation(fx.user, format!("ck-{n}"), &params);
        let accepted = Accepted1 {
            session: new.id,
            reservation: new.reservation_id,
            outputs: params.outputs,
        };
        let request = ReserveRequest::for_session(fx.user, params.outputs, TTL, new);
        let commits = Arc::clone(&commits);
        async move {
            let answer = commits.reserve(request).await.unwrap();
            assert!(matches!(answer, Accepted::New(_)), "{answer:?}");
            accepted
        }
    });
    let accepted = futures::future::join_all(requests).await;
    for a in &accepted {
        // Marked when inserted: the relay had nothing to do.
        assert_eq!(fx.dispatch_attempts(a.reservation).await, 1, "{a:?}");
    }
    let undispatched: i64 = with_pool!(&fx.db, pool => {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE dispatched_at IS NULL",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        n
    });
    assert_eq!(undispatched, 0);
    fx.wait_settled().await;
    shutdown.cancel();
    tokio::time::timeout(PATIENCE, jobs.join())
        .await
        .expect("the jobs stop within the grace");
    fx.assert_all_completed(&accepted).await;
}

#[tokio::test]
async fn a_provider_that_always_fails_releases_after_every_attempt() {
    let fx = Fixture::sqlite().await;
    let accepted = vec![fx.accept(2).await, fx.accept(1).await];
    let running = Running::start(&fx.db, fast_queue(), provider(1, 3, 1.0), fast_config());
    running.jobs.wake();
    fx.wait_settled().await;
    running.stop().await;
    for a in &accepted {
        assert_eq!(fx.session_status(a.session).await, "failed");
        assert_eq!(fx.reservation_status(a.reservation).await, "released");
        assert!(fx.image_urls(a.session).await.is_empty());
        let details = fx
            .error_details(a.session)
            .await
            .expect("error_details set");
        assert_eq!(details["status"], 500, "{details}");
        assert_eq!(details["attempts"], MAX_ATTEMPTS, "{details}");
        assert!(
            details["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{details}"
        );
    }
    assert_eq!(fx.credits().await, INITIAL_CREDITS);
}

#[tokio::test]
async fn a_malformed_job_fails_its_session_for_good() {
    let fx = Fixture::sqlite().await;
    let good = fx.accept(1).await;
    let bad = fx
        .accept_with(
            2,
            TTL,
            false,
            Some(json!({"payloadVersion": 1, "params": "nope"})),
        )
        .await;
    let running = Running::start(&fx.db, fast_queue(), provider(1, 3, 0.0), fast_config());
    fx.wait_settled().await;
    running.stop().await;
    fx.assert_all_completed_partial(&[good]).await;
    assert_eq!(fx.session_status(bad.session).await, "failed");
    assert_eq!(fx.reservation_status(bad.reservation).await, "released");
    let details = fx.error_details(bad.session).await.unwrap();
    assert!(
        details["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed job"),
        "{details}"
    );
    assert_eq!(fx.credits().await, INITIAL_CREDITS - 1);
}

impl Fixture {
    async fn assert_all_completed_partial(&self, accepted: &[Accepted1]) {
        for a in accepted {
            assert_eq!(self.session_status(a.session).await, "completed", "{a:?}");
            assert_eq!(self.reservation_status(a.reservation).await, "captured");
            assert_eq!(self.image_urls(a.session).await.len() as i32, a.outputs);
        }
    }
}

#[tokio::test]
async fn a_generation_outliving_its_reservation_fails_without_charge() {
    let fx = Fixture::sqlite().await;
    let late = fx
        .accept_with(1, Duration::from_millis(30), false, None)
        .await;
    let config = JobsConfig {
        sweep_every: Duration::from_secs(3600),
        ..fast_config()
    };
    let running = Running::start(&fx.db, fast_queue(), provider(150, 200, 0.0), config);
    fx.wait_settled().await;
    running.stop().await;
    assert_eq!(fx.session_status(late.session).await, "failed");
    assert_eq!(fx.reservation_status(late.reservation).await, "expired");
    assert!(fx.image_urls(late.session).await.is_empty());
    assert_eq!(fx.credits().await, INITIAL_CREDITS);
}

#[tokio::test]
async fn the_sweeper_expires_overdue_reservations() {
    let fx = Fixture::sqlite().await;
    let stuck = fx
        .accept_with(1, Duration::from_millis(10), false, None)
        .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let config = JobsConfig {
        sweep_every: Duration::from_millis(20),
        grace: Duration::ZERO,
        ..fast_config()
    };
    // The provider is far slower than the sweeper.
    let running = Running::start(&fx.db, fast_queue(), provider(30_000, 30_000, 0.0), config);
    fx.wait_settled().await;
    running.stop().await;
    assert_eq!(fx.session_status(stuck.session).await, "failed");
    assert_eq!(fx.reservation_status(stuck.reservation).await, "expired");
    assert_eq!(fx.credits().await, INITIAL_CREDITS);
}

#[tokio::test]
async fn stopping_records_every_outcome_handed_over_before_it_returns() {
    let fx = Fixture::sqlite().await;
    let accepted: i64 = 40;
    for _ in 0..accepted {
        fx.accept(1).await;
    }
    let queue = fast_queue();
    let running = Running::start(
        &fx.db,
        Arc::clone(&queue),
        provider(5, 20, 0.0),
        fast_config(),
    );
    // Stopped while the workers are under way: some outcomes recorded,
    // others handed over to the group commit and not yet committed.
    fx.wait_processing_below(accepted - 4).await;
    running.stop().await;
    // Every job a worker took is settled: completed after its outcome's
    // commit, or handed back; none is left `active` once `join` returns.
    let depth = queue.depth().await.unwrap();
    assert_eq!(depth.active, 0, "{depth:?}");
    // What waits is unfinished work, never a settled generation's job.
    let processing = fx.count_processing().await;
    assert!(
        depth.wait <= processing as u64,
        "{depth:?}, {processing} processing"
    );
}

#[tokio::test]
async fn a_restart_runs_every_accepted_generation_exactly_once() {
    let fx = Fixture::sqlite().await;
    let mut accepted = Vec::new();
    for n in 0..12 {
        accepted.push(fx.accept(1 + n % 3).await);
    }
    // First life: slow generations, stopped with no grace while some are
    // running and others wait in the (lost) in-memory queue.
    let config = JobsConfig {
        concurrency: 3,
        grace: Duration::ZERO,
        ..fast_config()
    };
    let first = Running::start(&fx.db, fast_queue(), provider(50, 400, 0.0), config);
    // Stopped once the workers are under way: a first generation finished.
    fx.wait_processing_below(accepted.len() as i64).await;
    first.stop().await;
    let unfinished = fx.count_processing().await;
    assert!(unfinished > 0, "the first life should leave work behind");
    // Accepted while nothing runs: only in the outbox.
    for _ in 0..3 {
        accepted.push(fx.accept(2).await);
    }
    // Second life on the same database with a fresh queue.
    let second = Running::start(&fx.db, fast_queue(), provider(5, 20, 0.0), fast_config());
    fx.wait_settled().await;
    second.stop().await;
    fx.assert_all_completed(&accepted).await;
    // The reconciler queued the lost jobs again without touching the
    // outbox, and each generation ran once.
    for a in &accepted {
        assert_eq!(fx.dispatch_attempts(a.reservation).await, 1);
    }
    let report = store::audit::audit(&fx.db, None).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
}

#[tokio::test]
async fn postgres_and_redis_complete_every_generation() {
    let Some(fx) = Fixture::postgres().await else {
        eprintln!("SKIP: postgres_and_redis_complete_every_generation needs PostgreSQL");
        return;
    };
    let Some(redis) = redis_url().await else {
        eprintln!("SKIP: postgres_and_redis_complete_every_generation needs Redis");
        return;
    };
    let name = unique_name("jobs");
    let queue = BullQueue::connect_with(
        &redis,
        &name,
        "bull",
        BullOptions {
            lock_ttl: Duration::from_secs(5),
            backoff_base: Duration::from_millis(5),
        },
    )
    .await
    .unwrap();
    let accepted = end_to_end(&fx, Arc::new(queue)).await;
    // Every job went through Redis and finished there.
    let mut conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let completed: usize = redis::cmd("ZCARD")
        .arg(format!("bull:{name}:completed"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(completed, accepted.len());
    let waiting: usize = redis::cmd("LLEN")
        .arg(format!("bull:{name}:wait"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(waiting, 0);
}

#[tokio::test]
async fn postgres_and_redis_retry_then_fail_for_good() {
    let Some(fx) = Fixture::postgres().await else {
        eprintln!("SKIP: postgres_and_redis_retry_then_fail_for_good needs PostgreSQL");
        return;
    };
    let Some(redis) = redis_url().await else {
        eprintln!("SKIP: postgres_and_redis_retry_then_fail_for_good needs Redis");
        return;
    };
    let queue = BullQueue::connect_with(
        &redis,
        &unique_name("jobs"),
        "bull",
        BullOptions {
            lock_ttl: Duration::from_secs(5),
            backoff_base: Duration::from_millis(5),
        },
    )
    .await
    .unwrap();
    let accepted = [fx.accept(1).await, fx.accept(3).await];
    let running = Running::start(&fx.db, Arc::new(queue), provider(1, 3, 1.0), fast_config());
    fx.wait_settled().await;
    running.stop().await;
    for a in &accepted {
        assert_eq!(fx.session_status(a.session).await, "failed");
        assert_eq!(fx.reservation_status(a.reservation).await, "released");
        let details = fx.error_details(a.session).await.unwrap();
        assert_eq!(details["attempts"], MAX_ATTEMPTS, "{details}");
    }
    assert_eq!(fx.credits().await, INITIAL_CREDITS);
}

#[tokio::test]
async fn the_direct_path_runs_the_provider_once_and_records_it() {
    let fx = Fixture::sqlite().await;
    let ok = fx.accept_with(3, TTL, true, None).await;
    let request = |a: Accepted1| GenerationRequest {
        reservation_id: a.reservation,
        session_id: a.session,
        attempt: 1,
        prompt: "a lighthouse".into(),
        model: "seedream-4-0-250828".into(),
        outputs: a.outputs,
        size: Some("1024x1024".into()),
        client_key: format!("ck-{}", a.session),
    };
    let result = run_generation(&fx.db, &provider(1, 5, 0.0), request(ok)).await;
    assert!(
        matches!(result, GenerationResult::Completed(Transition::Applied)),
        "{result:?}"
    );
    fx.assert_all_completed(&[ok]).await;
    // Running it again changes nothing.
    let again = run_generation(&fx.db, &provider(1, 5, 0.0), request(ok)).await;
    assert!(
        matches!(again, GenerationResult::Completed(Transition::Unchanged(_))),
        "{again:?}"
    );
    fx.assert_all_completed(&[ok]).await;

    let failing = fx.accept_with(2, TTL, true, None).await;
    let result = run_generation(&fx.db, &provider(1, 5, 1.0), request(failing)).await;
    match result {
        GenerationResult::Failed {
            failure,
            transition,
        } => {
            assert_eq!(failure.status, 500);
            assert_eq!(transition, Transition::Applied);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fx.session_status(failing.session).await, "failed");
    assert_eq!(fx.reservation_status(failing.reservation).await, "released");
    let details = fx.error_details(failing.session).await.unwrap();
    assert_eq!(details["attempts"], 1);
    assert_eq!(fx.credits().await, INITIAL_CREDITS - 3);

    // The relay never queues a direct-path generation: an enqueue-first one
    // accepted after them is dispatched and run, so the relay has looked at
    // the outbox since, and the direct-path rows are still untouched.
    let queue = Arc::new(EmbeddedQueue::new());
    let running = Running::start(&fx.db, queue.clone(), provider(1, 5, 0.0), fast_config());
    let later = fx.accept(1).await;
    running.jobs.wake();
    fx.wait_settled().await;
    running.stop().await;
    fx.assert_all_completed(&[ok, later]).await;
    assert_eq!(fx.dispatch_attempts(later.reservation).await, 1);
    assert_eq!(queue.depth().await.unwrap(), Default::default());
    let mut attempts = HashMap::new();
    for a in [ok, failing] {
        attempts.insert(a.reservation, fx.dispatch_attempts(a.reservation).await);
    }
    assert!(attempts.values().all(|&n| n == 0), "{attempts:?}");
}

/// An embedded queue whose pushes fail while `down` is set.
struct FlakyQueue {
    inner: EmbeddedQueue,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Queue for FlakyQueue {
    async fn push(&self, job: NewJob) -> Result<(), QueueError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(QueueError::Unavailable("down for the test".into()));
        }
        self.inner.push(job).await
    }
    async fn revive(&self, jobs: Vec<NewJob>) -> Result<usize, QueueError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(QueueError::Unavailable("down for the test".into()));
        }
        self.inner.revive(jobs).await
    }
    async fn take(&self, wait: Duration) -> Result<Option<Job>, QueueError> {
        self.inner.take(wait).await
    }
    async fn complete(&self, job: &Job) -> Result<(), QueueError> {
        self.inner.complete(job).await
    }
    async fn fail(&self, job: &Job, error: &str) -> Result<AfterFailure, QueueError> {
        self.inner.fail(job, error).await
    }
    async fn give_back(&self, job: &Job) -> Result<(), QueueError> {
        self.inner.give_back(job).await
    }
    async fn depth(&self) -> Result<Depth, QueueError> {
        self.inner.depth().await
    }
    async fn ping(&self) -> bool {
        !self.down.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Workers waiting for a job see shutdown at once, not after their take
/// wait: with an hour-long wait, stopping still ends within `PATIENCE`.
#[tokio::test]
async fn idle_workers_stop_at_once_at_shutdown() {
    let fx = Fixture::sqlite().await;
    let config = JobsConfig {
        take_wait: Duration::from_secs(3600),
        ..fast_config()
    };
    let running = Running::start(&fx.db, fast_queue(), provider(1, 5, 0.0), config);
    let accepted = vec![fx.accept(1).await];
    running.jobs.wake();
    fx.wait_settled().await;
    running.stop().await;
    fx.assert_all_completed(&accepted).await;
    if let (Some(fx), Some(redis)) = (Fixture::postgres().await, redis_url().await) {
        let queue = BullQueue::connect(&redis, &unique_name("idle"), "bull")
            .await
            .unwrap();
        let config = JobsConfig {
            take_wait: Duration::from_secs(3600),
            ..fast_config()
        };
        let running = Running::start(&fx.db, Arc::new(queue), provider(1, 5, 0.0), config);
        let accepted = vec![fx.accept(1).await];
        running.jobs.wake();
        fx.wait_settled().await;
        running.stop().await;
        fx.assert_all_completed(&accepted).await;
    }
}

#[tokio::test]
async fn rows_stay_in_the_outbox_while_the_queue_refuses_them() {
    let fx = Fixture::sqlite().await;
    let queue = Arc::new(FlakyQueue {
        inner: EmbeddedQueue::new(),
        down: true.into(),
    });
    let accepted = vec![fx.accept(1).await, fx.accept(2).await];
    let running = Running::start(&fx.db, queue.clone(), provider(1, 5, 0.0), fast_config());
    // Two relay rounds have tried the first row and failed.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while fx.dispatch_attempts(accepted[0].reservation).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not retry the refused row within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for a in &accepted {
        assert_eq!(fx.session_status(a.session).await, "processing");
    }
    // A failed push ends the round: the first row is tried at every poll,
    // the rows behind it wait for the queue to come back.
    let undispatched = with_pool!(&fx.db, pool => {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM outbox WHERE dispatched_at IS NULL",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        n
    });
    assert_eq!(undispatched, 2);
    queue.down.store(false, std::sync::atomic::Ordering::SeqCst);
    fx.wait_settled().await;
    running.stop().await;
    fx.assert_all_completed(&accepted).await;
}

#[tokio::test]
async fn redis_jobs_handed_back_at_shutdown_complete_after_a_restart() {
    let Some(fx) = Fixture::postgres().await else {
        eprintln!("SKIP: redis restart test needs PostgreSQL");
        return;
    };
    let Some(redis) = redis_url().await else {
        eprintln!("SKIP: redis restart test needs Redis");
        return;
    };
    let name = unique_name("jobs");
    let options = BullOptions {
        lock_ttl: Duration::from_secs(5),
        backoff_base: Duration::from_millis(5),
    };
    let mut accepted = Vec::new();
    for n in 0..8 {
        accepted.push(fx.accept(1 + n % 2).await);
    }
    let config = JobsConfig {
        concurrency: 2,
        grace: Duration::ZERO,
        ..fast_config()
    };
    let queue = BullQueue::connect_with(&redis, &name, "bull", options)
        .await
        .unwrap();
    let first = Running::start(&fx.db, Arc::new(queue), provider(100, 400, 0.0), config);
    // Stopped once the workers are under way: a first generation finished.
    fx.wait_processing_below(accepted.len() as i64).await;
    first.stop().await;
    assert!(fx.count_processing().await > 0);
    let queue = BullQueue::connect_with(&redis, &name, "bull", options)
        .await
        .unwrap();
    let second = Running::start(&fx.db, Arc::new(queue), provider(5, 20, 0.0), fast_config());
    fx.wait_settled().await;
    second.stop().await;
    fx.assert_all_completed(&accepted).await;
}

/// Contract §5 "stalled" recovery through the whole generation path: a
/// worker takes the job from Redis and dies (its queue handle is dropped,
/// so nothing renews the lock); a new worker recovers the job, runs it
/// once, and the ledger audit is clean.
#[tokio::test]
async fn a_worker_killed_mid_job_on_redis_is_recovered_and_runs_once() {
    let Some(fx) = Fixture::postgres().await else {
        eprintln!(
            "SKIP: a_worker_killed_mid_job_on_redis_is_recovered_and_runs_once needs PostgreSQL"
        );
        return;
    };
    let Some(redis) = redis_url().await else {
        eprintln!("SKIP: a_worker_killed_mid_job_on_redis_is_recovered_and_runs_once needs Redis");
        return;
    };
    let name = unique_name("killed");
    let options = || BullOptions {
        lock_ttl: Duration::from_millis(300),
        backoff_base: Duration::from_millis(5),
    };
    let accepted = fx.accept(2).await;
    let (Json(payload),): (Json<Value>,) = with_pool!(&fx.db, pool => sqlx::query_as(
        "SELECT payload FROM outbox WHERE reservation_id = $1"
    )
    .bind(accepted.reservation)
    .fetch_one(pool)
    .await
    .unwrap());

    let dying = BullQueue::connect_with(&redis, &name, "bull", options())
        .await
        .unwrap();
    dying
        .push(NewJob {
            id: accepted.reservation,
            name: GENERATION_EVENT.into(),
            payload,
        })
        .await
        .unwrap();
    let held = dying
        .take(PATIENCE)
        .await
        .unwrap()
        .expect("the job is taken");
    assert_eq!(held.id, accepted.reservation);
    drop(dying);

    let survivor = BullQueue::connect_with(&redis, &name, "bull", options())
        .await
        .unwrap();
    let running = Running::start(
        &fx.db,
        Arc::new(survivor),
        provider(5, 20, 0.0),
        fast_config(),
    );
    fx.wait_settled().await;
    running.stop().await;
    fx.assert_all_completed(std::slice::from_ref(&accepted))
        .await;
    let report = store::audit::audit(&fx.db, None).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.counts.images, 2, "the job ran once");
}
