//! k6 threshold expressions, as k6 splits them: [`parse`] (the syntax
//! below, into [`ThresholdSpec`]s) and [`evaluate`] (validation against a
//! metric's type, evaluation on a [`Snapshot`](crate::snapshot::Snapshot)
//! and the `abortOnFail` decision).
//!
//! # Syntax of `--threshold`
//!
//! k6 declares thresholds in the script's options; loadgen takes them on the
//! command line, one spec per `--threshold`:
//!
//! ```text
//! spec       = metric [ "{" tag *( "," tag ) "}" ] ":" expression *( "," expression ) *( ";" option )
//! metric     = ( letter | "_" ) *( letter | digit | "_" )
//! tag        = key ":" value          ; value runs to the next "," or "}", may contain ":"
//! expression = aggregate operator number
//! aggregate  = "avg" | "min" | "max" | "med" | "p(" number ")" | "rate" | "count" | "value"
//! operator   = "<" | "<=" | ">" | ">=" | "==" | "===" | "!="
//! number     = [ "-" ] digits [ "." digits ]
//! option     = "abortOnFail" | "delayAbortEval=" duration     ; duration as k6: 10s, 1m30s, 500ms
//! ```
//!
//! Whitespace is allowed between any two tokens; tag keys and values may be
//! quoted with `'` or `"` as in k6's sub-metric names. Examples:
//! `errors:rate<0.10`, `http_req_duration{endpoint:seedream4}:p(99.9)<60000`,
//! `http_req_duration:p(95)<500,avg<200;abortOnFail;delayAbortEval=10s`.
//! The options apply to every expression of the spec. k6 has no `!==`, so
//! neither has loadgen; `===` means `==` as in k6.
//!
//! # k6 semantics followed
//!
//! - Aggregates per metric type ([`validate`]): Counter `count`, `rate`
//!   (count per second of the run); Gauge `value`; Rate `rate`; Trend `avg`,
//!   `min`, `max`, `med`, `p(N)`.
//! - A rate metric (or sub-metric) with no samples has no `rate`: k6 logs a
//!   threshold error and does not fail the run; loadgen does the same
//!   (warns; outcome `ok`, `observed` NaN). k6's summary then shows a ✗ the
//!   exit code contradicts; loadgen's shows ✓, matching the exit code.
//! - Empty counters and trends evaluate as zeros, as k6's empty sinks do. A
//!   tagged sub-metric absent from the snapshot is an empty metric of its
//!   parent's type; a metric absent altogether (the engine rejects those at
//!   start with its registry and [`validate`]) is not evaluated, like an
//!   empty rate.
//! - `abortOnFail` aborts once the expression fails after more than
//!   `delayAbortEval` of the run; metrics with no samples yet are skipped
//!   while the test runs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::snapshot::metric_key;

mod evaluate;
mod parse;

pub use evaluate::{evaluate, should_abort, validate};
pub use parse::parse;

/// One `--threshold` (or one default threshold): a metric or tagged
/// sub-metric and the expressions that must hold on it.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdSpec {
    pub metric: String,
    pub tags: BTreeMap<String, String>,
    pub expressions: Vec<Expression>,
    pub abort_on_fail: bool,
    pub delay_abort_eval: Option<Duration>,
    /// The spec as the user wrote it.
    pub source: String,
}

impl ThresholdSpec {
    /// `metric` or `metric{tag:value}`, the key of the snapshot entry the
    /// spec applies to.
    pub fn metric_key(&self) -> String {
        metric_key(&self.metric, &self.tags)
    }
}

impl fmt::Display for ThresholdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// `aggregate operator value`, e.g. `p(95)<30000`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    pub aggregate: Aggregate,
    pub operator: Operator,
    pub value: f64,
    /// The expression as written (trimmed): k6 names thresholds by it in the
    /// summary and in `--summary-export`.
    pub source: String,
}

impl Expression {
    fn holds(&self, observed: f64) -> bool {
        match self.operator {
            Operator::Less => observed < self.value,
            Operator::LessOrEqual => observed <= self.value,
            Operator::Greater => observed > self.value,
            Operator::GreaterOrEqual => observed >= self.value,
            Operator::Equal => observed == self.value,
            Operator::NotEqual => observed != self.value,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Aggregate {
    Avg,
    Min,
    Max,
    Med,
    /// `p(N)`, N in 0..=100.
    Percentile(f64),
    Rate,
    Count,
    Value,
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregate::Avg => f.write_str("avg"),
            Aggregate::Min => f.write_str("min"),
            Aggregate::Max => f.write_str("max"),
            Aggregate::Med => f.write_str("med"),
            Aggregate::Percentile(p) => write!(f, "p({p})"),
            Aggregate::Rate => f.write_str("rate"),
            Aggregate::Count => f.write_str("count"),
            Aggregate::Value => f.write_str("value"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThresholdError {
    /// `column` is 0-based, in characters of `threshold`.
    #[error("threshold {threshold:?}: {problem} at column {column} (expected {expected})")]
    Syntax {
        threshold: String,
        column: usize,
        problem: String,
        expected: String,
    },
    #[error(
        "threshold {threshold:?}: {aggregate} cannot be applied to {metric}, a {metric_type} \
         metric (supported: {supported})"
    )]
    UnsupportedAggregate {
        threshold: String,
        aggregate: String,
        metric: String,
        metric_type: &'static str,
        supported: &'static str,
    },
}

/// The five thresholds of the generation test (`scenario.md`).
pub fn defaults() -> Vec<ThresholdSpec> {
    [
        "errors:rate<0.10",
        "response_time:p(95)<30000",
        "generation_success:rate>0.80",
        "http_req_failed:rate<0.10",
        "http_req_duration:p(99)<60000",
    ]
    .into_iter()
    .map(|source| parse(source).expect("built-in thresholds are valid"))
    .collect()
}
