//! The upgrade pipeline (docs/reference.md, "Refusals before 101"). Each step passes or yields a [`Reason`];
//! only when all pass is `101` written and the session task started.

use super::peer::Peer;
use super::respond::{reject, Body};
use crate::app::{App, Slot};
use crate::backend::forwarded::Forwarding;
use crate::backend::upstream::{self, ClientRequest, UpstreamWs};
use crate::clock::now_ms;
use crate::conn::{self, SessionStart};
use crate::http_head::header_has_token;
use crate::readahead::ReadAhead;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::{
    CONNECTION, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use wsgate_core::credential::{self, Transport};
use wsgate_core::origin::OriginVerdict;
use wsgate_core::verify::Verified;
use wsgate_core::Reason;

/// What the log line of one attempt says (docs/reference.md). Never a token.
pub struct Attempt {
    pub ip: IpAddr,
    pub origin: Option<String>,
    pub transport: Option<Transport>,
    pub sub: Option<String>,
    /// A credential was presented (for `error="invalid_token"`).
    pub presented: bool,
}

impl Attempt {
    pub(crate) fn new(ip: IpAddr) -> Self {
        Attempt {
            ip,
            origin: None,
            transport: None,
            sub: None,
            presented: false,
        }
    }
}

/// Origins are attacker-chosen text; keep log lines bounded.
const MAX_LOGGED_ORIGIN: usize = 256;

/// An Origin as logged: at most [`MAX_LOGGED_ORIGIN`] characters.
pub(crate) fn logged_origin(o: &str) -> String {
    o.chars().take(MAX_LOGGED_ORIGIN).collect()
}

/// A request that passed every check.
struct Accepted {
    admission: Admission,
    protocol: Option<String>,
    key: HeaderValue,
}

/// Who the socket belongs to, as far as the upgrade could tell.
enum Admission {
    /// Authenticated on the upgrade.
    Session {
        id: u64,
        verified: Verified,
        transport: Transport,
        slot: Slot,
        upstream: Option<Box<UpstreamWs>>,
    },
    /// First-message auth (docs/reference.md): authenticated after 101, or closed
    /// 4001. Keeps the request when the upstream is opened after auth.
    Pending(conn::Unauthenticated, Option<ClientRequest>),
}

/// What an upgrade attempt came to: decided, logged and counted, nothing
/// written yet. hyper's path ([`handle`]) and the direct one
/// ([`super::direct`]) write it each their own way.
// Moved once, from `answer` into its caller: boxing `Next` would add an
// allocation to every accepted upgrade to save a memcpy.
#[allow(clippy::large_enum_variant)]
pub(super) enum Answer {
    Refuse {
        reason: Reason,
        /// A credential was presented (RFC 6750's `error="invalid_token"`).
        presented: bool,
    },
    Switch {
        /// `Sec-WebSocket-Accept`.
        accept: HeaderValue,
        /// The one `Sec-WebSocket-Protocol` echoed, if any.
        protocol: Option<HeaderValue>,
        next: Next,
    },
}

/// What runs on the socket once `101` is written.
pub(super) enum Next {
    /// Authenticated on the upgrade: the session, already registered.
    Session(SessionStart),
    /// First-message auth (docs/reference.md): authenticated after 101, or closed
    /// 4001. Keeps the request when the upstream is opened after auth.
    Pending {
        guard: conn::Unauthenticated,
        ip: IpAddr,
        origin: Option<String>,
        request: Option<ClientRequest>,
    },
}

/// A client's socket after `101`, whichever stream it is (plain, TLS,
/// behind PROXY, or hyper's upgraded one): type-erased so the session's
/// code exists once, not once per stream type.
pub type ClientIo = Box<dyn ClientStream>;

pub trait ClientStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> ClientStream for T {}

/// Decides an upgrade request (docs/reference.md), counts it and logs it.
pub(super) async fn answer<B>(app: &Arc<App>, req: &Request<B>, peer: Peer) -> Answer {
    let started = Instant::now();
    let ip = wsgate_core::client_ip::client_ip(peer.ip(), req.headers(), peer.proxies(app));
    let mut attempt = Attempt::new(ip);
    let decision = decide(app, req, peer, &mut attempt).await;
    let latency_us = started.elapsed().as_micros() as u64;
    app.metrics.handshake(
        decision.as_ref().map(|_| ()).map_err(|r| *r),
        attempt.transport,
    );
    let acc = match decision {
        Err(reason) => {
            log_attempt(&attempt, Err(reason), latency_us);
            return Answer::Refuse {
                reason,
                presented: attempt.presented,
            };
        }
        Ok(acc) => acc,
    };
    log_attempt(&attempt, Ok(()), latency_us);
    let origin = attempt.origin.take();
    let next = match acc.admission {
        Admission::Session {
            id,
            verified,
            transport,
            slot,
            upstream,
        } => Next::Session(SessionStart::new(
            app, id, ip, origin, transport, verified, slot, upstream,
        )),
        Admission::Pending(guard, request) => Next::Pending {
            guard,
            ip,
            origin,
            request,
        },
    };
    Answer::Switch {
        // Base64 of a SHA-1: always a valid header value.
        accept: HeaderValue::from_str(&derive_accept_key(acc.key.as_bytes()))
            .unwrap_or_else(|_| HeaderValue::from_static("")),
        protocol: acc
            .protocol
            .as_deref()
            .and_then(|p| HeaderValue::from_str(p).ok()),
        next,
    }
}

/// Handles `GET <server.path>` that reached hyper (an upgrade after another
/// request on a kept-alive connection, an absolute-form target): decides,
/// logs, answers `101` or a rejection.
pub async fn handle(app: Arc<App>, mut req: Request<Incoming>, peer: Peer) -> Response<Body> {
    let (accept, protocol, next) = match answer(&app, &req, peer).await {
        Answer::Refuse { reason, presented } => return reject(reason, presented),
        Answer::Switch {
            accept,
            protocol,
            next,
        } => (accept, protocol, next),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = protocol {
        h.insert(SEC_WEBSOCKET_PROTOCOL, p);
    }
    tokio::spawn(async move {
        // The upgrade fails only if the peer left before 101 was read.
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        begin(app, Box::new(TokioIo::new(upgraded)), next).await;
    });
    resp
}

/// Runs the socket after `101`: first-message auth where it applies, then
/// the session in a task of its own.
pub(super) async fn begin(app: Arc<App>, io: ClientIo, next: Next) {
    // Idle sockets then hold no read buffer of read_buffer_bytes.
    // Frame tracking: lets the session recycle the WebSocket.
    let io = ReadAhead::new(io, app.config.limits.read_buffer_bytes).frames();
    let mut ws =
        WebSocketStream::from_raw_socket(io, Role::Server, Some(app.client_ws_config)).await;
    let start = match next {
        Next::Session(s) => s,
        Next::Pending {
            guard,
            ip,
            origin,
            request,
        } => {
            // Boxed: only first-message sockets pay for its state.
            match Box::pin(conn::first_message(
                &app, &mut ws, guard, ip, origin, request,
            ))
            .await
            {
                Some(s) => s,
                None => return,
            }
        }
    };
    // Its own task: the state of this one (upgrade, first-message auth) is
    // not kept beside the session's for the socket's life.
    tokio::spawn(conn::run(app, ws, start));
}

fn log_attempt(a: &Attempt, result: Result<(), Reason>, latency_us: u64) {
    let (result, reason, status) = match result {
        Ok(()) => ("accepted", None, 101),
        Err(r) => ("rejected", Some(r.code()), r.status().as_u16()),
    };
    tracing::info!(
        event = "handshake",
        result,
        reason,
        status,
        // Formatted only when the event is enabled (1.3k instructions).
        ip = %a.ip,
        origin = a.origin.as_deref(),
        transport = a.transport.map(|t| t.as_str()),
        sub = a.sub.as_deref(),
        latency_us,
    );
}

/// Logs a refusal made before hyper parsed the request (oversized head).
pub fn log_early_rejection(ip: IpAddr, reason: Reason) {
    log_attempt(&Attempt::new(ip), Err(reason), 0);
}

/// RFC 6455 4.2.1: returns the client's key when the request is an upgrade.
fn well_formed<B>(req: &Request<B>) -> Result<HeaderValue, Reason> {
    if req.method() != Method::GET || req.version() < Version::HTTP_11 {
        return Err(Reason::BadUpgrade);
    }
    let h = req.headers();
    // No body: after the 101 its bytes would be read as WebSocket frames,
    // and a proxy in front may have framed them otherwise (smuggling).
    if h.contains_key(http::header::TRANSFER_ENCODING)
        || h.get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes() != b"0")
    {
        return Err(Reason::BadUpgrade);
    }
    // Exactly one Host (RFC 9112 3.2): two let a proxy and us disagree on it.
    if h.get_all(http::header::HOST).iter().count() != 1
        || !header_has_token(h, UPGRADE, "websocket")
        || !header_has_token(h, CONNECTION, "upgrade")
    {
        return Err(Reason::BadUpgrade);
    }
    let mut keys = h.get_all(SEC_WEBSOCKET_KEY).iter();
    let (Some(key), None) = (keys.next(), keys.next()) else {
        return Err(Reason::BadUpgrade);
    };
    match STANDARD.decode(key.as_bytes()) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(Reason::BadUpgrade),
    }
    let mut versions = h.get_all(SEC_WEBSOCKET_VERSION).iter();
    match (versions.next(), versions.next()) {
        (Some(v), None) if v.as_bytes() == b"13" => {}
        (None, _) => return Err(Reason::BadUpgrade),
        _ => return Err(Reason::UnsupportedVersion),
    }
    // Protocol lists must at least be text.
    credential::offered_protocols(h)?;
    Ok(key.clone())
}

