//! The per-connection task: first-message auth, then one select loop that
//! turns what the sockets, the backend, the admin controls and one timer
//! did into events for the pure [`Session`] state machine
//! (wsgate_core::session), and its actions into I/O. It decides nothing:
//! every close carries a [`CloseReason`] the session chose.

use crate::app::{App, Control, Controls, SessionInfo, Slot};
use crate::backend::hub::HubSession;
use crate::backend::upstream::UpstreamWs;
use crate::clock::now_ms;
use crate::outbox::{self, Io, Outbox};
use crate::readahead::ReadAhead;
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use wsgate_core::close_reason::{relayable, CloseReason, PeerClose, WireError};
use wsgate_core::control::{self, Classified};
use wsgate_core::reason::close;
use wsgate_core::session::{
    Action, Event, MessageRate, MonoMillis, Notice, Now, Session, SocketLimits,
};
use wsgate_core::verify::Verified;
use wsgate_core::Transport;

/// Everything the upgrade decided about a new session.
pub struct SessionStart {
    pub id: u64,
    pub ip: IpAddr,
    pub transport: Transport,
    pub verified: Verified,
    /// Held only to be dropped when the session ends: that releases the
    /// registry entry and the per-user count.
    _slot: Slot,
    session: Session,
    control: Arc<Controls>,
    /// The upstream WebSocket, already open (`backend.kind = "upstream"`).
    upstream: Option<Box<UpstreamWs>>,
}

impl SessionStart {
    /// Starts the session's state machine and registers it, before `101`
    /// is sent: from the client's first frame on, the admin API sees it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: &App,
        id: u64,
        ip: IpAddr,
        origin: Option<String>,
        transport: Transport,
        verified: Verified,
        mut slot: Slot,
        upstream: Option<Box<UpstreamWs>>,
    ) -> Self {
        let mut verified = verified;
        keep_needed_claims(app, &mut verified);
        let now = now();
        let session = Session::new(
            app.session_policy,
            socket_limits(app, upstream.is_some()),
            verified.sub.clone(),
            verified.exp_ms,
            now,
        );
        let control = Arc::new(Controls::default());
        slot.attach(
            SessionInfo {
                id,
                sub: verified.sub.clone(),
                sid: verified.sid.clone(),
                jti: verified.jti.clone(),
                ip,
                origin,
                transport: transport.as_str(),
                connected_at: now.wall,
                deadline: session.deadline(),
            },
            control.clone(),
        );
        SessionStart {
            id,
            ip,
            transport,
            verified,
            _slot: slot,
            session,
            control,
            upstream,
        }
    }
}

/// Drops the claims a live session never reads. After the upgrade (CSRF
/// check, upstream headers) only the hub's grants look at claims; a JWT
/// can carry dozens, a map node and strings that every idle socket kept.
fn keep_needed_claims(app: &App, v: &mut Verified) {
    let hub = app.config.backend.kind == crate::config::BackendKind::Hub;
    let needed = |k: &String| hub && app.hub.reads_claim(k);
    if !v.claims.keys().all(needed) {
        // Rebuilt rather than filtered in place: an emptied map frees its node.
        v.claims = std::mem::take(&mut v.claims)
            .into_iter()
            .filter(|(k, _)| needed(k))
            .collect();
    }
}

/// A socket accepted for first-message auth, counted against
/// `limits.max_unauthenticated` until it authenticates or closes.
pub struct Unauthenticated {
    app: Arc<App>,
}

