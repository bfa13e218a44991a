//! Every exit code of `loadgen run`, produced on purpose with the binary.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::child::{
    expect_exit, expect_invalid_options, loadgen_run, output, spawn_piped, stderr, wait_within,
};
use common::{start, Behaviour};

fn loadgen(base: &str, extra: &[&str]) -> Output {
    output(loadgen_run(base).args(extra))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_when_thresholds_pass() {
    let server = start(Behaviour::Accept).await;
    let out = loadgen(&server.base, &["--vus", "2", "--iterations", "6"]);
    let stdout = expect_exit(&out, 0);
    assert!(stdout.contains("✓ status is 202"), "{stdout}");
}

/// Not an exit code, but the same run: k6 prints no ANSI colours into a
/// pipe, even without --no-color.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_into_a_pipe_has_no_colour_codes() {
    let server = start(Behaviour::Accept).await;
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(["run", "--quiet", "--think-time", "0", "--api-base"])
            .arg(&server.base)
            .args(["--vus", "1", "--iterations", "2"])
            .env_remove("NO_COLOR"),
    );
    let stdout = expect_exit(&out, 0);
    assert!(stdout.contains("✓ status is 202"), "{stdout}");
    assert!(!stdout.contains('\u{1b}'), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_nine_when_a_threshold_fails() {
    let server = start(Behaviour::FailGenerate).await;
    let out = loadgen(&server.base, &["--vus", "1", "--iterations", "3"]);
    expect_exit(&out, 99);
}

#[test]
fn one_hundred_four_for_invalid_options() {
    // One line, naming the option (and the value or the part at fault).
    for (bad, named) in [
        (&["--duration", "ten"][..], "invalid --duration: \"ten\""),
        (&["--stages", "10s"][..], "invalid --stages: \"10s\""),
        (&["--executor", "warp-speed"][..], "invalid --executor: "),
        (&["--threshold", "nope:rate<1"][..], "invalid --threshold: "),
        (
            &["--threshold", "errors:rat<0.1"][..],
            "invalid --threshold: ",
        ),
        (&["--no-such-flag"][..], "'--no-such-flag'"),
        (&["--threads", "0"][..], "invalid --threads: "),
        (
            &["--summary-trend-stats", "avg,p(x)"][..],
            "invalid --summary-trend-stats: ",
        ),
        (
            &["--summary-time-unit", "h"][..],
            "invalid --summary-time-unit: ",
        ),
        (&["--summary-mode", "fancy"][..], "invalid --summary-mode: "),
        (&["--tag", "novalue"][..], "invalid --tag: "),
        (&["-e", "NOT_READ=1"][..], "invalid --env: "),
        (
            &["--env", "THINK_MIN_S=soon"][..],
            "invalid --env: THINK_MIN_S",
        ),
    ] {
        expect_invalid_options(&loadgen("http://127.0.0.1:9", bad), bad, named);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_summary_prints_no_summary_and_keeps_the_exit_code() {
    let server = start(Behaviour::Accept).await;
    let out = loadgen(
        &server.base,
        &["--vus", "1", "--iterations", "2", "--no-summary"],
    );
    let stdout = expect_exit(&out, 0);
    assert!(stdout.contains("scenario:"), "{stdout}");
    assert!(!stdout.contains("http_reqs"), "{stdout}");
    assert!(!stdout.contains("✓ status is 202"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_sets_the_k6_scripts_variables() {
    let server = start(Behaviour::Accept).await;
    // API_BASE from -e reaches the server (the flag is not given here).
    let out = output(
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args([
                "run",
                "--quiet",
                "--no-color",
                "-e",
                "THINK_MIN_S=0",
                "-e",
                "THINK_MAX_S=0",
            ])
            .args(["-e", &format!("API_BASE={}", server.base)])
            .args(["--vus", "1", "--iterations", "2"])
            .env_remove("API_BASE"),
    );
    assert!(expect_exit(&out, 0).contains("✓ status is 202"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_five_when_interrupted() {
    let server = start(Behaviour::Accept).await;
    let child = spawn_piped(
        Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args([
                "run",
                "--quiet",
                "--no-color",
                "--think-time",
                "50ms",
                "--api-base",
            ])
            .arg(&server.base)
            .args(["--vus", "2", "--duration", "60s"]),
    );
    // Interrupt once it has sent load: the server's counter is the signal.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.generates.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(std::time::Instant::now() < deadline, "no load arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let interrupt = common::child::output_within(
        Command::new("kill").args(["-INT", &child.id().to_string()]),
        Duration::from_secs(10),
    );
    assert!(interrupt.status.success(), "kill -INT failed");
    // Well before the 60 s of the test: the interrupt ends it.
    let out = tokio::task::spawn_blocking(move || wait_within(child, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(expect_exit(&out, 105).contains("status is 202"));
}

#[test]
fn one_hundred_seven_when_the_connection_is_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = loadgen(
        &format!("http://127.0.0.1:{port}"),
        &["--vus", "1", "--iterations", "1"],
    );
    expect_exit(&out, 107);
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_seven_when_login_is_refused() {
    let server = start(Behaviour::RejectLogin).await;
    let out = loadgen(&server.base, &["--vus", "1", "--iterations", "1"]);
    expect_exit(&out, 107);
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_eight_when_abort_on_fail_fires() {
    let server = start(Behaviour::FailGenerate).await;
    let out = loadgen(
        &server.base,
        &[
            "--vus",
            "1",
            "--duration",
            "30s",
            "--threshold",
            "errors:rate<0.01;abortOnFail",
        ],
    );
    expect_exit(&out, 108);
}
