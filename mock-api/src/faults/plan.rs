//! The fault plan: its model, its parsing from TOML or JSON (every error
//! names the field, e.g. `rules[2].rate: must be between 0 and 1`), the
//! latency distributions and the scheduling windows.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// The largest latency any distribution yields (one hour).
pub const MAX_LATENCY: Duration = Duration::from_secs(3600);

/// Where a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Where the simulated provider is called (worker or direct path).
    Provider,
    /// In front of the routes (a tower layer), matched by method and path.
    Edge,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Provider => "provider",
            Target::Edge => "edge",
        }
    }
}

/// What a rule does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Provider: replaces the provider's latency; edge: adds latency before
    /// the route runs.
    Latency,
    /// Provider: the attempt fails with a status of the mix; edge: that
    /// status with a JSON body.
    Error,
    /// Provider: never answers within the provider deadline.
    Timeout,
    /// Provider: k of n outputs produced.
    Partial,
    /// Edge: 429 with the real rate limiter's headers.
    RateLimit,
    /// Edge: the connection is closed before any response byte.
    Reset,
    /// Edge: the response body trickles at `bytes_per_second`.
    SlowBody,
    /// Edge: no answer until the client gives up.
    Hang,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Latency => "latency",
            Kind::Error => "error",
            Kind::Timeout => "timeout",
            Kind::Partial => "partial",
            Kind::RateLimit => "rate_limit",
            Kind::Reset => "reset",
            Kind::SlowBody => "slow_body",
            Kind::Hang => "hang",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "latency" => Kind::Latency,
            "error" => Kind::Error,
            "timeout" => Kind::Timeout,
            "partial" => Kind::Partial,
            "rate_limit" => Kind::RateLimit,
            "reset" => Kind::Reset,
            "slow_body" => Kind::SlowBody,
            "hang" => Kind::Hang,
            _ => return None,
        })
    }

    fn allowed_for(self, target: Target) -> bool {
        match target {
            Target::Provider => matches!(
                self,
                Kind::Latency | Kind::Error | Kind::Timeout | Kind::Partial
            ),
            Target::Edge => !matches!(self, Kind::Timeout | Kind::Partial),
        }
    }

    /// Whether the fault decides the answer (the first one that fires wins).
    pub fn is_terminal(self) -> bool {
        !matches!(self, Kind::Latency | Kind::SlowBody)
    }
}

/// A latency distribution.
#[derive(Clone, Debug, PartialEq)]
pub enum Latency {
    Fixed(Duration),
    /// Uniform between the bounds, both included (millisecond steps).
    Uniform {
        min: Duration,
        max: Duration,
    },
    /// Normal, cut at 0.
    Normal {
        mean: Duration,
        stddev: Duration,
    },
    /// Log-normal with this median and 99th percentile.
    LogNormal {
        p50: Duration,
        p99: Duration,
    },
}

/// z of the 99th percentile of the standard normal.
const Z99: f64 = 2.326_347_874_040_841;

impl Latency {
    /// A sample from two uniform draws in `[0, 1)`.
    pub fn sample(&self, u1: f64, u2: f64) -> Duration {
        let ms = match self {
            Latency::Fixed(d) => return *d,
            Latency::Uniform { min, max } => {
                let (lo, hi) = (min.as_millis() as f64, max.as_millis() as f64);
                (lo + (u1 * (hi - lo + 1.0)).floor()).min(hi)
            }
            Latency::Normal { mean, stddev } => {
                mean.as_secs_f64() * 1000.0 + stddev.as_secs_f64() * 1000.0 * gaussian(u1, u2)
            }
            Latency::LogNormal { p50, p99 } => {
                let mu = (p50.as_secs_f64() * 1000.0).ln();
                let sigma = ((p99.as_secs_f64() * 1000.0).ln() - mu) / Z99;
                (mu + sigma * gaussian(u1, u2)).exp()
            }
        };
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        Duration::from_millis(ms.round() as u64).min(MAX_LATENCY)
    }

