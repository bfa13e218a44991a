//! k6's classic end-of-test summary (k6 0.4x `textSummary`): checks first,
//! then every metric on a dotted line, sorted by name with sub-metrics
//! indented under their parent, values humanized with k6's rules, and a
//! ✓/✗ before every metric that has thresholds.

use std::cmp::Ordering;

use crate::snapshot::{CheckTally, MetricSnapshot, Snapshot, ThresholdOutcome, ValueType, Values};

/// The trend columns of k6's default `summaryTrendStats`.
const TREND_STATS: [&str; 6] = ["avg", "min", "med", "max", "p(90)", "p(95)"];
const CHECK_INDENT: &str = "     ";
const METRIC_INDENT: &str = "   ";
const SUB_METRIC_INDENT: &str = "  ";
const PASS: &str = "✓";
const FAIL: &str = "✗";

const GREEN: &str = "32";
const RED: &str = "31";
const CYAN: &str = "36";
const FAINT_CYAN: &str = "36;2";
const FAINT: &str = "2";

/// The summary exactly as k6 prints it on stdout (blank line before, blank
/// line after). `color` adds k6's ANSI colours: green ✓, red ✗, cyan values,
/// faint dots.
pub fn render(snapshot: &Snapshot, color: bool) -> String {
    let paint = Paint { color };
    let mut lines: Vec<String> = snapshot
        .checks
        .iter()
        .map(|check| check_line(check, paint))
        .collect();
    if !lines.is_empty() {
        lines.push(String::new());
    }
    lines.extend(metric_lines(snapshot, paint));
    format!("\n{}\n\n", lines.join("\n"))
}

#[derive(Clone, Copy)]
struct Paint {
    color: bool,
}

