//! HTTP/1.1 on the wire, for the VU's client: encoding a request into one
//! buffer (one `write` per request) and reading a response's head and body
//! framing (`Content-Length`, `chunked`, or until the server closes).
//!
//! The client is ours rather than hyper's so that a VU holds one socket and
//! nothing else between requests: no connection task, no dispatch channel,
//! no buffers kept across think time (BENCHMARKS.md, "loadgen against k6").

/// A response head larger than this is refused rather than buffered.
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed per response; more is an error (as hyper's default, 100).
const MAX_HEADERS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a header name or value contains a line break or is not a token")]
    BadHeader,
    #[error("the response head is not valid HTTP/1.x")]
    BadResponse,
    #[error("the response head is larger than 64 KiB")]
    HeadTooLarge,
    #[error("the chunked body is malformed")]
    BadChunk,
}

/// Appends a request to `out`: request line, `Host`, `User-Agent`, the
/// body's `Content-Type`/`Content-Length`, then `headers` and the body.
pub fn encode_request(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    json_body: Option<&[u8]>,
) -> Result<(), WireError> {
    encode_request_parts(out, method, [target, ""], host, [headers, &[]], json_body)
}

/// [`encode_request`] with the target in two parts (a prefix and a path)
/// and the headers in two lists, written in order, so that a caller
/// builds neither a joined target nor a joined list per request.
pub fn encode_request_parts(
    out: &mut Vec<u8>,
    method: &str,
    target: [&str; 2],
    host: &str,
    headers: [&[(&str, &str)]; 2],
    json_body: Option<&[u8]>,
) -> Result<(), WireError> {
    if !is_token(method)
        || target
            .iter()
            .any(|part| part.bytes().any(|b| b <= b' ' || b == 0x7f))
    {
        return Err(WireError::BadHeader);
    }
    for part in [method, " ", target[0], target[1], " HTTP/1.1\r\nHost: "] {
        out.extend_from_slice(part.as_bytes());
    }
    push_value(out, host)?;
    out.extend_from_slice(b"\r\nUser-Agent: loadgen/0.1\r\n");
    if let Some(body) = json_body {
        out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers.into_iter().flatten() {
        if !is_token(name) {
            return Err(WireError::BadHeader);
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        push_value(out, value)?;
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = json_body {
        out.extend_from_slice(body);
    }
    Ok(())
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value may not smuggle a line break (a token taken from a
/// server's answer ends up in the next request's `Cookie`).
fn push_value(out: &mut Vec<u8>, value: &str) -> Result<(), WireError> {
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(WireError::BadHeader);
    }
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// How the body after a head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// What the client needs of a response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub framing: Framing,
    /// Whether the connection can carry the next request.
    pub keep_alive: bool,
    /// Whether it sets cookies, so the client reads them only then.
    pub sets_cookies: bool,
}

/// Parses a response head at the start of `buf`; `Ok(None)` when more bytes
/// are needed. `no_body` is set for answers to `HEAD`.
pub fn parse_head(buf: &[u8], no_body: bool) -> Result<Option<Head>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(WireError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::HeadTooLarge),
        Err(_) => return Err(WireError::BadResponse),
    };
    let status = response.code.ok_or(WireError::BadResponse)?;
    let http11 = response.version == Some(1);
    let mut keep_alive = http11;
    let mut length = None;
    let mut chunked = false;
    let mut sets_cookies = false;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| WireError::BadResponse)?;
        sets_cookies |= header.name.eq_ignore_ascii_case("set-cookie");
        if header.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.trim().parse().map_err(|_| WireError::BadResponse)?;
            if length.is_some_and(|m| m != n) {
                return Err(WireError::BadResponse);
            }
            length = Some(n);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if header.name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                if option.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if option.eq_ignore_ascii_case("keep-alive") && !http11 {
                    keep_alive = true;
                }
            }
        }
    }
    let bodiless = no_body || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::Length(0)
    } else if chunked {
        // RFC 9112 §6.3: chunked wins over a Content-Length.
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive,
        sets_cookies,
    }))
}

/// The header values named `name` (case-insensitive) of a complete head.
pub fn header_values<'a>(head: &'a [u8], name: &str) -> Vec<&'a str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    if response.parse(head).is_err() {
        return Vec::new();
    }
    response
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .collect()
}

/// Decodes a chunked body as its bytes arrive: call [`Self::decode`] with
/// everything received after the head so far; it resumes where it stopped.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    /// Offset of the next chunk-size line in the input.
    pos: usize,
    /// Set once the last chunk is seen: we are in the trailer section.
    in_trailers: bool,
}

