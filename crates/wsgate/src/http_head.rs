//! HTTP/1.x heads read off the wire by our own code: the first request
//! head on a listener (head_io.rs reads it, server/direct.rs answers an
//! upgrade from it) and an upstream's answer to our upgrade request
//! (backend/upstream.rs). This module owns every byte-level step: where a
//! head ends, its bounds (size, number of fields), the request line's fast
//! check, and the parse itself, with httparse (hyper's parser, so hyper,
//! which parses every later head, agrees), into `http` types. No I/O.
//! Every failure is one [`Error`]; [`Error::reason`] maps it to the
//! [`Reason`] a client is refused with.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use std::fmt;
use wsgate_core::Reason;

/// Header fields a head may carry; hyper is configured with the same cap,
/// so a request head with more is refused by us, 431 with our body, rather
/// than by hyper with an empty one.
pub const MAX_HEADERS: usize = 100;

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Over the size cap or over [`MAX_HEADERS`] fields.
    TooLarge,
    /// The bytes end before the head does.
    Incomplete,
    /// Not HTTP/1.x head syntax, as httparse reads it.
    Syntax(httparse::Error),
    /// Valid syntax, but a part the `http` types refuse (named, for logs).
    Invalid(&'static str),
}

impl Error {
    /// The refusal of a client whose request head this is. Whatever hyper
    /// would refuse with an empty `400` is `400 bad_upgrade`.
    pub fn reason(self) -> Reason {
        match self {
            Error::TooLarge => Reason::HeadersTooLarge,
            Error::Incomplete | Error::Syntax(_) | Error::Invalid(_) => Reason::BadUpgrade,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TooLarge => f.write_str("head too large"),
            Error::Incomplete => f.write_str("incomplete head"),
            Error::Syntax(e) => e.fmt(f),
            Error::Invalid(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {}

impl From<httparse::Error> for Error {
    fn from(e: httparse::Error) -> Self {
        match e {
            httparse::Error::TooManyHeaders => Error::TooLarge,
            e => Error::Syntax(e),
        }
    }
}

/// Where a head being read stands ([`scan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The head ends just before this offset (past its `\r\n\r\n`).
    Complete(usize),
    /// No end yet, and still within the cap: read on.
    Partial,
    /// Over `max` bytes, or over [`MAX_HEADERS`] fields.
    TooLarge,
}

/// Checks `buf`, a head as read so far, against its bounds: at most `max`
/// bytes up to the end of the head and at most [`MAX_HEADERS`] fields.
/// `from` is how much of `buf` an earlier call already scanned (0 at
/// first), so a head read in pieces is scanned about once.
pub fn scan(buf: &[u8], from: usize, max: usize) -> Scan {
    match head_end(buf, from) {
        Some(end) if end > max || too_many_fields(&buf[..end]) => Scan::TooLarge,
        Some(end) => Scan::Complete(end),
        None if buf.len() > max => Scan::TooLarge,
        None => Scan::Partial,
    }
}

/// Whether a complete head has more than [`MAX_HEADERS`] fields: every
/// field ends a line, and so do the request line and the blank line.
/// (memchr: a byte-at-a-time scan of every head was 4k instructions per
/// upgrade, BENCHMARKS.md "direct upgrade path".)
fn too_many_fields(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head)
        .nth(MAX_HEADERS + 2)
        .is_some()
}

/// Position just past `\r\n\r\n`, scanning from `from` (less the three
/// bytes a terminator split across reads may start with).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.min(buf.len()).saturating_sub(3);
    memchr::memmem::find(&buf[start..], b"\r\n\r\n").map(|p| start + p + 4)
}

/// Whether the request line of `head` is `GET <path>[?query] ...`. Only a
/// shortcut for picking a path: a head it misreads is still parsed in full
/// before anything is decided on it.
pub fn is_get_of(head: &[u8], path: &str) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    if parts.next() != Some(b"GET".as_slice()) {
        return false;
    }
    let target = parts.next().unwrap_or_default();
    let target = target.split(|b| *b == b'?').next().unwrap_or_default();
    target == path.as_bytes()
}

