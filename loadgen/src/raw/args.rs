//! `loadgen http`'s options (oha's and hey's names wherever they have one)
//! and their resolution into a [`RawPlan`]: every invalid option is one
//! error naming the option (exit 104).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::cli::OutputArgs;
use crate::http::tls::TlsOptions;
use crate::plan::{parse_duration, DefaultThresholds, Outputs, PlanError};

#[derive(Args, Debug, Clone)]
#[command(
    mut_arg("thresholds", |a| a.help("`metric:expression` (repeatable), e.g. 'http_req_duration:p(99)<50' or 'http_req_failed:rate<0.01;abortOnFail'. None by default")),
    mut_arg("outputs_to", |a| a.help("`json=FILE` or `csv=FILE` (repeatable): every request's samples")),
    mut_arg("summary_trend_stats", |a| a
        .help("Trend columns of the summary, k6's list")
        .default_value("avg,min,med,max,p(90),p(95),p(99)")),
    mut_arg("summary_mode", |a| a.help("legacy (default), compact or full")),
)]
pub struct HttpArgs {
    /// The URL every request goes to (http:// or https://).
    pub url: String,
    /// Connections (each one a VU that sends its next request when the
    /// previous answer is in).
    #[arg(short = 'c', long = "connections", default_value_t = 50)]
    pub connections: u64,
    /// Requests to send in all (default 200 when -z is not given).
    #[arg(short = 'n', long = "requests")]
    pub requests: Option<u64>,
    /// Run for this long (k6 form: 10s, 1m30s); with -n, whichever ends first.
    #[arg(short = 'z', long = "duration")]
    pub duration: Option<String>,
    /// Requests per second, an open model: each request starts on its
    /// schedule, its latency counts from that scheduled start, and a start
    /// that had to wait for a free connection is counted late.
    #[arg(short = 'q', long = "rate")]
    pub rate: Option<f64>,
    /// With -q: start requests in groups of N (same average rate).
    #[arg(long)]
    pub burst: Option<u64>,
    /// HTTP method.
    #[arg(short = 'm', long = "method", default_value = "GET")]
    pub method: String,
    /// `Name: value` request header (repeatable).
    #[arg(short = 'H', long = "header", action = clap::ArgAction::Append)]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(short = 'd', long = "body", conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body read from a file.
    #[arg(short = 'D', long = "body-file")]
    pub body_file: Option<PathBuf>,
    /// Content-Type of the body (none sent unless given).
    #[arg(short = 'T', long = "content-type")]
    pub content_type: Option<String>,
    /// Per request, from its start to the last byte of the answer.
    #[arg(long, default_value = "20s")]
    pub timeout: String,
    /// A new connection for every request (`Connection: close`).
    #[arg(long)]
    pub disable_keepalive: bool,
    /// Threads that run the connections (default: half the cores, at least one).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Accept any TLS certificate (self-signed, expired, another host's).
    #[arg(long, visible_alias = "insecure-skip-tls-verify")]
    pub insecure: bool,
    /// Also trust the CA certificate(s) in this PEM file.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,

    #[command(flatten)]
    pub output: OutputArgs,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// When the run ends and how requests start.
#[derive(Clone, Debug, PartialEq)]
pub struct Load {
    pub connections: u64,
    /// At most this many requests.
    pub requests: Option<u64>,
    /// No request starts after this.
    pub duration: Option<Duration>,
    /// Open model: `burst` requests every `burst / rate` seconds.
    pub rate: Option<Rate>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u64,
}

impl Rate {
    /// When request `slot` (0-based) is due, from the start of the run.
    pub fn due(&self, slot: u64) -> Duration {
        Duration::from_secs_f64((slot / self.burst * self.burst) as f64 / self.per_second)
    }
}

/// The request every connection sends, as options give it.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestSpec {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub content_type: Option<String>,
    pub keep_alive: bool,
}

