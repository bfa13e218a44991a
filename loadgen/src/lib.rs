//! loadgen: a k6-grade load generator whose default run is the Cooly
//! generation test (`shared/scenario.md`).
//!
//! # Layout
//!
//! - [`cli`]: options, with k6's names; [`plan`]: them resolved and validated.
//!   The result options (thresholds, summary, `--summary-export`, `--out`,
//!   `--report`) are one [`cli::OutputArgs`], flattened into `run`, `http`
//!   and `merge`, resolved once by [`plan::Outputs::from_args`].
//! - [`executor`]: k6's executors (closed and open model, and
//!   externally-controlled), graceful stops; each VU pinned to one target,
//!   account, source address and random stream by its number in the whole
//!   test (the global VU with an execution segment).
//! - [`vu`]: one virtual user; [`http`]: its own HTTP/1.1 client (one socket,
//!   no connection task), timings and error kinds; [`http::wire`]: the format;
//!   [`http::stream`]: the plain or TLS socket, direct or through a proxy;
//!   [`http::tls`]: rustls configuration and certificate errors;
//!   [`http::proxy`]: `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` as Go reads them.
//! - [`workers`]: the VUs' runtimes, one current-thread runtime per core.
//! - [`open_files`]: the open-file limit, raised at start and checked
//!   against the VUs.
//! - [`scenario`]: the generation test's setup and iteration, session tracking.
//! - [`metrics`]: per-thread recording, the aggregator, the per-second series.
//! - [`snapshot`], [`sample`]: the aggregates and raw values outputs read.
//! - [`thresholds`]: k6 threshold expressions, parsed (`thresholds::parse`)
//!   and evaluated (`thresholds::evaluate`) (durations: the `k6-duration` crate).
//! - [`output`]: the end-of-run lines and files (`print_result`,
//!   `write_files`): summary, summary export, JSON/CSV streams, HTML report.
//! - [`progress`]: the live status line; [`run`]: one run to its exit code.
//! - [`command`]: drives `loadgen run` and `loadgen audit` to an exit code;
//!   [`exit`]: the exit codes and [`exit::Failure`] (code + one line) that
//!   `main` prints.
//! - [`spawn`]: the `--spawn-mock` harness: mock-api in-process, started
//!   (address, users file) and finished (drain, audit report);
//!   [`audit`]: the `loadgen audit` command.
//! - [`segment`]: k6's execution segments, sequences and striping;
//!   [`schedule`]: a segment's ramping-VU steps and arrival times.
//! - [`shard`]: the `--shard-out` file; [`merge`]: `loadgen merge`, the
//!   shards added up into the whole, and their own `--out json` streams
//!   (read back by `output::ndjson::PointReader`) interleaved by time into
//!   the `--out` of the whole.
//! - [`start`]: `--start-at` and `--start-tolerance`; [`control`]: pause
//!   (the executors' clock), stop and the externally-controlled VUs;
//!   [`control_api`]: k6's REST API, which reads the collector and writes
//!   the control.
//! - [`raw`]: `loadgen http URL`, one request at full speed or a fixed rate
//!   (oha's and hey's flags): [`raw::args`] options, [`raw::request`] the
//!   request serialised once, [`raw::engine`] threads and connections
//!   (closed and open model), [`raw::tally`] per-thread metrics merged into
//!   a [`snapshot::Snapshot`]; it reuses `output`, `thresholds`, `progress`
//!   and the `--out` writers of `run`, and `http`'s stream and wire format.
//!
//! Data flows one way: `command` uses `spawn`, `run` and `output`; none of
//! them imports `command`. `run` starts `control_api`, which writes
//! `control`, which the executors read; `control` imports none of them.

pub mod audit;
pub mod cli;
pub mod command;
pub mod control;
pub mod control_api;
pub mod executor;
pub mod exit;
pub mod http;
pub mod merge;
pub mod metrics;
pub mod open_files;
pub mod output;
pub mod plan;
pub mod progress;
pub mod raw;
pub mod run;
pub mod sample;
pub mod scenario;
pub mod schedule;
pub mod segment;
pub mod shard;
pub mod snapshot;
pub mod spawn;
pub mod start;
pub mod thresholds;
pub mod vu;
pub mod workers;
