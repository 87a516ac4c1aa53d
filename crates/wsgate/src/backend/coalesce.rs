//! Fewer, larger writes on a shared HTTP/2 connection to the upstream.
//!
//! The h2 connection task writes out its frames whenever it is polled. Many
//! clients' streams share that connection, and their session tasks queue
//! frames one by one (a stream opened here, a close frame there), so each
//! wake-up of the task used to end in a `writev` carrying a frame or two,
//! and each one woke the upstream. [`Coalesce`] keeps what the task writes
//! and, at its first flush, yields once to the scheduler instead: the
//! session tasks already queued run and add their frames, and the next poll
//! writes all of them in one system call. The wait is one pass of the run
//! queue; nothing is held past it.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held before they are written regardless.
const LIMIT: usize = 64 * 1024;
/// Writes this large (a full DATA frame of a large message) are not
/// copied: what is held goes first, then they go straight through.
const PASS: usize = 8 * 1024;
/// A held buffer that grew past this is given back once written out.
const KEEP: usize = 16 * 1024;

pub struct Coalesce<S> {
    inner: S,
    held: Vec<u8>,
    /// Bytes of `held` already written.
    sent: usize,
    /// The current flush already yielded once.
    yielded: bool,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Coalesce {
            inner,
            held: Vec::new(),
            sent: 0,
            yielded: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    fn pending(&self) -> usize {
        self.held.len() - self.sent
    }

    /// Writes out everything held.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        if self.held.capacity() > KEEP {
            self.held = Vec::new();
        } else {
            self.held.clear();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total >= PASS || self.pending() + total > LIMIT {
            ready!(self.drain(cx))?;
            if total >= PASS {
                return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            }
        }
        for b in bufs {
            self.held.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending() > 0 {
            if !self.yielded {
                // A task woken by itself goes to the back of tokio's run
                // queue, behind the tasks that are about to add frames.
                self.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(self.drain(cx))?;
        }
        self.yielded = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn holds_until_flushed_then_writes_once_in_order() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut c = Coalesce::new(a);
        c.write_all(b"one ").await.expect("write");
        let n = c
            .write_vectored(&[IoSlice::new(b"two "), IoSlice::new(b"three")])
            .await
            .expect("write");
        assert_eq!(n, 9, "vectored writes are taken whole");
        // Nothing reaches the peer before the flush.
        let mut probe = [0u8; 1];
        let early = tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut probe));
        assert!(early.await.is_err(), "bytes written before the flush");
        c.flush().await.expect("flush");
        let mut got = vec![0u8; 13];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"one two three");
        assert_eq!((c.held.len(), c.sent, c.yielded), (0, 0, false));
    }

    #[tokio::test]
    async fn large_writes_pass_straight_through_after_what_is_held() {
        let (a, mut b) = tokio::io::duplex(4 << 20);
        let mut c = Coalesce::new(a);
        c.write_all(b"head").await.expect("write");
        let big = vec![7u8; PASS + 10];
        c.write_all(&big).await.expect("write");
        c.flush().await.expect("flush");
        let mut got = vec![0u8; 4 + big.len()];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..4], b"head");
        assert!(got[4..].iter().all(|&x| x == 7));
        assert!(c.held.capacity() <= KEEP);
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_held() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut c = Coalesce::new(a);
        c.write_all(b"bye").await.expect("write");
        c.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"bye");
    }
}
