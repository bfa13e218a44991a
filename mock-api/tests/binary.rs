//! The `mock-api` binary: zero-config start on a given port, the test user
//! on first start, SIGTERM or SIGINT → clean exit 0 (finishing in-flight
//! requests, and running jobs within the grace or handing them back), one
//! line and exit 1 for a taken address or an unreachable database, and
//! one-line errors with exit 2 for bad configuration.
//!
//! Every child process has a deadline: a mock that does not print its line
//! or exit in time is killed and the test fails instead of hanging.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use store::db::Db;
use store::seeding::{DEFAULT_EMAIL as EMAIL, DEFAULT_PASSWORD as PASSWORD};

/// The longest any one wait on a child process may take.
const PATIENCE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    store::testing::free_port().expect("a free loopback port")
}

fn mock_api() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mock-api"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

/// A running `mock-api` whose stderr is read line by line on a thread;
/// killed when dropped.
struct Mock {
    child: Child,
    lines: Receiver<String>,
    seen: String,
}

impl Mock {
    fn spawn(command: &mut Command) -> Mock {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Mock {
            child,
            lines,
            seen: String::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; panics if the mock
    /// exits first or [`PATIENCE`] passes.
    fn wait_for_line(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(needle) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {needle:?} within {PATIENCE:?}: {}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("exited before a line with {needle:?}: {}", self.seen)
                }
            }
        }
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name}");
    }

    /// Waits for the exit; returns its code and every stderr line seen.
    /// Panics (the drop kills it) if it has not exited within [`PATIENCE`].
    fn wait_exit(&mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {PATIENCE:?}: {}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, which follows the exit.
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        (status.code(), self.seen.clone())
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn starts_seeds_serves_and_stops_cleanly_on_sigterm_or_sigint() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut mock = Mock::spawn(
            mock_api()
                .current_dir(dir.path())
                .env("PORT", port.to_string())
                .env("BCRYPT_COST", "4")
                .env("ADMIN_PASSWORD", "do-not-log-me")
                .env("ADMIN_EMAIL", "admin@example.com"),
        );
        // The log line is the signal that the listener is up.
        mock.wait_for_line("mock-api listening");
        let seen = mock.seen.clone();
        assert!(seen.contains(&format!("listen=127.0.0.1:{port}")), "{seen}");
        assert!(
            seen.contains("first start: created test@example.com"),
            "{seen}"
        );
        assert!(
            !seen.contains("do-not-log-me"),
            "a secret was logged: {seen}"
        );

        let health = Command::new("curl")
            .args([
                "-fsS",
                "--max-time",
                "10",
                &format!("http://127.0.0.1:{port}/healthz"),
            ])
            .output();
        if let Ok(health) = health {
            assert_eq!(String::from_utf8_lossy(&health.stdout), "ok");
        }
        assert!(
            dir.path().join("testbed.db").exists(),
            "the default database is testbed.db in the working directory"
        );

        mock.signal(signal);
        let (code, all) = mock.wait_exit();
        assert_eq!(code, Some(0), "SIG{signal}: {all}");
        assert!(!all.contains("do-not-log-me"));
    }
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
        // Were the value accepted, the mock would serve: on a free port in
        // a temp dir, killed when the deadline passes.
        let dir = tempfile::tempdir().unwrap();
        let (code, stderr) = Mock::spawn(
            mock_api()
                .current_dir(dir.path())
                .env("PORT", free_port().to_string())
                .env(name, value),
        )
        .wait_exit();
        assert_eq!(code, Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(wanted), "{name}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}={value}: {stderr}");
    }
}

