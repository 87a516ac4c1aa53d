//! Every URL of the configuration is read here, by the `url` crate: JWKS
//! URLs, the upstream, the store. The strings are kept as written (their
//! users build requests from them); this only decides whether they are
//! acceptable and what part of them may be shown.

use std::net::IpAddr;
use url::{Host, Position, Url};

fn parse(text: &str) -> Result<Url, String> {
    Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL ({e})"))
}

/// `localhost` or a loopback address.
fn is_loopback(u: &Url) -> bool {
    match u.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).to_canonical().is_loopback(),
        None => false,
    }
}

fn has_host(u: &Url) -> bool {
    u.host_str().is_some_and(|h| !h.is_empty())
}

/// A JWK set comes over TLS; plain http only from this machine (exactly
/// 127.0.0.1, localhost or [::1]).
pub(super) fn check_jwks(text: &str) -> Result<(), String> {
    let u = parse(text)?;
    match u.scheme() {
        "https" if has_host(&u) => Ok(()),
        "https" => Err(format!("{text:?} has no host")),
        "http" => match u.host() {
            Some(Host::Domain("localhost")) => Ok(()),
            Some(Host::Ipv4(ip)) if ip == std::net::Ipv4Addr::LOCALHOST => Ok(()),
            Some(Host::Ipv6(ip)) if ip == std::net::Ipv6Addr::LOCALHOST => Ok(()),
            _ => Err(format!(
                "{text:?} must use https:// (http:// is accepted only for 127.0.0.1, localhost \
                 and [::1])"
            )),
        },
        _ => Err(format!("{text:?} must be an https:// URL")),
    }
}

/// `backend.upstream`: `ws://` or `wss://` with a host.
pub(super) fn check_upstream(text: &str) -> Result<(), String> {
    match Url::parse(text.trim()) {
        Ok(u) if matches!(u.scheme(), "ws" | "wss") && has_host(&u) => Ok(()),
        _ => Err(format!(
            "{text:?} must be a ws:// or wss:// URL with a host"
        )),
    }
}

/// Whether the upstream is reached in clear text over the network.
pub(super) fn upstream_in_clear(text: &str) -> bool {
    Url::parse(text.trim()).is_ok_and(|u| u.scheme() == "ws" && !is_loopback(&u))
}

/// The scheme of a store URL that names a host (`redis`, `rediss`), or
/// `None`. The URL may carry a password: callers never echo it.
pub(super) fn store_scheme(text: &str) -> Option<String> {
    Url::parse(text)
        .ok()
        .filter(has_host)
        .map(|u| u.scheme().to_owned())
}

/// `text` with the password of its userinfo replaced by `[redacted]`; a
/// lone userinfo is the password in redis URLs (`redis://pass@host`). What
/// does not parse as a URL is not shown at all.
pub(super) fn without_password(text: &str) -> String {
    let Ok(u) = Url::parse(text) else {
        return super::redact::REDACTED.to_owned();
    };
    let user = match (u.username(), u.password()) {
        ("", None) => return text.to_owned(),
        (user, Some(_)) => format!("{user}:{}", super::redact::REDACTED),
        (_, None) => super::redact::REDACTED.to_owned(),
    };
    format!("{}://{user}@{}", u.scheme(), &u[Position::BeforeHost..])
}
