//! Builds the mock from its [`ServerSettings`] and serves it on a listener the caller
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

use store::db::{self, Db, DbError};
use store::group_commit::GroupCommit;
use store::seeding::{self, SeedError, SeedUser, DEFAULT_CREDITS, DEFAULT_EMAIL, DEFAULT_PASSWORD};
use store::users;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::ServerSettings;
use crate::faults::Faults;
use crate::http::admin::AdminAccount;
use crate::http::auth::Tokens;
use crate::http::login_cache::LoginCache;
use crate::http::{self, AppState};
use crate::jobs::relay::RoundDispatch;
use crate::jobs::Jobs;
use crate::provider::Provider;
use crate::queue::bullmq::{BullOptions, BullQueue};
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::{Queue, QueueError};

/// BullMQ's default key prefix.
pub const BULL_PREFIX: &str = "bull";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
    settings: ServerSettings,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let db = Db::open(&settings.database_url).await?;
    if settings.seed_test_user && users::count(&db).await? == 0 {
        let user = SeedUser {
            email: DEFAULT_EMAIL.into(),
            password: DEFAULT_PASSWORD.into(),
        };
        for action in seeding::ensure_user(
            &db,
            &user,
            DEFAULT_CREDITS,
            settings.bcrypt_cost,
            chrono::Utc::now(),
        )
        .await?
        {
            tracing::info!("first start: {action}");
        }
    }
    let queue: Arc<dyn Queue> = match &settings.redis_url {
        Some(url) => Arc::new(
            BullQueue::connect_with(
                url,
                &settings.queue_name,
                BULL_PREFIX,
                BullOptions {
                    lock_ttl: settings.queue_lock,
                    ..BullOptions::default()
                },
            )
            .await?,
        ),
        None => Arc::new(EmbeddedQueue::new()),
    };
    let faults = Arc::new(Faults::new(settings.faults, shutdown.clone()));
    if faults.enabled() {
        let plan = faults.plan();
        tracing::info!(
            seed = faults.seed(),
            rules = plan.rules.len(),
            control_api = faults.control_enabled(),
            "fault injection enabled"
        );
    }
    let provider = Arc::new(Provider::with_faults(settings.provider, faults.clone()));
    // Before the workers start, so their first metrics are recorded.
    http::observe::prometheus();
    let stop_jobs = CancellationToken::new();
    // One committer set for the generate path and the workers; on SQLite
    // its rounds also dispatch what they accept.
    let relay_wake = Arc::new(Notify::new());
    let group_commit = Arc::new(GroupCommit::start_dispatching(
        db.clone(),
        settings.group_commit,
        Arc::new(RoundDispatch {
            queue: queue.clone(),
            wake: Arc::clone(&relay_wake),
        }),
    ));
    let jobs = Jobs::start_shared(
        db.clone(),
        queue.clone(),
        provider.clone(),
        settings.jobs,
        stop_jobs.clone(),
        relay_wake,
        Arc::clone(&group_commit),
    );
    let admin = settings.admin.map(|(email, password)| {
        Arc::new(AdminAccount {
            id: db::Id::random(),
            email,
            password,
        })
    });
    let login_cache = Arc::new(LoginCache::new(settings.http.login_cache));
    let state = AppState {
        db: db.clone(),
        queue,
        tokens: Arc::new(Tokens::new(settings.jwt_secret.as_deref())),
        provider,
        settings: Arc::new(settings.http),
        relay_wake: jobs.waker(),
        admin,
        faults,
        login_cache,
        group_commit,
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
