//! Metric recording with k6 semantics, without a lock shared by all VUs.
//!
//! A VU records into its worker thread's shard (a thread-local handle to a
//! per-thread, per-run `Mutex` that only that thread and, once a second, the
//! aggregator touch). The aggregator ([`Collector::tick`]) merges every
//! shard into the run's totals and into a per-second time series, then
//! clears it in place: a trend's histogram (≈180 KB at 3 digits over
//! 1 µs‥1 h) is allocated once per shard, not once per second, as fresh
//! ones cost page faults that showed in loadgen's profile. The end-of-run
//! [`Snapshot`] is built from the totals, so percentiles come from merged
//! HDR histograms, exact to their precision.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{btree_map, BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::sample::Sample;
use crate::snapshot::{
    CheckTally, MetricSnapshot, MetricType, SecondTrends, Snapshot, TrendValues, ValueType, Values,
};

/// Every metric a run can emit: k6's built-ins and the scenario's own.
pub const METRICS: &[(&str, MetricType, ValueType)] = &[
    ("checks", MetricType::Rate, ValueType::Default),
    ("data_received", MetricType::Counter, ValueType::Data),
    ("data_sent", MetricType::Counter, ValueType::Data),
    (
        "dropped_iterations",
        MetricType::Counter,
        ValueType::Default,
    ),
    ("http_req_blocked", MetricType::Trend, ValueType::Time),
    ("http_req_connecting", MetricType::Trend, ValueType::Time),
    ("http_req_duration", MetricType::Trend, ValueType::Time),
    ("http_req_failed", MetricType::Rate, ValueType::Default),
    ("http_req_receiving", MetricType::Trend, ValueType::Time),
    ("http_req_sending", MetricType::Trend, ValueType::Time),
    // 0 for http:// targets, as k6.
    (
        "http_req_tls_handshaking",
        MetricType::Trend,
        ValueType::Time,
    ),
    ("http_req_waiting", MetricType::Trend, ValueType::Time),
    ("http_reqs", MetricType::Counter, ValueType::Default),
    ("iteration_duration", MetricType::Trend, ValueType::Time),
    ("iterations", MetricType::Counter, ValueType::Default),
    ("vus", MetricType::Gauge, ValueType::Default),
    ("vus_max", MetricType::Gauge, ValueType::Default),
    // The scenario's custom metrics (shared/scenario.md).
    ("errors", MetricType::Rate, ValueType::Default),
    // The k6 script's `new Trend('response_time')`: not a time trend in k6,
    // so its values (milliseconds) print as plain numbers.
    ("response_time", MetricType::Trend, ValueType::Default),
    ("generation_success", MetricType::Rate, ValueType::Default),
    ("credit_errors", MetricType::Counter, ValueType::Default),
    ("provider_errors", MetricType::Counter, ValueType::Default),
    // End-to-end generation tracking (--track-sessions).
    ("generation_e2e", MetricType::Trend, ValueType::Time),
    (
        "generation_completed",
        MetricType::Counter,
        ValueType::Default,
    ),
    ("generation_failed", MetricType::Counter, ValueType::Default),
    // `loadgen http -q`: requests that could not start on schedule.
    ("late_starts", MetricType::Counter, ValueType::Default),
    (
        "generation_timeout",
        MetricType::Counter,
        ValueType::Default,
    ),
];

pub fn definition(name: &str) -> Option<(&'static str, MetricType, ValueType)> {
    METRICS.iter().find(|(n, _, _)| *n == name).copied()
}

/// A sub-metric the thresholds refer to: a metric restricted to samples
/// carrying all of `tags`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubMetric {
    pub metric: String,
    pub tags: BTreeMap<String, String>,
}

/// Index into the metric table, plus which sub-metric (None = the metric).
type Key = (usize, Option<usize>);

fn metric_index(name: &str) -> Option<usize> {
    METRICS.iter().position(|(n, _, _)| *n == name)
}

