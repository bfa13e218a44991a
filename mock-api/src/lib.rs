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
//! - [`draws`]: seeded, keyed random draws (SplitMix64, FNV-1a) behind
//!   every random choice of the provider and the fault rules.
//! - [`faults`]: fault injection's domain, without HTTP types — the fault
//!   plan (TOML/JSON, rules as target + action, scheduled windows), the
//!   seeded decisions and the real rate limiter's counting
//!   (`RATE_LIMIT_MAX`).
//! - [`jobs`]: the outbox relay, the generation workers and the reservation
//!   sweeper.
//! - [`config`]: the server's flags and environment variables.
//! - [`server`]: builds the app from a config and serves it on a bound
//!   listener until shutdown.
//! - [`http`]: the routes, per area, with their state, auth and errors;
//!   and what applies the fault decisions: the edge middleware, the rate
//!   limiter's answers and the `/__mock/*` control API.
//! - `testing` (feature `testing`): throwaway PostgreSQL / Redis servers.

pub mod audit;
pub mod config;
pub mod db;
pub mod draws;
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
