//! A target with a known latency, for the latency-truth race
//! (`scripts/bench/race.sh`, BENCHMARKS.md "Race"): every answer is held
//! `--delay-ms` (a thread per connection, `thread::sleep`, so the hold is
//! exact to tens of microseconds), and, when asked, the whole server stalls
//! once: answers due between `--stall-at-ms` and `--stall-at-ms +
//! --stall-for-ms` after the first request wait for the stall's end.
//!
//! `GET /__stats` answers what the server itself measured since the last
//! `/__reset` (from a request's last byte to its answer written), the
//! truth a load generator's percentiles are compared with:
//! `count=N p50_ms=X p99_ms=Y`. `/__reset` also restarts the stall clock.
//!
//! `cargo run --release -p loadgen --example delay_server -- --delay-ms 50`
//! prints `listening on 127.0.0.1:PORT` and serves on loopback only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Clock {
    /// The first request since the last reset.
    origin: Option<Instant>,
    /// Milliseconds from a request's last byte to its answer written.
    held: Vec<f64>,
}

struct Config {
    delay: Duration,
    stall: Option<(Duration, Duration)>,
}

fn main() {
    let mut port = 0u16;
    let mut delay_ms = 50u64;
    let mut stall_at = None;
    let mut stall_for = 1000u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let number = value.parse::<u64>().unwrap_or_else(|_| {
            eprintln!("delay_server: {flag} needs a number, not {value:?}");
            std::process::exit(2)
        });
        match flag.as_str() {
            "--port" => port = number as u16,
            "--delay-ms" => delay_ms = number,
            "--stall-at-ms" => stall_at = Some(number),
            "--stall-for-ms" => stall_for = number,
            _ => {
                eprintln!("delay_server: unknown flag {flag} (--port, --delay-ms, --stall-at-ms, --stall-for-ms)");
                std::process::exit(2)
            }
        }
    }
    let config = Arc::new(Config {
        delay: Duration::from_millis(delay_ms),
        stall: stall_at.map(|at| (Duration::from_millis(at), Duration::from_millis(stall_for))),
    });
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("delay_server: cannot listen on 127.0.0.1:{port}: {e}");
        std::process::exit(1)
    });
    println!("listening on {}", listener.local_addr().expect("bound"));
    let clock = Arc::new(Mutex::new(Clock::default()));
    for stream in listener.incoming().flatten() {
        let (config, clock) = (config.clone(), clock.clone());
        std::thread::spawn(move || serve(stream, &config, &clock));
    }
}

/// One connection: GET requests without bodies, kept alive.
fn serve(mut stream: TcpStream, config: &Config, clock: &Mutex<Clock>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let received = Instant::now();
        let target = buf
            .split(|&b| b == b' ')
            .nth(1)
            .unwrap_or_default()
            .to_vec();
        buf.drain(..end);
        let body = match target.as_slice() {
            b"/__stats" => stats(clock),
            b"/__reset" => {
                *clock.lock().expect("clock") = Clock::default();
                "reset\n".to_string()
            }
            _ => {
                let origin = *clock.lock().expect("clock").origin.get_or_insert(received);
                let mut until = received + config.delay;
                if let Some((at, length)) = config.stall {
                    let (start, end) = (origin + at, origin + at + length);
                    if until > start && until < end {
                        until = end;
                    }
                }
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
                "ok\n".to_string()
            }
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
        if !target.starts_with(b"/__") {
            let held = received.elapsed().as_secs_f64() * 1000.0;
            clock.lock().expect("clock").held.push(held);
        }
    }
}

fn stats(clock: &Mutex<Clock>) -> String {
    let mut held = clock.lock().expect("clock").held.clone();
    held.sort_by(f64::total_cmp);
    let at = |q: f64| match held.len() {
        0 => 0.0,
        n => held[((q * n as f64).ceil() as usize).clamp(1, n) - 1],
    };
    format!(
        "count={} p50_ms={:.3} p99_ms={:.3}\n",
        held.len(),
        at(0.5),
        at(0.99)
    )
}