impl ChunkedDecoder {
    /// Appends whole chunks to `body`; `Ok(Some(n))` once the body and its
    /// trailers end after `n` input bytes, `Ok(None)` when more are needed.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Option<usize>, WireError> {
        loop {
            let rest = &input[self.pos..];
            let Some(line_end) = find_crlf(rest) else {
                return if rest.len() > MAX_HEAD {
                    Err(WireError::BadChunk)
                } else {
                    Ok(None)
                };
            };
            if self.in_trailers {
                self.pos += line_end + 2;
                if line_end == 0 {
                    return Ok(Some(self.pos));
                }
                continue;
            }
            let line = std::str::from_utf8(&rest[..line_end]).map_err(|_| WireError::BadChunk)?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| WireError::BadChunk)?;
            if size == 0 {
                self.in_trailers = true;
                self.pos += line_end + 2;
                continue;
            }
            let data_start = line_end + 2;
            let data_end = data_start.checked_add(size).ok_or(WireError::BadChunk)?;
            if rest.len() < data_end + 2 {
                return Ok(None);
            }
            if &rest[data_end..data_end + 2] != b"\r\n" {
                return Err(WireError::BadChunk);
            }
            body.extend_from_slice(&rest[data_start..data_end]);
            self.pos += data_end + 2;
        }
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(headers: &[(&str, &str)], body: Option<&[u8]>) -> Result<String, WireError> {
        let mut out = Vec::new();
        encode_request(&mut out, "POST", "/api/x", "127.0.0.1:5001", headers, body)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn requests_are_one_buffer_with_their_length() {
        assert_eq!(
            encoded(&[("Cookie", "token=a.b")], Some(b"{\"a\":1}")).unwrap(),
            "POST /api/x HTTP/1.1\r\nHost: 127.0.0.1:5001\r\nUser-Agent: loadgen/0.1\r\n\
             Content-Type: application/json\r\nContent-Length: 7\r\nCookie: token=a.b\r\n\r\n{\"a\":1}"
        );
        assert_eq!(
            encoded(&[], None).unwrap(),
            "POST /api/x HTTP/1.1\r\nHost: 127.0.0.1:5001\r\nUser-Agent: loadgen/0.1\r\n\r\n"
        );
    }

    #[test]
    fn line_breaks_cannot_be_smuggled_into_a_request() {
        assert_eq!(
            encoded(&[("Cookie", "token=a\r\nX-Evil: 1")], None),
            Err(WireError::BadHeader)
        );
        assert_eq!(
            encoded(&[("Bad Name", "v")], None),
            Err(WireError::BadHeader)
        );
        let mut out = Vec::new();
        assert_eq!(
            encode_request(&mut out, "GET", "/a b", "h", &[], None),
            Err(WireError::BadHeader)
        );
    }

    #[test]
    fn heads_give_status_framing_and_keep_alive() {
        let head = |text: &str| parse_head(text.as_bytes(), false);
        let h = head("HTTP/1.1 202 Accepted\r\nContent-Length: 12\r\n\r\n{")
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            Head {
                status: 202,
                len: 45,
                framing: Framing::Length(12),
                keep_alive: true,
                sets_cookies: false
            }
        );
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
    }

    #[test]
    fn partial_and_broken_heads() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-", false), Ok(None));
        assert_eq!(
            parse_head(b"garbage\r\n\r\n", false),
            Err(WireError::BadResponse)
        );
        assert_eq!(
            parse_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            Err(WireError::BadResponse)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false),
            Err(WireError::BadResponse)
        );
        let mut huge = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert_eq!(parse_head(&huge, false), Err(WireError::HeadTooLarge));
    }

    #[test]
    fn header_values_are_found_case_insensitively() {
        let head =
            b"HTTP/1.1 200 OK\r\nset-cookie: a=1\r\nX: y\r\nSet-Cookie: token=t; Path=/\r\n\r\n";
        assert_eq!(
            header_values(head, "Set-Cookie"),
            vec!["a=1", "token=t; Path=/"]
        );
        assert!(header_values(head, "cookie").is_empty());
    }

    #[test]
    fn chunked_bodies_decode_across_reads() {
        let input = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut whole = Vec::new();
        let end = ChunkedDecoder::default().decode(input, &mut whole).unwrap();
        assert_eq!(
            (whole.as_slice(), end),
            (&b"Wikipedia"[..], Some(input.len() - 4))
        );
        // Byte by byte, as the slowest network would deliver it.
        let mut decoder = ChunkedDecoder::default();
        let mut body = Vec::new();
        let mut end = None;
        for n in 1..=input.len() {
            end = decoder.decode(&input[..n], &mut body).unwrap();
            if end.is_some() {
                assert_eq!(n, input.len() - 4);
                break;
            }
        }
        assert_eq!(
            (body.as_slice(), end),
            (&b"Wikipedia"[..], Some(input.len() - 4))
        );
        let mut body = Vec::new();
        assert_eq!(
            ChunkedDecoder::default().decode(b"zz\r\n", &mut body),
            Err(WireError::BadChunk)
        );
        assert_eq!(
            ChunkedDecoder::default().decode(b"2\r\nabc\r\n", &mut body),
            Err(WireError::BadChunk)
        );
    }
}
