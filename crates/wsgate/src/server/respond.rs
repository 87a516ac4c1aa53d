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
    json_bytes(status, value).map(Full::new)
}

fn json_bytes(status: StatusCode, value: &serde_json::Value) -> Response<Bytes> {
    let mut r = Response::new(Bytes::from(value.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A refused upgrade: status, JSON body, `Connection: close`, and the
/// headers its status calls for. `token_presented` adds RFC 6750's
/// `error="invalid_token"`. Nothing from the request is echoed. Both
/// [`reject`] (hyper) and [`reject_raw`] (written directly) are this.
fn rejection(reason: Reason, token_presented: bool) -> Response<Bytes> {
    let body = serde_json::json!({"error": reason.code(), "message": reason.message()});
    let mut r = json_bytes(reason.status(), &body);
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

/// [`rejection`] for hyper.
pub fn reject(reason: Reason, token_presented: bool) -> Response<Body> {
    rejection(reason, token_presented).map(Full::new)
}

/// The same rejection as the bytes of a whole HTTP/1.1 response, for
/// refusals written without hyper (early refusals, direct upgrades). Built
/// once per reason; a refused upgrade then only stamps the `date`.
pub fn reject_raw(reason: Reason, token_presented: bool) -> Vec<u8> {
    /// The response without its `date`, and where the date goes: last of
    /// the headers, where hyper puts it too.
    type Prebuilt = (Vec<u8>, usize);
    static ALL: std::sync::OnceLock<Vec<[Prebuilt; 2]>> = std::sync::OnceLock::new();
    let all = ALL.get_or_init(|| {
        let prebuilt = |r, presented| {
            let raw = encode_reject(r, presented);
            let at = memchr::memmem::find(&raw, b"\r\n\r\n").map_or(raw.len(), |i| i + 2);
            (raw, at)
        };
        Reason::ALL
            .iter()
            .map(|r| [prebuilt(*r, false), prebuilt(*r, true)])
            .collect()
    });
    let (raw, at) = &all[reason.index()][usize::from(token_presented)];
    let mut out = Vec::with_capacity(raw.len() + DATE_LINE_LEN);
    out.extend_from_slice(&raw[..*at]);
    push_date(&mut out);
    out.extend_from_slice(&raw[*at..]);
    out
}

/// `date: <IMF-fixdate>\r\n`.
pub const DATE_LINE_LEN: usize = 6 + 29 + 2;

/// Appends a `date` header line (RFC 9110 6.6.1: an origin server sends one
/// with every 4xx). Formatted once a second per thread, as hyper does.
pub fn push_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(c.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// [`rejection`] as HTTP/1.1 bytes (lower-case names, as hyper writes them).
fn encode_reject(reason: Reason, token_presented: bool) -> Vec<u8> {
    let r = rejection(reason, token_presented);
    let status = r.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
    )
    .into_bytes();
    for (name, value) in r.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", r.body().len()).as_bytes());
    out.extend_from_slice(r.body());
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_rejections_are_whole_dated_responses() {
        for reason in Reason::ALL.iter().copied() {
            for presented in [false, true] {
                let raw = reject_raw(reason, presented);
                let resp = match crate::http_head::parse_response(&raw) {
                    Ok(resp) => resp,
                    other => panic!("{reason:?}: {other:?}"),
                };
                let len = resp.len;
                assert_eq!(resp.status, reason.status().as_u16());
                let get = |name: &str| {
                    resp.headers
                        .get(name)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                };
                let body: serde_json::Value =
                    serde_json::from_slice(&raw[len..]).expect("json body");
                assert_eq!(body["error"], reason.code());
                assert_eq!(get("content-length"), Some((raw.len() - len).to_string()));
                assert_eq!(get("connection").as_deref(), Some("close"));
                let date = get("date").expect("date");
                assert!(httpdate::parse_http_date(&date).is_ok(), "{date}");
                let www = get("www-authenticate");
                assert_eq!(www.is_some(), reason.is_unauthorized());
                if let Some(www) = www {
                    assert_eq!(www.contains("invalid_token"), presented);
                }
            }
        }
    }
}
