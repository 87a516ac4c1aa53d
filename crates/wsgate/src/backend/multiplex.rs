//! Upstream WebSockets as streams of shared HTTP/2 connections (RFC 8441
//! extended CONNECT, `backend.upstream_http2 = true`).
//!
//! Over HTTP/1.1 every proxied client costs an upstream TCP connection:
//! a socket and a file in the gateway and in the upstream, a TCP handshake
//! and teardown per client. Over HTTP/2 a client's upstream WebSocket is a
//! stream on a connection that stays open: opening it is one HEADERS frame
//! each way, closing it an END_STREAM, and at most
//! `backend.upstream_http2_streams` clients share a connection.
//!
//! Flow control bounds what a stalled stream holds: each stream's window is
//! [`STREAM_WINDOW`], the connection's window the sum of its streams', so a
//! client that stops reading stalls its own stream and never its
//! neighbours on the same connection.

use super::coalesce::Coalesce;
use super::h2stream::Stream;
use super::upstream::{chosen_protocol, fail, Io};
use crate::tasks::Tasks;
use bytes::Bytes;
use http::{header, Request};
use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wsgate_core::Reason;

/// Bytes the upstream may send on one stream before the gateway has
/// passed them on to the client (HTTP/2's default is 64 KiB; larger keeps
/// a 1 MiB message from taking 16 window round trips).
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// While it carries streams, a connection is pinged this often and dropped
/// (its streams closed 1013 like a lost upstream socket) if the answer
/// takes longer than [`PING_TIMEOUT`]: a dead upstream host is noticed
/// without traffic.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Request and response headers above this are refused (the client's
/// upgrade request is at most 16 KiB anyway).
const MAX_HEADER_LIST: u32 = 32 * 1024;

type Sender = h2::client::SendRequest<Bytes>;

struct Conn {
    sender: Sender,
    state: Arc<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// Streams open on this connection (the [`Slot`]s alive).
    streams: AtomicUsize,
    /// The connection ended, or a request on it failed (typically after
    /// the upstream's GOAWAY): no new stream goes there, the open ones
    /// live on as long as it does.
    broken: AtomicBool,
}

/// The open HTTP/2 connections to the upstream.
pub struct Pool {
    /// Never held across an await: a client that finds a free stream takes
    /// it at once, whatever dial is in progress.
    conns: std::sync::Mutex<Vec<Conn>>,
    /// Held while a new connection is dialled, so that a burst of clients
    /// that find every connection full opens one connection, not one each.
    dialing: tokio::sync::Mutex<()>,
    streams_per_conn: usize,
    /// How long a new connection may take to allow extended CONNECT.
    settings_wait: Duration,
    open: Gauge,
    /// Where the connection tasks run (stopped at the end of a shutdown).
    tasks: Tasks,
}

/// One stream's place on a connection, given back when dropped (with the
/// upstream WebSocket that holds it).
pub struct Slot(Arc<ConnState>);

