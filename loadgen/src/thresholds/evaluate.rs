//! Threshold specs on metrics: validation against a metric's type,
//! evaluation on a [`Snapshot`] and the `abortOnFail` decision.

use std::time::Duration;

use super::{Aggregate, Expression, ThresholdError, ThresholdSpec};
use crate::snapshot::{MetricType, Snapshot, ThresholdOutcome, TrendValues, Values};

/// Checks that every aggregate of `spec` exists on a metric of `metric_type`,
/// with k6's rules (e.g. `rate` is not defined on trends).
pub fn validate(spec: &ThresholdSpec, metric_type: MetricType) -> Result<(), ThresholdError> {
    for expression in &spec.expressions {
        if !supports(metric_type, expression.aggregate) {
            return Err(ThresholdError::UnsupportedAggregate {
                threshold: spec.source.clone(),
                aggregate: expression.aggregate.to_string(),
                metric: spec.metric_key(),
                metric_type: type_name(metric_type),
                supported: supported_aggregates(metric_type),
            });
        }
    }
    Ok(())
}

/// One outcome per expression of every spec, in order, on the run's totals.
pub fn evaluate(specs: &[ThresholdSpec], snapshot: &Snapshot) -> Vec<ThresholdOutcome> {
    specs
        .iter()
        .flat_map(|spec| {
            let key = spec.metric_key();
            let values = values_for(spec, snapshot);
            spec.expressions
                .iter()
                .map(move |expression| outcome(&key, expression, values.as_ref(), snapshot))
        })
        .collect()
}

/// The first failing expression of an `abortOnFail` spec whose
/// `delayAbortEval` is over at `elapsed` (time since the test started), as
/// k6 checks during the run: metrics without samples yet are skipped.
pub fn should_abort(
    specs: &[ThresholdSpec],
    snapshot: &Snapshot,
    elapsed: Duration,
) -> Option<ThresholdOutcome> {
    specs
        .iter()
        .filter(|spec| spec.abort_on_fail)
        .filter(|spec| spec.delay_abort_eval.is_none_or(|delay| delay < elapsed))
        .find_map(|spec| {
            let key = spec.metric_key();
            let metric = snapshot.metric(&key)?;
            if is_empty(&metric.values) {
                return None;
            }
            spec.expressions
                .iter()
                .map(|expression| outcome(&key, expression, Some(&metric.values), snapshot))
                .find(|outcome| !outcome.ok)
        })
}

fn outcome(
    key: &str,
    expression: &Expression,
    values: Option<&Values>,
    snapshot: &Snapshot,
) -> ThresholdOutcome {
    let observed = values.and_then(|values| aggregate_of(values, expression.aggregate, snapshot));
    match observed {
        Some(observed) => ThresholdOutcome {
            metric_key: key.to_string(),
            expression: expression.source.clone(),
            observed,
            ok: expression.holds(observed),
        },
        None => {
            tracing::warn!(
                metric = key,
                threshold = %expression.source,
                "threshold not evaluated: the metric has no {} (no samples)",
                expression.aggregate
            );
            ThresholdOutcome {
                metric_key: key.to_string(),
                expression: expression.source.clone(),
                observed: f64::NAN,
                ok: true,
            }
        }
    }
}

/// The spec's metric values; a sub-metric that got no samples is an empty
/// metric of its parent's type.
fn values_for(spec: &ThresholdSpec, snapshot: &Snapshot) -> Option<Values> {
    if let Some(metric) = snapshot.metric(&spec.metric_key()) {
        return Some(metric.values.clone());
    }
    let parent = snapshot.metric(&spec.metric)?;
    Some(match parent.metric_type {
        MetricType::Counter => Values::Counter { count: 0.0 },
        MetricType::Gauge => Values::Gauge {
            value: 0.0,
            min: 0.0,
            max: 0.0,
        },
        MetricType::Rate => Values::Rate {
            passes: 0,
            fails: 0,
        },
        MetricType::Trend => Values::Trend(TrendValues::new()),
    })
}

fn aggregate_of(values: &Values, aggregate: Aggregate, snapshot: &Snapshot) -> Option<f64> {
    match (values, aggregate) {
        (Values::Counter { count }, Aggregate::Count) => Some(*count),
        (Values::Counter { count }, Aggregate::Rate) => Some(snapshot.per_second(*count)),
        (Values::Gauge { value, .. }, Aggregate::Value) => Some(*value),
        (Values::Rate { passes, fails }, Aggregate::Rate) => match passes + fails {
            0 => None,
            total => Some(*passes as f64 / total as f64),
        },
        (Values::Trend(trend), Aggregate::Avg) => Some(trend.avg()),
        (Values::Trend(trend), Aggregate::Min) => Some(trend.min_or_zero()),
        (Values::Trend(trend), Aggregate::Max) => Some(trend.max_or_zero()),
        (Values::Trend(trend), Aggregate::Med) => Some(trend.med()),
        (Values::Trend(trend), Aggregate::Percentile(p)) => Some(trend.percentile(p)),
        _ => None,
    }
}

