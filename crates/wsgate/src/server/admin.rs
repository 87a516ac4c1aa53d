//! The admin API (docs/reference.md) on the admin listener: revoke, refresh, list.
//! Every call needs `Authorization: Bearer <admin token>`, compared in
//! constant time; with no admin token configured the API refuses all calls.
//! Failed calls are charged to their address ([`failures`]): past a burst
//! the address is answered `429` without its token being looked at.

use super::respond::{self, Body};
use crate::app::{App, Control};
use crate::auth_failures::{self as failures, Failure};
use crate::clock::now_ms;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use wsgate_core::revocation::{Revocation, Target};

const MAX_BODY: usize = 16 * 1024;

/// The admin API's paths, as logged; anything else is `"other"` (the
/// client's own text is never logged).
const PATHS: [&str; 4] = [
    "/admin/v1/sessions",
    "/admin/v1/revoke",
    "/admin/v1/refresh",
    "/admin/v1/publish",
];

fn error(status: StatusCode, code: &str, msg: &str) -> Response<Body> {
    respond::json(status, &json!({"error": code, "message": msg}))
}

fn authorized(app: &App, req: &Request<Incoming>) -> Result<(), Failure> {
    let Some(want) = &app.config.admin.token else {
        return Err(Failure::Disabled);
    };
    let Some(got) = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Err(Failure::MissingToken);
    };
    if bool::from(got.trim().as_bytes().ct_eq(want.expose())) {
        Ok(())
    } else {
        Err(Failure::WrongToken)
    }
}

/// Routes `/admin/v1/*`; `peer` is the TCP peer (the admin listener never
/// reads forwarding headers).
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    let path: &'static str = PATHS
        .iter()
        .find(|p| **p == req.uri().path())
        .copied()
        .unwrap_or("other");
    if app.admin_failures.is_limited(peer) {
        app.metrics.admin_auth_failure("rate_limited");
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed admin authentications from this address; retry later",
        );
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from(failures::RETRY_AFTER.as_secs()),
        );
        return r;
    }
    if let Err(why) = authorized(&app, &req) {
        app.admin_failures.record(peer, path, why);
        app.metrics.admin_auth_failure("unauthorized");
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "admin API needs Authorization: Bearer <admin token>",
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Bearer realm="wsgate-admin""#),
        );
        return r;
    }
    match (req.method().clone(), path) {
        (Method::GET, "/admin/v1/sessions") => {
            let sub = wsgate_core::credential::query_value(req.uri().query(), "sub");
            let list = app.registry.list(sub.as_deref());
            respond::json(StatusCode::OK, &json!({"sessions": list}))
        }
        (Method::POST, "/admin/v1/revoke") => match target(&app, req).await {
            Ok(t) => revoke(&app, t).await,
            Err(r) => r,
        },
        (Method::POST, "/admin/v1/refresh") => match target(&app, req).await {
            Ok(t) => {
                if app.store.is_shared() {
                    let payload = crate::store::refresh_to_json(&app.node_id, &t);
                    if let Err(e) = app.store.announce_refresh(&payload).await {
                        app.metrics.store_errors.inc();
                        tracing::warn!(event = "store_error", op = "announce_refresh", error = %e);
                        return respond::reject(wsgate_core::Reason::StoreUnavailable, false);
                    }
                }
                let n = app.registry.signal(&t, Control::Reauth);
                respond::json(StatusCode::OK, &json!({"refreshed": n}))
            }
            Err(r) => r,
        },
        (Method::POST, "/admin/v1/publish") => publish(&app, req).await,
        (
            _,
            "/admin/v1/sessions" | "/admin/v1/revoke" | "/admin/v1/refresh" | "/admin/v1/publish",
        ) => respond::method_not_allowed("GET, POST"),
        _ => respond::not_found(),
    }
}