    /// `2s`, `1s..3s`, `normal:2s,500ms`, `lognormal:2s,20s` (p50, p99),
    /// `fixed:2s`, `uniform:1s..3s`.
    pub fn parse_spec(spec: &str) -> Result<Latency, String> {
        let spec = spec.trim();
        let (dist, rest) = match spec.split_once(':') {
            Some((d, r)) => (d.trim().to_ascii_lowercase(), r.trim()),
            None if spec.contains("..") => ("uniform".to_string(), spec),
            None => ("fixed".to_string(), spec),
        };
        let two = |sep: &str| -> Result<(Duration, Duration), String> {
            let (a, b) = rest.split_once(sep).ok_or_else(|| {
                format!("{dist} needs two values separated by {sep:?}, got {rest:?}")
            })?;
            Ok((parse_duration(a)?, parse_duration(b)?))
        };
        let latency = match dist.as_str() {
            "fixed" => Latency::Fixed(parse_duration(rest)?),
            "uniform" => {
                let (min, max) = two("..")?;
                Latency::Uniform { min, max }
            }
            "normal" => {
                let (mean, stddev) = two(",")?;
                Latency::Normal { mean, stddev }
            }
            "lognormal" => {
                let (p50, p99) = two(",")?;
                Latency::LogNormal { p50, p99 }
            }
            other => {
                return Err(format!(
                    "unknown distribution {other:?} (fixed, uniform, normal, lognormal)"
                ))
            }
        };
        latency.validate()?;
        Ok(latency)
    }

    fn from_json(value: &Value) -> Result<Latency, String> {
        match value {
            Value::String(s) => Latency::parse_spec(s),
            Value::Number(_) => Ok(Latency::Fixed(duration_of(value)?)),
            Value::Object(map) => {
                let dist = match map.get("dist") {
                    Some(Value::String(s)) => s.to_ascii_lowercase(),
                    Some(_) => return Err("dist: must be a string".into()),
                    None => return Err("dist: missing (fixed, uniform, normal, lognormal)".into()),
                };
                let allowed: &[&str] = match dist.as_str() {
                    "fixed" => &["dist", "value"],
                    "uniform" => &["dist", "min", "max"],
                    "normal" => &["dist", "mean", "stddev"],
                    "lognormal" => &["dist", "p50", "p99"],
                    other => {
                        return Err(format!(
                        "dist: unknown distribution {other:?} (fixed, uniform, normal, lognormal)"
                    ))
                    }
                };
                if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
                    return Err(format!(
                        "{k}: unknown field for {dist} (expected {allowed:?})"
                    ));
                }
                let d = |k: &str| -> Result<Duration, String> {
                    map.get(k)
                        .ok_or_else(|| format!("{k}: missing"))
                        .and_then(|v| duration_of(v).map_err(|e| format!("{k}: {e}")))
                };
                let latency = match dist.as_str() {
                    "fixed" => Latency::Fixed(d("value")?),
                    "uniform" => Latency::Uniform {
                        min: d("min")?,
                        max: d("max")?,
                    },
                    "normal" => Latency::Normal {
                        mean: d("mean")?,
                        stddev: d("stddev")?,
                    },
                    _ => Latency::LogNormal {
                        p50: d("p50")?,
                        p99: d("p99")?,
                    },
                };
                latency.validate()?;
                Ok(latency)
            }
            _ => Err("must be a string like \"2s\" or \"1s..3s\", or a table with dist".into()),
        }
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Latency::Fixed(_) | Latency::Normal { .. } => Ok(()),
            Latency::Uniform { min, max } if min > max => Err(format!(
                "min ({}) is above max ({})",
                fmt_duration(*min),
                fmt_duration(*max)
            )),
            Latency::Uniform { .. } => Ok(()),
            Latency::LogNormal { p50, .. } if p50.is_zero() => Err("p50: must be above 0".into()),
            Latency::LogNormal { p50, p99 } if p99 < p50 => Err(format!(
                "p99 ({}) is below p50 ({})",
                fmt_duration(*p99),
                fmt_duration(*p50)
            )),
            Latency::LogNormal { .. } => Ok(()),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Latency::Fixed(d) => json!({"dist": "fixed", "value": fmt_duration(*d)}),
            Latency::Uniform { min, max } => {
                json!({"dist": "uniform", "min": fmt_duration(*min), "max": fmt_duration(*max)})
            }
            Latency::Normal { mean, stddev } => {
                json!({"dist": "normal", "mean": fmt_duration(*mean), "stddev": fmt_duration(*stddev)})
            }
            Latency::LogNormal { p50, p99 } => {
                json!({"dist": "lognormal", "p50": fmt_duration(*p50), "p99": fmt_duration(*p99)})
            }
        }
    }
}

