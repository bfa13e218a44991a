//! `loadgen run` against `https://`: a TLS front (tokio-rustls, certificates
//! made here with rcgen) before an in-process mock-api, all on loopback;
//! and the proxies of `HTTP_PROXY`/`HTTPS_PROXY`, one small proxy here.

mod common;

use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::child::{expect_exit, expect_one_line_error, stderr};
use common::export::read_json;
use common::pki::{self_signed, Pki};
use loadgen::http::proxy::ProxyEnv;
use loadgen::http::tls::TlsOptions;
use loadgen::http::BaseUrl;
use mock_api::testing::{test_config, TestServer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use store::testing::sqlite_url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A client hello's SNI and ALPN offers.
type Hello = (Option<String>, Vec<Vec<u8>>);

/// Serves `first` on the first handshake and `later` on every other one.
#[derive(Debug)]
struct Certificates {
    first: Arc<CertifiedKey>,
    later: Arc<CertifiedKey>,
    handshakes: AtomicUsize,
    /// SNI and ALPN offers of each handshake.
    hellos: Mutex<Vec<Hello>>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.hellos.lock().unwrap().push((
            hello.server_name().map(str::to_string),
            hello
                .alpn()
                .map(|offers| offers.map(<[u8]>::to_vec).collect())
                .unwrap_or_default(),
        ));
        Some(
            if self.handshakes.fetch_add(1, Ordering::SeqCst) == 0 {
                &self.first
            } else {
                &self.later
            }
            .clone(),
        )
    }
}

/// A mock-api on loopback behind a TLS front (127.0.0.1, its own port).
struct Site {
    mock: TestServer,
    _db_dir: tempfile::TempDir,
    port: u16,
    certificates: Arc<Certificates>,
}

impl Site {
    async fn start(cert: Arc<CertifiedKey>) -> Site {
        Site::start_switching(cert.clone(), cert).await
    }

