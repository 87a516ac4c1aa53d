//! A minimal HTTP/1.1 client side: reads one response from a stream on which
//! one request was written (no pipelining). Bodies framed by Content-Length,
//! `Transfer-Encoding: chunked`, or the end of the connection; interim 1xx
//! responses other than 101 are skipped. Heads and bodies are size-capped,
//! and nothing read from the network is trusted to be well-formed.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest response body accepted (decoded).
pub const MAX_BODY: usize = 256 * 1024;

/// One response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The connection may carry another request (HTTP/1.1 without
    /// `Connection: close`, and a body that was not delimited by EOF).
    pub keep_alive: bool,
}

impl Response {
    /// The first bytes of the body, for error messages.
    pub fn body_snippet(&self) -> String {
        let end = self.body.len().min(200);
        String::from_utf8_lossy(&self.body[..end]).into_owned()
    }
}

#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// The peer closed the connection before sending a single byte of the
    /// response (a stale keep-alive connection: safe to retry once).
    ClosedBeforeResponse,
    /// The peer closed the connection in the middle of the response.
    UnexpectedEof,
    Malformed(String),
    TooLarge(&'static str),
}

impl Error {
    /// A short, stable category for counting.
    pub fn category(&self) -> String {
        match self {
            Error::Io(e) => format!("{:?}", e.kind()),
            Error::ClosedBeforeResponse => "closed before response".into(),
            Error::UnexpectedEof => "unexpected eof".into(),
            Error::Malformed(_) => "malformed response".into(),
            Error::TooLarge(what) => format!("{what} too large"),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::ClosedBeforeResponse => f.write_str("connection closed before the response"),
            Error::UnexpectedEof => f.write_str("connection closed in the middle of the response"),
            Error::Malformed(m) => write!(f, "malformed response: {m}"),
            Error::TooLarge(what) => write!(f, "response {what} exceeds the limit"),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Io(e)
    }
}

/// What the head says about the response.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    http11: bool,
    content_length: Option<usize>,
    chunked: bool,
    /// Transfer-Encoding present but not ending in chunked: read to EOF.
    other_encoding: bool,
    close: bool,
    keep_alive: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn malformed(m: impl Into<String>) -> Error {
    Error::Malformed(m.into())
}

/// Parses a response head (status line and header lines, without the final
/// empty line).
fn parse_head(raw: &[u8]) -> Result<Head, Error> {
    let text = std::str::from_utf8(raw).map_err(|_| malformed("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(malformed(format!("bad status line {status_line:?}"))),
    };
    let code = parts.next().unwrap_or_default();
    let status = match code.parse::<u16>() {
        Ok(s) if code.len() == 3 && (100..=999).contains(&s) => s,
        _ => return Err(malformed(format!("bad status code in {status_line:?}"))),
    };
    let mut head = Head {
        status,
        http11,
        content_length: None,
        chunked: false,
        other_encoding: false,
        close: false,
        keep_alive: false,
    };
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(format!("bad header line {line:?}")))?;
        if name.is_empty() || name.ends_with(' ') || name.ends_with('\t') {
            return Err(malformed(format!("bad header name in {line:?}")));
        }
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| malformed(format!("bad Content-Length {value:?}")))?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if last.eq_ignore_ascii_case("chunked") {
                head.chunked = true;
                head.other_encoding = false;
            } else {
                head.chunked = false;
                head.other_encoding = true;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                head.close |= token.eq_ignore_ascii_case("close");
                head.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
    }
    Ok(head)
}

/// Reads more bytes into `buf`; returns how many (0 at EOF).
async fn fill<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<usize, Error> {
    buf.reserve(4096);
    Ok(s.read_buf(buf).await?)
}

/// Reads one response from `s`. `buf` holds bytes already read from the
/// connection and not yet consumed; on return it holds whatever followed
/// the response.
pub async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Response, Error> {
    loop {
        let (head, head_len) = read_head(s, buf).await?;
        // 1xx: no body. 101 is final (the connection changed protocols);
        // any other 1xx is interim and a final response follows.
        if (100..200).contains(&head.status) {
            buf.drain(..head_len);
            if head.status == 101 {
                return Ok(Response {
                    status: 101,
                    body: Vec::new(),
                    keep_alive: false,
                });
            }
            continue;
        }
        let persistent = if head.http11 {
            !head.close
        } else {
            head.keep_alive && !head.close
        };
        if head.status == 204 || head.status == 304 {
            buf.drain(..head_len);
            return Ok(Response {
                status: head.status,
                body: Vec::new(),
                keep_alive: persistent,
            });
        }
        buf.drain(..head_len);
        let (body, keep_alive) = if head.chunked {
            (read_chunked(s, buf).await?, persistent)
        } else if let (Some(len), false) = (head.content_length, head.other_encoding) {
            if len > MAX_BODY {
                return Err(Error::TooLarge("body"));
            }
            while buf.len() < len {
                if fill(s, buf).await? == 0 {
                    return Err(Error::UnexpectedEof);
                }
            }
            (buf.drain(..len).collect(), persistent)
        } else {
            // Delimited by the end of the connection.
            while fill(s, buf).await? != 0 {
                if buf.len() > MAX_BODY {
                    return Err(Error::TooLarge("body"));
                }
            }
            (std::mem::take(buf), false)
        };
        return Ok(Response {
            status: head.status,
            body,
            keep_alive,
        });
    }
}

