//! k6's end-of-test summary. The classic layout (k6 0.4x `textSummary`,
//! `--summary-mode legacy`, the default): checks first, then every metric on
//! a dotted line, sorted by name with sub-metrics indented under their
//! parent, values humanized with k6's rules, and a ✓/✗ before every metric
//! that has thresholds. k6 1.x's grouped layout (`compact`, `full`): a
//! THRESHOLDS block, then TOTAL RESULTS with the check totals and the
//! metrics under CUSTOM, HTTP, EXECUTION and NETWORK; `compact` leaves out
//! the HTTP timing breakdown (blocked, connecting, sending, waiting, …).

use std::cmp::Ordering;

use crate::snapshot::{
    CheckTally, MetricSnapshot, Snapshot, ThresholdOutcome, TrendValues, ValueType, Values,
};

const CHECK_INDENT: &str = "     ";
/// A failed check's `↳` line, in both layouts.
const DETAIL_INDENT: &str = "      ";
const METRIC_INDENT: &str = "   ";
const SUB_METRIC_INDENT: &str = "  ";
const GROUPED_INDENT: &str = "    ";
const PASS: &str = "✓";
const FAIL: &str = "✗";

const GREEN: &str = "32";
const RED: &str = "31";
const CYAN: &str = "36";
const FAINT_CYAN: &str = "36;2";
const FAINT: &str = "2";

/// `--summary-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SummaryMode {
    /// k6 1.x's grouped layout, the HTTP timing breakdown left out.
    Compact,
    /// The grouped layout with every metric.
    Full,
    /// The classic layout (k6 before 1.0): loadgen's default, the guide's.
    Legacy,
}

impl SummaryMode {
    pub fn parse(text: &str) -> Result<SummaryMode, String> {
        match text {
            "compact" => Ok(SummaryMode::Compact),
            "full" => Ok(SummaryMode::Full),
            "legacy" => Ok(SummaryMode::Legacy),
            other => Err(format!("{other:?}: expected compact, full or legacy")),
        }
    }
}

/// One column of a trend line (`--summary-trend-stats`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrendStat {
    Avg,
    Min,
    Med,
    Max,
    Count,
    Percentile(f64),
}

impl TrendStat {
    /// k6's list: `avg,min,med,max,p(90),p(95),p(99),count`.
    pub fn parse_list(text: &str) -> Result<Vec<TrendStat>, String> {
        text.split(',')
            .map(|stat| match stat.trim() {
                "avg" => Ok(TrendStat::Avg),
                "min" => Ok(TrendStat::Min),
                "med" => Ok(TrendStat::Med),
                "max" => Ok(TrendStat::Max),
                "count" => Ok(TrendStat::Count),
                other => other
                    .strip_prefix("p(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .and_then(|p| p.parse::<f64>().ok())
                    .filter(|p| (0.0..=100.0).contains(p))
                    .map(TrendStat::Percentile)
                    .ok_or_else(|| {
                        format!("stat {other:?} is unknown: expected avg, min, med, max, count or p(N) with N in 0..=100")
                    }),
            })
            .collect()
    }

    /// The stat of `trend`, in the trend's unit (`count` a plain number).
    pub fn value(self, trend: &TrendValues) -> f64 {
        match self {
            TrendStat::Avg => trend.avg(),
            TrendStat::Min => trend.min_or_zero(),
            TrendStat::Med => trend.med(),
            TrendStat::Max => trend.max_or_zero(),
            TrendStat::Percentile(p) => trend.percentile(p),
            TrendStat::Count => trend.count() as f64,
        }
    }

    /// Its name in k6's summary and export: `avg`, `p(95)`, `count`…
    pub fn label(self) -> String {
        match self {
            TrendStat::Avg => "avg".into(),
            TrendStat::Min => "min".into(),
            TrendStat::Med => "med".into(),
            TrendStat::Max => "max".into(),
            TrendStat::Count => "count".into(),
            TrendStat::Percentile(p) => format!("p({})", js_number(p)),
        }
    }
}

/// k6's default `summaryTrendStats`.
pub const DEFAULT_TREND_STATS: [TrendStat; 6] = [
    TrendStat::Avg,
    TrendStat::Min,
    TrendStat::Med,
    TrendStat::Max,
    TrendStat::Percentile(90.0),
    TrendStat::Percentile(95.0),
];

/// `--summary-time-unit`: every time value in this unit, two decimals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    Seconds,
    Millis,
    Micros,
}