/// One second of the run, as the report charts it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct SeriesPoint {
    pub second: u32,
    pub vus: u64,
    pub requests: u64,
    pub failed_requests: u64,
    pub credit_errors: u64,
    pub provider_errors: u64,
    pub timeouts: u64,
    pub connection_errors: u64,
    /// p50, p95, p99 of `http_req_duration` per endpoint (the `endpoint`
    /// tag, else the request's `name`), in ms.
    pub response_time: BTreeMap<String, [f64; 3]>,
    /// p50, p95, p99 of `generation_e2e` finished in this second, in ms.
    pub generation_e2e: Option<[f64; 3]>,
    /// This second's histograms behind those percentiles, kept only for
    /// `--shard-out` ([`Collector::keep_second_trends`]).
    #[serde(skip)]
    pub trends: Option<SecondTrends>,
}

#[derive(Default)]
struct SecondDelta {
    requests: u64,
    failed_requests: u64,
    credit_errors: u64,
    provider_errors: u64,
    timeouts: u64,
    connection_errors: u64,
    response_time: HashMap<String, TrendValues>,
    generation_e2e: Option<TrendValues>,
}

impl SecondDelta {
    fn merge(&mut self, other: SecondDelta) {
        self.requests += other.requests;
        self.failed_requests += other.failed_requests;
        self.credit_errors += other.credit_errors;
        self.provider_errors += other.provider_errors;
        self.timeouts += other.timeouts;
        self.connection_errors += other.connection_errors;
        for (endpoint, trend) in other.response_time {
            self.response_time
                .entry(endpoint)
                .or_default()
                .merge(&trend);
        }
        if let Some(e2e) = other.generation_e2e {
            self.generation_e2e
                .get_or_insert_with(TrendValues::new)
                .merge(&e2e);
        }
    }

    fn point(&self, second: u32, vus: u64, keep_trends: bool) -> SeriesPoint {
        let p = TrendValues::chart_percentiles;
        SeriesPoint {
            second,
            vus,
            requests: self.requests,
            failed_requests: self.failed_requests,
            credit_errors: self.credit_errors,
            provider_errors: self.provider_errors,
            timeouts: self.timeouts,
            connection_errors: self.connection_errors,
            response_time: self
                .response_time
                .iter()
                .map(|(k, t)| (k.clone(), p(t)))
                .collect(),
            generation_e2e: self.generation_e2e.as_ref().map(p),
            trends: keep_trends.then(|| SecondTrends {
                response_time: self
                    .response_time
                    .iter()
                    .map(|(k, t)| (k.clone(), t.encoded()))
                    .collect(),
                generation_e2e: self.generation_e2e.as_ref().map(TrendValues::encoded),
            }),
        }
    }
}

struct Shard {
    /// By [`Collector::slot`]; `None` until the slot's first sample.
    values: Vec<Option<Values>>,
    checks: Vec<CheckTally>,
    seconds: BTreeMap<u32, SecondDelta>,
    samples: Vec<Sample>,
}

impl Shard {
    fn new(slots: usize) -> Shard {
        Shard {
            values: (0..slots).map(|_| None).collect(),
            checks: Vec::new(),
            seconds: BTreeMap::new(),
            samples: Vec::new(),
        }
    }
}

fn empty_values(metric_type: MetricType) -> Values {
    match metric_type {
        MetricType::Counter => Values::Counter { count: 0.0 },
        MetricType::Gauge => Values::Gauge {
            value: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        },
        MetricType::Rate => Values::Rate {
            passes: 0,
            fails: 0,
        },
        MetricType::Trend => Values::Trend(TrendValues::new()),
    }
}

fn add_value(values: &mut Values, value: f64) {
    match values {
        Values::Counter { count } => *count += value,
        Values::Gauge { value: v, min, max } => {
            *v = value;
            *min = min.min(value);
            *max = max.max(value);
        }
        Values::Rate { passes, fails } => {
            if value != 0.0 {
                *passes += 1
            } else {
                *fails += 1
            }
        }
        Values::Trend(trend) => trend.record(value),
    }
}