impl Unauthenticated {
    pub fn acquire(app: &Arc<App>) -> Result<Self, wsgate_core::Reason> {
        let cap = app.config.limits.max_unauthenticated as usize;
        if app.unauthenticated.fetch_add(1, Ordering::AcqRel) >= cap {
            app.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            return Err(wsgate_core::Reason::TooManyConnections);
        }
        Ok(Unauthenticated { app: app.clone() })
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.app.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

/// First-message auth (docs/reference.md): the first frame must be
/// `{"type":"auth","token":...}` within `first_message_timeout`; nothing is
/// forwarded before. Returns the session, or `None` once the socket is
/// closed (4001; 4429 for pings past the message rate).
pub async fn first_message<S>(
    app: &Arc<App>,
    ws: &mut WebSocketStream<S>,
    guard: Unauthenticated,
    ip: IpAddr,
    origin: Option<String>,
    request: Option<crate::backend::upstream::ClientRequest>,
) -> Option<SessionStart>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use wsgate_core::Reason;
    let deadline = app.config.auth.first_message_timeout;
    let per_sec = app.config.limits.messages_per_sec;
    let mut rate = MessageRate::new(per_sec, mono_now());
    let outcome = tokio::time::timeout(deadline, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                // Pings may come first, within the message rate (each one
                // costs a pong); anything else is not an auth message.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    if !rate.allow(per_sec, mono_now()) {
                        return Err(NoAuth::Closed(CloseReason::RateLimited));
                    }
                }
                Some(Ok(_)) => return Err(NoAuth::Refused(Reason::MissingToken)),
                // Over max_message_bytes: a failed auth (answered, logged), not a silent drop.
                Some(Err(WsError::Capacity(_))) => {
                    return Err(NoAuth::Refused(Reason::TokenTooLarge))
                }
                None | Some(Err(_)) => return Err(NoAuth::Gone),
            }
        }
    })
    .await
    .unwrap_or(Err(NoAuth::Closed(CloseReason::AuthTimeout)));
    // Decided either way: closing sockets no longer hold the pending cap.
    drop(guard);
    let text = match outcome {
        Ok(t) => t,
        Err(NoAuth::Gone) => return None,
        Err(NoAuth::Refused(reason)) => return fail(app, ws, ip, reason).await,
        Err(NoAuth::Closed(why)) => return refuse(app, ws, ip, why).await,
    };
    // The first message must be an auth message, however it is spelled;
    // one that cannot be read one way only is refused (control.rs).
    let token = match control::classify(text.as_str()) {
        Classified::Auth(Some(t)) if !t.is_empty() => Ok(t),
        Classified::Auth(_) | Classified::Data => Err(Reason::MissingToken),
        Classified::Malformed => Err(Reason::MalformedToken),
    };
    // Like the upgrade, an unknown `kid` may wait for one JWKS refetch.
    let verified = match token {
        Err(r) => Err(r),
        Ok(t) if t.len() > app.config.auth.max_token_bytes => Err(Reason::TokenTooLarge),
        // The same steps as an upgrade: verification, then the revocation
        // check (503-equivalent while the set is not known).
        Ok(t) => app.admission.authenticate(&t).await,
    };
    let verified = match verified {
        Ok(v) => v,
        Err(r) => return fail(app, ws, ip, r).await,
    };
    let slot = match app.acquire_slot_everywhere(&verified.sub).await {
        Ok(s) => s,
        Err(r) => return fail(app, ws, ip, r).await,
    };
    let id = app.next_id();
    let upstream = match &request {
        None => None,
        Some(r) => match crate::backend::upstream::open(
            app.upstream.as_ref(),
            &r.headers,
            r.query.as_deref(),
            &r.forwarding,
            &verified,
            id,
        )
        .await
        {
            Ok((ws, _protocol)) => Some(ws),
            Err(reason) => {
                drop(slot);
                return fail(app, ws, ip, reason).await;
            }
        },
    };
    let start = SessionStart::new(
        app,
        id,
        ip,
        origin,
        Transport::FirstMessage,
        verified,
        slot,
        upstream,
    );
    let ok = Notice::AuthOk {
        exp: start.session.exp_secs(),
    };
    let m = notice_message(ok, start.session.sub());
    if tokio::time::timeout(CLOSE_GRACE, ws.send(m)).await.is_err() {
        return None;
    }
    Some(start)
}

