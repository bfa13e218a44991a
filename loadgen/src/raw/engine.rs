//! The raw engine: `--threads` OS threads, each a current-thread runtime
//! running its share of the connections. A connection writes the
//! pre-serialised request, reads the answer into a buffer it keeps for the
//! whole run, parses the head's status and framing only, skips the body by
//! its length, and records into its thread's [`Tally`]. On plain HTTP a
//! request costs one `send` and one `recv` (tokio drops a socket's read
//! readiness when a read comes back short, so no read returns `EAGAIN`; the
//! readiness wait is one `epoll_wait` for all of a thread's connections),
//! and `--timeout` is one timer per connection, re-armed only when it
//! fires, not one per request.
//!
//! Closed model: a connection sends its next request when the previous
//! answer is in. Open model (`-q`): request *i* is due at `rate.due(i)`; a
//! free connection takes the next due request, waits for its time (an
//! [`Alarm`], the kernel's high-resolution timer) and starts it; its latency counts from when it was due, so a request that
//! found no free connection (a stalled target) carries its wait
//! (coordinated omission is not hidden), and starts past [`LATE`] count.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::time::Sleep;

use super::alarm::Alarm;
use super::args::Load;
use super::request::PreparedRequest;
use super::tally::{Outcome, Tally, LATE};
use crate::http::stream::Stream;
use crate::http::wire::{self, ChunkedDecoder, Framing};
use crate::http::{classify_io, FailureKind};

/// The buffer a connection reads into; a larger answer head grows it.
const READ_BUFFER: usize = 16 * 1024;

/// What every connection shares.
pub struct Shared {
    pub request: PreparedRequest,
    pub load: Load,
    pub timeout: Duration,
    pub started: Instant,
    /// The next request's number.
    next: AtomicU64,
    stop: AtomicBool,
    /// The `--out` tags of each sample, when samples are kept.
    pub sample_tags: Option<Vec<(&'static str, String)>>,
}

pub struct Engine {
    pub shared: Arc<Shared>,
    pub tallies: Vec<Arc<Mutex<Tally>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

pub fn lock(tally: &Mutex<Tally>) -> MutexGuard<'_, Tally> {
    tally
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Engine {
    /// Starts the threads; the run's clock starts now.
    pub fn start(
        request: PreparedRequest,
        load: Load,
        timeout: Duration,
        threads: usize,
        keep_samples: bool,
    ) -> std::io::Result<Engine> {
        let sample_tags = keep_samples.then(|| {
            let method = String::from_utf8_lossy(
                request
                    .bytes
                    .split(|&b| b == b' ')
                    .next()
                    .unwrap_or_default(),
            )
            .into_owned();
            vec![
                ("method", method),
                ("name", request.url.clone()),
                ("url", request.url.clone()),
                ("proto", "HTTP/1.1".to_string()),
            ]
        });
        let threads = threads.min(load.connections as usize).max(1);
        let shared = Arc::new(Shared {
            request,
            load,
            timeout,
            started: Instant::now(),
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            sample_tags,
        });
        let tallies: Vec<_> = (0..threads)
            .map(|_| Arc::new(Mutex::new(Tally::default())))
            .collect();
        let mut handles = Vec::with_capacity(threads);
        for (index, tally) in tallies.iter().enumerate() {
            let connections = (shared.load.connections as usize + threads - 1 - index) / threads;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (shared, tally) = (shared.clone(), tally.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("loadgen-http-{index}"))
                    .spawn(move || {
                        runtime.block_on(async {
                            let mut set = tokio::task::JoinSet::new();
                            for _ in 0..connections {
                                set.spawn(connection(shared.clone(), tally.clone()));
                            }
                            while set.join_next().await.is_some() {}
                        })
                    })?,
            );
        }
        Ok(Engine {
            shared,
            tallies,
            threads: handles,
        })
    }

