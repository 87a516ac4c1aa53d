//! The per-connection task: one select loop over client frames and the
//! session's timers, driven by the pure [`Session`] state machine.

use crate::app::{App, Control, Controls, SessionInfo, Slot};
use crate::backend::hub::HubSession;
use crate::backend::upstream::UpstreamWs;
use crate::clock::{now_ms, until};
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
use wsgate_core::control::{self, Classified};
use wsgate_core::reason::close;
use wsgate_core::session::{Action, Session};
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
        let now = now_ms();
        let session = Session::new(
            app.session_policy,
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
                connected_at: now,
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

/// First-message auth (SPEC 5.2): the first frame must be
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
    let mut rate = MessageRate::new(app.config.limits.messages_per_sec);
    let outcome = tokio::time::timeout(deadline, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                // Pings may come first, within the message rate (each one
                // costs a pong); anything else is not an auth message.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    if !rate.allow(tokio::time::Instant::now()) {
                        return Err(NoAuth::Closed(close::RATE_LIMITED, "message rate exceeded"));
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
    .unwrap_or(Err(NoAuth::Closed(
        close::AUTH_FAILED,
        "authentication timeout",
    )));
    // Decided either way: closing sockets no longer hold the pending cap.
    drop(guard);
    let text = match outcome {
        Ok(t) => t,
        Err(NoAuth::Gone) => return None,
        Err(NoAuth::Refused(reason)) => return fail(app, ws, ip, reason).await,
        Err(NoAuth::Closed(code, reason)) => {
            close_with(ws, frame(code, reason.into())).await;
            log_unauthenticated_close(app, ip, code, reason);
            return None;
        }
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
    let ok = Action::SendAuthOk {
        sub: start.verified.sub.clone(),
        exp: start.session.exp_secs(),
    };
    if let Some(m) = action_message(&ok) {
        if tokio::time::timeout(CLOSE_GRACE, ws.send(m)).await.is_err() {
            return None;
        }
    }
    Some(start)
}

/// How the wait for the first message ended, if not with a text message.
enum NoAuth {
    /// The peer left: nothing to answer.
    Gone,
    /// Answered `auth_fail` with this reason, then closed 4001.
    Refused(wsgate_core::Reason),
    /// Closed with this code and reason, unanswered (timeout, rate).
    Closed(u16, &'static str),
}

/// Answers `auth_fail` and closes 4001.
async fn fail<S>(
    app: &App,
    ws: &mut WebSocketStream<S>,
    ip: IpAddr,
    reason: wsgate_core::Reason,
) -> Option<SessionStart>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(m) = action_message(&Action::SendAuthFail { reason }) {
        let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(m)).await;
    }
    let (code, text) = reason.first_message_close();
    close_with(ws, frame(code, text.into())).await;
    log_unauthenticated_close(app, ip, code, reason.code());
    None
}

/// The close line of a socket that never authenticated.
fn log_unauthenticated_close(app: &App, ip: IpAddr, code: u16, reason: &str) {
    app.metrics.close(code);
    tracing::info!(
        event = "close",
        code,
        reason,
        transport = Transport::FirstMessage.as_str(),
        ip = %ip,
    );
}

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Feeds the egress monitor; logs and counts an alert once per user and
/// minute. Returns whether this socket must close (`egress_alert_close`).
fn egress_exceeded(app: &App, meter: &mut crate::egress::Meter, sub: &str, n: u64) -> bool {
    use crate::egress::Verdict;
    match meter.record(&app.egress, sub, n, now_ms()) {
        None | Some(Verdict::Ok) => false,
        Some(Verdict::Alert { bytes }) => {
            app.metrics.egress_alerts.inc();
            tracing::warn!(
                event = "egress_alert",
                sub,
                bytes_this_minute = bytes,
                limit = app.egress.limit(),
                action = if app.config.limits.egress_alert_close {
                    "close"
                } else {
                    "log"
                },
            );
            app.config.limits.egress_alert_close
        }
        Some(Verdict::Over) => app.config.limits.egress_alert_close,
    }
}

/// Per-socket message rate: `per_sec` with a burst of twice that (SPEC 2).
struct MessageRate {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl MessageRate {
    fn new(per_sec: u32) -> Self {
        let per_sec = f64::from(per_sec);
        MessageRate {
            per_sec,
            burst: per_sec * 2.0,
            tokens: per_sec * 2.0,
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes one message's token; `false` when the rate is exceeded
    /// (the config guarantees a rate above 0).
    fn allow(&mut self, now: tokio::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Why the session ended: the log line's code and reason, and the close
/// frames still to send on each side.
struct Ended {
    code: u16,
    reason: &'static str,
    /// Close frame for the client; `None` when the client is gone or has
    /// already closed (tungstenite answered its close).
    client: Option<CloseFrame>,
    /// Close frame for the upstream; `None` when it closed first.
    upstream: Option<CloseFrame>,
    /// Deliver what is queued before closing (a peer closed in order).
    flush: bool,
}

impl Ended {
    /// The gateway ends the session: both sides get `code`.
    fn by_gateway(code: u16, reason: &'static str) -> Self {
        Ended {
            code,
            reason,
            client: Some(frame(code, reason.into())),
            upstream: Some(frame(code, reason.into())),
            flush: false,
        }
    }

    /// The client went away without a close frame.
    fn client_lost() -> Self {
        Ended {
            code: 1006,
            reason: "connection lost",
            client: None,
            upstream: Some(frame(close::GOING_AWAY, "client gone".into())),
            flush: false,
        }
    }
}

fn frame(code: u16, reason: Utf8Bytes) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason,
    }
}

/// A close received from one peer, as relayed to the other: the reserved
/// codes (1005 no code, 1006, 1015) are never sent on the wire.
fn relayed(f: &Option<CloseFrame>) -> CloseFrame {
    match f {
        Some(f) if !matches!(u16::from(f.code), 1005 | 1006 | 1015) => f.clone(),
        _ => frame(close::NORMAL, Utf8Bytes::default()),
    }
}

/// Per-session traffic counters for the close line.
#[derive(Default)]
struct Traffic {
    bytes_in: u64,
    bytes_out: u64,
}

/// Queues a data message for the client, with accounting and the egress
/// monitor; returns why the session must end, if it must.
fn to_client(
    app: &App,
    out: &mut Outbox,
    t: &mut Traffic,
    meter: &mut crate::egress::Meter,
    sub: &str,
    m: Message,
) -> Option<Ended> {
    let n = m.len() as u64;
    out.push(m);
    t.bytes_out += n;
    app.metrics.messages_out.inc();
    app.metrics.bytes_out.inc_by(n);
    egress_exceeded(app, meter, sub, n).then(|| Ended::by_gateway(close::POLICY, "egress limit"))
}

/// How long a socket that carried a large message (over tungstenite's base
/// buffer) must be quiet before its WebSocket is recycled.
const RECYCLE_AFTER: Duration = Duration::from_secs(1);

/// Whether the client's WebSocket can be replaced by a fresh one over the
/// same stream (see the timer branch in [`run`]): tungstenite keeps its
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

/// Runs a session until it closes.
///
/// This future is what every idle socket holds, so it is kept small: the
/// socket stays one WebSocket (no split halves behind a lock), `start`'s
/// fields are used in place (a moved-from argument keeps its space in the
/// future), one timer serves the deadline, the warning and the pings, and
/// backend state is boxed or absent.
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
        let limits = &app.config.limits;
        let mut rate = MessageRate::new(limits.messages_per_sec);
        // One timer for the session's deadline/warning and the next ping,
        // re-armed only when one of them moves (not per message).
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        // Re-armed when the session's wake-up moves; set to None whenever
        // next_ping or recycle_at move.
        let mut armed_for = None;
        let mut next_ping = tokio::time::Instant::now() + limits.ping_interval;
        // When to give back the buffers a large message grew (see recycle).
        let mut recycle_at: Option<tokio::time::Instant> = None;
        let mut large_in = false;
        let mut last_seen = tokio::time::Instant::now();
        // Upstream keep-alive: ping rounds since the upstream last sent
        // anything (a message, a pong). Counted, not timed: no clock read
        // per relayed message.
        let mut upstream_quiet: u32 = 0;
        let mut meter = crate::egress::Meter::new(&app.egress);
        let sessions_gauge = metrics.sessions(transport);
        sessions_gauge.inc();
        let mut client_out = Outbox::new();
        let mut up: Option<Upstream> = upstream.take().map(|u| (u, Outbox::new()));
        let relay = app.upstream.as_ref().filter(|_| up.is_some());
        let mut hub = (up.is_none() && app.config.backend.kind == crate::config::BackendKind::Hub)
            .then(|| Box::new(app.hub.session(id, limits.outgoing_queue)));
        let mut hub_slow: SlowSignal = hub
            .as_ref()
            .map(|h| Box::pin(h.slow_signal().notified_owned()));
        let mut ended = loop {
            let Some(wake) = session.next_wakeup() else {
                break Ended::by_gateway(close::EXPIRED, "token expired");
            };
            if recycle_at.is_none()
                && (std::mem::take(&mut large_in)
                    | client_out.take_large()
                    | up.as_mut().is_some_and(|(_, o)| o.take_large()))
            {
                recycle_at = Some(tokio::time::Instant::now() + RECYCLE_AFTER);
                armed_for = None;
            }
            if armed_for != Some(wake) {
                let deadline =
                    tokio::time::Instant::now() + until(wake, now_ms()) + Duration::from_millis(1);
                let at = deadline.min(next_ping).min(recycle_at.unwrap_or(next_ping));
                timer.as_mut().reset(at);
                armed_for = Some(wake);
            }
            // Backpressure: read a side only while what it produces has room.
            let read_backend = client_out.has_room(&app.backlog);
            let read_client =
                read_backend && up.as_ref().is_none_or(|(_, o)| o.has_room(&app.backlog));
            tokio::select! {
                ev = outbox::io(&mut ws, &mut client_out, read_client, &app.backlog), if read_client || client_out.busy() => {
                    let msg = match ev {
                        Io::Wrote(Ok(())) => {
                            if let Some(h) = hub.as_mut() {
                                h.written();
                            }
                            continue;
                        }
                        Io::Wrote(Err(_)) => break Ended::client_lost(),
                        Io::Slow => {
                            metrics.slow_clients.inc();
                            break Ended {
                                upstream: Some(frame(close::TRY_AGAIN_LATER, "client slow".into())),
                                ..Ended::by_gateway(close::TRY_AGAIN_LATER, "slow consumer")
                            };
                        }
                        Io::Read(msg) => msg,
                    };
                    last_seen = tokio::time::Instant::now();
                    large_in |= matches!(&msg, Some(Ok(m)) if m.len() > outbox::LARGE);
                    // Every frame counts, pings and pongs too: each costs
                    // work here (a ping, a pong to write) like a message.
                    if matches!(&msg, Some(Ok(m)) if !m.is_close()) && !rate.allow(last_seen) {
                        break Ended::by_gateway(close::RATE_LIMITED, "message rate exceeded");
                    }
                    let data = match msg {
                        None => break Ended::client_lost(),
                        Some(Ok(Message::Close(f))) => {
                            // tungstenite queued the answer; it is flushed below.
                            break Ended {
                                code: f.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005),
                                reason: "closed by client",
                                client: None,
                                upstream: Some(relayed(&f)),
                                flush: true,
                            };
                        }
                        // Answered by tungstenite (the pong goes out with the
                        // next read or write). Not relayed: the upstream has
                        // its own keep-alive, and relaying would let a client
                        // make the gateway send one ping per ping it gets.
                        Some(Ok(Message::Ping(_))) => continue,
                        Some(Ok(Message::Text(t))) => {
                            traffic.bytes_in += t.len() as u64;
                            metrics.messages_in.inc();
                            metrics.bytes_in.inc_by(t.len() as u64);
                            if let Some((reply, refreshed)) = control_message(&app, session, verified, id, t.as_str()) {
                                if let (true, Some(h)) = (refreshed, hub.as_mut()) {
                                    h.recheck(&app.hub, verified);
                                }
                                client_out.push(reply);
                                continue;
                            }
                            if relay.is_some_and(|r| !r.message_allowed(t.as_str())) {
                                metrics.schema_rejections.inc();
                                break Ended::by_gateway(close::INVALID_PAYLOAD, "message does not match the schema");
                            }
                            Message::Text(t)
                        }
                        Some(Ok(Message::Binary(b))) => {
                            traffic.bytes_in += b.len() as u64;
                            metrics.messages_in.inc();
                            metrics.bytes_in.inc_by(b.len() as u64);
                            Message::Binary(b)
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            let (code, reason) = error_close(&e);
                            break if code == 1006 {
                                Ended::client_lost()
                            } else {
                                Ended::by_gateway(code, reason)
                            };
                        }
                    };
                    let reply = if let Some((_, o)) = up.as_mut() {
                        o.push(data);
                        None
                    } else if let Some(h) = hub.as_mut() {
                        let answer = match &data {
                            Message::Text(t) => h.handle(&app.hub, verified, t.as_str()),
                            // The hub speaks JSON text only.
                            _ => Some(r#"{"type":"error","id":null,"reason":"bad_request"}"#.to_owned()),
                        };
                        answer.map(|a| Message::Text(a.into()))
                    } else {
                        Some(data)
                    };
                    if let Some(m) = reply {
                        if let Some(e) = to_client(&app, &mut client_out, &mut traffic, &mut meter, &verified.sub, m) {
                            break e;
                        }
                    }
                }
                ev = upstream_io(&mut up, read_backend, &app.backlog), if up.as_ref().is_some_and(|(_, o)| read_backend || o.busy()) => match ev {
                    Io::Wrote(Ok(())) => {}
                    Io::Slow => {
                        metrics.slow_upstreams.inc();
                        tracing::warn!(event = "upstream_error", stage = "relay", id, error = "the upstream read nothing within limits.write_timeout");
                        break Ended {
                            upstream: Some(frame(close::TRY_AGAIN_LATER, "slow consumer".into())),
                            ..Ended::by_gateway(close::TRY_AGAIN_LATER, "upstream slow")
                        };
                    }
                    Io::Wrote(Err(_)) => {
                        break Ended {
                            upstream: None,
                            ..Ended::by_gateway(close::TRY_AGAIN_LATER, "upstream lost")
                        };
                    }
                    Io::Read(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => {
                        upstream_quiet = 0;
                        large_in |= m.len() > outbox::LARGE;
                        if let Some(e) = to_client(&app, &mut client_out, &mut traffic, &mut meter, &verified.sub, m) {
                            break e;
                        }
                    }
                    Io::Read(Some(Ok(Message::Close(f)))) => {
                        break Ended {
                            code: f.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005),
                            reason: "closed by upstream",
                            client: Some(relayed(&f)),
                            upstream: None,
                            flush: true,
                        };
                    }
                    // A ping (answered by tungstenite) or a pong: the
                    // upstream is alive; neither is relayed.
                    Io::Read(Some(Ok(_))) => upstream_quiet = 0,
                    Io::Read(None) => {
                        break Ended {
                            upstream: None,
                            ..Ended::by_gateway(close::TRY_AGAIN_LATER, "upstream lost")
                        };
                    }
                    Io::Read(Some(Err(e))) => {
                        tracing::warn!(event = "upstream_error", stage = "relay", id, error = %e);
                        let (code, reason) = error_close(&e);
                        if code == 1006 {
                            // The connection went away (a reset, EOF without a
                            // close frame, a lost HTTP/2 connection): as when it
                            // ends cleanly, the client may come back.
                            break Ended {
                                upstream: None,
                                ..Ended::by_gateway(close::TRY_AGAIN_LATER, "upstream lost")
                            };
                        }
                        break Ended {
                            upstream: Some(frame(code, reason.into())),
                            client: Some(frame(close::INTERNAL, "upstream error".into())),
                            ..Ended::by_gateway(close::INTERNAL, "upstream error")
                        };
                    }
                },
                Some(d) = next_delivery(&mut hub), if read_backend => {
                    if let Some(e) = to_client(&app, &mut client_out, &mut traffic, &mut meter, &verified.sub, Message::Text(d)) {
                        break e;
                    }
                }
                _ = slowed(&mut hub_slow) => {
                    metrics.slow_clients.inc();
                    break Ended::by_gateway(close::TRY_AGAIN_LATER, "slow consumer");
                }
                c = control.recv() => match c {
                    Control::Revoke => break Ended::by_gateway(close::REVOKED, "session revoked"),
                    Control::Drain => break Ended::by_gateway(close::GOING_AWAY, "server shutting down"),
                    Control::Reauth => {
                        if let Some(m) = session.force_reauth(now_ms()).as_ref().and_then(action_message) {
                            app.registry.set_deadline(id, session.deadline());
                            client_out.push(m);
                        }
                    }
                },
                () = &mut timer => {
                    // Fired: re-armed next time round, whichever it was for.
                    armed_for = None;
                    let now = tokio::time::Instant::now();
                    if now >= next_ping {
                        if last_seen.elapsed() >= limits.idle_timeout {
                            break Ended::by_gateway(close::IDLE, "idle timeout");
                        }
                        if let Some((_, o)) = up.as_mut() {
                            // Rounds in which we could not read it (the
                            // client's queue full) do not count against it.
                            if client_out.has_room(&app.backlog) {
                                upstream_quiet = upstream_quiet.saturating_add(1);
                            }
                            // The current round is not over: silent for at
                            // least (quiet - 1) whole intervals.
                            if limits
                                .ping_interval
                                .checked_mul(upstream_quiet.saturating_sub(1))
                                .is_none_or(|silent| silent >= limits.idle_timeout)
                            {
                                tracing::warn!(event = "upstream_error", stage = "keepalive", id, error = "no frame and no pong within idle_timeout");
                                break Ended {
                                    upstream: None,
                                    ..Ended::by_gateway(close::TRY_AGAIN_LATER, "upstream lost")
                                };
                            }
                            o.push(Message::Ping(Default::default()));
                        }
                        // A peer that does not read is caught by write_timeout
                        // (outbox.rs) once something waits for it; one that reads
                        // nothing at all, by idle_timeout too.
                        client_out.push(Message::Ping(Default::default()));
                        next_ping = now + limits.ping_interval;
                    }
                    if recycle_at.is_some_and(|t| now >= t) {
                        recycle_at = if last_seen.elapsed() < RECYCLE_AFTER {
                            // Still talking: wait for a quiet second.
                            Some(last_seen + RECYCLE_AFTER)
                        } else if recyclable(&mut ws, &client_out).await
                            && match up.as_mut() {
                                None => true,
                                Some((uws, o)) => recyclable(&mut **uws, o).await,
                            }
                        {
                            // Both sides at once: a large message grew the
                            // buffers of the socket it crossed on each side.
                            // Boxed: this await's state would otherwise sit
                            // in every session's future.
                            ws = Box::pin(recycled(ws, Role::Server, app.client_ws_config)).await;
                            metrics.ws_recycles.inc();
                            if let Some((uws, o)) = up.take() {
                                let fresh = Box::pin(recycled(*uws, Role::Client, app.client_ws_config)).await;
                                up = Some((Box::new(fresh), o));
                                metrics.ws_recycles.inc();
                            }
                            None
                        } else {
                            Some(now + RECYCLE_AFTER)
                        };
                    }
                    // Nothing when the ping woke us, or a hair early (monotonic
                    // vs wall clock).
                    match session.on_tick(now_ms()) {
                        Some(Action::Close { code, reason }) => break Ended::by_gateway(code, reason),
                        Some(other) => {
                            if let Some(m) = action_message(&other) {
                                traffic.bytes_out += m.len() as u64;
                                client_out.push(m);
                            }
                        }
                        None => {}
                    }
                }
            }
        };
        session.close();
        if let Some(h) = hub.as_mut() {
            h.leave(&app.hub);
        }
        let grace = if ended.flush {
            CLOSE_GRACE
        } else {
            Duration::ZERO
        };
        let (client_frame, upstream_frame) = (ended.client.take(), ended.upstream.take());
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
        metrics.close(ended.code);
        tracing::info!(
            event = "close",
            id = id,
            code = ended.code,
            reason = ended.reason,
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

/// Consumes `{"type":"auth",...}` (SPEC 5.3); other text is data.
/// A successful refresh replaces the session's identity: its claims (fewer
/// roles apply at once), `jti` and `sid` (revocations of the new token hit).
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
    let now = now_ms();
    let result = match token.as_ref().map(|t| t.as_deref()) {
        Err(r) => Err(*r),
        Ok(None | Some("")) => Err(Reason::MissingToken),
        Ok(Some(t)) if t.len() > app.config.auth.max_token_bytes => Err(Reason::TokenTooLarge),
        // Refused while the revocation set is not known, like an upgrade.
        Ok(Some(t)) => app
            .admission
            .keys
            .verify(t, now)
            .and_then(|v| app.admission.not_revoked(v)),
    };
    let action = session.on_refresh(result.as_ref().map_err(|r| *r), now);
    let mut refreshed = false;
    if let (Action::SendAuthOk { .. }, Ok(v)) = (&action, result) {
        *verified = v;
        keep_needed_claims(app, verified);
        app.registry.update(id, verified, session.deadline());
        refreshed = true;
    }
    action_message(&action).map(|m| (m, refreshed))
}

/// The JSON message an action sends, if any.
fn action_message(a: &Action) -> Option<Message> {
    let v = match a {
        Action::SendExpiring { exp } => serde_json::json!({"type": "auth_expiring", "exp": exp}),
        Action::SendAuthOk { sub, exp } => {
            serde_json::json!({"type": "auth_ok", "sub": sub, "exp": exp})
        }
        Action::SendAuthFail { reason } => {
            serde_json::json!({"type": "auth_fail", "reason": reason.code()})
        }
        Action::Close { .. } => return None,
    };
    Some(Message::Text(v.to_string().into()))
}

/// Maps a read error to the close code we answer with (1006: just drop).
fn error_close(e: &WsError) -> (u16, &'static str) {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            (close::TOO_BIG, "message too big")
        }
        WsError::Capacity(_) => (close::TOO_BIG, "frame too big"),
        WsError::Utf8(_) => (close::INVALID_PAYLOAD, "invalid utf-8"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => (1006, "connection lost"),
        WsError::Protocol(_) => (1002, "protocol error"),
        _ => (1006, "connection lost"),
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
