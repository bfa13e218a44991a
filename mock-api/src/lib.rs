//! mock-api: an emulation of the Cooly image-generation backend for load
//! tests, plus the store, ledger and audit that `seed` and `loadgen` reuse.
//!
//! # Layout
//!
//! - [`db`]: the pool (SQLite or PostgreSQL), migrations, the `Id` type and
//!   the few dialect differences.
//! - [`ledger`]: reserve / capture / release / expire / add credits — the
//!   only code that moves credits.
//! - [`audit`]: invariants I1–I7 of the contract, checked by SQL on any
//!   database with the contract's schema.
//! - [`users`]: accounts and password hashes.
//! - [`seeding`]: creates the test user(s) and tops up their credits (the
//!   `seed` binary and the server's first start).
//! - [`queue`]: the job queue trait (embedded and Redis/BullMQ).
//! - [`provider`]: the simulated image provider (MOCK_API mode).
//! - [`faults`]: fault injection — the fault plan (TOML/JSON, scheduled
//!   windows), seeded decisions, the edge layer, the real rate limiter
//!   (`RATE_LIMIT_MAX`) and the `/__mock/*` control API.
//! - [`jobs`]: the outbox relay, the generation workers, the reconciler
//!   (queues again what the queue lost) and the reservation sweeper.
//! - [`config`]: the server's flags and environment variables.
//! - [`server`]: builds the app from a config and serves it on a bound
//!   listener until shutdown.
//! - [`http`]: the routes, per area, with their state, auth and errors.
//! - `testing` (feature `testing`): throwaway PostgreSQL / Redis servers,
//!   also as handles a crash test can stop and start again.

pub mod audit;
pub mod config;
pub mod db;
pub mod faults;
pub mod http;
pub mod jobs;
pub mod ledger;
pub mod provider;
pub mod queue;
pub mod seeding;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod users;
