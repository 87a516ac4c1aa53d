//! Where the token comes from: transports and their precedence.
//!
//! The extraction is a pure function of the request head. It never copies
//! a token into an error, and [`Credential`]'s `Debug` redacts the token.

use crate::reason::Reason;
use http::header::{AUTHORIZATION, COOKIE, SEC_WEBSOCKET_PROTOCOL};
use http::HeaderMap;
use std::borrow::Cow;

/// A way of carrying a credential on the upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Sec-WebSocket-Protocol: jwt, <token>`.
    Subprotocol,
    /// `?ticket=<single-use ticket>`.
    Ticket,
    /// The session cookie (ambient: only with an allowed Origin).
    Cookie,
    /// `?token=<session token>` (opt-in; URLs leak into logs).
    Query,
    /// No credential on the upgrade: `{"type":"auth"}` as the first message.
    FirstMessage,
}

impl Transport {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transport::Bearer => "bearer",
            Transport::Subprotocol => "subprotocol",
            Transport::Ticket => "ticket",
            Transport::Cookie => "cookie",
            Transport::Query => "query",
            Transport::FirstMessage => "first_message",
        }
    }

    /// Parses a config name (`first_message` is not a configurable transport).
    pub fn from_config_name(s: &str) -> Option<Transport> {
        Some(match s {
            "bearer" => Transport::Bearer,
            "subprotocol" => Transport::Subprotocol,
            "ticket" => Transport::Ticket,
            "cookie" => Transport::Cookie,
            "query" => Transport::Query,
            _ => return None,
        })
    }

    /// Ambient credentials are sent by the browser on its own; explicit ones
    /// were put there by the page's code and win over ambient ones.
    pub const fn is_ambient(self) -> bool {
        matches!(self, Transport::Cookie)
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the extraction needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct ExtractPolicy {
    /// Enabled transports in precedence order.
    pub transports: Vec<Transport>,
    pub cookie_name: String,
    pub ticket_param: String,
    pub query_param: String,
    pub subprotocol: String,
    pub max_token_bytes: usize,
}

/// A credential found on the request. Borrowed from the request where possible.
pub struct Credential<'a> {
    pub transport: Transport,
    pub token: Cow<'a, str>,
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("transport", &self.transport)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// The offered subprotocols split into the sentinel pair and the rest.
#[derive(Debug, Default)]
pub struct Offered<'a> {
    /// Whether the sentinel was offered.
    pub sentinel: bool,
    /// Application protocols offered besides the sentinel and the token.
    pub application: Vec<&'a str>,
}

/// Error from extraction: a reason, and whether some token was presented
/// (for `WWW-Authenticate: error="invalid_token"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractError {
    pub reason: Reason,
    pub transport: Option<Transport>,
}

impl ExtractError {
    fn new(reason: Reason, transport: Transport) -> Self {
        ExtractError {
            reason,
            transport: Some(transport),
        }
    }
}

/// Finds the credential: the first enabled explicit transport that carries
/// one, in configured order, then the ambient cookie. Refuses ambiguity
/// (two Authorization headers, two session cookies with different values).
pub fn extract<'a>(
    policy: &ExtractPolicy,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<Option<Credential<'a>>, ExtractError> {
    let explicit = policy.transports.iter().filter(|t| !t.is_ambient());
    let ambient = policy.transports.iter().filter(|t| t.is_ambient());
    for &t in explicit.chain(ambient) {
        let found = match t {
            Transport::Bearer => bearer(headers)?,
            Transport::Subprotocol => subprotocol(headers, &policy.subprotocol)?,
            Transport::Ticket => query_param(query, &policy.ticket_param, t)?,
            Transport::Query => query_param(query, &policy.query_param, t)?,
            Transport::Cookie => cookie(headers, &policy.cookie_name)?,
            Transport::FirstMessage => None,
        };
        if let Some(token) = found {
            if token.len() > policy.max_token_bytes {
                return Err(ExtractError::new(Reason::TokenTooLarge, t));
            }
            if token.is_empty() {
                return Err(ExtractError::new(Reason::MalformedToken, t));
            }
            return Ok(Some(Credential {
                transport: t,
                token,
            }));
        }
    }
    Ok(None)
}

