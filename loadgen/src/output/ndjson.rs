//! `--out json=FILE`: k6's JSON output, one object per line, so tools that
//! read k6's file read ours:
//!
//! ```text
//! {"type":"Metric","data":{"name":"http_req_duration","type":"trend","contains":"time","thresholds":["p(99)<60000"],"submetrics":null},"metric":"http_req_duration"}
//! {"type":"Point","data":{"time":"2025-01-01T12:00:00.123456Z","value":12.5,"tags":{"method":"POST","status":"202"}},"metric":"http_req_duration"}
//! ```
//!
//! A `Metric` line comes before a metric's first point. Times are RFC 3339
//! in UTC with up to nanosecond precision; `tags` is `null` when a sample has
//! none, as k6 writes it for `vus`. [`PointReader`] reads the points back
//! (`loadgen merge` interleaves the shards' streams with it).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, BufRead, BufWriter, Write};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::metrics::definition;
use crate::sample::Sample;
use crate::snapshot::{MetricType, ValueType};
use crate::thresholds::ThresholdSpec;

/// Writes samples as k6 JSON lines. `Send` when `W` is, so a dedicated
/// writer task can own it.
pub struct NdjsonWriter<W: Write> {
    out: BufWriter<W>,
    declared: HashSet<&'static str>,
    /// Metric name → threshold expressions, listed in its `Metric` line.
    thresholds: HashMap<String, Vec<String>>,
}

impl<W: Write> NdjsonWriter<W> {
    pub fn new(writer: W) -> Self {
        NdjsonWriter {
            out: BufWriter::new(writer),
            declared: HashSet::new(),
            thresholds: HashMap::new(),
        }
    }

    /// Lists the thresholds set on each (untagged) metric in its `Metric`
    /// line, as k6 does.
    pub fn with_thresholds(mut self, specs: &[ThresholdSpec]) -> Self {
        for spec in specs.iter().filter(|spec| spec.tags.is_empty()) {
            self.thresholds
                .entry(spec.metric.clone())
                .or_default()
                .extend(spec.expressions.iter().map(|e| e.source.clone()));
        }
        self
    }

    pub fn write(&mut self, sample: &Sample) -> io::Result<()> {
        if self.declared.insert(sample.metric) {
            let line = Line {
                kind: "Metric",
                data: MetricData {
                    name: sample.metric,
                    metric_type: sample.metric_type,
                    contains: sample.contains,
                    thresholds: self
                        .thresholds
                        .get(sample.metric)
                        .map_or(&[], Vec::as_slice),
                    submetrics: None,
                },
                metric: sample.metric,
            };
            write_line(&mut self.out, &line)?;
        }
        let line = Line {
            kind: "Point",
            data: PointData {
                time: DateTime::<Utc>::from(sample.time)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
                value: sample.value,
                tags: (!sample.tags.is_empty()).then_some(Tags(&sample.tags)),
            },
            metric: sample.metric,
        };
        write_line(&mut self.out, &line)
    }

    /// Flushes and hands back the underlying writer.
    pub fn finish(self) -> io::Result<W> {
        self.out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
    }
}

fn write_line(out: &mut impl Write, line: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

#[derive(Serialize)]
struct Line<'a, D> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: D,
    metric: &'a str,
}

#[derive(Serialize)]
struct MetricData<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    metric_type: MetricType,
    contains: ValueType,
    thresholds: &'a [String],
    /// k6 lists sub-metrics here; loadgen's are in the summary only.
    submetrics: Option<()>,
}

#[derive(Serialize)]
struct PointData<'a> {
    time: String,
    value: f64,
    tags: Option<Tags<'a>>,
}

