//! The `mock-api` binary: zero-config start on a given port, the test user
//! on first start, SIGTERM → clean exit 0, and one-line errors with exit 2
//! for bad configuration.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mock_api() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mock-api"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

#[test]
fn starts_seeds_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = mock_api()
        .current_dir(dir.path())
        .env("PORT", port.to_string())
        .env("BCRYPT_COST", "4")
        .env("ADMIN_PASSWORD", "do-not-log-me")
        .env("ADMIN_EMAIL", "admin@example.com")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log line is the signal that the listener is up.
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert_ne!(log.read_line(&mut line).unwrap(), 0, "exited early: {seen}");
        seen.push_str(&line);
        if line.contains("mock-api listening") {
            break;
        }
    }
    assert!(seen.contains(&format!("listen=127.0.0.1:{port}")), "{seen}");
    assert!(
        seen.contains("first start: created test@example.com"),
        "{seen}"
    );
    assert!(
        !seen.contains("do-not-log-me"),
        "a secret was logged: {seen}"
    );

    let health = std::process::Command::new("curl")
        .args(["-fsS", &format!("http://127.0.0.1:{port}/healthz")])
        .output();
    if let Ok(health) = health {
        assert_eq!(String::from_utf8_lossy(&health.stdout), "ok");
    }
    assert!(
        dir.path().join("testbed.db").exists(),
        "the default database is testbed.db in the working directory"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut log, &mut rest);
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(!rest.contains("do-not-log-me"));
}

#[test]
fn bad_configuration_is_one_line_and_exit_2() {
    for (name, value, wanted) in [
        ("MOCK_API", "false", "invalid MOCK_API"),
        ("BCRYPT_COST", "99", "invalid BCRYPT_COST"),
        ("SEEDREAM4_MOCK_MIN_MS", "9000", "SEEDREAM4_MOCK_MIN_MS"),
        ("ADMIN_EMAIL", "a@b.c", "invalid ADMIN_EMAIL/ADMIN_PASSWORD"),
        ("GEN_WORKER_CONCURRENCY", "0", "--worker-concurrency"),
    ] {
        let out = mock_api().env(name, value).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(wanted), "{name}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}={value}: {stderr}");
    }
}

#[test]
fn an_unreachable_database_is_one_line_and_exit_1() {
    let out = mock_api()
        .env("PORT", free_port().to_string())
        .env("DATABASE_URL", "postgres://u:secret-pw@127.0.0.1:1/db")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap();
    assert!(
        last.starts_with("mock-api: cannot open database"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-pw"), "{stderr}");
}
