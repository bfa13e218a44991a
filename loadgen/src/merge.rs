//! `loadgen merge SHARD...`: the `--shard-out` files of one test split over
//! execution segments, added up into the results of the whole. Counters,
//! rates, checks and HDR histograms add exactly, so the merged percentiles
//! are those of one histogram of every sample, bucket for bucket; gauges
//! add second by second. The thresholds are evaluated on the whole.
//!
//! `--out json=`/`csv=` of the whole interleaves, by time, the shards' own
//! `--out json` streams (each shard names its own): every sample of every
//! instance, tags intact, in the lines and rows `run --out` writes.
//!
//! Refused (exit 104, one line): shards of different tests (test hashes),
//! of different sequences, or with overlapping segments. Segments that do
//! not cover 0..1 only warn: the merge is then of part of the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use crate::cli::MergeArgs;
use crate::exit::{self, Failure};
use crate::metrics::{definition, SeriesPoint};
use crate::output::ndjson::{NdjsonWriter, PointReader};
use crate::output::summary;
use crate::output::{export, report};
use crate::plan::{self, DefaultThresholds, OutputTarget};
use crate::run::{open_writers, Writer};
use crate::sample::Sample;
use crate::segment::{Ratio, Segment, Sequence, Tuple};
use crate::shard::{self, Shard, ShardValues};
use crate::snapshot::{
    CheckTally, EncodedTrend, MetricSnapshot, MetricType, Snapshot, TrendValues, Values,
};
use crate::thresholds::{self, ThresholdSpec};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    #[error("{0}")]
    Refused(String),
}

/// The whole test, from its shards.
pub struct Merged {
    pub snapshot: Snapshot,
    pub series: Vec<SeriesPoint>,
    pub test_hash: String,
    pub segments: Vec<Segment>,
    /// The thresholds the shards name (the same in every shard).
    pub thresholds: Vec<String>,
    pub completed_iterations: u64,
    pub interrupted_iterations: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Set when the segments leave part of 0..1 out.
    pub uncovered: Option<String>,
}

fn refuse(why: impl Into<String>) -> MergeError {
    MergeError::Refused(why.into())
}

/// Checks that the shards are parts of one test, without overlap.
fn segments_of(shards: &[(PathBuf, Shard)]) -> Result<Vec<Segment>, MergeError> {
    let (first_path, first) = &shards[0];
    let mut first_sequence: Option<Sequence> = None;
    let mut segments: Vec<(Segment, &PathBuf)> = Vec::new();
    for (path, shard) in shards {
        if shard.test_hash != first.test_hash {
            return Err(refuse(format!(
                "{} and {} are of different tests (test hashes differ)",
                first_path.display(),
                path.display()
            )));
        }
        let segment = Segment::parse(&shard.segment).map_err(|e| {
            refuse(format!(
                "{}: segment {:?}: {e}",
                path.display(),
                shard.segment
            ))
        })?;
        let sequence = Sequence::parse(&shard.sequence).map_err(|e| {
            refuse(format!(
                "{}: sequence {:?}: {e}",
                path.display(),
                shard.sequence
            ))
        })?;
        Tuple::new(segment, Some(&sequence))
            .map_err(|e| refuse(format!("{}: {e}", path.display())))?;
        if *first_sequence.get_or_insert_with(|| sequence.clone()) != sequence {
            return Err(refuse(format!(
                "{} and {} were split by different sequences ({} and {})",
                first_path.display(),
                path.display(),
                first.sequence,
                shard.sequence
            )));
        }
        if let Some((other, other_path)) = segments.iter().find(|(s, _)| s.overlaps(&segment)) {
            return Err(refuse(format!(
                "segments overlap: {other} ({}) and {segment} ({})",
                other_path.display(),
                path.display()
            )));
        }
        segments.push((segment, path));
    }
    let mut segments: Vec<Segment> = segments.into_iter().map(|(s, _)| s).collect();
    segments.sort_by_key(|s| s.from);
    Ok(segments)
}