/// Reads until the end of a head; returns it parsed, and its length
/// including the empty line.
async fn read_head<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(Head, usize), Error> {
    let mut scanned = 0;
    loop {
        if let Some(i) = find(&buf[scanned..], b"\r\n\r\n") {
            let end = scanned + i;
            return Ok((parse_head(&buf[..end])?, end + 4));
        }
        // The terminator may straddle two reads.
        scanned = buf.len().saturating_sub(3);
        if buf.len() > MAX_HEAD {
            return Err(Error::TooLarge("head"));
        }
        if fill(s, buf).await? == 0 {
            return Err(if buf.is_empty() {
                Error::ClosedBeforeResponse
            } else {
                Error::UnexpectedEof
            });
        }
    }
}

/// Reads up to and including the next CRLF starting at `from`; returns the
/// line's end (the index of its CR).
async fn line_end<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
    from: usize,
) -> Result<usize, Error> {
    loop {
        if let Some(i) = find(&buf[from..], b"\r\n") {
            return Ok(from + i);
        }
        if buf.len() - from > 4096 {
            return Err(malformed("chunk-size or trailer line too long"));
        }
        if fill(s, buf).await? == 0 {
            return Err(Error::UnexpectedEof);
        }
    }
}

async fn read_chunked<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let end = line_end(s, buf, pos).await?;
        let line = std::str::from_utf8(&buf[pos..end]).map_err(|_| malformed("chunk size"))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .ok()
            .filter(|_| !size_text.is_empty() && !size_text.starts_with('+'))
            .ok_or_else(|| malformed(format!("bad chunk size {line:?}")))?;
        pos = end + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let end = line_end(s, buf, pos).await?;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    buf.drain(..pos);
                    return Ok(body);
                }
            }
        }
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(Error::TooLarge("body"));
        }
        while buf.len() < pos + size + 2 {
            if fill(s, buf).await? == 0 {
                return Err(Error::UnexpectedEof);
            }
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(malformed("chunk not followed by CRLF"));
        }
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to the reader in pieces of `step` bytes.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self
                .step
                .min(self.data.len() - self.pos)
                .min(out.remaining());
            let start = self.pos;
            out.put_slice(&self.data[start..start + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    fn read_all(input: &[u8], step: usize) -> (Result<Response, Error>, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread().build();
        let Ok(rt) = rt else {
            panic!("no runtime");
        };
        let mut s = Trickle {
            data: input.to_vec(),
            pos: 0,
            step,
        };
        let mut buf = Vec::new();
        let r = rt.block_on(read_response(&mut s, &mut buf));
        (r, buf)
    }

    fn ok(input: &[u8]) -> (u16, String, bool, Vec<u8>) {
        let mut first: Option<(u16, String, bool, Vec<u8>)> = None;
        for step in [1, 2, 3, 7, 4096] {
            let (r, rest) = read_all(input, step);
            let r = match r {
                Ok(r) => r,
                Err(e) => panic!("step {step}: {e}"),
            };
            let got = (
                r.status,
                String::from_utf8_lossy(&r.body).into_owned(),
                r.keep_alive,
                rest,
            );
            if let Some(f) = &first {
                // Leftover bytes depend on read sizes only for EOF bodies.
                assert_eq!((&got.0, &got.1, got.2), (&f.0, &f.1, f.2), "step {step}");
            } else {
                first = Some(got);
            }
        }
        first.unwrap_or_default()
    }

    fn err(input: &[u8]) -> Error {
        match read_all(input, 5).0 {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn content_length_keep_alive_and_leftover() {
        let (status, body, ka, _) = ok(
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"a\":\"b c\"}",
        );
        assert_eq!((status, body.as_str(), ka), (201, "{\"a\":\"b c\"}", true));
        let (r, rest) = read_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1",
            4096,
        );
        assert_eq!(r.ok().map(|r| r.body), Some(b"hi".to_vec()));
        assert_eq!(rest, b"HTTP/1.1");
    }

    #[test]
    fn connection_close_and_http10() {
        let (_, _, ka, _) =
            ok(b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        assert!(!ka);
        let (_, _, ka, _) = ok(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!ka);
        let (_, _, ka, _) =
            ok(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n");
        assert!(ka);
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let (status, body, ka, rest) = ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n",
        );
        assert_eq!(status, 200);
        assert_eq!(body, "Wikipedia in\r\n\r\nchunks.");
        assert!(ka);
        assert!(rest.is_empty());
    }

    #[test]
    fn eof_delimited_body() {
        let (status, body, ka, _) = ok(b"HTTP/1.1 200 OK\r\n\r\nuntil the end");
        assert_eq!((status, body.as_str(), ka), (200, "until the end", false));
    }

    #[test]
    fn switching_protocols_and_interim() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x88\x00";
        let (status, body, ka, _) = ok(head);
        assert_eq!((status, body.as_str(), ka), (101, "", false));
        // Bytes after the head stay in the buffer (frames of the new protocol).
        let (_, rest) = read_all(head, 4096);
        assert_eq!(rest, b"\x88\x00");
        let (status, body, _, _) =
            ok(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!((status, body.as_str()), (200, "x"));
    }

    #[test]
    fn refuses_malformed_and_truncated() {
        assert!(matches!(err(b""), Error::ClosedBeforeResponse));
        assert!(matches!(err(b"HTTP/1.1 200 OK\r\n"), Error::UnexpectedEof));
        assert!(matches!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"),
            Error::UnexpectedEof
        ));
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
        ] {
            assert!(
                matches!(err(bad), Error::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(matches!(err(huge.as_bytes()), Error::TooLarge("body")));
        let long_head = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(err(long_head.as_bytes()), Error::TooLarge("head")));
    }
}