/// Parses a request head at the start of `buf` into a request (its target
/// and header values share `buf`) and the bytes that followed the head.
pub fn parse_request(buf: Bytes) -> Result<(Request<()>, Bytes), Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = complete(parsed.parse(&buf))?;
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(Error::Incomplete);
    };
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| Error::Invalid("invalid method"))?;
    let uri = Uri::from_maybe_shared(buf.slice_ref(target.as_bytes()))
        .map_err(|_| Error::Invalid("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value = HeaderValue::from_maybe_shared(buf.slice_ref(h.value))
            .map_err(|_| Error::Invalid("invalid header value"))?;
        headers.append(name(h.name)?, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version_of(version);
    *req.headers_mut() = headers;
    // Nothing usually follows a request head before our answer; when
    // something does (a client that did not wait), it is the first bytes
    // of the protocol it upgrades to.
    let rest = if buf.len() > len {
        buf.slice(len..)
    } else {
        Bytes::new()
    };
    Ok((req, rest))
}

/// A response head ([`parse_response`]).
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    /// The head's length: what follows it in the buffer starts here.
    pub len: usize,
}

/// Parses a response head at the start of `buf`; header values are copied,
/// so `buf` need not outlive the result.
pub fn parse_response(buf: &[u8]) -> Result<ResponseHead, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = complete(parsed.parse(buf))?;
    let (Some(status), Some(version)) = (parsed.code, parsed.version) else {
        return Err(Error::Incomplete);
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| Error::Invalid("invalid header value"))?;
        headers.append(name(h.name)?, value);
    }
    Ok(ResponseHead {
        status,
        version: version_of(version),
        headers,
        len,
    })
}

fn complete(parsed: httparse::Result<usize>) -> Result<usize, Error> {
    match parsed? {
        httparse::Status::Complete(len) => Ok(len),
        httparse::Status::Partial => Err(Error::Incomplete),
    }
}

fn name(raw: &str) -> Result<HeaderName, Error> {
    HeaderName::from_bytes(raw.as_bytes()).map_err(|_| Error::Invalid("invalid header name"))
}

/// httparse reads only `HTTP/1.0` and `HTTP/1.1`.
fn version_of(minor: u8) -> Version {
    if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    }
}

