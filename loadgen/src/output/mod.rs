//! What the run prints and writes.
pub mod csv;
pub mod export;
pub mod ndjson;
pub mod report;
pub mod summary;

use crate::exit::Failure;
use crate::plan::Plan;
use crate::run::RunOutcome;

/// k6's end-of-run lines: the scenario line, then the summary (unless
/// `--no-summary`).
pub fn print_result(plan: &Plan, outcome: &RunOutcome) {
    println!(
        "\n     scenario: {} ({} VUs max), {} complete and {} interrupted iterations",
        plan.executor.name(),
        plan.executor.share(&plan.segment).max_vus,
        outcome.completed_iterations,
        outcome.interrupted_iterations
    );
    if let Some(style) = &plan.output.summary {
        print!("{}", summary::render(&outcome.snapshot, style));
    }
}

/// `--summary-export` and `--report` (with the audit's rows after a
/// `--spawn-mock` run).
pub fn write_files(
    plan: &Plan,
    outcome: &RunOutcome,
    audit: Option<Vec<report::AuditRow>>,
) -> Result<(), Failure> {
    let report = plan.output.report.as_deref().map(|path| {
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
                plan.output
                    .thresholds
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            ("seed".to_string(), format!("{:?}", plan.seed)),
            (
                "tags".to_string(),
                plan.tags
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        ];
        let report = report::Report {
            title: format!("loadgen report — {}", plan.api_base),
            snapshot: &outcome.snapshot,
            charts: report::charts(&outcome.series),
            audit,
            config,
        };
        (path, report)
    });
    write_snapshot_files(
        &outcome.snapshot,
        &plan.output.trend_stats,
        plan.output.summary_export.as_deref(),
        report.as_ref().map(|(path, report)| (*path, report)),
    )
}

/// Any run's `--summary-export` of `snapshot` and `--report` (the report
/// rendered from `report`), each where asked.
pub fn write_snapshot_files(
    snapshot: &crate::snapshot::Snapshot,
    trend_stats: &[summary::TrendStat],
    summary_export: Option<&std::path::Path>,
    report: Option<(&std::path::Path, &report::Report)>,
) -> Result<(), Failure> {
    let cannot_write = |path: &std::path::Path, e: std::io::Error| {
        Failure::invalid_config(format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = summary_export {
        std::fs::File::create(path)
            .and_then(|f| export::write(snapshot, trend_stats, std::io::BufWriter::new(f)))
            .map_err(|e| cannot_write(path, e))?;
    }
    if let Some((path, report)) = report {
        std::fs::write(path, report::render(report)).map_err(|e| cannot_write(path, e))?;
    }
    Ok(())
}
