//! Builds the mock from a [`Config`] and serves it on a listener the caller
//! bound (tests and `loadgen --spawn-mock` bind port 0), until `shutdown`.
//!
//! Shutdown order is what keeps every accepted generation: stop accepting,
//! let in-flight requests finish (their 202s are already committed with
//! their outbox rows), then stop the workers, which finish a running job
//! within the grace period or hand it back to the queue. Whatever is still
//! undone is in the outbox or in Redis and runs after the next start; what
//! a crash (SIGKILL) or a Redis restart loses, the reconciler queues again
//! (see [`crate::jobs`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::db::{Db, DbError};
use crate::faults::Faults;
use crate::http::admin::AdminAccount;
use crate::http::auth::Tokens;
use crate::http::{self, AppState, Settings};
use crate::jobs::Jobs;
use crate::provider::Provider;
use crate::queue::bullmq::{BullOptions, BullQueue};
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::{Queue, QueueError};
use crate::seeding::{self, SeedError, SeedUser};
use crate::{db, users};

/// The test user of contract §4, created on a first start.
pub const TEST_EMAIL: &str = "test@example.com";
pub const TEST_PASSWORD: &str = "testpassword123";
pub const TEST_CREDITS: i64 = 1000;

/// BullMQ's default key prefix.
pub const BULL_PREFIX: &str = "bull";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot seed the test user: {0}")]
    Seed(#[from] SeedError),
    #[error("cannot count users: {0}")]
    Users(#[from] users::UserError),
    #[error("cannot connect to the queue: {0}")]
    Queue(#[from] QueueError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the mock on `listener` until `shutdown` is cancelled, then drains
/// as described in the module doc and returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    let fault_settings = config.fault_settings()?;
    let db = Db::open(&config.database_url).await?;
    if !config.no_seed && users::count(&db).await? == 0 {
        let user = SeedUser {
            email: TEST_EMAIL.into(),
            password: TEST_PASSWORD.into(),
        };
        for action in seeding::ensure_user(
            &db,
            &user,
            TEST_CREDITS,
            config.bcrypt_cost,
            chrono::Utc::now(),
        )
        .await?
        {
            tracing::info!("first start: {action}");
        }
    }
    let queue: Arc<dyn Queue> = match &config.redis_url {
        Some(url) => Arc::new(
            BullQueue::connect_with(
                url,
                &config.queue_name,
                BULL_PREFIX,
                BullOptions {
                    lock_ttl: Duration::from_millis(config.queue_lock_ms),
                    ..BullOptions::default()
                },
            )
            .await?,
        ),
        None => Arc::new(EmbeddedQueue::new()),
    };
    let faults = Arc::new(Faults::new(fault_settings, shutdown.clone()));
    if faults.enabled() {
        let plan = faults.plan();
        tracing::info!(
            seed = faults.seed(),
            rules = plan.rules.len(),
            control_api = faults.control_enabled(),
            "fault injection enabled"
        );
    }
    let provider = Arc::new(Provider::with_faults(
        config.provider_config(),
        faults.clone(),
    ));
    // Before the workers start, so their first metrics are recorded.
    http::observe::prometheus();
    let stop_jobs = CancellationToken::new();
    let jobs = Jobs::start(
        db.clone(),
        queue.clone(),
        provider.clone(),
        config.jobs_config(),
        stop_jobs.clone(),
    );
    let admin = match (&config.admin_email, &config.admin_password) {
        (Some(email), Some(password)) => Some(Arc::new(AdminAccount {
            id: db::Id::random(),
            email: email.clone(),
            password: password.clone(),
        })),
        _ => None,
    };
    let state = AppState {
        db: db.clone(),
        queue,
        tokens: Arc::new(Tokens::new(config.jwt_secret.as_deref())),
        provider,
        settings: Arc::new(Settings {
            credit_cost_per_output: config.credit_cost_per_output,
            max_outputs: config.max_outputs,
            reservation_ttl: config.reservation_ttl(),
            enqueue_first: config.enqueue_first,
            bcrypt_cost: config.bcrypt_cost,
        }),
        relay_wake: jobs.waker(),
        admin,
        faults,
    };
    tracing::info!(addr = %listener.local_addr()?, "mock-api listening");
    let app = http::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    tracing::info!("stopped accepting; stopping the workers");
    stop_jobs.cancel();
    jobs.join().await;
    db.close().await;
    served?;
    Ok(())
}

/// How waiting for the queue to drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// No session is `processing` any more.
    Drained,
    /// The deadline passed with this many still `processing`.
    TimedOut { processing: i64 },
}

/// Waits until no generation session is `processing` (every accepted job
/// has completed or failed), up to `timeout`. The database is the only
/// place that knows, so this polls it.
pub async fn wait_for_drain(db: &Db, timeout: Duration) -> Result<Drain, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut every = tokio::time::interval(Duration::from_millis(50));
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
