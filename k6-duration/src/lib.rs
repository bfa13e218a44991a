//! k6's duration syntax (Go's `time.ParseDuration`), the one grammar of
//! the workspace: loadgen's options (`--duration`, `--stages`,
//! `--think-time`, `delayAbortEval`, timeouts) and the mock's fault plan
//! (`from`, `until`, latencies, `MOCK_PROVIDER_TIMEOUT`) both read it.

use std::time::Duration;

/// One or more `number unit` pairs (`1m30s`, `1.5s`, `250ms`), or `0`.
/// Units: `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`. A bare number other than
/// `0` is refused, as k6 refuses it.
pub fn parse(text: &str) -> Option<Duration> {
    match text {
        "" => return None,
        "0" => return Some(Duration::ZERO),
        _ => {}
    }
    let mut rest = text;
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k6_forms() {
        assert_eq!(parse("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("10"), None);
        assert_eq!(parse("1x"), None);
        assert_eq!(parse("-1s"), None);
        assert_eq!(parse("2 s"), None);
        assert_eq!(parse(""), None);
    }
}
