//! The mock harness of `loadgen run --spawn-mock`, the hermetic run.
//! [`MockHarness::start`] starts mock-api inside this process on a free
//! loopback port (a temporary SQLite database and the embedded queue unless
//! told otherwise) and seeds the test account(s) with enough credits for
//! the plan; [`MockHarness::finish`] waits for the queue to drain, stops the
//! mock and audits the ledger. `command` runs the test in between.

use std::path::PathBuf;
use std::time::Duration;

use mock_api::config::{Config, ConfigError, ServerSettings};
use mock_api::server::{self, StartError};
use store::audit::{audit, AuditReport, INVARIANTS};
use store::db::{redact_url, Db};
use store::drain::{wait_for_drain, Drain};
use store::seeding::{ensure_user, ensure_users, loadtest_users, write_users_file, SeedUser};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::exit::Failure;
use crate::output::report::AuditRow;
use crate::plan::{parse_duration, parse_duration_range, test_account, Plan, PlanError};

/// Spare credits on top of the plan's estimate, so the default run never
/// meets a 402 it did not ask for.
const CREDIT_MARGIN: u64 = 100;

/// What the options ask of the embedded mock.
struct MockPlan {
    database_url: String,
    /// Holds the temporary database; removed when the run ends.
    _dir: Option<tempfile::TempDir>,
    redis_url: Option<String>,
    credits: i64,
    accounts: Vec<SeedUser>,
    users_file: Option<PathBuf>,
    latency: (Duration, Duration),
    seed: Option<u64>,
    /// The fault plan file (`--mock-faults`).
    faults: Option<PathBuf>,
    drain_timeout: Duration,
    /// `--drain-timeout` as given, for the warning.
    drain_timeout_text: String,
    /// Audit only rows of this run when the database was given (it may hold
    /// earlier runs).
    since: Option<store::db::Timestamp>,
}

fn mock_plan(args: &RunArgs, plan: &Plan) -> Result<MockPlan, PlanError> {
    let (email, password) = test_account(args)?;
    let (dir, database_url) = match &args.mock_database_url {
        Some(url) => (None, url.clone()),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("loadgen-mock-")
                .tempdir()
                .map_err(|e| {
                    PlanError::new("spawn-mock", format!("cannot make a temp dir: {e}"))
                })?;
            let url = format!("sqlite:{}", dir.path().join("mock.db").display());
            (Some(dir), url)
        }
    };
    let credits = match args.credits {
        Some(n) if n < 0 => return Err(PlanError::new("credits", "must be 0 or more")),
        Some(n) => i64::from(n),
        None => {
            let per_account = plan.max_generations() * u64::from(plan.scenario.outputs);
            (per_account + CREDIT_MARGIN).min(i32::MAX as u64) as i64
        }
    };
    let (accounts, users_file) = match args.users {
        Some(0) => return Err(PlanError::new("users", "must be at least 1")),
        Some(n) => {
            let file = dir
                .as_ref()
                .map_or_else(std::env::temp_dir, |d| d.path().to_path_buf())
                .join(format!("loadgen-users-{}.csv", std::process::id()));
            (loadtest_users(n as usize, &password), Some(file))
        }
        None => (vec![SeedUser::new(email, password)], None),
    };
    Ok(MockPlan {
        since: args.mock_database_url.as_ref().map(|_| chrono::Utc::now()),
        database_url,
        _dir: dir,
        redis_url: args.mock_redis_url.clone(),
        credits,
        accounts,
        users_file,
        latency: parse_duration_range("mock-latency", &args.mock_latency)?,
        seed: args.mock_seed,
        faults: args.mock_faults.clone(),
        drain_timeout: parse_duration("drain-timeout", &args.drain_timeout)?,
        drain_timeout_text: args.drain_timeout.clone(),
    })
}

/// The mock's settings, checked and its fault plan read (once) before
/// anything starts: a bad plan is a one-line error naming `--mock-faults`.
fn mock_settings(mock: &MockPlan) -> Result<ServerSettings, Failure> {
    let mut config = Config::defaults();
    config.database_url = mock.database_url.clone();
    config.redis_url = mock.redis_url.clone();
    config.no_seed = true;
    // Tokens live as long as this process; a fresh secret per run says so
    // without the mock's warning about an unset JWT_SECRET.
    config.jwt_secret = Some(uuid::Uuid::new_v4().simple().to_string());
    config.mock_min_ms = mock.latency.0.as_millis() as u64;
    config.mock_max_ms = mock.latency.1.as_millis() as u64;
    // MOCK_SEED: every decision of the provider and of the fault plan.
    config.mock_seed = mock.seed;
    config.faults = mock.faults.clone();
    // Enough workers that the provider's latency, not the pool, paces jobs.
    config.worker_concurrency = 50;
    config.outbox_poll_ms = 100;
    config.resolve().map_err(|e: ConfigError| match e.field {
        "MOCK_FAULTS" => PlanError::new("mock-faults", e.why).into(),
        _ => Failure::invalid_config(format!("invalid mock option: {e}")),
    })
}

/// The target the harness's mock offers the run.
pub struct MockTarget {
    pub api_base: String,
    /// The accounts seeded for `--users N`.
    pub users_file: Option<PathBuf>,
}

