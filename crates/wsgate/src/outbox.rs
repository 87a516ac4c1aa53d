//! A bounded queue in front of a WebSocket's write side.
//!
//! The session loop never awaits a write: it queues messages here and
//! drives the writes as one branch of its `select!`, so timers, control
//! messages and the other direction keep running while a peer is slow.
//! Backpressure comes from the bound: while the queue is full the loop
//! stops reading whatever would produce more output for this peer.
//!
//! The queue does not own the socket: the session keeps one unsplit
//! WebSocket per peer and [`poll_io`] drives its writes and reads in one
//! future (a split would put it behind a shared lock, one more allocation
//! per socket).

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::task::{ready, Context, Poll};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub struct Outbox {
    queue: VecDeque<Message>,
    cap: usize,
    /// Messages handed to the sink since the last completed flush.
    unflushed: bool,
    /// A message over [`LARGE`] was queued since the last look.
    large: bool,
}

/// Messages over this grow tungstenite's write buffer past its base size
/// (the client side's read buffer, for symmetry).
pub const LARGE: usize = crate::app::CLIENT_WS_BUFFER;

/// What [`poll_io`] saw first.
pub enum Io {
    /// The queue was written out and flushed (or writing failed).
    Wrote(Result<(), WsError>),
    /// A frame, an error or the end of the stream.
    Read(Option<Result<Message, WsError>>),
}

impl Outbox {
    pub fn new(cap: usize) -> Self {
        Outbox {
            queue: VecDeque::new(),
            cap: cap.max(1),
            unflushed: false,
            large: false,
        }
    }

    /// Room for one more message produced by reading the other side.
    pub fn has_room(&self) -> bool {
        self.queue.len() < self.cap
    }

    /// Queues a message. Callers check [`has_room`](Self::has_room) for
    /// data; control messages (pings, `auth_expiring`) are rare and bounded
    /// by their timers, so they may go one past the bound.
    pub fn push(&mut self, m: Message) {
        self.large |= m.len() > LARGE;
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
            // most one message sits in it beyond the queue's bound.
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
        // A burst is over: an idle socket keeps no queue memory.
        if self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
        Poll::Ready(Ok(()))
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
pub fn poll_io<K>(ws: &mut K, out: &mut Outbox, read: bool, cx: &mut Context<'_>) -> Poll<Io>
where
    K: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    if out.busy() {
        if let Poll::Ready(r) = out.poll_drive(ws, cx) {
            return Poll::Ready(Io::Wrote(r));
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
pub fn io<'a, K>(ws: &'a mut K, out: &'a mut Outbox, read: bool) -> impl Future<Output = Io> + 'a
where
    K: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    poll_fn(move |cx| poll_io(ws, out, read, cx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    #[tokio::test]
    async fn writes_then_reads_and_releases_the_queue() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut ws = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut peer = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let mut out = Outbox::new(2);
        out.push(Message::text("one"));
        out.push(Message::text("two"));
        assert!(!out.has_room());
        assert!(matches!(
            io(&mut ws, &mut out, true).await,
            Io::Wrote(Ok(()))
        ));
        assert!(!out.busy());
        assert_eq!(out.held_capacity(), 0, "drained: the queue is freed");
        for want in ["one", "two"] {
            let got = peer.next().await.and_then(|m| m.ok());
            assert_eq!(got, Some(Message::text(want)));
        }
        peer.send(Message::text("back")).await.expect("send");
        match io(&mut ws, &mut out, true).await {
            Io::Read(Some(Ok(m))) => assert_eq!(m, Message::text("back")),
            _ => panic!("expected a frame"),
        }
        // Not reading: a frame waits, nothing completes.
        peer.send(Message::text("later")).await.expect("send");
        let idle = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            io(&mut ws, &mut out, false),
        );
        assert!(idle.await.is_err());
    }
}
