//! Child processes with a deadline: a test that starts the binary fails
//! when it runs too long instead of hanging the suite.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every child gets this long before it is killed and the test fails,
/// unless its test gives it another deadline.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The loadgen binary with `args` (its subcommand first).
pub fn loadgen(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.args(args);
    command
}

/// `loadgen run` against `base` with no think time, quiet and colourless:
/// the start of every test's command line.
pub fn loadgen_run(base: &str) -> Command {
    loadgen(&[
        "run",
        "--quiet",
        "--no-color",
        "--think-time",
        "0",
        "--api-base",
        base,
    ])
}

/// `loadgen run --spawn-mock`, quiet and colourless: the hermetic run.
pub fn loadgen_spawn_mock() -> Command {
    loadgen(&["run", "--spawn-mock", "--quiet", "--no-color"])
}

/// Runs `command` (no stdin) to its end and collects its output; kills it
/// and panics when it is still running after `deadline`.
pub fn output_within(command: &mut Command, deadline: Duration) -> Output {
    let child = spawn_piped(command);
    wait_within(child, deadline)
}

/// [`output_within`] [`DEADLINE`]: the child's output.
pub fn output(command: &mut Command) -> Output {
    output_within(command, DEADLINE)
}

/// [`output`] on a blocking thread, so that a server on the test's runtime
/// answers meanwhile.
pub async fn output_beside_runtime(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || output(&mut command))
        .await
        .expect("the child's waiter")
}

/// The child's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The child's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that the child exited with `code` (showing its stderr and
/// stdout when it did not); returns its stdout.
pub fn expect_exit(out: &Output, code: i32) -> String {
    let stdout = stdout(out);
    assert_eq!(out.status.code(), Some(code), "{}\n{stdout}", stderr(out));
    stdout
}

/// Asserts that the child exited with `code` and said why in one line of
/// stderr; returns that line.
pub fn expect_one_line_error(out: &Output, code: i32) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    err.trim().to_string()
}

/// Asserts that the child, given the `bad` options, exited 104 with one
/// line, `loadgen: …`, that names `named`.
pub fn expect_invalid_options(out: &Output, bad: &[&str], named: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(104), "{bad:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{bad:?}: {err}");
    assert!(err.starts_with("loadgen: "), "{bad:?}: {err}");
    assert!(err.contains(named), "{bad:?} should name {named}: {err}");
    assert!(!err.contains("panicked"), "{bad:?}: {err}");
}

/// Starts `command` with no stdin and its output piped, for [`wait_within`].
pub fn spawn_piped(command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

/// Waits for a child started with piped output (read as it comes, so a
/// full pipe cannot stall it) and collects that output (none of a stream
/// the caller took); kills it and panics when it is still running after
/// `deadline`.
pub fn wait_within(mut child: Child, deadline: Duration) -> Output {
    let stdout = child.stdout.take().map(read_all);
    let stderr = child.stderr.take().map(read_all);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child was still running after {deadline:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.map_or_else(Vec::new, |r| r.join().expect("stdout reader")),
        stderr: stderr.map_or_else(Vec::new, |r| r.join().expect("stderr reader")),
    }
}

fn read_all(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}
