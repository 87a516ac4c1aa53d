//! A bounded queue in front of a WebSocket's write half.
//!
//! The session loop never awaits a write: it queues messages here and
//! drives the writes as one branch of its `select!`, so timers, control
//! messages and the other direction keep running while a peer is slow.
//! Backpressure comes from the bound: while the queue is full the loop
//! stops reading whatever would produce more output for this peer.

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

pub struct Outbox<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    queue: VecDeque<Message>,
    cap: usize,
    /// Messages handed to the sink since the last completed flush.
    unflushed: bool,
}

impl<S> Outbox<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(sink: SplitSink<WebSocketStream<S>, Message>, cap: usize) -> Self {
        Outbox {
            sink,
            queue: VecDeque::new(),
            cap: cap.max(1),
            unflushed: false,
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
        self.queue.push_back(m);
    }

    /// Something is queued or not yet flushed.
    pub fn busy(&self) -> bool {
        !self.queue.is_empty() || self.unflushed
    }

    /// Writes and flushes until the queue is empty. Cancel-safe: all
    /// progress is kept in `self`, so dropping the future loses nothing.
    pub async fn drive(&mut self) -> Result<(), WsError> {
        poll_fn(|cx| self.poll_drive(cx)).await
    }

    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        while !self.queue.is_empty() {
            // tungstenite is ready only once its buffer is written out: at
            // most one message sits in it beyond the queue's bound.
            ready!(self.sink.poll_ready_unpin(cx))?;
            if let Some(m) = self.queue.pop_front() {
                self.sink.start_send_unpin(m)?;
                self.unflushed = true;
            }
        }
        if self.unflushed {
            ready!(self.sink.poll_flush_unpin(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Flushes what is queued, within `grace`; then the write half back.
    pub async fn finish(
        mut self,
        grace: std::time::Duration,
    ) -> SplitSink<WebSocketStream<S>, Message> {
        let _ = tokio::time::timeout(grace, self.drive()).await;
        self.sink
    }
}
