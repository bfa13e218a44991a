//! The run's live controls, as k6's REST API sets them: pause and resume
//! (the executors' clocks stop while paused, as k6's do), stop, and the
//! VU count of the `externally-controlled` executor. The executors read
//! them; [`crate::control_api`] writes them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The VUs of the externally-controlled executor: active and at most.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExternalVus {
    pub vus: u64,
    pub max_vus: u64,
}

/// Time spent paused: the total of finished pauses and the current one.
#[derive(Default)]
struct Pauses {
    total: Duration,
    since: Option<Instant>,
}

impl Pauses {
    fn paused_until(&self, now: Instant) -> Duration {
        self.total + self.since.map_or(Duration::ZERO, |since| now - since)
    }
}

/// A point on the executor's clock: its wall time and the pauses before it.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    at: Instant,
    paused_before: Duration,
}

pub struct Control {
    paused: watch::Sender<bool>,
    pauses: Mutex<Pauses>,
    stop: CancellationToken,
    stopped: AtomicBool,
    /// Only for the externally-controlled executor.
    external: Option<watch::Sender<ExternalVus>>,
}

fn lock(pauses: &Mutex<Pauses>) -> std::sync::MutexGuard<'_, Pauses> {
    pauses
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Control {
    /// `stop` is the run's: cancelled, no VU starts another iteration.
    pub fn new(paused: bool, stop: CancellationToken, external: Option<ExternalVus>) -> Control {
        let now = Instant::now();
        Control {
            paused: watch::Sender::new(paused),
            pauses: Mutex::new(Pauses {
                total: Duration::ZERO,
                since: paused.then_some(now),
            }),
            stop,
            stopped: AtomicBool::new(false),
            external: external.map(watch::Sender::new),
        }
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    pub fn set_paused(&self, paused: bool) {
        let mut pauses = lock(&self.pauses);
        let now = Instant::now();
        match (pauses.since, paused) {
            (None, true) => pauses.since = Some(now),
            (Some(since), false) => {
                pauses.total += now - since;
                pauses.since = None;
            }
            _ => {}
        }
        self.paused.send_replace(paused);
    }

    /// Returns once the run is not paused (or is stopping).
    pub async fn resumed(&self) {
        let mut paused = self.paused.subscribe();
        tokio::select! {
            _ = paused.wait_for(|paused| !paused) => {}
            _ = self.stop.cancelled() => {}
        }
    }

    /// Stops the run as k6's `PATCH /v1/status {"stopped": true}`.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.stop.cancel();
    }

    /// True when the REST API stopped the run.
    pub fn stopped_by_api(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// The run's stop token.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Now, on the executor's clock.
    pub fn mark(&self) -> Mark {
        let now = Instant::now();
        Mark {
            at: now,
            paused_before: lock(&self.pauses).paused_until(now),
        }
    }

    /// The unpaused time since `mark`.
    pub fn active_since(&self, mark: &Mark) -> Duration {
        let now = Instant::now();
        let paused = lock(&self.pauses).paused_until(now) - mark.paused_before;
        (now - mark.at).saturating_sub(paused)
    }

    /// Returns when `offset` of unpaused time has passed since `mark`
    /// (or the run is stopping), with the wall time that happened at.
    pub async fn until_active(&self, mark: &Mark, offset: Duration) -> Instant {
        let mut paused = self.paused.subscribe();
        loop {
            self.resumed().await;
            let active = self.active_since(mark);
            if active >= offset || self.is_stopping() {
                return Instant::now() - (active - offset.min(active));
            }
            tokio::select! {
                _ = tokio::time::sleep(offset - active) => {}
                _ = paused.changed() => {}
                _ = self.stop.cancelled() => {}
            }
        }
    }

    /// The externally-controlled executor's VUs; None for the others.
    pub fn external_vus(&self) -> Option<watch::Receiver<ExternalVus>> {
        self.external.as_ref().map(watch::Sender::subscribe)
    }

    /// Sets the externally-controlled executor's VUs, as k6 checks them.
    pub fn set_external_vus(&self, vus: Option<u64>, max_vus: Option<u64>) -> Result<(), String> {
        let external = self.external.as_ref().ok_or(
            "an externally-controlled executor needs to be configured for live configuration updates",
        )?;
        let current = *external.borrow();
        let next = ExternalVus {
            vus: vus.unwrap_or(current.vus),
            max_vus: max_vus.unwrap_or(current.max_vus),
        };
        if next.max_vus < current.max_vus {
            return Err(format!(
                "the number of max VUs cannot be decreased (from {} to {})",
                current.max_vus, next.max_vus
            ));
        }
        if next.vus > next.max_vus {
            return Err(format!(
                "the number of active VUs ({}) must be less than or equal to the number of max VUs ({})",
                next.vus, next.max_vus
            ));
        }
        external.send_replace(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_leaves_out_the_pauses() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let pausing = Pauses {
            total: s(3),
            since: Some(t0),
        };
        assert_eq!(pausing.paused_until(t0 + s(2)), s(5));
        let control = Control::new(false, CancellationToken::new(), None);
        let mark = Mark {
            at: t0.checked_sub(s(10)).unwrap(),
            paused_before: Duration::ZERO,
        };
        lock(&control.pauses).total = s(4);
        let active = control.active_since(&mark);
        assert!(active >= s(6) && active < s(7), "{active:?}");
        control.set_paused(true);
        assert!(control.is_paused() && lock(&control.pauses).since.is_some());
        control.set_paused(false);
        assert!(lock(&control.pauses).total >= s(4));
    }

    #[tokio::test]
    async fn stopping_ends_a_pause_and_is_recorded() {
        let control = Control::new(true, CancellationToken::new(), None);
        control.stop();
        control.resumed().await;
        assert!(control.stopped_by_api() && control.is_stopping());
    }

    #[test]
    fn vus_only_for_the_externally_controlled_executor_and_within_max() {
        let none = Control::new(false, CancellationToken::new(), None);
        assert!(none.set_external_vus(Some(2), None).is_err());
        let external = ExternalVus { vus: 1, max_vus: 3 };
        let control = Control::new(false, CancellationToken::new(), Some(external));
        let vus = control.external_vus().unwrap();
        control.set_external_vus(Some(3), None).unwrap();
        assert_eq!(*vus.borrow(), ExternalVus { vus: 3, max_vus: 3 });
        assert!(control.set_external_vus(Some(4), None).is_err());
        control.set_external_vus(Some(4), Some(5)).unwrap();
        assert!(control.set_external_vus(None, Some(4)).is_err());
        assert_eq!(*vus.borrow(), ExternalVus { vus: 4, max_vus: 5 });
    }
}
