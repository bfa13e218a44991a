//! `loadgen http URL` with the binary, against an in-test server on
//! loopback: the request the flags describe, every exit code, statuses and
//! failures counted by kind, the open model's rate (counted by the server)
//! and latency from the scheduled start while the server stalls.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::any;
use axum::Router;
use common::child::{
    expect_exit, expect_invalid_options, loadgen, output, output_beside_runtime, spawn_piped,
    stderr, wait_within, DEADLINE,
};
use common::export::{count, points, read_json};
use common::pki::Pki;
use serde_json::Value;

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Log {
    requests: AtomicU64,
    connections: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    /// Answers are held until then (set by `/stall`).
    stalled_until: Mutex<Option<Instant>>,
}

struct Server {
    base: String,
    log: Arc<Log>,
}

/// Counts the connections it accepts.
struct Counting {
    listener: tokio::net::TcpListener,
    log: Arc<Log>,
}

impl axum::serve::Listener for Counting {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok(pair) = self.listener.accept().await {
                self.log.connections.fetch_add(1, Ordering::Relaxed);
                return pair;
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// `/ok` answers 200, `/fail` 503, `/mixed` 404 for every third request,
/// `/stall` holds every answer 600 ms from its 50th request on (a stall of
/// the whole server), `/record` keeps the request.
async fn handle(
    State(log): State<Arc<Log>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let n = log.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let held = {
        let mut stalled = log.stalled_until.lock().unwrap();
        if uri.path() == "/stall" && n == 50 {
            *stalled = Some(Instant::now() + Duration::from_millis(600));
        }
        *stalled
    };
    if let Some(until) = held {
        tokio::time::sleep_until(until.into()).await;
    }
    match uri.path() {
        "/fail" => (StatusCode::SERVICE_UNAVAILABLE, "down"),
        "/mixed" if n % 3 == 0 => (StatusCode::NOT_FOUND, "none"),
        "/record" => {
            log.seen.lock().unwrap().push(Seen {
                method,
                target: uri.to_string(),
                headers,
                body,
            });
            (StatusCode::OK, "kept")
        }
        _ => (StatusCode::OK, "ok"),
    }
}

async fn start() -> Server {
    let log = Arc::new(Log::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(any(handle)).with_state(log.clone());
    let counting = Counting {
        listener,
        log: log.clone(),
    };
    tokio::spawn(async move { axum::serve(counting, app).await });
    Server { base, log }
}

/// `loadgen http url extra`, quiet and colourless.
fn http(url: &str, extra: &[&str]) -> Command {
    let mut command = loadgen(&["http", "--quiet", "--no-color", url]);
    command.args(extra);
    command
}

/// Runs `loadgen http url extra` (off the runtime's threads: the server
/// answers meanwhile) and asserts its exit code; returns its stdout.
async fn run(url: &str, extra: &[&str], code: i32) -> String {
    expect_exit(&output_beside_runtime(http(url, extra)).await, code)
}

/// [`run`] with `--summary-export`; returns the export.
async fn run_exported(url: &str, extra: &[&str], code: i32) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.json");
    let mut args = extra.to_vec();
    args.extend(["--summary-export", summary.to_str().unwrap()]);
    run(url, &args, code).await;
    read_json(&summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_method_headers_body_and_content_type_as_given() {
    let server = start().await;
    let url = format!("{}/record?x=1&y=two", server.base);
    let stdout = run(
        &url,
        &[
            "-n",
            "3",
            "-c",
            "1",
            "-m",
            "PUT",
            "-H",
            "X-One: 1",
            "-H",
            "X-Two:two",
            "-d",
            "hello body",
            "-T",
            "text/plain",
        ],
        0,
    )
    .await;
    let seen = server.log.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    for request in &seen {
        assert_eq!(request.method, Method::PUT);
        assert_eq!(request.target, "/record?x=1&y=two");
        assert_eq!(request.headers["x-one"], "1");
        assert_eq!(request.headers["x-two"], "two");
        assert_eq!(request.headers["content-type"], "text/plain");
        assert_eq!(request.headers["content-length"], "10");
        assert_eq!(request.body, Bytes::from_static(b"hello body"));
    }
    // One kept-alive connection carried all three.
    assert_eq!(server.log.connections.load(Ordering::Relaxed), 1);
    assert!(stdout.contains("http_reqs"), "{stdout}");
    assert!(stdout.contains("{ status:200 }"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_file_and_no_keepalive() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let file = dir.path().join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let url = format!("{}/record", server.base);
    run(
        &url,
        &[
            "-n",
            "4",
            "-c",
            "2",
            "-m",
            "POST",
            "-D",
            file.to_str().unwrap(),
            "--disable-keepalive",
        ],
        0,
    )
    .await;
    let seen = server.log.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for request in &seen {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.body.as_ref(), &body[..]);
        assert!(request.headers.get("content-type").is_none());
        assert_eq!(request.headers["connection"], "close");
    }
    // A new connection for each request.
    assert_eq!(server.log.connections.load(Ordering::Relaxed), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_statuses_by_code_and_failures_by_kind() {
    let server = start().await;
    let mixed = format!("{}/mixed", server.base);
    let export = run_exported(&mixed, &["-n", "30", "-c", "3"], 0).await;
    assert_eq!(count(&export, "http_reqs"), 30.0);
    assert_eq!(count(&export, "http_reqs{status:200}"), 20.0);
    assert_eq!(count(&export, "http_reqs{status:404}"), 10.0);
    assert_eq!(export["metrics"]["http_req_failed"]["passes"], 10);

    // A port nobody listens on: refused connections, counted by kind.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = format!("http://127.0.0.1:{port}/");
    let export = run_exported(&refused, &["-n", "5", "-c", "1"], 0).await;
    assert_eq!(count(&export, "http_reqs{error:connection refused}"), 5.0);
    assert_eq!(export["metrics"]["http_req_failed"]["value"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_nine_when_a_threshold_fails() {
    let server = start().await;
    let guarded = [
        "-n",
        "5",
        "-c",
        "1",
        "--threshold",
        "http_req_failed:rate<0.5",
    ];
    let stdout = run(&format!("{}/fail", server.base), &guarded, 99).await;
    assert!(stdout.contains("{ status:503 }"));
    // The same threshold holds on a healthy route.
    run(&format!("{}/ok", server.base), &guarded, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_eight_when_a_threshold_aborts() {
    let server = start().await;
    let started = Instant::now();
    run(
        &format!("{}/fail", server.base),
        &[
            "-z",
            "50s",
            "-c",
            "1",
            "-q",
            "20",
            "--threshold",
            "http_req_failed:rate<0.5;abortOnFail",
        ],
        108,
    )
    .await;
    // Stopped by the threshold, not by the end of the 50 s run.
    assert!(started.elapsed() < Duration::from_secs(45));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_five_when_interrupted() {
    let server = start().await;
    let child = spawn_piped(&mut http(
        &format!("{}/ok", server.base),
        &["-z", "50s", "-c", "1", "-q", "50"],
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.log.requests.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no load arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = tokio::task::spawn_blocking(move || wait_within(child, DEADLINE))
        .await
        .unwrap();
    assert!(expect_exit(&out, 105).contains("http_reqs"));
}

#[test]
fn one_hundred_four_for_invalid_options() {
    for (bad, named) in [
        (&["-c", "0"][..], "invalid --connections: "),
        (&["-n", "0"][..], "invalid --requests: "),
        (&["-z", "ten"][..], "invalid --duration: \"ten\""),
        (&["-q", "0"][..], "invalid --rate: "),
        (&["--rate=-5"][..], "invalid --rate: "),
        (&["--burst", "5"][..], "invalid --burst: "),
        (&["-q", "10", "--burst", "0"][..], "invalid --burst: "),
        (&["-H", "no colon"][..], "invalid --header: "),
        (&["-H", "Bad Name: x"][..], "invalid --header: "),
        (&["-m", "GE T"][..], "invalid --method: "),
        (&["-D", "/no/such/file"][..], "invalid --body-file: "),
        (&["-d", "x", "-D", "/tmp/x"][..], "--body"),
        (&["--timeout", "soon"][..], "invalid --timeout: "),
        (&["--threads", "0"][..], "invalid --threads: "),
        (&["--threshold", "nope:rate<1"][..], "invalid --threshold: "),
        (&["--out", "xml=f"][..], "invalid --out: "),
        (&["--summary-mode", "fancy"][..], "invalid --summary-mode: "),
        (&["--no-such-flag"][..], "'--no-such-flag'"),
    ] {
        expect_invalid_options(&output(&mut http("http://127.0.0.1:9/", bad)), bad, named);
    }
    let out = output(&mut http("ftp://127.0.0.1/", &[]));
    assert_eq!(out.status.code(), Some(104));
    assert!(stderr(&out).contains("invalid --url: "));
}

/// The open model keeps its rate: 200 req/s for 5 s is 1000 requests at
/// the server (within 2 %), whatever the answers' speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_sends_the_rate() {
    let server = start().await;
    run(
        &format!("{}/ok", server.base),
        &["-q", "200", "-z", "5s", "-c", "20"],
        0,
    )
    .await;
    let served = server.log.requests.load(Ordering::Relaxed) as f64;
    assert!(
        (served - 1000.0).abs() <= 20.0,
        "{served} requests, not 1000 ± 2 %"
    );
}

/// Open model through a stall: 100 req/s on 2 connections; the server holds
/// every answer for 600 ms from its 50th request on. The requests due in the
/// first 300 ms of the stall cannot start before it ends, so their latency,
/// counted from when they were due, is at least 300 ms each (the wait
/// included), and they count as late starts. A closed model would record
/// only the two held requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_model_latency_counts_from_the_scheduled_start() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.json");
    let export = run_exported(
        &format!("{}/stall", server.base),
        &[
            "-q",
            "100",
            "-z",
            "2s",
            "-c",
            "2",
            "--out",
            &format!("json={}", samples.display()),
        ],
        0,
    )
    .await;
    let durations: Vec<f64> = points(&samples)
        .iter()
        .filter(|v| v["metric"] == "http_req_duration")
        .map(|v| v["data"]["value"].as_f64().unwrap())
        .collect();
    assert_eq!(durations.len(), 200);
    let held = durations.iter().filter(|&&ms| ms >= 300.0).count();
    assert!(
        held >= 31,
        "{held} requests of 300 ms or more: {durations:?}"
    );
    assert!(durations.iter().any(|&ms| ms >= 600.0), "{durations:?}");
    assert!(count(&export, "late_starts") >= 29.0, "{export}");
}

/// A TLS front on loopback (a leaf for `localhost` signed by `pki`'s CA)
/// that passes each connection to `backend`; answers the base URL.
async fn start_tls_front(backend: &str, pki: &Pki) -> String {
    let (chain, key) = pki.leaf_chain(&["localhost"]);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = backend.trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://localhost:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_tls_ca_is_trusted_and_without_it_every_request_fails_by_kind() {
    let server = start().await;
    let pki = Pki::new();
    let base = start_tls_front(&server.base, &pki).await;
    let ca = pki.ca_file();
    let url = format!("{base}/ok");
    let guarded = [
        "-n",
        "20",
        "-c",
        "2",
        "--threshold",
        "http_req_failed:rate==0",
    ];

    let mut trusting = guarded.to_vec();
    trusting.extend(["--tls-ca", ca.to_str().unwrap()]);
    let export = run_exported(&url, &trusting, 0).await;
    assert_eq!(count(&export, "http_reqs{status:200}"), 20.0);
    assert_eq!(server.log.requests.load(Ordering::Relaxed), 20);
    // Kept alive: one TLS connection per loadgen connection.
    assert_eq!(server.log.connections.load(Ordering::Relaxed), 2);

    // Without the CA: no answer, each request a failure of its own kind,
    // and the threshold on failures gives the documented exit code 99.
    let export = run_exported(&url, &guarded, 99).await;
    assert_eq!(
        count(
            &export,
            "http_reqs{error:tls: certificate signed by unknown authority}"
        ),
        20.0
    );
    assert_eq!(server.log.requests.load(Ordering::Relaxed), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_timeout_fails_and_only_it() {
    let server = start().await;
    // The 50th request starts a 600 ms stall: it and the one after it (on
    // a new connection) outlast 200 ms; the hundreds of quick requests
    // around them, over several timeout periods, must not time out.
    let export = run_exported(
        &format!("{}/stall", server.base),
        &["-n", "400", "-c", "1", "--timeout", "200ms"],
        0,
    )
    .await;
    let timeouts = count(&export, "http_reqs{error:timeout}");
    assert!((2.0..=3.0).contains(&timeouts), "{timeouts} timeouts");
    assert_eq!(count(&export, "http_reqs{status:200}"), 400.0 - timeouts);
}
