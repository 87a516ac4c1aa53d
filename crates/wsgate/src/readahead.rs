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
//!
//! With [`frames`](ReadAhead::frames) it also follows the WebSocket frames
//! it hands out and never hands out past the end of the current one. So
//! at a [message boundary](ReadAhead::at_message_boundary) the WebSocket
//! above holds no unread input, and the session can replace it with a fresh
//! one: tungstenite keeps its buffers at the largest size a message made
//! them, which an idle socket should not keep.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Scratch buffer kept per thread, and so the largest read.
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
    chunk: u32,
    /// A write took bytes since the last [`take_wrote`](Self::take_wrote).
    wrote: bool,
    /// Frame tracking, when on.
    frames: Option<Box<Frames>>,
}

/// Where the bytes handed out so far stand in the WebSocket frame stream
/// (RFC 6455 5.2). Only lengths and flags are read; tungstenite validates.
#[derive(Default)]
struct Frames {
    /// The current frame's header, as far as it was handed out.
    head: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame not yet handed out.
    payload_left: u64,
    /// A data frame without FIN was handed out: a fragmented message is open.
    in_message: bool,
}

impl Frames {
    /// The header's length and the payload's, once `head[..have]` holds it.
    fn header(&self) -> Option<(usize, u64)> {
        let h = &self.head[..self.have];
        let (&b1, _) = h.get(1).zip(h.first())?;
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let len = 2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 };
        if h.len() < len {
            return None;
        }
        let payload = match ext {
            0 => u64::from(b1 & 0x7f),
            n => h[2..2 + n]
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        };
        Some((len, payload))
    }

    /// How many of `avail` may be handed out now (up to the end of the
    /// current frame), accounting for them.
    fn take(&mut self, avail: &[u8]) -> usize {
        let mut used = 0;
        loop {
            if self.payload_left > 0 {
                let n = (avail.len() - used)
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= n as u64;
                return used + n;
            }
            let Some(&b) = avail.get(used) else {
                return used;
            };
            used += 1;
            if let Some(slot) = self.head.get_mut(self.have) {
                *slot = b;
                self.have += 1;
            }
            if let Some((len, payload)) = self.header() {
                if self.have == len {
                    // Control frames (opcode 8 and up) may sit inside a
                    // fragmented message and do not end it.
                    if self.head[0] & 0x0f < 8 {
                        self.in_message = self.head[0] & 0x80 == 0;
                    }
                    self.have = 0;
                    self.payload_left = payload;
                    if payload == 0 {
                        return used;
                    }
                }
            }
        }
    }

    fn at_message_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0 && !self.in_message
    }
}

impl<S> ReadAhead<S> {
    pub fn new(inner: S, chunk: usize) -> Self {
        ReadAhead {
            inner,
            pending: Vec::new(),
            pos: 0,
            // Capped at the shared scratch buffer: larger reads would need a
            // buffer of their own, allocated and zeroed per read.
            chunk: chunk.clamp(1, MAX_SCRATCH) as u32,
            wrote: false,
            frames: None,
        }
    }

    /// Follows WebSocket frames (see the module doc), masked or not: a
    /// server reading a client, or the upstream side reading its server,
    /// from the first frame on.
    pub fn frames(mut self) -> Self {
        self.frames = Some(Box::default());
        self
    }

    /// Everything handed out ends a complete message (and no fragmented
    /// message is open): the reader above holds no unread input once it
    /// has returned that message. Always false without frame tracking.
    pub fn at_message_boundary(&self) -> bool {
        self.frames
            .as_ref()
            .is_some_and(|f| f.at_message_boundary())
    }

    /// Hands `dst` what it may take of `src`; returns how many.
    fn hand_out(&mut self, src: &[u8], dst: &mut ReadBuf<'_>) -> usize {
        let n = src.len().min(dst.remaining());
        let n = match self.frames.as_mut() {
            Some(f) => f.take(&src[..n]),
            None => n,
        };
        dst.put_slice(&src[..n]);
        n
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

    /// Whether a write took bytes since the last call: the session's test
    /// of a peer's progress (crate::outbox). A flag, so writes pay a store.
    pub fn take_wrote(&mut self) -> bool {
        std::mem::take(&mut self.wrote)
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
        let chunk = self.chunk as usize;
        if scratch.len() < chunk {
            // Zeroed once per thread (or per oversized read), not per read.
            scratch.resize(chunk, 0);
        }
        let mut rb = ReadBuf::new(&mut scratch[..chunk]);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let got = rb.filled();
        let n = self.hand_out(got, dst);
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
            let pending = std::mem::take(&mut this.pending);
            let n = this.hand_out(&pending[this.pos..], dst);
            this.pending = pending;
            this.pos += n;
            if this.pos == this.pending.len() {
                // Drained: give the memory back, idle sockets keep none.
                this.pending = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if dst.remaining() >= this.chunk as usize && this.frames.is_none() {
            // The caller's buffer is big enough: no copy.
            return Pin::new(&mut this.inner).poll_read(cx, dst);
        }
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => this.read_via(cx, dst, &mut scratch),
            // Only if a read re-entered this thread's scratch (a ReadAhead
            // inside a ReadAhead): a temporary buffer keeps it correct.
            Err(_) => this.read_via(cx, dst, &mut Vec::new()),
        })
    }
}

