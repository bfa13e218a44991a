//! What an idle VU keeps, and where its connection comes from: a client
//! in think time holds no read or write buffer (its live heap, counted by
//! this binary's allocator, is a few hundred bytes), and `--local-addr`
//! spreads the VUs' connections over the source addresses given.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use loadgen::http::{BaseUrl, Client};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

mod common;
use common::child::{expect_exit, loadgen_run, output_within};
use common::read_request;

/// Counts the live heap bytes of the threads that opt in, so the server
/// threads of a test do not blur the client's figure.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count(delta: isize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The answers of an in-test backend: a login with a JWT-sized token in
/// its body and cookie, and a generate whose body is larger than one read
/// (so the client's read buffer grows while the request runs).
fn answer(request: &[u8]) -> Vec<u8> {
    let token = "t".repeat(200);
    let body = if request.starts_with(b"POST /api/auth/login") {
        format!("{{\"token\":\"{token}\"}}")
    } else {
        format!(
            "{{\"sessionId\":\"s\",\"clientKey\":\"k\",\"pad\":\"{}\"}}",
            "x".repeat(6000)
        )
    };
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nSet-Cookie: token={token}; Path=/\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A backend on 127.0.0.1 on its own thread and runtime; it records the
/// source address of every connection it accepts.
fn backend() -> (String, Arc<Mutex<Vec<IpAddr>>>) {
    let peers = Arc::new(Mutex::new(Vec::new()));
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", std_listener.local_addr().unwrap());
    let seen = peers.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((mut stream, peer)) = listener.accept().await else {
                    return;
                };
                seen.lock().unwrap().push(peer.ip());
                tokio::spawn(async move {
                    while let Some(request) = read_request(&mut stream).await {
                        if stream.write_all(&answer(&request)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    (base, peers)
}

#[test]
fn a_client_in_think_time_keeps_no_buffer() {
    const CLIENTS: usize = 200;
    let (base, _) = backend();
    let base = Arc::new(BaseUrl::parse(&base).unwrap());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exchange = |client: &mut Client, path: &'static str| {
        runtime.block_on(async {
            let response = client
                .send(
                    Method::POST,
                    path,
                    Some(b"{\"prompt\":\"p\"}".as_slice()),
                    &[],
                    Duration::from_secs(10),
                )
                .await;
            assert_eq!(response.status, 200, "{:?}", response.failure);
            response.body.len()
        })
    };
    // Warm up the runtime's driver and the lazy parts of the first request.
    let mut warm = Client::new(base.clone(), false);
    exchange(&mut warm, "/api/auth/login");
    let mut clients = Vec::with_capacity(CLIENTS);
    COUNTED.with(|c| c.set(true));
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..CLIENTS {
        let mut client = Client::new(base.clone(), false);
        exchange(&mut client, "/api/auth/login");
        assert!(exchange(&mut client, "/api/images/seedream4/generate") > 6000);
        clients.push(client);
    }
    let per_client = (LIVE.load(Ordering::Relaxed) - before) / CLIENTS as isize;
    COUNTED.with(|c| c.set(false));
    eprintln!("live heap per idle client: {per_client} bytes");
    // Its cookie (a 200-byte token) and the runtime's registration of its
    // socket; a kept read buffer alone would be 4 KiB, this answer's 8 KiB.
    assert!(
        per_client < 1024,
        "an idle client keeps {per_client} bytes of heap"
    );
}

#[test]
fn vus_connect_from_the_local_addresses_given() {
    let (base, peers) = backend();
    let output = output_within(
        loadgen_run(&base).args([
            "--vus",
            "4",
            "--iterations",
            "8",
            "--login",
            "once",
            "--no-thresholds",
            "--local-addr",
            "127.0.0.2,127.0.0.3",
        ]),
        Duration::from_secs(60),
    );
    expect_exit(&output, 0);
    let peers = peers.lock().unwrap().clone();
    let from: BTreeSet<String> = peers.iter().map(IpAddr::to_string).collect();
    // The VUs' four connections, two per address, and the setup login's
    // (from the default address).
    assert!(
        from.contains("127.0.0.2") && from.contains("127.0.0.3"),
        "{peers:?}"
    );
    let count = |ip: &str| peers.iter().filter(|p| p.to_string() == ip).count();
    assert_eq!(
        (count("127.0.0.2"), count("127.0.0.3")),
        (2, 2),
        "{peers:?}"
    );
}

#[test]
fn a_bad_local_address_is_one_line_and_exit_104() {
    let (base, _) = backend();
    for bad in ["nope", "192.0.2.1"] {
        let output = output_within(
            loadgen_run(&base).args(["--vus", "1", "--iterations", "1", "--local-addr", bad]),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(104), "{bad}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{bad}: {stderr}");
        assert!(
            stderr.starts_with("loadgen: invalid --local-addr: "),
            "{stderr}"
        );
    }
}

#[test]
fn more_vus_than_open_files_is_one_line_and_exit_104() {
    let (base, _) = backend();
    let output = output_within(
        loadgen_run(&base).args(["--vus", "100000000", "--duration", "1s"]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(104), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("open files but the limit is"), "{stderr}");
}
