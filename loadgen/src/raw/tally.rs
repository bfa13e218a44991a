//! A raw run's metrics: each engine thread records into its own [`Tally`]
//! (one uncontended lock per request, no per-request allocation unless
//! `--out` wants every sample); the aggregator merges them once a second
//! and at the end, into the [`Snapshot`] the outputs read.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::metrics::{definition, SeriesPoint};
use crate::sample::Sample;
use crate::snapshot::{MetricSnapshot, MetricType, Snapshot, TrendValues, ValueType, Values};

/// Requests counted per answer status, and failures per kind (the `error`
/// tag's value).
#[derive(Default)]
pub struct Tally {
    pub duration: TrendValues,
    pub connecting: TrendValues,
    pub requests: u64,
    /// k6's `http_req_failed`: no answer, or a status of 400 and above.
    pub failed: u64,
    pub statuses: Vec<(u16, u64)>,
    pub errors: Vec<(&'static str, u64)>,
    pub sent: u64,
    pub received: u64,
    /// Open model: requests that started more than [`LATE`] after their
    /// scheduled start (no connection was free in time).
    pub late_starts: u64,
    /// Every sample, only when a streaming output asks for them.
    pub samples: Vec<Sample>,
}

/// How late a start may be before it counts as late: the timer's grain.
pub const LATE: Duration = Duration::from_millis(1);

/// What one request came to.
pub struct Outcome {
    /// The status, or why there was no answer.
    pub answer: Result<u16, &'static str>,
    /// From the (scheduled, in the open model) start to the last byte.
    pub duration: Duration,
    pub sent: u64,
    pub received: u64,
}

fn bump<K: PartialEq>(counts: &mut Vec<(K, u64)>, key: K, by: u64) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n += by,
        None => counts.push((key, by)),
    }
}

fn sample(metric: &'static str, value: f64, tags: &[(&'static str, String)]) -> Sample {
    let (_, metric_type, contains) = definition(metric).expect("a built-in metric");
    Sample {
        metric,
        metric_type,
        contains,
        time: SystemTime::now(),
        value,
        tags: tags.to_vec(),
    }
}