    /// Waits for every connection to finish (call from a blocking context).
    pub fn join(self) -> Vec<Arc<Mutex<Tally>>> {
        for handle in self.threads {
            let _ = handle.join();
        }
        self.tallies
    }
}

impl Shared {
    /// No request starts after this; those in flight finish.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The next request to send: `Some(None)` now (closed model),
    /// `Some(Some(due))` at `due` (open model), `None` once the run is over.
    fn claim(&self) -> Option<Option<Instant>> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        if self.load.requests.is_some_and(|n| slot >= n) {
            return None;
        }
        match self.load.rate {
            None => {
                if self
                    .load
                    .duration
                    .is_some_and(|d| self.started.elapsed() >= d)
                {
                    return None;
                }
                Some(None)
            }
            Some(rate) => {
                let due = rate.due(slot);
                if self.load.duration.is_some_and(|d| due >= d) {
                    return None;
                }
                Some(Some(self.started + due))
            }
        }
    }
}

/// Ends at `deadline`. The connection's one timer is re-armed only when it
/// fires before the deadline, not for every request: an answer in
/// microseconds then costs no timer-wheel insert and removal.
async fn expire(mut timer: Pin<&mut Sleep>, deadline: Instant) {
    loop {
        timer.as_mut().await;
        if Instant::now() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline.into());
    }
}

/// One connection's requests, one after another, until the run is over.
async fn connection(shared: Arc<Shared>, tally: Arc<Mutex<Tally>>) {
    let mut conn = Connection {
        stream: None,
        served: 0,
        buf: vec![0; READ_BUFFER],
    };
    let timer = tokio::time::sleep(shared.timeout);
    tokio::pin!(timer);
    let mut alarm = None;
    while let Some(due) = shared.claim() {
        if let Some(at) = due {
            alarm.get_or_insert_with(Alarm::default).until(at).await;
        }
        let begun = Instant::now();
        let start = due.unwrap_or(begun);
        let late = begun - start > LATE;
        let mut connected = None;
        let deadline = begun + shared.timeout;
        let result = tokio::select! {
            biased;
            result = conn.exchange(&shared.request, &mut connected) => Some(result),
            () = expire(timer.as_mut(), deadline) => None,
        };
        let (answer, received) = match result {
            Some(Ok((status, received))) => (Ok(status), received),
            Some(Err((kind, received))) => {
                conn.stream = None;
                (Err(kind), received)
            }
            None => {
                conn.stream = None;
                (Err(FailureKind::Timeout.as_tag()), 0)
            }
        };
        let outcome = Outcome {
            answer,
            duration: start.elapsed(),
            sent: shared.request.bytes.len() as u64,
            received,
        };
        let mut tally = lock(&tally);
        tally.record(&outcome, shared.sample_tags.as_deref());
        if let Some(took) = connected {
            tally.connected(took);
        }
        tally.late_starts += u64::from(late);
    }
}

struct Connection {
    stream: Option<Stream>,
    /// Requests answered on the current stream.
    served: u32,
    buf: Vec<u8>,
}

/// Why an exchange failed (the `error` tag) and the bytes it had read.
type Failed = (&'static str, u64);

fn io_failure(e: &std::io::Error) -> &'static str {
    classify_io(e).as_tag()
}

impl Connection {
    /// Sends the request and reads its answer: the status and the bytes
    /// read. A kept-alive connection the server closed before answering
    /// (idle timeout) gets the request once more on a new one.
    async fn exchange(
        &mut self,
        request: &PreparedRequest,
        connected: &mut Option<Duration>,
    ) -> Result<(u16, u64), Failed> {
        loop {
            let reused = self.stream.is_some() && self.served > 0;
            if self.stream.is_none() {
                let route = &request.base.route;
                let new = Stream::connect(route, &request.base.host, request.base.port, None)
                    .await
                    .map_err(|kind| (kind.as_tag(), 0))?;
                *connected = Some(new.connecting + new.tls_handshaking);
                self.stream = Some(new.stream);
                self.served = 0;
            }
            match self.send_and_read(request).await {
                Err(Attempt::ClosedBeforeAnswer) if reused => {
                    self.stream = None;
                }
                Err(Attempt::ClosedBeforeAnswer) => {
                    return Err((FailureKind::ConnectionReset.as_tag(), 0))
                }
                Err(Attempt::Failed(failed)) => return Err(failed),
                Ok((status, received, keep_alive)) => {
                    self.served += 1;
                    if !keep_alive || !request.keep_alive {
                        self.stream = None;
                    }
                    return Ok((status, received));
                }
            }
        }
    }

