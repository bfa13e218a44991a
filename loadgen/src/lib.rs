//! loadgen: a k6-grade load generator whose default run is the Cooly
//! generation test (`shared/scenario.md`).

pub mod output;
pub mod sample;
pub mod snapshot;
pub mod thresholds;