/// `AsyncWrite` for a read-side wrapper `$ty<S>` with an `inner: S` field:
/// writes pass straight through (`Rewind` in head_io.rs, `Tunnel` in
/// backend/upstream.rs; ReadAhead notes progress, below).
macro_rules! delegate_async_write {
    ($ty:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $ty<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }
            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }
            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }
            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }
        }
    };
}
pub(crate) use delegate_async_write;

/// Writes pass straight through, noting whether they took anything.
impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote = true;
        }
        r
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
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote = true;
        }
        r
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
    async fn oversized_chunks_are_capped_at_the_scratch_size() {
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

    /// A masked client frame (zero mask: the payload goes as is).
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frame_lengths_and_boundaries_byte_by_byte() {
        for n in [0, 1, 125, 126, 65_535, 65_536, 200_000] {
            let bytes = frame(0x82, &data(n));
            let mut f = Frames::default();
            let mut at = 0;
            // One byte at a time: headers split anywhere.
            while at < bytes.len() {
                assert!(
                    !f.at_message_boundary() || at == 0,
                    "len {n}: boundary at {at}"
                );
                at += f.take(&bytes[at..at + 1]);
            }
            assert!(f.at_message_boundary(), "len {n}: boundary at the end");
            // All at once: handed out up to the end of the frame, not past it.
            let mut two = bytes.clone();
            two.extend_from_slice(&bytes);
            let mut f = Frames::default();
            assert_eq!(f.take(&two), bytes.len());
            assert!(f.at_message_boundary());
        }
    }

    #[tokio::test]
    async fn fragments_and_interleaved_control_frames() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::{protocol::Role, Message};
        let (mut w, r) = tokio::io::duplex(1 << 16);
        let io = ReadAhead::new(r, 4096).frames();
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        // First fragment (no FIN), then a ping inside the message.
        w.write_all(&frame(0x02, b"abc")).await.expect("write");
        w.write_all(&frame(0x89, b"p")).await.expect("write");
        let m = ws.next().await.and_then(|m| m.ok());
        assert_eq!(m, Some(Message::Ping(b"p".to_vec().into())));
        assert!(!ws.get_ref().at_message_boundary(), "a message is open");
        w.write_all(&frame(0x80, b"de")).await.expect("write");
        let m = ws.next().await.and_then(|m| m.ok());
        assert_eq!(m, Some(Message::Binary(b"abcde".to_vec().into())));
        assert!(ws.get_ref().at_message_boundary());
    }

    /// What the session does after a large message: nothing pipelined
    /// behind it is lost, and the fresh WebSocket reads on.
    #[tokio::test]
    async fn a_websocket_replaced_at_a_boundary_loses_nothing() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
        use tokio_tungstenite::tungstenite::Message;
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let big = data(300_000);
        let mut sent = frame(0x82, &big);
        sent.extend_from_slice(&frame(0x81, b"next"));
        sent.extend_from_slice(&frame(0x81, b"and more"));
        w.write_all(&sent).await.expect("write");
        let config = WebSocketConfig::default().read_buffer_size(512);
        let io = ReadAhead::new(r, 16 * 1024).frames();
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, Some(config))
                .await;
        let m = ws.next().await.and_then(|m| m.ok());
        assert_eq!(m, Some(Message::Binary(big.into())));
        assert!(ws.get_ref().at_message_boundary());
        let io = ws.into_inner();
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, Some(config))
                .await;
        for want in ["next", "and more"] {
            let m = ws.next().await.and_then(|m| m.ok());
            assert_eq!(m, Some(Message::text(want)));
        }
        assert_eq!(ws.get_ref().held_capacity(), 0);
    }
}
