//! `POST /v1/tickets` (docs/reference.md): a session credential in, a single-use,
//! short-lived ticket out, with CORS for the allowed origins only.

use super::peer::Peer;
use super::respond::{self, reject, Body};
use super::upgrade::{self, Attempt};
use crate::app::App;
use crate::clock::now_ms;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, HOST, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use jsonwebtoken::Algorithm;
use subtle::ConstantTimeEq;
use wsgate_core::client_ip::client_ip;
use wsgate_core::credential::{self, ExtractPolicy, Transport};
use wsgate_core::origin::OriginVerdict;
use wsgate_core::Reason;

/// Handles every method on `/v1/tickets`; `peer` is the socket's address
/// (or the PROXY protocol source).
pub async fn handle(app: &App, req: Request<Incoming>, peer: Peer) -> Response<Body> {
    let Some(tickets) = &app.tickets else {
        return respond::not_found();
    };
    let origin = match origin(req.headers()) {
        Ok(o) => o,
        Err(r) => return reject(r, false),
    };
    let verdict = app.origins.check(origin);
    // A present Origin must be on the list, whatever the credential: CORS
    // answers are only ever given to allowed origins.
    if origin.is_some() && verdict != OriginVerdict::Allowed {
        return reject(Reason::OriginNotAllowed, false);
    }
    let cors_origin = origin.filter(|_| verdict == OriginVerdict::Allowed);
    let mut resp = match *req.method() {
        Method::OPTIONS if cors_origin.is_some() => {
            let mut r = Response::new(Body::default());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r.headers_mut()
                .insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
            r
        }
        Method::OPTIONS => reject(Reason::OriginNotAllowed, false),
        Method::POST => {
            let ip = client_ip(peer.ip(), req.headers(), peer.proxies(app));
            let mut attempt = Attempt::new(ip);
            attempt.origin = origin.map(upgrade::logged_origin);
            // Charged before any verification, like an upgrade: the mint is
            // no cheaper way to test stolen or guessed tokens.
            let minted = match app.admission.charge(ip, peer.ip()) {
                Ok(()) => issue(app, tickets, &req, verdict, &mut attempt).await,
                Err(r) => Err(r),
            };
            match minted {
                Ok(r) => r,
                Err(reason) => {
                    log_refusal(&attempt, reason);
                    app.metrics.ticket_refused(reason);
                    reject(reason, attempt.presented)
                }
            }
        }
        _ => respond::method_not_allowed("POST, OPTIONS"),
    };
    if let Some(o) = cors_origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = resp.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, X-CSRF-Token"),
        );
        h.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
    }
    // Caches must not serve one origin's answer to another.
    resp.headers_mut()
        .append(VARY, HeaderValue::from_static("Origin"));
    resp
}

fn origin(h: &HeaderMap) -> Result<Option<&str>, Reason> {
    let mut it = h.get_all(ORIGIN).iter();
    match (it.next(), it.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v.to_str().map(Some).map_err(|_| Reason::OriginNotAllowed),
        _ => Err(Reason::OriginNotAllowed),
    }
}

/// Authenticates the session credential (the same verification and
/// revocation check as an upgrade) and mints the ticket.
async fn issue(
    app: &App,
    tickets: &crate::app::Tickets,
    req: &Request<Incoming>,
    verdict: OriginVerdict,
    attempt: &mut Attempt,
) -> Result<Response<Body>, Reason> {
    let headers = req.headers();
    // Bearer first; the session cookie otherwise (then CSRF is required).
    let policy = ExtractPolicy {
        transports: vec![Transport::Bearer, Transport::Cookie],
        ..app.extract.clone()
    };
    let cred = credential::extract(&policy, headers, None)
        .map_err(|e| {
            attempt.transport = e.transport;
            attempt.presented = true;
            e.reason
        })?
        .ok_or(Reason::MissingToken)?;
    attempt.transport = Some(cred.transport);
    attempt.presented = true;
    // The cookie is ambient: checked before anything is verified with it.
    if cred.transport == Transport::Cookie && verdict != OriginVerdict::Allowed {
        return Err(Reason::OriginNotAllowed);
    }
    let session = app.admission.verify(&cred.token).await?;
    attempt.sub = Some(session.sub.clone());
    // A revoked session mints nothing (and its tickets carry its `iat`, so
    // a revocation made after the mint still refuses them at redemption).
    let session = app.admission.not_revoked(session)?;
    if cred.transport == Transport::Cookie {
        let sent = headers.get("x-csrf-token").map(|v| v.as_bytes());
        let want = session.claims.get("csrf").and_then(|v| v.as_str());
        match (sent, want) {
            (Some(s), Some(w)) if !w.is_empty() && bool::from(s.ct_eq(w.as_bytes())) => {}
            _ => return Err(Reason::CsrfFailed),
        }
    }
    let now = now_ms();
    let jti = crate::mint::random_id(18);
    let claims = wsgate_core::ticket::claims(
        &session,
        &app.config.tickets.audience,
        tickets.ttl_ms,
        jti,
        now,
    );
    let expires_in = claims
        .get("exp")
        .and_then(|v| v.as_i64())
        .map(|exp| (exp - now / 1000).max(0))
        .unwrap_or(0);
    // Signing with a configured HMAC key does not fail; if it did, nothing
    // is minted.
    let ticket = crate::mint::sign(Algorithm::HS256, None, &claims, &tickets.signer)
        .map_err(|_| Reason::StoreUnavailable)?;
    let url = format!(
        "{}://{}{}?{}={}",
        if app.config.server.tls.is_some() {
            "wss"
        } else {
            "ws"
        },
        host(headers).unwrap_or_else(|| app.config.server.listen.to_string()),
        app.config.server.path,
        app.config.auth.ticket_param,
        ticket
    );
    app.metrics.tickets_issued.inc();
    tracing::info!(
        event = "ticket_issued",
        sub = session.sub.as_str(),
        transport = cred.transport.as_str(),
        expires_in
    );
    Ok(respond::json(
        StatusCode::CREATED,
        &serde_json::json!({"ticket": ticket, "expires_in": expires_in, "url": url}),
    ))
}

/// The log line of a refused ticket request: the fields of a refused
/// upgrade's (docs/reference.md), never the credential.
fn log_refusal(a: &Attempt, reason: Reason) {
    tracing::info!(
        event = "ticket_refused",
        reason = reason.code(),
        status = reason.status().as_u16(),
        ip = %a.ip,
        origin = a.origin.as_deref(),
        transport = a.transport.map(|t| t.as_str()),
        sub = a.sub.as_deref(),
    );
}

/// The Host header when it is a plausible `host[:port]` (it is echoed in `url`).
fn host(h: &HeaderMap) -> Option<String> {
    let v = h.get(HOST)?.to_str().ok()?;
    let ok = !v.is_empty()
        && v.len() <= 255
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    ok.then(|| v.to_owned())
}