fn bearer(headers: &HeaderMap) -> Result<Option<Cow<'_, str>>, ExtractError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let err = |r| ExtractError::new(r, Transport::Bearer);
    if values.next().is_some() {
        return Err(err(Reason::MalformedToken));
    }
    let value = value.to_str().map_err(|_| err(Reason::MalformedToken))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, ...) carries no bearer token.
        return Ok(None);
    }
    Ok(Some(Cow::Borrowed(rest.trim())))
}

/// The subprotocol list as offered, in order, across repeated headers.
pub fn offered_protocols(headers: &HeaderMap) -> Result<Vec<&str>, Reason> {
    let mut out = Vec::new();
    for v in headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let v = v.to_str().map_err(|_| Reason::BadUpgrade)?;
        out.extend(v.split(',').map(str::trim).filter(|s| !s.is_empty()));
    }
    Ok(out)
}

/// Splits the offered protocols around the sentinel pair `[sentinel, token]`.
pub fn split_offered<'a>(offered: &[&'a str], sentinel: &str) -> Offered<'a> {
    let mut out = Offered::default();
    let mut skip_next = false;
    for p in offered {
        if skip_next {
            skip_next = false;
            continue;
        }
        if *p == sentinel && !out.sentinel {
            out.sentinel = true;
            skip_next = true;
            continue;
        }
        out.application.push(p);
    }
    out
}

fn subprotocol<'a>(
    headers: &'a HeaderMap,
    sentinel: &str,
) -> Result<Option<Cow<'a, str>>, ExtractError> {
    let err = |r| ExtractError::new(r, Transport::Subprotocol);
    let offered = offered_protocols(headers).map_err(|_| err(Reason::MalformedToken))?;
    let Some(pos) = offered.iter().position(|p| *p == sentinel) else {
        return Ok(None);
    };
    match offered.get(pos + 1) {
        Some(token) => Ok(Some(Cow::Borrowed(token))),
        // The sentinel alone means the client meant this transport but sent nothing usable.
        None => Err(err(Reason::MalformedToken)),
    }
}

