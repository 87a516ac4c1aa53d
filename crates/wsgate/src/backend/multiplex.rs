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
use super::upstream::{chosen_protocol, fail, Io};
use bytes::Bytes;
use http::{header, Request};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
/// How often a new connection looks for the upstream's SETTINGS.
const SETTINGS_POLL: Duration = Duration::from_millis(1);

type Sender = SendRequest<Empty<Bytes>>;

/// What the upstream's SETTINGS allow, as last seen by the connection task.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Allowed {
    extended_connect: bool,
    max_streams: usize,
}

struct Conn {
    sender: Sender,
    allowed: tokio::sync::watch::Receiver<Allowed>,
    state: Arc<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// Streams open on this connection (the [`Slot`]s alive).
    streams: AtomicUsize,
    /// A request on it failed (typically after the upstream's GOAWAY):
    /// no new stream goes there, the open ones live on.
    broken: AtomicBool,
}

/// The open HTTP/2 connections to the upstream.
pub struct Pool {
    /// Held while a new connection is dialled, so that a burst of clients
    /// opens one connection, not one each.
    conns: tokio::sync::Mutex<Vec<Conn>>,
    streams_per_conn: usize,
    /// How long a new connection may take to allow extended CONNECT.
    settings_wait: Duration,
    open: Gauge,
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
    pub fn new(streams_per_conn: usize, settings_wait: Duration, open: Gauge) -> Self {
        Pool {
            conns: tokio::sync::Mutex::new(Vec::new()),
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
        let mut conns = self.conns.lock().await;
        let before = conns.len();
        conns.retain(|c| !c.sender.is_closed() && !c.state.broken.load(Ordering::Relaxed));
        if conns.len() != before {
            self.open.set(conns.len() as i64);
        }
        let free = conns
            .iter()
            .map(|c| (c, c.state.streams.load(Ordering::Relaxed)))
            .filter(|(c, n)| *n < self.streams_per_conn.min(c.allowed.borrow().max_streams))
            .min_by_key(|(_, n)| *n);
        if let Some((c, _)) = free {
            return Ok(take(c));
        }
        let (sender, allowed) = self.handshake(dial().await?).await?;
        let conn = Conn {
            sender,
            allowed,
            state: Arc::default(),
        };
        let taken = take(&conn);
        conns.push(conn);
        self.open.set(conns.len() as i64);
        tracing::info!(
            event = "upstream_http2_connected",
            connections = conns.len()
        );
        Ok(taken)
    }

    async fn handshake(
        &self,
        io: Box<dyn Io>,
    ) -> Result<(Sender, tokio::sync::watch::Receiver<Allowed>), Reason> {
        let window =
            STREAM_WINDOW.saturating_mul(u32::try_from(self.streams_per_conn).unwrap_or(u32::MAX));
        let (sender, mut conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            // At most 2^31 - 1 (RFC 9113 6.9.1).
            .initial_connection_window_size(window.min(i32::MAX as u32))
            .max_header_list_size(MAX_HEADER_LIST)
            .keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(PING_TIMEOUT)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(Coalesce::new(io)))
            .await
            .map_err(|e| fail("handshake", &e))?;
        let seen = |c: &hyper::client::conn::http2::Connection<_, _, _>| Allowed {
            extended_connect: c.is_extended_connect_protocol_enabled(),
            max_streams: c.current_max_send_streams(),
        };
        let (tx, mut allowed) = tokio::sync::watch::channel(seen(&conn));
        // The connection task, publishing what the upstream's SETTINGS
        // allow (hyper exposes it on this future, not on the sender). h2
        // reads frames in a task of its own, so this one is woken by
        // requests only: until extended CONNECT is allowed (at most
        // `settings_wait`) a timer wakes it to look.
        let deadline = tokio::time::Instant::now() + self.settings_wait;
        let mut look = Some(Box::pin(tokio::time::sleep(SETTINGS_POLL)));
        tokio::spawn(async move {
            let ended = std::future::poll_fn(|cx| {
                let r = std::pin::Pin::new(&mut conn).poll(cx);
                let now = seen(&conn);
                tx.send_if_modified(|a| std::mem::replace(a, now) != now);
                while let Some(timer) = look.as_mut() {
                    if now.extended_connect || tokio::time::Instant::now() >= deadline {
                        look = None;
                    } else if timer.as_mut().poll(cx).is_ready() {
                        timer
                            .as_mut()
                            .reset(tokio::time::Instant::now() + SETTINGS_POLL);
                    } else {
                        break;
                    }
                }
                r
            })
            .await;
            if let Err(e) = ended {
                tracing::warn!(event = "upstream_error", stage = "http2", error = %e);
            }
        });
        // A client may send `:protocol` only once the server's SETTINGS
        // allowed it (RFC 8441 3); they come first on the connection.
        let enabled =
            tokio::time::timeout(self.settings_wait, allowed.wait_for(|a| a.extended_connect))
                .await
                .is_ok_and(|r| r.is_ok());
        match enabled {
            true => Ok((sender, allowed)),
            false => Err(fail(
                "handshake",
                &"the upstream did not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)",
            )),
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
/// CONNECT (`:protocol websocket`, absolute URI); a `200` accepts it (RFC
/// 8441 5 allows any 2xx; hyper upgrades a `200` only). Returns the stream and the subprotocol the upstream chose, if
/// any was offered.
pub async fn open(
    sender: &mut Sender,
    slot: &Slot,
    req: Request<()>,
) -> Result<(hyper::upgrade::Upgraded, Option<String>), Refused> {
    let offered = req.headers().get(header::SEC_WEBSOCKET_PROTOCOL).cloned();
    let (parts, ()) = req.into_parts();
    let mut resp = match sender
        .send_request(Request::from_parts(parts, Empty::new()))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            slot.discard();
            return Err(Refused::Unanswered(fail("handshake", &e)));
        }
    };
    answered(&mut resp, offered)
        .await
        .map_err(Refused::Answered)
}

async fn answered(
    resp: &mut http::Response<hyper::body::Incoming>,
    offered: Option<http::HeaderValue>,
) -> Result<(hyper::upgrade::Upgraded, Option<String>), Reason> {
    if resp.status() != http::StatusCode::OK {
        return Err(fail("handshake", &format!("status {}", resp.status())));
    }
    let protocol = chosen_protocol(resp.headers(), offered.as_ref())?;
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| fail("handshake", &e))?;
    Ok((upgraded, protocol))
}
