//! The socket a VU holds: plain TCP or TLS over TCP, reached directly or
//! through an HTTP proxy ([`super::proxy`]): a `CONNECT` tunnel for
//! `https://`, the proxy itself for `http://` (the client then writes
//! requests in absolute form).
//!
//! [`Stream`] is an enum, not a boxed trait object: a plain socket is read
//! and written with one `match` and no indirection; the TLS state is boxed
//! so an idle plain VU keeps its small footprint.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::proxy::Proxy;
use super::tls::TlsFailure;
use super::{classify_io, wire, FailureKind};

/// How connections to the base URL are made.
#[derive(Clone, Debug, Default)]
pub struct Route {
    /// For `https://`: the client configuration and the name to verify.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    pub proxy: Option<Proxy>,
}

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A new connection and how long its parts took: `connecting` the TCP
/// connect (to the proxy, plus its `CONNECT` answer, when there is one),
/// `tls_handshaking` the TLS handshake.
pub struct Connected {
    pub stream: Stream,
    pub connecting: Duration,
    pub tls_handshaking: Duration,
}

impl Stream {
    /// Opens a connection to `host:port` along `route`, from the source
    /// address `local` when given (`--local-addr`).
    pub async fn connect(
        route: &Route,
        host: &str,
        port: u16,
        local: Option<IpAddr>,
    ) -> Result<Connected, FailureKind> {
        let started = Instant::now();
        let mut tcp = match &route.proxy {
            None => tcp_connect(host, port, local).await?,
            Some(proxy) => tcp_connect(&proxy.host, proxy.port, local).await?,
        };
        if let (Some(proxy), Some(_)) = (&route.proxy, &route.tls) {
            open_tunnel(&mut tcp, proxy, host, port).await?;
        }
        let connecting = started.elapsed();
        let Some((config, name)) = &route.tls else {
            return Ok(Connected {
                stream: Stream::Plain(tcp),
                connecting,
                tls_handshaking: Duration::ZERO,
            });
        };
        let handshake_started = Instant::now();
        let tls = TlsConnector::from(config.clone())
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| match TlsFailure::of(&e) {
                Some(failure) => FailureKind::Tls(failure),
                None => classify_io(&e),
            })?;
        Ok(Connected {
            stream: Stream::Tls(Box::new(tls)),
            connecting,
            tls_handshaking: handshake_started.elapsed(),
        })
    }

    /// Writes a whole request and pushes it onto the wire.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.write_all(request).await,
            Stream::Tls(tls) => {
                tls.write_all(request).await?;
                tls.flush().await
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Tries each address the host resolves to (`localhost` may give `::1`
/// first while the server listens on 127.0.0.1 only); with a source
/// address, only those of its family.
async fn tcp_connect(
    host: &str,
    port: u16,
    local: Option<IpAddr>,
) -> Result<TcpStream, FailureKind> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| FailureKind::Dns)?;
    let mut last = FailureKind::Dns;
    for addr in addrs {
        let connected = match local {
            None => TcpStream::connect(addr).await,
            Some(local) if local.is_ipv4() != addr.is_ipv4() => continue,
            Some(local) => connect_from(local, addr).await,
        };
        match connected {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = classify_io(&e),
        }
    }
    Err(last)
}

/// Binds the source address, then connects. The port is left to the
/// connect (`IP_BIND_ADDRESS_NO_PORT` on Linux), so each source address
/// has its own ~28k ephemeral ports per destination instead of sharing
/// one pool over all destinations.
async fn connect_from(local: IpAddr, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = match local {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    bind_address_no_port(&socket);
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(to).await
}

/// `CONNECT host:port` through the proxy; the tunnel is open on a 200 (as
/// Go's client, any other answer is a failure).
async fn open_tunnel(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
) -> Result<(), FailureKind> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(authorization) = &proxy.authorization {
        request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| classify_io(&e))?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(head) = wire::parse_head(&buf, true).map_err(|_| FailureKind::Proxy)? {
            // The server speaks only after the client's TLS hello, so bytes
            // past the answer mean the proxy is out of step.
            return if head.status == 200 && head.len == buf.len() {
                Ok(())
            } else {
                Err(FailureKind::Proxy)
            };
        }
        if tcp.read_buf(&mut buf).await.map_err(|e| classify_io(&e))? == 0 {
            return Err(FailureKind::Proxy);
        }
    }
}

/// Asks Linux to pick the source port at `connect`, not at `bind`; other
/// systems (and old kernels, which refuse the option) pick it at `bind`.
#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: the descriptor is the open socket `socket` owns, and the
    // option's value is a c_int that outlives the call, its size passed.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_: &TcpSocket) {}
