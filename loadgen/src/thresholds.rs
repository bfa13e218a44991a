//! k6 threshold expressions: parsing, validation against a metric's type,
//! evaluation on a [`Snapshot`] and the `abortOnFail` decision.
//!
//! # Syntax of `--threshold`
//!
//! k6 declares thresholds in the script's options; loadgen takes them on the
//! command line, one spec per `--threshold`:
//!
//! ```text
//! spec       = metric [ "{" tag *( "," tag ) "}" ] ":" expression *( "," expression ) *( ";" option )
//! metric     = ( letter | "_" ) *( letter | digit | "_" )
//! tag        = key ":" value          ; value runs to the next "," or "}", may contain ":"
//! expression = aggregate operator number
//! aggregate  = "avg" | "min" | "max" | "med" | "p(" number ")" | "rate" | "count" | "value"
//! operator   = "<" | "<=" | ">" | ">=" | "==" | "===" | "!="
//! number     = [ "-" ] digits [ "." digits ]
//! option     = "abortOnFail" | "delayAbortEval=" duration     ; duration as k6: 10s, 1m30s, 500ms
//! ```
//!
//! Whitespace is allowed between any two tokens; tag keys and values may be
//! quoted with `'` or `"` as in k6's sub-metric names. Examples:
//! `errors:rate<0.10`, `http_req_duration{endpoint:seedream4}:p(99.9)<60000`,
//! `http_req_duration:p(95)<500,avg<200;abortOnFail;delayAbortEval=10s`.
//! The options apply to every expression of the spec. k6 has no `!==`, so
//! neither has loadgen; `===` means `==` as in k6.
//!
//! # k6 semantics followed
//!
//! - Aggregates per metric type ([`validate`]): Counter `count`, `rate`
//!   (count per second of the run); Gauge `value`; Rate `rate`; Trend `avg`,
//!   `min`, `max`, `med`, `p(N)`.
//! - A rate metric (or sub-metric) with no samples has no `rate`: k6 logs a
//!   threshold error and does not fail the run; loadgen does the same
//!   (warns; outcome `ok`, `observed` NaN). k6's summary then shows a ✗ the
//!   exit code contradicts; loadgen's shows ✓, matching the exit code.
//! - Empty counters and trends evaluate as zeros, as k6's empty sinks do. A
//!   tagged sub-metric absent from the snapshot is an empty metric of its
//!   parent's type; a metric absent altogether (the engine rejects those at
//!   start with its registry and [`validate`]) is not evaluated, like an
//!   empty rate.
//! - `abortOnFail` aborts once the expression fails after more than
//!   `delayAbortEval` of the run; metrics with no samples yet are skipped
//!   while the test runs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::snapshot::{metric_key, MetricType, Snapshot, ThresholdOutcome, TrendValues, Values};

/// One `--threshold` (or one default threshold): a metric or tagged
/// sub-metric and the expressions that must hold on it.
#[derive(Clone, Debug, PartialEq)]
pub struct ThresholdSpec {
    pub metric: String,
    pub tags: BTreeMap<String, String>,
    pub expressions: Vec<Expression>,
    pub abort_on_fail: bool,
    pub delay_abort_eval: Option<Duration>,
    /// The spec as the user wrote it.
    pub source: String,
}

impl ThresholdSpec {
    /// `metric` or `metric{tag:value}`, the key of the snapshot entry the
    /// spec applies to.
    pub fn metric_key(&self) -> String {
        metric_key(&self.metric, &self.tags)
    }
}

impl fmt::Display for ThresholdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// `aggregate operator value`, e.g. `p(95)<30000`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expression {
    pub aggregate: Aggregate,
    pub operator: Operator,
    pub value: f64,
    /// The expression as written (trimmed): k6 names thresholds by it in the
    /// summary and in `--summary-export`.
    pub source: String,
}

