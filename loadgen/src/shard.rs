//! `--shard-out FILE`: one instance's results, in a form that
//! `loadgen merge` adds up exactly. JSON, one object:
//!
//! - `format` (`loadgen-shard/1`), `test_hash` (SHA-256 of the test's
//!   definition: executor and scenario, not the instance's segment or
//!   outputs), `segment` and `sequence` (k6 notation), `start` and `end`
//!   (RFC 3339), the iteration counts, and the `thresholds` the instance was
//!   given (even with `--no-thresholds`: the merge evaluates them on the
//!   whole);
//! - `metrics`, each with its `name`, `tags` (sub-metrics) and `type`:
//!   counters `count` (k6's count: the sum of the values), rates `passes`
//!   and `fails`, trends `count`, `sum`, `min`, `max` and `histogram` — the
//!   HDR histogram of the values × 1000 in the standard V2 + DEFLATE
//!   encoding, base64, always configured 1 ‥ 3.6·10⁹ at 3 significant
//!   digits (what [`TrendValues`] records) — and gauges `value`, `min`,
//!   `max` and `series`, `[unix second, value]` pairs;
//! - `checks` (name, passes, fails) and `seconds`, what the report charts
//!   per unix second: counts, and the histograms (encoded as above) and
//!   exact extremes of `http_req_duration` per endpoint (`response_time`)
//!   and of `generation_e2e`, so that the merge's per-second percentiles
//!   are exact too;
//! - `samples` (when the instance wrote one): the absolute path of its own
//!   `--out json` stream, which `loadgen merge --out` interleaves with the
//!   other shards' into the stream of the whole.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use chrono::{DateTime, Utc};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::exit::Failure;
use crate::plan::{OutputTarget, Plan};
use crate::run::RunOutcome;
pub use crate::snapshot::encode_histogram;
use crate::snapshot::{CheckTally, SecondTrends, TrendValues, Values};

pub const FORMAT: &str = "loadgen-shard/1";

