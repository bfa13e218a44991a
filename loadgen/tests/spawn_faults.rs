//! `loadgen run --spawn-mock --mock-faults FILE --mock-seed N`: a fault
//! plan with 30 % provider failures shows up as `generation_failed`, exactly
//! the jobs the plan decides to fail, the same in every run with the same
//! seed; the ledger audit stays clean and the exit code is 0 (provider
//! failures of accepted generations are not request errors, so the
//! default thresholds pass).

mod common;

use std::process::Output;
use std::time::Duration;

use common::child::{expect_exit, expect_one_line_error, loadgen_spawn_mock, output_within};
use common::export::read_json;
use mock_api::faults::{FaultSettings, Faults, Plan};
use mock_api::testing::assert_binomial;
use serde_json::Value;

const PLAN: &str = r#"
[[rules]]
name = "spawn-outage"
target = "provider"
kind = "error"
rate = 0.3
per = "job"
statuses = { "503" = 1 }
"#;

const ITERATIONS: u64 = 120;
const SEED: u64 = 7;

fn run(plan: &std::path::Path, export: &std::path::Path, seed: u64) -> Output {
    output_within(
        loadgen_spawn_mock()
            .args(["--vus", "4", "--iterations", &ITERATIONS.to_string()])
            .args(["--think-time", "0", "--mock-latency", "5ms..20ms"])
            .args(["--mock-seed", &seed.to_string()])
            .arg("--mock-faults")
            .arg(plan)
            .arg("--summary-export")
            .arg(export),
        Duration::from_secs(120),
    )
}

fn count(summary: &Value, name: &str) -> u64 {
    summary["metrics"][name]["count"].as_f64().unwrap_or(0.0) as u64
}

/// The jobs the plan fails: requests without a clientKey get the key of
/// their ordinal on the generate route, 0…ITERATIONS-1.
fn expected_failures(seed: u64) -> u64 {
    let faults = Faults::new(
        FaultSettings {
            plan: Plan::parse(PLAN).unwrap(),
            seed,
            seed_given: true,
            ..FaultSettings::default()
        },
        tokio_util::sync::CancellationToken::new(),
    );
    (0..ITERATIONS)
        .filter(|i| {
            faults
                .provider_faults(&i.to_string(), 1, 1)
                .outcome
                .is_some()
        })
        .count() as u64
}

#[test]
fn provider_failures_are_counted_reproducible_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let expected = expected_failures(SEED);
    assert_binomial("jobs the plan fails", expected, ITERATIONS, 0.3);
    let mut seen = Vec::new();
    for round in 0..2 {
        let export = dir.path().join(format!("summary-{round}.json"));
        let out = run(&plan, &export, SEED);
        let stdout = expect_exit(&out, 0);
        assert!(
            stdout.contains("AUDIT ✓ all 7 ledger invariants hold"),
            "{stdout}"
        );
        let summary = read_json(&export);
        let failed = count(&summary, "generation_failed");
        let completed = count(&summary, "generation_completed");
        assert_eq!(failed + completed, ITERATIONS, "{stdout}");
        seen.push(failed);
    }
    assert_eq!(seen, [expected, expected]);
}

#[test]
fn a_bad_fault_plan_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "[[rules]]\nkind = \"error\"\ntarget = \"provider\"\nrate = 3\n",
    )
    .unwrap();
    let export = dir.path().join("summary.json");
    let out = run(&plan, &export, SEED);
    let error = expect_one_line_error(&out, 104);
    assert!(error.contains("rules[0].rate"), "{error}");
    let missing = run(&dir.path().join("missing.toml"), &export, SEED);
    assert_eq!(missing.status.code(), Some(104));
}