/// How the wait for the first message ended, if not with a text message.
enum NoAuth {
    /// The peer left: nothing to answer.
    Gone,
    /// Answered `auth_fail` with this reason, then closed.
    Refused(wsgate_core::Reason),
    /// Closed unanswered (timeout, rate).
    Closed(CloseReason),
}

/// Answers `auth_fail`, then closes as [`Reason::first_message_close`]
/// says (wsgate_core::Reason).
async fn fail<S>(
    app: &App,
    ws: &mut WebSocketStream<S>,
    ip: IpAddr,
    reason: wsgate_core::Reason,
) -> Option<SessionStart>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let m = notice_message(Notice::AuthFail { reason }, "");
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(m)).await;
    refuse(app, ws, ip, CloseReason::AuthFailed(reason)).await
}

/// Closes a socket that never authenticated, and logs it.
async fn refuse<S>(
    app: &App,
    ws: &mut WebSocketStream<S>,
    ip: IpAddr,
    why: CloseReason,
) -> Option<SessionStart>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(f) = close_frame(why.client(), &None) {
        close_with(ws, f).await;
    }
    app.metrics.close(why.code());
    tracing::info!(
        event = "close",
        code = why.code(),
        reason = why.log_reason(),
        transport = Transport::FirstMessage.as_str(),
        ip = %ip,
    );
    None
}

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The monotonic clock sessions run on (wsgate_core::session::Now): whole
/// milliseconds since the process's first reading.
fn mono_epoch() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

fn mono_now() -> MonoMillis {
    let epoch = mono_epoch();
    let ms = tokio::time::Instant::now()
        .saturating_duration_since(epoch)
        .as_millis();
    MonoMillis::try_from(ms).unwrap_or(MonoMillis::MAX)
}

/// When the timer for `at` fires: a millisecond late, so that neither clock,
/// each read in whole milliseconds, finds it not yet due.
fn mono_instant(at: MonoMillis) -> tokio::time::Instant {
    mono_epoch() + Duration::from_millis(at.saturating_add(1))
}

/// Both clocks, for the session's decisions that are not per frame.
fn now() -> Now {
    Now {
        mono: mono_now(),
        wall: now_ms(),
    }
}

/// The session's keep-alive and traffic limits.
fn socket_limits(app: &App, upstream: bool) -> SocketLimits {
    let l = &app.config.limits;
    let ms = |d: Duration| MonoMillis::try_from(d.as_millis()).unwrap_or(MonoMillis::MAX);
    SocketLimits {
        idle_timeout_ms: ms(l.idle_timeout),
        ping_interval_ms: ms(l.ping_interval),
        messages_per_sec: l.messages_per_sec,
        egress_alert_close: l.egress_alert_close,
        upstream,
    }
}

/// The frame one side gets: the session's own, or the other peer's close
/// relayed (but a reserved code, see [`relayable`]).
fn close_frame(side: PeerClose, peer: &Option<CloseFrame>) -> Option<CloseFrame> {
    match side {
        PeerClose::Send { code, text } => Some(CloseFrame {
            code: CloseCode::from(code),
            reason: Utf8Bytes::from_static(text),
        }),
        PeerClose::Relay => Some(match peer {
            Some(f) if relayable(u16::from(f.code)) => f.clone(),
            _ => CloseFrame {
                code: CloseCode::from(close::NORMAL),
                reason: Utf8Bytes::default(),
            },
        }),
        PeerClose::Skip => None,
    }
}

/// The code of a peer's close (`NO_STATUS`: it carried none).
fn peer_code(f: &Option<CloseFrame>) -> u16 {
    f.as_ref().map_or(close::NO_STATUS, |f| u16::from(f.code))
}

/// Per-session traffic counters for the close line.
#[derive(Default)]
struct Traffic {
    bytes_in: u64,
    bytes_out: u64,
}

