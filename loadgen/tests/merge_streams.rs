//! `loadgen merge --out`: the merged stream of a test split over two
//! execution segments holds every sample of both shards' own `--out json`
//! streams, in time order, with the metric names and the
//! `http_req_duration` points of one unsegmented run of the same test.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::{start, Behaviour};

const DEADLINE: Duration = Duration::from_secs(60);

/// The test: 30 shared iterations over 4 VUs, with `extra` options.
fn shared_iterations(base: &str, extra: &[&str]) -> Command {
    let mut command = common::child::loadgen_run(base);
    command.env_remove("JOB_COMPLETION_INDEX");
    command
        .args(["--vus", "4", "--iterations", "30"])
        .args(extra);
    command
}

/// A k6 JSON stream: its Metric lines' names and its points
/// (metric, time, value, tags), in file order.
struct Stream {
    declared: BTreeSet<String>,
    points: Vec<(String, String, String, String)>,
}

fn read(path: &Path) -> Stream {
    let mut stream = Stream {
        declared: BTreeSet::new(),
        points: Vec::new(),
    };
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        let metric = line["metric"].as_str().unwrap().to_string();
        match line["type"].as_str().unwrap() {
            "Metric" => assert!(stream.declared.insert(metric), "declared twice"),
            "Point" => {
                let data = &line["data"];
                assert!(
                    stream.declared.contains(&metric),
                    "{metric} before its Metric line"
                );
                stream.points.push((
                    metric,
                    data["time"].as_str().unwrap().to_string(),
                    data["value"].to_string(),
                    data["tags"].to_string(),
                ));
            }
            other => panic!("line of type {other}"),
        }
    }
    stream
}

fn times_ordered(points: &[(String, String, String, String)]) -> bool {
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        points.iter().map(|p| p.1.parse().unwrap()).collect();
    times.windows(2).all(|w| w[0] <= w[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_out_json_holds_every_sample_of_every_shard() {
    let server = start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let (base, dir_path) = (server.base.clone(), dir.path().to_path_buf());
    tokio::task::spawn_blocking(move || {
        let at = |name: &str| dir_path.join(name);
        let whole = at("whole.ndjson");
        common::child::expect_exit(
            &common::child::output_within(
                shared_iterations(&base, &["--tag", "testid=t1"])
                    .arg("--out")
                    .arg(format!("json={}", whole.display())),
                DEADLINE,
            ),
            0,
        );
        let children: Vec<Child> = ["0:1/2", "1/2:1"]
            .iter()
            .enumerate()
            .map(|(i, segment)| {
                let mut command = shared_iterations(
                    &base,
                    &[
                        "--tag",
                        "testid=t1",
                        "--no-thresholds",
                        "--execution-segment",
                        segment,
                    ],
                );
                command
                    .arg("--shard-out")
                    .arg(at(&format!("shard{i}.json")))
                    .arg("--out")
                    .arg(format!("json={}", at(&format!("s{i}.ndjson")).display()));
                common::child::spawn_piped(&mut command)
            })
            .collect();
        for child in children {
            common::child::expect_exit(&common::child::wait_within(child, DEADLINE), 0);
        }
        let shards: Vec<PathBuf> = (0..2).map(|i| at(&format!("shard{i}.json"))).collect();
        let (merged, csv) = (at("merged.ndjson"), at("merged.csv"));
        let out = common::child::output_within(
            Command::new(env!("CARGO_BIN_EXE_loadgen"))
                .arg("merge")
                .args(&shards)
                .arg("--out")
                .arg(format!("json={}", merged.display()))
                .arg("--out")
                .arg(format!("csv={}", csv.display())),
            DEADLINE,
        );
        common::child::expect_exit(&out, 0);

        let (whole, merged) = (read(&whole), read(&merged));
        let parts: Vec<Stream> = (0..2).map(|i| read(&at(&format!("s{i}.ndjson")))).collect();
        // The metric names and the http_req_duration points of one run.
        assert_eq!(merged.declared, whole.declared);
        let durations = |s: &Stream| {
            s.points
                .iter()
                .filter(|p| p.0 == "http_req_duration")
                .count()
        };
        assert_eq!(durations(&merged), durations(&whole));
        assert_eq!(
            durations(&whole),
            60,
            "a login and a generate per iteration"
        );
        for metric in [
            "http_req_waiting",
            "checks",
            "iterations",
            "iteration_duration",
        ] {
            assert!(merged.declared.contains(metric), "{metric}");
        }
        // Every sample of both shards, tags intact, and no other.
        let mut expected: Vec<_> = parts.iter().flat_map(|s| s.points.clone()).collect();
        let mut got = merged.points.clone();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        assert!(merged
            .points
            .iter()
            .all(|p| p.3.contains(r#""testid":"t1""#)));
        // In time order when each shard's own stream is.
        if parts.iter().all(|s| times_ordered(&s.points)) {
            assert!(times_ordered(&merged.points));
        }
        // The CSV: a header, then one row per point.
        let rows = std::fs::read_to_string(&csv).unwrap().lines().count();
        assert_eq!(rows, merged.points.len() + 1);

        // Refused with one line naming the stream: one cut short, then
        // one that is gone.
        let s1 = at("s1.ndjson");
        let refusal = |out: &std::path::Path| {
            let out = common::child::output_within(
                Command::new(env!("CARGO_BIN_EXE_loadgen"))
                    .arg("merge")
                    .args(&shards)
                    .arg("--out")
                    .arg(format!("json={}", out.display())),
                DEADLINE,
            );
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(104), "{stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert!(stderr.contains("s1.ndjson"), "{stderr}");
            stderr
        };
        let text = std::fs::read_to_string(&s1).unwrap();
        let half: Vec<&str> = text.lines().take(text.lines().count() / 2).collect();
        std::fs::write(&s1, half.join("\n")).unwrap();
        let stderr = refusal(&at("cut.ndjson"));
        assert!(stderr.contains("iterations"), "{stderr}");
        std::fs::remove_file(&s1).unwrap();
        let stderr = refusal(&at("again.ndjson"));
        assert!(stderr.contains("neither there nor beside"), "{stderr}");
    })
    .await
    .unwrap();
}