impl Slot {
    /// No new streams on this slot's connection.
    fn discard(&self) {
        self.0.broken.store(true, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    pub fn new(
        streams_per_conn: usize,
        settings_wait: Duration,
        open: Gauge,
        tasks: Tasks,
    ) -> Self {
        Pool {
            tasks,
            conns: std::sync::Mutex::new(Vec::new()),
            dialing: tokio::sync::Mutex::new(()),
            streams_per_conn: streams_per_conn.max(1),
            settings_wait,
            open,
        }
    }

    /// A connection with a free stream, the least busy one; when every open
    /// connection is full (our limit or the upstream's
    /// SETTINGS_MAX_CONCURRENT_STREAMS), a new one over `dial()`.
    pub async fn acquire<F, Fut>(&self, dial: F) -> Result<(Sender, Slot), Reason>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Box<dyn Io>, Reason>>,
    {
        if let Some(taken) = self.free_stream() {
            return Ok(taken);
        }
        // Every connection is full: one dial at a time. Whoever waited
        // for the previous one looks again first; it may have made room.
        let _dialing = self.dialing.lock().await;
        if let Some(taken) = self.free_stream() {
            return Ok(taken);
        }
        let conn = self.handshake(dial().await?).await?;
        let taken = take(&conn);
        let mut conns = self.lock();
        conns.push(conn);
        self.open.set(conns.len() as i64);
        tracing::info!(
            event = "upstream_http2_connected",
            connections = conns.len()
        );
        Ok(taken)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream on the least busy connection that has one free, if any;
    /// forgets broken connections on the way.
    fn free_stream(&self) -> Option<(Sender, Slot)> {
        let mut conns = self.lock();
        let before = conns.len();
        conns.retain(|c| !c.state.broken.load(Ordering::Relaxed));
        if conns.len() != before {
            self.open.set(conns.len() as i64);
        }
        conns
            .iter()
            .map(|c| (c, c.state.streams.load(Ordering::Relaxed)))
            .filter(|(c, n)| {
                *n < self
                    .streams_per_conn
                    .min(c.sender.current_max_send_streams())
            })
            .min_by_key(|(_, n)| *n)
            .map(|(c, _)| take(c))
    }

    async fn handshake(&self, io: Box<dyn Io>) -> Result<Conn, Reason> {
        let window =
            STREAM_WINDOW.saturating_mul(u32::try_from(self.streams_per_conn).unwrap_or(u32::MAX));
        let (sender, mut conn) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(STREAM_WINDOW)
            // At most 2^31 - 1 (RFC 9113 6.9.1).
            .initial_connection_window_size(window.min(i32::MAX as u32))
            .max_header_list_size(MAX_HEADER_LIST)
            .handshake::<_, Bytes>(Coalesce::new(io))
            .await
            .map_err(|e| fail("handshake", &e))?;
        let state = Arc::new(ConnState::default());
        let pings = keepalive(conn.ping_pong(), state.clone());
        let ended = state.clone();
        // A client may send `:protocol` only once the server's SETTINGS
        // allowed it (RFC 8441 3). h2 takes SETTINGS in while the
        // connection is polled and wakes nobody for them, so the
        // connection task looks after each poll and says when.
        let (enabled_tx, enabled) = tokio::sync::oneshot::channel::<()>();
        let probe = sender.clone();
        // The connection task: h2 reads and writes frames only while it is
        // polled. It ends with the connection, or when a ping goes
        // unanswered (dropping the connection fails its streams).
        self.tasks.spawn_loop(async move {
            let mut enabled_tx = Some(enabled_tx);
            let driven = std::future::poll_fn(|cx| {
                let r = std::pin::Pin::new(&mut conn).poll(cx);
                if enabled_tx.is_some() && probe.is_extended_connect_protocol_enabled() {
                    if let Some(tx) = enabled_tx.take() {
                        let _ = tx.send(());
                    }
                }
                r
            });
            tokio::pin!(pings);
            let r = tokio::select! {
                r = driven => r.map_err(|e| e.to_string()),
                e = &mut pings => Err(e),
            };
            ended.broken.store(true, Ordering::Relaxed);
            if let Err(e) = r {
                tracing::warn!(event = "upstream_error", stage = "http2", error = %e);
            }
        });
        match tokio::time::timeout(self.settings_wait, enabled).await {
            Ok(Ok(())) => Ok(Conn { sender, state }),
            // Timed out, or the connection ended first.
            _ => {
                state.broken.store(true, Ordering::Relaxed);
                Err(fail(
                    "handshake",
                    &"the upstream did not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)",
                ))
            }
        }
    }
}

/// Pings every [`PING_EVERY`] while the connection carries streams;
/// returns why the connection should be dropped (a ping unanswered for
/// [`PING_TIMEOUT`]). A connection that fails on its own is reported by
/// its task, so a failed ping waits for that.
async fn keepalive(pings: Option<h2::PingPong>, state: Arc<ConnState>) -> String {
    let Some(mut pings) = pings else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(PING_EVERY).await;
        if state.streams.load(Ordering::Relaxed) == 0 {
            continue;
        }
        match tokio::time::timeout(PING_TIMEOUT, pings.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return format!("no answer to a ping within {PING_TIMEOUT:?}"),
        }
    }
}

fn take(c: &Conn) -> (Sender, Slot) {
    c.state.streams.fetch_add(1, Ordering::Relaxed);
    (c.sender.clone(), Slot(c.state.clone()))
}

/// Why a stream did not open.
pub enum Refused {
    /// The request never got an answer (a connection closing after the
    /// upstream's GOAWAY, a reset stream): worth one more try on another
    /// connection.
    Unanswered(Reason),
    /// The upstream answered, and not with a WebSocket.
    Answered(Reason),
}

/// Opens one WebSocket stream on `slot`'s connection: `req` is an extended
/// CONNECT (`:protocol websocket`, absolute URI); a `200` accepts it, as
/// docs/backends.md states (RFC 8441 5 would allow any 2xx; servers answer
/// 200). Returns the stream and the subprotocol the upstream chose, if any
/// was offered.
pub async fn open(
    sender: &mut Sender,
    slot: &Slot,
    req: Request<()>,
) -> Result<(Stream, Option<String>), Refused> {
    let offered = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    // Unanswered: the connection takes no new streams, unless only this
    // stream was reset (e.g. REFUSED_STREAM).
    let unanswered = |e: h2::Error| {
        if !e.is_reset() {
            slot.discard();
        }
        Refused::Unanswered(fail("handshake", &e))
    };
    std::future::poll_fn(|cx| sender.poll_ready(cx))
        .await
        .map_err(unanswered)?;
    let (resp, send) = sender.send_request(req, false).map_err(unanswered)?;
    let resp = resp.await.map_err(unanswered)?;
    if resp.status() != http::StatusCode::OK {
        // Dropping `send` resets the stream.
        return Err(Refused::Answered(fail(
            "handshake",
            &format!("status {}", resp.status()),
        )));
    }
    let protocol = chosen_protocol(resp.headers(), offered.as_ref()).map_err(Refused::Answered)?;
    Ok((Stream::new(send, resp.into_body()), protocol))
}
