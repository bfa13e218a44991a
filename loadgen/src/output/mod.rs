//! What the run prints and writes.
pub mod csv;
pub mod export;
pub mod ndjson;
pub mod report;
pub mod summary;
