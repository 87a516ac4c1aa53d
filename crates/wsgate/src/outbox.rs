//! A bounded queue in front of a WebSocket's write side.
//!
//! The session loop never awaits a write: it queues messages here and
//! drives the writes as one branch of its `select!`, so timers, control
//! messages and the other direction keep running while a peer is slow.
//! Backpressure comes from the bounds (a few messages, and the socket's
//! byte budget, see crate::backlog): while the queue is full the loop stops
//! reading whatever would produce more output for this peer.
//!
//! A peer that stops reading does not hold the socket for ever: once a
//! write finds it not taking more, the bytes waiting count in the node's
//! backlog and a deadline starts; a socket whose writes make no progress for
//! `limits.write_timeout` (or that falls behind while the node is past its
//! total) is a slow consumer ([`Io::Slow`]).
//!
//! The queue does not own the socket: the session keeps one unsplit
//! WebSocket per peer and [`poll_io`] drives its writes and reads in one
//! future (a split would put it behind a shared lock, one more allocation
//! per socket).

use crate::backlog::Backlog;
use crate::readahead::ReadAhead;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// tungstenite's own read buffer on client sockets, allocated per socket
/// and kept for its life; the `ReadAhead` (readahead.rs)
/// in front of it makes the large socket reads. Also the most tungstenite
/// takes per read call, so smaller means more (cheap, in-memory) calls.
pub const CLIENT_WS_BUFFER: usize = 512;

pub struct Outbox {
    queue: VecDeque<Message>,
    /// Bytes queued, or handed to the sink and not yet flushed (saturating:
    /// 4 GiB is past any budget). 32 bits keep every session's outbox at
    /// its old size.
    bytes: u32,
    /// Present while a write waits on the peer (see [`Stall`]).
    stall: Option<Box<Stall>>,
    /// Messages handed to the sink since the last completed flush.
    unflushed: bool,
    /// A message over [`LARGE`] was queued since the last look.
    large: bool,
}

/// Messages queued at most: a read produces one, so with the byte budget
/// this only matters for many small control messages.
const QUEUE: usize = 16;

/// Messages over this grow tungstenite's write buffer past its base size
/// (the client side's read buffer, for symmetry).
pub const LARGE: usize = CLIENT_WS_BUFFER;

/// Looks at a stalled socket's progress per `write_timeout`: it is closed
/// after between 1 and 1 + 1/LOOKS write timeouts without a byte written.
const LOOKS: u32 = 4;

/// A write waiting on the peer: the bytes it counts in the node's backlog
/// and the watch on its progress. Boxed, and only while it lasts: idle and
/// keeping-up sockets pay one pointer for it.
struct Stall {
    /// The next look at progress.
    look: Pin<Box<Sleep>>,
    /// Looks in a row that found no byte written.
    quiet: u32,
    /// The bytes of this socket counted in `backlog`.
    charged: usize,
    backlog: std::sync::Arc<Backlog>,
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.backlog.release(self.charged);
    }
}

/// What [`poll_io`] saw first.
pub enum Io {
    /// The queue was written out and flushed (or writing failed).
    Wrote(Result<(), WsError>),
    /// The peer took no byte for `limits.write_timeout`, or fell behind
    /// while the node is past `limits.max_buffered_bytes_total`.
    Slow,
    /// A frame, an error or the end of the stream.
    Read(Option<Result<Message, WsError>>),
}

/// A sink that tells whether it wrote anything to its peer since the last
/// call: the difference between a slow peer and a stalled one.
pub trait Progress {
    fn take_progress(&mut self) -> bool;
}

impl<S: AsyncRead + AsyncWrite + Unpin> Progress for WebSocketStream<ReadAhead<S>> {
    fn take_progress(&mut self) -> bool {
        self.get_mut().take_wrote()
    }
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Outbox {
    pub fn new() -> Self {
        Outbox {
            queue: VecDeque::new(),
            bytes: 0,
            stall: None,
            unflushed: false,
            large: false,
        }
    }

    /// Room for what one more read of the other side produces: a few
    /// messages, and the socket's byte budget (crate::backlog).
    pub fn has_room(&self, budget: &Backlog) -> bool {
        self.queue.len() < QUEUE && budget.room(self.bytes())
    }

    /// Queues a message. Callers check [`has_room`](Self::has_room) for
    /// data; control messages (pings, `auth_expiring`) are rare and bounded
    /// by their timers, so they may go past the bound.
    pub fn push(&mut self, m: Message) {
        self.large |= m.len() > LARGE;
        let n = u32::try_from(m.len()).unwrap_or(u32::MAX);
        self.bytes = self.bytes.saturating_add(n);
        self.queue.push_back(m);
    }

    /// Whether a message over [`LARGE`] was queued since the last call.
    pub fn take_large(&mut self) -> bool {
        std::mem::take(&mut self.large)
    }

    /// Something is queued or not yet flushed.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty() || self.unflushed
    }

