//! The HTML report in a real browser: headless Chromium loads it with no
//! console errors and every chart is drawn; one test leaves a screenshot
//! (`target/report-screenshot.png`) for a person to look at.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use loadgen::output::report::{render, AuditRow, Chart, Line, Report};
use loadgen::snapshot::{CheckTally, Snapshot, ThresholdOutcome};

/// A browser that has not rendered a local page by then is hung.
const BROWSER_DEADLINE: Duration = Duration::from_secs(90);

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (apt-get install chromium)"
        );
        eprintln!("SKIP: chromium not installed");
    }
    found
}

fn sample_page(dir: &Path) -> PathBuf {
    let snapshot = Snapshot {
        elapsed: Duration::from_secs(70),
        metrics: vec![],
        checks: vec![
            CheckTally {
                name: "login successful".into(),
                passes: 120,
                fails: 0,
            },
            CheckTally {
                name: "status is 202".into(),
                passes: 110,
                fails: 10,
            },
        ],
        thresholds: vec![ThresholdOutcome {
            metric_key: "http_req_duration".into(),
            expression: "p(99)<60000".into(),
            observed: 812.0,
            ok: true,
        }],
    };
    let wave = |scale: f64| -> Vec<(f64, f64)> {
        (0..70)
            .map(|s| (f64::from(s), scale * (1.0 + (f64::from(s) / 9.0).sin())))
            .collect()
    };
    let charts = vec![
        Chart {
            title: "Active VUs".into(),
            unit: "VUs".into(),
            lines: vec![Line {
                name: "vus".into(),
                points: wave(5.0),
            }],
        },
        Chart {
            title: "Requests per second".into(),
            unit: "req/s".into(),
            lines: vec![Line {
                name: "http_reqs".into(),
                points: wave(20.0),
            }],
        },
        Chart {
            title: "seedream4 response time".into(),
            unit: "ms".into(),
            lines: ["p50", "p95", "p99"]
                .iter()
                .zip([1.0, 2.0, 3.0])
                .map(|(name, k)| Line {
                    name: (*name).into(),
                    points: wave(100.0 * k),
                })
                .collect(),
        },
    ];
    let report = Report {
        title: "loadgen report".into(),
        snapshot: &snapshot,
        charts,
        audit: Some(vec![AuditRow {
            id: "I1".into(),
            description: "each session has one reservation".into(),
            violations: 0,
            samples: vec![],
        }]),
        config: vec![("api_base".into(), "http://127.0.0.1:5001".into())],
    };
    let path = dir.join("report.html");
    std::fs::write(&path, render(&report)).unwrap();
    path
}

fn headless(browser: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", dir.join("profile").display()));
    cmd
}

/// The page's DOM as headless Chromium parsed it, after checking it logged
/// no console error.
fn rendered_dom(browser: &Path, dir: &Path, page: &Path) -> String {
    let out = common::child::output_within(
        headless(browser, dir)
            .arg("--dump-dom")
            .arg(format!("file://{}", page.display())),
        BROWSER_DEADLINE,
    );
    assert!(out.status.success(), "chromium failed: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console_errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console_errors.is_empty(), "{console_errors:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every chart holds an SVG with a non-empty polyline; returns how many.
fn drawn_charts(dom: &str) -> usize {
    let figures: Vec<&str> = dom.split("<figure class=\"chart\"").skip(1).collect();
    for figure in &figures {
        let figure = figure.split("</figure>").next().unwrap();
        assert!(figure.contains("<svg"), "{figure}");
        let points = figure
            .split("<polyline")
            .nth(1)
            .and_then(|polyline| polyline.split(" points=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("");
        assert!(points.split(' ').count() >= 2, "chart not drawn: {figure}");
    }
    figures.len()
}

#[test]
fn report_loads_without_console_errors_and_draws_every_chart() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = sample_page(dir.path());
    let dom = rendered_dom(&browser, dir.path(), &page);
    assert_eq!(drawn_charts(&dom), 3, "{dom}");
}

#[test]
fn a_spawn_mock_runs_report_renders_in_the_browser() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("run.html");
    let run = common::child::output_within(
        common::child::loadgen_spawn_mock()
            .args(["--stages", "1s:3,2s:3,1s:0", "--think-time", "100ms"])
            .args(["--mock-latency", "20ms..50ms", "--report"])
            .arg(&page),
        Duration::from_secs(120),
    );
    common::child::expect_exit(&run, 0);
    let dom = rendered_dom(&browser, dir.path(), &page);
    // VUs, requests, login and generate response times, errors, and the
    // tracked generations end to end.
    assert_eq!(drawn_charts(&dom), 6, "{dom}");
    let audit = dom
        .split("<h2>Ledger audit</h2>")
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .expect("the audit table");
    for id in ["I1", "I2", "I3", "I4", "I5", "I6", "I7"] {
        assert!(
            audit.contains(&format!("<td>✓</td><td><b>{id}</b>")),
            "{id}: {audit}"
        );
    }
}

#[test]
fn report_screenshot_for_a_person_to_look_at() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let page = sample_page(dir.path());
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    let out = common::child::output_within(
        headless(&browser, dir.path())
            .arg(format!("--screenshot={}", shot.display()))
            .arg("--window-size=1100,1600")
            .arg(format!("file://{}", page.display())),
        BROWSER_DEADLINE,
    );
    assert!(out.status.success(), "chromium failed: {out:?}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(png.len() > 10_000, "suspiciously small screenshot");
    eprintln!("screenshot: {}", shot.display());
}