#[derive(Clone, Debug)]
pub struct RawPlan {
    pub load: Load,
    pub request: RequestSpec,
    pub timeout: Duration,
    pub threads: usize,
    pub tls: TlsOptions,
    /// Thresholds, summary, `--summary-export`, `--out` and `--report`.
    pub output: Outputs,
    pub quiet: bool,
}

fn bad(option: &'static str, why: impl Into<String>) -> PlanError {
    PlanError::new(option, why)
}

impl RawPlan {
    pub fn from_args(args: &HttpArgs) -> Result<RawPlan, PlanError> {
        crate::http::BaseUrl::parse(&args.url).map_err(|e| bad("url", e.to_string()))?;
        if args.connections == 0 {
            return Err(bad("connections", "must be at least 1"));
        }
        let duration = args
            .duration
            .as_deref()
            .map(|text| parse_duration("duration", text))
            .transpose()?;
        if duration == Some(Duration::ZERO) {
            return Err(bad("duration", "must be more than 0"));
        }
        let requests = match (args.requests, duration) {
            (Some(0), _) => return Err(bad("requests", "must be at least 1")),
            (None, None) => Some(200),
            (n, _) => n,
        };
        let rate = match (args.rate, args.burst) {
            (None, Some(_)) => return Err(bad("burst", "needs a rate (-q)")),
            (Some(r), _) if !(r.is_finite() && r > 0.0) => {
                return Err(bad("rate", format!("{r}: must be above 0")))
            }
            (_, Some(0)) => return Err(bad("burst", "must be at least 1")),
            (Some(per_second), burst) => Some(Rate {
                per_second,
                burst: burst.unwrap_or(1),
            }),
            (None, None) => None,
        };
        let headers = args
            .headers
            .iter()
            .map(|h| match h.split_once(':') {
                Some((name, value)) if !name.trim().is_empty() => {
                    Ok((name.trim().to_string(), value.trim().to_string()))
                }
                _ => Err(bad("header", format!("{h:?}: expected \"Name: value\""))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let body = match (&args.body, &args.body_file) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(path)) => Some(
                std::fs::read(path)
                    .map_err(|e| bad("body-file", format!("{}: {e}", path.display())))?,
            ),
            (None, None) => None,
        };
        let timeout = parse_duration("timeout", &args.timeout)?;
        if timeout.is_zero() {
            return Err(bad("timeout", "must be more than 0"));
        }
        let threads = match args.threads {
            Some(0) => return Err(bad("threads", "must be at least 1")),
            Some(n) => n,
            None => crate::plan::default_threads(),
        };
        Ok(RawPlan {
            load: Load {
                connections: args.connections,
                requests,
                duration,
                rate,
            },
            request: RequestSpec {
                url: args.url.clone(),
                method: args.method.clone(),
                headers,
                body,
                content_type: args.content_type.clone(),
                keep_alive: !args.disable_keepalive,
            },
            timeout,
            threads,
            tls: TlsOptions::new(args.insecure, args.tls_ca.as_deref())
                .map_err(|why| bad("tls-ca", why))?,
            output: Outputs::from_args(&args.output, DefaultThresholds::None)?,
            quiet: args.quiet,
        })
    }

    /// How long the run is planned to last, for the progress line.
    pub fn planned(&self) -> Duration {
        match (self.load.duration, self.load.rate, self.load.requests) {
            (Some(d), _, _) => d,
            (None, Some(rate), Some(n)) => rate.due(n),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_keep_the_average_rate() {
        let rate = Rate {
            per_second: 100.0,
            burst: 10,
        };
        assert_eq!(rate.due(0), Duration::ZERO);
        assert_eq!(rate.due(9), Duration::ZERO);
        assert_eq!(rate.due(10), Duration::from_millis(100));
        assert_eq!(rate.due(25), Duration::from_millis(200));
        let steady = Rate {
            per_second: 200.0,
            burst: 1,
        };
        assert_eq!(steady.due(3), Duration::from_millis(15));
    }
}
