//! loadgen: a k6-grade load generator whose default run is the Cooly
//! generation test (`shared/scenario.md`).
//!
//! # Layout
//!
//! - [`cli`]: options, with k6's names; [`plan`]: them resolved and validated.
//! - [`executor`]: k6's six executors (closed and open model), graceful stops.
//! - [`vu`]: one virtual user; [`http`]: its own HTTP/1.1 client (one socket,
//!   no connection task), timings and error kinds; [`http::wire`]: the format.
//! - [`workers`]: the VUs' runtimes, one current-thread runtime per core.
//! - [`scenario`]: the generation test's setup and iteration, session tracking.
//! - [`metrics`]: per-thread recording, the aggregator, the per-second series.
//! - [`snapshot`], [`sample`]: the aggregates and raw values outputs read.
//! - [`thresholds`]: k6 threshold expressions; [`duration`]: k6 durations.
//! - [`output`]: summary, summary export, JSON/CSV streams, HTML report.
//! - [`progress`]: the live status line; [`run`]: one run to its exit code.
//! - [`spawn`]: `--spawn-mock` (mock-api in-process, drain, audit);
//!   [`audit`]: the `loadgen audit` command.
//! - [`segment`]: k6's execution segments, sequences and striping;
//!   [`schedule`]: a segment's ramping-VU steps and arrival times.
//! - [`shard`]: the `--shard-out` file; [`merge`]: `loadgen merge`, the
//!   shards added up into the whole.

pub mod audit;
pub mod cli;
pub mod command;
pub mod duration;
pub mod executor;
pub mod http;
pub mod merge;
pub mod metrics;
pub mod output;
pub mod plan;
pub mod progress;
pub mod run;
pub mod sample;
pub mod scenario;
pub mod schedule;
pub mod segment;
pub mod shard;
pub mod snapshot;
pub mod spawn;
pub mod thresholds;
pub mod vu;
pub mod workers;
