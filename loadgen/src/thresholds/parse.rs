//! Threshold specs from text: the grammar in the parent module's doc.

use std::collections::BTreeMap;

use super::{Aggregate, Expression, Operator, ThresholdError, ThresholdSpec};

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
    use std::time::Duration;

    use super::*;
    use crate::thresholds::defaults;

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