    async fn send_and_read(
        &mut self,
        request: &PreparedRequest,
    ) -> Result<(u16, u64, bool), Attempt> {
        let stream = self.stream.as_mut().expect("connected");
        if let Err(e) = stream.send(&request.bytes).await {
            return Err(match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                    Attempt::ClosedBeforeAnswer
                }
                _ => Attempt::Failed((io_failure(&e), 0)),
            });
        }
        let failed = |kind: &'static str, received: usize| Attempt::Failed((kind, received as u64));
        let mut filled = 0;
        let head = loop {
            if filled == self.buf.len() {
                if self.buf.len() > wire::MAX_HEAD {
                    return Err(failed(INVALID, filled));
                }
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = match stream.read(&mut self.buf[filled..]).await {
                Ok(0) if filled == 0 => return Err(Attempt::ClosedBeforeAnswer),
                Ok(0) => return Err(failed(FailureKind::ConnectionReset.as_tag(), filled)),
                Ok(n) => n,
                Err(e) if filled == 0 && e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Err(Attempt::ClosedBeforeAnswer)
                }
                Err(e) => return Err(failed(io_failure(&e), filled)),
            };
            filled += n;
            match wire::parse_head(&self.buf[..filled], request.head) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(_) => return Err(failed(INVALID, filled)),
            }
        };
        let mut received = filled;
        let mut keep_alive = head.keep_alive;
        match head.framing {
            Framing::Length(length) => {
                let mut have = filled - head.len;
                while have < length {
                    match stream.read(&mut self.buf).await {
                        Ok(0) => {
                            return Err(failed(FailureKind::ConnectionReset.as_tag(), received))
                        }
                        Ok(n) => {
                            have += n;
                            received += n;
                        }
                        Err(e) => return Err(failed(io_failure(&e), received)),
                    }
                }
                // Bytes past the answer: the server is out of step.
                keep_alive &= have == length;
            }
            Framing::Chunked => {
                let mut input = self.buf[head.len..filled].to_vec();
                let mut decoder = ChunkedDecoder::default();
                let mut body = Vec::new();
                loop {
                    match decoder.decode(&input, &mut body) {
                        Ok(Some(_)) => break,
                        Ok(None) => body.clear(),
                        Err(_) => return Err(failed(INVALID, received)),
                    }
                    match stream.read(&mut self.buf).await {
                        Ok(0) => {
                            return Err(failed(FailureKind::ConnectionReset.as_tag(), received))
                        }
                        Ok(n) => {
                            input.extend_from_slice(&self.buf[..n]);
                            received += n;
                        }
                        Err(e) => return Err(failed(io_failure(&e), received)),
                    }
                }
            }
            Framing::UntilClose => loop {
                match stream.read(&mut self.buf).await {
                    Ok(0) => break,
                    Ok(n) => received += n,
                    Err(e) => return Err(failed(io_failure(&e), received)),
                }
            },
        }
        Ok((head.status, received as u64, keep_alive))
    }
}

/// The `error` tag of an answer that is not HTTP/1.x (or too large a head).
const INVALID: &str = "invalid response";

enum Attempt {
    /// Nothing of an answer arrived: the connection was closed first.
    ClosedBeforeAnswer,
    Failed(Failed),
}
