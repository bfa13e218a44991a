//! mock-api: an emulation of the Cooly image-generation backend for load
//! tests. Its database — schema, accounts, the credit ledger, seeding and
//! the audit — is the `store` crate, which `seed` and `loadgen` use too.
//!
//! # Layout
//!
//! - [`queue`]: the job queue trait (embedded and Redis/BullMQ).
//! - [`provider`]: the simulated image provider (MOCK_API mode).
//! - [`faults`]: fault injection — the fault plan (TOML/JSON, scheduled
//!   windows), seeded decisions, the edge layer, the real rate limiter
//!   (`RATE_LIMIT_MAX`) and the `/__mock/*` control API.
//! - [`jobs`]: the outbox relay, the generation workers and the reservation
//!   sweeper.
//! - [`config`]: the server's flags and environment variables.
//! - [`server`]: builds the app from a config and serves it on a bound
//!   listener until shutdown.
//! - [`http`]: the routes, per area, with their state, auth and errors.
//! - `testing` (feature `testing`): a throwaway Redis server, the test
//!   configuration, an in-process server and the `Api` client tests drive
//!   it with (the throwaway PostgreSQL server is `store::testing`).

pub mod config;
pub mod faults;
pub mod http;
pub mod jobs;
pub mod provider;
pub mod queue;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