/// Queues a data message for the client, with accounting; the egress
/// monitor's verdict goes to the session.
fn to_client(
    app: &App,
    out: &mut Outbox,
    t: &mut Traffic,
    meter: &mut crate::egress::Meter,
    session: &mut Session,
    m: Message,
) {
    let n = m.len() as u64;
    out.push(m);
    t.bytes_out += n;
    app.metrics.messages_out.inc();
    app.metrics.bytes_out.inc_by(n);
    if app.egress.enabled() {
        if let Some(v) = meter.record(&app.egress, session.sub(), n, now_ms()) {
            session.handle(Event::Egress(v), now());
        }
    }
}

/// Whether the client's WebSocket can be replaced by a fresh one over the
/// same stream (on [`Action::Recycle`], in [`run`]): tungstenite keeps its
/// read and write buffers at the largest size any message made them (one
/// 1 MiB message: 2 MiB held for the socket's life), a fresh one starts
/// with the small base buffer again. Only where nothing is lost: the read
/// side at a message boundary (ReadAhead hands out no byte past the current
/// frame, so tungstenite holds no unread input and no partial message),
/// nothing queued, everything (pongs included) flushed at once.
fn recyclable<'a, S>(
    ws: &'a mut WebSocketStream<ReadAhead<S>>,
    out: &'a Outbox,
) -> impl Future<Output = bool> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(move |cx| {
        Poll::Ready(
            !out.busy()
                && ws.get_ref().at_message_boundary()
                && matches!(ws.poll_flush_unpin(cx), Poll::Ready(Ok(()))),
        )
    })
}

/// A fresh WebSocket over the same stream: tungstenite's buffers back at
/// their base size. Only once [`recyclable`] said nothing would be lost.
async fn recycled<S>(
    ws: WebSocketStream<S>,
    role: Role,
    config: WebSocketConfig,
) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(ws.into_inner(), role, Some(config)).await
}

/// The upstream's WebSocket and its queue (`backend.kind = "upstream"`).
type Upstream = (Box<UpstreamWs>, Outbox);

// The select's branch futures below are plain poll_fns: as async fns each
// would keep its arguments twice (they sit in every idle session's future).

fn upstream_io<'a>(
    up: &'a mut Option<Upstream>,
    read: bool,
    backlog: &'a Arc<crate::backlog::Backlog>,
) -> impl Future<Output = Io> + 'a {
    std::future::poll_fn(move |cx| match up {
        Some((ws, out)) => outbox::poll_io(&mut **ws, out, read, backlog, cx),
        None => Poll::Pending,
    })
}

fn next_delivery(
    hub: &mut Option<Box<HubSession>>,
) -> impl Future<Output = Option<Utf8Bytes>> + '_ {
    std::future::poll_fn(move |cx| match hub {
        Some(h) => h.poll_delivery(cx),
        None => Poll::Pending,
    })
}

/// Boxed, and only for hub sessions: the waiter is larger than all the
/// select's other branches together.
type SlowSignal = Option<Pin<Box<tokio::sync::futures::OwnedNotified>>>;