impl TimeUnit {
    pub fn parse(text: &str) -> Result<TimeUnit, String> {
        match text {
            "s" => Ok(TimeUnit::Seconds),
            "ms" => Ok(TimeUnit::Millis),
            "us" => Ok(TimeUnit::Micros),
            other => Err(format!("{other:?}: expected s, ms or us")),
        }
    }

    fn format(self, millis: f64) -> String {
        let (coefficient, unit) = match self {
            TimeUnit::Seconds => (0.001, "s"),
            TimeUnit::Millis => (1.0, "ms"),
            TimeUnit::Micros => (1000.0, "µs"),
        };
        format!("{}{unit}", js_to_fixed(millis * coefficient, 2))
    }
}

/// How the summary is laid out and its values written.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryStyle {
    pub mode: SummaryMode,
    pub trend_stats: Vec<TrendStat>,
    pub time_unit: Option<TimeUnit>,
    /// k6's ANSI colours: green ✓, red ✗, cyan values, faint dots.
    pub color: bool,
}

impl Default for SummaryStyle {
    fn default() -> SummaryStyle {
        SummaryStyle {
            mode: SummaryMode::Legacy,
            trend_stats: DEFAULT_TREND_STATS.to_vec(),
            time_unit: None,
            color: false,
        }
    }
}

/// The summary exactly as k6 prints it on stdout (blank line before, blank
/// line after).
pub fn render(snapshot: &Snapshot, style: &SummaryStyle) -> String {
    match style.mode {
        SummaryMode::Legacy => render_classic(snapshot, style),
        SummaryMode::Compact | SummaryMode::Full => render_grouped(snapshot, style),
    }
}

fn render_classic(snapshot: &Snapshot, style: &SummaryStyle) -> String {
    let paint = Paint { color: style.color };
    let mut lines: Vec<String> = snapshot
        .checks
        .iter()
        .map(|check| check_line(check, CHECK_INDENT, paint))
        .collect();
    if !lines.is_empty() {
        lines.push(String::new());
    }
    let metrics: Vec<&MetricSnapshot> = snapshot.metrics.iter().collect();
    lines.extend(
        metric_lines(&metrics, snapshot, style, false)
            .into_iter()
            .map(|(line, _)| line),
    );
    format!("\n{}\n\n", lines.join("\n"))
}

/// k6 1.x's sections of TOTAL RESULTS, in its order.
const SECTIONS: [&str; 4] = ["CUSTOM", "HTTP", "EXECUTION", "NETWORK"];

fn section_of(name: &str) -> &'static str {
    match name {
        "iteration_duration" | "iterations" | "vus" | "vus_max" | "dropped_iterations" => {
            "EXECUTION"
        }
        "data_received" | "data_sent" => "NETWORK",
        name if name.starts_with("http_") => "HTTP",
        _ => "CUSTOM",
    }
}

/// What `compact` shows of the HTTP section.
fn in_compact(name: &str) -> bool {
    section_of(name) != "HTTP"
        || matches!(name, "http_req_duration" | "http_req_failed" | "http_reqs")
}