    /// Bytes queued or not yet flushed.
    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }

    /// Capacity held by the queue (0 once a burst is written out).
    pub fn held_capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Writes and flushes until the queue is empty. Cancel-safe: all
    /// progress is kept in `self`, so dropping the future loses nothing.
    pub fn poll_drive<K>(&mut self, sink: &mut K, cx: &mut Context<'_>) -> Poll<Result<(), WsError>>
    where
        K: Sink<Message, Error = WsError> + Unpin,
    {
        while !self.queue.is_empty() {
            // tungstenite is ready only once its buffer is written out: at
            // most one message sits in it beyond the queue.
            ready!(sink.poll_ready_unpin(cx))?;
            if let Some(m) = self.queue.pop_front() {
                sink.start_send_unpin(m)?;
                self.unflushed = true;
            }
        }
        if self.unflushed {
            ready!(sink.poll_flush_unpin(cx))?;
            self.unflushed = false;
        }
        self.bytes = 0;
        // Caught up: nothing held for this peer any more.
        self.stall = None;
        // A burst is over: an idle socket keeps no queue memory.
        if self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }

    /// After a write found the peer taking no more: counts what waits in
    /// the node's backlog and watches the peer's progress. Whether the
    /// socket is now a slow consumer.
    fn stalled<K: Progress>(
        &mut self,
        ws: &mut K,
        backlog: &std::sync::Arc<Backlog>,
        cx: &mut Context<'_>,
    ) -> bool {
        let look_every = backlog.write_timeout / LOOKS;
        let stall = self.stall.get_or_insert_with(|| {
            // Only what is written from now on is progress.
            ws.take_progress();
            Box::new(Stall {
                look: Box::pin(tokio::time::sleep(look_every)),
                quiet: 0,
                charged: 0,
                backlog: backlog.clone(),
            })
        });
        let bytes = self.bytes as usize;
        if let Some(more) = bytes.checked_sub(stall.charged).filter(|&n| n > 0) {
            // The socket that would take the node past its total is behind
            // now: it is the one let go.
            if !stall.backlog.try_charge(more) {
                return true;
            }
            stall.charged = bytes;
        }
        while stall.look.as_mut().poll(cx).is_ready() {
            if ws.take_progress() {
                stall.quiet = 0;
            } else {
                stall.quiet += 1;
                if stall.quiet >= LOOKS {
                    return true;
                }
            }
            stall
                .look
                .as_mut()
                .reset(tokio::time::Instant::now() + look_every);
        }
        false
    }

    /// Flushes what is queued, within `grace`.
    pub async fn finish<K>(&mut self, sink: &mut K, grace: std::time::Duration)
    where
        K: Sink<Message, Error = WsError> + Unpin,
    {
        let _ = tokio::time::timeout(grace, poll_fn(|cx| self.poll_drive(sink, cx))).await;
    }
}

/// Drives `out`'s writes to `ws` and, when `read`, waits for `ws`'s next
/// frame; whichever completes first. Writes go first: what they free
/// decides whether reading may go on.
pub fn poll_io<K>(
    ws: &mut K,
    out: &mut Outbox,
    read: bool,
    backlog: &std::sync::Arc<Backlog>,
    cx: &mut Context<'_>,
) -> Poll<Io>
where
    K: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Progress + Unpin,
{
    if out.busy() {
        match out.poll_drive(ws, cx) {
            Poll::Ready(r) => return Poll::Ready(Io::Wrote(r)),
            Poll::Pending => {
                if out.stalled(ws, backlog, cx) {
                    return Poll::Ready(Io::Slow);
                }
            }
        }
    }
    if read {
        if let Poll::Ready(m) = ws.poll_next_unpin(cx) {
            return Poll::Ready(Io::Read(m));
        }
    }
    Poll::Pending
}

