//! `--start-at` and `--start-tolerance`: the instances of a split test
//! start their executors at one wall-clock time, with no coordinator of
//! their own. An instance that gets there later than the tolerance does
//! not run (its segment would start out of step with the others).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When to start, and how late an instance may still start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartAt {
    pub at: SystemTime,
    pub tolerance: Duration,
}

/// The instance reached the start time too late.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--start-at was {late_ms} ms ago, past --start-tolerance {tolerance_ms} ms: not started")]
pub struct StartMissed {
    pub late_ms: u128,
    pub tolerance_ms: u128,
}

impl StartAt {
    /// An RFC 3339 time (`2026-12-04T01:00:00Z`) or unix milliseconds.
    pub fn parse(text: &str, tolerance: Duration) -> Result<StartAt, String> {
        let text = text.trim();
        let at = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            let ms: u64 = text
                .parse()
                .map_err(|_| format!("{text:?} is too large for unix milliseconds"))?;
            UNIX_EPOCH + Duration::from_millis(ms)
        } else {
            let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
                format!("{text:?} is neither an RFC 3339 time nor unix milliseconds")
            })?;
            let ms = u64::try_from(time.timestamp_millis())
                .map_err(|_| format!("{text:?} is before 1970"))?;
            UNIX_EPOCH + Duration::from_millis(ms)
        };
        Ok(StartAt { at, tolerance })
    }

    /// How long to wait from `now`, or why not to start at all.
    pub fn wait_from(&self, now: SystemTime) -> Result<Duration, StartMissed> {
        match self.at.duration_since(now) {
            Ok(wait) => Ok(wait),
            Err(late) if late.duration() <= self.tolerance => Ok(Duration::ZERO),
            Err(late) => Err(StartMissed {
                late_ms: late.duration().as_millis(),
                tolerance_ms: self.tolerance.as_millis(),
            }),
        }
    }

    /// Sleeps until the start time; an error when it is already past the
    /// tolerance.
    pub async fn wait(&self) -> Result<(), StartMissed> {
        let wait = self.wait_from(SystemTime::now())?;
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_and_unix_ms_name_the_same_instant() {
        let tolerance = Duration::from_secs(1);
        let rfc = StartAt::parse("2026-12-04T01:00:00.250+01:00", tolerance).unwrap();
        let ms = StartAt::parse("1796342400250", tolerance).unwrap();
        assert_eq!(rfc, ms);
        for bad in [
            "",
            "tomorrow",
            "2026-12-04 01:00",
            "99999999999999999999999",
        ] {
            assert!(StartAt::parse(bad, tolerance).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn early_waits_within_tolerance_starts_late_is_refused() {
        let start = StartAt {
            at: UNIX_EPOCH + Duration::from_secs(100),
            tolerance: Duration::from_secs(2),
        };
        let at = |s: f64| UNIX_EPOCH + Duration::from_secs_f64(s);
        assert_eq!(start.wait_from(at(97.5)), Ok(Duration::from_millis(2500)));
        assert_eq!(start.wait_from(at(101.0)), Ok(Duration::ZERO));
        assert_eq!(start.wait_from(at(102.0)), Ok(Duration::ZERO));
        assert_eq!(
            start.wait_from(at(102.5)),
            Err(StartMissed {
                late_ms: 2500,
                tolerance_ms: 2000
            })
        );
    }
}
