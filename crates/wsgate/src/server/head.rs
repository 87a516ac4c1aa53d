//! Reads the first request head under a deadline and a size cap before
//! hyper sees the connection, so slow or oversized heads are refused with
//! our own status and body, and the bytes read are replayed to hyper.

use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::time::Instant;

/// How reading the first head ended.
#[derive(Debug)]
pub enum Head {
    /// A complete head (and maybe more) is in the buffer.
    Complete(BytesMut),
    /// The head exceeded the cap.
    TooLarge,
    /// The deadline passed first.
    TimedOut,
    /// The peer closed or failed before sending a head.
    Closed,
}

/// Header fields a request head may carry; hyper is configured with the
/// same cap, so a head with more is refused here, 431 with our body,
/// rather than by hyper with an empty one.
pub const MAX_HEADERS: usize = 100;

/// Whether a complete head has more than [`MAX_HEADERS`] fields: every
/// field ends a line, and so do the request line and the blank line.
/// (memchr: a byte-at-a-time scan of every head was 4k instructions per
/// upgrade, BENCHMARKS.md "direct upgrade path".)
fn too_many_fields(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head)
        .nth(MAX_HEADERS + 2)
        .is_some()
}

/// Position just past `\r\n\r\n`, scanning from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    memchr::memmem::find(&buf[start..], b"\r\n\r\n").map(|p| start + p + 4)
}

/// Whether the request line of `head` is `GET <path>[?query] ...`. Only a
/// shortcut for refusing early: a head it misreads takes the normal path.
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

/// Reads until the end of the head, `max` bytes of head, or `deadline`
/// (the connection's, from accept: see `server::serve_conn`).
pub async fn read_head<S: AsyncRead + Unpin>(io: &mut S, max: usize, deadline: Instant) -> Head {
    match tokio::time::timeout_at(deadline, read_head_untimed(io, max)).await {
        Ok(h) => h,
        Err(_) => Head::TimedOut,
    }
}

/// [`read_head`] for a caller that bounds the wait itself (never
/// [`Head::TimedOut`]).
pub async fn read_head_untimed<S: AsyncRead + Unpin>(io: &mut S, max: usize) -> Head {
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        let scanned = buf.len();
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(_) => {}
        }
        match head_end(&buf, scanned) {
            Some(end) if end > max || too_many_fields(&buf[..end]) => return Head::TooLarge,
            Some(_) => return Head::Complete(buf),
            None if buf.len() > max => return Head::TooLarge,
            None => {}
        }
    }
}

/// A stream that first yields `prefix`, then reads from `inner`.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // Give the memory back: idle sockets should not keep it.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

crate::readahead::delegate_async_write!(Rewind);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    fn after(d: Duration) -> Instant {
        Instant::now() + d
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

    #[tokio::test]
    async fn complete_large_and_slow() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(matches!(
            read_head(&mut b, 1024, after(Duration::from_secs(1))).await,
            Head::Complete(_)
        ));
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(2000));
        a.write_all(big.as_bytes()).await.expect("write");
        assert!(matches!(
            read_head(&mut b, 1024, after(Duration::from_secs(1))).await,
            Head::TooLarge
        ));
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        assert!(matches!(
            read_head(&mut b, 1024, after(Duration::from_millis(50))).await,
            Head::TimedOut
        ));
        drop(a);
    }
}
