//! Reads the first request head under a deadline and a size cap before
//! hyper sees the connection, so slow or oversized heads are refused with
//! our own status and body, and the bytes read are replayed to hyper. The
//! bytes are judged by crate::http_head; this module only does the I/O.

use crate::http_head::{self, Scan};
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

// The bounds and the fast request-line check are the head parser's.
pub use crate::http_head::{is_get_of, MAX_HEADERS};

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
        match http_head::scan(&buf, scanned, max) {
            Scan::Complete(_) => return Head::Complete(buf),
            Scan::TooLarge => return Head::TooLarge,
            Scan::Partial => {}
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