fn render_grouped(snapshot: &Snapshot, style: &SummaryStyle) -> String {
    let paint = Paint { color: style.color };
    let mut out = String::from("\n");
    if !snapshot.thresholds.is_empty() {
        out.push_str("  █ THRESHOLDS \n\n");
        let mut keys: Vec<&str> = snapshot
            .thresholds
            .iter()
            .map(|t| t.metric_key.as_str())
            .collect();
        keys.sort_by(|a, b| compare_keys(a, b));
        keys.dedup();
        for key in keys {
            out.push_str(&format!("{GROUPED_INDENT}{key}\n"));
            let contains = snapshot
                .metric(key)
                .map_or(ValueType::Default, |m| m.contains);
            for outcome in snapshot.thresholds.iter().filter(|t| t.metric_key == key) {
                out.push_str(&threshold_line(outcome, contains, style, paint));
                out.push('\n');
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str("  █ TOTAL RESULTS \n\n");
    if !snapshot.checks.is_empty() {
        // k6 1.x's check totals are its `checks` rate metric.
        let (passes, fails) = match snapshot.metric("checks").map(|m| &m.values) {
            Some(Values::Rate { passes, fails }) => (*passes, *fails),
            _ => snapshot
                .checks
                .iter()
                .fold((0, 0), |(p, f), c| (p + c.passes, f + c.fails)),
        };
        let total = passes + fails;
        let share = |n: u64| {
            if total == 0 {
                0.0
            } else {
                n as f64 / total as f64
            }
        };
        let rows = [
            (
                "checks_total",
                fixed_no_trailing_zeros(total as f64, 6),
                format!(
                    "{}/s",
                    fixed_no_trailing_zeros(snapshot.per_second(total as f64), 6)
                ),
            ),
            (
                "checks_succeeded",
                percent(share(passes)),
                format!("{passes} out of {total}"),
            ),
            (
                "checks_failed",
                percent(share(fails)),
                format!("{fails} out of {total}"),
            ),
        ];
        let name_width = rows.iter().map(|r| width(r.0)).max().unwrap_or(0);
        let value_width = rows.iter().map(|r| width(&r.1)).max().unwrap_or(0);
        for (name, value, extra) in rows {
            let dots = ".".repeat(name_width + 3 - width(name));
            out.push_str(&format!(
                "{GROUPED_INDENT}{name}{} {}{} {}\n",
                paint.apply(&format!("{dots}:"), FAINT),
                paint.apply(&value, CYAN),
                pad(&value, value_width),
                paint.apply(&extra, FAINT_CYAN),
            ));
        }
        out.push('\n');
        for check in &snapshot.checks {
            out.push_str(&check_line(check, GROUPED_INDENT, paint));
            out.push('\n');
        }
        out.push('\n');
    }
    let metrics: Vec<&MetricSnapshot> = snapshot
        .metrics
        .iter()
        .filter(|m| m.name != "checks")
        .filter(|m| style.mode == SummaryMode::Full || in_compact(&m.name))
        .collect();
    let lines = metric_lines(&metrics, snapshot, style, true);
    for section in SECTIONS {
        let own: Vec<&String> = lines
            .iter()
            .filter(|(_, metric)| section_of(&metric.name) == section)
            .map(|(line, _)| line)
            .collect();
        if own.is_empty() {
            continue;
        }
        out.push_str(&format!("{GROUPED_INDENT}{section}\n"));
        for line in own {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// `    ✓ 'p(95)<500' p(95)=31.5ms`: the expression and what was observed.
fn threshold_line(
    outcome: &ThresholdOutcome,
    contains: ValueType,
    style: &SummaryStyle,
    paint: Paint,
) -> String {
    let aggregate = outcome
        .expression
        .split(['<', '>', '=', '!'])
        .next()
        .unwrap_or("")
        .trim();
    let observed = if aggregate == "rate" && contains == ValueType::Default {
        percent(outcome.observed)
    } else if aggregate == "count" {
        fixed_no_trailing_zeros(outcome.observed, 6)
    } else {
        humanize(outcome.observed, contains, style.time_unit)
    };
    let (mark, code) = if outcome.ok {
        (PASS, GREEN)
    } else {
        (FAIL, RED)
    };
    format!(
        "{GROUPED_INDENT}{} '{}' {aggregate}={}",
        paint.apply(mark, code),
        outcome.expression,
        paint.apply(&observed, CYAN)
    )
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

fn check_line(check: &CheckTally, indent: &str, paint: Paint) -> String {
    if check.fails == 0 {
        return paint.apply(&format!("{indent}{PASS} {}", check.name), GREEN);
    }
    let total = check.passes + check.fails;
    let percent = 100 * check.passes / total;
    let text = format!(
        "{indent}{FAIL} {name}\n{DETAIL_INDENT}↳  {percent}% — {PASS} {passes} / {FAIL} {fails}",
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

/// One line per metric, sorted as k6 sorts them, with the metric each
/// describes. `grouped`: k6 1.x's lines (no threshold mark, rates as
/// `N out of M`); otherwise the classic ones.
fn metric_lines<'a>(
    metrics: &[&'a MetricSnapshot],
    snapshot: &Snapshot,
    style: &SummaryStyle,
    grouped: bool,
) -> Vec<(String, &'a MetricSnapshot)> {
    let paint = Paint { color: style.color };
    let mut rows: Vec<Row> = metrics
        .iter()
        .map(|metric| row(metric, snapshot, style, grouped))
        .collect();
    rows.sort_by(|a, b| compare_keys(&a.metric.key(), &b.metric.key()));

    let name_width = rows
        .iter()
        .map(|row| width(row.indent) + width(&row.name))
        .max()
        .unwrap_or(0);
    let mut trend_widths = vec![0; style.trend_stats.len()];
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
                Cells::Trend(columns) => style
                    .trend_stats
                    .iter()
                    .zip(columns)
                    .zip(&trend_widths)
                    .map(|((stat, column), max)| {
                        format!(
                            "{}={}{}",
                            stat.label(),
                            paint.apply(column, CYAN),
                            pad(column, *max)
                        )
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
            let lead = if grouped {
                format!("{GROUPED_INDENT}{}", row.indent)
            } else {
                format!(
                    "{METRIC_INDENT}{}{} ",
                    row.indent,
                    threshold_mark(&row.metric.key(), &snapshot.thresholds, paint)
                )
            };
            let line = format!(
                "{lead}{name}{dots} {data}",
                name = row.name,
                dots = paint.apply(&format!("{dots}:"), FAINT),
            );
            (line, row.metric)
        })
        .collect()
}

fn row<'a>(
    metric: &'a MetricSnapshot,
    snapshot: &Snapshot,
    style: &SummaryStyle,
    grouped: bool,
) -> Row<'a> {
    let (indent, name) = if metric.tags.is_empty() {
        ("", metric.name.clone())
    } else {
        let key = metric.key();
        let tags = &key[metric.name.len() + 1..key.len() - 1];
        (SUB_METRIC_INDENT, format!("{{ {tags} }}"))
    };
    let humanize = |value: f64| humanize(value, metric.contains, style.time_unit);
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
            let extras = if grouped {
                vec![format!("{passes} out of {}", passes + fails)]
            } else {
                vec![format!("{PASS} {passes}"), format!("{FAIL} {fails}")]
            };
            Cells::Plain(percent(rate), extras)
        }
        Values::Trend(trend) => Cells::Trend(
            style
                .trend_stats
                .iter()
                .map(|stat| match stat {
                    TrendStat::Count => trend.count().to_string(),
                    stat => humanize(stat.value(trend)),
                })
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
fn humanize(value: f64, contains: ValueType, time_unit: Option<TimeUnit>) -> String {
    match contains {
        ValueType::Data => humanize_bytes(value),
        ValueType::Time => match time_unit {
            Some(unit) => unit.format(value),
            None => humanize_duration(value),
        },
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

    /// The values' formatting, pinned; the layout itself is k6's, checked
    /// against k6's own `--summary-mode legacy` by tests/summary_layout.rs.
    #[test]
    fn classic_summary_layout() {
        let expected = include_str!("../../tests/snapshots/summary.txt");
        assert_eq!(
            render(&fixed_snapshot(), &SummaryStyle::default()),
            expected
        );
    }

    #[test]
    fn colours_marks_values_and_dots() {
        let text = render(
            &fixed_snapshot(),
            &SummaryStyle {
                color: true,
                ..SummaryStyle::default()
            },
        );
        assert!(text.contains("\x1b[32m     ✓ login successful\x1b[0m"));
        assert!(text.contains("\x1b[31m     ✗ status is 202\n      ↳  91% — ✓ 110 / ✗ 10\x1b[0m"));
        assert!(text.contains("   \x1b[32m✓\x1b[0m errors\x1b[2m"));
        assert!(text.contains("     \x1b[31m✗\x1b[0m { endpoint:seedream4 }\x1b[2m"));
        assert!(text.contains("\x1b[36m240\x1b[0m"));
        assert!(text.contains("\x1b[36;2m3.428571/s\x1b[0m"));
        let plain = render(&fixed_snapshot(), &SummaryStyle::default());
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
        assert_eq!(
            render(&snapshot, &SummaryStyle::default()),
            "\n     http_reqs...: 0 0/s\n\n"
        );
    }

    #[test]
    fn trend_stats_and_time_unit_as_asked() {
        let style = SummaryStyle {
            trend_stats: TrendStat::parse_list("avg,p(99),count").unwrap(),
            time_unit: Some(TimeUnit::parse("ms").unwrap()),
            ..SummaryStyle::default()
        };
        let text = render(&fixed_snapshot(), &style);
        let line = text
            .lines()
            .find(|line| line.contains("http_req_duration."))
            .unwrap();
        assert!(line.contains(": avg="), "{line}");
        assert!(line.contains(" p(99)="), "{line}");
        assert!(line.contains(" count="), "{line}");
        assert!(!line.contains("med="), "{line}");
        // Two decimals in the unit asked for, never humanized.
        let avg = line
            .split("avg=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        assert!(
            avg.ends_with("ms") && avg.split('.').nth(1).unwrap().len() == 4,
            "{avg}"
        );
        assert_eq!(TimeUnit::Seconds.format(1500.0), "1.50s");
        assert_eq!(TimeUnit::Micros.format(0.0125), "12.50µs");
        assert!(TrendStat::parse_list("avg,p(101)").is_err());
        assert!(TrendStat::parse_list("mean").is_err());
        assert!(TimeUnit::parse("h").is_err());
        assert!(SummaryMode::parse("short").is_err());
    }

    #[test]
    fn compact_layout_groups_thresholds_checks_and_metrics() {
        let style = SummaryStyle {
            mode: SummaryMode::Compact,
            ..SummaryStyle::default()
        };
        let mut snapshot = fixed_snapshot();
        snapshot.metrics.push(MetricSnapshot::of(
            "http_req_waiting",
            &[],
            ValueType::Time,
            trend([1.0, 2.0]),
        ));
        let text = render(&snapshot, &style);
        let thresholds = text.find("  █ THRESHOLDS \n").expect("a THRESHOLDS block");
        let results = text
            .find("  █ TOTAL RESULTS \n")
            .expect("a TOTAL RESULTS block");
        assert!(thresholds < results, "{text}");
        assert!(
            text.contains("\n    errors\n    ✓ 'rate<0.10' rate="),
            "{text}"
        );
        assert!(
            text.contains("\n    http_req_duration{endpoint:seedream4}\n    ✗ 'p(95)<4000' p(95)="),
            "{text}"
        );
        assert!(text.contains("    checks_total.......: 600    "), "{text}");
        assert!(
            text.contains("    checks_succeeded...: 98.33% 590 out of 600\n"),
            "{text}"
        );
        assert!(
            text.contains("    ✗ status is 202\n      ↳  91% — ✓ 110 / ✗ 10"),
            "{text}"
        );
        let order: Vec<usize> = [
            "\n    CUSTOM\n",
            "\n    HTTP\n",
            "\n    EXECUTION\n",
            "\n    NETWORK\n",
        ]
        .iter()
        .map(|section| {
            text.find(section)
                .unwrap_or_else(|| panic!("{section}: {text}"))
        })
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
        // Rates as k6 1.x writes them, and no timing breakdown in compact.
        assert!(text.contains(" out of "), "{text}");
        assert!(!text.contains("http_req_waiting"), "{text}");
        assert!(!text.contains("    checks...."), "{text}");
        let full = render(
            &snapshot,
            &SummaryStyle {
                mode: SummaryMode::Full,
                ..SummaryStyle::default()
            },
        );
        assert!(full.contains("    http_req_waiting."), "{full}");
    }
}
