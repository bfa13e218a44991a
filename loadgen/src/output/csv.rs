//! `--out csv=FILE`: k6's CSV output with its default columns:
//!
//! ```text
//! metric_name,timestamp,metric_value,check,error,error_code,expected_response,group,method,name,proto,scenario,service,status,subproto,tls_version,url,extra_tags,metadata
//! ```
//!
//! As k6 writes it: `timestamp` in unix seconds, `metric_value` with six
//! decimals, k6's system tags in their own columns, any other tag (such as
//! `endpoint`) in `extra_tags` as `key=value&key=value`, and the per-sample
//! `vu` and `iter` tags in `metadata` the same way. Fields are quoted as Go's
//! `encoding/csv` does.

use std::io::{self, BufWriter, Write};
use std::time::UNIX_EPOCH;

use crate::sample::Sample;

/// k6's default system tags that get a column, in header order.
const TAG_COLUMNS: [&str; 14] = [
    "check",
    "error",
    "error_code",
    "expected_response",
    "group",
    "method",
    "name",
    "proto",
    "scenario",
    "service",
    "status",
    "subproto",
    "tls_version",
    "url",
];
/// Tags k6 keeps out of the indexed columns, written in `metadata`.
const METADATA_TAGS: [&str; 2] = ["vu", "iter"];

/// Writes samples as k6 CSV rows, the header first. `Send` when `W` is, so a
/// dedicated writer task can own it.
pub struct CsvWriter<W: Write> {
    out: BufWriter<W>,
    header_written: bool,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(writer: W) -> Self {
        CsvWriter {
            out: BufWriter::new(writer),
            header_written: false,
        }
    }

    pub fn write(&mut self, sample: &Sample) -> io::Result<()> {
        self.write_header_once()?;
        let timestamp = sample
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut fields = Vec::with_capacity(3 + TAG_COLUMNS.len() + 2);
        fields.push(sample.metric.to_string());
        fields.push(timestamp.to_string());
        fields.push(format!("{:.6}", sample.value));
        for column in TAG_COLUMNS {
            let value = sample.tags.iter().find(|(key, _)| *key == column);
            fields.push(value.map_or_else(String::new, |(_, value)| value.clone()));
        }
        let is_metadata = |key: &str| METADATA_TAGS.contains(&key);
        fields.push(query_string(sample, |key| {
            !TAG_COLUMNS.contains(&key) && !is_metadata(key)
        }));
        fields.push(query_string(sample, is_metadata));
        self.write_record(&fields)
    }

    /// Writes the header if no sample came, flushes, and hands back the
    /// underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.write_header_once()?;
        self.out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
    }

    fn write_header_once(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        self.header_written = true;
        let header: Vec<String> = ["metric_name", "timestamp", "metric_value"]
            .into_iter()
            .chain(TAG_COLUMNS)
            .chain(["extra_tags", "metadata"])
            .map(str::to_string)
            .collect();
        self.write_record(&header)
    }

    fn write_record(&mut self, fields: &[String]) -> io::Result<()> {
        for (index, field) in fields.iter().enumerate() {
            if index > 0 {
                self.out.write_all(b",")?;
            }
            if needs_quotes(field) {
                write!(self.out, "\"{}\"", field.replace('"', "\"\""))?;
            } else {
                self.out.write_all(field.as_bytes())?;
            }
        }
        self.out.write_all(b"\n")
    }
}

/// `key=value&key=value` of the sample's tags that `select` keeps.
fn query_string(sample: &Sample, select: impl Fn(&str) -> bool) -> String {
    sample
        .tags
        .iter()
        .filter(|(key, _)| select(key))
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Go's `encoding/csv` rule: quote fields holding a separator, a quote or a
/// line break, or starting with whitespace.
fn needs_quotes(field: &str) -> bool {
    field == r"\."
        || field.contains([',', '"', '\r', '\n'])
        || field.starts_with(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::snapshot::{MetricType, ValueType};

    const HEADER: &str = "metric_name,timestamp,metric_value,check,error,error_code,\
        expected_response,group,method,name,proto,scenario,service,status,subproto,\
        tls_version,url,extra_tags,metadata";

    fn sample(metric: &'static str, value: f64, tags: &[(&'static str, &str)]) -> Sample {
        Sample {
            metric,
            metric_type: MetricType::Trend,
            contains: ValueType::Time,
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_595_325_560_900),
            value,
            tags: tags.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        }
    }

    fn written(samples: &[Sample]) -> String {
        let mut writer = CsvWriter::new(Vec::new());
        for sample in samples {
            writer.write(sample).unwrap();
        }
        String::from_utf8(writer.finish().unwrap()).unwrap()
    }

    #[test]
    fn header_and_rows_in_k6_columns() {
        let text = written(&[
            sample(
                "http_req_duration",
                221.899,
                &[
                    ("method", "POST"),
                    ("name", "http://127.0.0.1:5001/api/auth/login"),
                    ("status", "200"),
                    ("scenario", "default"),
                    ("endpoint", "login"),
                    ("vu", "3"),
                    ("iter", "7"),
                ],
            ),
            sample("iterations", 1.0, &[]),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        assert_eq!(
            lines[1],
            "http_req_duration,1595325560,221.899000,,,,,,POST,\
             http://127.0.0.1:5001/api/auth/login,,default,,200,,,,endpoint=login,vu=3&iter=7"
        );
        assert_eq!(lines[2], "iterations,1595325560,1.000000,,,,,,,,,,,,,,,,");
        assert_eq!(lines.len(), 3);
        let columns = HEADER.split(',').count();
        assert!(lines.iter().all(|line| line.split(',').count() == columns));
    }

    #[test]
    fn quotes_fields_as_go_csv() {
        let text = written(&[sample(
            "checks",
            0.0,
            &[
                ("check", "has \"token\", really"),
                ("error", " timeout\nafter 10s"),
            ],
        )]);
        let row = text.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert!(row.starts_with(
            "checks,1595325560,0.000000,\"has \"\"token\"\", really\",\" timeout\nafter 10s\","
        ));
        assert!(needs_quotes("\\."));
        assert!(!needs_quotes("plain"));
        assert!(!needs_quotes(""));
    }

    #[test]
    fn header_alone_without_samples() {
        assert_eq!(written(&[]), format!("{HEADER}\n"));
    }

    #[test]
    fn writers_can_move_to_a_writer_task() {
        fn is_send<T: Send>() {}
        is_send::<CsvWriter<std::fs::File>>();
        is_send::<crate::output::ndjson::NdjsonWriter<std::fs::File>>();
    }
}
