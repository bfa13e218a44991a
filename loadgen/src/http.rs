//! A VU's HTTP/1.1 client: one kept-alive connection and a cookie jar per
//! VU (as k6), the timing parts k6 reports, and failures classified into the
//! `error` tag instead of ending the run.
//!
//! Only `http://` is supported: the mock and the real backend's load-test
//! setup both listen on plain HTTP. hyper does not report when a request
//! has been written, so `sending` is the time to get the connection ready to
//! send and the write itself is counted in `waiting` (time to first byte).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum BaseUrlError {
    #[error("{0:?} is not an http:// URL (https is not supported)")]
    NotHttp(String),
    #[error("{0:?} has no host")]
    NoHost(String),
}

/// Where requests go: scheme-less host and port plus an optional path prefix.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub original: String,
}

impl BaseUrl {
    pub fn parse(text: &str) -> Result<BaseUrl, BaseUrlError> {
        let uri: Uri = text
            .parse()
            .map_err(|_| BaseUrlError::NotHttp(text.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(BaseUrlError::NotHttp(text.to_string()));
        }
        let host = uri
            .host()
            .ok_or_else(|| BaseUrlError::NoHost(text.to_string()))?;
        Ok(BaseUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: uri.port_u16().unwrap_or(80),
            prefix: uri.path().trim_end_matches('/').to_string(),
            original: text.trim_end_matches('/').to_string(),
        })
    }

    fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a request got no response; the value of k6's `error` tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    Timeout,
    ConnectionRefused,
    ConnectionReset,
    Dns,
    Other,
}

