//! `seed` stands on the store alone: its normal dependency tree holds no
//! HTTP server or client stack and no Redis (issue 15's "Done when").

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn seed_depends_on_no_http_stack_and_no_redis() {
    // Cargo sets CARGO for the tests it runs; --offline keeps this off the
    // network (the lock file and the sources are already there).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("tree.txt");
    let mut child = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "seed",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run cargo tree");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("cargo tree did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "cargo tree failed: {status}");
    let tree = std::fs::read_to_string(&out_path).unwrap();
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(names.contains(&"store"), "{tree}");
    let forbidden: Vec<&&str> = names
        .iter()
        .filter(|name| {
            ["axum", "tower", "hyper", "redis", "mock-api"]
                .iter()
                .any(|bad| name.starts_with(bad))
        })
        .collect();
    assert!(forbidden.is_empty(), "seed pulls in {forbidden:?}");
}
