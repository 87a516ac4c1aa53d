//! A read side that costs nothing while the socket is idle.
//!
//! tungstenite reads through a buffer of `read_buffer_size` bytes that it
//! allocates up front and keeps for the socket's life, and it never asks
//! for more than that in one read. A large buffer costs memory on every
//! idle socket; a small one costs a syscall per few hundred bytes of a big
//! message. [`ReadAhead`] splits the two: tungstenite gets a small buffer,
//! and each socket read takes up to `chunk` bytes into a per-thread scratch
//! buffer. What the caller cannot take yet is kept in a heap buffer sized
//! to it, freed as soon as it is drained, so an idle socket holds nothing
//! here and a big message still needs few syscalls.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest scratch buffer kept per thread; larger chunks get a temporary one.
const MAX_SCRATCH: usize = 64 * 1024;

thread_local! {
    // One per worker thread, shared by its sockets: reading into it needs
    // no zero-fill and no allocation per read, even when nothing arrived.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A stream whose reads take up to `chunk` bytes from `inner` at a time.
pub struct ReadAhead<S> {
    inner: S,
    /// Read from `inner`, not yet handed out; no allocation when drained.
    pending: Vec<u8>,
    /// How much of `pending` was handed out.
    pos: usize,
    chunk: usize,
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S, chunk: usize) -> Self {
        ReadAhead {
            inner,
            pending: Vec::new(),
            pos: 0,
            chunk: chunk.max(1),
        }
    }

    /// Bytes read ahead and held (for tests and metrics).
    pub fn buffered(&self) -> usize {
        self.pending.len() - self.pos
    }

    /// Capacity held for read-ahead bytes: 0 once they are drained.
    pub fn held_capacity(&self) -> usize {
        self.pending.capacity()
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> ReadAhead<S> {
    /// Reads up to `chunk` bytes from `inner` into `scratch`, gives `dst`
    /// what fits and keeps the rest.
    fn read_via(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
        scratch: &mut Vec<u8>,
    ) -> Poll<io::Result<()>> {
        if scratch.len() < self.chunk {
            // Zeroed once per thread (or per oversized read), not per read.
            scratch.resize(self.chunk, 0);
        }
        let mut rb = ReadBuf::new(&mut scratch[..self.chunk]);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let got = rb.filled();
        let n = got.len().min(dst.remaining());
        dst.put_slice(&got[..n]);
        if n < got.len() {
            // Exactly what is left over: small for a small message.
            self.pending = got[n..].to_vec();
            self.pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if dst.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.pos < this.pending.len() {
            let n = (this.pending.len() - this.pos).min(dst.remaining());
            dst.put_slice(&this.pending[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.pending.len() {
                // Drained: give the memory back, idle sockets keep none.
                this.pending = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if dst.remaining() >= this.chunk {
            // The caller's buffer is big enough: no copy.
            return Pin::new(&mut this.inner).poll_read(cx, dst);
        }
        if this.chunk > MAX_SCRATCH {
            return this.read_via(cx, dst, &mut Vec::new());
        }
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => this.read_via(cx, dst, &mut scratch),
            // Only if a read re-entered this thread's scratch (a ReadAhead
            // inside a ReadAhead): a temporary buffer keeps it correct.
            Err(_) => this.read_via(cx, dst, &mut Vec::new()),
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the reads that reach the inner stream.
    struct Counting<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let before = buf.filled().len();
            let r = Pin::new(&mut self.inner).poll_read(cx, buf);
            if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                self.reads += 1;
            }
            r
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let sent = data(10_000);
        w.write_all(&sent).await.expect("write");
        let mut s = ReadAhead::new(Counting { inner: r, reads: 0 }, 16 * 1024);
        let mut got = Vec::new();
        let mut small = [0u8; 512];
        while got.len() < sent.len() {
            let n = s.read(&mut small).await.expect("read");
            assert!(n > 0 && n <= 512);
            got.extend_from_slice(&small[..n]);
            // Whatever is not handed out is held, and only that.
            assert_eq!(s.buffered(), sent.len() - got.len());
        }
        assert_eq!(got, sent);
        assert_eq!(s.get_ref().reads, 1, "one socket read for 20 small ones");
        assert_eq!(s.held_capacity(), 0, "drained: the buffer is freed");
    }

    #[tokio::test]
    async fn reads_larger_than_the_chunk_go_straight_through() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let sent = data(100_000);
        w.write_all(&sent).await.expect("write");
        drop(w);
        let mut s = ReadAhead::new(r, 4096);
        let mut big = vec![0u8; 8192];
        let n = s.read(&mut big).await.expect("read");
        assert_eq!(&big[..n], &sent[..n]);
        assert!(n > 4096, "no copy through a 4 KiB chunk: {n}");
        assert_eq!(s.held_capacity(), 0);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.expect("read");
        assert_eq!(&rest, &sent[n..]);
    }

    #[tokio::test]
    async fn partial_arrivals_and_eof() {
        let (mut w, r) = tokio::io::duplex(1 << 16);
        let mut s = ReadAhead::new(r, 1024);
        w.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 3];
        assert_eq!(s.read(&mut buf).await.expect("read"), 3);
        assert_eq!(&buf, b"hel");
        assert_eq!(s.buffered(), 2);
        // The rest of the first arrival comes before any new read.
        w.write_all(b" world").await.expect("write");
        assert_eq!(s.read(&mut buf).await.expect("read"), 2);
        assert_eq!(&buf[..2], b"lo");
        assert_eq!(s.held_capacity(), 0);
        let mut rest = [0u8; 64];
        assert_eq!(s.read(&mut rest).await.expect("read"), 6);
        assert_eq!(&rest[..6], b" world");
        drop(w);
        assert_eq!(s.read(&mut rest).await.expect("eof"), 0);
        assert_eq!(s.held_capacity(), 0);
    }

    #[tokio::test]
    async fn nothing_held_while_waiting() {
        let (mut w, r) = tokio::io::duplex(1 << 16);
        let mut s = ReadAhead::new(r, 1024);
        let mut buf = [0u8; 16];
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), s.read(&mut buf));
        assert!(waiting.await.is_err(), "no data yet");
        assert_eq!(s.held_capacity(), 0);
        w.write_all(b"x").await.expect("write");
        assert_eq!(s.read(&mut buf).await.expect("read"), 1);
        assert_eq!(s.held_capacity(), 0);
    }

    #[tokio::test]
    async fn oversized_chunks_use_a_temporary_buffer() {
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let sent = data(200_000);
        w.write_all(&sent).await.expect("write");
        drop(w);
        let mut s = ReadAhead::new(r, MAX_SCRATCH * 2);
        let mut got = Vec::new();
        let mut small = [0u8; 1000];
        loop {
            let n = s.read(&mut small).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, sent);
        assert_eq!(s.held_capacity(), 0);
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let mut s = ReadAhead::new(w, 1024);
        s.write_all(b"out").await.expect("write");
        s.flush().await.expect("flush");
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"out");
    }
}