fn slowed(signal: &mut SlowSignal) -> impl Future<Output = ()> + '_ {
    std::future::poll_fn(move |cx| match signal {
        Some(n) => n.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

/// Runs a session until it closes: select → event → [`Session`] → actions.
///
/// Every decision is the session's (wsgate_core::session); this loop only
/// turns what the sockets, the backend, the admin controls and the one
/// timer did into events, and the session's actions into I/O.
///
/// This future is what every idle socket holds, so it is kept small: the
/// socket stays one WebSocket (no split halves behind a lock), `start`'s
/// fields are used in place (a moved-from argument keeps its space in the
/// future), one timer serves all the session's deadlines, and backend state
/// is boxed or absent.
// Not an async fn on purpose: see the comment in the body.
#[allow(clippy::manual_async_fn)]
pub fn run<S>(
    app: Arc<App>,
    mut ws: WebSocketStream<ReadAhead<S>>,
    mut start: SessionStart,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // An async block, not an async fn: an async fn moves its arguments into
    // locals and keeps both copies in the future (~700 bytes here); the
    // block's captures are used in place.
    async move {
        let opened = Instant::now();
        let (id, ip, transport) = (start.id, start.ip, start.transport);
        let SessionStart {
            verified,
            session,
            control,
            upstream,
            ..
        } = &mut start;
        let mut traffic = Traffic::default();
        let metrics = &app.metrics;
        metrics.connections_active.inc();
        // One timer for all the session's deadlines, re-armed only when the
        // earliest moves (not per message).
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed = None;
        // A message over the base buffer crossed the client's socket.
        let mut large_in = false;
        let mut meter = crate::egress::Meter::new(&app.egress);
        let sessions_gauge = metrics.sessions(transport);
        sessions_gauge.inc();
        let mut client_out = Outbox::new();
        let mut up: Option<Upstream> = upstream.take().map(|u| (u, Outbox::new()));
        let relay = app.upstream.as_ref().filter(|_| up.is_some());
        let mut hub = (up.is_none() && app.config.backend.kind == crate::config::BackendKind::Hub)
            .then(|| Box::new(app.hub.session(id, app.config.limits.outgoing_queue)));
        let mut hub_slow: SlowSignal = hub
            .as_ref()
            .map(|h| Box::pin(h.slow_signal().notified_owned()));
        let (reason, peer_close) = 'session: loop {
            if !session.recycle_armed()
                && (std::mem::take(&mut large_in)
                    | client_out.take_large()
                    | up.as_mut().is_some_and(|(_, o)| o.take_large()))
            {
                session.handle(Event::LargeMessage, now());
            }
            let Some(wake) = session.poll_timeout() else {
                break (session.close_reason().unwrap_or(CloseReason::Expired), None);
            };
            if armed != Some(wake) {
                timer.as_mut().reset(mono_instant(wake));
                armed = Some(wake);
            }
            // As before the state machine: notices sent on a timer count in
            // the close line's bytes_out, answers to the client do not.
            let mut timed = false;
            // Backpressure: read a side only while what it produces has room.
            let read_backend = client_out.has_room(&app.backlog);
            let read_client =
                read_backend && up.as_ref().is_none_or(|(_, o)| o.has_room(&app.backlog));
            // Each branch feeds the session; a peer's close frame is kept to
            // be relayed to the other side.
            let peer_close: Option<CloseFrame> = tokio::select! {
                ev = outbox::io(&mut ws, &mut client_out, read_client, &app.backlog), if read_client || client_out.busy() => match ev {
                    Io::Wrote(Ok(())) => {
                        if let Some(h) = hub.as_mut() {
                            h.written();
                        }
                        None
                    }
                    Io::Wrote(Err(_)) | Io::Read(None) => {
                        session.handle(Event::ClientError(WireError::Lost), now());
                        None
                    }
                    Io::Slow => {
                        metrics.slow_clients.inc();
                        session.handle(Event::ClientSlow, now());
                        None
                    }
                    Io::Read(Some(Err(e))) => {
                        session.handle(Event::ClientError(wire_error(&e)), now());
                        None
                    }
                    Io::Read(Some(Ok(Message::Close(f)))) => {
                        // tungstenite queued the answer; it is flushed below.
                        session.handle(Event::ClientClosed { code: peer_code(&f) }, now());
                        f
                    }
                    // Every frame counts against the rate, pings and pongs
                    // too: each costs work here (a pong to write) like a message.
                    Io::Read(Some(Ok(m))) => {
                        large_in |= m.len() > outbox::LARGE;
                        if !session.on_client_frame(mono_now()) {
                            None
                        } else {
                            let data = match m {
                                Message::Text(t) => {
                                    traffic.bytes_in += t.len() as u64;
                                    metrics.messages_in.inc();
                                    metrics.bytes_in.inc_by(t.len() as u64);
                                    if let Some((reply, refreshed)) = control_message(&app, session, verified, id, t.as_str()) {
                                        if let (true, Some(h)) = (refreshed, hub.as_mut()) {
                                            h.recheck(&app.hub, verified);
                                        }
                                        client_out.push(reply);
                                        None
                                    } else if relay.is_some_and(|r| !r.message_allowed(t.as_str())) {
                                        metrics.schema_rejections.inc();
                                        session.handle(Event::SchemaRejected, now());
                                        None
                                    } else {
                                        Some(Message::Text(t))
                                    }
                                }
                                Message::Binary(b) => {
                                    traffic.bytes_in += b.len() as u64;
                                    metrics.messages_in.inc();
                                    metrics.bytes_in.inc_by(b.len() as u64);
                                    Some(Message::Binary(b))
                                }
                                // A ping is answered by tungstenite (the pong
                                // goes out with the next read or write). Not
                                // relayed: the upstream has its own keep-alive,
                                // and relaying would let a client make the
                                // gateway send one ping per ping it gets.
                                _ => None,
                            };
                            let reply = match (data, up.as_mut(), hub.as_mut()) {
                                (None, ..) => None,
                                (Some(data), Some((_, o)), _) => {
                                    o.push(data);
                                    None
                                }
                                (Some(data), None, Some(h)) => {
                                    let answer = match &data {
                                        Message::Text(t) => h.handle(&app.hub, verified, t.as_str()),
                                        // The hub speaks JSON text only.
                                        _ => Some(r#"{"type":"error","id":null,"reason":"bad_request"}"#.to_owned()),
                                    };
                                    answer.map(|a| Message::Text(a.into()))
                                }
                                (Some(data), None, None) => Some(data),
                            };
                            if let Some(m) = reply {
                                to_client(&app, &mut client_out, &mut traffic, &mut meter, session, m);
                            }
                            None
                        }
                    }
                },
                ev = upstream_io(&mut up, read_backend, &app.backlog), if up.as_ref().is_some_and(|(_, o)| read_backend || o.busy()) => match ev {
                    Io::Wrote(Ok(())) => None,
                    Io::Slow => {
                        metrics.slow_upstreams.inc();
                        tracing::warn!(event = "upstream_error", stage = "relay", id, error = "the upstream read nothing within limits.write_timeout");
                        session.handle(Event::UpstreamSlow, now());
                        None
                    }
                    Io::Wrote(Err(_)) | Io::Read(None) => {
                        session.handle(Event::UpstreamError(WireError::Lost), now());
                        None
                    }
                    Io::Read(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => {
                        session.on_upstream_frame();
                        large_in |= m.len() > outbox::LARGE;
                        to_client(&app, &mut client_out, &mut traffic, &mut meter, session, m);
                        None
                    }
                    Io::Read(Some(Ok(Message::Close(f)))) => {
                        session.handle(Event::UpstreamClosed { code: peer_code(&f) }, now());
                        f
                    }
                    // A ping (answered by tungstenite) or a pong: the
                    // upstream is alive; neither is relayed.
                    Io::Read(Some(Ok(_))) => {
                        session.on_upstream_frame();
                        None
                    }
                    Io::Read(Some(Err(e))) => {
                        tracing::warn!(event = "upstream_error", stage = "relay", id, error = %e);
                        // A connection that went away (a reset, EOF without a
                        // close frame, a lost HTTP/2 connection) is lost, as
                        // when it ends cleanly: the client may come back.
                        session.handle(Event::UpstreamError(wire_error(&e)), now());
                        None
                    }
                },
                Some(d) = next_delivery(&mut hub), if read_backend => {
                    to_client(&app, &mut client_out, &mut traffic, &mut meter, session, Message::Text(d));
                    None
                }
                _ = slowed(&mut hub_slow) => {
                    metrics.slow_clients.inc();
                    session.handle(Event::ClientSlow, now());
                    None
                }
                c = control.recv() => {
                    match c {
                        Control::Revoke => session.handle(Event::Revoke, now()),
                        Control::Drain => session.handle(Event::Drain, now()),
                        Control::Reauth => {
                            session.handle(Event::Reauth, now());
                            app.registry.set_deadline(id, session.deadline());
                        }
                    }
                    None
                }
                () = &mut timer => {
                    // Fired: re-armed next time round, whichever it was for.
                    armed = None;
                    timed = true;
                    // Rounds in which the upstream could not be read (the
                    // client's queue full) do not count as its silence.
                    session.handle_timeout(now(), client_out.has_room(&app.backlog));
                    None
                }
            };
            while let Some(action) = session.poll() {
                match action {
                    Action::PingClient => client_out.push(Message::Ping(Default::default())),
                    Action::PingUpstream => {
                        if let Some((_, o)) = up.as_mut() {
                            o.push(Message::Ping(Default::default()));
                        }
                    }
                    Action::Recycle => {
                        let done = recyclable(&mut ws, &client_out).await
                            && match up.as_mut() {
                                None => true,
                                Some((uws, o)) => recyclable(&mut **uws, o).await,
                            };
                        if done {
                            // Both sides at once: a large message grew the
                            // buffers of the socket it crossed on each side.
                            // Boxed: this await's state would otherwise sit
                            // in every session's future.
                            ws = Box::pin(recycled(ws, Role::Server, app.client_ws_config)).await;
                            metrics.ws_recycles.inc();
                            if let Some((uws, o)) = up.take() {
                                let fresh =
                                    Box::pin(recycled(*uws, Role::Client, app.client_ws_config))
                                        .await;
                                up = Some((Box::new(fresh), o));
                                metrics.ws_recycles.inc();
                            }
                        }
                        session.handle(Event::Recycled { done }, now());
                    }
                    Action::Notify(n) => {
                        let m = notice_message(n, session.sub());
                        if timed {
                            traffic.bytes_out += m.len() as u64;
                        }
                        client_out.push(m);
                    }
                    Action::EgressAlert { bytes } => {
                        metrics.egress_alerts.inc();
                        tracing::warn!(
                            event = "egress_alert",
                            sub = session.sub(),
                            bytes_this_minute = bytes,
                            limit = app.egress.limit(),
                            action = if app.config.limits.egress_alert_close {
                                "close"
                            } else {
                                "log"
                            },
                        );
                    }
                    Action::Close(reason) => {
                        if reason == CloseReason::UpstreamSilent {
                            tracing::warn!(
                                event = "upstream_error",
                                stage = "keepalive",
                                id,
                                error = "no frame and no pong within idle_timeout"
                            );
                        }
                        break 'session (reason, peer_close);
                    }
                }
            }
        };
        if let Some(h) = hub.as_mut() {
            h.leave(&app.hub);
        }
        // A peer that closed in order gets what was queued for it first.
        let grace = if reason.flush() {
            CLOSE_GRACE
        } else {
            Duration::ZERO
        };
        let client_frame = close_frame(reason.client(), &peer_close);
        let upstream_frame = close_frame(reason.upstream(), &peer_close);
        drop(peer_close);
        // Boxed: the closing handshakes' state is large and needed once per
        // socket; inline it would sit in every idle session's future.
        Box::pin(async move {
            let client_side = async {
                client_out.finish(&mut ws, grace).await;
                match client_frame {
                    Some(f) => close_with(&mut ws, f).await,
                    // Flush tungstenite's answer to the client's close.
                    None => {
                        let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
                    }
                }
            };
            let upstream_side = async {
                let Some((mut uws, mut out)) = up else {
                    return;
                };
                out.finish(&mut *uws, grace).await;
                match upstream_frame {
                    Some(f) => close_with(&mut uws, f).await,
                    None => {
                        let _ = tokio::time::timeout(CLOSE_GRACE, uws.flush()).await;
                    }
                }
            };
            tokio::join!(client_side, upstream_side);
        })
        .await;
        metrics.connections_active.dec();
        sessions_gauge.dec();
        metrics.close(reason.code());
        tracing::info!(
            event = "close",
            id = id,
            code = reason.code(),
            reason = reason.log_reason(),
            sub = verified.sub.as_str(),
            transport = transport.as_str(),
            ip = %ip,
            duration_ms = opened.elapsed().as_millis() as u64,
            bytes_in = traffic.bytes_in,
            bytes_out = traffic.bytes_out,
        );
        // Last: the slot (registry entry, per-user count) goes with the session.
        drop(start);
    }
}

/// Consumes `{"type":"auth",...}` (docs/reference.md); other text is data.
/// A successful refresh replaces the session's identity: its claims (fewer
/// roles apply at once), `jti` and `sid` (revocations of the new token hit).
/// Returns the answer and whether the identity changed.
fn control_message(
    app: &App,
    session: &mut Session,
    verified: &mut Verified,
    id: u64,
    text: &str,
) -> Option<(Message, bool)> {
    use wsgate_core::Reason;
    // Recognised on the parsed JSON, escapes and all; a cheap test inside
    // keeps parsing off the relay path (control.rs).
    let token = match control::classify(text) {
        Classified::Data => return None,
        // Never forwarded either: answered like any failed refresh.
        Classified::Malformed => Err(Reason::MalformedToken),
        Classified::Auth(t) => Ok(t),
    };
    // Only now: no clock read per relayed message.
    let now = now();
    let result = match token.as_ref().map(|t| t.as_deref()) {
        Err(r) => Err(*r),
        Ok(None | Some("")) => Err(Reason::MissingToken),
        Ok(Some(t)) if t.len() > app.config.auth.max_token_bytes => Err(Reason::TokenTooLarge),
        // Refused while the revocation set is not known, like an upgrade.
        Ok(Some(t)) => app
            .admission
            .keys
            .verify(t, now.wall)
            .and_then(|v| app.admission.not_revoked(v)),
    };
    let notice = session.refresh(result.as_ref().map_err(|r| *r), now);
    let refreshed = matches!(notice, Notice::AuthOk { .. });
    if let (true, Ok(v)) = (refreshed, result) {
        *verified = v;
        keep_needed_claims(app, verified);
        app.registry.update(id, verified, session.deadline());
    }
    Some((notice_message(notice, session.sub()), refreshed))
}

/// The JSON message of a notice (`sub`: the session's, for `auth_ok`).
fn notice_message(n: Notice, sub: &str) -> Message {
    let v = match n {
        Notice::Expiring { exp } => serde_json::json!({"type": "auth_expiring", "exp": exp}),
        Notice::AuthOk { exp } => serde_json::json!({"type": "auth_ok", "sub": sub, "exp": exp}),
        Notice::AuthFail { reason } => {
            serde_json::json!({"type": "auth_fail", "reason": reason.code()})
        }
    };
    Message::Text(v.to_string().into())
}

/// What a read or write error means for the socket.
fn wire_error(e: &WsError) -> WireError {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => WireError::MessageTooBig,
        WsError::Capacity(_) => WireError::FrameTooBig,
        WsError::Utf8(_) => WireError::InvalidUtf8,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => WireError::Lost,
        WsError::Protocol(_) => WireError::Protocol,
        _ => WireError::Lost,
    }
}

/// Sends a close frame and waits briefly for the peer's answer.
async fn close_with<S>(ws: &mut WebSocketStream<S>, frame: CloseFrame)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            // Read until the peer's close (or EOF) completes the handshake.
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}
