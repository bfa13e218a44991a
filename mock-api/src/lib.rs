//! mock-api: an emulation of the Cooly image-generation backend for load
//! tests. Its database — schema, accounts, the credit ledger, seeding and
//! the audit — is the `store` crate, which `seed` and `loadgen` use too.
//!
//! # Layout
//!
//! - [`queue`]: the job queue trait (embedded and Redis/BullMQ).
//! - [`provider`]: the simulated image provider (MOCK_API mode).
//! - [`draws`]: seeded, keyed random draws (SplitMix64, FNV-1a) behind
//!   every random choice of the provider and the fault rules.
//! - [`faults`]: fault injection's domain, without HTTP types — the fault
//!   plan (TOML/JSON, rules as target + action, scheduled windows), the
//!   seeded decisions and the real rate limiter's counting
//!   (`RATE_LIMIT_MAX`).
//! - [`jobs`]: the outbox relay (a round's rows marked by one `UPDATE`;
//!   on SQLite the generate path's committer dispatches through it in its
//!   own rounds), the generation workers (outcomes group-committed through
//!   `store::group_commit::GroupCommit`, shared with the generate path),
//!   the reconciler (queues again what the queue lost) and the
//!   reservation sweeper.
//! - [`config`]: the server's flags and environment variables, resolved
//!   once (fault plan read) into the settings the server starts from.
//! - [`server`]: builds the app from those settings and serves it on a bound
//!   listener until shutdown.
//! - [`http`]: the routes, per area, with their state (including the
//!   generate path's `store::group_commit::GroupCommit`), auth (and the login
//!   cache that keeps repeated logins off bcrypt) and errors; and what applies the fault decisions: the edge middleware, the rate
//!   limiter's answers and the `/__mock/*` control API.
//! - `testing` (feature `testing`): a throwaway Redis server (also as a
//!   handle a crash test can stop and start again), the test
//!   configuration, an in-process server and the `Api` client tests drive
//!   it with, and the 99.9 % binomial check of a drawn rate (the
//!   throwaway PostgreSQL server is `store::testing`).

pub mod config;
pub mod draws;
pub mod faults;
pub mod http;
pub mod jobs;
pub mod provider;
pub mod queue;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