/// Back to no samples, keeping the histogram's allocation.
fn clear_values(values: &mut Values) {
    match values {
        Values::Counter { count } => *count = 0.0,
        Values::Rate { passes, fails } => {
            *passes = 0;
            *fails = 0;
        }
        Values::Gauge { .. } => *values = empty_values(MetricType::Gauge),
        Values::Trend(trend) => trend.clear(),
    }
}

fn merge_values(into: &mut Values, from: &Values) {
    match (into, from) {
        (Values::Counter { count }, Values::Counter { count: c }) => *count += c,
        (
            Values::Rate { passes, fails },
            Values::Rate {
                passes: p,
                fails: f,
            },
        ) => {
            *passes += p;
            *fails += f;
        }
        (Values::Trend(a), Values::Trend(b)) => a.merge(b),
        (
            Values::Gauge { value, min, max },
            Values::Gauge {
                value: v,
                min: lo,
                max: hi,
            },
            // A cleared gauge (min > max) has no value to pass on.
        ) if lo <= hi => {
            *value = *v;
            *min = min.min(*lo);
            *max = max.max(*hi);
        }
        _ => {}
    }
}

fn merge_checks(into: &mut Vec<CheckTally>, from: &[CheckTally]) {
    for check in from {
        match into.iter_mut().find(|c| c.name == check.name) {
            Some(c) => {
                c.passes += check.passes;
                c.fails += check.fails;
            }
            None => into.push(check.clone()),
        }
    }
}

#[derive(Default)]
struct Totals {
    values: HashMap<Key, Values>,
    checks: Vec<CheckTally>,
    open_seconds: BTreeMap<u32, SecondDelta>,
    vus_by_second: BTreeMap<u32, u64>,
    series: Vec<SeriesPoint>,
}

