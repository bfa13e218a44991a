//! The fault plan: its model, its parsing from TOML or JSON (every error
//! names the field, e.g. `rules[2].rate: must be between 0 and 1`), the
//! latency distributions and the scheduling windows.
//!
//! A [`Rule`] is shaped as toxiproxy's toxics are: the fields every rule
//! has once (name, rate, window), a [`Target`] (the provider, per attempt
//! or per job; or the edge, with its route) and an [`Action`] that carries
//! only its own kind's fields.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Map, Value};

/// The largest latency any distribution yields (one hour).
pub const MAX_LATENCY: Duration = Duration::from_secs(3600);

/// Where a rule applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Where the simulated provider is called (worker or direct path).
    Provider(Per),
    /// In front of the routes (a tower layer), for the requests `route` matches.
    Edge(RoutePattern),
}

/// How often a provider rule draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    /// Once per attempt.
    Attempt,
    /// Once per job: every attempt alike, so a failing job fails all its
    /// retries.
    Job,
}

/// The label of provider rules (metrics, counters, JSON).
pub const PROVIDER: &str = "provider";
/// The label of edge rules.
pub const EDGE: &str = "edge";

impl Target {
    pub fn as_str(&self) -> &'static str {
        match self {
            Target::Provider(_) => PROVIDER,
            Target::Edge(_) => EDGE,
        }
    }

    pub fn is_edge(&self) -> bool {
        matches!(self, Target::Edge(_))
    }
}

/// What a rule does when it fires, with that kind's own settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Provider: replaces the provider's latency; edge: adds latency before
    /// the route runs.
    Latency(Latency),
    /// Provider: the attempt fails with a status of the mix; edge: that
    /// status with a JSON body.
    Error {
        /// Statuses and their weights (at least one positive weight).
        statuses: Vec<(u16, u32)>,
        /// Provider `error_details.error`, edge `{"error": message}`.
        message: Option<String>,
        /// Edge only: the whole JSON body instead of `{"error": message}`.
        body: Option<Value>,
    },
    /// Provider: never answers within the provider deadline.
    Timeout,
    /// Provider: k of n outputs produced (default: drawn in 1..n-1).
    Partial { produced: Option<u32> },
    /// Edge: 429 with the real rate limiter's headers.
    RateLimit {
        /// `RateLimit-Limit` (default `RATE_LIMIT_MAX` or 300).
        limit: Option<u32>,
        /// `Retry-After` and `RateLimit-Reset` (default 60 s).
        retry_after: Option<Duration>,
    },
    /// Edge: the connection is closed before any response byte.
    Reset,
    /// Edge: the response body trickles at `bytes_per_second`.
    SlowBody { bytes_per_second: u64 },
    /// Edge: no answer until the client gives up, or `max` (default 10 min).
    Hang { max: Option<Duration> },
}

/// An action's name, without its settings: labels the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Latency,
    Error,
    Timeout,
    Partial,
    RateLimit,
    Reset,
    SlowBody,
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

    /// Where the kind can apply: `(provider, edge)`.
    fn applies_to(self) -> (bool, bool) {
        match self {
            Kind::Latency | Kind::Error => (true, true),
            Kind::Timeout | Kind::Partial => (true, false),
            Kind::RateLimit | Kind::Reset | Kind::SlowBody | Kind::Hang => (false, true),
        }
    }

    /// The fields of this kind's action, beside the shared ones.
    fn own_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Latency => &["latency"],
            Kind::Error => &["status", "statuses", "message", "body"],
            Kind::Partial => &["produced"],
            Kind::RateLimit => &["limit", "retry_after"],
            Kind::SlowBody => &["bytes_per_second"],
            Kind::Hang => &["max"],
            Kind::Timeout | Kind::Reset => &[],
        }
    }
}

impl Action {
    pub fn kind(&self) -> Kind {
        match self {
            Action::Latency(_) => Kind::Latency,
            Action::Error { .. } => Kind::Error,
            Action::Timeout => Kind::Timeout,
            Action::Partial { .. } => Kind::Partial,
            Action::RateLimit { .. } => Kind::RateLimit,
            Action::Reset => Kind::Reset,
            Action::SlowBody { .. } => Kind::SlowBody,
            Action::Hang { .. } => Kind::Hang,
        }
    }

