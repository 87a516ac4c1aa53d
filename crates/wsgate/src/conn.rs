//! The per-connection task: one select loop over client frames and the
//! session's timers, driven by the pure [`Session`] state machine.

use crate::app::{App, Control, SessionInfo, Slot};
use crate::clock::{now_ms, until};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
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
    slot: Slot,
    session: Session,
    control: mpsc::Receiver<Control>,
}

impl SessionStart {
    /// Starts the session's state machine and registers it, before `101`
    /// is sent: from the client's first frame on, the admin API sees it.
    pub fn new(
        app: &App,
        ip: IpAddr,
        origin: Option<String>,
        transport: Transport,
        verified: Verified,
        mut slot: Slot,
    ) -> Self {
        let now = now_ms();
        let id = app.next_id();
        let session = Session::new(
            app.session_policy,
            verified.sub.clone(),
            verified.exp_ms,
            now,
        );
        // Two slots: a revoke and a reauth can be pending at once.
        let (tx, control) = mpsc::channel(2);
        slot.attach(
            SessionInfo {
                id,
                sub: verified.sub.clone(),
                sid: verified.sid.clone(),
                jti: verified.jti.clone(),
                ip: ip.to_string(),
                origin,
                transport: transport.as_str(),
                connected_at: now,
                deadline: session.deadline(),
            },
            tx,
        );
        SessionStart {
            id,
            ip,
            transport,
            verified,
            slot,
            session,
            control,
        }
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
/// forwarded before. Returns the session, or `None` after closing 4001.
pub async fn first_message<S>(
    app: &Arc<App>,
    ws: &mut WebSocketStream<S>,
    guard: Unauthenticated,
    ip: IpAddr,
    origin: Option<String>,
) -> Option<SessionStart>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use wsgate_core::Reason;
    let deadline = app.config.auth.first_message_timeout;
    let outcome = tokio::time::timeout(deadline, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return Ok(t),
                // Pings may come first; anything else is not an auth message.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(_)) => return Err(Some(Reason::MissingToken)),
                // Over max_message_bytes: a failed auth (answered, logged), not a silent drop.
                Some(Err(WsError::Capacity(_))) => return Err(Some(Reason::TokenTooLarge)),
                None | Some(Err(_)) => return Err(None),
            }
        }
    })
    .await;
    // Decided either way: closing sockets no longer hold the pending cap.
    drop(guard);
    let text = match outcome {
        Ok(Ok(t)) => t,
        // The peer left: nothing to answer.
        Ok(Err(None)) => return None,
        Ok(Err(Some(reason))) => return fail(app, ws, ip, reason).await,
        Err(_) => {
            close_with(ws, close::AUTH_FAILED, "authentication timeout").await;
            log_unauthenticated_close(app, ip, "authentication timeout");
            return None;
        }
    };
    let now = now_ms();
    let verified = serde_json::from_str::<AuthMessage<'_>>(text.as_str())
        .ok()
        .filter(|m| m.kind == "auth")
        .and_then(|m| m.token)
        .ok_or(Reason::MissingToken)
        .and_then(|t| {
            if t.len() > app.config.auth.max_token_bytes {
                Err(Reason::TokenTooLarge)
            } else {
                app.verifier.verify(&t, now)
            }
        })
        .and_then(|v| {
            if app.is_revoked(&v, now) {
                Err(Reason::Revoked)
            } else {
                Ok(v)
            }
        });
    let verified = match verified {
        Ok(v) => v,
        Err(r) => return fail(app, ws, ip, r).await,
    };
    let slot = match app.acquire_slot_everywhere(&verified.sub).await {
        Ok(s) => s,
        Err(r) => return fail(app, ws, ip, r).await,
    };
    let start = SessionStart::new(app, ip, origin, Transport::FirstMessage, verified, slot);
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
    close_with(ws, close::AUTH_FAILED, "authentication failed").await;
    log_unauthenticated_close(app, ip, reason.code());
    None
}

