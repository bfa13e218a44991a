//! End to end over three "hosts": three loadgen instances, each in a
//! network namespace of its own joined by a veth pair to a bridge in this
//! namespace, where mock-api listens on the bridge's private address. They
//! run one shared-iterations test with `--start-at` and their shards are
//! merged: iterations and `http_reqs` equal a single-process run of the same
//! test, and the merged thresholds are evaluated. The namespaces, links and
//! addresses are this test's own, removed even when it fails. Skipped only
//! where the kernel refuses network namespaces; under `CI` that fails.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::child::{expect_exit, loadgen, loadgen_run, output_within, spawn_piped, wait_within};
use common::export::{export_count as count, read_json};
use mock_api::testing::{test_config, TestServer};

const DEADLINE: Duration = Duration::from_secs(90);
const INSTANCES: usize = 3;

/// `ip ARGS`, its failure as one line.
fn ip(args: &[&str]) -> Result<(), String> {
    let mut command = Command::new("ip");
    command.args(args);
    store::testing::run(command, &format!("ip {}", args.join(" ")))
}

/// A bridge here with a private /24, and one namespace per instance joined
/// to it by a veth pair. Dropping it deletes them all (a namespace takes
/// its veth pair with it).
struct Hosts {
    tag: u32,
    bridge: String,
    namespaces: Vec<String>,
    /// The bridge's address, where the mock listens.
    gateway: String,
}

impl Hosts {
    fn create() -> Result<Hosts, String> {
        let tag = std::process::id() % 100_000;
        // 10.251.N.0/24 with N from the process id: distinct between runs.
        let subnet = format!("10.251.{}", tag % 250);
        let mut hosts = Hosts {
            tag,
            bridge: format!("lgbr{tag}"),
            namespaces: Vec::new(),
            gateway: format!("{subnet}.1"),
        };
        ip(&["link", "add", &hosts.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", hosts.gateway),
            "dev",
            &hosts.bridge,
        ])?;
        ip(&["link", "set", &hosts.bridge, "up"])?;
        for i in 0..INSTANCES {
            let namespace = format!("loadgen-{tag}-{i}");
            ip(&["netns", "add", &namespace])?;
            hosts.namespaces.push(namespace.clone());
            let (outer, inner) = (format!("lgh{tag}x{i}"), format!("lgn{tag}x{i}"));
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &namespace])?;
            ip(&["link", "set", &outer, "master", &hosts.bridge, "up"])?;
            let address = format!("{subnet}.{}/24", i + 2);
            ip(&["-n", &namespace, "addr", "add", &address, "dev", &inner])?;
            ip(&["-n", &namespace, "link", "set", &inner, "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(hosts)
    }

    /// `loadgen run` against `base` inside namespace `i`.
    fn loadgen_in(&self, i: usize, base: &str) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespaces[i]])
            .arg(env!("CARGO_BIN_EXE_loadgen"))
            .args(["run", "--quiet", "--no-color", "--think-time", "0"])
            .args(["--api-base", base])
            .env_remove("JOB_COMPLETION_INDEX");
        command
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = ip(&["netns", "del", namespace]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        // A pair whose namespace was never reached is still here.
        for i in 0..INSTANCES {
            let _ = ip(&["link", "del", &format!("lgh{}x{i}", self.tag)]);
        }
    }
}

/// The namespaces, or None (a SKIP line) where the kernel refuses them;
/// under `CI` that is a failure.
fn hosts() -> Option<Hosts> {
    match Hosts::create() {
        Ok(hosts) => Some(hosts),
        Err(why) => store::testing::unavailable("network namespaces", &why),
    }
}

const TEST: [&str; 4] = ["--vus", "6", "--iterations", "45"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_in_their_own_namespaces_merge_to_one_run() {
    let Some(hosts) = hosts().map(std::sync::Arc::new) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&store::testing::sqlite_url(dir.path()));
    config.bind = format!("{}:0", hosts.gateway).parse().unwrap();
    let server = TestServer::start(config).await;
    let base = server.base.clone();
    let dir_path = dir.path().to_path_buf();
    let in_namespaces = hosts.clone();
    tokio::task::spawn_blocking(move || {
        let hosts = in_namespaces;
        // The same test in one process, from this namespace.
        let whole = dir_path.join("whole.json");
        let out = output_within(
            loadgen_run(&base)
                .args(TEST)
                .arg("--summary-export")
                .arg(&whole),
            DEADLINE,
        );
        expect_exit(&out, 0);

        // Three instances, one per namespace, at one start time.
        let start_at = SystemTime::now() + Duration::from_secs(3);
        let start_ms = start_at.duration_since(UNIX_EPOCH).unwrap().as_millis();
        let shards: Vec<_> = (0..INSTANCES)
            .map(|i| dir_path.join(format!("shard{i}.json")))
            .collect();
        let children: Vec<_> = (0..INSTANCES)
            .map(|i| {
                let mut command = hosts.loadgen_in(i, &base);
                command
                    .args(TEST)
                    .args(["--no-thresholds", "--instance-count", "3"])
                    .args(["--instance-index", &i.to_string()])
                    .args(["--start-at", &start_ms.to_string()])
                    .arg("--shard-out")
                    .arg(&shards[i]);
                spawn_piped(&mut command)
            })
            .collect();
        for child in children {
            expect_exit(&wait_within(child, DEADLINE), 0);
        }
        assert!(SystemTime::now() >= start_at);

        let merged = dir_path.join("merged.json");
        let mut merge = loadgen(&["merge"]);
        merge
            .args(&shards)
            .args(["--threshold", "http_req_failed:rate<0.01"])
            .args(["--threshold", "iterations:count==45"])
            .arg("--summary-export")
            .arg(&merged);
        let out = output_within(&mut merge, DEADLINE);
        expect_exit(&out, 0);
        for metric in ["iterations", "http_reqs"] {
            assert_eq!(count(&merged, metric), count(&whole, metric), "{metric}");
        }
        assert_eq!(count(&merged, "iterations"), 45.0);
        // Evaluated on the whole (k6's legacy export: false = passed).
        let export = read_json(&merged);
        assert_eq!(
            export["metrics"]["iterations"]["thresholds"]["count==45"], false,
            "{export}"
        );

        // A threshold that fails on the whole: 99.
        let mut merge = loadgen(&["merge"]);
        merge
            .args(&shards)
            .args(["--threshold", "iterations:count<45"]);
        let out = output_within(&mut merge, DEADLINE);
        expect_exit(&out, 99);
    })
    .await
    .unwrap();
    server.stop().await.unwrap();
    drop(hosts);
}
