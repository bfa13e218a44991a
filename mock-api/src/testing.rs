//! Test support for the tests and benches of every crate (feature
//! `testing`): a throwaway Redis server, a test configuration (also on
//! PostgreSQL and Redis), a mock served
//! in-process, an HTTP client for it and the 99.9 % binomial check of a
//! drawn rate. The throwaway PostgreSQL server and
//! SQLite files are in `store::testing`.
//!
//! One Redis server per test process, started on a free loopback port in a
//! temp dir and stopped by a watchdog when the process exits; each caller
//! gets a fresh logical database number and key space. `TEST_REDIS_URL`
//! points at an existing server instead. When no server can be had the
//! helper prints a SKIP line and returns `None` — unless `CI` is set, where
//! it panics, because nothing may be skipped in CI.
//!
//! Crash tests get a Redis server of their own instead, which they may
//! kill and start again: [`RedisServer`].

use std::path::PathBuf;
use std::process::Command;

use store::testing::{free_port, run, unavailable, unique_name, watchdog};
use tokio::sync::OnceCell;

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

/// z for a two-sided 99.9 % interval.
const Z999: f64 = 3.2905;

/// Asserts that `k` successes of `n` draws at rate `p` lie in the 99.9 %
/// binomial interval (normal approximation): a correct draw fails this one
/// run in a thousand, a wrong rate almost always.
pub fn assert_binomial(what: &str, k: u64, n: u64, p: f64) {
    let mean = n as f64 * p;
    let half = Z999 * (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (k as f64) >= mean - half && (k as f64) <= mean + half,
        "{what}: {k} of {n}, expected {mean:.1} ± {half:.1} (p = {p})"
    );
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

/// [`test_config`] on a fresh throwaway PostgreSQL database and the
/// throwaway Redis, its queue named after `queue` (unique in this process);
/// `None` after a SKIP line (a panic in CI) when either cannot be had.
pub async fn postgres_and_redis_config(queue: &str) -> Option<crate::config::Config> {
    let (Some(db), Some(redis)) = (store::testing::postgres_url().await, redis_url().await) else {
        return None;
    };
    let mut config = test_config(&db);
    config.redis_url = Some(redis);
    config.queue_name = unique_name(queue);
    Some(config)
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
        let settings = config.resolve().expect("a valid test configuration");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(crate::server::run(listener, settings, shutdown.clone()));
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
        user: &store::seeding::SeedUser,
        credits: i64,
    ) -> (TestServer, store::db::Db) {
        let db = store::db::Db::open(&config.database_url)
            .await
            .expect("open the test database");
        store::seeding::ensure_user(&db, user, credits, 4, chrono::Utc::now())
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

/// An HTTP client for a [`TestServer`], with the contract's login and
/// generate calls.
pub struct Api {
    pub server: TestServer,
    http: reqwest::Client,
}

impl Api {
    pub async fn start(config: crate::config::Config) -> Api {
        Api::on(TestServer::start(config).await)
    }

    /// [`TestServer::start_with_user`] with a client.
    pub async fn start_with_user(
        config: crate::config::Config,
        user: &store::seeding::SeedUser,
        credits: i64,
    ) -> (Api, store::db::Db) {
        let (server, db) = TestServer::start_with_user(config, user, credits).await;
        (Api::on(server), db)
    }

    /// A client for `server`; every request has a 30 s deadline.
    pub fn on(server: TestServer) -> Api {
        Api {
            server,
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
        }
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(self.server.url(path))
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.server.url(path))
    }

    /// Logs in and returns the token; anything but 200 fails the test.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let r = self
            .post("/api/auth/login")
            .json(&serde_json::json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login answers");
        let status = r.status();
        let text = r.text().await.expect("a login body");
        assert_eq!(status, reqwest::StatusCode::OK, "{text}");
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        body["token"].as_str().expect("a token").to_string()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .send()
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("a /metrics body")
    }

    /// Posts `body` to the generate route with `token` as the cookie.
    pub async fn generate(&self, token: &str, body: serde_json::Value) -> reqwest::Response {
        self.post("/api/images/seedream4/generate")
            .header(reqwest::header::COOKIE, format!("token={token}"))
            .json(&body)
            .send()
            .await
            .expect("generate answers")
    }
}
