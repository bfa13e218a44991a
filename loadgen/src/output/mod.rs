//! What the run prints and writes.
pub mod report;
