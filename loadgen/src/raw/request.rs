//! The one request of a raw run, serialised once: every connection writes
//! the same bytes for every request.

use http::Uri;

use super::args::RequestSpec;
use crate::http::proxy::ProxyEnv;
use crate::http::tls::TlsOptions;
use crate::http::{wire, BaseUrl};
use crate::plan::PlanError;

/// Where the request goes and its bytes on the wire.
pub struct PreparedRequest {
    /// Host, port and route (TLS, proxy) of the URL.
    pub base: BaseUrl,
    pub bytes: Vec<u8>,
    /// An answer to `HEAD` has no body whatever its framing says.
    pub head: bool,
    /// The `url` tag of the samples.
    pub url: String,
    /// Without `--disable-keepalive`: the connection carries the next request.
    pub keep_alive: bool,
}

impl PreparedRequest {
    pub fn new(spec: &RequestSpec, tls: &TlsOptions) -> Result<PreparedRequest, PlanError> {
        let invalid = |why: String| PlanError::new("url", why);
        let base = BaseUrl::parse(&spec.url)
            .map_err(|e| invalid(e.to_string()))?
            .with_route(tls, &ProxyEnv::from_process())
            .map_err(|e| invalid(e.to_string()))?;
        let uri: Uri = spec
            .url
            .parse()
            .map_err(|_| invalid(format!("{:?} is not a URL", spec.url)))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        // The absolute form's origin when a proxy carries plain HTTP.
        let origin = base
            .target_prefix
            .strip_suffix(base.prefix.as_str())
            .unwrap_or("");
        let target = format!("{origin}{path}");
        let length = spec.body.as_ref().map(|body| body.len().to_string());
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(content_type) = &spec.content_type {
            headers.push(("Content-Type", content_type));
        }
        if let Some(length) = &length {
            headers.push(("Content-Length", length));
        }
        if !spec.keep_alive {
            headers.push(("Connection", "close"));
        }
        headers.extend(spec.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let mut bytes = Vec::new();
        wire::encode_request(
            &mut bytes,
            &spec.method,
            &target,
            &base.host_header,
            &headers,
            None,
        )
        .map_err(|e| match e {
            wire::WireError::BadHeader if !is_method(&spec.method) => PlanError::new(
                "method",
                format!("{:?} is not an HTTP method token", spec.method),
            ),
            e => PlanError::new("header", e.to_string()),
        })?;
        if let Some(body) = &spec.body {
            bytes.extend_from_slice(body);
        }
        Ok(PreparedRequest {
            head: spec.method.eq_ignore_ascii_case("HEAD"),
            url: spec.url.clone(),
            keep_alive: spec.keep_alive,
            base,
            bytes,
        })
    }
}

fn is_method(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> RequestSpec {
        RequestSpec {
            url: url.into(),
            method: "POST".into(),
            headers: vec![("X-Trace".into(), "abc".into())],
            body: Some(b"{\"a\":1}".to_vec()),
            content_type: Some("application/json".into()),
            keep_alive: false,
        }
    }

    #[test]
    fn serialises_once_with_body_framing_and_headers() {
        let request = PreparedRequest::new(
            &spec("http://127.0.0.1:8080/x/y?z=1"),
            &TlsOptions::default(),
        )
        .unwrap();
        let text = String::from_utf8(request.bytes).unwrap();
        assert!(
            text.starts_with("POST /x/y?z=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
            "{text}"
        );
        for line in [
            "Content-Type: application/json\r\n",
            "Content-Length: 7\r\n",
            "Connection: close\r\n",
            "X-Trace: abc\r\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        assert!(text.ends_with("\r\n\r\n{\"a\":1}"), "{text}");
    }

    #[test]
    fn refuses_bad_methods_and_headers() {
        let mut bad = spec("http://127.0.0.1/");
        bad.method = "GE T".into();
        let e = PreparedRequest::new(&bad, &TlsOptions::default())
            .err()
            .unwrap();
        assert_eq!(e.option, "method");
        let mut bad = spec("http://127.0.0.1/");
        bad.headers = vec![("X Bad".into(), "v".into())];
        let e = PreparedRequest::new(&bad, &TlsOptions::default())
            .err()
            .unwrap();
        assert_eq!(e.option, "header");
    }
}
