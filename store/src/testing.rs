//! A throwaway PostgreSQL server and SQLite files for the tests and benches
//! of every crate (feature `testing`), and the process plumbing that
//! mock-api's throwaway Redis server shares.
//!
//! One server per test process, started on a free loopback port in a temp
//! dir and stopped by a watchdog when the process exits; each caller gets a
//! fresh database. `TEST_DATABASE_URL` points at an existing server instead.
//! When no server can be had the helpers print a SKIP line and return
//! `None` — unless `CI` is set, where they panic, because nothing may be
//! skipped in CI.
//!
//! Crash tests get a server of their own instead, which they may stop and
//! start again: [`PostgresServer`].
//!
//! Ledger tests open their databases with [`sqlite`] and [`postgres`] and
//! make their users with [`user_with`]; [`completed`] is the outcome that
//! captures.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::OnceCell;

use crate::db::{Db, Id, Timestamp};
use crate::ledger::{self, LotSource, NewImage, SessionOutcome};
use crate::users;

/// A fresh, empty PostgreSQL database (no schema yet: `Db::open` migrates).
pub async fn postgres_url() -> Option<String> {
    static SERVER: OnceCell<Result<String, String>> = OnceCell::const_new();
    let admin_url = SERVER
        .get_or_init(|| async {
            match std::env::var("TEST_DATABASE_URL") {
                Ok(url) => Ok(url),
                Err(_) => tokio::task::spawn_blocking(start_postgres)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r),
            }
        })
        .await;
    let admin_url = match admin_url {
        Ok(url) => url.clone(),
        Err(why) => return unavailable("PostgreSQL", why),
    };
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let admin = match sqlx::PgPool::connect(&admin_url).await {
        Ok(pool) => pool,
        Err(e) => return unavailable("PostgreSQL", &e.to_string()),
    };
    // Database names cannot be bound as parameters; this one is generated above.
    if let Err(e) = sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
    {
        return unavailable("PostgreSQL", &e.to_string());
    }
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin_url);
    Some(format!("{base}/{name}"))
}

/// A fresh, migrated SQLite database in a new temp dir, which lives as long
/// as the returned handle.
pub async fn sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&sqlite_url(dir.path())).await.unwrap();
    (dir, db)
}

/// A fresh, migrated PostgreSQL database, or `None` after a SKIP line
/// naming `test` (see [`postgres_url`]: a panic in CI).
pub async fn postgres(test: &str) -> Option<Db> {
    match postgres_url().await {
        Some(url) => Some(Db::open(&url).await.unwrap()),
        None => {
            eprintln!("SKIP {test}: no PostgreSQL");
            None
        }
    }
}

/// A new user (password `pw`, hashed cheaply: bcrypt cost 4) with one
/// adjustment lot per `(credits, days until it expires)`.
pub async fn user_with(db: &Db, email: &str, lots: &[(i32, i64)], now: Timestamp) -> Id {
    let hash = users::hash_password("pw", 4).unwrap();
    let user = users::create(db, email, &hash, "user", now).await.unwrap();
    for &(amount, days) in lots {
        ledger::add_credits(
            db,
            user.id,
            amount,
            LotSource::Adjustment,
            now + chrono::Duration::days(days),
            "test credits",
            now,
        )
        .await
        .unwrap();
    }
    user.id
}

/// A generation's outcome that captures: completed with one image per
/// credit of its `outputs`.
pub fn completed(outputs: i32) -> SessionOutcome {
    SessionOutcome::Completed {
        images: (0..outputs)
            .map(|n| NewImage {
                url: format!("https://example.test/{n}.png"),
                width: 1024,
                height: 1024,
                storage_provider: "mock".into(),
                generation_tool: "seedream4".into(),
                client_key: None,
            })
            .collect(),
        duration_ms: 1,
    }
}

/// A name unique within this process, for queue names and key prefixes.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A SQLite URL for a new database file in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("test.db").display())
}

/// Prints the SKIP line for `what` and returns `None`; panics when `CI` is
/// set.
pub fn unavailable<T>(what: &str, why: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is required in CI but unavailable: {why}");
    }
    eprintln!(
        "SKIP: {what} unavailable ({why}); set TEST_DATABASE_URL / TEST_REDIS_URL or install it"
    );
    None
}

/// A loopback port free at the time of the call.
pub fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn postgres_bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("no /usr/lib/postgresql: {e}"))?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root; as root we run it as `postgres`.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Runs `cmd` to its end; an error names `what` and carries its stderr.
pub fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `stop_command` when this process exits, however it exits.
pub fn watchdog(stop_command: &str) -> Result<(), String> {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop_command}",
        pid = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("watchdog: {e}"))
}

fn start_postgres() -> Result<String, String> {
    PostgresServer::start().map(|server| server.url)
}

/// A PostgreSQL server of this process's own, which a test may stop
/// (immediate shutdown, as a crash) and start again on the same port and
/// data. A watchdog stops it and removes its files when the process exits.
#[derive(Clone)]
pub struct PostgresServer {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    pg_ctl: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PostgresServer {
    /// initdb in a temp dir, then start on a free loopback port.
    pub fn start() -> Result<PostgresServer, String> {
        let bin = postgres_bin_dir()?;
        let dir = std::env::temp_dir().join(unique_name("testbed-pg"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(&dir);
                    c
                },
                "chown",
            )?;
        }
        let data = dir.join("data");
        let mut initdb = as_server_user(&bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(initdb, "initdb")?;
        let server = PostgresServer {
            url: String::new(),
            pg_ctl: bin.join("pg_ctl"),
            data,
            port: free_port()?,
            dir,
        };
        server.start_again()?;
        let stop = format!(
            "{runner} {pg_ctl} -D {data} -m immediate stop; rm -rf {dir}",
            runner = if is_root() {
                "runuser -u postgres --"
            } else {
                ""
            },
            pg_ctl = server.pg_ctl.display(),
            data = server.data.display(),
            dir = server.dir.display(),
        );
        watchdog(&stop)?;
        Ok(PostgresServer {
            url: format!("postgres://postgres@127.0.0.1:{}/postgres", server.port),
            ..server
        })
    }

    /// Starts the server (again) and waits until it accepts connections.
    /// `fsync` is off (the machine does not crash in a test), but
    /// `synchronous_commit` is on: a commit reaches the OS before it is
    /// acknowledged, so an immediate stop keeps every acknowledged commit.
    pub fn start_again(&self) -> Result<(), String> {
        let mut pg_ctl = as_server_user(&self.pg_ctl);
        pg_ctl.arg("-D").arg(&self.data).args(["-w", "-t", "60", "-l"]).arg(self.dir.join("log")).arg("-o").arg(format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on -c full_page_writes=off -c max_connections=300",
            self.port,
            self.dir.display()
        )).arg("start");
        run(pg_ctl, "pg_ctl start")
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`):
    /// every connection drops at once.
    pub fn stop_immediate(&self) -> Result<(), String> {
        let mut pg_ctl = as_server_user(&self.pg_ctl);
        pg_ctl
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", "immediate", "stop"]);
        run(pg_ctl, "pg_ctl stop")
    }
}
