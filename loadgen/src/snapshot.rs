//! The run's aggregates at one moment: what thresholds, the end-of-test
//! summary, `--summary-export` and the HTML report read. The engine's
//! aggregator produces it; nothing here records samples.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

/// k6's four metric types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    Counter,
    Gauge,
    Rate,
    Trend,
}

/// What a metric's values mean (k6's `contains`): it decides how the
/// summary formats them (`2.1s`, `48 kB`, plain numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    Default,
    /// Milliseconds.
    Time,
    /// Bytes.
    Data,
}

/// Aggregated values of one metric or tagged sub-metric.
#[derive(Clone, Debug)]
pub enum Values {
    Counter { count: f64 },
    Gauge { value: f64, min: f64, max: f64 },
    Rate { passes: u64, fails: u64 },
    Trend(TrendValues),
}

/// A trend: an HDR histogram of microseconds (3 significant digits,
/// 1 µs .. 1 h) plus the exact sum, min and max. Values are in the
/// metric's unit (milliseconds for time trends), as k6 reports them.
#[derive(Clone, Debug)]
pub struct TrendValues {
    /// Recorded values × 1000 (so a time trend in ms is stored in µs).
    pub histogram: Histogram<u64>,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl TrendValues {
    pub fn new() -> Self {
        TrendValues {
            histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid HDR bounds"),
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    pub fn record(&mut self, value: f64) {
        // 0 has a bucket of its own (a reused connection's `connecting`).
        let scaled = (value * 1000.0).round().clamp(0.0, 3_600_000_000.0) as u64;
        self.histogram.saturating_record(scaled);
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &TrendValues) {
        if other.count() == 0 {
            // `add` would walk every bucket for nothing.
            return;
        }
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.histogram.add(&other.histogram);
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Back to no values, keeping the histogram's buckets allocated.
    pub fn clear(&mut self) {
        if self.count() > 0 {
            self.histogram.reset();
        }
        self.sum = 0.0;
        self.min = f64::INFINITY;
        self.max = f64::NEG_INFINITY;
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn avg(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.sum / n as f64,
        }
    }

    /// `p` in 0..=100, in the metric's unit. 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.count() == 0 {
            return 0.0;
        }
        // HDR answers the top of the value's bucket (up to 0.1 % high);
        // never report past the exact extremes.
        let bucket_top = self.histogram.value_at_quantile(p / 100.0) as f64 / 1000.0;
        bucket_top.clamp(self.min, self.max)
    }

    pub fn med(&self) -> f64 {
        self.percentile(50.0)
    }

    /// p50, p95 and p99: what the report charts per second.
    pub fn chart_percentiles(&self) -> [f64; 3] {
        [
            self.percentile(50.0),
            self.percentile(95.0),
            self.percentile(99.0),
        ]
    }

    /// The histogram encoded and the exact extremes (sum and count are not
    /// kept: this serves percentiles).
    pub fn encoded(&self) -> EncodedTrend {
        EncodedTrend {
            histogram: encode_histogram(&self.histogram),
            min: self.min,
            max: self.max,
        }
    }

    pub fn min_or_zero(&self) -> f64 {
        if self.count() == 0 {
            0.0
        } else {
            self.min
        }
    }

    pub fn max_or_zero(&self) -> f64 {
        if self.count() == 0 {
            0.0
        } else {
            self.max
        }
    }
}

/// A histogram in the standard V2 + DEFLATE encoding, base64.
pub fn encode_histogram(histogram: &Histogram<u64>) -> String {
    use base64::Engine;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(histogram, &mut bytes)
        .expect("serializing into memory cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One second's trend in a mergeable form: the histogram encoded
/// ([`encode_histogram`]) and the exact extremes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EncodedTrend {
    pub histogram: String,
    pub min: f64,
    pub max: f64,
}

/// The trends of one second the report charts, in mergeable form: what a
/// shard keeps so that `loadgen merge` gets exact per-second percentiles.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SecondTrends {
    /// `http_req_duration` per endpoint.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub response_time: BTreeMap<String, EncodedTrend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_e2e: Option<EncodedTrend>,
}

impl Default for TrendValues {
    fn default() -> Self {
        Self::new()
    }
}

/// One metric, or a sub-metric when `tags` is not empty.
#[derive(Clone, Debug)]
pub struct MetricSnapshot {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub metric_type: MetricType,
    pub contains: ValueType,
    pub values: Values,
}

impl MetricSnapshot {
    /// `name` or `name{k:v,...}` as k6 prints sub-metrics.
    pub fn key(&self) -> String {
        metric_key(&self.name, &self.tags)
    }

    /// A metric for unit tests, its type that of `values`.
    #[cfg(test)]
    pub fn of(
        name: &str,
        tags: &[(&str, &str)],
        contains: ValueType,
        values: Values,
    ) -> MetricSnapshot {
        let metric_type = match values {
            Values::Counter { .. } => MetricType::Counter,
            Values::Gauge { .. } => MetricType::Gauge,
            Values::Rate { .. } => MetricType::Rate,
            Values::Trend(_) => MetricType::Trend,
        };
        MetricSnapshot {
            name: name.to_string(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metric_type,
            contains,
            values,
        }
    }
}

/// `name` or `name{k:v,k2:v2}` (tags sorted), the form k6 uses in
/// threshold definitions and in the summary.
pub fn metric_key(name: &str, tags: &BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return name.to_string();
    }
    let inner: Vec<String> = tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// A named check's tallies (`✓ login successful`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckTally {
    pub name: String,
    pub passes: u64,
    pub fails: u64,
}

/// The result of one threshold expression on one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdOutcome {
    /// `http_req_duration` or `http_req_duration{endpoint:seedream4}`.
    pub metric_key: String,
    /// The expression as written, e.g. `p(95)<30000`.
    pub expression: String,
    /// The value the expression's aggregate had.
    pub observed: f64,
    pub ok: bool,
}

/// Everything a report needs about the run's totals.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Wall time of the test (from the first VU start to the end).
    pub elapsed: Duration,
    /// Metrics and sub-metrics, sorted by key.
    pub metrics: Vec<MetricSnapshot>,
    /// Checks in the order they were first seen.
    pub checks: Vec<CheckTally>,
    pub thresholds: Vec<ThresholdOutcome>,
}

impl Snapshot {
    pub fn metric(&self, key: &str) -> Option<&MetricSnapshot> {
        self.metrics.iter().find(|m| m.key() == key)
    }

    /// `count` per second of the run, k6's counter `rate`; 0 for a
    /// zero-length run.
    pub fn per_second(&self, count: f64) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            count / seconds
        } else {
            0.0
        }
    }
}