/// [`poll_io`] as a future (a poll_fn: an async fn would hold its
/// arguments twice, in every idle session's future).
pub fn io<'a, K>(
    ws: &'a mut K,
    out: &'a mut Outbox,
    read: bool,
    backlog: &'a std::sync::Arc<Backlog>,
) -> impl Future<Output = Io> + 'a
where
    K: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Progress + Unpin,
{
    poll_fn(move |cx| poll_io(ws, out, read, backlog, cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn backlog(per_socket: usize, total: usize, max_message: usize) -> Arc<Backlog> {
        let limits = crate::config::LimitsConfig {
            max_buffered_bytes: per_socket,
            max_buffered_bytes_total: total,
            max_message_bytes: max_message,
            write_timeout: Duration::from_millis(400),
            ..Default::default()
        };
        Arc::new(Backlog::new(
            &limits,
            prometheus_client::metrics::gauge::Gauge::default(),
        ))
    }

    /// Our side over ReadAhead, as the gateway's sockets are; the peer's
    /// window is `window` bytes (what it takes without reading).
    async fn pair(
        window: usize,
    ) -> (
        WebSocketStream<ReadAhead<tokio::io::DuplexStream>>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(window);
        let ws =
            WebSocketStream::from_raw_socket(ReadAhead::new(a, 4096), Role::Server, None).await;
        let peer = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (ws, peer)
    }

    #[test]
    fn an_outbox_costs_idle_sessions_nothing_more() {
        // Queue, budget count, the stall's pointer, flags: as before the
        // byte budget and the write deadline.
        assert!(std::mem::size_of::<Outbox>() <= 48);
    }

    #[tokio::test]
    async fn writes_then_reads_and_releases_the_queue() {
        let (mut ws, mut peer) = pair(1 << 16).await;
        let budget = backlog(64, 1 << 20, 32);
        let mut out = Outbox::new();
        assert!(out.has_room(&budget));
        out.push(Message::text("one"));
        out.push(Message::text("two"));
        assert!(
            out.has_room(&budget),
            "6 bytes + a 32-byte message fit in 64"
        );
        out.push(Message::text("x".repeat(30)));
        assert!(!out.has_room(&budget), "36 + 32 do not");
        assert!(matches!(
            io(&mut ws, &mut out, true, &budget).await,
            Io::Wrote(Ok(()))
        ));
        assert!(!out.busy());
        assert_eq!(out.bytes(), 0);
        assert_eq!(out.held_capacity(), 0, "drained: the queue is freed");
        assert_eq!(budget.held(), 0, "written at once: never counted");
        for want in ["one".to_owned(), "two".to_owned(), "x".repeat(30)] {
            let got = peer.next().await.and_then(|m| m.ok());
            assert_eq!(got, Some(Message::text(want)));
        }
        peer.send(Message::text("back")).await.expect("send");
        match io(&mut ws, &mut out, true, &budget).await {
            Io::Read(Some(Ok(m))) => assert_eq!(m, Message::text("back")),
            _ => panic!("expected a frame"),
        }
        // Not reading: a frame waits, nothing completes.
        peer.send(Message::text("later")).await.expect("send");
        let idle = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            io(&mut ws, &mut out, false, &budget),
        );
        assert!(idle.await.is_err());
    }

    /// A peer that reads nothing: what waits for it counts in the node's
    /// backlog, and after write_timeout (400 ms here) without progress it
    /// is slow.
    #[tokio::test]
    async fn a_peer_that_takes_nothing_is_slow_after_write_timeout() {
        let (mut ws, mut peer) = pair(1024).await;
        let budget = backlog(1 << 20, 1 << 30, 1 << 20);
        let mut out = Outbox::new();
        out.push(Message::binary(vec![7u8; 100_000]));
        let t0 = tokio::time::Instant::now();
        let r = io(&mut ws, &mut out, false, &budget).await;
        assert!(matches!(r, Io::Slow));
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(400) && waited <= Duration::from_millis(700),
            "{waited:?}"
        );
        assert_eq!(budget.held(), 100_000, "counted while it waits");
        drop(out);
        assert_eq!(budget.held(), 0, "released with the socket");
        // A peer that reads, however slowly, is not slow: 1 KiB every
        // 80 ms keeps a 100 kB write going well past the deadline.
        let mut out = Outbox::new();
        out.push(Message::binary(vec![7u8; 100_000]));
        let mut sink = [0u8; 1024];
        let reader = async {
            use tokio::io::AsyncReadExt;
            let raw = peer.get_mut();
            loop {
                tokio::time::sleep(Duration::from_millis(80)).await;
                if raw.read(&mut sink).await.unwrap_or(0) == 0 {
                    return;
                }
            }
        };
        let driven = tokio::time::timeout(
            Duration::from_secs(2),
            io(&mut ws, &mut out, false, &budget),
        );
        tokio::select! {
            r = driven => assert!(r.is_err(), "still writing after 2 s, never slow"),
            () = reader => panic!("peer gone"),
        }
    }

    /// Past the node's total, a socket that falls behind is slow at once.
    #[tokio::test]
    async fn falling_behind_past_the_node_total_is_slow() {
        let (mut ws, _peer) = pair(1024).await;
        let budget = backlog(1 << 20, 50_000, 1 << 20);
        let mut out = Outbox::new();
        out.push(Message::binary(vec![7u8; 100_000]));
        let r = tokio::time::timeout(
            Duration::from_secs(1),
            io(&mut ws, &mut out, false, &budget),
        );
        assert!(matches!(r.await, Ok(Io::Slow)));
        assert_eq!(budget.held(), 0, "refused: never counted");
    }
}
