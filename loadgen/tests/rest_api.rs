//! k6's REST API (`--address`, `--paused`) driving a running loadgen, and
//! `--start-at`: pause, resume, scale the externally-controlled executor,
//! stop; the exit codes of a late start and of an address in use.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::child::{
    expect_exit, expect_one_line_error, loadgen_run, output, spawn_piped, stderr, wait_within,
    DEADLINE,
};
use common::{start, Behaviour};
use serde_json::{json, Value};

/// One request on its own connection; the status and the JSON body.
fn request(address: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).expect("the REST API answers");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn status(address: &str) -> Value {
    let (code, body) = request(address, "GET", "/v1/status", None);
    assert_eq!(code, 200, "{body}");
    body["data"]["attributes"].clone()
}

fn patch(address: &str, attributes: Value) -> (u16, Value) {
    let body = json!({"data": {"type": "status", "id": "default", "attributes": attributes}});
    request(address, "PATCH", "/v1/status", Some(body))
}

/// Polls `check` until it holds, failing after the deadline.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < DEADLINE, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `command` and reads the REST API's address from its first
/// stderr line (the rest is drained); `wait_within` collects stdout.
fn spawn_with_api(command: &mut Command) -> (Child, String) {
    let mut child = spawn_piped(command);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("loadgen: REST API on http://")
        .unwrap_or_else(|| panic!("no address line: {line:?}"))
        .to_string();
    // Keep draining stderr so the child never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_scale_and_stop_through_the_rest_api() {
    let server = start(Behaviour::Accept).await;
    let base = server.base.clone();
    let generates = server.generates.clone();
    tokio::task::spawn_blocking(move || {
        let mut command = loadgen_run(&base);
        command.args([
            "--executor",
            "externally-controlled",
            "--vus",
            "1",
            "--max-vus",
            "4",
            "--duration",
            "0",
            "--paused",
            "--address",
            "127.0.0.1:0",
        ]);
        let (child, address) = spawn_with_api(&mut command);

        // Paused before the start: not running, nothing sent.
        let attributes = status(&address);
        assert_eq!(attributes["paused"], true, "{attributes}");
        assert_eq!(attributes["running"], false, "{attributes}");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(generates.load(Ordering::Relaxed), 0);

        // Resumed: iterations run.
        let (code, body) = patch(&address, json!({"paused": false}));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["data"]["attributes"]["paused"], false, "{body}");
        eventually("iterations after the resume", || {
            generates.load(Ordering::Relaxed) >= 3
        });

        // Scaled within max VUs; above it, k6's 400.
        let (code, body) = patch(&address, json!({"vus": 3}));
        assert_eq!(code, 200, "{body}");
        eventually("3 VUs", || status(&address)["vus"] == 3);
        let (code, body) = patch(&address, json!({"vus": 9}));
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["errors"][0]["title"], "Config update error", "{body}");
        let (code, _) = patch(&address, json!({"vus": 1}));
        assert_eq!(code, 200);
        eventually("back to 1 VU", || status(&address)["vus"] == 1);
        // vus-max raised: the run's VU maximum follows (what the status and
        // the progress line read), and the new VUs may be used.
        assert_eq!(status(&address)["vus-max"], 4);
        let (code, body) = patch(&address, json!({"vus-max": 6}));
        assert_eq!(code, 200, "{body}");
        eventually("vus-max 6", || status(&address)["vus-max"] == 6);
        let (code, body) = patch(&address, json!({"vus": 6}));
        assert_eq!(code, 200, "{body}");
        eventually("6 VUs", || status(&address)["vus"] == 6);
        let (code, _) = patch(&address, json!({"vus": 1}));
        assert_eq!(code, 200);
        eventually("1 VU again", || status(&address)["vus"] == 1);

        // Paused mid-run: once the running iterations end, none starts.
        let (code, _) = patch(&address, json!({"paused": true}));
        assert_eq!(code, 200);
        let mut last = u64::MAX;
        eventually("no more requests while paused", || {
            let now = generates.load(Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
            let settled = now == last && now == generates.load(Ordering::Relaxed);
            last = now;
            settled
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(generates.load(Ordering::Relaxed), last);
        let (code, _) = patch(&address, json!({"paused": false}));
        assert_eq!(code, 200);
        eventually("iterations after the second resume", || {
            generates.load(Ordering::Relaxed) > last
        });

        // k6's metrics document (the totals of the last once-a-second tick).
        let mut http_reqs = Value::Null;
        eventually("http_reqs in /v1/metrics", || {
            let (code, metrics) = request(&address, "GET", "/v1/metrics", None);
            assert_eq!(code, 200);
            if let Some(found) = metrics["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == "http_reqs")
            {
                http_reqs = found.clone();
            }
            !http_reqs.is_null()
        });
        assert_eq!(http_reqs["type"], "metrics");
        assert_eq!(http_reqs["attributes"]["type"], "counter");
        assert!(http_reqs["attributes"]["sample"]["count"].as_f64().unwrap() > 0.0);

        // Stopped: the summary, and k6's exit code 103.
        let (code, body) = patch(&address, json!({"stopped": true}));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["data"]["attributes"]["stopped"], true, "{body}");
        let stdout = expect_exit(&wait_within(child, DEADLINE), 103);
        assert!(stdout.contains("http_reqs"), "{stdout}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vus_are_only_settable_on_the_externally_controlled_executor() {
    let server = start(Behaviour::Accept).await;
    let base = server.base.clone();
    tokio::task::spawn_blocking(move || {
        let mut command = loadgen_run(&base);
        command.args([
            "--vus",
            "1",
            "--duration",
            "60s",
            "--address",
            "127.0.0.1:0",
        ]);
        let (child, address) = spawn_with_api(&mut command);
        let (code, body) = patch(&address, json!({"vus": 2}));
        assert_eq!(code, 400, "{body}");
        assert!(
            body["errors"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("externally-controlled"),
            "{body}"
        );
        let (code, body) = request(&address, "PATCH", "/v1/status", Some(json!({"x": 1})));
        assert_eq!(code, 400, "{body}");
        let (code, _) = patch(&address, json!({"stopped": true}));
        assert_eq!(code, 200);
        expect_exit(&wait_within(child, DEADLINE), 103);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_waits_for_its_time_and_a_late_instance_exits_114() {
    let server = start(Behaviour::Accept).await;
    let base = server.base.clone();
    let generates = server.generates.clone();
    tokio::task::spawn_blocking(move || {
        let unix_ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        let at = SystemTime::now() + Duration::from_millis(700);
        expect_exit(
            &output(loadgen_run(&base).args([
                "--iterations",
                "2",
                "--start-at",
                &unix_ms(at).to_string(),
            ])),
            0,
        );
        assert!(SystemTime::now() >= at);
        assert_eq!(generates.load(Ordering::Relaxed), 2);

        let late = chrono::Utc::now() - chrono::Duration::seconds(30);
        let error = expect_one_line_error(
            &output(loadgen_run(&base).args([
                "--iterations",
                "2",
                "--start-at",
                &late.to_rfc3339(),
                "--start-tolerance",
                "5s",
            ])),
            114,
        );
        assert!(error.contains("--start-tolerance"), "{error}");
        assert_eq!(
            generates.load(Ordering::Relaxed),
            2,
            "a late instance sent nothing"
        );
    })
    .await
    .unwrap();
}

#[test]
fn invalid_options_and_an_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    // 106 comes after setup: a mock that logs in.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(start(Behaviour::Accept));
    let out = output(loadgen_run(&server.base).args(["--iterations", "1", "--address", &taken]));
    expect_exit(&out, 106);
    assert!(stderr(&out).contains("REST API"), "{}", stderr(&out));
    for bad in [
        &["--paused"][..],
        &["--address", "localhost"][..],
        &["--start-at", "tomorrow"][..],
        &["--start-tolerance", "5s"][..],
        &["--executor", "externally-controlled"][..],
        &[
            "--executor",
            "externally-controlled",
            "--duration",
            "0",
            "--instance-count",
            "2",
            "--instance-index",
            "0",
        ][..],
    ] {
        expect_one_line_error(&output(loadgen_run("http://127.0.0.1:9").args(bad)), 104);
    }
}
