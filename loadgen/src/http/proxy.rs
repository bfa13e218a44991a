//! `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (and their lowercase forms),
//! read as k6 reads them: k6 uses Go's `http.ProxyFromEnvironment`, so the
//! rules here are those of Go's `httpproxy` package.
//!
//! - `https://` targets use `HTTPS_PROXY` (a `CONNECT` tunnel), `http://`
//!   targets `HTTP_PROXY` (requests in absolute form). The uppercase name
//!   wins when both are set and non-empty; a value without a scheme is
//!   read as `http://VALUE`.
//! - `localhost` and loopback addresses never go through a proxy.
//! - `NO_PROXY` is a comma-separated list: `*` (no proxy at all), an IP
//!   (`10.0.0.1`, `[::1]:8080`), a CIDR range (`10.0.0.0/8`), or a domain
//!   (`example.com` matches it and its subdomains, `.example.com` and
//!   `*.example.com` only the subdomains), each optionally with `:port`.
//!
//! Only `http://` proxies are supported (Go also takes `https://` and
//! `socks5://` ones): any other scheme is an error rather than a silently
//! direct connection.

use std::net::IpAddr;

use base64::Engine;

/// The proxy settings of an environment.
#[derive(Clone, Debug, Default)]
pub struct ProxyEnv {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: String,
}

/// A proxy a connection goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` value (`Basic …`) from the URL's `user:password@`.
    pub authorization: Option<String>,
}

impl ProxyEnv {
    /// This process's environment.
    pub fn from_process() -> ProxyEnv {
        let any = |names: [&str; 2]| {
            names
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        };
        ProxyEnv {
            http_proxy: any(["HTTP_PROXY", "http_proxy"]),
            https_proxy: any(["HTTPS_PROXY", "https_proxy"]),
            no_proxy: any(["NO_PROXY", "no_proxy"]).unwrap_or_default(),
        }
    }

    /// The proxy for a request to `host:port` (`https` or not); `None` to
    /// connect directly. The error is one line naming the variable.
    pub fn proxy_for(&self, https: bool, host: &str, port: u16) -> Result<Option<Proxy>, String> {
        let (name, value) = if https {
            ("HTTPS_PROXY", &self.https_proxy)
        } else {
            ("HTTP_PROXY", &self.http_proxy)
        };
        let Some(value) = value else {
            return Ok(None);
        };
        if !uses_proxy(&self.no_proxy, host, port) {
            return Ok(None);
        }
        parse_proxy(value)
            .map(Some)
            .map_err(|why| format!("{name}={value:?}: {why}"))
    }
}

fn parse_proxy(value: &str) -> Result<Proxy, String> {
    let with_scheme;
    let text = if value.contains("://") {
        value
    } else {
        with_scheme = format!("http://{value}");
        &with_scheme
    };
    let uri: http::Uri = text
        .parse()
        .map_err(|_| "not a proxy URL like http://proxy:3128".to_string())?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// proxies are supported".to_string());
    }
    let authority = uri.authority().ok_or("the proxy URL has no host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("the proxy URL has no host".to_string());
    }
    let authorization = authority
        .as_str()
        .rsplit_once('@')
        .map(|(userinfo, _)| {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let credentials = format!("{}:{}", percent_decode(user)?, percent_decode(password)?);
            Ok::<_, String>(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ))
        })
        .transpose()?;
    Ok(Proxy {
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(80),
        authorization,
    })
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bad = || "the proxy URL's user or password is badly escaped".to_string();
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Go's `useProxy`: false for loopback targets and those `no_proxy` lists.
fn uses_proxy(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    if host == "localhost" || ip.is_some_and(|ip| is_loopback(&ip)) {
        return false;
    }
    !no_proxy
        .split(',')
        .map(|entry| entry.trim().to_ascii_lowercase())
        .filter(|entry| !entry.is_empty())
        .any(|entry| exempts(&entry, &host, ip, port))
}

/// Whether one `NO_PROXY` entry covers the target.
fn exempts(entry: &str, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    if let Some((network, bits)) = entry.split_once('/') {
        return match (network.parse::<IpAddr>(), bits.parse::<u8>(), ip) {
            (Ok(network), Ok(bits), Some(ip)) => in_cidr(ip, network, bits),
            _ => false,
        };
    }
    let (entry_host, entry_port) = split_host_port(entry);
    if entry_host.is_empty() {
        return false;
    }
    let port_matches = entry_port.is_none_or(|p| p == port.to_string());
    if let Ok(entry_ip) = entry_host.parse::<IpAddr>() {
        return ip == Some(entry_ip) && port_matches;
    }
    // `*.example.com` is `.example.com`; `example.com` also matches itself.
    let entry_host = entry_host.strip_prefix('*').unwrap_or(entry_host);
    let (suffix, matches_itself) = match entry_host.strip_prefix('.') {
        Some(_) => (entry_host.to_string(), false),
        None => (format!(".{entry_host}"), true),
    };
    (host.ends_with(&suffix) || (matches_itself && host == &suffix[1..])) && port_matches
}

