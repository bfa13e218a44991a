//! `loadgen run --spawn-mock`: the hermetic run. Starts mock-api inside
//! this process on a free loopback port (a temporary SQLite database and the
//! embedded queue unless told otherwise), seeds the test account(s) with
//! enough credits for the plan, runs the test exactly as `loadgen run`
//! would, waits for the queue to drain, audits the ledger, and reports.
//!
//! The exit code is the run's (thresholds 99, …) unless the audit finds a
//! violation, which wins with `AUDIT_FAILED` (113): a lost credit matters
//! more than a slow percentile.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use mock_api::config::Config;
use mock_api::server;
use store::audit::{audit, AuditReport, INVARIANTS};
use store::db::{redact_url, Db};
use store::drain::{wait_for_drain, Drain};
use store::seeding::{ensure_user, ensure_users, loadtest_users, write_users_file, SeedUser};
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::command::{print_result, write_files};
use crate::output::report::AuditRow;
use crate::plan::{parse_duration, parse_duration_range, Plan, PlanError};
use crate::run::{self, exit};

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
    /// The fault plan file (`--mock-faults`), read by the mock at start.
    faults: Option<PathBuf>,
    drain_timeout: Duration,
    /// Audit only rows of this run when the database was given (it may hold
    /// earlier runs).
    since: Option<store::db::Timestamp>,
}

fn mock_plan(args: &RunArgs, plan: &Plan) -> Result<MockPlan, PlanError> {
    if let Some(file) = &args.mock_faults {
        // Read and validated here so a bad plan is a one-line error before
        // anything starts.
        mock_api::faults::read_plan(file).map_err(|e| PlanError::new("mock-faults", e))?;
    }
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
            (loadtest_users(n as usize, &args.password), Some(file))
        }
        None => (
            vec![SeedUser::new(args.email.clone(), args.password.clone())],
            None,
        ),
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
    })
}

fn mock_config(mock: &MockPlan) -> Config {
    let mut config = Config::defaults();
    config.bind = ([127, 0, 0, 1], 0).into();
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
    config
}

/// `loadgen run --spawn-mock`.
pub async fn run(mut args: RunArgs, interrupt: Arc<AtomicBool>) -> i32 {
    // Validate the test's own options before starting anything.
    let draft = match Plan::from_args(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return exit::INVALID_CONFIG;
        }
    };
    let mock = match mock_plan(&args, &draft) {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return exit::INVALID_CONFIG;
        }
    };
    let config = mock_config(&mock);
    if let Err(e) = config.validate() {
        eprintln!("loadgen: invalid mock option: {e}");
        return exit::INVALID_CONFIG;
    }
    let db = match Db::open(&mock.database_url).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return exit::SETUP_FAILED;
        }
    };
    let now = chrono::Utc::now();
    let cost = store::users::DEFAULT_BCRYPT_COST;
    let seeded = match &mock.users_file {
        None => ensure_user(&db, &mock.accounts[0], mock.credits, cost, now).await,
        Some(_) => ensure_users(&db, &mock.accounts, mock.credits, cost, now).await,
    };
    if let Err(e) = seeded {
        eprintln!(
            "loadgen: cannot seed {}: {e}",
            redact_url(&mock.database_url)
        );
        return exit::SETUP_FAILED;
    }
    if let Some(file) = &mock.users_file {
        if let Err(e) = write_users_file(file, &mock.accounts) {
            eprintln!("loadgen: cannot write {}: {e}", file.display());
            return exit::SETUP_FAILED;
        }
        args.users_file = Some(file.clone());
    }
    let listener = match tokio::net::TcpListener::bind(config.listen_addr()).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("loadgen: cannot bind a loopback port for the mock: {e}");
            return exit::SETUP_FAILED;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return exit::SETUP_FAILED;
        }
    };
    args.api_base = format!("http://{addr}");
    let stop_mock = CancellationToken::new();
    let mock_task = tokio::spawn(server::run(listener, config, stop_mock.clone()));
    if !args.quiet {
        println!(
            "     mock-api: {} (database {}, {} queue, {} account(s) with {} credits, provider {}ms..{}ms)",
            args.api_base,
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
    let plan = match Plan::from_args(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("loadgen: {e}");
            stop_mock.cancel();
            let _ = mock_task.await;
            return exit::INVALID_CONFIG;
        }
    };
    let outcome = run::execute(plan.clone(), interrupt).await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("loadgen: {e}");
            stop_mock.cancel();
            let _ = mock_task.await;
            return e.exit_code();
        }
    };
    let drained = wait_for_drain(&db, mock.drain_timeout).await;
    stop_mock.cancel();
    let mock_result = mock_task.await;
    let report = match (drained, mock_result) {
        (Err(e), _) => Err(format!("cannot watch the queue drain: {e}")),
        (_, Ok(Err(e))) => Err(format!("mock-api failed: {e}")),
        (_, Err(e)) => Err(format!("mock-api panicked: {e}")),
        (Ok(drain), Ok(Ok(()))) => {
            if let Drain::TimedOut { processing } = drain {
                eprintln!(
                    "loadgen: {processing} generation(s) still processing after --drain-timeout {}",
                    args.drain_timeout
                );
            }
            audit(&db, mock.since)
                .await
                .map_err(|e| format!("cannot audit: {e}"))
        }
    };
    db.close().await;
    print_result(&plan, &outcome);
    let mut report = match report {
        Ok(report) => report,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return exit::SETUP_FAILED;
        }
    };
    check_accepted(
        &mut report,
        outcome.accepted_generations,
        outcome.interrupted_iterations,
    );
    print!("{}", crate::audit::render_text(&report));
    let written =
        write_files(&plan, &outcome, Some(audit_rows(&report))).unwrap_or(exit::INVALID_CONFIG);
    if let Some(file) = &mock.users_file {
        let _ = std::fs::remove_file(file);
    }
    if !report.is_clean() {
        return exit::AUDIT_FAILED;
    }
    written.max(outcome.exit_code)
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

fn audit_rows(report: &AuditReport) -> Vec<AuditRow> {
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
