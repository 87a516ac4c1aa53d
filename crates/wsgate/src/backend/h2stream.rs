//! One upstream WebSocket as an HTTP/2 stream (RFC 8441), read and written
//! by the session's own task through h2's stream handles.
//!
//! hyper's client hands an upgraded HTTP/2 stream over through a channel
//! to a task of its own per stream, which copies each write into a box and
//! passes it on to h2; the request and its response travel through
//! hyper's dispatch task as well. Writing h2's `SendStream` here saves
//! those tasks and hops on every upgrade; the shared connection's writes
//! are still batched, by `Coalesce` (coalesce.rs), which is what the extra
//! hop used to provide by accident.
//!
//! Flow control is h2's: a write waits until the stream has send window
//! (at most one write beyond it is buffered by h2), and the receive window
//! is released as the session reads, so a client that stops reading stalls
//! only its own stream.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The stream's two halves, as h2 hands them out.
pub struct Stream {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    /// Received and not yet read.
    buf: Bytes,
    /// END_STREAM sent (shutdown).
    ended: bool,
}

impl Stream {
    pub fn new(send: h2::SendStream<Bytes>, recv: h2::RecvStream) -> Self {
        Stream {
            send,
            recv,
            buf: Bytes::new(),
            ended: false,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.buf.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                // END_STREAM: end of file.
                None => return Poll::Ready(Ok(())),
                Some(Ok(data)) => this.buf = data,
                Some(Err(e)) => return Poll::Ready(ended(e)),
            }
        }
        let n = this.buf.len().min(out.remaining());
        out.put_slice(&this.buf[..n]);
        this.buf.advance(n);
        // Window for the upstream only as the session takes the bytes.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let send = &mut self.send;
        if send.capacity() == 0 {
            // Capacity asked for only with something to send: a reservation
            // held while idle would pin the connection's window.
            send.reserve_capacity(1);
            while send.capacity() == 0 {
                match ready!(send.poll_capacity(cx)) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                    // Reset or closed by the upstream.
                    None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                }
            }
        }
        // What exceeds the window is buffered by h2 and sent as the window
        // opens; capacity() stays 0 until then, so the next write waits.
        send.send_data(Bytes::copy_from_slice(buf), false)
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    /// Handed to h2 is as far as a stream goes: the connection task writes
    /// the frames (batched, coalesce.rs).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.ended {
            self.ended = true;
            // An already reset stream has nothing left to end.
            let _ = self.send.send_data(Bytes::new(), true);
        }
        Poll::Ready(Ok(()))
    }
}

/// A stream the upstream ended by reset: cancelled or "no error" is an end
/// of file like END_STREAM, anything else an error.
fn ended(e: h2::Error) -> io::Result<()> {
    match e.reason() {
        Some(h2::Reason::NO_ERROR | h2::Reason::CANCEL) => Ok(()),
        Some(h2::Reason::STREAM_CLOSED) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
        _ => Err(io_error(e)),
    }
}

fn io_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io().unwrap_or_else(|| io::ErrorKind::Other.into())
    } else {
        io::Error::other(e)
    }
}