    /// The action's own fields, as a rule's JSON has them.
    fn write_json(&self, m: &mut Map<String, Value>) {
        match self {
            Action::Latency(latency) => {
                m.insert("latency".into(), latency.to_json());
            }
            Action::Error {
                statuses,
                message,
                body,
            } => {
                let statuses: Map<String, Value> = statuses
                    .iter()
                    .map(|(s, w)| (s.to_string(), json!(w)))
                    .collect();
                m.insert("statuses".into(), Value::Object(statuses));
                if let Some(v) = message {
                    m.insert("message".into(), json!(v));
                }
                if let Some(v) = body {
                    m.insert("body".into(), v.clone());
                }
            }
            Action::Partial { produced } => {
                if let Some(v) = produced {
                    m.insert("produced".into(), json!(v));
                }
            }
            Action::RateLimit { limit, retry_after } => {
                if let Some(v) = limit {
                    m.insert("limit".into(), json!(v));
                }
                if let Some(v) = retry_after {
                    m.insert("retry_after".into(), json!(fmt_duration(*v)));
                }
            }
            Action::SlowBody { bytes_per_second } => {
                m.insert("bytes_per_second".into(), json!(bytes_per_second));
            }
            Action::Hang { max } => {
                if let Some(v) = max {
                    m.insert("max".into(), json!(fmt_duration(*v)));
                }
            }
            Action::Timeout | Action::Reset => {}
        }
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
    /// Share of the matching requests or attempts it fires on (0..=1).
    pub rate: f64,
    /// Active from this offset of the run epoch (included)…
    pub from: Option<Duration>,
    /// …until this one (excluded).
    pub until: Option<Duration>,
    pub action: Action,
}

/// Every field a rule's table may have.
const FIELDS: &[&str] = &[
    "name",
    "target",
    "kind",
    "rate",
    "from",
    "until",
    "route",
    "per",
    "status",
    "statuses",
    "message",
    "body",
    "latency",
    "bytes_per_second",
    "produced",
    "limit",
    "retry_after",
    "max",
];

/// The fields of one rule's table, read with errors that name the field.
struct Fields<'a>(&'a Map<String, Value>);