/// The one histogram configuration every shard uses.
const LOWEST: u64 = 1;
const HIGHEST: u64 = 3_600_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shard {
    pub format: String,
    pub test_hash: String,
    pub segment: String,
    pub sequence: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub completed_iterations: u64,
    pub interrupted_iterations: u64,
    #[serde(default)]
    pub thresholds: Vec<String>,
    pub metrics: Vec<ShardMetric>,
    #[serde(default)]
    pub checks: Vec<ShardCheck>,
    #[serde(default)]
    pub seconds: Vec<ShardSecond>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardMetric {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(flatten)]
    pub values: ShardValues,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ShardValues {
    Counter {
        count: f64,
    },
    Rate {
        passes: u64,
        fails: u64,
    },
    Trend {
        count: u64,
        sum: f64,
        min: f64,
        max: f64,
        histogram: String,
    },
    Gauge {
        value: f64,
        min: f64,
        max: f64,
        series: Vec<(i64, f64)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCheck {
    pub name: String,
    pub passes: u64,
    pub fails: u64,
}

/// One second of what the report charts: counts, and the histograms
/// behind the per-second percentiles (which add up only as histograms).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardSecond {
    pub unix: i64,
    pub requests: u64,
    pub failed_requests: u64,
    pub credit_errors: u64,
    pub provider_errors: u64,
    pub timeouts: u64,
    pub connection_errors: u64,
    #[serde(flatten)]
    pub trends: SecondTrends,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: {why}")]
    Read { path: String, why: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// SHA-256 of what defines the test (executor and scenario): instances of
/// one test share it whatever their segment, outputs or thresholds.
pub fn test_hash(plan: &Plan) -> String {
    let definition = format!(
        "executor={:?}\nscenario={:?}\n",
        plan.executor, plan.scenario
    );
    hex(&Sha256::digest(definition.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`encode_histogram`]; refuses another configuration.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    let histogram: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram is not V2+DEFLATE: {e:?}"))?;
    if histogram.low() != LOWEST
        || histogram.high() != HIGHEST
        || histogram.sigfig() != SIGNIFICANT_DIGITS
    {
        return Err(format!(
            "histogram configured {}..{} at {} digits, not {LOWEST}..{HIGHEST} at {SIGNIFICANT_DIGITS}",
            histogram.low(),
            histogram.high(),
            histogram.sigfig()
        ));
    }
    Ok(histogram)
}

/// An empty trend in the shard configuration.
pub fn empty_trend() -> TrendValues {
    let trend = TrendValues::new();
    debug_assert_eq!(
        (
            trend.histogram.low(),
            trend.histogram.high(),
            trend.histogram.sigfig()
        ),
        (LOWEST, HIGHEST, SIGNIFICANT_DIGITS)
    );
    trend
}

impl Shard {
    /// The shard of a run that ended at `end`.
    pub fn of_run(plan: &Plan, run: &RunOutcome, end: DateTime<Utc>) -> Shard {
        let elapsed = chrono::Duration::from_std(run.snapshot.elapsed).unwrap_or_default();
        let start = end - elapsed;
        let start_second = start.timestamp();
        let vus_series: Vec<(i64, f64)> = run
            .series
            .iter()
            .map(|p| (start_second + i64::from(p.second), p.vus as f64))
            .collect();
        let metrics = run
            .snapshot
            .metrics
            .iter()
            .map(|m| ShardMetric {
                name: m.name.clone(),
                tags: m.tags.clone(),
                values: match &m.values {
                    Values::Counter { count } => ShardValues::Counter { count: *count },
                    Values::Rate { passes, fails } => ShardValues::Rate {
                        passes: *passes,
                        fails: *fails,
                    },
                    Values::Trend(t) => ShardValues::Trend {
                        count: t.count(),
                        sum: t.sum,
                        min: t.min_or_zero(),
                        max: t.max_or_zero(),
                        histogram: encode_histogram(&t.histogram),
                    },
                    Values::Gauge { value, min, max } => ShardValues::Gauge {
                        value: *value,
                        min: *min,
                        max: *max,
                        series: if m.name == "vus" && !vus_series.is_empty() {
                            vus_series.clone()
                        } else {
                            vec![(start_second, *value)]
                        },
                    },
                },
            })
            .collect();
        Shard {
            format: FORMAT.to_string(),
            test_hash: test_hash(plan),
            segment: plan.segment.segment().to_string(),
            sequence: plan.segment.sequence().to_string(),
            start,
            end,
            completed_iterations: run.completed_iterations,
            interrupted_iterations: run.interrupted_iterations,
            thresholds: plan
                .shard_thresholds
                .iter()
                .map(|t| t.to_string())
                .collect(),
            metrics,
            checks: run
                .snapshot
                .checks
                .iter()
                .map(|c: &CheckTally| ShardCheck {
                    name: c.name.clone(),
                    passes: c.passes,
                    fails: c.fails,
                })
                .collect(),
            seconds: run
                .series
                .iter()
                .map(|p| ShardSecond {
                    unix: start_second + i64::from(p.second),
                    requests: p.requests,
                    failed_requests: p.failed_requests,
                    credit_errors: p.credit_errors,
                    provider_errors: p.provider_errors,
                    timeouts: p.timeouts,
                    connection_errors: p.connection_errors,
                    trends: p.trends.clone().unwrap_or_default(),
                })
                .collect(),
            samples: plan.output.streams.iter().find_map(|target| match target {
                OutputTarget::Json(path) => {
                    Some(std::path::absolute(path).unwrap_or_else(|_| path.clone()))
                }
                OutputTarget::Csv(_) => None,
            }),
        }
    }

    /// `--shard-out`, when given: writes this instance's shard.
    pub fn write_if_asked(plan: &Plan, run: &RunOutcome) -> Result<(), Failure> {
        let Some(path) = &plan.shard_out else {
            return Ok(());
        };
        Shard::of_run(plan, run, Utc::now())
            .write(path)
            .map_err(|e| Failure::invalid_config(e.to_string()))
    }

    pub fn write(&self, path: &Path) -> Result<(), ShardError> {
        let written = std::fs::File::create(path).and_then(|file| {
            let mut out = std::io::BufWriter::new(file);
            serde_json::to_writer(&mut out, self)?;
            out.write_all(b"\n")?;
            out.flush()
        });
        written.map_err(|source| ShardError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn read(path: &Path) -> Result<Shard, ShardError> {
        let read_error = |why: String| ShardError::Read {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read_error(e.to_string()))?;
        let shard: Shard = serde_json::from_str(&text)
            .map_err(|e| read_error(format!("not a shard file: {e}")))?;
        if shard.format != FORMAT {
            return Err(read_error(format!(
                "format {:?}, expected {FORMAT:?}",
                shard.format
            )));
        }
        Ok(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn histograms_round_trip_and_other_configurations_are_refused() {
        let mut trend = empty_trend();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..5000 {
            trend.record(rng.gen_range(0.0..60_000.0));
        }
        let decoded = decode_histogram(&encode_histogram(&trend.histogram)).unwrap();
        assert_eq!(decoded, trend.histogram);
        let other = Histogram::<u64>::new_with_bounds(1, 1000, 2).unwrap();
        let err = decode_histogram(&encode_histogram(&other)).unwrap_err();
        assert!(err.contains("not 1..3600000000 at 3"), "{err}");
        assert!(decode_histogram("@@@").is_err());
        assert!(decode_histogram("AAAA").is_err());
    }
}
