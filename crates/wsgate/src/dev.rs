//! Dev mode (SPEC 1): `/dev/login` and the demo page. Never enabled when a
//! config file is given.

use crate::app::App;
use crate::clock::now_ms;
use crate::server::respond::{self, Body};
use bytes::Bytes;
use http::header::{CONTENT_TYPE, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Dev tokens live an hour.
pub const DEV_TTL_SECS: i64 = 3600;
const MAX_LOGIN_BODY: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// Mints a dev token for `sub` with `roles`, carrying a fresh `csrf` claim.
pub fn dev_token(app: &App, sub: &str, roles: &[String]) -> Result<String, String> {
    let key = app.dev_signer.as_ref().ok_or("not in dev mode")?;
    let now = now_ms() / 1000;
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from(sub));
    claims.insert("roles".into(), json!(roles));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + DEV_TTL_SECS));
    claims.insert("jti".into(), Value::from(crate::mint::random_id(16)));
    claims.insert("sid".into(), Value::from(crate::mint::random_id(12)));
    claims.insert("csrf".into(), Value::from(crate::mint::random_id(16)));
    crate::mint::sign(Algorithm::HS256, None, &claims, key)
}

fn valid_name(s: &str) -> bool {
    (1..=200).contains(&s.len()) && s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

/// `POST /dev/login {"sub": "...", "roles": [...]}`.
pub async fn login(app: &App, req: Request<Incoming>) -> Response<Body> {
    let bad = |msg: &str| {
        respond::json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "bad_request", "message": msg}),
        )
    };
    let body = match Limited::new(req.into_body(), MAX_LOGIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad("body too large or unreadable"),
    };
    let login: Login = match serde_json::from_slice(&body) {
        Ok(l) => l,
        Err(_) => return bad("expected {\"sub\": \"...\", \"roles\": [...]}"),
    };
    if !valid_name(&login.sub)
        || !login.roles.iter().all(|r| valid_name(r))
        || login.roles.len() > 32
    {
        return bad("sub and roles must be 1-200 printable ASCII characters");
    }
    let token = match dev_token(app, &login.sub, &login.roles) {
        Ok(t) => t,
        Err(_) => {
            return respond::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": "internal", "message": "cannot mint token"}),
            )
        }
    };
    let mut r = respond::json(StatusCode::OK, &json!({"token": token}));
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        app.config.auth.cookie_name, token, DEV_TTL_SECS
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r
}

/// The demo page.
pub fn page() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(DEMO_PAGE.as_bytes())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

const DEMO_PAGE: &str = include_str!("dev_page.html");
