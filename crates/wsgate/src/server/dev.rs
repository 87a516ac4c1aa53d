//! Dev mode (docs/reference.md): the demo page, the browser client it uses, and the
//! `/dev/*` helpers behind it. Never enabled when a config file is given;
//! dev mode listens on loopback only.
//!
//! - `GET /` the demo page; `GET /dev/wsgate.js` the compiled client
//!   (clients/js/dist, committed, so building needs no npm).
//! - `POST /dev/login {"sub", "roles"?, "ttl"?}` mints a session token, sets
//!   it as the HttpOnly `session` cookie and answers
//!   `{"token", "csrf", "sub", "sid", "exp"}` (`ttl` in seconds, 1..=3600).
//! - `POST /dev/logout` clears the cookie.
//! - `POST /dev/revoke {"sub"|"jti"|"sid"}` is the admin API's revoke, so the
//!   page can show a revoked session end.
//!
//! The POSTs refuse a foreign `Origin` (a page elsewhere must not log the
//! browser in as someone, or revoke anyone); CLI clients send none.

use super::respond::{self, Body};
use crate::app::App;
use crate::clock::now_ms;
use crate::error::Error;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ORIGIN, SET_COOKIE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use wsgate_core::origin::OriginVerdict;
use wsgate_core::Reason;

/// Dev tokens live an hour unless `/dev/login` asks for less.
pub const DEV_TTL_SECS: i64 = 3600;
const MAX_LOGIN_BODY: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    /// Seconds; short sessions show expiry, refresh and 4401 in the demo.
    #[serde(default)]
    ttl: Option<i64>,
}

/// A minted dev session.
pub struct DevSession {
    pub token: String,
    pub csrf: String,
    pub sid: String,
    pub exp: i64,
}

/// Mints a dev token for `sub` with `roles`, carrying a fresh `csrf` claim.
pub fn dev_token(app: &App, sub: &str, roles: &[String]) -> Result<String, Error> {
    dev_session(app, sub, roles, DEV_TTL_SECS).map(|s| s.token)
}

/// Mints a dev session token valid `ttl_secs`.
pub fn dev_session(
    app: &App,
    sub: &str,
    roles: &[String],
    ttl_secs: i64,
) -> Result<DevSession, Error> {
    let key = app
        .dev_signer
        .as_ref()
        .ok_or_else(|| Error::config("not in dev mode"))?;
    let now = now_ms() / 1000;
    let exp = now + ttl_secs;
    let csrf = crate::mint::random_id(16);
    let sid = crate::mint::random_id(12);
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from(sub));
    claims.insert("roles".into(), json!(roles));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(exp));
    claims.insert("jti".into(), Value::from(crate::mint::random_id(16)));
    claims.insert("sid".into(), Value::from(sid.as_str()));
    claims.insert("csrf".into(), Value::from(csrf.as_str()));
    let token = crate::mint::sign(Algorithm::HS256, None, &claims, key)?;
    Ok(DevSession {
        token,
        csrf,
        sid,
        exp,
    })
}

fn valid_name(s: &str) -> bool {
    (1..=200).contains(&s.len()) && s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

fn bad(msg: &str) -> Response<Body> {
    respond::json(
        StatusCode::BAD_REQUEST,
        &json!({"error": "bad_request", "message": msg}),
    )
}

/// Routes `/dev/*` (dev mode only; the caller checks).
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match path.as_str() {
        "/dev/wsgate.js" | "/dev/wsgate.d.ts" => {
            if method != Method::GET {
                return respond::method_not_allowed("GET");
            }
            if path.ends_with(".js") {
                asset(CLIENT_JS, "text/javascript; charset=utf-8")
            } else {
                asset(CLIENT_DTS, "text/plain; charset=utf-8")
            }
        }
        "/dev/login" | "/dev/logout" | "/dev/revoke" => {
            if method != Method::POST {
                return respond::method_not_allowed("POST");
            }
            if !origin_ok(&app, &req) {
                return respond::reject(Reason::OriginNotAllowed, false);
            }
            match path.as_str() {
                "/dev/login" => login(&app, req).await,
                "/dev/logout" => logout(&app),
                _ => super::admin::revoke_request(&app, req).await,
            }
        }
        _ => respond::not_found(),
    }
}

/// No Origin (curl) or an allowed one (the demo page).
fn origin_ok(app: &App, req: &Request<Incoming>) -> bool {
    let mut it = req.headers().get_all(ORIGIN).iter();
    match (it.next(), it.next()) {
        (None, _) => true,
        (Some(o), None) => o
            .to_str()
            .is_ok_and(|o| app.origins.check(Some(o)) == OriginVerdict::Allowed),
        _ => false,
    }
}

/// `POST /dev/login {"sub": "...", "roles": [...], "ttl": seconds}`.
async fn login(app: &App, req: Request<Incoming>) -> Response<Body> {
    let body = match Limited::new(req.into_body(), MAX_LOGIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad("body too large or unreadable"),
    };
    let login: Login = match serde_json::from_slice(&body) {
        Ok(l) => l,
        Err(_) => return bad("expected {\"sub\": \"...\", \"roles\": [...], \"ttl\": seconds}"),
    };
    if !valid_name(&login.sub)
        || !login.roles.iter().all(|r| valid_name(r))
        || login.roles.len() > 32
    {
        return bad("sub and roles must be 1-200 printable ASCII characters");
    }
    let ttl = login.ttl.unwrap_or(DEV_TTL_SECS);
    if !(1..=DEV_TTL_SECS).contains(&ttl) {
        return bad("ttl must be 1..=3600 seconds");
    }
    let s = match dev_session(app, &login.sub, &login.roles, ttl) {
        Ok(s) => s,
        Err(_) => {
            return respond::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "internal", "message": "cannot mint token"}),
            )
        }
    };
    let mut r = respond::json(
        StatusCode::OK,
        &json!({"token": s.token, "csrf": s.csrf, "sub": login.sub, "sid": s.sid, "exp": s.exp}),
    );
    set_cookie(&mut r, app, &s.token, ttl);
    r
}

/// `POST /dev/logout`: the cookie goes; open sockets keep their session.
fn logout(app: &App) -> Response<Body> {
    let mut r = respond::json(StatusCode::OK, &json!({"ok": true}));
    set_cookie(&mut r, app, "", 0);
    r
}

fn set_cookie(r: &mut Response<Body>, app: &App, value: &str, max_age: i64) {
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        app.config.auth.cookie_name, value, max_age
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The demo page.
pub fn page() -> Response<Body> {
    asset(DEMO_PAGE, "text/html; charset=utf-8")
}

const DEMO_PAGE: &str = include_str!("../dev_page.html");
/// The browser client, compiled from clients/js/src (scripts/e2e.sh checks it is current).
const CLIENT_JS: &str = include_str!("../../../../clients/js/dist/wsgate.js");
const CLIENT_DTS: &str = include_str!("../../../../clients/js/dist/wsgate.d.ts");