/// Box–Muller: a standard normal from two uniforms in `[0, 1)`.
fn gaussian(u1: f64, u2: f64) -> f64 {
    let u1 = 1.0 - u1; // (0, 1]
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Method and path pattern of an edge rule: `POST /api/images/*`, `* /api/auth/*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutePattern {
    /// `None`: any method.
    pub method: Option<String>,
    /// `*` matches any run of characters, `/` included.
    pub path: String,
}

impl RoutePattern {
    pub fn parse(s: &str) -> Result<RoutePattern, String> {
        let s = s.trim();
        let (method, path) = match s.split_once(char::is_whitespace) {
            Some((m, p)) => (m.trim(), p.trim()),
            None if s.starts_with('/') || s == "*" => ("*", s),
            None => {
                return Err(format!(
                    "{s:?} is not \"METHOD /path\" (e.g. \"POST /api/*\")"
                ))
            }
        };
        if !(path.starts_with('/') || path == "*") {
            return Err(format!("path {path:?} must start with '/' (or be *)"));
        }
        if method != "*" && !method.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("method {method:?} is not a method name or *"));
        }
        Ok(RoutePattern {
            method: (method != "*").then(|| method.to_ascii_uppercase()),
            path: path.to_string(),
        })
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && glob(self.path.as_bytes(), path.as_bytes())
    }

    pub fn to_text(&self) -> String {
        format!("{} {}", self.method.as_deref().unwrap_or("*"), self.path)
    }
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && pattern[p] != b'*' && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// One fault rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Unique in the plan; labels the metrics and keys the rule's draws.
    pub name: String,
    pub target: Target,
    pub kind: Kind,
    /// Share of the matching requests or attempts it fires on (0..=1).
    pub rate: f64,
    /// Active from this offset of the run epoch (included)…
    pub from: Option<Duration>,
    /// …until this one (excluded).
    pub until: Option<Duration>,
    /// Edge rules: which requests.
    pub route: Option<RoutePattern>,
    /// Error: statuses and their weights.
    pub statuses: Vec<(u16, u32)>,
    /// Error: the message (provider `error_details.error`, edge `{"error"}`).
    pub message: Option<String>,
    /// Edge error: the whole JSON body instead of `{"error": message}`.
    pub body: Option<Value>,
    /// Latency: the distribution.
    pub latency: Option<Latency>,
    /// Slow body: the pace.
    pub bytes_per_second: Option<u64>,
    /// Partial: outputs produced (default: drawn in 1..n-1).
    pub produced: Option<u32>,
    /// Rate limit: `RateLimit-Limit` (default `RATE_LIMIT_MAX` or 300).
    pub limit: Option<u32>,
    /// Rate limit: `Retry-After` and `RateLimit-Reset` (default 60 s).
    pub retry_after: Option<Duration>,
    /// Hang: longest hang before the connection is closed (default 10 min).
    pub max: Option<Duration>,
    /// Provider rules: decide once per job (every attempt alike, so a
    /// failing job fails all its retries) instead of once per attempt.
    pub per_job: bool,
}

impl Rule {
    /// Whether the rule's window holds `elapsed` (time since the epoch).
    pub fn active_at(&self, elapsed: Duration) -> bool {
        self.from.is_none_or(|from| elapsed >= from)
            && self.until.is_none_or(|until| elapsed < until)
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("target".into(), json!(self.target.as_str()));
        m.insert("kind".into(), json!(self.kind.as_str()));
        m.insert("rate".into(), json!(self.rate));
        if let Some(d) = self.from {
            m.insert("from".into(), json!(fmt_duration(d)));
        }
        if let Some(d) = self.until {
            m.insert("until".into(), json!(fmt_duration(d)));
        }
        if let Some(r) = &self.route {
            m.insert("route".into(), json!(r.to_text()));
        }
        if self.kind == Kind::Error {
            let statuses: Map<String, Value> = self
                .statuses
                .iter()
                .map(|(s, w)| (s.to_string(), json!(w)))
                .collect();
            m.insert("statuses".into(), Value::Object(statuses));
        }
        if let Some(v) = &self.message {
            m.insert("message".into(), json!(v));
        }
        if let Some(v) = &self.body {
            m.insert("body".into(), v.clone());
        }
        if let Some(v) = &self.latency {
            m.insert("latency".into(), v.to_json());
        }
        if let Some(v) = self.bytes_per_second {
            m.insert("bytes_per_second".into(), json!(v));
        }
        if let Some(v) = self.produced {
            m.insert("produced".into(), json!(v));
        }
        if let Some(v) = self.limit {
            m.insert("limit".into(), json!(v));
        }
        if let Some(v) = self.retry_after {
            m.insert("retry_after".into(), json!(fmt_duration(v)));
        }
        if let Some(v) = self.max {
            m.insert("max".into(), json!(fmt_duration(v)));
        }
        if self.per_job {
            m.insert("per".into(), json!("job"));
        }
        Value::Object(m)
    }

    /// A rule from its JSON (or TOML-converted) table; errors name the
    /// field relative to the rule (`rate: …`).
    pub fn from_json(value: &Value, default_name: &str) -> Result<Rule, String> {
        let Value::Object(map) = value else {
            return Err("must be a table/object".into());
        };
        const FIELDS: &[&str] = &[
            "name",
            "target",
            "kind",
            "rate",
            "from",
            "until",
            "route",
            "status",
            "statuses",
            "message",
            "body",
            "latency",
            "bytes_per_second",
            "produced",
            "limit",
            "retry_after",
            "per",
            "max",
        ];
        if let Some(k) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "{k}: unknown field (expected one of {})",
                FIELDS.join(", ")
            ));
        }
        let at = |k: &str, e: String| format!("{k}: {e}");
        let string = |k: &str| -> Result<Option<String>, String> {
            match map.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(at(k, "must be a string".into())),
            }
        };
        let duration = |k: &str| -> Result<Option<Duration>, String> {
            match map.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => duration_of(v).map(Some).map_err(|e| at(k, e)),
            }
        };
        let unsigned = |k: &str, min: u64, max: u64| -> Result<Option<u64>, String> {
            match map.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                    _ => Err(at(
                        k,
                        format!("must be an integer in {min}..={max}, got {v}"),
                    )),
                },
            }
        };
        let name = string("name")?.unwrap_or_else(|| default_name.to_string());
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(at(
                "name",
                format!("{name:?} must be 1..=64 characters of A-Z a-z 0-9 - _ ."),
            ));
        }
        let kind_text = string("kind")?.ok_or_else(|| at("kind", "missing".into()))?;
        let kind = Kind::parse(&kind_text).ok_or_else(|| {
            at(
                "kind",
                format!(
                    "unknown kind {kind_text:?} (latency, error, timeout, partial, rate_limit, reset, slow_body, hang)"
                ),
            )
        })?;
        let route = string("route")?
            .map(|r| RoutePattern::parse(&r).map_err(|e| at("route", e)))
            .transpose()?;
        let target = match string("target")?.as_deref() {
            Some("provider") => Target::Provider,
            Some("edge") => Target::Edge,
            Some(other) => return Err(at("target", format!("{other:?} is not provider or edge"))),
            None if route.is_some() => Target::Edge,
            None => match kind {
                Kind::Timeout | Kind::Partial => Target::Provider,
                Kind::RateLimit | Kind::Reset | Kind::SlowBody | Kind::Hang => Target::Edge,
                _ => return Err(at("target", "missing (provider or edge)".into())),
            },
        };
        if !kind.allowed_for(target) {
            return Err(at(
                "kind",
                format!(
                    "{} does not apply to target {}",
                    kind.as_str(),
                    target.as_str()
                ),
            ));
        }
        if target == Target::Provider && route.is_some() {
            return Err(at("route", "only edge rules have a route".into()));
        }
        let rate = match map.get("rate") {
            None => 1.0,
            Some(v) => match v.as_f64() {
                Some(r) if (0.0..=1.0).contains(&r) => r,
                _ => {
                    return Err(at(
                        "rate",
                        format!("must be a number between 0 and 1, got {v}"),
                    ))
                }
            },
        };
        let from = duration("from")?;
        let until = duration("until")?;
        if let (Some(f), Some(u)) = (from, until) {
            if u <= f {
                return Err(at(
                    "until",
                    format!(
                        "{} is not after from ({})",
                        fmt_duration(u),
                        fmt_duration(f)
                    ),
                ));
            }
        }
        let mut statuses = Vec::new();
        if let Some(v) = map.get("status") {
            let s = v
                .as_u64()
                .filter(|s| (100..=599).contains(s))
                .ok_or_else(|| {
                    at(
                        "status",
                        format!("must be an HTTP status 100..=599, got {v}"),
                    )
                })?;
            statuses.push((s as u16, 1));
        }
        if let Some(v) = map.get("statuses") {
            if !statuses.is_empty() {
                return Err(at("statuses", "give status or statuses, not both".into()));
            }
            let Value::Object(weights) = v else {
                return Err(at(
                    "statuses",
                    "must be a table of status = weight, e.g. {\"503\" = 3, \"500\" = 1}".into(),
                ));
            };
            for (status, weight) in weights {
                let s = status
                    .parse::<u16>()
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| {
                        at(
                            "statuses",
                            format!("{status:?} is not an HTTP status 100..=599"),
                        )
                    })?;
                let w = weight.as_u64().filter(|w| *w <= 1_000_000).ok_or_else(|| {
                    at(
                        "statuses",
                        format!("weight of {status} must be an integer 0..=1000000, got {weight}"),
                    )
                })?;
                statuses.push((s, w as u32));
            }
            if statuses.iter().all(|(_, w)| *w == 0) {
                return Err(at("statuses", "needs at least one positive weight".into()));
            }
        }
        if !statuses.is_empty() && kind != Kind::Error {
            return Err(at("statuses", "only error rules have statuses".into()));
        }
        if kind == Kind::Error && statuses.is_empty() {
            statuses.push((if target == Target::Provider { 500 } else { 503 }, 1));
        }
        let latency = match map.get("latency") {
            None | Some(Value::Null) => None,
            Some(v) => Some(Latency::from_json(v).map_err(|e| at("latency", e))?),
        };
        match (kind, &latency) {
            (Kind::Latency, None) => return Err(at("latency", "missing (e.g. \"2s\", \"1s..3s\", {dist = \"lognormal\", p50 = \"2s\", p99 = \"20s\"})".into())),
            (Kind::Latency, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(at("latency", "only latency rules have a latency".into())),
        }
        let body = map.get("body").cloned();
        if body.is_some() && !(kind == Kind::Error && target == Target::Edge) {
            return Err(at("body", "only edge error rules have a body".into()));
        }
        let bytes_per_second = unsigned("bytes_per_second", 1, 1 << 40)?;
        if (kind == Kind::SlowBody) != bytes_per_second.is_some() {
            return Err(at(
                "bytes_per_second",
                if kind == Kind::SlowBody {
                    "missing"
                } else {
                    "only slow_body rules have it"
                }
                .into(),
            ));
        }
        let produced = unsigned("produced", 0, 1000)?.map(|n| n as u32);
        let limit = unsigned("limit", 1, u32::MAX as u64)?.map(|n| n as u32);
        let retry_after = duration("retry_after")?;
        let max = duration("max")?;
        for (field, value, kinds) in [
            ("produced", produced.is_some(), &[Kind::Partial][..]),
            ("limit", limit.is_some(), &[Kind::RateLimit][..]),
            ("retry_after", retry_after.is_some(), &[Kind::RateLimit][..]),
            ("max", max.is_some(), &[Kind::Hang][..]),
        ] {
            if value && !kinds.contains(&kind) {
                return Err(at(
                    field,
                    format!("does not apply to {} rules", kind.as_str()),
                ));
            }
        }
        let message = string("message")?;
        let per_job = match string("per")?.as_deref() {
            None | Some("attempt") => false,
            Some("job") if target == Target::Provider => true,
            Some("job") => return Err(at("per", "only provider rules can be per job".into())),
            Some(other) => return Err(at("per", format!("{other:?} is not attempt or job"))),
        };
        Ok(Rule {
            name,
            target,
            kind,
            rate,
            from,
            until,
            route: if target == Target::Edge {
                Some(route.unwrap_or(RoutePattern {
                    method: None,
                    path: "*".into(),
                }))
            } else {
                None
            },
            statuses,
            message,
            body,
            latency,
            bytes_per_second,
            produced,
            limit,
            retry_after,
            max,
            per_job,
        })
    }
}

/// The whole fault plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// How long a provider call may take before the worker gives up on it
    /// (a `timeout` fault waits this long, then fails with 504).
    pub provider_timeout: Option<Duration>,
    pub rules: Vec<Rule>,
}

impl Plan {
    /// A plan from TOML or JSON text (JSON when it starts with `{`).
    pub fn parse(text: &str) -> Result<Plan, String> {
        let value: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?
        } else {
            let table: toml::Table = toml::from_str(text)
                .map_err(|e| format!("invalid TOML: {}", e.message().trim()))?;
            serde_json::to_value(table).map_err(|e| format!("invalid TOML: {e}"))?
        };
        Plan::from_json(&value)
    }

    pub fn from_json(value: &Value) -> Result<Plan, String> {
        let Value::Object(map) = value else {
            return Err("the plan must be a table/object with rules".into());
        };
        if let Some(k) = map
            .keys()
            .find(|k| !["rules", "rule", "provider_timeout"].contains(&k.as_str()))
        {
            return Err(format!(
                "{k}: unknown field (expected rules, provider_timeout)"
            ));
        }
        let provider_timeout = match map.get("provider_timeout") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let d = duration_of(v).map_err(|e| format!("provider_timeout: {e}"))?;
                if d.is_zero() {
                    return Err("provider_timeout: must be above 0".into());
                }
                Some(d)
            }
        };
        let (key, rules) = match (map.get("rules"), map.get("rule")) {
            (Some(_), Some(_)) => return Err("rule: give rules or rule, not both".into()),
            (Some(r), None) => ("rules", r.clone()),
            (None, Some(r)) => ("rule", r.clone()),
            (None, None) => ("rules", Value::Array(Vec::new())),
        };
        let Value::Array(items) = rules else {
            return Err(format!("{key}: must be an array of tables ([[{key}]])"));
        };
        let mut plan = Plan {
            provider_timeout,
            rules: Vec::new(),
        };
        for (i, item) in items.iter().enumerate() {
            let rule = Rule::from_json(item, &format!("rule-{}", i + 1))
                .map_err(|e| format!("{key}[{i}].{e}"))?;
            plan.push(rule).map_err(|e| format!("{key}[{i}].{e}"))?;
        }
        Ok(plan)
    }

    /// Adds a rule; its name must be new.
    pub fn push(&mut self, rule: Rule) -> Result<(), String> {
        if self.rules.iter().any(|r| r.name == rule.name) {
            return Err(format!(
                "name: {:?} is already a rule of the plan",
                rule.name
            ));
        }
        self.rules.push(rule);
        Ok(())
    }

    /// The plan with `other`'s rules after its own (names must not clash).
    pub fn merge(mut self, other: Plan) -> Result<Plan, String> {
        if other.provider_timeout.is_some() {
            self.provider_timeout = other.provider_timeout;
        }
        for rule in other.rules {
            self.push(rule)?;
        }
        Ok(self)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "provider_timeout": self.provider_timeout.map(fmt_duration),
            "rules": self.rules.iter().map(Rule::to_json).collect::<Vec<_>>(),
        })
    }

    pub fn names(&self) -> BTreeSet<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }
}

/// `1.5s`, `500ms`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 2s, 1.5m"))?;
    let factor = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "us" | "µs" => 0.000_001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h)")),
    };
    seconds(n * factor).ok_or_else(|| format!("{s:?} is not a duration between 0 and 1 year"))
}

fn seconds(n: f64) -> Option<Duration> {
    (n.is_finite() && (0.0..=31_536_000.0).contains(&n)).then(|| Duration::from_secs_f64(n))
}

/// A duration from a JSON string (with unit) or number (seconds).
pub fn duration_of(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => parse_duration(s),
        Value::Number(n) => n
            .as_f64()
            .and_then(seconds)
            .ok_or_else(|| format!("{n} is not a number of seconds between 0 and 1 year")),
        _ => Err(format!(
            "{v} is not a duration like \"500ms\" or a number of seconds"
        )),
    }
}

/// Milliseconds when exact, else microseconds: `1500ms`, `0ms`, `250us`.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn globs_match() {
        let p = RoutePattern::parse("* /api/auth/*").unwrap();
        assert!(p.matches("POST", "/api/auth/login"));
        assert!(p.matches("get", "/api/auth/a/b"));
        assert!(!p.matches("GET", "/api/images"));
        let p = RoutePattern::parse("POST /api/images/seedream4/generate").unwrap();
        assert!(p.matches("POST", "/api/images/seedream4/generate"));
        assert!(!p.matches("GET", "/api/images/seedream4/generate"));
        assert!(!p.matches("POST", "/api/images/seedream4/generate/x"));
        assert!(RoutePattern::parse("/x/*/y")
            .unwrap()
            .matches("DELETE", "/x/1/2/y"));
        assert!(RoutePattern::parse("POST api").is_err());
        assert!(RoutePattern::parse("P0ST /api").is_err());
    }

    #[test]
    fn a_toml_plan_parses_and_round_trips() {
        let plan = Plan::parse(
            r#"
provider_timeout = "30s"

[[rules]]
name = "outage"
target = "provider"
kind = "error"
rate = 0.5
from = "10s"
until = "20s"
statuses = { "503" = 3, "500" = 1 }
message = "upstream down"

[[rules]]
name = "slow"
target = "provider"
kind = "latency"
latency = { dist = "lognormal", p50 = "2s", p99 = "20s" }

[[rules]]
name = "storm"
kind = "rate_limit"
route = "POST /api/images/*"
rate = 0.25
"#,
        )
        .unwrap();
        assert_eq!(plan.provider_timeout, Some(Duration::from_secs(30)));
        assert_eq!(plan.rules.len(), 3);
        assert_eq!(plan.rules[0].statuses, vec![(500, 1), (503, 3)]);
        assert_eq!(plan.rules[2].target, Target::Edge);
        assert!(plan.rules[0].active_at(Duration::from_secs(10)));
        assert!(!plan.rules[0].active_at(Duration::from_secs(20)));
        assert!(!plan.rules[0].active_at(Duration::from_millis(9999)));
        let again = Plan::from_json(&plan.to_json()).unwrap();
        assert_eq!(again, plan);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"rules":[{"kind":"error","target":"provider","rate":1.5}]}"#,
                "rules[0].rate:",
            ),
            (
                r#"{"rules":[{"kind":"error","target":"provider","rat":0.5}]}"#,
                "rules[0].rat:",
            ),
            (
                r#"{"rules":[{"kind":"nope","target":"provider"}]}"#,
                "rules[0].kind:",
            ),
            (
                r#"{"rules":[{"kind":"reset","target":"provider"}]}"#,
                "rules[0].kind:",
            ),
            (
                r#"{"rules":[{"kind":"latency","target":"edge"}]}"#,
                "rules[0].latency:",
            ),
            (
                r#"{"rules":[{"kind":"latency","target":"edge","latency":"3s..1s"}]}"#,
                "rules[0].latency:",
            ),
            (
                r#"{"rules":[{"kind":"error","target":"edge","statuses":{"99":1}}]}"#,
                "rules[0].statuses:",
            ),
            (
                r#"{"rules":[{"kind":"error","target":"edge","from":"4s","until":"2s"}]}"#,
                "rules[0].until:",
            ),
            (
                r#"{"rules":[{"kind":"slow_body","target":"edge"}]}"#,
                "rules[0].bytes_per_second:",
            ),
            (
                r#"{"rules":[{"name":"a","kind":"reset"},{"name":"a","kind":"hang"}]}"#,
                "rules[1].name:",
            ),
            (
                r#"{"rules":[{"kind":"reset","route":"GET nope"}]}"#,
                "rules[0].route:",
            ),
            (r#"{"rulez":[]}"#, "rulez:"),
            (r#"{"rules":{}}"#, "rules:"),
        ];
        for (text, field) in cases {
            let err = Plan::parse(text).unwrap_err();
            assert!(err.starts_with(field), "{text}: {err}");
        }
        assert!(Plan::parse("rules = [")
            .unwrap_err()
            .starts_with("invalid TOML"));
        assert!(Plan::parse("{").unwrap_err().starts_with("invalid JSON"));
    }

    #[test]
    fn latency_specs_parse() {
        assert_eq!(
            Latency::parse_spec("2s").unwrap(),
            Latency::Fixed(Duration::from_secs(2))
        );
        assert_eq!(
            Latency::parse_spec("1s..3s").unwrap(),
            Latency::Uniform {
                min: Duration::from_secs(1),
                max: Duration::from_secs(3)
            }
        );
        assert!(matches!(
            Latency::parse_spec("lognormal:2s,20s").unwrap(),
            Latency::LogNormal { .. }
        ));
        assert!(matches!(
            Latency::parse_spec("normal:2s,500ms").unwrap(),
            Latency::Normal { .. }
        ));
        assert!(Latency::parse_spec("lognormal:20s,2s").is_err());
        assert!(Latency::parse_spec("gamma:1s").is_err());
    }

    #[test]
    fn lognormal_hits_its_percentiles() {
        let l = Latency::LogNormal {
            p50: Duration::from_secs(2),
            p99: Duration::from_secs(20),
        };
        // u2 = 0 makes the cosine 1: z = sqrt(-2 ln(1 - u1)).
        // z = 0 at u1 = 0 → the median.
        assert_eq!(l.sample(0.0, 0.25), Duration::from_secs(2));
        let u1 = 1.0 - (-Z99 * Z99 / 2.0).exp();
        let p99 = l.sample(u1, 0.0).as_millis() as i64;
        assert!((p99 - 20_000).abs() <= 1, "{p99}");
        let u = Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(20),
        };
        assert_eq!(u.sample(0.0, 0.0), Duration::from_millis(10));
        assert_eq!(u.sample(0.999_999, 0.0), Duration::from_millis(20));
    }
}