/// None when the segments cover 0..1, else which parts they cover.
fn coverage_gap(segments: &[Segment]) -> Option<String> {
    let mut at = Ratio::ZERO;
    for segment in segments {
        if segment.from != at {
            break;
        }
        at = segment.to;
    }
    (at != Ratio::ONE).then(|| {
        segments
            .iter()
            .map(Segment::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// Sums step series: at each second, every series' last value so far.
fn sum_series(all: &[Vec<(i64, f64)>]) -> Vec<(i64, f64)> {
    let mut seconds: Vec<i64> = all.iter().flatten().map(|(s, _)| *s).collect();
    seconds.sort_unstable();
    seconds.dedup();
    seconds
        .into_iter()
        .map(|second| {
            let total = all
                .iter()
                .filter_map(|series| series.iter().take_while(|(s, _)| *s <= second).last())
                .map(|(_, v)| v)
                .sum();
            (second, total)
        })
        .collect()
}

/// One second's charted trends, added up over the shards.
#[derive(Default)]
struct ChartTrends {
    response_time: BTreeMap<String, TrendValues>,
    generation_e2e: Option<TrendValues>,
}

/// A shard's second of a trend, for its percentiles.
fn decoded(encoded: &EncodedTrend) -> Result<TrendValues, String> {
    let mut trend = shard::empty_trend();
    trend.histogram = shard::decode_histogram(&encoded.histogram)?;
    trend.min = encoded.min;
    trend.max = encoded.max;
    Ok(trend)
}

fn values_of(name: &str, values: &ShardValues) -> Result<Values, String> {
    Ok(match values {
        ShardValues::Counter { count } => Values::Counter { count: *count },
        ShardValues::Rate { passes, fails } => Values::Rate {
            passes: *passes,
            fails: *fails,
        },
        ShardValues::Trend {
            count,
            sum,
            min,
            max,
            histogram,
        } => {
            let mut trend = shard::empty_trend();
            let histogram = shard::decode_histogram(histogram)?;
            if histogram.len() != *count {
                return Err(format!(
                    "{name}: the histogram holds {} values, the count says {count}",
                    histogram.len()
                ));
            }
            if *count > 0 {
                trend.histogram = histogram;
                trend.sum = *sum;
                trend.min = *min;
                trend.max = *max;
            }
            Values::Trend(trend)
        }
        ShardValues::Gauge {
            value, min, max, ..
        } => Values::Gauge {
            value: *value,
            min: *min,
            max: *max,
        },
    })
}

fn add(total: &mut Values, part: &Values) {
    match (total, part) {
        (Values::Counter { count }, Values::Counter { count: more }) => *count += more,
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
        (Values::Trend(total), Values::Trend(part)) => total.merge(part),
        // Gauges are rebuilt from their summed series.
        _ => {}
    }
}

fn type_of(values: &ShardValues) -> MetricType {
    match values {
        ShardValues::Counter { .. } => MetricType::Counter,
        ShardValues::Rate { .. } => MetricType::Rate,
        ShardValues::Trend { .. } => MetricType::Trend,
        ShardValues::Gauge { .. } => MetricType::Gauge,
    }
}

type MetricKey = (String, BTreeMap<String, String>);

/// Adds the shards up. `shards` are (file, contents), at least one.
pub fn merge(shards: &[(PathBuf, Shard)]) -> Result<Merged, MergeError> {
    if shards.is_empty() {
        return Err(refuse("no shard to merge"));
    }
    let segments = segments_of(shards)?;
    let first = &shards[0].1;
    if let Some((path, _)) = shards
        .iter()
        .find(|(_, s)| s.thresholds != first.thresholds)
    {
        return Err(refuse(format!(
            "{} names other thresholds than {}; give them with --threshold",
            path.display(),
            shards[0].0.display()
        )));
    }
    let mut totals: BTreeMap<MetricKey, Values> = BTreeMap::new();
    let mut gauges: BTreeMap<MetricKey, Vec<Vec<(i64, f64)>>> = BTreeMap::new();
    let mut checks: Vec<CheckTally> = Vec::new();
    let mut seconds: BTreeMap<i64, SeriesPoint> = BTreeMap::new();
    let mut second_trends: BTreeMap<i64, ChartTrends> = BTreeMap::new();
    for (path, shard) in shards {
        for metric in &shard.metrics {
            let bad = |why: String| refuse(format!("{}: {why}", path.display()));
            let (_, metric_type, _) = definition(&metric.name)
                .ok_or_else(|| bad(format!("no metric named {:?} in this test", metric.name)))?;
            if metric_type != type_of(&metric.values) {
                return Err(bad(format!("{} is not a {metric_type:?}", metric.name)));
            }
            let values = values_of(&metric.name, &metric.values).map_err(bad)?;
            let key = (metric.name.clone(), metric.tags.clone());
            if let ShardValues::Gauge { series, .. } = &metric.values {
                gauges.entry(key.clone()).or_default().push(series.clone());
            }
            match totals.get_mut(&key) {
                Some(total) => add(total, &values),
                None => {
                    totals.insert(key, values);
                }
            }
        }
        for check in &shard.checks {
            match checks.iter_mut().find(|c| c.name == check.name) {
                Some(c) => {
                    c.passes += check.passes;
                    c.fails += check.fails;
                }
                None => checks.push(CheckTally {
                    name: check.name.clone(),
                    passes: check.passes,
                    fails: check.fails,
                }),
            }
        }
        for second in &shard.seconds {
            let point = seconds.entry(second.unix).or_default();
            point.requests += second.requests;
            point.failed_requests += second.failed_requests;
            point.credit_errors += second.credit_errors;
            point.provider_errors += second.provider_errors;
            point.timeouts += second.timeouts;
            point.connection_errors += second.connection_errors;
            let bad =
                |why: String| refuse(format!("{}: second {}: {why}", path.display(), second.unix));
            let trends = second_trends.entry(second.unix).or_default();
            for (endpoint, encoded) in &second.trends.response_time {
                let trend = decoded(encoded).map_err(bad)?;
                trends
                    .response_time
                    .entry(endpoint.clone())
                    .or_default()
                    .merge(&trend);
            }
            if let Some(encoded) = &second.trends.generation_e2e {
                let trend = decoded(encoded).map_err(bad)?;
                trends
                    .generation_e2e
                    .get_or_insert_with(shard::empty_trend)
                    .merge(&trend);
            }
        }
    }
    for (unix, trends) in second_trends {
        let point = seconds.entry(unix).or_default();
        point.response_time = trends
            .response_time
            .iter()
            .map(|(endpoint, t)| (endpoint.clone(), t.chart_percentiles()))
            .collect();
        point.generation_e2e = trends
            .generation_e2e
            .as_ref()
            .map(TrendValues::chart_percentiles);
    }
    let mut vus_series = Vec::new();
    for (key, series) in gauges {
        let summed = sum_series(&series);
        if key.0 == "vus" && key.1.is_empty() {
            vus_series = summed.clone();
        }
        let value = summed.last().map_or(0.0, |(_, v)| *v);
        let (min, max) = summed
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| {
                (lo.min(*v), hi.max(*v))
            });
        totals.insert(
            key,
            Values::Gauge {
                value,
                min: if summed.is_empty() { 0.0 } else { min },
                max: if summed.is_empty() { 0.0 } else { max },
            },
        );
    }
    let start = shards.iter().map(|(_, s)| s.start).min().expect("shards");
    let end = shards.iter().map(|(_, s)| s.end).max().expect("shards");
    let mut metrics: Vec<MetricSnapshot> = totals
        .into_iter()
        .map(|((name, tags), values)| {
            let (_, metric_type, contains) = definition(&name).expect("checked above");
            MetricSnapshot {
                name,
                tags,
                metric_type,
                contains,
                values,
            }
        })
        .collect();
    metrics.sort_by_key(|m| m.key());
    let start_second = start.timestamp();
    let series = seconds
        .into_iter()
        .map(|(unix, point)| SeriesPoint {
            second: u32::try_from(unix - start_second).unwrap_or(0),
            vus: vus_series
                .iter()
                .take_while(|(s, _)| *s <= unix)
                .last()
                .map_or(0, |(_, v)| *v as u64),
            ..point
        })
        .collect();
    Ok(Merged {
        snapshot: Snapshot {
            elapsed: (end - start).to_std().unwrap_or_default(),
            metrics,
            checks,
            thresholds: Vec::new(),
        },
        series,
        test_hash: first.test_hash.clone(),
        uncovered: coverage_gap(&segments),
        segments,
        thresholds: first.thresholds.clone(),
        completed_iterations: shards.iter().map(|(_, s)| s.completed_iterations).sum(),
        interrupted_iterations: shards.iter().map(|(_, s)| s.interrupted_iterations).sum(),
        start,
        end,
    })
}

/// k6 JSON lines of the totals, for shards that recorded no stream: each
/// counter as one point carrying its total at the end, each gauge as its
/// merged per-second series. Rates and trends need the samples (their
/// totals are in `--summary-export`).
fn write_totals_json(
    path: &PathBuf,
    merged: &Merged,
    specs: &[ThresholdSpec],
) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut writer = NdjsonWriter::new(std::io::BufWriter::new(file)).with_thresholds(specs);
    let at = |unix: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    let end: SystemTime = merged.end.into();
    for metric in merged.snapshot.metrics.iter().filter(|m| m.tags.is_empty()) {
        let Some((name, metric_type, contains)) = definition(&metric.name) else {
            continue;
        };
        let sample = |time, value| Sample {
            metric: name,
            metric_type,
            contains,
            time,
            value,
            tags: Vec::new(),
        };
        match &metric.values {
            Values::Counter { count } => writer.write(&sample(end, *count))?,
            Values::Gauge { value, .. } if name == "vus" => {
                for point in &merged.series {
                    let unix = merged.start.timestamp() + i64::from(point.second);
                    writer.write(&sample(at(unix), point.vus as f64))?;
                }
                if merged.series.is_empty() {
                    writer.write(&sample(end, *value))?;
                }
            }
            Values::Gauge { value, .. } => writer.write(&sample(end, *value))?,
            Values::Rate { .. } | Values::Trend(_) => {}
        }
    }
    writer.finish().map(drop)
}

/// Where `shard`'s own `--out json` stream is: the path it recorded, else
/// the file of that name beside the shard file (shards and streams copied
/// together into one directory). None when the instance wrote none.
fn stream_of(shard_path: &Path, shard: &Shard) -> Option<Result<PathBuf, MergeError>> {
    let recorded = shard.samples.as_ref()?;
    let beside = recorded
        .file_name()
        .map(|name| shard_path.with_file_name(name));
    Some(
        [Some(recorded.clone()), beside]
            .into_iter()
            .flatten()
            .find(|path| path.is_file())
            .ok_or_else(|| {
                refuse(format!(
                    "{}: its --out json stream {} is neither there nor beside the shard",
                    shard_path.display(),
                    recorded.display()
                ))
            }),
    )
}

/// A shard's own stream and the iterations its shard counted (which the
/// stream's `iterations` points must add up to).
struct ShardStream {
    path: PathBuf,
    iterations: f64,
}

/// The shards' own streams, one per shard; None when no shard has one.
/// Refused when only some have one: the merged stream would miss samples.
fn streams_of(shards: &[(PathBuf, Shard)]) -> Result<Option<Vec<ShardStream>>, MergeError> {
    let found: Vec<Option<Result<PathBuf, MergeError>>> = shards
        .iter()
        .map(|(path, shard)| stream_of(path, shard))
        .collect();
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    shards
        .iter()
        .zip(found)
        .map(|((path, shard), stream)| {
            let iterations = shard
                .metrics
                .iter()
                .find_map(|m| match m.values {
                    ShardValues::Counter { count } if m.name == "iterations" && m.tags.is_empty() => {
                        Some(count)
                    }
                    _ => None,
                })
                .unwrap_or(0.0);
            stream
                .unwrap_or_else(|| {
                    Err(refuse(format!(
                        "{} recorded no --out json stream, other shards did: run every instance with --out json=FILE",
                        path.display()
                    )))
                })
                .map(|path| ShardStream { path, iterations })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Every sample of every stream, interleaved by time (each stream is in
/// its instance's order, time-ordered as `run` writes it), into `writers`;
/// answers each stream's sum of `iterations` values.
fn interleave<R: BufRead>(
    streams: Vec<(PathBuf, PointReader<R>)>,
    writers: &mut [Writer],
) -> Result<Vec<f64>, String> {
    let mut iterations = vec![0.0; streams.len()];
    let mut streams: Vec<(PathBuf, std::iter::Peekable<PointReader<R>>)> = streams
        .into_iter()
        .map(|(path, reader)| (path, reader.peekable()))
        .collect();
    loop {
        let mut earliest: Option<(usize, SystemTime)> = None;
        for (index, (path, reader)) in streams.iter_mut().enumerate() {
            match reader.peek() {
                Some(Ok(sample)) if earliest.is_none_or(|(_, time)| sample.time < time) => {
                    earliest = Some((index, sample.time));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    let why = reader.next().and_then(Result::err).unwrap_or_default();
                    return Err(format!("{}: {why}", path.display()));
                }
                None => {}
            }
        }
        let Some((index, _)) = earliest else {
            return Ok(iterations);
        };
        if let Some(Ok(sample)) = streams[index].1.next() {
            if sample.metric == "iterations" {
                iterations[index] += sample.value;
            }
            for writer in writers.iter_mut() {
                writer.write(&sample).map_err(|e| e.to_string())?;
            }
        }
    }
}

/// `--out` of the whole from the shards' own streams: the same lines and
/// rows `run --out` writes, every shard's samples in time order. A stream
/// whose iterations are not its shard's (cut short, or of another run) is
/// refused.
fn write_streams(
    targets: &[OutputTarget],
    specs: &[ThresholdSpec],
    streams: &[ShardStream],
) -> Result<(), String> {
    let readers = streams
        .iter()
        .map(|ShardStream { path, .. }| {
            std::fs::File::open(path)
                .map(|file| (path.clone(), PointReader::new(BufReader::new(file))))
                .map_err(|e| format!("cannot read {}: {e}", path.display()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut writers = open_writers(targets, specs).map_err(|e| e.to_string())?;
    let counted = interleave(readers, &mut writers)?;
    for writer in writers {
        writer
            .finish()
            .map_err(|e| format!("cannot write --out: {e}"))?;
    }
    for (stream, counted) in streams.iter().zip(counted) {
        if counted != stream.iterations {
            return Err(format!(
                "{}: {counted} iterations, its shard counted {}: not that run's whole stream",
                stream.path.display(),
                stream.iterations
            ));
        }
    }
    Ok(())
}

/// `--out` (from the shards' own streams, else the totals), then
/// `--summary-export` and `--report`.
fn write_outputs(
    output: &plan::Outputs,
    merged: &Merged,
    streams: Option<&[ShardStream]>,
) -> Result<(), String> {
    let specs = &output.thresholds;
    let cannot =
        |path: &PathBuf, e: std::io::Error| format!("cannot write {}: {e}", path.display());
    match streams {
        Some(streams) => write_streams(&output.streams, specs, streams)?,
        None => {
            for target in &output.streams {
                match target {
                    OutputTarget::Json(path) => write_totals_json(path, merged, specs)
                        .map_err(|e| cannot(path, e))?,
                    OutputTarget::Csv(path) => {
                        return Err(format!(
                            "invalid --out: csv={}: the shards recorded no --out json stream (run the instances with --out json=FILE)",
                            path.display()
                        ))
                    }
                }
            }
        }
    }
    if let Some(path) = &output.summary_export {
        std::fs::File::create(path)
            .and_then(|f| {
                export::write(
                    &merged.snapshot,
                    &output.trend_stats,
                    std::io::BufWriter::new(f),
                )
            })
            .map_err(|e| cannot(path, e))?;
    }
    if let Some(path) = &output.report {
        let segments: Vec<String> = merged.segments.iter().map(Segment::to_string).collect();
        let html = report::render(&report::Report {
            title: format!("loadgen report — merge of {} shards", merged.segments.len()),
            snapshot: &merged.snapshot,
            charts: report::charts(&merged.series),
            audit: None,
            config: vec![
                ("test_hash".to_string(), merged.test_hash.clone()),
                ("segments".to_string(), segments.join(", ")),
                ("start".to_string(), merged.start.to_rfc3339()),
                ("end".to_string(), merged.end.to_rfc3339()),
                (
                    "thresholds".to_string(),
                    specs
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            ],
        });
        std::fs::write(path, html).map_err(|e| cannot(path, e))?;
    }
    Ok(())
}

/// `loadgen merge`: 0, 99 when a threshold fails on the whole, 104 (a
/// [`Failure`]) when the shards or options are refused.
pub fn command(args: MergeArgs) -> Result<i32, Failure> {
    let refused = |e: &dyn std::fmt::Display| Failure::invalid_config(e.to_string());
    let shards = args
        .shards
        .iter()
        .map(|path| Shard::read(path).map(|shard| (path.clone(), shard)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(&e))?;
    let mut merged = merge(&shards).map_err(|e| refused(&e))?;
    let output =
        plan::Outputs::from_args(&args.output, DefaultThresholds::Named(&merged.thresholds))?;
    if let Some(covered) = &merged.uncovered {
        eprintln!(
            "loadgen: warning: the shards cover {covered}, not all of 0..1: this is part of the test"
        );
    }
    merged.snapshot.thresholds = thresholds::evaluate(&output.thresholds, &merged.snapshot);
    let streams = if output.streams.is_empty() {
        None
    } else {
        streams_of(&shards).map_err(|e| refused(&e))?
    };
    if streams.is_none() && !output.streams.is_empty() {
        eprintln!(
            "loadgen: warning: the shards recorded no --out json stream: --out json= holds the totals of counters and gauges only (run the instances with --out json=FILE for every sample)"
        );
    }
    println!(
        "\n     merged: {} shards ({}), {} complete and {} interrupted iterations",
        merged.segments.len(),
        merged
            .segments
            .iter()
            .map(Segment::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        merged.completed_iterations,
        merged.interrupted_iterations
    );
    if let Some(style) = &output.summary {
        print!("{}", summary::render(&merged.snapshot, style));
    }
    write_outputs(&output, &merged, streams.as_deref()).map_err(|e| refused(&e))?;
    if merged.snapshot.thresholds.iter().any(|t| !t.ok) {
        Ok(exit::THRESHOLDS_FAILED)
    } else {
        Ok(exit::OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::{ShardCheck, ShardMetric, ShardSecond};
    use crate::snapshot::TrendValues;
    use rand::{Rng, SeedableRng};

    fn shard(segment: &str, sequence: &str, trend: &TrendValues, requests: f64) -> Shard {
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        Shard {
            format: shard::FORMAT.to_string(),
            test_hash: "abc".to_string(),
            segment: segment.to_string(),
            sequence: sequence.to_string(),
            start,
            end: start + chrono::Duration::seconds(10),
            completed_iterations: requests as u64,
            interrupted_iterations: 0,
            thresholds: vec!["http_req_duration:p(95)<500".to_string()],
            metrics: vec![
                ShardMetric {
                    name: "http_reqs".to_string(),
                    tags: BTreeMap::new(),
                    values: ShardValues::Counter { count: requests },
                },
                ShardMetric {
                    name: "http_req_duration".to_string(),
                    tags: BTreeMap::new(),
                    values: ShardValues::Trend {
                        count: trend.count(),
                        sum: trend.sum,
                        min: trend.min_or_zero(),
                        max: trend.max_or_zero(),
                        histogram: shard::encode_histogram(&trend.histogram),
                    },
                },
                ShardMetric {
                    name: "vus".to_string(),
                    tags: BTreeMap::new(),
                    values: ShardValues::Gauge {
                        value: 0.0,
                        min: 0.0,
                        max: 2.0,
                        series: vec![
                            (start.timestamp(), 1.0),
                            (start.timestamp() + 1, 2.0),
                            (start.timestamp() + 2, 0.0),
                        ],
                    },
                },
            ],
            checks: vec![ShardCheck {
                name: "status is 202".to_string(),
                passes: requests as u64,
                fails: 1,
            }],
            seconds: vec![ShardSecond {
                unix: start.timestamp(),
                requests: requests as u64,
                ..ShardSecond::default()
            }],
            samples: None,
        }
    }

    #[test]
    fn per_second_percentiles_of_the_merge_are_those_of_all_samples() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut whole = TrendValues::new();
        let mut shards = Vec::new();
        for (i, segment) in ["0:1/3", "1/3:2/3", "2/3:1"].iter().enumerate() {
            let mut part = TrendValues::new();
            for _ in 0..(500 + i * 100) {
                let value = rng.gen_range(1.0..2000.0);
                part.record(value);
                whole.record(value);
            }
            let mut shard = shard(segment, "0,1/3,2/3,1", &part, 1.0);
            shard.seconds[0]
                .trends
                .response_time
                .insert("seedream4".to_string(), part.encoded());
            // Through the file format and back (the histogram bit for bit).
            let text = serde_json::to_string(&shard).unwrap();
            let read: Shard = serde_json::from_str(&text).unwrap();
            assert_eq!(
                read.seconds[0].trends.response_time["seedream4"].histogram,
                shard.seconds[0].trends.response_time["seedream4"].histogram
            );
            shards.push(shard);
        }
        let merged = merge(&files(shards)).unwrap();
        assert_eq!(
            merged.series[0].response_time["seedream4"],
            whole.chart_percentiles()
        );
    }

    fn files(shards: Vec<Shard>) -> Vec<(PathBuf, Shard)> {
        shards
            .into_iter()
            .enumerate()
            .map(|(i, s)| (PathBuf::from(format!("shard{i}.json")), s))
            .collect()
    }

    /// The same samples split into three shards and merged give the
    /// histogram of all of them, bucket for bucket, and its percentiles.
    #[test]
    fn hdr_merge_equals_one_histogram_of_all_samples() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
        let mut whole = TrendValues::new();
        let mut parts = [TrendValues::new(), TrendValues::new(), TrendValues::new()];
        for i in 0..30_000 {
            // Long-tailed, as latencies are, from 0 to minutes.
            let value = rng.gen_range(0.0f64..1.0).powi(6) * 120_000.0;
            whole.record(value);
            parts[i % 3].record(value);
        }
        let shards = files(vec![
            shard("0:1/3", "0,1/3,2/3,1", &parts[0], 10.0),
            shard("1/3:2/3", "0,1/3,2/3,1", &parts[1], 11.0),
            shard("2/3:1", "0,1/3,2/3,1", &parts[2], 12.0),
        ]);
        let merged = merge(&shards).unwrap();
        let Values::Trend(trend) = &merged.snapshot.metric("http_req_duration").unwrap().values
        else {
            panic!("not a trend")
        };
        assert_eq!(trend.histogram, whole.histogram);
        let buckets = |t: &TrendValues| {
            t.histogram
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect::<Vec<_>>()
        };
        assert_eq!(buckets(trend), buckets(&whole));
        for p in [0.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0] {
            assert_eq!(trend.percentile(p), whole.percentile(p), "p({p})");
        }
        assert_eq!(
            (trend.min, trend.max, trend.count()),
            (whole.min, whole.max, whole.count())
        );
        assert!((trend.sum - whole.sum).abs() < 1e-6 * whole.sum);
        let Values::Counter { count } = merged.snapshot.metric("http_reqs").unwrap().values else {
            panic!("not a counter")
        };
        assert_eq!(count, 33.0);
        assert_eq!(merged.snapshot.checks[0].passes, 33);
        assert_eq!(merged.snapshot.checks[0].fails, 3);
        // The vus gauges add second by second.
        let Values::Gauge { max, value, .. } = merged.snapshot.metric("vus").unwrap().values else {
            panic!("not a gauge")
        };
        assert_eq!((max, value), (6.0, 0.0));
        assert_eq!(merged.series[0].requests, 33);
        assert!(merged.uncovered.is_none());
    }

    #[test]
    fn refuses_mixed_tests_overlaps_and_sequences_and_warns_on_gaps() {
        let t = TrendValues::new();
        let mut other = shard("1/3:2/3", "0,1/3,2/3,1", &t, 1.0);
        other.test_hash = "def".to_string();
        let cases = [
            (
                vec![shard("0:1/3", "0,1/3,2/3,1", &t, 1.0), other],
                "different tests",
            ),
            (
                vec![
                    shard("0:1/2", "0,1/2,1", &t, 1.0),
                    shard("0:1/2", "0,1/2,1", &t, 1.0),
                ],
                "overlap",
            ),
            (
                vec![
                    shard("0:1/3", "0,1/3,1", &t, 1.0),
                    shard("1/3:2/3", "0,1/3,2/3,1", &t, 1.0),
                ],
                "different sequences",
            ),
        ];
        for (shards, why) in cases {
            let err = merge(&files(shards)).err().expect("refused").to_string();
            assert!(err.contains(why), "{err}");
            assert_eq!(err.lines().count(), 1);
        }
        let part = merge(&files(vec![
            shard("0:1/3", "0,1/3,2/3,1", &t, 1.0),
            shard("2/3:1", "0,1/3,2/3,1", &t, 1.0),
        ]))
        .unwrap();
        assert_eq!(part.uncovered.as_deref(), Some("0:1/3, 2/3:1"));
    }

    #[test]
    fn thresholds_are_evaluated_on_the_whole() {
        let mut fast = TrendValues::new();
        let mut slow = TrendValues::new();
        for _ in 0..96 {
            fast.record(100.0);
        }
        for _ in 0..4 {
            slow.record(900.0);
        }
        let shards = files(vec![
            shard("0:1/2", "0,1/2,1", &fast, 1.0),
            shard("1/2:1", "0,1/2,1", &slow, 1.0),
        ]);
        let mut merged = merge(&shards).unwrap();
        let specs = plan::threshold_specs(false, &merged.thresholds.clone()).unwrap();
        merged.snapshot.thresholds = thresholds::evaluate(&specs, &merged.snapshot);
        // p(95) of the whole is 100 ms: the slow shard alone would fail.
        assert!(merged.snapshot.thresholds.iter().all(|t| t.ok));
        let strict =
            plan::threshold_specs(false, &["http_req_duration:p(99)<500".to_string()]).unwrap();
        merged.snapshot.thresholds = thresholds::evaluate(&strict, &merged.snapshot);
        assert!(!merged.snapshot.thresholds[0].ok);
    }

    #[test]
    fn streams_interleave_by_time_keeping_every_sample_and_its_tags() {
        let stream = |millis: &[u64], shard: &str| -> Vec<u8> {
            let mut writer = NdjsonWriter::new(Vec::new());
            for ms in millis {
                let (metric, metric_type, contains) = definition("iterations").unwrap();
                writer
                    .write(&Sample {
                        metric,
                        metric_type,
                        contains,
                        time: SystemTime::UNIX_EPOCH + Duration::from_millis(*ms),
                        value: 1.0,
                        tags: vec![("shard", shard.to_string())],
                    })
                    .unwrap();
            }
            writer.finish().unwrap()
        };
        let (a, b, c) = (
            stream(&[1, 4, 5, 9], "a"),
            stream(&[2, 3, 7], "b"),
            stream(&[], "c"),
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("whole.ndjson");
        let mut writers =
            crate::run::open_writers(&[OutputTarget::Json(out.clone())], &[]).unwrap();
        let readers = [("a", &a), ("b", &b), ("c", &c)]
            .map(|(name, bytes)| (PathBuf::from(name), PointReader::new(bytes.as_slice())));
        interleave(readers.into(), &mut writers).unwrap();
        for writer in writers {
            writer.finish().unwrap();
        }
        let text = std::fs::read_to_string(&out).unwrap();
        let merged: Vec<(u128, String)> = PointReader::new(text.as_bytes())
            .map(|s| {
                let s = s.unwrap();
                let ms = s
                    .time
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis();
                (ms, s.tags[0].1.clone())
            })
            .collect();
        let expected: Vec<(u128, String)> = [
            (1, "a"),
            (2, "b"),
            (3, "b"),
            (4, "a"),
            (5, "a"),
            (7, "b"),
            (9, "a"),
        ]
        .map(|(ms, shard)| (ms, shard.to_string()))
        .into();
        assert_eq!(merged, expected);
        // One Metric line, before the first point.
        assert_eq!(
            text.lines()
                .filter(|l| l.contains(r#""type":"Metric""#))
                .count(),
            1
        );
        // A broken stream names its file and line.
        let broken = b"{\"type\":\"Point\"}\n".to_vec();
        let readers = vec![(
            PathBuf::from("s0.ndjson"),
            PointReader::new(broken.as_slice()),
        )];
        let err = interleave(readers, &mut []).unwrap_err();
        assert!(err.starts_with("s0.ndjson: line 1"), "{err}");
    }
}