#[test]
fn an_unreachable_database_is_one_line_and_exit_1() {
    let (code, stderr) = Mock::spawn(
        mock_api()
            .env("PORT", free_port().to_string())
            .env("DATABASE_URL", "postgres://u:secret-pw@127.0.0.1:1/db"),
    )
    .wait_exit();
    assert_eq!(code, Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap();
    assert!(
        last.starts_with("mock-api: cannot open database"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-pw"), "{stderr}");
}

#[test]
fn an_address_in_use_is_one_line_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = Mock::spawn(
        mock_api()
            .current_dir(dir.path())
            .env("PORT", port.to_string()),
    )
    .wait_exit();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("mock-api:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with(&format!("mock-api: cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().last(), Some(errors[0]), "{stderr}");
    drop(taken);
}

/// A mock on SQLite in `dir`, with a provider taking exactly `job_ms` and
/// the given shutdown grace.
fn job_mock(dir: &std::path::Path, port: u16, job_ms: u64, grace_ms: u64) -> Mock {
    let mut mock = Mock::spawn(
        mock_api()
            .current_dir(dir)
            .env("PORT", port.to_string())
            .env("DATABASE_URL", store::testing::sqlite_url(dir))
            .env("BCRYPT_COST", "4")
            .env("OUTBOX_POLL_MS", "50")
            .env("SEEDREAM4_MOCK_MIN_MS", job_ms.to_string())
            .env("SEEDREAM4_MOCK_MAX_MS", job_ms.to_string())
            .env("SHUTDOWN_GRACE_MS", grace_ms.to_string()),
    );
    mock.wait_for_line("mock-api listening");
    mock
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn login(base: &str) -> String {
    let r = http()
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": EMAIL, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    body["token"].as_str().unwrap().to_string()
}

/// Generates two outputs and returns the session id (202).
async fn generate(base: &str, token: &str) -> String {
    let r = http()
        .post(format!("{base}/api/images/seedream4/generate"))
        .header(reqwest::header::COOKIE, format!("token={token}"))
        .json(&json!({"prompt": "in flight", "outputs": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    body["sessionId"].as_str().unwrap().to_string()
}

/// Polls `/metrics` until the queue holds one running job.
async fn until_a_job_runs(base: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = http()
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text
            .lines()
            .any(|l| l == "mock_queue_depth{state=\"active\"} 1")
        {
            return;
        }
        assert!(Instant::now() < deadline, "no job ever ran: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The session's status and image count.
async fn session_state(db: &Db, session: &str) -> (String, i64) {
    store::with_pool!(db, pool => sqlx::query_as(
        "SELECT s.status, (SELECT COUNT(*) FROM images i WHERE i.session_id = s.id) \
         FROM generation_sessions s WHERE CAST(s.id AS TEXT) = $1"
    )
    .bind(session)
    .fetch_one(pool)
    .await)
    .unwrap()
}

async fn assert_audit_clean(db: &Db) {
    let report = store::audit::audit(db, None).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_at_sigterm_completes_within_the_grace_and_exit_is_0() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut mock = job_mock(dir.path(), port, 1_500, 60_000);
    let token = login(&base).await;
    let session = generate(&base, &token).await;
    until_a_job_runs(&base).await;
    mock.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || mock.wait_exit())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("handed back"), "{log}");
    let db = Db::open(&store::testing::sqlite_url(dir.path()))
        .await
        .unwrap();
    assert_eq!(
        session_state(&db, &session).await,
        ("completed".to_string(), 2)
    );
    assert_audit_clean(&db).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_the_grace_is_handed_back_and_completes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut mock = job_mock(dir.path(), port, 30_000, 100);
    let token = login(&base).await;
    let session = generate(&base, &token).await;
    until_a_job_runs(&base).await;
    mock.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || mock.wait_exit())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("job handed back unfinished"), "{log}");
    let url = store::testing::sqlite_url(dir.path());
    let db = Db::open(&url).await.unwrap();
    assert_eq!(
        session_state(&db, &session).await,
        ("processing".to_string(), 0)
    );
    db.close().await;

    // Restarted with a quick provider: the reconciler finds the job.
    let mut mock = job_mock(dir.path(), port, 20, 60_000);
    let db = Db::open(&url).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while session_state(&db, &session).await.0 == "processing" {
        assert!(Instant::now() < deadline, "the handed-back job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        session_state(&db, &session).await,
        ("completed".to_string(), 2)
    );
    mock.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || mock.wait_exit())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert_audit_clean(&db).await;
    db.close().await;
}

/// A request still being answered at SIGTERM gets its answer: a direct-path
/// generate whose provider fails after 3 s answers the provider's 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_gets_its_answer_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let url = store::testing::sqlite_url(dir.path());
    let mut mock = Mock::spawn(
        mock_api()
            .current_dir(dir.path())
            .env("PORT", port.to_string())
            .env("DATABASE_URL", &url)
            .env("BCRYPT_COST", "4")
            .env("ENABLE_ENQUEUE_FIRST", "false")
            .env("MOCK_PROVIDER_ERROR_RATE", "1")
            .env("MOCK_PROVIDER_ERROR_STATUSES", "502:1")
            .env("SEEDREAM4_MOCK_MIN_MS", "3000")
            .env("SEEDREAM4_MOCK_MAX_MS", "3000"),
    );
    mock.wait_for_line("mock-api listening");
    let token = login(&base).await;
    let request = tokio::spawn({
        let base = base.clone();
        async move {
            let r = http()
                .post(format!("{base}/api/images/seedream4/generate"))
                .header(reqwest::header::COOKIE, format!("token={token}"))
                .json(&json!({"prompt": "in flight"}))
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        }
    });
    // The session row is the handler's proof that it is at the provider.
    let db = Db::open(&url).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (n,): (i64,) = store::with_pool!(&db, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM generation_sessions"
        )
        .fetch_one(pool)
        .await)
        .unwrap();
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the request never reached the handler"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !request.is_finished(),
        "answered before the signal: too fast to test"
    );
    mock.signal("TERM");
    let (status, body) = request.await.unwrap();
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["error"].is_string(), "{body}");
    let (code, log) = tokio::task::spawn_blocking(move || mock.wait_exit())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    db.close().await;
}
