//! The two subcommands from parsed options to an exit code: what they
//! print and write. `main` only sets up the process and prints a
//! [`Failure`]'s line.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cli::{AuditArgs, RunArgs};
use crate::exit::{self, Failure};
use crate::open_files;
use crate::output::{print_result, write_files};
use crate::plan::Plan;
use crate::run;
use crate::shard::Shard;
use crate::spawn::{audit_rows, MockHarness};

/// `loadgen run`: against `--api-base`, or against a mock of its own
/// (`--spawn-mock`).
pub async fn run(args: RunArgs, interrupt: Arc<AtomicBool>) -> Result<i32, Failure> {
    let plan = Plan::from_args(&args)?;
    fit_open_files(&plan, args.spawn_mock)?;
    if args.spawn_mock {
        return run_with_mock(&args, plan, interrupt).await;
    }
    let outcome = run::execute(plan.clone(), interrupt).await?;
    print_result(&plan, &outcome);
    let written =
        write_files(&plan, &outcome, None).and_then(|()| Shard::write_if_asked(&plan, &outcome));
    exit::after(outcome.exit_code, written)
}

/// Raises the open-file limit to its hard limit and refuses a plan whose
/// VUs' sockets cannot fit (with `--spawn-mock` the mock's ends count too).
fn fit_open_files(plan: &Plan, spawn_mock: bool) -> Result<(), Failure> {
    let Some(limit) = open_files::raise() else {
        return Ok(());
    };
    if limit.soft > limit.before {
        tracing::info!(
            "raised the open-file limit from {} to {}",
            limit.before,
            limit.soft
        );
    }
    let vus = plan.executor.share(&plan.segment).max_vus;
    open_files::check(&limit, vus, if spawn_mock { 2 } else { 1 }).map_err(Failure::invalid_config)
}

/// `loadgen run --spawn-mock`: the run between the mock's start and its
/// audit. The audit's verdict wins over the run's: a lost credit matters
/// more than a slow percentile.
async fn run_with_mock(
    args: &RunArgs,
    plan: Plan,
    interrupt: Arc<AtomicBool>,
) -> Result<i32, Failure> {
    let mock = MockHarness::start(args, &plan).await?;
    let target = mock.target();
    let plan = match plan.against(target.api_base, target.users_file.as_deref()) {
        Ok(plan) => plan,
        Err(e) => {
            mock.stop().await;
            return Err(e.into());
        }
    };
    let outcome = match run::execute(plan.clone(), interrupt).await {
        Ok(outcome) => outcome,
        Err(e) => {
            mock.stop().await;
            return Err(e.into());
        }
    };
    let report = mock
        .finish(outcome.accepted_generations, outcome.interrupted_iterations)
        .await;
    print_result(&plan, &outcome);
    let report = report?;
    print!("{}", crate::audit::render_text(&report));
    let written = write_files(&plan, &outcome, Some(audit_rows(&report)));
    if !report.is_clean() {
        return exit::after(exit::AUDIT_FAILED, written);
    }
    exit::after(outcome.exit_code, written)
}

/// `loadgen audit`.
pub async fn audit(args: AuditArgs) -> Result<i32, Failure> {
    crate::audit::command(args).await
}