fn at(field: &str, e: impl std::fmt::Display) -> String {
    format!("{field}: {e}")
}

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn string(&self, k: &str) -> Result<Option<String>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(at(k, "must be a string")),
        }
    }

    fn duration(&self, k: &str) -> Result<Option<Duration>, String> {
        self.get(k)
            .map(|v| duration_of(v).map_err(|e| at(k, e)))
            .transpose()
    }

    fn unsigned(&self, k: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(at(
                    k,
                    format!("must be an integer in {min}..={max}, got {v}"),
                )),
            },
        }
    }

    fn name(&self, default_name: &str) -> Result<String, String> {
        let name = self
            .string("name")?
            .unwrap_or_else(|| default_name.to_string());
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(at(
                "name",
                format!("{name:?} must be 1..=64 characters of A-Z a-z 0-9 - _ ."),
            ));
        }
        Ok(name)
    }

    fn kind(&self) -> Result<Kind, String> {
        let text = self.string("kind")?.ok_or_else(|| at("kind", "missing"))?;
        Kind::parse(&text).ok_or_else(|| {
            at(
                "kind",
                format!(
                    "unknown kind {text:?} (latency, error, timeout, partial, rate_limit, reset, slow_body, hang)"
                ),
            )
        })
    }

    /// The target: given, or implied by a route or by a kind that applies
    /// to one target only.
    fn target(&self, kind: Kind) -> Result<Target, String> {
        let route = self
            .string("route")?
            .map(|r| RoutePattern::parse(&r).map_err(|e| at("route", e)))
            .transpose()?;
        let (provider, edge) = kind.applies_to();
        let edge_side = match self.string("target")?.as_deref() {
            Some("provider") => false,
            Some("edge") => true,
            Some(other) => return Err(at("target", format!("{other:?} is not provider or edge"))),
            None if route.is_some() => true,
            None if provider != edge => edge,
            None => return Err(at("target", "missing (provider or edge)")),
        };
        if !(if edge_side { edge } else { provider }) {
            return Err(at(
                "kind",
                format!(
                    "{} does not apply to target {}",
                    kind.as_str(),
                    if edge_side { EDGE } else { PROVIDER }
                ),
            ));
        }
        let per = self.string("per")?;
        if edge_side {
            if per.is_some() {
                return Err(at("per", "only provider rules can be per job"));
            }
            return Ok(Target::Edge(route.unwrap_or(RoutePattern {
                method: None,
                path: "*".into(),
            })));
        }
        if route.is_some() {
            return Err(at("route", "only edge rules have a route"));
        }
        match per.as_deref() {
            None | Some("attempt") => Ok(Target::Provider(Per::Attempt)),
            Some("job") => Ok(Target::Provider(Per::Job)),
            Some(other) => Err(at("per", format!("{other:?} is not attempt or job"))),
        }
    }

    fn rate(&self) -> Result<f64, String> {
        match self.0.get("rate") {
            None => Ok(1.0),
            Some(v) => match v.as_f64() {
                Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(at(
                    "rate",
                    format!("must be a number between 0 and 1, got {v}"),
                )),
            },
        }
    }

    /// `from` and `until`, `until` after `from`.
    fn window(&self) -> Result<(Option<Duration>, Option<Duration>), String> {
        let from = self.duration("from")?;
        let until = self.duration("until")?;
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
        Ok((from, until))
    }

    /// `status = 503` or `statuses = {"503" = 3, "500" = 1}`; `default`
    /// when neither is given.
    fn statuses(&self, default: u16) -> Result<Vec<(u16, u32)>, String> {
        let http_status = |n: Option<u64>| n.filter(|s| (100..=599).contains(s)).map(|s| s as u16);
        match (self.get("status"), self.get("statuses")) {
            (Some(_), Some(_)) => Err(at("statuses", "give status or statuses, not both")),
            (None, None) => Ok(vec![(default, 1)]),
            (Some(v), None) => {
                let s = http_status(v.as_u64()).ok_or_else(|| {
                    at(
                        "status",
                        format!("must be an HTTP status 100..=599, got {v}"),
                    )
                })?;
                Ok(vec![(s, 1)])
            }
            (None, Some(v)) => {
                let Value::Object(weights) = v else {
                    return Err(at(
                        "statuses",
                        "must be a table of status = weight, e.g. {\"503\" = 3, \"500\" = 1}",
                    ));
                };
                let mut statuses = Vec::new();
                for (status, weight) in weights {
                    let s = http_status(status.parse().ok()).ok_or_else(|| {
                        at(
                            "statuses",
                            format!("{status:?} is not an HTTP status 100..=599"),
                        )
                    })?;
                    let w = weight.as_u64().filter(|w| *w <= 1_000_000).ok_or_else(|| {
                        at(
                            "statuses",
                            format!(
                                "weight of {status} must be an integer 0..=1000000, got {weight}"
                            ),
                        )
                    })?;
                    statuses.push((s, w as u32));
                }
                if statuses.iter().all(|(_, w)| *w == 0) {
                    return Err(at("statuses", "needs at least one positive weight"));
                }
                Ok(statuses)
            }
        }
    }

    /// The action of `kind`, from that kind's own fields; a field of
    /// another kind is refused.
    fn action(&self, kind: Kind, target: &Target) -> Result<Action, String> {
        let own = kind.own_fields();
        let shared = FIELDS.iter().take_while(|f| **f != "status");
        if let Some(k) = self.0.iter().find_map(|(k, v)| {
            let foreign =
                !v.is_null() && !own.contains(&k.as_str()) && !shared.clone().any(|f| f == k);
            foreign.then_some(k)
        }) {
            return Err(at(k, format!("does not apply to {} rules", kind.as_str())));
        }
        Ok(match kind {
            Kind::Latency => Action::Latency(match self.get("latency") {
                Some(v) => Latency::from_json(v).map_err(|e| at("latency", e))?,
                None => return Err(at("latency", "missing (e.g. \"2s\", \"1s..3s\", {dist = \"lognormal\", p50 = \"2s\", p99 = \"20s\"})")),
            }),
            Kind::Error => {
                let body = self.get("body").cloned();
                if body.is_some() && !target.is_edge() {
                    return Err(at("body", "only edge error rules have a body"));
                }
                Action::Error {
                    statuses: self.statuses(if target.is_edge() { 503 } else { 500 })?,
                    message: self.string("message")?,
                    body,
                }
            }
            Kind::Timeout => Action::Timeout,
            Kind::Partial => Action::Partial {
                produced: self.unsigned("produced", 0, 1000)?.map(|n| n as u32),
            },
            Kind::RateLimit => Action::RateLimit {
                limit: self
                    .unsigned("limit", 1, u32::MAX as u64)?
                    .map(|n| n as u32),
                retry_after: self.duration("retry_after")?,
            },
            Kind::Reset => Action::Reset,
            Kind::SlowBody => Action::SlowBody {
                bytes_per_second: self
                    .unsigned("bytes_per_second", 1, 1 << 40)?
                    .ok_or_else(|| at("bytes_per_second", "missing"))?,
            },
            Kind::Hang => Action::Hang {
                max: self.duration("max")?,
            },
        })
    }
}