/// mock-api running in this process, with its database for the audit.
pub struct MockHarness {
    mock: MockPlan,
    db: Db,
    api_base: String,
    stop: CancellationToken,
    task: JoinHandle<Result<(), StartError>>,
}

impl MockHarness {
    /// Checks the mock's options, seeds its database and starts it on a
    /// free loopback port.
    pub async fn start(args: &RunArgs, plan: &Plan) -> Result<MockHarness, Failure> {
        let mock = mock_plan(args, plan)?;
        let settings = mock_settings(&mock)?;
        let db = Db::open(&mock.database_url)
            .await
            .map_err(|e| Failure::setup_failed(e.to_string()))?;
        let now = chrono::Utc::now();
        let cost = store::users::DEFAULT_BCRYPT_COST;
        let seeded = match &mock.users_file {
            None => ensure_user(&db, &mock.accounts[0], mock.credits, cost, now).await,
            Some(_) => ensure_users(&db, &mock.accounts, mock.credits, cost, now).await,
        };
        seeded.map_err(|e| {
            Failure::setup_failed(format!(
                "cannot seed {}: {e}",
                redact_url(&mock.database_url)
            ))
        })?;
        if let Some(file) = &mock.users_file {
            write_users_file(file, &mock.accounts).map_err(|e| {
                Failure::setup_failed(format!("cannot write {}: {e}", file.display()))
            })?;
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(|e| {
                Failure::setup_failed(format!("cannot bind a loopback port for the mock: {e}"))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Failure::setup_failed(e.to_string()))?;
        let api_base = format!("http://{addr}");
        let stop = CancellationToken::new();
        let task = tokio::spawn(server::run(listener, settings, stop.clone()));
        if !args.quiet {
            println!(
                "     mock-api: {} (database {}, {} queue, {} account(s) with {} credits, provider {}ms..{}ms)",
                api_base,
                redact_url(&mock.database_url),
                if mock.redis_url.is_some() { "Redis" } else { "embedded" },
                mock.accounts.len(),
                mock.credits,
                mock.latency.0.as_millis(),
                mock.latency.1.as_millis(),
            );
            if let Some(file) = &mock.faults {
                println!(
                    "     faults: {} (seed {})",
                    file.display(),
                    mock.seed
                        .map_or("random: pass --mock-seed to replay".to_string(), |s| s
                            .to_string())
                );
            }
        }
        Ok(MockHarness {
            mock,
            db,
            api_base,
            stop,
            task,
        })
    }

    pub fn target(&self) -> MockTarget {
        MockTarget {
            api_base: self.api_base.clone(),
            users_file: self.mock.users_file.clone(),
        }
    }

    /// Stops the mock without an audit (the run did not happen).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.db.close().await;
    }

    /// Waits for the queue to drain, stops the mock and audits the ledger,
    /// I5 included: `accepted` 202s seen by the run, `interrupted`
    /// iterations that may have missed theirs.
    pub async fn finish(self, accepted: u64, interrupted: u64) -> Result<AuditReport, Failure> {
        let MockHarness {
            mock,
            db,
            stop,
            task,
            ..
        } = self;
        let drained = wait_for_drain(&db, mock.drain_timeout).await;
        stop.cancel();
        let report = match (drained, task.await) {
            (Err(e), _) => Err(format!("cannot watch the queue drain: {e}")),
            (_, Ok(Err(e))) => Err(format!("mock-api failed: {e}")),
            (_, Err(e)) => Err(format!("mock-api panicked: {e}")),
            (Ok(drain), Ok(Ok(()))) => {
                if let Drain::TimedOut { processing } = drain {
                    eprintln!(
                        "loadgen: {processing} generation(s) still processing after --drain-timeout {}",
                        mock.drain_timeout_text
                    );
                }
                audit(&db, mock.since)
                    .await
                    .map_err(|e| format!("cannot audit: {e}"))
            }
        };
        db.close().await;
        let mut report = report.map_err(Failure::setup_failed)?;
        check_accepted(&mut report, accepted, interrupted);
        if let Some(file) = &mock.users_file {
            let _ = std::fs::remove_file(file);
        }
        Ok(report)
    }
}

/// I5 from the client's side: the 202s seen must match the sessions
/// stored. An interrupted iteration may have been cut off after the server
/// accepted but before the answer arrived, so each one widens the window
/// by one.
fn check_accepted(report: &mut AuditReport, accepted: u64, interrupted: u64) {
    let sessions = report.counts.sessions;
    if sessions < accepted || sessions > accepted + interrupted {
        report.compare_accepted(accepted);
    }
}

/// The audit as the HTML report's rows.
pub fn audit_rows(report: &AuditReport) -> Vec<AuditRow> {
    INVARIANTS
        .iter()
        .map(|(id, statement)| AuditRow {
            id: id.to_string(),
            description: statement.to_string(),
            violations: report.count_of(id),
            samples: report
                .violations_of(id)
                .flat_map(|v| v.samples.iter().cloned())
                .take(store::audit::MAX_SAMPLES)
                .collect(),
        })
        .collect()
}
