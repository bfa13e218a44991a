//! `--report FILE.html`: one self-contained HTML page (styles inline, charts
//! as inline SVG drawn here, no scripts, no network) with the run's charts
//! over time, its thresholds, checks, audit verdict and configuration.
//!
//! The charts come from the per-second time series, so the page grows with
//! the run's duration in seconds, not with its request count: a 30-minute
//! soak is 1,800 points per line.

use std::fmt::Write;

use crate::snapshot::Snapshot;

/// One line of a chart: `(seconds since start, value)` points.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub title: String,
    /// Unit of the y axis, e.g. `ms`, `req/s`.
    pub unit: String,
    pub lines: Vec<Line>,
}

/// One invariant of the ledger audit as the report shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRow {
    pub id: String,
    pub description: String,
    pub violations: u64,
    pub samples: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Report<'a> {
    pub title: String,
    pub snapshot: &'a Snapshot,
    pub charts: Vec<Chart>,
    /// `None` when no audit ran (no database to audit).
    pub audit: Option<Vec<AuditRow>>,
    pub config: Vec<(String, String)>,
}

const PALETTE: [&str; 6] = [
    "#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

pub fn render(report: &Report) -> String {
    let snapshot = report.snapshot;
    let thresholds_ok = snapshot.thresholds.iter().all(|t| t.ok);
    let audit_ok = report
        .audit
        .as_ref()
        .map(|rows| rows.iter().all(|r| r.violations == 0));
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <h1>{title}</h1><p class=\"verdicts\">{thresholds}{audit} \
         <span class=\"muted\">duration {secs:.1} s</span></p>",
        title = escape(&report.title),
        thresholds = badge("thresholds", Some(thresholds_ok)),
        audit = badge("audit", audit_ok),
        secs = snapshot.elapsed.as_secs_f64(),
    );
    html.push_str("<section class=\"charts\">");
    for chart in &report.charts {
        render_chart(&mut html, chart);
    }
    html.push_str("</section>");
    render_thresholds(&mut html, snapshot);
    render_checks(&mut html, snapshot);
    render_audit(&mut html, report.audit.as_deref());
    html.push_str("<h2>Configuration</h2><table><tbody>");
    for (key, value) in &report.config {
        let _ = write!(
            html,
            "<tr><th>{}</th><td><code>{}</code></td></tr>",
            escape(key),
            escape(value)
        );
    }
    html.push_str("</tbody></table></body></html>\n");
    html
}

fn badge(what: &str, ok: Option<bool>) -> String {
    match ok {
        Some(true) => format!("<span class=\"badge ok\">{what} ✓</span>"),
        Some(false) => format!("<span class=\"badge bad\">{what} ✗</span>"),
        None => format!("<span class=\"badge\">{what}: not run</span>"),
    }
}

fn render_chart(html: &mut String, chart: &Chart) {
    let points: usize = chart.lines.iter().map(|l| l.points.len()).sum();
    let x_max = chart
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let y_max = nice_ceiling(
        chart
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0_f64, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let _ = write!(
        html,
        "<figure class=\"chart\" data-points=\"{points}\"><figcaption>{title} <span class=\"muted\">({unit})</span></figcaption>\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\">",
        title = escape(&chart.title),
        unit = escape(&chart.unit),
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            html,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/>\
             <text class=\"tick\" x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
            x2 = WIDTH - RIGHT,
            yy = y(v),
            tx = LEFT - 6.0,
            ty = y(v) + 4.0,
            label = short_number(v),
        );
    }
    for i in 0..=4 {
        let t = x_max * f64::from(i) / 4.0;
        let _ = write!(
            html,
            "<text class=\"tick\" x=\"{tx:.1}\" y=\"{ty}\" text-anchor=\"middle\">{label}s</text>",
            tx = x(t),
            ty = HEIGHT - 8.0,
            label = short_number(t),
        );
    }
    if points == 0 {
        let _ = write!(
            html,
            "<text class=\"empty\" x=\"{cx}\" y=\"{cy}\" text-anchor=\"middle\">no samples in this run</text>",
            cx = LEFT + plot_w / 2.0,
            cy = TOP + plot_h / 2.0,
        );
    }
    for (i, line) in chart.lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut coords = String::with_capacity(line.points.len() * 12);
        for &(t, v) in &line.points {
            let _ = write!(coords, "{:.1},{:.1} ", x(t), y(v));
        }
        let _ = write!(
            html,
            "<polyline class=\"series\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{}\"><title>{}</title></polyline>",
            coords.trim_end(),
            escape(&line.name)
        );
    }
    html.push_str("</svg><div class=\"legend\">");
    for (i, line) in chart.lines.iter().enumerate() {
        let _ = write!(
            html,
            "<span><i style=\"background:{}\"></i>{}</span>",
            PALETTE[i % PALETTE.len()],
            escape(&line.name)
        );
    }
    html.push_str("</div></figure>");
}