impl Rule {
    /// Whether the rule's window holds `elapsed` (time since the epoch).
    pub fn active_at(&self, elapsed: Duration) -> bool {
        self.from.is_none_or(|from| elapsed >= from)
            && self.until.is_none_or(|until| elapsed < until)
    }

    pub fn kind(&self) -> Kind {
        self.action.kind()
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("target".into(), json!(self.target.as_str()));
        m.insert("kind".into(), json!(self.kind().as_str()));
        m.insert("rate".into(), json!(self.rate));
        if let Some(d) = self.from {
            m.insert("from".into(), json!(fmt_duration(d)));
        }
        if let Some(d) = self.until {
            m.insert("until".into(), json!(fmt_duration(d)));
        }
        match &self.target {
            Target::Edge(route) => {
                m.insert("route".into(), json!(route.to_text()));
            }
            Target::Provider(Per::Job) => {
                m.insert("per".into(), json!("job"));
            }
            Target::Provider(Per::Attempt) => {}
        }
        self.action.write_json(&mut m);
        Value::Object(m)
    }

    /// A rule from its JSON (or TOML-converted) table; errors name the
    /// field relative to the rule (`rate: …`).
    pub fn from_json(value: &Value, default_name: &str) -> Result<Rule, String> {
        let Value::Object(map) = value else {
            return Err("must be a table/object".into());
        };
        if let Some(k) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(at(
                k,
                format!("unknown field (expected one of {})", FIELDS.join(", ")),
            ));
        }
        let fields = Fields(map);
        let name = fields.name(default_name)?;
        let kind = fields.kind()?;
        let target = fields.target(kind)?;
        let rate = fields.rate()?;
        let (from, until) = fields.window()?;
        let action = fields.action(kind, &target)?;
        Ok(Rule {
            name,
            target,
            rate,
            from,
            until,
            action,
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

/// k6's duration syntax (`1m30s`, `1.5s`, `500ms`, the `k6-duration`
/// crate, as loadgen reads it), or a bare number of seconds as in a JSON
/// plan; at most one year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let parsed = match s.parse::<f64>() {
        Ok(n) => seconds(n),
        Err(_) => k6_duration::parse(s).and_then(|d| seconds(d.as_secs_f64())),
    };
    parsed.ok_or_else(|| {
        format!("{s:?} is not a duration between 0 and 1 year like 500ms, 2s, 1m30s (ns, us, ms, s, m, h; a bare number is seconds)")
    })
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
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration(" 250us ").unwrap(),
            Duration::from_micros(250)
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("2y").is_err());
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
        assert_eq!(
            plan.rules[0].action,
            Action::Error {
                statuses: vec![(500, 1), (503, 3)],
                message: Some("upstream down".into()),
                body: None,
            }
        );
        assert_eq!(
            plan.rules[2].target,
            Target::Edge(RoutePattern::parse("POST /api/images/*").unwrap())
        );
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
    fn actions_carry_only_their_own_fields() {
        let plan = Plan::parse(
            r#"{"rules":[
              {"name":"j","target":"provider","kind":"error","per":"job","from":"1m30s"},
              {"name":"s","kind":"slow_body","bytes_per_second":100},
              {"name":"h","kind":"hang","route":"GET /x","max":"2s"}]}"#,
        )
        .unwrap();
        assert_eq!(plan.rules[0].target, Target::Provider(Per::Job));
        assert_eq!(plan.rules[0].from, Some(Duration::from_secs(90)));
        assert_eq!(
            plan.rules[1].action,
            Action::SlowBody {
                bytes_per_second: 100
            }
        );
        assert_eq!(
            plan.rules[2].action,
            Action::Hang {
                max: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(Plan::from_json(&plan.to_json()).unwrap(), plan);
        for (text, err) in [
            (
                r#"{"rules":[{"kind":"reset","bytes_per_second":5}]}"#,
                "rules[0].bytes_per_second: does not apply to reset rules",
            ),
            (
                r#"{"rules":[{"kind":"latency","target":"edge","latency":"1s","status":500}]}"#,
                "rules[0].status: does not apply to latency rules",
            ),
            (
                r#"{"rules":[{"kind":"reset","per":"job"}]}"#,
                "rules[0].per: only provider rules can be per job",
            ),
            (
                r#"{"rules":[{"kind":"error","target":"provider","body":{}}]}"#,
                "rules[0].body: only edge error rules have a body",
            ),
        ] {
            assert_eq!(Plan::parse(text).unwrap_err(), err, "{text}");
        }
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
