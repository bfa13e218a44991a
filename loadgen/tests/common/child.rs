//! Child processes with a deadline: a test that starts the binary fails
//! when it runs too long instead of hanging the suite.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `loadgen run` against `base` with no think time, quiet and colourless:
/// the start of every test's command line.
pub fn loadgen_run(base: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    command.args([
        "run",
        "--quiet",
        "--no-color",
        "--think-time",
        "0",
        "--api-base",
        base,
    ]);
    command
}

/// Runs `command` (no stdin) to its end and collects its output; kills it
/// and panics when it is still running after `deadline`.
pub fn output_within(command: &mut Command, deadline: Duration) -> Output {
    let child = spawn_piped(command);
    wait_within(child, deadline)
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
