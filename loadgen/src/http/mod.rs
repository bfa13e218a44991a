//! A VU's HTTP/1.1 client: one kept-alive connection and a cookie jar per
//! VU (as k6), the timing parts k6 reports, and failures classified into the
//! `error` tag instead of ending the run.
//!
//! `http://` and `https://` ([`tls`]), directly or through the proxy the
//! environment names ([`proxy`]); [`stream`] opens the socket. The client
//! drives its socket itself ([`wire`] has the format): between requests a
//! VU holds the socket (and, over TLS, its session) and its cookies,
//! nothing else, and each request is one `write` and, for a small answer,
//! one `read`. A request that finds its kept-alive connection
//! closed by the server before any answer byte is sent once more on a new
//! connection, as browsers and Go's client do.

pub mod proxy;
pub mod stream;
pub mod tls;
pub mod wire;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Method, Uri};
use tokio::io::AsyncReadExt;

use proxy::ProxyEnv;
use stream::{Route, Stream};
use tls::{TlsFailure, TlsOptions};

#[derive(Debug, thiserror::Error)]
pub enum BaseUrlError {
    #[error("{0:?} is not an http:// or https:// URL")]
    NotHttp(String),
    #[error("{0:?} has no host")]
    NoHost(String),
}

/// Why the TLS configuration or the proxy of a base URL cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("TLS: {0}")]
    Tls(String),
    #[error("invalid proxy setting {0}")]
    Proxy(String),
}

/// Where requests go: host and port plus an optional path prefix, and how
/// connections get there.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    pub https: bool,
    pub prefix: String,
    pub original: String,
    /// The `Host` header, IPv6 hosts in brackets: `host:port`, or `host`
    /// when the URL gives no port (as Go's client, so k6, sends it).
    pub host_header: String,
    /// What precedes a path in the request line: the prefix, or, for plain
    /// HTTP through a proxy, the absolute form `http://host:port/prefix`.
    pub target_prefix: String,
    /// TLS and proxy; set by [`BaseUrl::with_route`] (direct, no TLS after
    /// [`BaseUrl::parse`]).
    pub route: Route,
}

