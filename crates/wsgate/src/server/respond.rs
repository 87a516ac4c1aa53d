//! HTTP responses: the one place a [`Reason`] becomes a response.

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER, SEC_WEBSOCKET_VERSION, WWW_AUTHENTICATE,
};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use wsgate_core::Reason;

pub type Body = Full<Bytes>;

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A refused upgrade: status, JSON body, `Connection: close`, and the
/// headers its status calls for. `token_presented` adds RFC 6750's
/// `error="invalid_token"`. Nothing from the request is echoed.
pub fn reject(reason: Reason, token_presented: bool) -> Response<Body> {
    let body = serde_json::json!({"error": reason.code(), "message": reason.message()});
    let mut r = json(reason.status(), &body);
    let h = r.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    if reason.is_unauthorized() {
        h.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(if token_presented {
                r#"Bearer realm="wsgate", error="invalid_token""#
            } else {
                r#"Bearer realm="wsgate""#
            }),
        );
    }
    if reason == Reason::UnsupportedVersion {
        h.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    }
    if let Some(secs) = reason.retry_after_secs() {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// The same rejection as raw bytes, for refusals made before hyper runs
/// (oversized heads).
pub fn reject_raw(reason: Reason) -> Vec<u8> {
    let body = serde_json::json!({"error": reason.code(), "message": reason.message()}).to_string();
    let status = reason.status();
    let retry = reason
        .retry_after_secs()
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nConnection: close\r\n{retry}Content-Length: {}\r\n\r\n{}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        body
    )
    .into_bytes()
}

/// [`reject_raw`] for `rate_limited`, built once: it is what a flood gets.
pub fn rate_limited_raw() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| reject_raw(Reason::RateLimited))
}

/// 404 for unknown paths.
pub fn not_found() -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "not_found", "message": "no such endpoint"}),
    )
}

/// 405 with `Allow`.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = json(
        StatusCode::METHOD_NOT_ALLOWED,
        &serde_json::json!({"error": "method_not_allowed", "message": "method not allowed"}),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, HeaderValue::from_static(allow));
    r
}
