//! The two subcommands from parsed options to an exit code: what they
//! print and write. `main` only sets up the process.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cli::{AuditArgs, RunArgs};
use crate::output::{export, report, summary};
use crate::plan::Plan;
use crate::run::{self, exit, RunOutcome};

/// `loadgen run`.
pub async fn run(args: RunArgs, interrupt: Arc<AtomicBool>) -> i32 {
    if args.spawn_mock {
        return crate::spawn::run(args, interrupt).await;
    }
    let plan = match Plan::from_args(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return exit::INVALID_CONFIG;
        }
    };
    match run::execute(plan.clone(), interrupt).await {
        Ok(outcome) => {
            print_result(&plan, &outcome);
            write_files(&plan, &outcome, None)
                .filter(|_| crate::shard::Shard::write_if_asked(&plan, &outcome))
                .unwrap_or(exit::INVALID_CONFIG)
                .max(outcome.exit_code)
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            e.exit_code()
        }
    }
}

/// k6's end-of-run lines: the scenario line, then the classic summary.
pub fn print_result(plan: &Plan, outcome: &RunOutcome) {
    println!(
        "\n     scenario: {} ({} VUs max), {} complete and {} interrupted iterations",
        plan.executor.name(),
        plan.executor.share(&plan.segment).max_vus,
        outcome.completed_iterations,
        outcome.interrupted_iterations
    );
    print!("{}", summary::render(&outcome.snapshot, plan.color));
}

/// `--summary-export` and `--report`; returns 0, or prints why it failed.
pub fn write_files(
    plan: &Plan,
    outcome: &RunOutcome,
    audit: Option<Vec<report::AuditRow>>,
) -> Option<i32> {
    if let Some(path) = &plan.summary_export {
        let written = std::fs::File::create(path)
            .and_then(|f| export::write(&outcome.snapshot, std::io::BufWriter::new(f)));
        if let Err(e) = written {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return None;
        }
    }
    if let Some(path) = &plan.report {
        let config = vec![
            ("api_base".to_string(), plan.api_base.clone()),
            ("executor".to_string(), format!("{:?}", plan.executor)),
            ("accounts".to_string(), plan.accounts.len().to_string()),
            (
                "think_time".to_string(),
                format!("{:?}", plan.scenario.think_time),
            ),
            ("login".to_string(), format!("{:?}", plan.scenario.login)),
            (
                "thresholds".to_string(),
                plan.thresholds
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ("seed".to_string(), format!("{:?}", plan.seed)),
        ];
        let html = report::render(&report::Report {
            title: format!("loadgen report — {}", plan.api_base),
            snapshot: &outcome.snapshot,
            charts: report::charts(&outcome.series),
            audit,
            config,
        });
        if let Err(e) = std::fs::write(path, html) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return None;
        }
    }
    Some(exit::OK)
}

/// `loadgen audit`.
pub async fn audit(args: AuditArgs) -> i32 {
    crate::audit::command(args).await
}