/// `host:port`, `[v6]:port` or a bare host (a bare IPv6 address included).
fn split_host_port(entry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (entry, None),
        };
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (entry, None),
    }
}

fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn in_cidr(ip: IpAddr, network: IpAddr, bits: u8) -> bool {
    let prefix = |a: u128, b: u128, width: u8| {
        bits <= width && (bits == 0 || (a ^ b) >> (width - bits) == 0)
    };
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            prefix(u32::from(ip).into(), u32::from(net).into(), 32)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => prefix(ip.into(), net.into(), 128),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(http: Option<&str>, https: Option<&str>, no_proxy: &str) -> ProxyEnv {
        ProxyEnv {
            http_proxy: http.map(str::to_string),
            https_proxy: https.map(str::to_string),
            no_proxy: no_proxy.to_string(),
        }
    }

    fn proxied(no_proxy: &str, host: &str, port: u16) -> bool {
        env(None, Some("proxy:3128"), no_proxy)
            .proxy_for(true, host, port)
            .unwrap()
            .is_some()
    }

    #[test]
    fn the_scheme_picks_the_variable() {
        let e = env(Some("http://hp:1"), Some("sp:2"), "");
        let p = e.proxy_for(false, "api.example.com", 80).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("hp", 1));
        let p = e.proxy_for(true, "api.example.com", 443).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("sp", 2));
        // No fallback from HTTPS_PROXY to HTTP_PROXY, as Go.
        let e = env(Some("hp:1"), None, "");
        assert_eq!(e.proxy_for(true, "api.example.com", 443).unwrap(), None);
        let p = env(Some("proxy"), None, "")
            .proxy_for(false, "a.example", 80)
            .unwrap()
            .unwrap();
        assert_eq!(p.port, 80);
    }

    #[test]
    fn loopback_never_goes_through_a_proxy() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!proxied("", host, 443), "{host}");
        }
        assert!(proxied("", "10.0.0.1", 443));
        assert!(proxied("", "api.example.com", 443));
    }

    #[test]
    fn no_proxy_follows_go() {
        // A domain matches itself and its subdomains, not a longer name.
        assert!(!proxied("example.com", "example.com", 443));
        assert!(!proxied("example.com", "api.example.com", 443));
        assert!(proxied("example.com", "badexample.com", 443));
        // A leading dot or `*.`: subdomains only.
        assert!(proxied(".example.com", "example.com", 443));
        assert!(!proxied(".example.com", "api.example.com", 443));
        assert!(proxied("*.example.com", "example.com", 443));
        assert!(!proxied("*.example.com", "a.b.example.com", 443));
        // Ports, case, spaces, empty entries.
        assert!(!proxied("example.com:443", "api.example.com", 443));
        assert!(proxied("example.com:8443", "api.example.com", 443));
        assert!(!proxied(" , Example.COM ,", "API.example.com", 443));
        // IPs, with a port, and CIDR ranges.
        assert!(!proxied("10.0.0.1", "10.0.0.1", 443));
        assert!(proxied("10.0.0.1:80", "10.0.0.1", 443));
        assert!(!proxied("[2001:db8::1]:443", "2001:db8::1", 443));
        assert!(!proxied("2001:db8::1", "2001:db8::1", 443));
        assert!(!proxied("10.0.0.0/8", "10.200.3.4", 443));
        assert!(proxied("10.0.0.0/8", "11.0.0.1", 443));
        assert!(!proxied("2001:db8::/32", "2001:db8:1::5", 443));
        assert!(proxied("10.0.0.0/8", "ten.example", 443));
        // `*` turns proxies off.
        assert!(!proxied("*", "api.example.com", 443));
        assert!(proxied("other.org", "api.example.com", 443));
    }

    #[test]
    fn proxy_urls() {
        let p = parse_proxy("http://user:p%40ss@proxy.corp:8080").unwrap();
        assert_eq!(
            p,
            Proxy {
                host: "proxy.corp".into(),
                port: 8080,
                authorization: Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("user:p@ss")
                )),
            }
        );
        assert_eq!(parse_proxy("[::1]:3128").unwrap().host, "::1");
        let error = env(None, Some("socks5://proxy:1080"), "")
            .proxy_for(true, "api.example.com", 443)
            .unwrap_err();
        assert!(
            error.starts_with("HTTPS_PROXY=") && error.contains("only http://"),
            "{error}"
        );
        assert!(parse_proxy("https://proxy:443").is_err());
    }
}