impl FailureKind {
    pub fn as_tag(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::ConnectionRefused => "connection refused",
            FailureKind::ConnectionReset => "connection reset",
            FailureKind::Dns => "dns lookup failed",
            FailureKind::Other => "request failed",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub connecting: Duration,
    pub sending: Duration,
    pub waiting: Duration,
    pub receiving: Duration,
    pub duration: Duration,
}

#[derive(Debug)]
pub struct Response {
    /// 0 when the request failed without a response (as k6).
    pub status: u16,
    pub body: Bytes,
    pub headers: http::HeaderMap,
    pub failure: Option<FailureKind>,
    pub timings: Timings,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Response {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

pub struct Client {
    base: BaseUrl,
    sender: Option<SendRequest<Full<Bytes>>>,
    cookies: BTreeMap<String, String>,
    debug: bool,
}

impl Client {
    pub fn new(base: BaseUrl, debug: bool) -> Client {
        Client {
            base,
            sender: None,
            cookies: BTreeMap::new(),
            debug,
        }
    }

    /// Sends a request with a JSON body, serialized (or none). An explicit
    /// `Cookie` header replaces the jar's cookies for this request.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        json_body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Response {
        let started = Instant::now();
        let is_json = json_body.is_some();
        let body = json_body.map(Bytes::from).unwrap_or_default();
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base.prefix))
            .header(http::header::HOST, self.base.host_header())
            .header(http::header::USER_AGENT, "loadgen/0.1");
        if is_json {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let explicit_cookie = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("cookie"));
        if !explicit_cookie && !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            builder = builder.header(http::header::COOKIE, jar.join("; "));
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let bytes_sent = (body.len() + 200) as u64;
        let request = match builder.body(Full::new(body)) {
            Ok(request) => request,
            Err(_) => return failed(FailureKind::Other, started, Timings::default(), 0),
        };
        if self.debug {
            eprintln!("> {method} {}{path}", self.base.original);
        }
        let mut timings = Timings::default();
        let outcome = tokio::time::timeout(timeout, self.exchange(request, &mut timings)).await;
        let response = match outcome {
            Ok(Ok((status, headers, body))) => {
                timings.duration = started.elapsed();
                self.remember_cookies(&headers);
                let bytes_received = (body.len() + 150) as u64;
                Response {
                    status: status.as_u16(),
                    body,
                    headers,
                    failure: None,
                    timings,
                    bytes_sent,
                    bytes_received,
                }
            }
            Ok(Err(kind)) => {
                self.sender = None;
                failed(kind, started, timings, bytes_sent)
            }
            Err(_) => {
                self.sender = None;
                failed(FailureKind::Timeout, started, timings, bytes_sent)
            }
        };
        if self.debug {
            eprintln!(
                "< {} {} ({} ms){}",
                response.status,
                String::from_utf8_lossy(&response.body),
                response.timings.duration.as_millis(),
                response
                    .failure
                    .map(|f| format!(" error: {}", f.as_tag()))
                    .unwrap_or_default()
            );
        }
        response
    }

    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
        timings: &mut Timings,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), FailureKind> {
        let connect_started = Instant::now();
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(self.connect().await?);
            timings.connecting = connect_started.elapsed();
        }
        let sender = self.sender.as_mut().ok_or(FailureKind::Other)?;
        let ready_started = Instant::now();
        sender.ready().await.map_err(classify_hyper)?;
        timings.sending = ready_started.elapsed();
        let waiting_started = Instant::now();
        let response = sender.send_request(request).await.map_err(classify_hyper)?;
        timings.waiting = waiting_started.elapsed();
        let receiving_started = Instant::now();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(classify_hyper)?.to_bytes();
        timings.receiving = receiving_started.elapsed();
        Ok((parts.status, parts.headers, body))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, FailureKind> {
        let addrs: Vec<SocketAddr> =
            tokio::net::lookup_host((self.base.host.as_str(), self.base.port))
                .await
                .map_err(|_| FailureKind::Dns)?
                .collect();
        let addr = addrs.first().ok_or(FailureKind::Dns)?;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| classify_io(&e))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(classify_hyper)?;
        tokio::spawn(async move {
            // Ends when the server closes or the VU drops its sender.
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn remember_cookies(&mut self, headers: &http::HeaderMap) {
        for value in headers.get_all(http::header::SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            if let Some((name, value)) = cookie_pair(text) {
                if value.is_empty() {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
    }
}

/// `name=value` of a `Set-Cookie` header, attributes ignored.
pub fn cookie_pair(set_cookie: &str) -> Option<(&str, &str)> {
    let first = set_cookie.split(';').next()?.trim();
    let (name, value) = first.split_once('=')?;
    Some((name.trim(), value.trim()))
}

fn failed(kind: FailureKind, started: Instant, mut timings: Timings, bytes_sent: u64) -> Response {
    timings.duration = started.elapsed();
    Response {
        status: 0,
        body: Bytes::new(),
        headers: http::HeaderMap::new(),
        failure: Some(kind),
        timings,
        bytes_sent,
        bytes_received: 0,
    }
}

fn classify_io(error: &std::io::Error) -> FailureKind {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => FailureKind::ConnectionRefused,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            FailureKind::ConnectionReset
        }
        ErrorKind::TimedOut => FailureKind::Timeout,
        _ => FailureKind::Other,
    }
}

fn classify_hyper(error: hyper::Error) -> FailureKind {
    if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        return FailureKind::ConnectionReset;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&error);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return classify_io(io);
        }
        source = inner.source();
    }
    FailureKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let b = BaseUrl::parse("http://localhost:5001").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.prefix.as_str()),
            ("localhost", 5001, "")
        );
        let b = BaseUrl::parse("http://[::1]:8080/api/").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.prefix.as_str()),
            ("::1", 8080, "/api")
        );
        assert!(BaseUrl::parse("https://x").is_err());
        assert!(BaseUrl::parse("localhost:5001").is_err());
    }

    #[test]
    fn set_cookie_pairs() {
        assert_eq!(
            cookie_pair("token=abc.def; Max-Age=604800; Path=/; HttpOnly"),
            Some(("token", "abc.def"))
        );
        assert_eq!(cookie_pair("token=; Path=/"), Some(("token", "")));
        assert_eq!(cookie_pair("garbage"), None);
    }
}