impl Expression {
    fn holds(&self, observed: f64) -> bool {
        match self.operator {
            Operator::Less => observed < self.value,
            Operator::LessOrEqual => observed <= self.value,
            Operator::Greater => observed > self.value,
            Operator::GreaterOrEqual => observed >= self.value,
            Operator::Equal => observed == self.value,
            Operator::NotEqual => observed != self.value,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Aggregate {
    Avg,
    Min,
    Max,
    Med,
    /// `p(N)`, N in 0..=100.
    Percentile(f64),
    Rate,
    Count,
    Value,
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregate::Avg => f.write_str("avg"),
            Aggregate::Min => f.write_str("min"),
            Aggregate::Max => f.write_str("max"),
            Aggregate::Med => f.write_str("med"),
            Aggregate::Percentile(p) => write!(f, "p({p})"),
            Aggregate::Rate => f.write_str("rate"),
            Aggregate::Count => f.write_str("count"),
            Aggregate::Value => f.write_str("value"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThresholdError {
    /// `column` is 0-based, in characters of `threshold`.
    #[error("threshold {threshold:?}: {problem} at column {column} (expected {expected})")]
    Syntax {
        threshold: String,
        column: usize,
        problem: String,
        expected: String,
    },
    #[error(
        "threshold {threshold:?}: {aggregate} cannot be applied to {metric}, a {metric_type} \
         metric (supported: {supported})"
    )]
    UnsupportedAggregate {
        threshold: String,
        aggregate: String,
        metric: String,
        metric_type: &'static str,
        supported: &'static str,
    },
}

const AGGREGATES: &str = "avg, min, max, med, p(N), rate, count, value";
const OPERATORS: &str = "<, <=, >, >=, ==, ===, !=";
const OPTIONS: &str = "abortOnFail or delayAbortEval=DURATION";

/// Parses one threshold spec; see the module documentation for the syntax.
pub fn parse(s: &str) -> Result<ThresholdSpec, ThresholdError> {
    let mut parser = Parser { input: s, pos: 0 };
    let metric = parser.metric_name()?;
    parser.skip_whitespace();
    let tags = if parser.eat("{") {
        parser.tags()?
    } else {
        BTreeMap::new()
    };
    parser.skip_whitespace();
    if !parser.eat(":") {
        let expected = if tags.is_empty() {
            "\":\" or \"{\" after the metric name"
        } else {
            "\":\" after the tags"
        };
        return Err(parser.error_here(expected));
    }
    let mut expressions = vec![parser.expression()?];
    while parser.eat(",") {
        expressions.push(parser.expression()?);
    }
    let mut abort_on_fail = false;
    let mut delay_abort_eval = None;
    while parser.eat(";") {
        parser.skip_whitespace();
        let start = parser.pos;
        let word = parser.take_while(|c| c.is_ascii_alphabetic());
        match word {
            "abortOnFail" => abort_on_fail = true,
            "delayAbortEval" => {
                parser.skip_whitespace();
                if !parser.eat("=") {
                    return Err(parser.error_here("\"=\" and a duration after delayAbortEval"));
                }
                parser.skip_whitespace();
                let duration_start = parser.pos;
                let text = parser.take_while(|c| c.is_alphanumeric() || c == '.');
                delay_abort_eval = Some(k6_duration::parse(text).ok_or_else(|| {
                    parser.error_at(
                        duration_start,
                        format!("invalid duration {text:?}"),
                        "a duration such as 10s, 1m30s or 500ms",
                    )
                })?);
            }
            "" => return Err(parser.error_here(OPTIONS)),
            other => {
                return Err(parser.error_at(start, format!("unknown option {other:?}"), OPTIONS))
            }
        }
        parser.skip_whitespace();
    }
    if !parser.at_end() {
        return Err(
            parser.error_here("\",\" and another expression, \";\" and an option, or the end")
        );
    }
    Ok(ThresholdSpec {
        metric,
        tags,
        expressions,
        abort_on_fail,
        delay_abort_eval,
        source: s.to_string(),
    })
}

/// The five thresholds of the generation test (`scenario.md`).
pub fn defaults() -> Vec<ThresholdSpec> {
    [
        "errors:rate<0.10",
        "response_time:p(95)<30000",
        "generation_success:rate>0.80",
        "http_req_failed:rate<0.10",
        "http_req_duration:p(99)<60000",
    ]
    .into_iter()
    .map(|source| parse(source).expect("built-in thresholds are valid"))
    .collect()
}

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

/// A cursor over the spec; positions are byte offsets, errors report
/// character columns.
struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos == self.input.len()
    }

    fn skip_whitespace(&mut self) {
        self.take_while(char::is_whitespace);
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_whitespace();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let len = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }

    fn error_at(&self, pos: usize, problem: String, expected: &str) -> ThresholdError {
        ThresholdError::Syntax {
            threshold: self.input.to_string(),
            column: self.input[..pos].chars().count(),
            problem,
            expected: expected.to_string(),
        }
    }

    /// "unexpected X" at the current position.
    fn error_here(&self, expected: &str) -> ThresholdError {
        let problem = match self.rest().chars().next() {
            Some(c) => format!("unexpected {:?}", c.to_string()),
            None => "unexpected end".to_string(),
        };
        self.error_at(self.pos, problem, expected)
    }

    fn metric_name(&mut self) -> Result<String, ThresholdError> {
        self.skip_whitespace();
        let starts_well = self
            .rest()
            .starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        if !starts_well {
            return Err(self.error_here("a metric name (letters, digits, _)"));
        }
        Ok(self
            .take_while(|c| c.is_ascii_alphanumeric() || c == '_')
            .to_string())
    }

    /// After `{`: `key:value` pairs up to `}`.
    fn tags(&mut self) -> Result<BTreeMap<String, String>, ThresholdError> {
        let mut tags = BTreeMap::new();
        loop {
            self.skip_whitespace();
            let key_start = self.pos;
            let key = unquote(self.take_while(|c| !matches!(c, ':' | ',' | '}')));
            if key.is_empty() {
                return Err(self.error_at(key_start, "missing tag name".into(), "tag:value"));
            }
            if !self.eat(":") {
                return Err(self.error_here("\":\" between the tag name and its value"));
            }
            let value_start = self.pos;
            let value = unquote(self.take_while(|c| !matches!(c, ',' | '}')));
            if value.is_empty() {
                return Err(self.error_at(value_start, "missing tag value".into(), "tag:value"));
            }
            tags.insert(key.to_string(), value.to_string());
            if self.eat("}") {
                return Ok(tags);
            }
            if !self.eat(",") {
                return Err(self.error_here("\",\" or \"}\""));
            }
        }
    }

    fn expression(&mut self) -> Result<Expression, ThresholdError> {
        self.skip_whitespace();
        let start = self.pos;
        let aggregate = self.aggregate()?;
        self.skip_whitespace();
        let operator = self.operator()?;
        self.skip_whitespace();
        let value = self.number("a number")?;
        let source = self.input[start..self.pos].to_string();
        self.skip_whitespace();
        Ok(Expression {
            aggregate,
            operator,
            value,
            source,
        })
    }

    fn aggregate(&mut self) -> Result<Aggregate, ThresholdError> {
        let start = self.pos;
        let word = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        let aggregate = match word {
            "avg" => Aggregate::Avg,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "med" => Aggregate::Med,
            "rate" => Aggregate::Rate,
            "count" => Aggregate::Count,
            "value" => Aggregate::Value,
            "p" => {
                if !self.eat("(") {
                    return Err(self.error_here("\"(\" and a percentile after p"));
                }
                self.skip_whitespace();
                let percentile_start = self.pos;
                let percentile = self.number("a percentile between 0 and 100")?;
                if !(0.0..=100.0).contains(&percentile) {
                    return Err(self.error_at(
                        percentile_start,
                        format!("percentile {percentile} out of range"),
                        "a percentile between 0 and 100",
                    ));
                }
                if !self.eat(")") {
                    return Err(self.error_here("\")\" after the percentile"));
                }
                Aggregate::Percentile(percentile)
            }
            "" => return Err(self.error_here(AGGREGATES)),
            other => {
                return Err(self.error_at(
                    start,
                    format!("unknown aggregate {other:?}"),
                    AGGREGATES,
                ))
            }
        };
        Ok(aggregate)
    }

    fn operator(&mut self) -> Result<Operator, ThresholdError> {
        // Longest tokens first, so `<=` is not read as `<` followed by `=`.
        const TOKENS: [(&str, Operator); 7] = [
            ("<=", Operator::LessOrEqual),
            (">=", Operator::GreaterOrEqual),
            ("===", Operator::Equal),
            ("==", Operator::Equal),
            ("!=", Operator::NotEqual),
            ("<", Operator::Less),
            (">", Operator::Greater),
        ];
        for (token, operator) in TOKENS {
            if self.rest().starts_with(token) {
                self.pos += token.len();
                return Ok(operator);
            }
        }
        Err(self.error_here(OPERATORS))
    }

    fn number(&mut self, expected: &str) -> Result<f64, ThresholdError> {
        let start = self.pos;
        let rest = self.rest();
        let sign_len = usize::from(rest.starts_with('-'));
        let integer_len = rest[sign_len..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - sign_len);
        if integer_len == 0 {
            return Err(self.error_here(expected));
        }
        let mut len = sign_len + integer_len;
        if rest[len..].starts_with('.') {
            let fraction_len = rest[len + 1..]
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len() - len - 1);
            if fraction_len == 0 {
                self.pos = start + len + 1;
                return Err(self.error_here("digits after the decimal point"));
            }
            len += 1 + fraction_len;
        }
        self.pos = start + len;
        rest[..len].parse().map_err(|_| {
            self.error_at(
                start,
                format!("invalid number {:?}", &rest[..len]),
                expected,
            )
        })
    }
}