/// True when a comma-separated header contains `token` (case-insensitive).
pub fn header_has_token(
    headers: &http::HeaderMap,
    name: http::header::HeaderName,
    token: &str,
) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &[u8]) -> Result<(Request<()>, Bytes), Error> {
        parse_request(Bytes::copy_from_slice(s))
    }

    #[test]
    fn request_line_target() {
        assert!(is_get_of(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", "/ws"));
        assert!(is_get_of(b"GET /ws?ticket=x HTTP/1.1\r\n", "/ws"));
        for head in [
            &b"GET /wss HTTP/1.1\r\n"[..],
            b"GET /healthz HTTP/1.1\r\n",
            b"POST /ws HTTP/1.1\r\n",
            b"get /ws HTTP/1.1\r\n",
            b"GET  /ws HTTP/1.1\r\n",
            b"",
            b"GET",
        ] {
            assert!(!is_get_of(head, "/ws"), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn finds_end_across_reads() {
        let b = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(head_end(b, 0), Some(27));
        assert_eq!(head_end(b, 25), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
    }

    #[test]
    fn scan_finds_the_end_across_reads() {
        let b = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(scan(b, 0, 1024), Scan::Complete(27));
        // A terminator split across two reads is still found.
        for from in [24, 25, 26] {
            assert_eq!(scan(b, from, 1024), Scan::Complete(27), "{from}");
        }
        assert_eq!(scan(b"GET / HTTP/1.1\r\n", 0, 1024), Scan::Partial);
        // `from` past the buffer (a caller's slip) is no panic.
        assert_eq!(scan(b"GET", 99, 1024), Scan::Partial);
    }

    #[test]
    fn bounds_size_and_fields() {
        let b = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(scan(b, 0, 27), Scan::Complete(27));
        assert_eq!(scan(b, 0, 26), Scan::TooLarge);
        assert_eq!(scan(b"GET / HTTP/1.1\r\nX: yyyy", 0, 20), Scan::TooLarge);
        let with = |n: usize| {
            let mut h = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                h.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
            }
            h.extend_from_slice(b"\r\n");
            h
        };
        let at_cap = with(MAX_HEADERS);
        assert_eq!(scan(&at_cap, 0, 1 << 20), Scan::Complete(at_cap.len()));
        let (parsed, _) = req(&at_cap).expect("100 fields parse");
        assert_eq!(parsed.headers().len(), MAX_HEADERS);
        assert_eq!(scan(&with(MAX_HEADERS + 1), 0, 1 << 20), Scan::TooLarge);
        // The parser enforces the same cap on a head it is handed directly.
        assert_eq!(req(&with(MAX_HEADERS + 1)).err(), Some(Error::TooLarge));
        assert_eq!(Error::TooLarge.reason(), Reason::HeadersTooLarge);
    }

    #[test]
    fn request_shares_the_buffer_and_keeps_what_follows() {
        let buf = Bytes::from_static(
            b"GET /ws?t=1 HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\n\r\n\x81\x00",
        );
        let (req, rest) = parse_request(buf.clone()).expect("parses");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/ws");
        assert_eq!(req.uri().query(), Some("t=1"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(&rest[..], b"\x81\x00");
        let host = req.headers()["host"].as_bytes().as_ptr();
        assert!(buf.as_ptr_range().contains(&host), "no copy of values");
    }

    #[test]
    fn malformed_requests() {
        for (head, want) in [
            (&b"GET /ws HTTP/1.1\r\nHost: a\r\n"[..], Error::Incomplete),
            (
                b"GET /ws HTTP/1.1\r\nBad Name: x\r\n\r\n",
                Error::Syntax(httparse::Error::HeaderName),
            ),
            (
                b"GET /ws HTTP/2.0\r\n\r\n",
                Error::Syntax(httparse::Error::Version),
            ),
            (
                b"GET /ws HTTP/1.1\r\nX: a\0b\r\n\r\n",
                Error::Syntax(httparse::Error::HeaderValue),
            ),
            // httparse lets this target through; `http::Uri` does not.
            (
                b"GET http://[::1 HTTP/1.1\r\n\r\n",
                Error::Invalid("invalid request target"),
            ),
        ] {
            assert_eq!(
                req(head).err(),
                Some(want),
                "{}",
                String::from_utf8_lossy(head)
            );
            assert_eq!(want.reason(), Reason::BadUpgrade);
        }
    }

    #[test]
    fn responses() {
        let buf = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: jwt\r\n\r\n\x81\x02hi";
        let head = parse_response(buf).expect("parses");
        assert_eq!(head.status, 101);
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["upgrade"], "websocket");
        assert_eq!(head.headers["sec-websocket-protocol"], "jwt");
        assert_eq!(&buf[head.len..], b"\x81\x02hi");
        assert_eq!(
            parse_response(b"HTTP/1.1 101 Switching").err(),
            Some(Error::Incomplete)
        );
        assert!(matches!(
            parse_response(b"HTTP/1.1 1O1 x\r\n\r\n"),
            Err(Error::Syntax(_) | Error::Invalid(_))
        ));
        assert!(matches!(
            parse_response(b"HTTP/1.1 101 x\r\nA\x01: b\r\n\r\n"),
            Err(Error::Syntax(_) | Error::Invalid(_))
        ));
    }
}