    /// `first` for the first handshake, `later` for the others, which
    /// therefore cannot resume the first one's session.
    async fn start_switching(first: Arc<CertifiedKey>, later: Arc<CertifiedKey>) -> Site {
        let db_dir = tempfile::tempdir().unwrap();
        let mock = TestServer::start(test_config(&sqlite_url(db_dir.path()))).await;
        let backend = mock.base.trim_start_matches("http://").to_string();
        let certificates = Arc::new(Certificates {
            first,
            later,
            handshakes: AtomicUsize::new(0),
            hellos: Mutex::new(Vec::new()),
        });
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_cert_resolver(certificates.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !Arc::ptr_eq(&certificates.first, &certificates.later) {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let backend = backend.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(&backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Site {
            mock,
            _db_dir: db_dir,
            port,
            certificates,
        }
    }

    fn handshakes(&self) -> usize {
        self.certificates.handshakes.load(Ordering::SeqCst)
    }
}

/// What the test proxy was asked: each connection's first request line.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

/// A small HTTP proxy: `CONNECT` opens a tunnel to `127.0.0.1:` the
/// requested port (whatever the name: the test's names resolve nowhere),
/// any other request is passed with its connection to `127.0.0.1:` its port.
async fn start_proxy() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Seen::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or_default().to_string();
                log.0.lock().unwrap().push(line.clone());
                let mut parts = line.split(' ');
                let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
                let authority = target
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap();
                let port = authority.rsplit(':').next().unwrap();
                let Ok(mut upstream) = TcpStream::connect(format!("127.0.0.1:{port}")).await else {
                    return;
                };
                if method == "CONNECT" {
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                } else if upstream.write_all(&head).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (url, seen)
}

/// `loadgen run` with a deadline, no proxy from the test's environment
/// unless `env` sets one.
async fn loadgen(base: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::from(common::child::loadgen_run(base));
    command.args(extra).stdin(Stdio::null()).kill_on_drop(true);
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "K6_INSECURE_SKIP_TLS_VERIFY",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("loadgen ends within 60 s")
        .expect("loadgen runs")
}

const SHORT_RUN: [&str; 4] = ["--vus", "2", "--iterations", "6"];

/// One VU, one iteration against `https://localhost:port`, trusting the CA
/// in `ca`, with `env` set.
async fn one_iteration_trusting(ca: &std::path::Path, port: u16, env: &[(&str, &str)]) -> Output {
    let args = [
        "--vus",
        "1",
        "--iterations",
        "1",
        "--tls-ca",
        ca.to_str().unwrap(),
    ];
    loadgen(&format!("https://localhost:{port}"), &args, env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_given_with_tls_ca_is_trusted_and_connections_are_reused() {
    let pki = Pki::new();
    let site = Site::start(pki.leaf(&["localhost"], false)).await;
    let export = pki.dir.path().join("summary.json");
    let ca = pki.ca_file();
    let mut args = SHORT_RUN.to_vec();
    args.extend(["--tls-ca", ca.to_str().unwrap()]);
    args.extend(["--summary-export", export.to_str().unwrap()]);
    let out = loadgen(&format!("https://localhost:{}", site.port), &args, &[]).await;
    let stdout = expect_exit(&out, 0);
    assert!(stdout.contains("http_req_tls_handshaking"), "{stdout}");
    let summary = read_json(&export);
    let handshaking = &summary["metrics"]["http_req_tls_handshaking"];
    assert!(handshaking["max"].as_f64().unwrap() > 0.0, "{handshaking}");
    // Most requests ride a kept-alive connection: their handshake is 0.
    assert_eq!(handshaking["min"].as_f64(), Some(0.0), "{handshaking}");
    // The setup login's connection and one per VU: 12 requests, 3 client
    // hellos (the VUs' resume the setup's session).
    assert_eq!(site.handshakes(), 3);
    for (sni, alpn) in site.certificates.hellos.lock().unwrap().iter() {
        assert_eq!(sni.as_deref(), Some("localhost"));
        assert_eq!(alpn, &vec![b"http/1.1".to_vec()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_setup_with_107_and_names_the_way_out() {
    let pki = Pki::new();
    let site = Site::start(pki.leaf(&["localhost"], false)).await;
    let out = loadgen(&format!("https://localhost:{}", site.port), &SHORT_RUN, &[]).await;
    let err = expect_one_line_error(&out, 107);
    assert!(err.contains("localhost"), "{err}");
    assert!(err.contains("unknown issuer"), "{err}");
    assert!(err.contains("--insecure-skip-tls-verify"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_tls_verify_accepts_any_certificate() {
    let site = Site::start(self_signed(&["elsewhere.example"])).await;
    let mut args = SHORT_RUN.to_vec();
    args.push("--insecure-skip-tls-verify");
    let out = loadgen(&format!("https://localhost:{}", site.port), &args, &[]).await;
    expect_exit(&out, 0);
    // k6's environment variable for the flag.
    let out = loadgen(
        &format!("https://localhost:{}", site.port),
        &SHORT_RUN,
        &[("K6_INSECURE_SKIP_TLS_VERIFY", "1")],
    )
    .await;
    expect_exit(&out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_or_expired_is_refused() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    for (cert, reason) in [
        (pki.leaf(&["api.other.example"], false), "name mismatch"),
        (pki.leaf(&["localhost"], true), "expired"),
    ] {
        let site = Site::start(cert).await;
        let out = one_iteration_trusting(&ca, site.port, &[]).await;
        expect_exit(&out, 107);
        let err = stderr(&out);
        assert!(err.contains(reason) && err.contains("localhost"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_error_during_the_run_is_a_failed_request_with_an_error_tag() {
    let pki = Pki::new();
    // The setup login sees the trusted certificate, the VUs another one.
    let site =
        Site::start_switching(pki.leaf(&["localhost"], false), self_signed(&["localhost"])).await;
    let ca = pki.ca_file();
    let samples = pki.dir.path().join("samples.json");
    let out_arg = format!("json={}", samples.display());
    let out = loadgen(
        &format!("https://localhost:{}", site.port),
        &[
            "--vus",
            "1",
            "--iterations",
            "2",
            "--tls-ca",
            ca.to_str().unwrap(),
            "--out",
            &out_arg,
        ],
        &[],
    )
    .await;
    expect_exit(&out, 99);
    let text = std::fs::read_to_string(&samples).unwrap();
    let failed: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["metric"] == "http_req_failed" && v["type"] == "Point")
        .collect();
    assert_eq!(failed.len(), 2, "{text}");
    for sample in failed {
        assert_eq!(sample["data"]["value"], 1.0, "{sample}");
        assert_eq!(
            sample["data"]["tags"]["error"], "tls: certificate signed by unknown authority",
            "{sample}"
        );
        assert_eq!(sample["data"]["tags"]["status"], "0", "{sample}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_goes_through_a_connect_tunnel_of_https_proxy() {
    let pki = Pki::new();
    let site = Site::start(pki.leaf(&["api.cooly.test"], false)).await;
    let (proxy, seen) = start_proxy().await;
    let ca = pki.ca_file();
    let mut args = SHORT_RUN.to_vec();
    args.extend(["--tls-ca", ca.to_str().unwrap()]);
    let out = loadgen(
        &format!("https://api.cooly.test:{}", site.port),
        &args,
        &[
            ("https_proxy", &proxy),
            ("NO_PROXY", "other.test,127.0.0.0/8"),
        ],
    )
    .await;
    expect_exit(&out, 0);
    let lines = seen.0.lock().unwrap().clone();
    assert!(!lines.is_empty());
    for line in lines {
        assert_eq!(
            line,
            format!("CONNECT api.cooly.test:{} HTTP/1.1", site.port)
        );
    }
    assert_eq!(
        site.certificates.hellos.lock().unwrap()[0].0.as_deref(),
        Some("api.cooly.test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_goes_to_http_proxy_in_absolute_form() {
    let db_dir = tempfile::tempdir().unwrap();
    let mock = TestServer::start(test_config(&sqlite_url(db_dir.path()))).await;
    let port = mock.base.rsplit(':').next().unwrap().to_string();
    let (proxy, seen) = start_proxy().await;
    let out = loadgen(
        &format!("http://api.cooly.test:{port}"),
        &SHORT_RUN,
        &[("HTTP_PROXY", &proxy)],
    )
    .await;
    expect_exit(&out, 0);
    let lines = seen.0.lock().unwrap().clone();
    assert!(
        lines.contains(&format!(
            "POST http://api.cooly.test:{port}/api/auth/login HTTP/1.1"
        )),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_targets_bypass_the_proxy() {
    let pki = Pki::new();
    let site = Site::start(pki.leaf(&["localhost"], false)).await;
    let (proxy, seen) = start_proxy().await;
    let ca = pki.ca_file();
    let out = one_iteration_trusting(&ca, site.port, &[("HTTPS_PROXY", &proxy)]).await;
    expect_exit(&out, 0);
    assert!(seen.0.lock().unwrap().is_empty());
}

/// NO_PROXY decides per target; the names here resolve nowhere, so this
/// checks the route chosen rather than a connection.
#[test]
fn no_proxy_lists_hosts_that_connect_directly() {
    let proxies = ProxyEnv {
        http_proxy: None,
        https_proxy: Some("http://127.0.0.1:3128".into()),
        no_proxy: "internal.test, .corp.test".into(),
    };
    let route = |url: &str| {
        BaseUrl::parse(url)
            .unwrap()
            .with_route(&TlsOptions::default(), &proxies)
            .unwrap()
            .route
            .proxy
    };
    assert!(route("https://api.cooly.test").is_some());
    assert!(route("https://internal.test").is_none());
    assert!(route("https://api.internal.test:8443").is_none());
    assert!(route("https://corp.test").is_some());
    assert!(route("https://a.corp.test").is_none());
    // HTTPS_PROXY is for https:// only.
    assert!(route("http://api.cooly.test").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_proxy_or_unreadable_ca_is_an_invalid_option() {
    let out = loadgen(
        "https://api.cooly.test:9",
        &SHORT_RUN,
        &[("HTTPS_PROXY", "socks5://127.0.0.1:1080")],
    )
    .await;
    expect_exit(&out, 104);
    assert!(stderr(&out).contains("HTTPS_PROXY"), "{}", stderr(&out));
    let out = loadgen(
        "https://localhost:9",
        &["--tls-ca", "/nonexistent/ca.pem"],
        &[],
    )
    .await;
    expect_exit(&out, 104);
    assert!(stderr(&out).contains("--tls-ca"), "{}", stderr(&out));
}

/// Peak RSS (KB, `time -f %M`) of a run whose `vus` VUs log in once, send
/// one generate and then idle in a 60 s think time, each on its connection.
/// They start over 5 s (no burst of connects past the listeners' backlog)
/// and idle for the last 15 s at least.
async fn idle_rss_kb(base: &str, vus: u64, extra: &[&str]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let rss = dir.path().join("rss");
    let stages = format!("5s:{vus},15s:{vus}");
    let mut command = tokio::process::Command::new("/usr/bin/time");
    command
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss)
        .arg(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--quiet", "--api-base", base, "--stages", &stages])
        .args(["--login", "once", "--think-time", "60s"])
        .args(["--no-thresholds", "--graceful-stop", "0s"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let status = tokio::time::timeout(Duration::from_secs(120), command.status())
        .await
        .expect("the run ends within 120 s")
        .expect("time(1) runs");
    assert!(status.success(), "{status}");
    std::fs::read_to_string(&rss)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// BENCHMARKS.md, "Memory per idle VU over TLS": RSS growth from 100 to
/// 2,000 idle VUs, plain HTTP and TLS, against the same mock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release -p loadgen --test tls -- --ignored --nocapture"]
async fn idle_vu_memory_plain_and_tls() {
    let pki = Pki::new();
    let site = Site::start(pki.leaf(&["localhost"], false)).await;
    let ca = pki.ca_file();
    let plain = site.mock.base.clone();
    let tls = format!("https://localhost:{}", site.port);
    let tls_args = ["--tls-ca", ca.to_str().unwrap()];
    for (label, base, extra) in [("plain", &plain, &[][..]), ("tls", &tls, &tls_args[..])] {
        let low = idle_rss_kb(base, 100, extra).await;
        let high = idle_rss_kb(base, 2000, extra).await;
        eprintln!(
            "{label}: 100 VUs {low} KB, 2000 VUs {high} KB → {:.1} KB per VU \
             ({} TLS client hellos so far)",
            (high - low) as f64 / 1900.0,
            site.handshakes()
        );
    }
}
