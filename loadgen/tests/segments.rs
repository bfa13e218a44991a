//! One shared-iterations test split over three loadgen processes by
//! execution segments, merged, against one unsegmented run of the same
//! test; each instance's VUs using the accounts of their numbers in the
//! whole test; and the exit codes of the segment options and of `loadgen
//! merge`.

mod common;

use std::process::{Child, Command};

use common::child::{
    expect_exit, expect_one_line_error, loadgen, output, spawn_piped, stderr, wait_within, DEADLINE,
};
use common::export::{export_count as count, read_json};
use common::{start, Behaviour};

/// `loadgen run` against `base`, blind to the variable of a Kubernetes
/// Indexed Job unless the test sets it.
fn loadgen_run(base: &str) -> Command {
    let mut command = common::child::loadgen_run(base);
    command.env_remove("JOB_COMPLETION_INDEX");
    command
}

/// The test every instance splits: 30 shared iterations over 4 VUs.
fn shared_iterations(base: &str) -> Command {
    let mut command = loadgen_run(base);
    command.args(["--vus", "4", "--iterations", "30"]);
    command
}

fn merge() -> Command {
    loadgen(&["merge"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_segments_merged_equal_one_unsegmented_run() {
    let server = start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let base = server.base.clone();
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let whole = dir_path.join("whole.json");
        expect_exit(
            &output(shared_iterations(&base).arg("--summary-export").arg(&whole)),
            0,
        );
        assert_eq!(count(&whole, "iterations"), 30.0);

        // Three instances at once, two by index, one from the variable a
        // Kubernetes Indexed Job sets.
        let children: Vec<Child> = (0..3)
            .map(|i| {
                let mut command = shared_iterations(&base);
                command
                    .args(["--no-thresholds", "--instance-count", "3", "--shard-out"])
                    .arg(dir_path.join(format!("shard{i}.json")));
                if i == 2 {
                    command.env("JOB_COMPLETION_INDEX", "2");
                } else {
                    command.args(["--instance-index", &i.to_string()]);
                }
                spawn_piped(&mut command)
            })
            .collect();
        for child in children {
            expect_exit(&wait_within(child, DEADLINE), 0);
        }
        let shards: Vec<_> = (0..3)
            .map(|i| dir_path.join(format!("shard{i}.json")))
            .collect();
        let shard2 = read_json(&shards[2]);
        assert_eq!(shard2["segment"], "2/3:1");
        assert_eq!(shard2["sequence"], "0,1/3,2/3,1");

        let merged = dir_path.join("merged.json");
        let report = dir_path.join("merged.html");
        let json = dir_path.join("merged.ndjson");
        let stdout = expect_exit(
            &output(
                merge()
                    .args(&shards)
                    .arg("--summary-export")
                    .arg(&merged)
                    .arg("--report")
                    .arg(&report)
                    .arg("--out")
                    .arg(format!("json={}", json.display())),
            ),
            0,
        );
        assert!(stdout.contains("30 complete"), "{stdout}");
        assert!(stdout.contains("http_req_duration"), "{stdout}");
        for metric in ["iterations", "http_reqs"] {
            assert_eq!(count(&merged, metric), count(&whole, metric), "{metric}");
        }
        assert!(std::fs::read_to_string(&report)
            .unwrap()
            .contains("0:1/3, 1/3:2/3, 2/3:1"));
        let lines = std::fs::read_to_string(&json).unwrap();
        assert!(
            lines.contains(r#""metric":"iterations""#) && lines.contains(r#""value":30.0"#),
            "{lines}"
        );

        // The thresholds are evaluated on the whole: 99 when one fails.
        expect_exit(
            &output(
                merge()
                    .args(&shards)
                    .args(["--threshold", "iterations:count<30"]),
            ),
            99,
        );

        // Part of the test: a warning, still merged.
        let out = output(merge().args(&shards[..2]));
        expect_exit(&out, 0);
        assert!(stderr(&out).contains("not all of 0..1"), "{}", stderr(&out));

        // The same shard twice overlaps itself: 104, one line.
        expect_one_line_error(&output(merge().arg(&shards[0]).arg(&shards[0])), 104);
    })
    .await
    .unwrap();
    // Every iteration's generate reached the mock once: 30 + 30.
    assert_eq!(
        server.generates.load(std::sync::atomic::Ordering::Relaxed),
        60
    );
}

/// With `--users-file`, VU n of an instance logs in as the account of its
/// number in the whole test (k6's `exec.vu.idInTest`), not of its number in
/// the instance: two halves use the six accounts one process would, each
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segments_vus_use_the_accounts_of_their_global_numbers() {
    // One mock per half, so each one's logins are that half's.
    let servers = [
        start(Behaviour::Accept).await,
        start(Behaviour::Accept).await,
    ];
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.csv");
    let emails: Vec<String> = (1..=6).map(|n| format!("u{n}@example.com")).collect();
    let lines: Vec<String> = emails.iter().map(|e| format!("{e},pw")).collect();
    std::fs::write(&users, lines.join("\n")).unwrap();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let children: Vec<Child> = bases
            .iter()
            .zip(["0:1/2", "1/2:1"])
            .map(|(base, segment)| {
                let mut command = loadgen_run(base);
                command
                    .args(["--executor", "per-vu-iterations", "--vus", "6"])
                    .args(["--iterations", "1", "--execution-segment", segment])
                    .arg("--users-file")
                    .arg(&users);
                spawn_piped(&mut command)
            })
            .collect();
        for child in children {
            expect_exit(&wait_within(child, DEADLINE), 0);
        }
    })
    .await
    .unwrap();
    // Each half's setup logs in as the first account, then each of its VUs
    // once: the first half holds the odd global VUs, the second the even.
    let logins = |server: &common::Server| {
        let mut logins = server.logins.lock().unwrap().clone();
        logins.sort();
        logins
    };
    let accounts = |numbers: [usize; 4]| -> Vec<String> {
        let mut accounts: Vec<String> = numbers.iter().map(|n| emails[n - 1].clone()).collect();
        accounts.sort();
        accounts
    };
    assert_eq!(logins(&servers[0]), accounts([1, 1, 3, 5]));
    assert_eq!(logins(&servers[1]), accounts([1, 2, 4, 6]));
}

#[test]
fn one_hundred_four_for_invalid_segments() {
    for bad in [
        &["--execution-segment", "2/3:1/3"][..],
        &["--execution-segment", "0:1.5"][..],
        &["--execution-segment", "half"][..],
        &[
            "--execution-segment",
            "0:1/2",
            "--execution-segment-sequence",
            "0,1/3,1",
        ][..],
        &["--execution-segment-sequence", "0,2/3,1/3,1"][..],
        &["--instance-count", "3", "--instance-index", "3"][..],
        &["--instance-count", "3"][..],
        &["--instance-index", "1"][..],
        &[
            "--instance-count",
            "2",
            "--instance-index",
            "0",
            "--execution-segment",
            "0:1/2",
        ][..],
    ] {
        expect_one_line_error(&output(loadgen_run("http://127.0.0.1:9").args(bad)), 104);
    }
    let dir = tempfile::tempdir().unwrap();
    let not_a_shard = dir.path().join("x.json");
    std::fs::write(&not_a_shard, "{}").unwrap();
    for args in [
        vec![not_a_shard.display().to_string()],
        vec![dir.path().join("missing.json").display().to_string()],
    ] {
        expect_one_line_error(&output(merge().args(&args)), 104);
    }
}
