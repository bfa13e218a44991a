//! store: the Cooly backend's store — the schema, the accounts, the credit
//! ledger, seeding and the audit — shared by `mock-api`, `seed` and
//! `loadgen`. It knows SQL only: no HTTP, no queue. The audit is meant to
//! run on the real backend's database as well as the mock's.
//!
//! # Layout
//!
//! - [`db`]: the pool (SQLite or PostgreSQL; SQLite's WAL checkpointed by
//!   a background task), migrations (skipped by `Db::open_with` on a
//!   foreign Cooly schema), table and column lookup, the `Id` type
//!   (time-ordered UUIDs), SQLite write transactions (`SqliteWrite`)
//!   and the few dialect differences.
//! - [`users`]: accounts and password hashes.
//! - [`ledger`]: reserve / capture / release / expire / add credits — the
//!   only code that moves credits; `reserve_batch` decides many
//!   reservations in one transaction, `finish_sessions` many outcomes
//!   (on SQLite `reserve_in` / `finish_in` run inside a caller's
//!   transaction; the `Dispatch` callback lets the caller queue accepted
//!   jobs in it); `ledger::postgres` holds their PostgreSQL statements
//!   (array-bound, four round trips a batch, advisory lock per user for
//!   reservations).
//! - [`group_commit`]: committer tasks that batch concurrent generate
//!   requests and workers' outcomes into shared transactions (on SQLite
//!   one committer for both, which also dispatches; on PostgreSQL several,
//!   reservations keyed by user).
//! - [`seeding`]: the default account of contract §4; creates the test
//!   user(s) and tops up their credits (the `seed` binary, the mock's first
//!   start and `loadgen --spawn-mock`); `check_schema` checks the columns
//!   it touches on a database that is not ours.
//! - [`drain`]: waits until no generation session is `processing`; the
//!   backlog (undispatched outbox rows, `processing` sessions) for metrics.
//! - [`audit`]: invariants I1–I7 of the contract, checked by SQL on any
//!   database with the contract's schema; its `fixture` (feature
//!   `testing`) builds clean and broken databases.
//! - `testing` (feature `testing`): a throwaway PostgreSQL server, SQLite
//!   test files, test users with credits and a capturing outcome, and the
//!   process plumbing mock-api's throwaway Redis shares.

pub mod audit;
pub mod db;
pub mod drain;
pub mod group_commit;
pub mod ledger;
pub mod seeding;
#[cfg(feature = "testing")]
pub mod testing;
pub mod users;