impl Paint {
    fn apply(self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn check_line(check: &CheckTally, paint: Paint) -> String {
    if check.fails == 0 {
        return paint.apply(&format!("{CHECK_INDENT}{PASS} {}", check.name), GREEN);
    }
    let total = check.passes + check.fails;
    let percent = 100 * check.passes / total;
    let text = format!(
        "{CHECK_INDENT}{FAIL} {name}\n{CHECK_INDENT} ↳  {percent}% — {PASS} {passes} / {FAIL} {fails}",
        name = check.name,
        passes = check.passes,
        fails = check.fails,
    );
    paint.apply(&text, RED)
}

/// One metric's line before alignment.
struct Row<'a> {
    metric: &'a MetricSnapshot,
    indent: &'static str,
    name: String,
    cells: Cells,
}

enum Cells {
    Trend(Vec<String>),
    /// The main value and its extras (`686 B/s`, `✓ 120`, `min=1`).
    Plain(String, Vec<String>),
}

fn metric_lines(snapshot: &Snapshot, paint: Paint) -> Vec<String> {
    let mut rows: Vec<Row> = snapshot
        .metrics
        .iter()
        .map(|metric| row(metric, snapshot))
        .collect();
    rows.sort_by(|a, b| compare_keys(&a.metric.key(), &b.metric.key()));

    let name_width = rows
        .iter()
        .map(|row| width(row.indent) + width(&row.name))
        .max()
        .unwrap_or(0);
    let mut trend_widths = [0; TREND_STATS.len()];
    let mut value_width = 0;
    let mut extra_widths = [0; 2];
    for row in &rows {
        match &row.cells {
            Cells::Trend(columns) => {
                for (max, column) in trend_widths.iter_mut().zip(columns) {
                    *max = (*max).max(width(column));
                }
            }
            Cells::Plain(value, extras) => {
                value_width = value_width.max(width(value));
                for (max, extra) in extra_widths.iter_mut().zip(extras) {
                    *max = (*max).max(width(extra));
                }
            }
        }
    }

    rows.iter()
        .map(|row| {
            let data = match &row.cells {
                Cells::Trend(columns) => TREND_STATS
                    .iter()
                    .zip(columns)
                    .zip(trend_widths)
                    .map(|((stat, column), max)| {
                        format!("{stat}={}{}", paint.apply(column, CYAN), pad(column, max))
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Cells::Plain(value, extras) => {
                    let mut data =
                        format!("{}{}", paint.apply(value, CYAN), pad(value, value_width));
                    // k6 pads the extras only when there are several.
                    match extras.as_slice() {
                        [] => {}
                        [single] => {
                            data.push(' ');
                            data.push_str(&paint.apply(single, FAINT_CYAN));
                        }
                        several => {
                            let parts: Vec<String> = several
                                .iter()
                                .zip(extra_widths)
                                .map(|(extra, max)| {
                                    format!("{}{}", paint.apply(extra, FAINT_CYAN), pad(extra, max))
                                })
                                .collect();
                            data.push(' ');
                            data.push_str(&parts.join(" "));
                        }
                    }
                    data
                }
            };
            let dots = ".".repeat(name_width + 3 - width(&row.name) - width(row.indent));
            format!(
                "{METRIC_INDENT}{indent}{mark} {name}{dots} {data}",
                indent = row.indent,
                mark = threshold_mark(&row.metric.key(), &snapshot.thresholds, paint),
                name = row.name,
                dots = paint.apply(&format!("{dots}:"), FAINT),
            )
        })
        .collect()
}

fn row<'a>(metric: &'a MetricSnapshot, snapshot: &Snapshot) -> Row<'a> {
    let (indent, name) = if metric.tags.is_empty() {
        ("", metric.name.clone())
    } else {
        let key = metric.key();
        let tags = &key[metric.name.len() + 1..key.len() - 1];
        (SUB_METRIC_INDENT, format!("{{ {tags} }}"))
    };
    let humanize = |value: f64| humanize(value, metric.contains);
    let cells = match &metric.values {
        Values::Counter { count } => Cells::Plain(
            humanize(*count),
            vec![format!("{}/s", humanize(snapshot.per_second(*count)))],
        ),
        Values::Gauge { value, min, max } => Cells::Plain(
            humanize(*value),
            vec![
                format!("min={}", humanize(*min)),
                format!("max={}", humanize(*max)),
            ],
        ),
        Values::Rate { passes, fails } => {
            let rate = match passes + fails {
                0 => 0.0,
                total => *passes as f64 / total as f64,
            };
            Cells::Plain(
                percent(rate),
                vec![format!("{PASS} {passes}"), format!("{FAIL} {fails}")],
            )
        }
        Values::Trend(trend) => Cells::Trend(
            [
                trend.avg(),
                trend.min_or_zero(),
                trend.med(),
                trend.max_or_zero(),
                trend.percentile(90.0),
                trend.percentile(95.0),
            ]
            .into_iter()
            .map(humanize)
            .collect(),
        ),
    };
    Row {
        metric,
        indent,
        name,
        cells,
    }
}

/// ✗ when any threshold of the metric failed, ✓ when all passed, a blank
/// when it has none.
fn threshold_mark(key: &str, thresholds: &[ThresholdOutcome], paint: Paint) -> String {
    let mut own = thresholds.iter().filter(|t| t.metric_key == key).peekable();
    if own.peek().is_none() {
        return " ".to_string();
    }
    if own.all(|t| t.ok) {
        paint.apply(PASS, GREEN)
    } else {
        paint.apply(FAIL, RED)
    }
}

/// k6 sorts by parent name, then by the `{...}` part, with JavaScript's
/// `localeCompare`; for ASCII names that is punctuation before digits
/// before letters, case-insensitive first.
fn compare_keys(a: &str, b: &str) -> Ordering {
    let split = |key: &str| -> (String, String) {
        let brace = key.find('{').unwrap_or(key.len());
        (key[..brace].to_string(), key[brace..].to_string())
    };
    let (parent_a, sub_a) = split(a);
    let (parent_b, sub_b) = split(b);
    collation(&parent_a)
        .cmp(&collation(&parent_b))
        .then_with(|| collation(&sub_a).cmp(&collation(&sub_b)))
        .then_with(|| a.cmp(b))
}

fn collation(text: &str) -> Vec<(u8, char)> {
    text.chars()
        .map(|c| {
            let class = if c.is_ascii_digit() {
                1
            } else if c.is_alphabetic() {
                2
            } else {
                0
            };
            (class, c.to_ascii_lowercase())
        })
        .collect()
}

/// Terminal width as k6 counts it: characters, ANSI codes excluded (callers
/// measure text before painting it).
fn width(text: &str) -> usize {
    text.chars().count()
}

fn pad(text: &str, to: usize) -> String {
    " ".repeat(to.saturating_sub(width(text)))
}

/// k6's `humanizeValue` for counters, gauges and trends.
fn humanize(value: f64, contains: ValueType) -> String {
    match contains {
        ValueType::Data => humanize_bytes(value),
        ValueType::Time => humanize_duration(value),
        ValueType::Default => fixed_no_trailing_zeros(value, 6),
    }
}

/// Rates as k6 prints them: truncated, not rounded, to 2 decimals.
fn percent(rate: f64) -> String {
    format!(
        "{}%",
        js_to_fixed((rate * 100.0 * 100.0).trunc() / 100.0, 2)
    )
}

/// Decimal kB/MB/GB with one decimal below 10 (`48 kB`, `2.4 MB`, `686 B`).
fn humanize_bytes(bytes: f64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    if !bytes.is_finite() || bytes < 10.0 {
        return format!("{} B", js_number(bytes));
    }
    let exponent = (bytes.ln() / 1000_f64.ln())
        .floor()
        .clamp(0.0, (UNITS.len() - 1) as f64);
    let scaled = (bytes / 1000_f64.powi(exponent as i32) * 10.0 + 0.5).floor() / 10.0;
    let decimals = if scaled < 10.0 { 1 } else { 0 };
    format!(
        "{} {}",
        js_to_fixed(scaled, decimals),
        UNITS[exponent as usize]
    )
}

/// A duration in milliseconds: `850ns`, `12.5µs`, `2.1ms`, `4.5s`, `1m30s`,
/// `2h0m5s`, digits truncated as k6 does.
fn humanize_duration(millis: f64) -> String {
    if millis == 0.0 {
        return "0s".to_string();
    }
    if millis < 0.001 {
        return format!("{}ns", js_number((millis * 1e6).trunc()));
    }
    if millis < 1.0 {
        return format!("{}µs", fixed_truncated(millis * 1000.0, 2));
    }
    if millis < 1000.0 {
        return format!("{}ms", fixed_truncated(millis, 2));
    }
    let seconds_decimals = if millis > 60_000.0 { 0 } else { 2 };
    let seconds = format!(
        "{}s",
        fixed_truncated((millis % 60_000.0) / 1000.0, seconds_decimals)
    );
    let minutes = (millis / 60_000.0).trunc();
    if minutes < 1.0 {
        return seconds;
    }
    let with_minutes = format!("{}m{seconds}", js_number(minutes % 60.0));
    let hours = (minutes / 60.0).trunc();
    if hours < 1.0 {
        return with_minutes;
    }
    format!("{}h{with_minutes}", js_number(hours))
}

/// k6's `toFixedNoTrailingZerosTrunc`.
fn fixed_truncated(value: f64, decimals: i32) -> String {
    let scale = 10_f64.powi(decimals);
    fixed_no_trailing_zeros((scale * value).trunc() / scale, decimals as usize)
}

/// k6's `toFixedNoTrailingZeros`: `parseFloat(value.toFixed(decimals)).toString()`.
fn fixed_no_trailing_zeros(value: f64, decimals: usize) -> String {
    let fixed = js_to_fixed(value, decimals);
    fixed.parse::<f64>().map_or(fixed, js_number)
}

/// JavaScript's `Number.prototype.toFixed`: like Rust's `{:.N}` except that
/// exact binary ties round away from zero instead of to even.
fn js_to_fixed(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return js_number(value);
    }
    const EXTRA: usize = 30;
    let wide = format!("{value:.*}", decimals + EXTRA);
    let tail = &wide[wide.len() - EXTRA..];
    let is_tie = tail.starts_with('5') && tail[1..].bytes().all(|b| b == b'0');
    // One ulp further from zero turns the tie into a clear round-up.
    let value = if is_tie {
        f64::from_bits(value.to_bits() + 1)
    } else {
        value
    };
    format!("{value:.decimals$}")
}