thread_local! {
    /// This thread's shard of each live collector, by collector id (one,
    /// except in tests that run collectors side by side).
    static SHARDS: RefCell<Vec<(u64, Arc<Mutex<Shard>>)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_COLLECTOR: AtomicU64 = AtomicU64::new(1);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard loses nothing worth stopping for.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

tokio::task_local! {
    /// The VU's `--api-base` when a run has several: a `target` tag on
    /// every sample recorded within it.
    pub static TARGET: Arc<str>;
}

/// `tags` plus the VU's `target` tag when the run has several targets.
fn with_target_tag<R>(
    tags: &[(&'static str, &str)],
    f: impl FnOnce(&[(&'static str, &str)]) -> R,
) -> R {
    match TARGET.try_with(Arc::clone) {
        Ok(target) => {
            let with_target: Vec<(&'static str, &str)> =
                tags.iter().copied().chain([("target", &*target)]).collect();
            f(&with_target)
        }
        Err(_) => f(tags),
    }
}

/// The recorder and aggregator of one run.
pub struct Collector {
    id: u64,
    shards: Mutex<Vec<Arc<Mutex<Shard>>>>,
    sub_metrics: Vec<SubMetric>,
    /// Per metric index, the sub-metrics of that metric.
    subs_of: Vec<Vec<usize>>,
    keep_samples: bool,
    started: Instant,
    pub started_wall: SystemTime,
    vus: AtomicU64,
    vus_max: AtomicU64,
    keep_second_trends: AtomicBool,
    totals: Mutex<Totals>,
}

impl Collector {
    pub fn new(sub_metrics: Vec<SubMetric>, keep_samples: bool) -> Arc<Collector> {
        let subs_of = METRICS
            .iter()
            .map(|(name, _, _)| {
                (0..sub_metrics.len())
                    .filter(|&i| sub_metrics[i].metric == *name)
                    .collect()
            })
            .collect();
        Arc::new(Collector {
            id: NEXT_COLLECTOR.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::new(Vec::new()),
            sub_metrics,
            subs_of,
            keep_samples,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            vus: AtomicU64::new(0),
            vus_max: AtomicU64::new(0),
            keep_second_trends: AtomicBool::new(false),
            totals: Mutex::new(Totals::default()),
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn vu_started(&self) {
        self.vus.fetch_add(1, Ordering::Relaxed);
    }

    pub fn vu_stopped(&self) {
        self.vus.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn active_vus(&self) -> u64 {
        self.vus.load(Ordering::Relaxed)
    }

    /// Keeps each second's histograms in the series (for `--shard-out`).
    pub fn keep_second_trends(&self) {
        self.keep_second_trends.store(true, Ordering::Relaxed);
    }

    pub fn vus_max(&self) -> u64 {
        self.vus_max.load(Ordering::Relaxed)
    }

    pub fn set_vus_max(&self, n: u64) {
        self.vus_max.fetch_max(n, Ordering::Relaxed);
    }

    fn with_shard(&self, f: impl FnOnce(&mut Shard)) {
        SHARDS.with(|shards| {
            let mut shards = shards.borrow_mut();
            let index = match shards.iter().position(|(id, _)| *id == self.id) {
                Some(index) => index,
                None => {
                    // Shards of collectors that are gone are held only here.
                    shards.retain(|(_, shard)| Arc::strong_count(shard) > 1);
                    let shard = Arc::new(Mutex::new(Shard::new(
                        METRICS.len() * self.slots_per_metric(),
                    )));
                    lock(&self.shards).push(shard.clone());
                    shards.push((self.id, shard));
                    shards.len() - 1
                }
            };
            f(&mut lock(&shards[index].1));
        });
    }

    fn slots_per_metric(&self) -> usize {
        self.sub_metrics.len() + 1
    }

    /// A metric's place in a shard's table, then each of its sub-metrics'.
    fn slot(&self, (index, sub): Key) -> usize {
        index * self.slots_per_metric() + sub.map_or(0, |i| i + 1)
    }

    fn key_of(&self, slot: usize) -> Key {
        let per_metric = self.slots_per_metric();
        (slot / per_metric, (slot % per_metric).checked_sub(1))
    }

    fn second_now(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// Records one value of `metric` with its tags.
    pub fn add(&self, metric: &'static str, value: f64, tags: &[(&'static str, &str)]) {
        self.add_all(&[(metric, value)], tags);
    }

    /// Records values of several metrics that share their tags, taking the
    /// shard once.
    pub fn add_all(&self, values: &[(&'static str, f64)], tags: &[(&'static str, &str)]) {
        let second = self.second_now();
        with_target_tag(tags, |tags| {
            self.with_shard(|shard| {
                for &(metric, value) in values {
                    self.record(shard, second, metric, value, tags);
                }
            });
        });
    }

    /// Records one value; `tags` include the VU's `target` tag.
    fn record(
        &self,
        shard: &mut Shard,
        second: u32,
        metric: &'static str,
        value: f64,
        tags: &[(&'static str, &str)],
    ) {
        let Some(index) = metric_index(metric) else {
            return;
        };
        let (_, metric_type, contains) = METRICS[index];
        let mut add = |key: Key| {
            add_value(
                shard.values[self.slot(key)].get_or_insert_with(|| empty_values(metric_type)),
                value,
            )
        };
        add((index, None));
        for &i in &self.subs_of[index] {
            let matches = self.sub_metrics[i]
                .tags
                .iter()
                .all(|(k, v)| tags.iter().any(|(tk, tv)| tk == k && tv == v));
            if matches {
                add((index, Some(i)));
            }
        }
        let delta = shard.seconds.entry(second).or_default();
        let tag = |name: &str| tags.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        match metric {
            "http_reqs" => delta.requests += value as u64,
            "http_req_failed" if value != 0.0 => {
                delta.failed_requests += 1;
                match tag("error") {
                    Some("timeout") => delta.timeouts += 1,
                    Some(_) => delta.connection_errors += 1,
                    None => {}
                }
            }
            "http_req_duration" => {
                let endpoint = tag("endpoint").or(tag("name")).unwrap_or("other");
                match delta.response_time.get_mut(endpoint) {
                    Some(trend) => trend.record(value),
                    None => delta
                        .response_time
                        .entry(endpoint.to_string())
                        .or_default()
                        .record(value),
                }
            }
            "credit_errors" => delta.credit_errors += value as u64,
            "provider_errors" => delta.provider_errors += value as u64,
            "generation_e2e" => delta
                .generation_e2e
                .get_or_insert_with(TrendValues::new)
                .record(value),
            _ => {}
        }
        if self.keep_samples {
            shard.samples.push(Sample {
                metric,
                metric_type,
                contains,
                time: SystemTime::now(),
                value,
                tags: tags.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
            });
        }
    }

    /// Records a named check (`✓ status is 202`) and the `checks` rate.
    pub fn check(&self, name: &'static str, ok: bool) {
        let second = self.second_now();
        self.with_shard(|shard| {
            match shard.checks.iter_mut().find(|c| c.name == name) {
                Some(c) if ok => c.passes += 1,
                Some(c) => c.fails += 1,
                None => shard.checks.push(CheckTally {
                    name: name.to_string(),
                    passes: u64::from(ok),
                    fails: u64::from(!ok),
                }),
            }
            let value = if ok { 1.0 } else { 0.0 };
            with_target_tag(&[("check", name)], |tags| {
                self.record(shard, second, "checks", value, tags);
            });
        });
    }

    /// Merges every shard into the totals and returns the raw samples
    /// recorded since the last tick (for streaming outputs). Seconds older
    /// than the current one are closed into the time series.
    pub fn tick(&self) -> Vec<Sample> {
        let shards: Vec<Arc<Mutex<Shard>>> = lock(&self.shards).clone();
        let mut samples = Vec::new();
        let mut totals = lock(&self.totals);
        let now_second = self.second_now();
        let vus = self.active_vus();
        totals.vus_by_second.insert(now_second, vus);
        for (index, value) in [
            (metric_index("vus"), vus as f64),
            (
                metric_index("vus_max"),
                self.vus_max.load(Ordering::Relaxed) as f64,
            ),
        ] {
            if let Some(index) = index {
                add_value(
                    totals
                        .values
                        .entry((index, None))
                        .or_insert_with(|| empty_values(MetricType::Gauge)),
                    value,
                );
            }
        }
        for shard in shards {
            let mut shard = lock(&shard);
            for (slot, values) in shard.values.iter_mut().enumerate() {
                let Some(values) = values else { continue };
                match totals.values.entry(self.key_of(slot)) {
                    Entry::Occupied(mut existing) => merge_values(existing.get_mut(), values),
                    Entry::Vacant(vacant) => {
                        vacant.insert(values.clone());
                    }
                }
                clear_values(values);
            }
            merge_checks(&mut totals.checks, &shard.checks);
            for check in &mut shard.checks {
                check.passes = 0;
                check.fails = 0;
            }
            samples.append(&mut shard.samples);
            let seconds = std::mem::take(&mut shard.seconds);
            drop(shard);
            for (second, delta) in seconds {
                match totals.open_seconds.entry(second) {
                    btree_map::Entry::Occupied(mut open) => open.get_mut().merge(delta),
                    btree_map::Entry::Vacant(vacant) => {
                        vacant.insert(delta);
                    }
                }
            }
        }
        self.close_seconds(&mut totals, now_second);
        samples.sort_by_key(|s| s.time);
        samples
    }

    fn close_seconds(&self, totals: &mut Totals, before: u32) {
        let closing: Vec<u32> = totals
            .open_seconds
            .keys()
            .copied()
            .filter(|s| *s < before)
            .collect();
        for second in closing {
            if let Some(delta) = totals.open_seconds.remove(&second) {
                let vus = totals
                    .vus_by_second
                    .range(..=second)
                    .next_back()
                    .map_or(0, |(_, v)| *v);
                let point =
                    delta.point(second, vus, self.keep_second_trends.load(Ordering::Relaxed));
                totals.series.push(point);
            }
        }
    }

    /// A metric's totals so far (call [`tick`](Self::tick) first): a cheap
    /// look at one counter or rate, where a [`snapshot`](Self::snapshot)
    /// would copy every histogram.
    pub fn totals_of(&self, metric: &str) -> Option<Values> {
        let index = metric_index(metric)?;
        lock(&self.totals).values.get(&(index, None)).cloned()
    }

    /// The totals so far (call [`tick`](Self::tick) first).
    pub fn snapshot(&self, elapsed: Duration) -> Snapshot {
        let totals = lock(&self.totals);
        let mut metrics: Vec<MetricSnapshot> = totals
            .values
            .iter()
            .map(|(&(index, sub), values)| {
                let (name, metric_type, contains) = METRICS[index];
                MetricSnapshot {
                    name: name.to_string(),
                    tags: sub
                        .map(|i| self.sub_metrics[i].tags.clone())
                        .unwrap_or_default(),
                    metric_type,
                    contains,
                    values: values.clone(),
                }
            })
            .collect();
        // Sub-metrics with no sample yet still exist (k6 shows them).
        for sub in &self.sub_metrics {
            if let Some(index) = metric_index(&sub.metric) {
                let i = self.sub_metrics.iter().position(|s| s == sub);
                if !totals.values.contains_key(&(index, i)) {
                    let (name, metric_type, contains) = METRICS[index];
                    metrics.push(MetricSnapshot {
                        name: name.to_string(),
                        tags: sub.tags.clone(),
                        metric_type,
                        contains,
                        values: empty_values(metric_type),
                    });
                }
            }
        }
        metrics.sort_by_key(|m| m.key());
        Snapshot {
            elapsed,
            metrics,
            checks: totals.checks.clone(),
            thresholds: Vec::new(),
        }
    }

    /// The per-second series, including the still-open last seconds.
    pub fn series(&self) -> Vec<SeriesPoint> {
        let mut totals = lock(&self.totals);
        self.close_seconds(&mut totals, u32::MAX);
        totals.series.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_many_threads_and_merges() {
        let sub = SubMetric {
            metric: "http_req_duration".into(),
            tags: [("endpoint".to_string(), "seedream4".to_string())].into(),
        };
        let collector = Collector::new(vec![sub], false);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let collector = &collector;
                scope.spawn(move || {
                    for i in 0..250 {
                        let endpoint = if i % 2 == 0 { "seedream4" } else { "login" };
                        collector.add(
                            "http_req_duration",
                            f64::from(t * 250 + i),
                            &[("endpoint", endpoint)],
                        );
                        collector.add("http_reqs", 1.0, &[]);
                        collector.check("status is 202", i % 10 != 0);
                    }
                });
            }
        });
        collector.tick();
        let snap = collector.snapshot(Duration::from_secs(1));
        let Values::Trend(t) = &snap.metric("http_req_duration").unwrap().values else {
            panic!("not a trend")
        };
        assert_eq!(t.count(), 1000);
        assert_eq!(t.max, 999.0);
        let Values::Trend(sub) = &snap
            .metric("http_req_duration{endpoint:seedream4}")
            .unwrap()
            .values
        else {
            panic!("not a trend")
        };
        assert_eq!(sub.count(), 500);
        let Values::Counter { count } = snap.metric("http_reqs").unwrap().values else {
            panic!("not a counter")
        };
        assert_eq!(count, 1000.0);
        assert_eq!(
            snap.checks,
            vec![CheckTally {
                name: "status is 202".into(),
                passes: 900,
                fails: 100
            }]
        );
        let series = collector.series();
        assert_eq!(series.iter().map(|p| p.requests).sum::<u64>(), 1000);
    }
}
