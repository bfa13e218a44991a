//! Throwaway PostgreSQL and Redis servers for the tests and benches of every
//! crate (feature `testing`).
//!
//! One server per test process, started on a free loopback port in a temp
//! dir and stopped by a watchdog when the process exits; each caller gets a
//! fresh database (PostgreSQL) or a fresh logical database number and key
//! space (Redis). `TEST_DATABASE_URL` / `TEST_REDIS_URL` point at existing
//! servers instead. When no server can be had the helpers print a SKIP line
//! and return `None` — unless `CI` is set, where they panic, because nothing
//! may be skipped in CI.
//!
//! Crash tests get servers of their own instead, which they may stop and
//! start again: [`PostgresServer`] and [`RedisServer`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::OnceCell;

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

/// A Redis URL selecting a logical database no other caller in this process
/// uses (0..16 are shared round-robin, so callers also get unique queue names
/// from [`unique_name`]).
pub async fn redis_url() -> Option<String> {
    static SERVER: OnceCell<Result<String, String>> = OnceCell::const_new();
    let url = SERVER
        .get_or_init(|| async {
            match std::env::var("TEST_REDIS_URL") {
                Ok(url) => Ok(url),
                Err(_) => tokio::task::spawn_blocking(start_redis)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r),
            }
        })
        .await;
    match url {
        Ok(url) => Some(url.clone()),
        Err(why) => unavailable("Redis", why),
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

/// A configuration for tests: loopback port 0, the given database, a
/// fast provider (5..20 ms), cheap bcrypt, a JWT secret, and nothing read
/// from the environment. Fault injection stays off: no plan, no control
/// API, no rate limiter (tests that want them set those fields).
pub fn test_config(database_url: &str) -> crate::config::Config {
    let mut config = crate::config::Config::defaults();
    config.bind = "127.0.0.1:0".parse().expect("a socket address");
    config.database_url = database_url.to_string();
    config.jwt_secret = Some(format!("test-secret-{}", uuid::Uuid::new_v4()));
    config.bcrypt_cost = 4;
    config.mock_min_ms = 5;
    config.mock_max_ms = 20;
    config.mock_seed = Some(7);
    config.outbox_poll_ms = 50;
    config.shutdown_grace_ms = 5_000;
    config
}

/// A mock-api served in this process on a free loopback port.
pub struct TestServer {
    pub base: String,
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), crate::server::StartError>>,
}

impl TestServer {
    pub async fn start(config: crate::config::Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind(config.listen_addr())
            .await
            .expect("bind a loopback port");
        let base = format!("http://{}", listener.local_addr().expect("a bound address"));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(crate::server::run(listener, config, shutdown.clone()));
        TestServer {
            base,
            shutdown,
            handle,
        }
    }

    /// A server whose database holds `user` with `credits` (and no other
    /// seeding), with a handle on that database for the test's checks.
    pub async fn start_with_user(
        mut config: crate::config::Config,
        user: &crate::seeding::SeedUser,
        credits: i64,
    ) -> (TestServer, crate::db::Db) {
        let db = crate::db::Db::open(&config.database_url)
            .await
            .expect("open the test database");
        crate::seeding::ensure_user(&db, user, credits, 4, chrono::Utc::now())
            .await
            .expect("seed the test user");
        config.no_seed = true;
        (TestServer::start(config).await, db)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Shuts down as SIGTERM would and returns the server's result.
    pub async fn stop(self) -> Result<(), crate::server::StartError> {
        self.shutdown.cancel();
        self.handle.await.expect("the server task does not panic")
    }
}

/// A SQLite URL for a new database file in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("test.db").display())
}

fn unavailable<T>(what: &str, why: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("{what} is required in CI but unavailable: {why}");
    }
    eprintln!(
        "SKIP: {what} unavailable ({why}); set TEST_DATABASE_URL / TEST_REDIS_URL or install it"
    );
    None
}

fn free_port() -> Result<u16, String> {
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

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
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

/// Stops the server when this process exits, however it exits.
fn watchdog(stop_command: &str) -> Result<(), String> {
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

fn start_redis() -> Result<String, String> {
    RedisServer::start().map(|server| server.url)
}

/// A Redis server of this process's own (no persistence), which a test may
/// kill and start again, empty, on the same port. A watchdog kills it and
/// removes its files when the process exits.
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    dir: PathBuf,
    port: u16,
}

impl RedisServer {
    /// Starts on a free loopback port and waits until it answers PING.
    pub fn start() -> Result<RedisServer, String> {
        let dir = std::env::temp_dir().join(unique_name("testbed-redis"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let server = RedisServer {
            url: format!("redis://127.0.0.1:{port}"),
            dir,
            port,
        };
        server.start_again()?;
        watchdog(&format!(
            "kill $(cat {pid}); rm -rf {dir}",
            pid = server.pid_file().display(),
            dir = server.dir.display()
        ))?;
        Ok(server)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }

    /// Starts the server (again, empty) and waits until it answers PING.
    pub fn start_again(&self) -> Result<(), String> {
        let mut server = Command::new("redis-server");
        server
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--pidfile")
            .arg(self.pid_file())
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        run(server, "redis-server")?;
        // redis-server --daemonize returns before it listens; wait for PONG.
        let client = redis::Client::open(self.url.as_str()).map_err(|e| e.to_string())?;
        let mut last_error = String::new();
        for _ in 0..200 {
            match client.get_connection() {
                Ok(mut conn) => match redis::cmd("PING").query::<String>(&mut conn) {
                    Ok(_) => return Ok(()),
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Err(format!("redis-server did not answer: {last_error}"))
    }

    /// Kills the server (SIGKILL: nothing is saved) and waits until its
    /// port is free.
    pub fn kill(&self) -> Result<(), String> {
        let pid =
            std::fs::read_to_string(self.pid_file()).map_err(|e| format!("redis pid file: {e}"))?;
        run(
            {
                let mut c = Command::new("kill");
                c.args(["-KILL", pid.trim()]);
                c
            },
            "kill redis-server",
        )?;
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                let _ = std::fs::remove_file(self.pid_file());
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Err("redis-server still listens after SIGKILL".into())
    }
}
