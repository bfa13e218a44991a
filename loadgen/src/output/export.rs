//! `--summary-export FILE`: k6's legacy summary-export JSON, so scripts that
//! read k6's file (`.metrics.http_req_duration["p(95)"]`) read ours.
//!
//! Layout, as k6 writes it:
//! - `metrics`: one object per metric or sub-metric key, holding its values
//!   directly: counters `count`, `rate` (per second); gauges `value`, `min`,
//!   `max`; rates `passes`, `fails`, `value` (the ratio); trends `avg`,
//!   `min`, `med`, `max`, `p(90)`, `p(95)` or, as k6 does, the stats of
//!   `--summary-trend-stats` (`count` included).
//! - `thresholds` inside a metric: expression → **`true` when the threshold
//!   FAILED**. That inversion is k6's documented legacy quirk
//!   (grafana/k6#1498), kept for compatibility with existing tooling.
//! - `root_group`: `name`, `path`, `groups` and `checks` by name, each with
//!   `name`, `path` (`::name`), `passes`, `fails`. k6 also writes an `id`
//!   (an MD5 of the path) on groups and checks; loadgen leaves it out.
//!
//! Written with 4-space indentation like k6's `JSON.stringify(…, null, 4)`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::output::summary::TrendStat;
use crate::snapshot::{Snapshot, Values};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryExport {
    pub root_group: ExportedGroup,
    pub metrics: BTreeMap<String, ExportedMetric>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedGroup {
    pub name: String,
    pub path: String,
    pub groups: BTreeMap<String, ExportedGroup>,
    pub checks: BTreeMap<String, ExportedCheck>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedCheck {
    pub name: String,
    pub path: String,
    pub passes: u64,
    pub fails: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportedMetric {
    /// `count`, `rate`, `value`, `p(95)`… by name.
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
    /// Expression → `true` when it failed (k6's legacy meaning).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub thresholds: BTreeMap<String, bool>,
}

impl SummaryExport {
    /// The export of `snapshot`, each trend with the stats `trend_stats`.
    pub fn from_snapshot(snapshot: &Snapshot, trend_stats: &[TrendStat]) -> Self {
        let metrics = snapshot
            .metrics
            .iter()
            .map(|metric| {
                let key = metric.key();
                let thresholds = snapshot
                    .thresholds
                    .iter()
                    .filter(|outcome| outcome.metric_key == key)
                    .map(|outcome| (outcome.expression.clone(), !outcome.ok))
                    .collect();
                let exported = ExportedMetric {
                    values: values(&metric.values, snapshot, trend_stats),
                    thresholds,
                };
                (key, exported)
            })
            .collect();
        let checks = snapshot
            .checks
            .iter()
            .map(|check| {
                let exported = ExportedCheck {
                    name: check.name.clone(),
                    path: format!("::{}", check.name),
                    passes: check.passes,
                    fails: check.fails,
                };
                (check.name.clone(), exported)
            })
            .collect();
        SummaryExport {
            root_group: ExportedGroup {
                name: String::new(),
                path: String::new(),
                groups: BTreeMap::new(),
                checks,
            },
            metrics,
        }
    }
}

fn values(
    values: &Values,
    snapshot: &Snapshot,
    trend_stats: &[TrendStat],
) -> BTreeMap<String, f64> {
    let pairs: Vec<(&str, f64)> = match values {
        Values::Trend(trend) => {
            return trend_stats
                .iter()
                .map(|stat| (stat.label(), stat.value(trend)))
                .collect()
        }
        Values::Counter { count } => vec![("count", *count), ("rate", snapshot.per_second(*count))],
        Values::Gauge { value, min, max } => vec![("value", *value), ("min", *min), ("max", *max)],
        Values::Rate { passes, fails } => {
            let ratio = match passes + fails {
                0 => 0.0,
                total => *passes as f64 / total as f64,
            };
            vec![
                ("passes", *passes as f64),
                ("fails", *fails as f64),
                ("value", ratio),
            ]
        }
    };
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

pub fn to_json(snapshot: &Snapshot, trend_stats: &[TrendStat]) -> serde_json::Value {
    let mut value = serde_json::to_value(SummaryExport::from_snapshot(snapshot, trend_stats))
        .expect("a summary export is plain maps, strings and numbers");
    integers_without_fraction(&mut value);
    value
}

/// k6 writes its export with JavaScript's `JSON.stringify`, where `10.0` is
/// `10`; serde_json would write `10.0`.
fn integers_without_fraction(value: &mut serde_json::Value) {
    const EXACT_INTEGER_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        serde_json::Value::Number(number) => {
            if let Some(float) = number.as_f64() {
                if float.fract() == 0.0 && float.abs() < EXACT_INTEGER_LIMIT {
                    *number = serde_json::Number::from(float as i64);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integers_without_fraction),
        serde_json::Value::Object(entries) => {
            entries.values_mut().for_each(integers_without_fraction)
        }
        _ => {}
    }
}

/// Reads a summary export back (ours or k6's; k6's extra `id` fields are
/// ignored).
pub fn from_json(value: serde_json::Value) -> Result<SummaryExport, serde_json::Error> {
    serde_json::from_value(value)
}

/// Writes the export as k6 does, indented by 4 spaces, with a final newline.
pub fn write(
    snapshot: &Snapshot,
    trend_stats: &[TrendStat],
    mut writer: impl Write,
) -> io::Result<()> {
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut writer, formatter);
    to_json(snapshot, trend_stats)
        .serialize(&mut serializer)
        .map_err(io::Error::other)?;
    writer.write_all(b"\n")?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::output::summary::DEFAULT_TREND_STATS;
    use crate::snapshot::{CheckTally, MetricSnapshot, ThresholdOutcome, TrendValues, ValueType};

    fn snapshot() -> Snapshot {
        let mut durations = TrendValues::new();
        // Below 2.048 ms the HDR histogram (µs, 3 digits) is exact.
        (1..=20).for_each(|tenths| durations.record(f64::from(tenths) / 10.0));
        let mut seedream = TrendValues::new();
        seedream.record(1.5);
        Snapshot {
            elapsed: Duration::from_secs(4),
            metrics: vec![
                MetricSnapshot::of(
                    "errors",
                    &[],
                    ValueType::Default,
                    Values::Rate {
                        passes: 1,
                        fails: 3,
                    },
                ),
                MetricSnapshot::of(
                    "http_req_duration",
                    &[],
                    ValueType::Default,
                    Values::Trend(durations),
                ),
                MetricSnapshot::of(
                    "http_req_duration",
                    &[("endpoint", "seedream4")],
                    ValueType::Default,
                    Values::Trend(seedream),
                ),
                MetricSnapshot::of(
                    "iterations",
                    &[],
                    ValueType::Default,
                    Values::Counter { count: 10.0 },
                ),
                MetricSnapshot::of(
                    "vus",
                    &[],
                    ValueType::Default,
                    Values::Gauge {
                        value: 2.0,
                        min: 1.0,
                        max: 5.0,
                    },
                ),
            ],
            checks: vec![CheckTally {
                name: "status is 202".into(),
                passes: 3,
                fails: 1,
            }],
            thresholds: vec![
                ThresholdOutcome {
                    metric_key: "errors".into(),
                    expression: "rate<0.10".into(),
                    observed: 0.25,
                    ok: false,
                },
                ThresholdOutcome {
                    metric_key: "http_req_duration{endpoint:seedream4}".into(),
                    expression: "p(95)<30000".into(),
                    observed: 1.5,
                    ok: true,
                },
            ],
        }
    }

    #[test]
    fn k6_layout() {
        let value = to_json(&snapshot(), &DEFAULT_TREND_STATS);
        assert_eq!(
            value["metrics"]["errors"],
            json!({"passes": 1, "fails": 3, "value": 0.25, "thresholds": {"rate<0.10": true}})
        );
        assert_eq!(
            value["metrics"]["http_req_duration{endpoint:seedream4}"],
            json!({"avg": 1.5, "min": 1.5, "med": 1.5, "max": 1.5, "p(90)": 1.5, "p(95)": 1.5,
                   "thresholds": {"p(95)<30000": false}})
        );
        assert_eq!(
            value["metrics"]["iterations"],
            json!({"count": 10, "rate": 2.5})
        );
        assert_eq!(
            value["metrics"]["vus"],
            json!({"value": 2, "min": 1, "max": 5})
        );
        let trend = &value["metrics"]["http_req_duration"];
        assert!((trend["avg"].as_f64().unwrap() - 1.05).abs() < 1e-9);
        assert_eq!(trend["min"], json!(0.1));
        assert_eq!(trend["med"], json!(1));
        assert_eq!(trend["max"], json!(2));
        assert_eq!(trend["p(90)"], json!(1.8));
        assert_eq!(trend["p(95)"], json!(1.9));
        assert!(trend.get("thresholds").is_none());
        assert_eq!(
            value["root_group"],
            json!({"name": "", "path": "", "groups": {}, "checks": {
                "status is 202": {"name": "status is 202", "path": "::status is 202",
                                  "passes": 3, "fails": 1}}})
        );
    }

    #[test]
    fn trends_carry_the_summary_trend_stats_as_k6_writes_them() {
        let stats = TrendStat::parse_list("avg,p(99),p(99.9),count").unwrap();
        let value = to_json(&snapshot(), &stats);
        assert_eq!(
            value["metrics"]["http_req_duration{endpoint:seedream4}"],
            json!({"avg": 1.5, "p(99)": 1.5, "p(99.9)": 1.5, "count": 1,
                   "thresholds": {"p(95)<30000": false}})
        );
        let trend = &value["metrics"]["http_req_duration"];
        assert_eq!(trend["count"], json!(20));
        assert_eq!(trend["p(99)"], json!(2));
        assert!(trend.get("med").is_none(), "only the stats asked: {trend}");
        // Other metric types keep their values.
        assert_eq!(
            value["metrics"]["iterations"],
            json!({"count": 10, "rate": 2.5})
        );
    }

    #[test]
    fn round_trips_through_the_file() {
        let snapshot = snapshot();
        let mut file = Vec::new();
        write(&snapshot, &DEFAULT_TREND_STATS, &mut file).unwrap();
        let text = String::from_utf8(file).unwrap();
        assert!(text.starts_with("{\n    \""), "4-space indent: {text}");
        assert!(text.ends_with("}\n"));
        assert!(
            text.contains("\"count\": 10,"),
            "integers as k6 writes them: {text}"
        );

        let read = from_json(serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(
            read,
            SummaryExport::from_snapshot(&snapshot, &DEFAULT_TREND_STATS)
        );
        assert_eq!(read.metrics.len(), 5);
        assert!(read.metrics["errors"].thresholds["rate<0.10"]);
        assert_eq!(read.root_group.checks["status is 202"].fails, 1);
    }

    #[test]
    fn reads_k6_files_with_ids() {
        let k6 = json!({
            "root_group": {"name": "", "path": "", "id": "d41d8cd98f00b204e9800998ecf8427e",
                           "groups": {}, "checks": {}},
            "metrics": {"http_reqs": {"count": 3, "rate": 1.5}}
        });
        let read = from_json(k6).unwrap();
        assert_eq!(read.metrics["http_reqs"].values["rate"], 1.5);
    }
}
