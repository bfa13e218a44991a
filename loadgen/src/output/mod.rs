//! What the run prints and writes.
