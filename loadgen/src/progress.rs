//! Live progress on stderr: one k6-like line redrawn on a terminal, a plain
//! line every 10 s otherwise (CI logs), nothing with `--quiet`.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::Collector;
use crate::snapshot::Values;

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

impl Status {
    /// The run's state now. `vus_max` is the collector's, so it follows a
    /// `vus-max` raised through the REST API.
    pub fn of(collector: &Collector) -> Status {
        let counter = |metric| match collector.totals_of(metric) {
            Some(Values::Counter { count }) => count,
            _ => 0.0,
        };
        Status {
            elapsed: collector.elapsed(),
            vus: collector.active_vus(),
            vus_max: collector.vus_max(),
            iterations: counter("iterations") as u64,
            requests: counter("http_reqs"),
            failed_rate: match collector.totals_of("http_req_failed") {
                Some(Values::Rate { passes, fails }) if passes + fails > 0 => {
                    passes as f64 / (passes + fails) as f64
                }
                _ => 0.0,
            },
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_follows_the_runs_vu_maximum_and_totals() {
        let collector = Collector::new(Vec::new(), false);
        collector.set_vus_max(4);
        assert_eq!(Status::of(&collector).vus_max, 4);
        // As the externally-controlled executor does on a PATCH of vus-max.
        collector.set_vus_max(6);
        assert_eq!(Status::of(&collector).vus_max, 6);
        collector.add_all(&[("http_reqs", 1.0), ("http_req_failed", 1.0)], &[]);
        collector.add_all(&[("http_reqs", 1.0), ("http_req_failed", 0.0)], &[]);
        collector.add("iterations", 1.0, &[]);
        collector.tick();
        let status = Status::of(&collector);
        assert_eq!(status.requests, 2.0);
        assert_eq!(status.iterations, 1);
        assert_eq!(status.failed_rate, 0.5);
    }
}