/// The close line of a socket that never authenticated.
fn log_unauthenticated_close(app: &App, ip: IpAddr, reason: &str) {
    app.metrics.close(close::AUTH_FAILED);
    tracing::info!(
        event = "close",
        code = close::AUTH_FAILED,
        reason,
        transport = Transport::FirstMessage.as_str(),
        ip = %ip,
    );
}

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
struct AuthMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default, borrow)]
    token: Option<std::borrow::Cow<'a, str>>,
}

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

    /// Takes one message's token; `false` when the rate is exceeded.
    /// A rate of 0 means unlimited.
    fn allow(&mut self, now: tokio::time::Instant) -> bool {
        if self.per_sec == 0.0 {
            return true;
        }
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

/// Why the session ended, for the close log line.
struct Ended {
    code: u16,
    reason: &'static str,
}

/// Runs a session until it closes.
pub async fn run<S>(app: Arc<App>, mut ws: WebSocketStream<S>, start: SessionStart)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let opened = Instant::now();
    let SessionStart {
        id,
        ip,
        transport,
        mut verified,
        slot,
        mut session,
        mut control,
    } = start;
    let mut bytes_in: u64 = 0;
    let mut bytes_out: u64 = 0;
    let metrics = &app.metrics;
    metrics.connections_active.inc();
    let limits = &app.config.limits;
    let mut rate = MessageRate::new(limits.messages_per_sec);
    // One timer for the session's deadline/warning, re-armed only when the
    // wake-up instant changes (not per message).
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed_for = None;
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + limits.ping_interval,
        limits.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = tokio::time::Instant::now();
    let mut meter = crate::egress::Meter::new(&app.egress);
    let sessions_gauge = metrics.sessions(transport);
    sessions_gauge.inc();
    let mut hub = (app.config.backend.kind == crate::config::BackendKind::Hub)
        .then(|| app.hub.session(id, limits.outgoing_queue));
    let ended = loop {
        let Some(wake) = session.next_wakeup() else {
            break Ended {
                code: close::EXPIRED,
                reason: "token expired",
            };
        };
        if armed_for != Some(wake) {
            timer.as_mut().reset(
                tokio::time::Instant::now() + until(wake, now_ms()) + Duration::from_millis(1),
            );
            armed_for = Some(wake);
        }
        tokio::select! {
            msg = ws.next() => {
                last_seen = tokio::time::Instant::now();
                if matches!(msg, Some(Ok(Message::Text(_) | Message::Binary(_)))) && !rate.allow(last_seen) {
                    let (code, reason) = (close::RATE_LIMITED, "message rate exceeded");
                    close_with(&mut ws, code, reason).await;
                    break Ended { code, reason };
                }
                let reply = match msg {
                    None => break Ended { code: 1006, reason: "connection lost" },
                    Some(Ok(Message::Close(frame))) => {
                        // tungstenite answers the close; drive it out.
                        let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
                        let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                        break Ended { code, reason: "closed by client" };
                    }
                    Some(Ok(Message::Text(t))) => {
                        bytes_in += t.len() as u64;
                        metrics.messages_in.inc();
                        metrics.bytes_in.inc_by(t.len() as u64);
                        match control_message(&app, &mut session, &mut verified, id, t.as_str()) {
                            Some((reply, refreshed)) => {
                                if let (true, Some(h)) = (refreshed, hub.as_mut()) {
                                    h.recheck(&app, &verified);
                                }
                                Some(reply)
                            }
                            None => match hub.as_mut() {
                                Some(h) => h.handle(&app, &verified, t.as_str()).map(|r| Message::Text(r.into())),
                                None => Some(Message::Text(t)),
                            },
                        }
                    }
                    Some(Ok(Message::Binary(b))) => {
                        bytes_in += b.len() as u64;
                        metrics.messages_in.inc();
                        metrics.bytes_in.inc_by(b.len() as u64);
                        if hub.is_some() {
                            // The hub speaks JSON text only.
                            Some(Message::Text(r#"{"type":"error","id":null,"reason":"bad_request"}"#.into()))
                        } else {
                            Some(Message::Binary(b))
                        }
                    }
                    Some(Ok(_)) => None,
                    Some(Err(e)) => {
                        let (code, reason) = error_close(&e);
                        if code != 1006 {
                            close_with(&mut ws, code, reason).await;
                        }
                        break Ended { code, reason };
                    }
                };
                if let Some(m) = reply {
                    let n = m.len() as u64;
                    // A peer that does not read cannot hold the deadline back.
                    tokio::select! {
                        r = ws.send(m) => {
                            if r.is_err() {
                                break Ended { code: 1006, reason: "connection lost" };
                            }
                            bytes_out += n;
                            metrics.messages_out.inc();
                            metrics.bytes_out.inc_by(n);
                            if egress_exceeded(&app, &mut meter, &verified.sub, n) {
                                let (code, reason) = (close::POLICY, "egress limit");
                                close_with(&mut ws, code, reason).await;
                                break Ended { code, reason };
                            }
                        }
                        _ = &mut timer => {}
                    }
                }
            }
            Some(d) = async {
                match hub.as_mut() {
                    Some(h) => h.rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if hub.as_ref().is_some_and(|h| h.is_slow()) {
                    let (code, reason) = (close::TRY_AGAIN_LATER, "slow consumer");
                    close_with(&mut ws, code, reason).await;
                    break Ended { code, reason };
                }
                let n = d.len() as u64;
                match tokio::time::timeout(CLOSE_GRACE, ws.send(Message::Text(d))).await {
                    Ok(Ok(())) => {
                        bytes_out += n;
                        metrics.messages_out.inc();
                        metrics.bytes_out.inc_by(n);
                        if egress_exceeded(&app, &mut meter, &verified.sub, n) {
                            let (code, reason) = (close::POLICY, "egress limit");
                            close_with(&mut ws, code, reason).await;
                            break Ended { code, reason };
                        }
                    }
                    _ => {
                        let (code, reason) = (close::TRY_AGAIN_LATER, "slow consumer");
                        close_with(&mut ws, code, reason).await;
                        break Ended { code, reason };
                    }
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() >= limits.idle_timeout {
                    let (code, reason) = (close::IDLE, "idle timeout");
                    close_with(&mut ws, code, reason).await;
                    break Ended { code, reason };
                }
                // Bounded: a peer that does not read is caught by idle_timeout.
                let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(Message::Ping(Default::default()))).await;
            }
            Some(c) = control.recv() => match c {
                Control::Revoke => {
                    session.close();
                    let (code, reason) = (close::REVOKED, "session revoked");
                    close_with(&mut ws, code, reason).await;
                    break Ended { code, reason };
                }
                Control::Drain => {
                    session.close();
                    let (code, reason) = (close::GOING_AWAY, "server shutting down");
                    close_with(&mut ws, code, reason).await;
                    break Ended { code, reason };
                }
                Control::Reauth => {
                    if let Some(m) = session.force_reauth(now_ms()).as_ref().and_then(action_message) {
                        app.registry.set_deadline(id, session.deadline());
                        let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(m)).await;
                    }
                }
            },
            _ = &mut timer => {
                match session.on_tick(now_ms()) {
                    Some(Action::Close { code, reason }) => {
                        close_with(&mut ws, code, reason).await;
                        break Ended { code, reason };
                    }
                    Some(other) => {
                        if let Some(m) = action_message(&other) {
                            bytes_out += m.len() as u64;
                            let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(m)).await;
                        }
                    }
                    // Woke a hair early (monotonic vs wall clock): re-arm.
                    None => armed_for = None,
                }
            }
        }
    };
    session.close();
    if let Some(h) = hub.as_mut() {
        h.leave(&app);
    }
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
        bytes_in,
        bytes_out,
    );
    drop(slot);
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
    // Cheap pre-check keeps JSON parsing off the relay path.
    if !text.trim_start().starts_with('{') || !text.contains("\"auth\"") {
        return None;
    }
    let c: AuthMessage<'_> = serde_json::from_str(text).ok()?;
    if c.kind != "auth" {
        return None;
    }
    let now = now_ms();
    let result = match c.token.as_deref() {
        None | Some("") => Err(wsgate_core::Reason::MissingToken),
        Some(t) if t.len() > app.config.auth.max_token_bytes => {
            Err(wsgate_core::Reason::TokenTooLarge)
        }
        Some(t) => app.verifier.verify(t, now).and_then(|v| {
            if app.is_revoked(&v, now) {
                Err(wsgate_core::Reason::Revoked)
            } else {
                Ok(v)
            }
        }),
    };
    let action = session.on_refresh(result.as_ref().map_err(|r| *r), now);
    let mut refreshed = false;
    if let (Action::SendAuthOk { .. }, Ok(v)) = (&action, result) {
        *verified = v;
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
async fn close_with<S>(ws: &mut WebSocketStream<S>, code: u16, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            // Read until the peer's close (or EOF) completes the handshake.
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}