fn query_param<'a>(
    query: Option<&'a str>,
    name: &str,
    t: Transport,
) -> Result<Option<Cow<'a, str>>, ExtractError> {
    let Some(q) = query else { return Ok(None) };
    let mut found: Option<Cow<'a, str>> = None;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if k == name {
            if found.is_some() {
                return Err(ExtractError::new(Reason::MalformedToken, t));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Value of a query parameter (first occurrence), percent-decoded.
pub fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<Cow<'a, str>>, ExtractError> {
    let mut found: Option<&'a str> = None;
    for v in headers.get_all(COOKIE) {
        // Non-UTF-8 cookie headers from other apps on the domain are not ours to judge.
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            let Some((k, val)) = pair.split_once('=') else {
                continue;
            };
            if k.trim() != name {
                continue;
            }
            let val = val.trim().trim_matches('"');
            match found {
                // Two different session cookies: a sibling subdomain may have
                // tossed one in; refuse rather than guess.
                Some(prev) if prev != val => {
                    return Err(ExtractError::new(Reason::MalformedToken, Transport::Cookie))
                }
                _ => found = Some(val),
            }
        }
    }
    Ok(found.map(Cow::Borrowed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn policy(ts: &[Transport]) -> ExtractPolicy {
        ExtractPolicy {
            transports: ts.to_vec(),
            cookie_name: "session".into(),
            ticket_param: "ticket".into(),
            query_param: "token".into(),
            subprotocol: "jwt".into(),
            max_token_bytes: 64,
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("test header"));
        }
        h
    }

    const ALL: [Transport; 5] = [
        Transport::Bearer,
        Transport::Subprotocol,
        Transport::Ticket,
        Transport::Cookie,
        Transport::Query,
    ];

    fn got(p: &ExtractPolicy, h: &HeaderMap, q: Option<&str>) -> Option<(Transport, String)> {
        extract(p, h, q)
            .expect("extract")
            .map(|c| (c.transport, c.token.into_owned()))
    }

    #[test]
    fn each_transport_alone() {
        let p = policy(&ALL);
        let h = headers(&[("authorization", "Bearer aaa")]);
        assert_eq!(got(&p, &h, None), Some((Transport::Bearer, "aaa".into())));
        let h = headers(&[("authorization", "bearer   aaa ")]);
        assert_eq!(got(&p, &h, None), Some((Transport::Bearer, "aaa".into())));
        let h = headers(&[("sec-websocket-protocol", "jwt, bbb")]);
        assert_eq!(
            got(&p, &h, None),
            Some((Transport::Subprotocol, "bbb".into()))
        );
        let h = HeaderMap::new();
        assert_eq!(
            got(&p, &h, Some("ticket=ccc")),
            Some((Transport::Ticket, "ccc".into()))
        );
        assert_eq!(
            got(&p, &h, Some("a=1&token=ddd")),
            Some((Transport::Query, "ddd".into()))
        );
        let h = headers(&[("cookie", "x=1; session=eee; y=2")]);
        assert_eq!(got(&p, &h, None), Some((Transport::Cookie, "eee".into())));
    }

    #[test]
    fn disabled_transports_are_ignored() {
        let p = policy(&[Transport::Bearer]);
        let h = headers(&[
            ("cookie", "session=eee"),
            ("sec-websocket-protocol", "jwt, b"),
        ]);
        assert_eq!(got(&p, &h, Some("token=x&ticket=y")), None);
    }

    #[test]
    fn precedence_follows_config_and_explicit_beats_cookie() {
        let h = headers(&[
            ("authorization", "Bearer aaa"),
            ("sec-websocket-protocol", "jwt, bbb"),
            ("cookie", "session=eee"),
        ]);
        let p = policy(&[Transport::Cookie, Transport::Subprotocol, Transport::Bearer]);
        // Cookie listed first is still ambient: the explicit subprotocol wins.
        assert_eq!(
            got(&p, &h, None),
            Some((Transport::Subprotocol, "bbb".into()))
        );
        let p = policy(&[Transport::Bearer, Transport::Subprotocol]);
        assert_eq!(got(&p, &h, None), Some((Transport::Bearer, "aaa".into())));
        let p = policy(&[Transport::Cookie]);
        assert_eq!(got(&p, &h, None), Some((Transport::Cookie, "eee".into())));
    }

    #[test]
    fn other_auth_scheme_is_no_bearer() {
        let p = policy(&ALL);
        let h = headers(&[("authorization", "Basic Zm9vOmJhcg==")]);
        assert_eq!(got(&p, &h, None), None);
    }

    #[test]
    fn ambiguity_and_size_are_refused() {
        let p = policy(&ALL);
        let h = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(
            extract(&p, &h, None).unwrap_err().reason,
            Reason::MalformedToken
        );
        let h = headers(&[("cookie", "session=a"), ("cookie", "session=b")]);
        assert_eq!(
            extract(&p, &h, None).unwrap_err().reason,
            Reason::MalformedToken
        );
        let h = headers(&[("cookie", "session=a; session=a")]);
        assert!(extract(&p, &h, None).is_ok());
        let big = format!("Bearer {}", "a".repeat(65));
        let h = headers(&[("authorization", &big)]);
        assert_eq!(
            extract(&p, &h, None).unwrap_err().reason,
            Reason::TokenTooLarge
        );
        let h = HeaderMap::new();
        assert_eq!(
            extract(&p, &h, Some("token=a&token=b")).unwrap_err().reason,
            Reason::MalformedToken
        );
        let h = headers(&[("authorization", "Bearer ")]);
        assert_eq!(
            extract(&p, &h, None).unwrap_err().reason,
            Reason::MalformedToken
        );
        let h = headers(&[("sec-websocket-protocol", "chat, jwt")]);
        assert_eq!(
            extract(&p, &h, None).unwrap_err().reason,
            Reason::MalformedToken
        );
    }

    #[test]
    fn non_utf8_authorization_is_malformed() {
        let p = policy(&ALL);
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").expect("opaque bytes are a valid header"),
        );
        assert_eq!(
            extract(&p, &h, None).unwrap_err().reason,
            Reason::MalformedToken
        );
    }

    #[test]
    fn offered_split() {
        let o = split_offered(&["chat.v1", "jwt", "tok", "other"], "jwt");
        assert!(o.sentinel);
        assert_eq!(o.application, vec!["chat.v1", "other"]);
        let o = split_offered(&["chat.v1"], "jwt");
        assert!(!o.sentinel);
    }

    #[test]
    fn debug_redacts_token() {
        let c = Credential {
            transport: Transport::Bearer,
            token: Cow::Borrowed("secret.token.value"),
        };
        assert!(!format!("{c:?}").contains("secret"));
    }
}