fn render_thresholds(html: &mut String, snapshot: &Snapshot) {
    html.push_str(
        "<h2>Thresholds</h2><table><thead><tr><th></th><th>metric</th><th>expression</th><th>observed</th></tr></thead><tbody>",
    );
    if snapshot.thresholds.is_empty() {
        html.push_str("<tr><td colspan=\"4\" class=\"muted\">no thresholds</td></tr>");
    }
    for t in &snapshot.thresholds {
        let _ = write!(
            html,
            "<tr class=\"{class}\"><td>{mark}</td><td><code>{metric}</code></td><td><code>{expr}</code></td><td>{observed}</td></tr>",
            class = if t.ok { "ok" } else { "bad" },
            mark = if t.ok { "✓" } else { "✗" },
            metric = escape(&t.metric_key),
            expr = escape(&t.expression),
            observed = short_number(t.observed),
        );
    }
    html.push_str("</tbody></table>");
}

fn render_checks(html: &mut String, snapshot: &Snapshot) {
    html.push_str(
        "<h2>Checks</h2><table><thead><tr><th></th><th>check</th><th>passes</th><th>fails</th><th>rate</th></tr></thead><tbody>",
    );
    if snapshot.checks.is_empty() {
        html.push_str("<tr><td colspan=\"5\" class=\"muted\">no checks ran</td></tr>");
    }
    for c in &snapshot.checks {
        let total = c.passes + c.fails;
        let rate = if total == 0 {
            0.0
        } else {
            c.passes as f64 * 100.0 / total as f64
        };
        let ok = c.fails == 0;
        let _ = write!(
            html,
            "<tr class=\"{class}\"><td>{mark}</td><td>{name}</td><td>{passes}</td><td>{fails}</td><td>{rate:.2}%</td></tr>",
            class = if ok { "ok" } else { "bad" },
            mark = if ok { "✓" } else { "✗" },
            name = escape(&c.name),
            passes = c.passes,
            fails = c.fails,
        );
    }
    html.push_str("</tbody></table>");
}

fn render_audit(html: &mut String, audit: Option<&[AuditRow]>) {
    html.push_str("<h2>Ledger audit</h2>");
    let Some(rows) = audit else {
        html.push_str("<p class=\"muted\">No audit: the run had no database to audit (use --spawn-mock, or run <code>loadgen audit --database-url URL</code>).</p>");
        return;
    };
    html.push_str("<table><thead><tr><th></th><th>invariant</th><th>violations</th><th>sample ids</th></tr></thead><tbody>");
    for row in rows {
        let ok = row.violations == 0;
        let _ = write!(
            html,
            "<tr class=\"{class}\"><td>{mark}</td><td><b>{id}</b> {desc}</td><td>{count}</td><td><code>{samples}</code></td></tr>",
            class = if ok { "ok" } else { "bad" },
            mark = if ok { "✓" } else { "✗" },
            id = escape(&row.id),
            desc = escape(&row.description),
            count = row.violations,
            samples = escape(&row.samples.join(", ")),
        );
    }
    html.push_str("</tbody></table>");
}

/// The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above `v` (1 when `v` is 0),
/// so axis ticks land on round numbers.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * magnitude)
}