/// What the upstream is told of the client's address, scheme and host.
fn forwarding<B>(app: &App, req: &Request<B>, peer: Peer, client: IpAddr) -> Forwarding {
    Forwarding::new(
        req.headers(),
        req.uri(),
        peer.ip(),
        client,
        peer.proxies(app),
        app.tls_main.is_some(),
    )
}

fn origin_header(h: &HeaderMap) -> Result<Option<&str>, Reason> {
    let mut it = h.get_all(ORIGIN).iter();
    match (it.next(), it.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| Reason::OriginNotAllowed),
        // Two Origin headers: no browser sends that.
        _ => Err(Reason::OriginNotAllowed),
    }
}

/// `peer` is the TCP peer (or PROXY protocol source); `a.ip` the client
/// address resolved from it.
async fn decide<B>(
    app: &Arc<App>,
    req: &Request<B>,
    peer: Peer,
    a: &mut Attempt,
) -> Result<Accepted, Reason> {
    let headers = req.headers();
    // Log what the Origin claimed even when the request is refused.
    if let Some(o) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
        a.origin = Some(logged_origin(o));
    }
    let key = well_formed(req)?;
    if app.is_draining() {
        return Err(Reason::Draining);
    }
    app.admission.charge(a.ip, peer.ip())?;
    let origin = origin_header(headers)?;
    let verdict = app.origins.check(origin);
    if verdict == OriginVerdict::Denied {
        return Err(Reason::OriginNotAllowed);
    }
    let query = req.uri().query();
    let cred = credential::extract(&app.extract, headers, query).map_err(|e| {
        a.transport = e.transport;
        a.presented = true;
        e.reason
    })?;
    let Some(cred) = cred else {
        if app.config.auth.first_message {
            a.transport = Some(Transport::FirstMessage);
            let guard = conn::Unauthenticated::acquire(app)?;
            let request = app.upstream.as_ref().map(|_| ClientRequest {
                headers: headers.clone(),
                query: query.map(str::to_owned),
                forwarding: forwarding(app, req, peer, a.ip),
            });
            return Ok(Accepted {
                admission: Admission::Pending(guard, request),
                protocol: choose_protocol(app, headers, Transport::FirstMessage, None),
                key,
            });
        }
        return Err(Reason::MissingToken);
    };
    a.transport = Some(cred.transport);
    a.presented = true;
    // The browser attaches cookies to cross-site upgrades on its own: only
    // a page on an allowed Origin may use them.
    if cred.transport == Transport::Cookie && verdict != OriginVerdict::Allowed {
        return Err(Reason::OriginNotAllowed);
    }
    let verified = if cred.transport == Transport::Ticket {
        // Before the ticket is spent: a redemption refused for want of the
        // revocation set must not use it up.
        app.admission.revocations_known()?;
        redeem_ticket(app, &cred.token).await?
    } else {
        app.admission.verify(&cred.token).await?
    };
    // Known before the revocation check, so a revoked attempt logs its sub.
    a.sub = Some(verified.sub.clone());
    let verified = app.admission.not_revoked(verified)?;
    if cred.transport == Transport::Cookie && app.config.auth.cookie_csrf {
        let sent = credential::query_value(query, "csrf");
        let want = verified.claims.get("csrf").and_then(|v| v.as_str());
        match (sent, want) {
            (Some(s), Some(w)) if !w.is_empty() && bool::from(s.as_bytes().ct_eq(w.as_bytes())) => {
            }
            _ => return Err(Reason::CsrfFailed),
        }
    }
    let slot = app.acquire_slot_everywhere(&verified.sub).await?;
    // Last: the upstream is opened only for a client that passed every
    // check, and before 101 so its refusal is the client's 502/504.
    let id = app.next_id();
    let (upstream, chosen) = if app.upstream.is_some() {
        // Boxed: inline, this 2.7 KiB future tripled every request's
        // future, upstream mode or not (hyper boxes and moves it).
        let fwd = forwarding(app, req, peer, a.ip);
        let (ws, chosen) = Box::pin(upstream::open(
            app.upstream.as_ref(),
            headers,
            query,
            &fwd,
            &verified,
            id,
        ))
        .await?;
        (Some(ws), chosen)
    } else {
        (None, None)
    };
    let protocol = choose_protocol(app, headers, cred.transport, chosen);
    Ok(Accepted {
        admission: Admission::Session {
            id,
            verified,
            transport: cred.transport,
            slot,
            upstream,
        },
        protocol,
        key,
    })
}