/// `POST /admin/v1/publish {"channel": C, "data": D}`: a server-side publish
/// (`from: null`) to this node's subscribers.
async fn publish(app: &App, req: Request<Incoming>) -> Response<Body> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "bad_request", m);
    // A delivery is at most what a client may receive, plus the envelope.
    let limit = app.config.limits.max_message_bytes.max(MAX_BODY);
    let Ok(body) = Limited::new(req.into_body(), limit).collect().await else {
        return bad("body too large or unreadable");
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body.to_bytes()) else {
        return bad("body must be JSON");
    };
    let (Some(channel), Some(data)) = (v.get("channel").and_then(|c| c.as_str()), v.get("data"))
    else {
        return bad("expected {\"channel\": C, \"data\": D}");
    };
    if !wsgate_core::grants::valid_channel(channel) {
        return bad("channel names are 1-200 printable ASCII characters");
    }
    let delivered = app.hub.publish(channel, data, None);
    respond::json(StatusCode::OK, &json!({"delivered": delivered}))
}

/// Parses a body with exactly one of `sub`, `jti`, `sid` (a non-empty string).
/// A value may be as long as a token may be: any `sub`, `jti` or `sid` an
/// accepted token carries can be revoked.
async fn target(app: &App, req: Request<Incoming>) -> Result<Target, Response<Body>> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "bad_request", m);
    let max_value = app.config.auth.max_token_bytes.max(1024);
    let body = Limited::new(req.into_body(), MAX_BODY.max(2 * max_value))
        .collect()
        .await
        .map_err(|_| bad("body too large or unreadable"))?
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).map_err(|_| bad("body must be JSON"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("body must be a JSON object"))?;
    let mut found = None;
    for k in ["sub", "jti", "sid"] {
        if let Some(val) = obj.get(k) {
            let s = val
                .as_str()
                .filter(|s| !s.is_empty() && s.len() <= max_value)
                .ok_or_else(|| {
                    bad("the value must be a non-empty string, at most as long as a token")
                })?;
            if found.is_some() {
                return Err(bad("give exactly one of sub, jti, sid"));
            }
            found = Target::from_parts(k, s);
        }
    }
    found.ok_or_else(|| bad("give exactly one of sub, jti, sid"))
}

/// `POST /admin/v1/revoke`'s body and answer, for dev mode's `/dev/revoke`.
pub(crate) async fn revoke_request(app: &Arc<App>, req: Request<Incoming>) -> Response<Body> {
    match target(app, req).await {
        Ok(t) => revoke(app, t).await,
        Err(r) => r,
    }
}

/// Puts a revocation in force on this node (closing its matching
/// sessions), then persists and announces it for the other nodes. When the
/// store does not answer, the outcome there is unknown: the answer says so
/// (`503`, `"stored": "unknown"`), this node keeps the revocation and writes
/// it back as soon as the store answers, and a retry is safe (revocations
/// are idempotent).
async fn revoke(app: &Arc<App>, target: Target) -> Response<Body> {
    let now = now_ms();
    let keep = app
        .config
        .auth
        .max_token_lifetime
        .saturating_add(app.config.auth.leeway);
    let r = Revocation {
        target,
        at: now,
        until: now.saturating_add(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)),
    };
    let closed = app.admission.revocations.apply(r.clone());
    app.metrics.revocations.inc();
    if let Err(e) = app.store.revoke(&r).await {
        app.metrics.store_errors.inc();
        tracing::warn!(event = "store_error", op = "revoke", error = %e);
        // Written back by the feed's resync once the store answers.
        app.admission.revocations.resync_soon();
        let stored = match e {
            crate::store::StoreError::Unconfirmed(_) => "unknown",
            _ => "no",
        };
        tracing::warn!(event = "revoke", closed = closed as u64, stored);
        let mut resp = respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "error": "store_unavailable",
                "message": "the store did not confirm the revocation: it is in force on this \
                            node and will be written back when the store answers; other nodes \
                            may not have it yet. Retrying is safe.",
                "stored": stored,
                "closed": closed,
            }),
        );
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(1));
        return resp;
    }
    tracing::info!(event = "revoke", closed = closed as u64);
    respond::json(StatusCode::OK, &json!({"closed": closed}))
}