struct Tags<'a>(&'a [(&'static str, String)]);

impl Serialize for Tags<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Reads back what [`NdjsonWriter`] wrote (or k6 itself): each `Point`
/// line as a [`Sample`], its tags in their order; `Metric` lines only
/// declare and are skipped. A line that is neither, or a point of a metric
/// this test does not have, is an error naming the line.
pub struct PointReader<R: BufRead> {
    lines: io::Lines<R>,
    line: u64,
}

impl<R: BufRead> PointReader<R> {
    pub fn new(reader: R) -> Self {
        PointReader {
            lines: reader.lines(),
            line: 0,
        }
    }

    fn sample(&self, text: &str) -> Result<Option<Sample>, String> {
        let at = |why: String| format!("line {}: {why}", self.line);
        let point = match serde_json::from_str::<ReadLine>(text) {
            Ok(ReadLine::Metric {}) => return Ok(None),
            Ok(ReadLine::Point { metric, data }) => (metric, data),
            Err(e) => return Err(at(format!("not a k6 JSON Metric or Point line: {e}"))),
        };
        let (metric, data) = point;
        let (metric, metric_type, contains) = definition(&metric)
            .ok_or_else(|| at(format!("no metric named {metric:?} in this test")))?;
        let time = DateTime::parse_from_rfc3339(&data.time)
            .map_err(|e| at(format!("time {:?}: {e}", data.time)))?;
        Ok(Some(Sample {
            metric,
            metric_type,
            contains,
            time: time.with_timezone(&Utc).into(),
            value: data.value,
            tags: data
                .tags
                .map(|TagPairs(pairs)| {
                    pairs
                        .into_iter()
                        .map(|(name, value)| (tag_name(&name), value))
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }
}

impl<R: BufRead> Iterator for PointReader<R> {
    type Item = Result<Sample, String>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let text = match self.lines.next()? {
                Ok(text) => text,
                Err(e) => return Some(Err(format!("line {}: {e}", self.line + 1))),
            };
            self.line += 1;
            if text.trim().is_empty() {
                continue;
            }
            match self.sample(&text) {
                Ok(None) => continue,
                Ok(Some(sample)) => return Some(Ok(sample)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A tag name read back, for the `&'static str` of [`Sample::tags`]: each
/// distinct name is kept once for the life of the process (as `--tag`'s
/// names are), however many points carry it.
fn tag_name(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(name);
    name
}

#[derive(Deserialize)]
#[serde(tag = "type")]
enum ReadLine {
    Metric {},
    Point { metric: String, data: ReadPoint },
}

#[derive(Deserialize)]
struct ReadPoint {
    time: String,
    value: f64,
    tags: Option<TagPairs>,
}

/// A point's `tags` object, in the order written.
struct TagPairs(Vec<(String, String)>);

impl<'de> Deserialize<'de> for TagPairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = TagPairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of tag names and values")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<TagPairs, M::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(TagPairs(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, SystemTime};

    use serde_json::{json, Value};

    use super::*;
    use crate::thresholds::parse;

    fn sample(metric: &'static str, value: f64, tags: Vec<(&'static str, String)>) -> Sample {
        Sample {
            metric,
            metric_type: MetricType::Trend,
            contains: ValueType::Time,
            time: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_000),
            value,
            tags,
        }
    }

    fn lines(writer: NdjsonWriter<Vec<u8>>) -> Vec<Value> {
        let bytes = writer.finish().unwrap();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn metric_line_then_points() {
        let specs = [
            parse("http_req_duration:p(99)<60000,avg<100").unwrap(),
            parse("http_req_duration{endpoint:x}:p(95)<1").unwrap(),
        ];
        let mut writer = NdjsonWriter::new(Vec::new()).with_thresholds(&specs);
        let tags = vec![
            ("method", "POST".to_string()),
            ("status", "202".to_string()),
        ];
        writer
            .write(&sample("http_req_duration", 12.5, tags))
            .unwrap();
        writer
            .write(&sample("http_req_duration", 7.0, Vec::new()))
            .unwrap();
        let mut vus = sample("vus", 3.0, Vec::new());
        vus.metric_type = MetricType::Gauge;
        vus.contains = ValueType::Default;
        writer.write(&vus).unwrap();

        let lines = lines(writer);
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            json!({"type": "Metric", "metric": "http_req_duration", "data": {
                "name": "http_req_duration", "type": "trend", "contains": "time",
                "thresholds": ["p(99)<60000", "avg<100"], "submetrics": null}})
        );
        assert_eq!(
            lines[1],
            json!({"type": "Point", "metric": "http_req_duration", "data": {
                "time": "2023-11-14T22:13:20.123456Z", "value": 12.5,
                "tags": {"method": "POST", "status": "202"}}})
        );
        assert_eq!(lines[2]["type"], "Point");
        assert_eq!(lines[2]["data"]["tags"], Value::Null);
        assert_eq!(
            lines[3]["data"],
            json!({"name": "vus", "type": "gauge", "contains": "default",
                   "thresholds": [], "submetrics": null})
        );
        assert_eq!(lines[4]["data"]["value"], json!(3.0));
    }

    #[test]
    fn times_parse_as_rfc3339() {
        let mut writer = NdjsonWriter::new(Vec::new());
        writer.write(&sample("m", 1.0, Vec::new())).unwrap();
        let lines = lines(writer);
        let time = lines[1]["data"]["time"].as_str().unwrap();
        let parsed = DateTime::parse_from_rfc3339(time).unwrap();
        assert_eq!(
            parsed.timestamp_nanos_opt(),
            Some(1_700_000_000_123_456_000)
        );
    }

    #[test]
    fn a_writer_thread_fed_by_a_bounded_channel() {
        let (sender, receiver) = mpsc::sync_channel::<Sample>(4);
        let writer = NdjsonWriter::new(Vec::new());
        let task = std::thread::spawn(move || {
            let mut writer = writer;
            for sample in receiver {
                writer.write(&sample)?;
            }
            writer.finish()
        });
        for i in 0..100 {
            sender
                .send(sample("iterations", f64::from(i), Vec::new()))
                .unwrap();
        }
        drop(sender);
        let bytes = task.join().unwrap().unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap().lines().count(), 101);
    }

    #[test]
    fn points_read_back_as_written_tags_in_order() {
        let specs = [parse("http_req_duration:p(99)<60000").unwrap()];
        let mut writer = NdjsonWriter::new(Vec::new()).with_thresholds(&specs);
        let tagged = sample(
            "http_req_duration",
            12.5,
            vec![
                ("status", "202".to_string()),
                ("method", "POST".to_string()),
                ("testid", "run-7".to_string()),
            ],
        );
        let mut vus = sample("vus", 3.0, Vec::new());
        vus.metric_type = MetricType::Gauge;
        vus.contains = ValueType::Default;
        writer.write(&tagged).unwrap();
        writer.write(&vus).unwrap();
        let bytes = writer.finish().unwrap();
        let read: Vec<Sample> = PointReader::new(bytes.as_slice())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read, vec![tagged, vus]);
        let bad = b"{\"type\":\"Point\",\"metric\":\"nope\",\"data\":{\"time\":\"2023-11-14T22:13:20Z\",\"value\":1,\"tags\":null}}\n";
        let err = PointReader::new(&bad[..]).next().unwrap().unwrap_err();
        assert!(err.contains("line 1") && err.contains("nope"), "{err}");
        let err = PointReader::new(&b"\n{}\n"[..])
            .next()
            .unwrap()
            .unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