/// Verifies a ticket and spends it in the store; the socket gets the
/// session's identity and deadline (`session_exp`), not the ticket's.
async fn redeem_ticket(app: &App, token: &str) -> Result<Verified, Reason> {
    let now = now_ms();
    let Some(tickets) = &app.tickets else {
        return Err(Reason::TicketRequired);
    };
    let ticket = match tickets.verifier.verify(token, now) {
        Ok(t) => t,
        // A session token in the ticket param: tell the client what is wrong.
        Err(_) if app.admission.keys.verify(token, now).is_ok() => {
            return Err(Reason::TicketRequired)
        }
        Err(r) => return Err(r),
    };
    let spend_for = crate::clock::until(
        ticket
            .exp_ms
            .saturating_add(tickets.verifier.rules().leeway_ms),
        now,
    );
    let r = wsgate_core::ticket::redeemable(ticket)?;
    match app.store.use_once(&r.jti, r.issued_at, spend_for).await {
        Ok(true) => Ok(r.session),
        Ok(false) => Err(Reason::TicketReplayed),
        Err(e) => {
            app.metrics.store_errors.inc();
            tracing::warn!(event = "store_error", op = "use_once", store = app.store.kind(), error = %e);
            Err(match e {
                // The single use may have been recorded after all (a reply
                // lost, Redis paused): the answer says the ticket may be spent.
                crate::store::StoreError::Unconfirmed(_) => Reason::TicketOutcomeUnknown,
                _ => Reason::StoreUnavailable,
            })
        }
    }
}

/// The one subprotocol echoed in `101`: the application protocol the
/// upstream chose (echo and the hub accept none), else the sentinel when
/// the token came that way.
fn choose_protocol(
    app: &App,
    headers: &HeaderMap,
    transport: Transport,
    upstream_chose: Option<String>,
) -> Option<String> {
    if let Some(p) = upstream_chose {
        // The upstream may only pick what it was offered: the client's
        // application protocols (tungstenite checks this on the 101).
        let offered = credential::offered_protocols(headers).ok()?;
        let split = credential::split_offered(&offered, &app.config.auth.subprotocol);
        if split.application.contains(&p.as_str()) {
            return Some(p);
        }
    }
    (transport == Transport::Subprotocol).then(|| app.config.auth.subprotocol.clone())
}