impl BaseUrl {
    /// Parses the URL alone (direct connections, and no TLS configuration:
    /// an `https://` base needs [`BaseUrl::with_route`] to connect).
    pub fn parse(text: &str) -> Result<BaseUrl, BaseUrlError> {
        let uri: Uri = text
            .parse()
            .map_err(|_| BaseUrlError::NotHttp(text.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(BaseUrlError::NotHttp(text.to_string())),
        };
        let host = uri
            .host()
            .ok_or_else(|| BaseUrlError::NoHost(text.to_string()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let prefix = uri.path().trim_end_matches('/').to_string();
        let bracketed = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Ok(BaseUrl {
            host: host.to_string(),
            port,
            https,
            target_prefix: prefix.clone(),
            prefix,
            original: text.trim_end_matches('/').to_string(),
            host_header: match uri.port_u16() {
                Some(port) => format!("{bracketed}:{port}"),
                None => bracketed,
            },
            route: Route::default(),
        })
    }

    /// The TLS configuration (for `https://`) and the proxy of `proxies`.
    pub fn with_route(
        mut self,
        tls: &TlsOptions,
        proxies: &ProxyEnv,
    ) -> Result<BaseUrl, RouteError> {
        if self.https {
            let config = tls.client_config().map_err(RouteError::Tls)?;
            let name = tls::server_name(&self.host).map_err(RouteError::Tls)?;
            self.route.tls = Some((config, name));
        }
        self.route.proxy = proxies
            .proxy_for(self.https, &self.host, self.port)
            .map_err(RouteError::Proxy)?;
        if self.route.proxy.is_some() && !self.https {
            self.target_prefix = format!("http://{}{}", self.host_header, self.prefix);
        }
        Ok(self)
    }

    /// `Proxy-Authorization` for requests sent to a proxy in absolute form.
    fn proxy_authorization(&self) -> Option<&str> {
        match &self.route.proxy {
            Some(proxy) if !self.https => proxy.authorization.as_deref(),
            _ => None,
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
    Tls(TlsFailure),
    /// The proxy did not open the `CONNECT` tunnel.
    Proxy,
    Other,
}

impl FailureKind {
    pub fn as_tag(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::ConnectionRefused => "connection refused",
            FailureKind::ConnectionReset => "connection reset",
            FailureKind::Dns => "dns lookup failed",
            FailureKind::Tls(failure) => failure.as_tag(),
            FailureKind::Proxy => "proxy refused the tunnel",
            FailureKind::Other => "request failed",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub connecting: Duration,
    /// The TLS handshake; `None` for `http://` (recorded as 0, as k6 does).
    pub tls_handshaking: Option<Duration>,
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
    /// The response head as received, for [`Response::header_values`].
    head: Bytes,
    pub failure: Option<FailureKind>,
    pub timings: Timings,
    /// Bytes written and read on the wire for this request, head included.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Response {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The values of the header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        wire::header_values(&self.head, name)
    }
}

/// A response read off the connection, before cookies and timings.
struct Exchange {
    status: u16,
    head: Bytes,
    body: Bytes,
    keep_alive: bool,
    sets_cookies: bool,
}

/// Where an exchange went wrong, and whether the request may be resent on
/// a fresh connection (nothing of a response arrived on a reused one: the
/// server closed it while it was idle).
struct ExchangeError {
    kind: FailureKind,
    retry: bool,
}

/// A kept-alive connection and how many requests it has carried.
struct Connection {
    stream: Stream,
    served: u32,
}

pub struct Client {
    base: Arc<BaseUrl>,
    connection: Option<Connection>,
    /// Name and value, sorted by name: a VU's jar holds one or two
    /// cookies, and a map's node would cost ~0.5 KB per idle VU.
    cookies: Vec<(String, String)>,
    /// The source address of its connections (`--local-addr`).
    local_addr: Option<IpAddr>,
    debug: bool,
}

impl Client {
    pub fn new(base: Arc<BaseUrl>, debug: bool) -> Client {
        Client {
            base,
            connection: None,
            cookies: Vec::new(),
            local_addr: None,
            debug,
        }
    }

    /// A client of its own to the same target from the same source
    /// address: a new connection, no cookies, no debug output.
    pub fn fresh(&self) -> Client {
        Client::new(self.base.clone(), false).with_local_addr(self.local_addr)
    }

    /// Connects from `local` (a local address) instead of the address the
    /// system picks.
    pub fn with_local_addr(mut self, local: Option<IpAddr>) -> Client {
        self.local_addr = local;
        self
    }

    /// Sends a request with a JSON body, serialized (or none). An explicit
    /// `Cookie` header replaces the jar's cookies for this request.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        json_body: Option<&[u8]>,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Response {
        let started = Instant::now();
        let mut request = Vec::with_capacity(256 + json_body.map_or(0, <[u8]>::len));
        if self
            .encode(&mut request, &method, path, json_body, headers)
            .is_err()
        {
            return failed(FailureKind::Other, started, Timings::default(), 0, 0);
        }
        if self.debug {
            eprintln!("> {method} {}{path}", self.base.original);
        }
        let fresh_timings = Timings {
            tls_handshaking: self.base.https.then_some(Duration::ZERO),
            ..Timings::default()
        };
        let mut timings = fresh_timings;
        let mut received = 0u64;
        let no_body = method == Method::HEAD;
        let outcome = tokio::time::timeout(timeout, async {
            let first = self
                .exchange(&request, no_body, &mut timings, &mut received)
                .await;
            match first {
                Err(ExchangeError { retry: true, .. }) => {
                    self.connection = None;
                    received = 0;
                    timings = fresh_timings;
                    self.exchange(&request, no_body, &mut timings, &mut received)
                        .await
                }
                other => other,
            }
        })
        .await;
        let sent = request.len() as u64;
        let response = match outcome {
            Ok(Ok(exchange)) => {
                timings.duration = started.elapsed();
                if !exchange.keep_alive {
                    self.connection = None;
                }
                if exchange.sets_cookies {
                    self.remember_cookies(&exchange.head);
                }
                Response {
                    status: exchange.status,
                    body: exchange.body,
                    head: exchange.head,
                    failure: None,
                    timings,
                    bytes_sent: sent,
                    bytes_received: received,
                }
            }
            Ok(Err(error)) => {
                self.connection = None;
                failed(error.kind, started, timings, sent, received)
            }
            Err(_) => {
                self.connection = None;
                failed(FailureKind::Timeout, started, timings, sent, received)
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

    fn encode(
        &self,
        out: &mut Vec<u8>,
        method: &Method,
        path: &str,
        json_body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<(), wire::WireError> {
        let explicit_cookie = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("cookie"));
        let jar;
        // The client's own headers, before the caller's.
        let mut own = [("", ""); 2];
        let mut len = 0;
        if let Some(authorization) = self.base.proxy_authorization() {
            own[len] = ("Proxy-Authorization", authorization);
            len += 1;
        }
        if !explicit_cookie && !self.cookies.is_empty() {
            jar = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            own[len] = ("Cookie", &jar);
            len += 1;
        }
        wire::encode_request_parts(
            out,
            method.as_str(),
            [&self.base.target_prefix, path],
            &self.base.host_header,
            [&own[..len], headers],
            json_body,
        )
    }

    /// Writes the request and reads one response. Timings: `connecting` the
    /// TCP connect (and proxy tunnel), `tls_handshaking` the TLS handshake
    /// of a new connection, `sending` the write, `waiting` until the first byte of
    /// the answer, `receiving` from there to its last byte.
    async fn exchange(
        &mut self,
        request: &[u8],
        no_body: bool,
        timings: &mut Timings,
        received: &mut u64,
    ) -> Result<Exchange, ExchangeError> {
        let fail = |kind| ExchangeError { kind, retry: false };
        if self.connection.is_none() {
            if self.base.https && self.base.route.tls.is_none() {
                // A base from `parse` alone: no TLS configuration to connect with.
                return Err(fail(FailureKind::Tls(TlsFailure::Handshake)));
            }
            let connected = Stream::connect(
                &self.base.route,
                &self.base.host,
                self.base.port,
                self.local_addr,
            )
            .await
            .map_err(fail)?;
            timings.connecting = connected.connecting;
            if self.base.https {
                timings.tls_handshaking = Some(connected.tls_handshaking);
            }
            self.connection = Some(Connection {
                stream: connected.stream,
                served: 0,
            });
        }
        let connection = self.connection.as_mut().ok_or(fail(FailureKind::Other))?;
        let reused = connection.served > 0;
        let stale = |kind| ExchangeError {
            kind,
            retry: reused,
        };
        let send_started = Instant::now();
        connection
            .stream
            .send(request)
            .await
            .map_err(|e| stale(classify_io(&e)))?;
        timings.sending = send_started.elapsed();
        let waiting_started = Instant::now();
        // Sized for a whole small answer, so one read returns it and, being
        // short, tells tokio the socket is drained (no extra EAGAIN read).
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut first_byte: Option<Instant> = None;
        let head = loop {
            if let Some(head) =
                wire::parse_head(&buf, no_body).map_err(|e| fail(FailureKind::from(e)))?
            {
                if (100..200).contains(&head.status) {
                    // An interim answer (103 Early Hints): the real one follows.
                    let _ = buf.split_to(head.len);
                    continue;
                }
                break head;
            }
            read_required(&mut connection.stream, &mut buf, received)
                .await
                .map_err(|kind| match first_byte {
                    None => stale(kind),
                    Some(_) => fail(kind),
                })?;
            first_byte.get_or_insert_with(Instant::now);
        };
        let first_byte = first_byte.unwrap_or(waiting_started);
        timings.waiting = first_byte - waiting_started;
        let head_bytes = buf.split_to(head.len).freeze();
        let mut keep_alive = head.keep_alive;
        let body = match head.framing {
            wire::Framing::Length(n) => {
                while buf.len() < n {
                    buf.reserve(n - buf.len());
                    read_required(&mut connection.stream, &mut buf, received)
                        .await
                        .map_err(fail)?;
                }
                let body = buf.split_to(n).freeze();
                // Bytes past the answer mean the server is out of step.
                keep_alive &= buf.is_empty();
                body
            }
            wire::Framing::Chunked => {
                let mut decoder = wire::ChunkedDecoder::default();
                let mut body = Vec::new();
                loop {
                    if let Some(end) = decoder
                        .decode(&buf, &mut body)
                        .map_err(|e| fail(e.into()))?
                    {
                        keep_alive &= end == buf.len();
                        break Bytes::from(body);
                    }
                    read_required(&mut connection.stream, &mut buf, received)
                        .await
                        .map_err(fail)?;
                }
            }
            wire::Framing::UntilClose => {
                loop {
                    let got = read_more(&mut connection.stream, &mut buf)
                        .await
                        .map_err(fail)?;
                    if got == 0 {
                        break;
                    }
                    *received += got as u64;
                }
                keep_alive = false;
                buf.split().freeze()
            }
        };
        timings.receiving = first_byte.elapsed();
        connection.served += 1;
        Ok(Exchange {
            status: head.status,
            head: head_bytes,
            body,
            keep_alive,
            sets_cookies: head.sets_cookies,
        })
    }

    fn remember_cookies(&mut self, head: &[u8]) {
        for text in wire::header_values(head, "set-cookie") {
            if let Some((name, value)) = cookie_pair(text) {
                let slot = self
                    .cookies
                    .binary_search_by(|(known, _)| known.as_str().cmp(name));
                match (slot, value.is_empty()) {
                    (Ok(at), true) => {
                        self.cookies.remove(at);
                    }
                    (Ok(at), false) => value.clone_into(&mut self.cookies[at].1),
                    (Err(at), false) => self
                        .cookies
                        .insert(at, (name.to_string(), value.to_string())),
                    (Err(_), true) => {}
                }
            }
        }
        self.cookies.shrink_to_fit();
    }
}

/// Room for a typical answer in one read.
const READ_CHUNK: usize = 4096;

/// A read where the answer is not complete yet: the end of the stream is
/// a reset. Counts the bytes in `received`.
async fn read_required(
    stream: &mut Stream,
    buf: &mut BytesMut,
    received: &mut u64,
) -> Result<(), FailureKind> {
    match read_more(stream, buf).await? {
        0 => Err(FailureKind::ConnectionReset),
        n => {
            *received += n as u64;
            Ok(())
        }
    }
}

/// One read into the spare room of `buf` (grown when full); 0 at EOF.
async fn read_more(stream: &mut Stream, buf: &mut BytesMut) -> Result<usize, FailureKind> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    stream.read_buf(buf).await.map_err(|e| classify_io(&e))
}

impl From<wire::WireError> for FailureKind {
    fn from(_: wire::WireError) -> FailureKind {
        FailureKind::Other
    }
}

/// `name=value` of a `Set-Cookie` header, attributes ignored.
pub fn cookie_pair(set_cookie: &str) -> Option<(&str, &str)> {
    let first = set_cookie.split(';').next()?.trim();
    let (name, value) = first.split_once('=')?;
    Some((name.trim(), value.trim()))
}

fn failed(
    kind: FailureKind,
    started: Instant,
    mut timings: Timings,
    bytes_sent: u64,
    bytes_received: u64,
) -> Response {
    timings.duration = started.elapsed();
    Response {
        status: 0,
        body: Bytes::new(),
        head: Bytes::new(),
        failure: Some(kind),
        timings,
        bytes_sent,
        bytes_received,
    }
}

pub(crate) fn classify_io(error: &std::io::Error) -> FailureKind {
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
        let b = BaseUrl::parse("https://api.example.com/v1").unwrap();
        assert_eq!(
            (b.https, b.port, b.host_header.as_str()),
            (true, 443, "api.example.com")
        );
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("localhost:5001").is_err());
    }

    #[test]
    fn plain_http_through_a_proxy_uses_the_absolute_form() {
        let proxies = ProxyEnv {
            http_proxy: Some("http://u:p@proxy.corp:3128".into()),
            ..ProxyEnv::default()
        };
        let b = BaseUrl::parse("http://api.example.com/v1/")
            .unwrap()
            .with_route(&TlsOptions::default(), &proxies)
            .unwrap();
        assert_eq!(b.target_prefix, "http://api.example.com/v1");
        assert!(b
            .proxy_authorization()
            .is_some_and(|a| a.starts_with("Basic ")));
        let direct = BaseUrl::parse("http://127.0.0.1:5001/v1")
            .unwrap()
            .with_route(&TlsOptions::default(), &proxies)
            .unwrap();
        assert_eq!(direct.target_prefix, "/v1");
        assert_eq!(direct.proxy_authorization(), None);
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