/// JavaScript's `Number.prototype.toString` for the magnitudes a summary
/// shows (no exponent form).
fn js_number(value: f64) -> String {
    if value == 0.0 {
        "0".to_string()
    } else if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::snapshot::TrendValues;

    #[test]
    fn durations_humanized_as_k6() {
        let cases = [
            (0.0, "0s"),
            (0.0005, "500ns"),
            (0.0125, "12.5µs"),
            (0.999_999, "999.99µs"),
            (2.1, "2.1ms"),
            (2.109, "2.1ms"),
            (999.999, "999.99ms"),
            (1000.0, "1s"),
            (2100.0, "2.1s"),
            (4567.891, "4.56s"),
            (60_000.0, "1m0s"),
            (90_500.0, "1m30s"),
            (3_723_000.0, "1h2m3s"),
            (7_200_000.0, "2h0m0s"),
        ];
        for (millis, expected) in cases {
            assert_eq!(humanize_duration(millis), expected, "{millis}");
        }
    }

    #[test]
    fn bytes_humanized_as_k6() {
        let cases = [
            (0.0, "0 B"),
            (9.5, "9.5 B"),
            (686.4, "686 B"),
            (999.0, "999 B"),
            (1000.0, "1.0 kB"),
            (48_000.0, "48 kB"),
            (48_049.0, "48 kB"),
            (9_960.0, "10 kB"),
            (2_400_000.0, "2.4 MB"),
            (1_000_000.0, "1.0 MB"),
        ];
        for (bytes, expected) in cases {
            assert_eq!(humanize_bytes(bytes), expected, "{bytes}");
        }
    }

    #[test]
    fn plain_numbers_and_percentages_as_k6() {
        assert_eq!(fixed_no_trailing_zeros(120.0, 6), "120");
        assert_eq!(fixed_no_trailing_zeros(1.714_285_714, 6), "1.714286");
        assert_eq!(fixed_no_trailing_zeros(-0.000_000_1, 6), "0");
        assert_eq!(percent(1.0), "100.00%");
        assert_eq!(percent(0.0), "0.00%");
        assert_eq!(percent(0.666_66), "66.66%");
        assert_eq!(percent(0.999_99), "99.99%");
        // JavaScript rounds exact ties up where Rust's formatting rounds to even.
        assert_eq!(js_to_fixed(0.125, 2), "0.13");
        assert_eq!(js_to_fixed(2.5, 0), "3");
        assert_eq!(js_to_fixed(-2.5, 0), "-3");
        assert_eq!(js_to_fixed(1.005, 2), "1.00");
    }

    fn trend(values: impl IntoIterator<Item = f64>) -> Values {
        let mut trend = TrendValues::new();
        values.into_iter().for_each(|v| trend.record(v));
        Values::Trend(trend)
    }

    fn outcome(key: &str, expression: &str, ok: bool) -> ThresholdOutcome {
        ThresholdOutcome {
            metric_key: key.to_string(),
            expression: expression.to_string(),
            observed: 0.0,
            ok,
        }
    }

    /// A run of 70 s: 120 generations, 10 of them refused for credits.
    fn fixed_snapshot() -> Snapshot {
        use ValueType::{Data, Default, Time};
        let generate_ms = (0..120).map(|i| 1500.0 + 25.0 * f64::from(i));
        let login_ms = (0..120).map(|i| 40.0 + 0.5 * f64::from(i));
        Snapshot {
            elapsed: Duration::from_secs(70),
            metrics: vec![
                MetricSnapshot::of(
                    "vus_max",
                    &[],
                    Default,
                    Values::Gauge {
                        value: 10.0,
                        min: 10.0,
                        max: 10.0,
                    },
                ),
                MetricSnapshot::of(
                    "checks",
                    &[],
                    Default,
                    Values::Rate {
                        passes: 590,
                        fails: 10,
                    },
                ),
                MetricSnapshot::of(
                    "credit_errors",
                    &[],
                    Default,
                    Values::Counter { count: 10.0 },
                ),
                MetricSnapshot::of(
                    "data_received",
                    &[],
                    Data,
                    Values::Counter { count: 48_049.0 },
                ),
                MetricSnapshot::of("data_sent", &[], Data, Values::Counter { count: 9_216.0 }),
                MetricSnapshot::of(
                    "errors",
                    &[],
                    Default,
                    Values::Rate {
                        passes: 10,
                        fails: 110,
                    },
                ),
                MetricSnapshot::of(
                    "generation_success",
                    &[],
                    Default,
                    Values::Rate {
                        passes: 110,
                        fails: 0,
                    },
                ),
                MetricSnapshot::of(
                    "http_req_duration",
                    &[],
                    Time,
                    trend(generate_ms.clone().chain(login_ms)),
                ),
                MetricSnapshot::of(
                    "http_req_duration",
                    &[("endpoint", "seedream4")],
                    Time,
                    trend(generate_ms.clone()),
                ),
                MetricSnapshot::of(
                    "http_req_failed",
                    &[],
                    Default,
                    Values::Rate {
                        passes: 10,
                        fails: 230,
                    },
                ),
                MetricSnapshot::of("http_reqs", &[], Default, Values::Counter { count: 240.0 }),
                MetricSnapshot::of(
                    "iteration_duration",
                    &[],
                    Time,
                    trend((0..120).map(|i| 3600.0 + 80.0 * f64::from(i))),
                ),
                MetricSnapshot::of("iterations", &[], Default, Values::Counter { count: 120.0 }),
                MetricSnapshot::of("response_time", &[], Default, trend(generate_ms)),
                MetricSnapshot::of(
                    "vus",
                    &[],
                    Default,
                    Values::Gauge {
                        value: 0.0,
                        min: 0.0,
                        max: 10.0,
                    },
                ),
            ],
            checks: vec![
                CheckTally {
                    name: "login successful".into(),
                    passes: 120,
                    fails: 0,
                },
                CheckTally {
                    name: "login returned token".into(),
                    passes: 120,
                    fails: 0,
                },
                CheckTally {
                    name: "status is 202".into(),
                    passes: 110,
                    fails: 10,
                },
                CheckTally {
                    name: "has session_id".into(),
                    passes: 120,
                    fails: 0,
                },
            ],
            thresholds: vec![
                outcome("errors", "rate<0.10", true),
                outcome("response_time", "p(95)<30000", true),
                outcome("generation_success", "rate>0.80", true),
                outcome("http_req_failed", "rate<0.10", true),
                outcome("http_req_duration", "p(99)<60000", true),
                outcome("http_req_duration{endpoint:seedream4}", "p(95)<4000", false),
            ],
        }
    }

    #[test]
    fn classic_summary_layout() {
        let expected = include_str!("../../tests/snapshots/summary.txt");
        assert_eq!(render(&fixed_snapshot(), false), expected);
    }

    #[test]
    fn colours_marks_values_and_dots() {
        let text = render(&fixed_snapshot(), true);
        assert!(text.contains("\x1b[32m     ✓ login successful\x1b[0m"));
        assert!(text.contains("\x1b[31m     ✗ status is 202\n      ↳  91% — ✓ 110 / ✗ 10\x1b[0m"));
        assert!(text.contains("   \x1b[32m✓\x1b[0m errors\x1b[2m"));
        assert!(text.contains("     \x1b[31m✗\x1b[0m { endpoint:seedream4 }\x1b[2m"));
        assert!(text.contains("\x1b[36m240\x1b[0m"));
        assert!(text.contains("\x1b[36;2m3.428571/s\x1b[0m"));
        let plain = render(&fixed_snapshot(), false);
        assert!(!plain.contains('\x1b'));
    }

    #[test]
    fn empty_snapshot_renders_without_checks_block() {
        let snapshot = Snapshot {
            elapsed: Duration::ZERO,
            metrics: vec![MetricSnapshot::of(
                "http_reqs",
                &[],
                ValueType::Default,
                Values::Counter { count: 0.0 },
            )],
            checks: Vec::new(),
            thresholds: Vec::new(),
        };
        assert_eq!(render(&snapshot, false), "\n     http_reqs...: 0 0/s\n\n");
    }
}
