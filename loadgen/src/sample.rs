//! One measured value, as a VU records it: the unit every streaming output
//! (`--out json=`, `--out csv=`) writes and every aggregate is built from.

use std::time::SystemTime;

use crate::snapshot::{MetricType, ValueType};

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub metric: &'static str,
    pub metric_type: MetricType,
    pub contains: ValueType,
    pub time: SystemTime,
    pub value: f64,
    /// k6 tags such as `method`, `status`, `name`, `endpoint`, `error`, `check`.
    pub tags: Vec<(&'static str, String)>,
}
