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
//! - [`queue`]: the job queue trait (embedded and Redis/BullMQ).
//! - `testing` (feature `testing`): throwaway PostgreSQL / Redis servers.

pub mod audit;
pub mod db;
pub mod ledger;
pub mod queue;
#[cfg(feature = "testing")]
pub mod testing;
pub mod users;