impl Tally {
    pub fn record(&mut self, outcome: &Outcome, sample_tags: Option<&[(&'static str, String)]>) {
        let ms = outcome.duration.as_secs_f64() * 1000.0;
        self.requests += 1;
        self.duration.record(ms);
        self.sent += outcome.sent;
        self.received += outcome.received;
        let failed = match outcome.answer {
            Ok(status) => {
                bump(&mut self.statuses, status, 1);
                status >= 400
            }
            Err(kind) => {
                bump(&mut self.errors, kind, 1);
                true
            }
        };
        self.failed += u64::from(failed);
        if let Some(base) = sample_tags {
            let mut tags = base.to_vec();
            match outcome.answer {
                Ok(status) => tags.push(("status", status.to_string())),
                Err(kind) => {
                    tags.push(("status", "0".to_string()));
                    tags.push(("error", kind.to_string()));
                }
            }
            for (metric, value) in [
                ("http_reqs", 1.0),
                ("http_req_duration", ms),
                ("http_req_failed", f64::from(u8::from(failed))),
                ("data_sent", outcome.sent as f64),
                ("data_received", outcome.received as f64),
            ] {
                self.samples.push(sample(metric, value, &tags));
            }
        }
    }

    pub fn connected(&mut self, took: Duration) {
        self.connecting.record(took.as_secs_f64() * 1000.0);
    }

    pub fn merge(&mut self, other: &Tally) {
        self.duration.merge(&other.duration);
        self.connecting.merge(&other.connecting);
        self.requests += other.requests;
        self.failed += other.failed;
        for &(status, n) in &other.statuses {
            bump(&mut self.statuses, status, n);
        }
        for &(kind, n) in &other.errors {
            bump(&mut self.errors, kind, n);
        }
        self.sent += other.sent;
        self.received += other.received;
        self.late_starts += other.late_starts;
    }

    /// Back to nothing recorded, the histograms' buckets kept; the samples
    /// are handed over.
    pub fn take_samples_and_clear(&mut self) -> Vec<Sample> {
        self.duration.clear();
        self.connecting.clear();
        self.requests = 0;
        self.failed = 0;
        self.statuses.clear();
        self.errors.clear();
        self.sent = 0;
        self.received = 0;
        self.late_starts = 0;
        std::mem::take(&mut self.samples)
    }

    /// One second of the report's charts.
    pub fn series_point(&self, second: u32, connections: u64, url: &str) -> SeriesPoint {
        let d = &self.duration;
        let timeouts = self
            .errors
            .iter()
            .filter(|(kind, _)| *kind == "timeout")
            .map(|(_, n)| n)
            .sum::<u64>();
        let errors = self.errors.iter().map(|(_, n)| n).sum::<u64>();
        SeriesPoint {
            second,
            vus: connections,
            requests: self.requests,
            failed_requests: self.failed,
            timeouts,
            connection_errors: errors - timeouts,
            response_time: if self.requests > 0 {
                BTreeMap::from([(
                    url.to_string(),
                    [d.percentile(50.0), d.percentile(95.0), d.percentile(99.0)],
                )])
            } else {
                BTreeMap::new()
            },
            ..SeriesPoint::default()
        }
    }

    /// The totals as k6 metrics: the built-ins a request produces, plus
    /// `http_reqs{status:N}` per status and `http_reqs{error:KIND}` per
    /// kind of failure, and `late_starts` in the open model.
    pub fn snapshot(&self, elapsed: Duration, connections: u64, open_model: bool) -> Snapshot {
        let metric = |name: &str, tags: &[(&str, String)], values: Values| {
            let (name, metric_type, contains) = definition(name).expect("a built-in metric");
            MetricSnapshot {
                name: name.to_string(),
                tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
                metric_type,
                contains,
                values,
            }
        };
        let count = |n: u64| Values::Counter { count: n as f64 };
        let gauge = Values::Gauge {
            value: connections as f64,
            min: connections as f64,
            max: connections as f64,
        };
        let mut metrics = vec![
            metric("data_received", &[], count(self.received)),
            metric("data_sent", &[], count(self.sent)),
            metric(
                "http_req_duration",
                &[],
                Values::Trend(self.duration.clone()),
            ),
            metric(
                "http_req_failed",
                &[],
                Values::Rate {
                    passes: self.failed,
                    fails: self.requests - self.failed,
                },
            ),
            metric("http_reqs", &[], count(self.requests)),
            metric("vus", &[], gauge.clone()),
            metric("vus_max", &[], gauge),
        ];
        if self.connecting.count() > 0 {
            metrics.push(metric(
                "http_req_connecting",
                &[],
                Values::Trend(self.connecting.clone()),
            ));
        }
        for &(status, n) in &self.statuses {
            metrics.push(metric(
                "http_reqs",
                &[("status", status.to_string())],
                count(n),
            ));
        }
        for &(kind, n) in &self.errors {
            metrics.push(metric(
                "http_reqs",
                &[("error", kind.to_string())],
                count(n),
            ));
        }
        if open_model {
            metrics.push(metric("late_starts", &[], count(self.late_starts)));
        }
        debug_assert!(metrics
            .iter()
            .all(|m| m.metric_type != MetricType::Trend || m.contains == ValueType::Time));
        metrics.sort_by_key(|m| m.key());
        Snapshot {
            elapsed,
            metrics,
            checks: Vec::new(),
            thresholds: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(answer: Result<u16, &'static str>, ms: u64) -> Outcome {
        Outcome {
            answer,
            duration: Duration::from_millis(ms),
            sent: 10,
            received: 100,
        }
    }

    #[test]
    fn counts_statuses_and_errors_by_kind_and_merges() {
        let mut a = Tally::default();
        a.record(&outcome(Ok(200), 5), None);
        a.record(&outcome(Ok(503), 7), None);
        let mut b = Tally::default();
        b.record(&outcome(Ok(200), 9), None);
        b.record(&outcome(Err("connection refused"), 1), None);
        b.late_starts = 3;
        a.merge(&b);
        assert_eq!(a.statuses, vec![(200, 2), (503, 1)]);
        assert_eq!(a.errors, vec![("connection refused", 1)]);
        assert_eq!((a.requests, a.failed, a.sent, a.received), (4, 2, 40, 400));
        let snap = a.snapshot(Duration::from_secs(1), 2, true);
        let count = |key: &str| match snap.metric(key).map(|m| &m.values) {
            Some(Values::Counter { count }) => *count,
            other => panic!("{key}: {other:?}"),
        };
        assert_eq!(count("http_reqs"), 4.0);
        assert_eq!(count("http_reqs{status:200}"), 2.0);
        assert_eq!(count("http_reqs{status:503}"), 1.0);
        assert_eq!(count("http_reqs{error:connection refused}"), 1.0);
        assert_eq!(count("late_starts"), 3.0);
        let Some(Values::Trend(d)) = snap.metric("http_req_duration").map(|m| &m.values) else {
            panic!("no duration")
        };
        assert_eq!((d.count(), d.max), (4, 9.0));
        b.take_samples_and_clear();
        assert_eq!((b.requests, b.duration.count(), b.late_starts), (0, 0, 0));
    }

    #[test]
    fn keeps_samples_only_when_asked() {
        let mut tally = Tally::default();
        tally.record(&outcome(Ok(200), 5), None);
        assert!(tally.samples.is_empty());
        tally.record(
            &outcome(Err("timeout"), 5),
            Some(&[("method", "GET".into())]),
        );
        let samples = tally.take_samples_and_clear();
        assert_eq!(samples.len(), 5);
        assert!(samples[0].tags.contains(&("error", "timeout".to_string())));
    }
}