fn unquote(text: &str) -> &str {
    text.trim().trim_matches(|c| c == '"' || c == '\'').trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{MetricSnapshot, ValueType};

    fn syntax_error(input: &str) -> (usize, String) {
        match parse(input) {
            Err(ThresholdError::Syntax {
                column, problem, ..
            }) => (column, problem),
            other => panic!("expected a syntax error for {input:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_operator() {
        let cases = [
            ("<", Operator::Less),
            ("<=", Operator::LessOrEqual),
            (">", Operator::Greater),
            (">=", Operator::GreaterOrEqual),
            ("==", Operator::Equal),
            ("===", Operator::Equal),
            ("!=", Operator::NotEqual),
        ];
        for (token, operator) in cases {
            let spec = parse(&format!("errors:rate{token}0.1")).unwrap();
            assert_eq!(spec.expressions[0].operator, operator, "{token}");
            assert_eq!(spec.expressions[0].value, 0.1);
        }
    }

    #[test]
    fn parses_every_aggregate() {
        let cases = [
            ("avg", Aggregate::Avg),
            ("min", Aggregate::Min),
            ("max", Aggregate::Max),
            ("med", Aggregate::Med),
            ("p(95)", Aggregate::Percentile(95.0)),
            ("p(99.9)", Aggregate::Percentile(99.9)),
            ("p( 0 )", Aggregate::Percentile(0.0)),
            ("rate", Aggregate::Rate),
            ("count", Aggregate::Count),
            ("value", Aggregate::Value),
        ];
        for (text, aggregate) in cases {
            let spec = parse(&format!("m:{text}<1")).unwrap();
            assert_eq!(spec.expressions[0].aggregate, aggregate, "{text}");
        }
    }

    #[test]
    fn operator_decides_evaluation() {
        let cases = [
            ("<", [true, false, false]),
            ("<=", [true, true, false]),
            (">", [false, false, true]),
            (">=", [false, true, true]),
            ("==", [false, true, false]),
            ("===", [false, true, false]),
            ("!=", [true, false, true]),
        ];
        for (token, expected) in cases {
            let spec = parse(&format!("m:value{token}5")).unwrap();
            let holds: Vec<bool> = [4.0, 5.0, 6.0]
                .iter()
                .map(|observed| spec.expressions[0].holds(*observed))
                .collect();
            assert_eq!(holds, expected, "{token}");
        }
    }

    #[test]
    fn whitespace_decimals_and_negative_numbers() {
        let spec = parse("  http_req_duration  :  p(99.9)  <=  60000.5 ").unwrap();
        assert_eq!(spec.metric, "http_req_duration");
        assert_eq!(spec.expressions[0].aggregate, Aggregate::Percentile(99.9));
        assert_eq!(spec.expressions[0].value, 60000.5);
        assert_eq!(spec.expressions[0].source, "p(99.9)  <=  60000.5");
        assert_eq!(parse("vus:value>-1").unwrap().expressions[0].value, -1.0);
    }

    #[test]
    fn tagged_sub_metric() {
        let spec = parse("http_req_duration{endpoint:seedream4}:p(95)<500").unwrap();
        assert_eq!(spec.metric, "http_req_duration");
        assert_eq!(
            spec.tags.get("endpoint").map(String::as_str),
            Some("seedream4")
        );
        assert_eq!(spec.metric_key(), "http_req_duration{endpoint:seedream4}");

        let spec = parse("http_reqs{ status : '402' , url:http://h:1/x }:count<1").unwrap();
        assert_eq!(spec.tags.get("status").map(String::as_str), Some("402"));
        assert_eq!(
            spec.tags.get("url").map(String::as_str),
            Some("http://h:1/x")
        );
        assert_eq!(spec.metric_key(), "http_reqs{status:402,url:http://h:1/x}");
    }

    #[test]
    fn several_expressions_and_options() {
        let spec =
            parse("http_req_duration:p(95)<500, avg<200;abortOnFail;delayAbortEval=1m30s").unwrap();
        assert_eq!(spec.expressions.len(), 2);
        assert_eq!(spec.expressions[1].source, "avg<200");
        assert!(spec.abort_on_fail);
        assert_eq!(spec.delay_abort_eval, Some(Duration::from_secs(90)));
        assert_eq!(spec.to_string(), spec.source);

        let spec = parse("errors:rate<0.1; delayAbortEval = 1.5s").unwrap();
        assert!(!spec.abort_on_fail);
        assert_eq!(spec.delay_abort_eval, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        let error = parse("errors:rat<0.1").unwrap_err();
        assert_eq!(
            error.to_string(),
            "threshold \"errors:rat<0.1\": unknown aggregate \"rat\" at column 7 \
             (expected avg, min, max, med, p(N), rate, count, value)"
        );
        let cases = [
            ("", 0, "unexpected end"),
            ("9lives:rate<1", 0, "unexpected \"9\""),
            ("errors rate<0.1", 7, "unexpected \"r\""),
            ("errors:rate<", 12, "unexpected end"),
            ("errors:rate 0.1", 12, "unexpected \"0\""),
            ("errors:rate!==0", 13, "unexpected \"=\""),
            ("errors:rate<0.", 14, "unexpected end"),
            ("errors:rate<0.1 x", 16, "unexpected \"x\""),
            ("d:p(101)<1", 4, "percentile 101 out of range"),
            ("d:p95<1", 2, "unknown aggregate \"p95\""),
            ("d:p(95<1", 6, "unexpected \"<\""),
            ("d{a}:avg<1", 3, "unexpected \"}\""),
            ("d{:x}:avg<1", 2, "missing tag name"),
            ("d{a:}:avg<1", 4, "missing tag value"),
            ("d{a:b:avg<1", 11, "unexpected end"),
            ("d:avg<1;abortOnFial", 8, "unknown option \"abortOnFial\""),
            ("d:avg<1;delayAbortEval=10x", 23, "invalid duration \"10x\""),
            ("µs:avg<1", 0, "unexpected \"µ\""),
            ("d{e:µ}:rat<1", 7, "unknown aggregate \"rat\""),
        ];
        for (input, column, problem) in cases {
            assert_eq!(
                syntax_error(input),
                (column, problem.to_string()),
                "{input:?}"
            );
        }
    }

    #[test]
    fn defaults_are_the_scenario_thresholds() {
        let sources: Vec<String> = defaults()
            .iter()
            .map(|spec| format!("{}:{}", spec.metric_key(), spec.expressions[0].source))
            .collect();
        assert_eq!(
            sources,
            [
                "errors:rate<0.10",
                "response_time:p(95)<30000",
                "generation_success:rate>0.80",
                "http_req_failed:rate<0.10",
                "http_req_duration:p(99)<60000",
            ]
        );
        assert!(defaults().iter().all(|spec| !spec.abort_on_fail));
    }

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

    fn metric(key_tags: &[(&str, &str)], name: &str, values: Values) -> MetricSnapshot {
        let metric_type = match values {
            Values::Counter { .. } => MetricType::Counter,
            Values::Gauge { .. } => MetricType::Gauge,
            Values::Rate { .. } => MetricType::Rate,
            Values::Trend(_) => MetricType::Trend,
        };
        MetricSnapshot {
            name: name.to_string(),
            tags: key_tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metric_type,
            contains: ValueType::Default,
            values,
        }
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
                metric(&[], "credit_errors", Values::Counter { count: 20.0 }),
                metric(
                    &[],
                    "errors",
                    Values::Rate {
                        passes: 1,
                        fails: 9,
                    },
                ),
                metric(&[], "http_req_duration", trend(&durations)),
                metric(&[("endpoint", "login")], "http_req_duration", trend(&[5.0])),
                metric(
                    &[],
                    "no_samples",
                    Values::Rate {
                        passes: 0,
                        fails: 0,
                    },
                ),
                metric(
                    &[],
                    "vus",
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

    #[test]
    fn durations_in_k6_form() {
        let cases = [
            ("0", Some(0)),
            ("10s", Some(10_000)),
            ("1m30s", Some(90_000)),
            ("2h", Some(7_200_000)),
            ("250ms", Some(250)),
            ("1.5s", Some(1_500)),
            ("10", None),
            ("s", None),
            ("10x", None),
            ("", None),
        ];
        for (text, millis) in cases {
            let parsed = k6_duration::parse(text).map(|d| d.as_millis() as u64);
            assert_eq!(parsed, millis, "{text:?}");
        }
    }
}
