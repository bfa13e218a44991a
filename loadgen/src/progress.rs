//! Live progress on stderr: one k6-like line redrawn on a terminal, a plain
//! line every 10 s otherwise (CI logs), nothing with `--quiet`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    last_plain: Duration,
    planned: Duration,
}

pub struct Status {
    pub elapsed: Duration,
    pub vus: u64,
    pub vus_max: u64,
    pub iterations: u64,
    pub requests: f64,
    pub failed_rate: f64,
}

impl Progress {
    pub fn new(quiet: bool, planned: Duration) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template("{msg}").expect("static template"));
            bar
        });
        Progress {
            bar,
            plain: !quiet && !terminal,
            last_plain: Duration::ZERO,
            planned,
        }
    }

    pub fn update(&mut self, status: &Status) {
        let line = format!(
            "running ({:.1}s/{:.0}s), {:02}/{:02} VUs, {} complete iterations, {:.1} req/s, {:.2}% failed",
            status.elapsed.as_secs_f64(),
            self.planned.as_secs_f64(),
            status.vus,
            status.vus_max,
            status.iterations,
            status.requests / status.elapsed.as_secs_f64().max(1e-3),
            status.failed_rate * 100.0
        );
        if let Some(bar) = &self.bar {
            bar.set_message(line);
        } else if self.plain && status.elapsed >= self.last_plain + Duration::from_secs(10) {
            self.last_plain = status.elapsed;
            eprintln!("{line}");
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