fn is_empty(values: &Values) -> bool {
    match values {
        Values::Counter { count } => *count == 0.0,
        Values::Gauge { .. } => false,
        Values::Rate { passes, fails } => passes + fails == 0,
        Values::Trend(trend) => trend.count() == 0,
    }
}

fn supports(metric_type: MetricType, aggregate: Aggregate) -> bool {
    match metric_type {
        MetricType::Counter => matches!(aggregate, Aggregate::Count | Aggregate::Rate),
        MetricType::Gauge => aggregate == Aggregate::Value,
        MetricType::Rate => aggregate == Aggregate::Rate,
        MetricType::Trend => matches!(
            aggregate,
            Aggregate::Avg
                | Aggregate::Min
                | Aggregate::Max
                | Aggregate::Med
                | Aggregate::Percentile(_)
        ),
    }
}

fn supported_aggregates(metric_type: MetricType) -> &'static str {
    match metric_type {
        MetricType::Counter => "count, rate",
        MetricType::Gauge => "value",
        MetricType::Rate => "rate",
        MetricType::Trend => "avg, min, max, med, p(N)",
    }
}

fn type_name(metric_type: MetricType) -> &'static str {
    match metric_type {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Rate => "rate",
        MetricType::Trend => "trend",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{MetricSnapshot, ValueType};
    use crate::thresholds::parse;

    #[test]
    fn validate_follows_k6_aggregates_per_type() {
        let ok = [
            ("m:count<1", MetricType::Counter),
            ("m:rate<1", MetricType::Counter),
            ("m:value<1", MetricType::Gauge),
            ("m:rate<1", MetricType::Rate),
            ("m:avg<1,min<1,max<1,med<1,p(99.9)<1", MetricType::Trend),
        ];
        for (input, metric_type) in ok {
            assert_eq!(
                validate(&parse(input).unwrap(), metric_type),
                Ok(()),
                "{input}"
            );
        }
        let rejected = [
            ("m:avg<1", MetricType::Counter),
            ("m:max<1", MetricType::Gauge),
            ("m:count<1", MetricType::Rate),
            ("m:rate<1", MetricType::Trend),
            ("m:value<1", MetricType::Trend),
        ];
        for (input, metric_type) in rejected {
            assert!(
                validate(&parse(input).unwrap(), metric_type).is_err(),
                "{input}"
            );
        }
        let error = validate(&parse("errors:count<1").unwrap(), MetricType::Rate).unwrap_err();
        assert_eq!(
            error.to_string(),
            "threshold \"errors:count<1\": count cannot be applied to errors, a rate metric \
             (supported: rate)"
        );
    }

    fn trend(values: &[f64]) -> Values {
        let mut trend = TrendValues::new();
        values.iter().for_each(|v| trend.record(*v));
        Values::Trend(trend)
    }

    fn snapshot() -> Snapshot {
        let durations: Vec<f64> = (1..=100).map(f64::from).collect();
        Snapshot {
            elapsed: Duration::from_secs(10),
            metrics: vec![
                MetricSnapshot::of(
                    "credit_errors",
                    &[],
                    ValueType::Default,
                    Values::Counter { count: 20.0 },
                ),
                MetricSnapshot::of(
                    "errors",
                    &[],
                    ValueType::Default,
                    Values::Rate {
                        passes: 1,
                        fails: 9,
                    },
                ),
                MetricSnapshot::of(
                    "http_req_duration",
                    &[],
                    ValueType::Default,
                    trend(&durations),
                ),
                MetricSnapshot::of(
                    "http_req_duration",
                    &[("endpoint", "login")],
                    ValueType::Default,
                    trend(&[5.0]),
                ),
                MetricSnapshot::of(
                    "no_samples",
                    &[],
                    ValueType::Default,
                    Values::Rate {
                        passes: 0,
                        fails: 0,
                    },
                ),
                MetricSnapshot::of(
                    "vus",
                    &[],
                    ValueType::Default,
                    Values::Gauge {
                        value: 3.0,
                        min: 0.0,
                        max: 10.0,
                    },
                ),
            ],
            checks: Vec::new(),
            thresholds: Vec::new(),
        }
    }

    fn evaluated(inputs: &[&str]) -> Vec<(String, String, f64, bool)> {
        let specs: Vec<ThresholdSpec> = inputs.iter().map(|s| parse(s).unwrap()).collect();
        evaluate(&specs, &snapshot())
            .into_iter()
            .map(|o| (o.metric_key, o.expression, o.observed, o.ok))
            .collect()
    }

    fn row(key: &str, expression: &str, observed: f64, ok: bool) -> (String, String, f64, bool) {
        (key.to_string(), expression.to_string(), observed, ok)
    }

    #[test]
    fn evaluates_each_aggregate_on_a_snapshot() {
        let outcomes = evaluated(&[
            "credit_errors:count==20,rate<2",
            "errors:rate<0.10",
            "http_req_duration:avg==50.5,min==1,max==100,med<50.1,p(90)>90.1,p(99.9)<=101",
            "vus:value>=3",
        ]);
        // Percentiles come from the HDR histogram: exact to 3 significant digits.
        let approx = |observed: f64, expected: f64| (observed - expected).abs() < 0.1;
        let expected = [
            ("credit_errors", "count==20", 20.0, true),
            ("credit_errors", "rate<2", 2.0, false),
            ("errors", "rate<0.10", 0.1, false),
            ("http_req_duration", "avg==50.5", 50.5, true),
            ("http_req_duration", "min==1", 1.0, true),
            ("http_req_duration", "max==100", 100.0, true),
            ("http_req_duration", "med<50.1", 50.0, true),
            ("http_req_duration", "p(90)>90.1", 90.0, false),
            ("http_req_duration", "p(99.9)<=101", 100.0, true),
            ("vus", "value>=3", 3.0, true),
        ];
        assert_eq!(outcomes.len(), expected.len());
        for (outcome, (key, expression, observed, ok)) in outcomes.iter().zip(expected) {
            assert_eq!((outcome.0.as_str(), outcome.1.as_str()), (key, expression));
            assert!(approx(outcome.2, observed), "{expression}: {}", outcome.2);
            assert_eq!(outcome.3, ok, "{expression}");
        }
    }

    #[test]
    fn sub_metrics_use_their_own_values() {
        let outcomes = evaluated(&[
            "http_req_duration{endpoint:login}:max<10",
            "http_req_duration{endpoint:seedream4}:p(95)<1",
        ]);
        assert_eq!(
            outcomes,
            [
                row("http_req_duration{endpoint:login}", "max<10", 5.0, true),
                // No samples for this tag: an empty trend, all zeros, as k6.
                row(
                    "http_req_duration{endpoint:seedream4}",
                    "p(95)<1",
                    0.0,
                    true
                ),
            ]
        );
    }

    #[test]
    fn rate_without_samples_is_not_a_failure() {
        for input in [
            "no_samples:rate>0.5",
            "errors{endpoint:none}:rate>0.5",
            "absent:rate>0.5",
        ] {
            let outcomes = evaluate(&[parse(input).unwrap()], &snapshot());
            assert_eq!(outcomes.len(), 1);
            assert!(outcomes[0].ok, "{input}");
            assert!(outcomes[0].observed.is_nan(), "{input}");
        }
    }

    #[test]
    fn abort_honours_abort_on_fail_and_delay() {
        let snapshot = snapshot();
        let failing = parse("errors:rate<0.05").unwrap();
        assert_eq!(
            should_abort(&[failing], &snapshot, Duration::from_secs(5)),
            None
        );

        let abort = parse("errors:rate<0.2,rate<0.05;abortOnFail").unwrap();
        let outcome = should_abort(&[abort], &snapshot, Duration::from_secs(5)).unwrap();
        assert_eq!(outcome.expression, "rate<0.05");
        assert!(!outcome.ok);

        let delayed = parse("errors:rate<0.05;abortOnFail;delayAbortEval=10s").unwrap();
        let specs = [delayed];
        assert_eq!(
            should_abort(&specs, &snapshot, Duration::from_secs(10)),
            None
        );
        assert!(should_abort(&specs, &snapshot, Duration::from_millis(10_001)).is_some());

        let passing = parse("errors:rate<0.5;abortOnFail").unwrap();
        let empty = parse("no_samples:rate>0.5;abortOnFail").unwrap();
        let empty_trend = parse("http_req_duration{endpoint:x}:avg>1;abortOnFail").unwrap();
        assert_eq!(
            should_abort(
                &[passing, empty, empty_trend],
                &snapshot,
                Duration::from_secs(60)
            ),
            None
        );
    }
}