fn short_number(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#111;padding:0 16px}\
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}\
.muted{color:#666}.badge{display:inline-block;padding:2px 10px;border-radius:10px;background:#eee;margin-right:6px}\
.badge.ok{background:#dcfce7;color:#166534}.badge.bad{background:#fee2e2;color:#991b1b}\
.charts{display:grid;grid-template-columns:1fr;gap:14px}.chart{margin:0;border:1px solid #e5e5e5;border-radius:6px;padding:8px}\
figcaption{font-weight:600;margin-bottom:4px}svg{width:100%;height:auto}\
.grid{stroke:#eee;stroke-width:1}.tick{font-size:10px;fill:#666}.empty{font-size:13px;fill:#999}\
.legend span{margin-right:14px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee;vertical-align:top}\
tr.ok td:first-child{color:#16a34a}tr.bad td:first-child{color:#dc2626}tr.bad{background:#fff5f5}code{font-size:12px}";

/// The report's charts from the run's per-second series: active VUs,
/// requests/s, response time p50/p95/p99 per endpoint, errors by kind and,
/// when sessions were tracked, end-to-end generation latency.
pub fn charts(series: &[crate::metrics::SeriesPoint]) -> Vec<Chart> {
    let line = |name: &str, value: &dyn Fn(&crate::metrics::SeriesPoint) -> Option<f64>| Line {
        name: name.to_string(),
        points: series
            .iter()
            .filter_map(|p| value(p).map(|v| (f64::from(p.second), v)))
            .collect(),
    };
    let mut charts = vec![
        Chart {
            title: "Active VUs".into(),
            unit: "VUs".into(),
            lines: vec![line("vus", &|p| Some(p.vus as f64))],
        },
        Chart {
            title: "Requests per second".into(),
            unit: "req/s".into(),
            lines: vec![
                line("http_reqs", &|p| Some(p.requests as f64)),
                line("failed", &|p| Some(p.failed_requests as f64)),
            ],
        },
    ];
    let endpoints: std::collections::BTreeSet<&String> =
        series.iter().flat_map(|p| p.response_time.keys()).collect();
    for endpoint in endpoints {
        charts.push(Chart {
            title: format!("Response time: {endpoint}"),
            unit: "ms".into(),
            lines: ["p50", "p95", "p99"]
                .iter()
                .enumerate()
                .map(|(i, name)| line(name, &|p| p.response_time.get(endpoint).map(|v| v[i])))
                .collect(),
        });
    }
    charts.push(Chart {
        title: "Errors by kind".into(),
        unit: "per s".into(),
        lines: vec![
            line("credit", &|p| Some(p.credit_errors as f64)),
            line("provider", &|p| Some(p.provider_errors as f64)),
            line("timeout", &|p| Some(p.timeouts as f64)),
            line("connection", &|p| Some(p.connection_errors as f64)),
        ],
    });
    if series.iter().any(|p| p.generation_e2e.is_some()) {
        charts.push(Chart {
            title: "Generation end to end (created_at → completed_at)".into(),
            unit: "ms".into(),
            lines: ["p50", "p95", "p99"]
                .iter()
                .enumerate()
                .map(|(i, name)| line(name, &|p| p.generation_e2e.map(|v| v[i])))
                .collect(),
        });
    }
    charts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{CheckTally, ThresholdOutcome};
    use std::time::Duration;

    fn snapshot() -> Snapshot {
        Snapshot {
            elapsed: Duration::from_secs(12),
            metrics: vec![],
            checks: vec![CheckTally {
                name: "status is 202".into(),
                passes: 9,
                fails: 1,
            }],
            thresholds: vec![ThresholdOutcome {
                metric_key: "errors".into(),
                expression: "rate<0.10".into(),
                observed: 0.1,
                ok: false,
            }],
        }
    }

    #[test]
    fn renders_every_chart_and_escapes_text() {
        let snapshot = snapshot();
        let report = Report {
            title: "run <1>".into(),
            snapshot: &snapshot,
            charts: vec![
                Chart {
                    title: "VUs".into(),
                    unit: "VUs".into(),
                    lines: vec![Line {
                        name: "vus".into(),
                        points: vec![(0.0, 1.0), (1.0, 5.0)],
                    }],
                },
                Chart {
                    title: "empty".into(),
                    unit: "ms".into(),
                    lines: vec![],
                },
            ],
            audit: Some(vec![AuditRow {
                id: "I6".into(),
                description: "credits add up".into(),
                violations: 1,
                samples: vec!["u-1".into()],
            }]),
            config: vec![("stages".into(), "2s:5".into())],
        };
        let html = render(&report);
        assert_eq!(html.matches("<figure class=\"chart\"").count(), 2);
        assert!(html.contains("run &lt;1&gt;"));
        assert!(html.contains("<polyline"));
        assert!(html.contains("no samples in this run"));
        assert!(html.contains("audit ✗"));
        assert!(html.contains("thresholds ✗"));
        assert!(!html.contains("<script"), "the page needs no scripts");
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn axis_ceilings_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(2300.0), 2500.0);
    }
}
