//! Which address is the client: the TCP peer, or what trusted proxies say.
//!
//! Proxy headers are written by whoever sent the request, so they are only
//! believed when the TCP peer is a configured trusted proxy, and then only as
//! far as the chain of trusted proxies goes: each proxy appends the address it
//! saw, so walking the list from the right, the first hop that is not a
//! trusted proxy is the client. Everything to the left of it was written by
//! the client itself and may be forged.
//!
//! Pure: no I/O; at most [`MAX_HOPS`] entries are kept or walked, and time
//! is linear in the header length.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::FORWARDED;
use http::HeaderMap;
use ipnet::{IpNet, Ipv4Net};

/// At most this many hops are examined, counted from the right. A longer
/// chain of trusted proxies does not exist in practice; a longer header is
/// someone making the gateway parse garbage.
pub const MAX_HOPS: usize = 64;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// Which proxy header to believe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    /// `Forwarded` when the request has one, else `X-Forwarded-For`.
    #[default]
    Auto,
    /// Only RFC 7239 `Forwarded`.
    Forwarded,
    /// Only `X-Forwarded-For`.
    XForwardedFor,
}

/// The configured `[trusted_proxies] cidrs`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ProxyHeader,
}

impl TrustedProxies {
    /// IPv4-mapped IPv6 networks (`::ffff:10.0.0.0/104`) are stored as their
    /// IPv4 equivalent so that one spelling matches both kinds of peer.
    pub fn new(cidrs: Vec<IpNet>) -> Self {
        let nets = cidrs.into_iter().map(normalize_net).collect();
        TrustedProxies {
            nets,
            header: ProxyHeader::Auto,
        }
    }

    /// Restrict which header is consulted. With [`ProxyHeader::Auto`] a
    /// client can pick the header: if the proxies only write one of them,
    /// they must strip the other, or this must name the one they write.
    pub fn with_header(mut self, header: ProxyHeader) -> Self {
        self.header = header;
        self
    }

    /// No proxy is trusted: the peer is always the client.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy. An IPv4-mapped IPv6 address (what a
    /// dual-stack socket reports for an IPv4 peer) matches IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let canonical = ip.to_canonical();
        self.nets
            .iter()
            .any(|net| net.contains(&canonical) || net.contains(&ip))
    }
}

fn normalize_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if v6.prefix_len() >= 96 {
            if let Some(v4) = v6.addr().to_ipv4_mapped() {
                if let Ok(n) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n);
                }
            }
        }
    }
    net
}

/// One list entry, seen from the right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr),
    /// Malformed, obfuscated (`_hidden`), `unknown`, or not text: nothing
    /// further left can be believed.
    Opaque,
}

/// The client's address.
///
/// Only when `peer` is trusted are `X-Forwarded-For` / `Forwarded`
/// consulted; the client is the rightmost address that is not a trusted
/// proxy (walking from the right, skipping trusted hops); if every hop is
/// trusted, the leftmost. A malformed or opaque entry stops the walk: the
/// last good address reached (a trusted hop, or the peer) is used. At most
/// [`MAX_HOPS`] entries are considered. The peer is returned unchanged
/// (IPv4-mapped addresses are not rewritten).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let use_forwarded = match trusted.header {
        ProxyHeader::Auto => headers.contains_key(FORWARDED),
        ProxyHeader::Forwarded => true,
        ProxyHeader::XForwardedFor => false,
    };
    if use_forwarded {
        walk(peer, forwarded_hops(headers).into_iter().rev(), trusted)
    } else {
        walk(peer, xff_hops(headers), trusted)
    }
}

/// What the nearest trusted proxy says of the request it forwarded: the
/// scheme and the host the client used with it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProxyReport<'a> {
    /// `Some(true)` for `https`, `Some(false)` for `http`; `None` when the
    /// proxy said nothing, or anything else.
    pub https: Option<bool>,
    /// The host, unvalidated (the caller decides what a plausible one is).
    pub host: Option<Cow<'a, str>>,
}

/// The scheme and host the nearest proxy reports, when `peer` is a trusted
/// proxy (nothing otherwise), from the header the proxies write (see
/// [`TrustedProxies::with_header`]): `X-Forwarded-Proto` and
/// `X-Forwarded-Host` beside `X-Forwarded-For`, the `proto=` and `host=` of
/// the last element with `Forwarded`. Each is the rightmost entry, the one
/// the nearest proxy set or appended, as the client address is read from
/// the right. A proxy must set these itself: one that passes a client's
/// through untouched lets the client choose them.
pub fn proxy_report<'a>(
    peer: IpAddr,
    headers: &'a HeaderMap,
    trusted: &TrustedProxies,
) -> ProxyReport<'a> {
    if !trusted.contains(peer) {
        return ProxyReport::default();
    }
    let use_forwarded = match trusted.header {
        ProxyHeader::Auto => headers.contains_key(FORWARDED),
        ProxyHeader::Forwarded => true,
        ProxyHeader::XForwardedFor => false,
    };
    let (proto, host) = if use_forwarded {
        nearest_forwarded(headers)
    } else {
        let last = |name: &str| {
            let value = headers.get_all(name).iter().next_back()?.to_str().ok()?;
            let entry = value.rsplit(',').next()?.trim_matches(is_ows);
            (!entry.is_empty()).then_some(Cow::Borrowed(entry))
        };
        (last(X_FORWARDED_PROTO), last(X_FORWARDED_HOST))
    };
    let https = proto.and_then(|p| {
        if p.eq_ignore_ascii_case("https") {
            Some(true)
        } else if p.eq_ignore_ascii_case("http") {
            Some(false)
        } else {
            None
        }
    });
    ProxyReport { https, host }
}

/// `proto=` and `host=` of the last element of the last `Forwarded`
/// header; nothing from a malformed element.
fn nearest_forwarded(headers: &HeaderMap) -> (Option<Cow<'_, str>>, Option<Cow<'_, str>>) {
    let Some(Ok(line)) = headers
        .get_all(FORWARDED)
        .iter()
        .next_back()
        .map(|v| v.to_str())
    else {
        return (None, None);
    };
    let Some(element) = split_unquoted(line, b',')
        .map(|e| e.trim_matches(is_ows))
        .filter(|e| !e.is_empty())
        .last()
    else {
        return (None, None);
    };
    let (mut proto, mut host) = (None, None);
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim_matches(is_ows);
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return (None, None);
        };
        let Some(value) = unquote(value.trim_matches(is_ows)) else {
            return (None, None);
        };
        let slot = match name.trim_matches(is_ows) {
            n if n.eq_ignore_ascii_case("proto") => &mut proto,
            n if n.eq_ignore_ascii_case("host") => &mut host,
            _ => continue,
        };
        // A parameter given twice is as ambiguous as two `for=`.
        if slot.replace(value).is_some() {
            return (None, None);
        }
    }
    (proto, host)
}

/// `hops` must yield from the right (nearest proxy first); `None` is an
/// empty list element, skipped but counted towards [`MAX_HOPS`].
fn walk(peer: IpAddr, hops: impl Iterator<Item = Option<Hop>>, trusted: &TrustedProxies) -> IpAddr {
    let mut client = peer;
    for hop in hops.take(MAX_HOPS) {
        match hop {
            None => {}
            Some(Hop::Opaque) => return client,
            Some(Hop::Addr(ip)) => {
                client = ip;
                if !trusted.contains(ip) {
                    return ip;
                }
            }
        }
    }
    client
}

/// `X-Forwarded-For` entries from the right, lazily: repeated headers are
/// one list in order, so the last header's last entry comes first. Empty
/// list elements are skipped (RFC 9110 §5.6.1) but still count as hops for
/// the work bound.
fn xff_hops(headers: &HeaderMap) -> impl Iterator<Item = Option<Hop>> + '_ {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        // A value that is not visible ASCII becomes "\0", which no address
        // parses from: one opaque hop that stops the walk.
        .flat_map(|value| value.to_str().unwrap_or("\0").rsplit(','))
        .map(|entry| {
            let entry = entry.trim_matches(is_ows);
            if entry.is_empty() {
                None
            } else {
                Some(parse_node(entry).map_or(Hop::Opaque, Hop::Addr))
            }
        })
}

/// The `for=` of each `Forwarded` element, in order, keeping only the last
/// [`MAX_HOPS`]. Quoted strings may contain commas, so the header is parsed
/// left to right (linear in its length, which `server.max_header_bytes`
/// bounds) rather than split from the right.
fn forwarded_hops(headers: &HeaderMap) -> VecDeque<Option<Hop>> {
    let mut hops = VecDeque::with_capacity(MAX_HOPS);
    let mut push = |hop: Option<Hop>| {
        if hops.len() == MAX_HOPS {
            hops.pop_front();
        }
        hops.push_back(hop);
    };
    for value in headers.get_all(FORWARDED) {
        let Ok(s) = value.to_str() else {
            push(Some(Hop::Opaque));
            continue;
        };
        for element in split_unquoted(s, b',') {
            let element = element.trim_matches(is_ows);
            if element.is_empty() {
                push(None);
            } else {
                push(Some(forwarded_element(element)));
            }
        }
    }
    hops
}

/// The node named by an element's single `for=` parameter. An element with
/// no `for`, two of them, or any malformed pair is opaque.
fn forwarded_element(element: &str) -> Hop {
    let mut found: Option<IpAddr> = None;
    for pair in split_unquoted(element, b';') {
        let pair = pair.trim_matches(is_ows);
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = pair.split_once('=') else {
            return Hop::Opaque;
        };
        let name = name.trim_matches(is_ows);
        let value = value.trim_matches(is_ows);
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Hop::Opaque;
        }
        let Some(value) = unquote(value) else {
            return Hop::Opaque;
        };
        if name.eq_ignore_ascii_case("for") {
            if found.is_some() {
                return Hop::Opaque;
            }
            match parse_node(&value) {
                Some(ip) => found = Some(ip),
                None => return Hop::Opaque,
            }
        }
    }
    found.map_or(Hop::Opaque, Hop::Addr)
}

/// Splits on `sep` outside double-quoted strings (with `\` escapes). An
/// unterminated quote runs to the end, and then fails to unquote.
fn split_unquoted(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut in_quote = false;
        while i < bytes.len() {
            let b = bytes[i];
            if in_quote {
                match b {
                    b'\\' => i += 1,
                    b'"' => in_quote = false,
                    _ => {}
                }
            } else if b == b'"' {
                in_quote = true;
            } else if b == sep {
                let part = s.get(start..i);
                i += 1;
                start = i;
                return part;
            }
            i += 1;
        }
        done = true;
        s.get(start..)
    })
}

/// A token, or a quoted-string with its escapes removed.
fn unquote(value: &str) -> Option<std::borrow::Cow<'_, str>> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.is_empty() && !value.contains(['"', ' ', '\t']))
            .then_some(std::borrow::Cow::Borrowed(value));
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            // The closing quote must be the last character.
            '"' => return chars.as_str().is_empty().then_some(out.into()),
            c => out.push(c),
        }
    }
    None
}

/// An address with an optional port: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`. Anything else (including `unknown`
/// and obfuscated `_names`) is `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = addr.parse().ok()?;
        if after.is_empty() || after.strip_prefix(':').is_some_and(is_port) {
            return Some(IpAddr::V6(ip));
        }
        return None;
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = node.split_once(':')?;
    let ip: Ipv4Addr = host.parse().ok()?;
    is_port(port).then_some(IpAddr::V4(ip))
}

/// A decimal port, or an RFC 7239 obfuscated port (`_abc`): the port is
/// dropped either way, so only its shape is checked.
fn is_port(port: &str) -> bool {
    match port.strip_prefix('_') {
        Some(obf) => {
            !obf.is_empty()
                && obf
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => {
            !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        }
    }
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    fn nets(cidrs: &[&str]) -> TrustedProxies {
        TrustedProxies::new(cidrs.iter().map(|c| c.parse().expect("cidr")).collect())
    }

    fn hdrs(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_str(value).expect("value"));
        }
        h
    }

    const PROXY: &str = "10.0.0.1";

    fn proxies() -> TrustedProxies {
        nets(&["10.0.0.0/8", "fd00::/8"])
    }

    #[test]
    fn untrusted_peer_ignores_headers() {
        let h = hdrs(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        let peer = ip("203.0.113.9");
        assert_eq!(client_ip(peer, &h, &proxies()), peer);
        assert_eq!(client_ip(peer, &h, &TrustedProxies::default()), peer);
    }

    #[test]
    fn trusted_peer_without_headers_is_client() {
        assert_eq!(
            client_ip(ip(PROXY), &HeaderMap::new(), &proxies()),
            ip(PROXY)
        );
    }

    #[test]
    fn trusted_peer_with_xff_chain() {
        // client -> 10.0.0.3 -> 10.0.0.2 -> peer
        let h = hdrs(&[("x-forwarded-for", "198.51.100.7, 10.0.0.3,10.0.0.2")]);
        assert_eq!(client_ip(ip(PROXY), &h, &proxies()), ip("198.51.100.7"));
    }

    #[test]
    fn spoofed_left_entries_ignored() {
        // The client sent "6.6.6.6, 10.9.9.9" itself; the proxy appended
        // the real address.
        let h = hdrs(&[("x-forwarded-for", "6.6.6.6, 10.9.9.9, 198.51.100.7")]);
        assert_eq!(client_ip(ip(PROXY), &h, &proxies()), ip("198.51.100.7"));
    }

    #[test]
    fn repeated_xff_headers_are_one_list() {
        let h = hdrs(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7, 10.0.0.2"),
        ]);
        assert_eq!(client_ip(ip(PROXY), &h, &proxies()), ip("198.51.100.7"));
        let h = hdrs(&[
            ("x-forwarded-for", "6.6.6.6, 10.0.0.3"),
            ("x-forwarded-for", "10.0.0.2"),
        ]);
        assert_eq!(client_ip(ip(PROXY), &h, &proxies()), ip("6.6.6.6"));
    }

    #[test]
    fn all_trusted_gives_leftmost() {
        let h = hdrs(&[("x-forwarded-for", "10.0.0.5, 10.0.0.4, 10.0.0.3")]);
        assert_eq!(client_ip(ip(PROXY), &h, &proxies()), ip("10.0.0.5"));
    }

    #[test]
    fn garbage_stops_the_walk() {
        let p = proxies();
        // Garbage right next to the peer: the peer is all we know.
        for bad in [
            "nonsense",
            "1.2.3",
            "1.2.3.4.5",
            "1.2.3.4:99999",
            "_hidden",
            "unknown",
            "[::1",
            "::1]:80",
            "1.2.3.4:",
            "fe80::1%eth0",
        ] {
            let h = hdrs(&[("x-forwarded-for", &format!("5.5.5.5, {bad}"))]);
            assert_eq!(client_ip(ip(PROXY), &h, &p), ip(PROXY), "{bad}");
        }
        // Garbage behind a trusted hop: that hop is the last good address.
        let h = hdrs(&[("x-forwarded-for", "5.5.5.5, garbage, 10.0.0.3")]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip("10.0.0.3"));
        // Garbage left of an untrusted hop is never reached.
        let h = hdrs(&[("x-forwarded-for", "garbage, 198.51.100.7")]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip("198.51.100.7"));
        // Non-ASCII header bytes.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"5.5.5.5\xff").expect("obs-text"),
        );
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip(PROXY));
        // Empty list elements are skipped, not believed.
        let h = hdrs(&[("x-forwarded-for", "198.51.100.7, , 10.0.0.3,")]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip("198.51.100.7"));
        let h = hdrs(&[("x-forwarded-for", "")]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip(PROXY));
    }

    #[test]
    fn ipv6_and_mapped_peers() {
        let p = proxies();
        let h = hdrs(&[("x-forwarded-for", "2001:db8::7, fd00::2")]);
        assert_eq!(client_ip(ip("fd00::1"), &h, &p), ip("2001:db8::7"));
        // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d.
        let mapped = ip("::ffff:10.0.0.1");
        assert!(p.contains(mapped));
        assert!(!p.contains(ip("::ffff:11.0.0.1")));
        assert_eq!(client_ip(mapped, &h, &p), ip("2001:db8::7"));
        // A mapped cidr matches plain IPv4 peers too.
        let m = nets(&["::ffff:10.0.0.0/104"]);
        assert!(m.contains(ip("10.1.2.3")));
        assert!(m.contains(ip("::ffff:10.1.2.3")));
        assert!(!m.contains(ip("11.1.2.3")));
        // ::/0 trusts mapped peers as well.
        assert!(nets(&["::/0"]).contains(mapped));
        assert!(!nets(&["::/0"]).contains(ip("10.0.0.1")));
    }

    #[test]
    fn ports_are_stripped() {
        let p = proxies();
        let cases = [
            ("198.51.100.7:5678, 10.0.0.2:443", "198.51.100.7"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:_obf", "2001:db8::1"),
        ];
        for (xff, want) in cases {
            let h = hdrs(&[("x-forwarded-for", xff)]);
            assert_eq!(client_ip(ip(PROXY), &h, &p), ip(want), "{xff}");
        }
    }

    #[test]
    fn forwarded_forms() {
        let p = proxies();
        let cases = [
            ("for=198.51.100.7", "198.51.100.7"),
            ("For=\"198.51.100.7:80\";proto=https", "198.51.100.7"),
            ("for=\"[2001:db8::1]:4711\"", "2001:db8::1"),
            ("for=\"[2001:db8::1]\";by=10.0.0.1", "2001:db8::1"),
            (
                "for=6.6.6.6, for=198.51.100.7;proto=http, for=10.0.0.2",
                "198.51.100.7",
            ),
            ("for=10.0.0.5;host=\"a,b\", for=10.0.0.3", "10.0.0.5"),
            ("proto=https;for=198.51.100.7 ; by=_x", "198.51.100.7"),
            ("for=\"\\1\\98.51.100.7\"", "198.51.100.7"),
            // Obfuscated or unknown stops the walk at the last good hop.
            ("for=1.1.1.1, for=_hidden", PROXY),
            ("for=1.1.1.1, for=unknown, for=10.0.0.3", "10.0.0.3"),
            ("for=\"_gazonk\"", PROXY),
            // Malformed elements.
            ("for=1.1.1.1, proto=https", PROXY),
            ("for=1.1.1.1;for=2.2.2.2", PROXY),
            ("for=\"1.1.1.1", PROXY),
            ("for=\"1.1.1.1\"x", PROXY),
            ("for=1.1.1.1, junk", PROXY),
            ("for=", PROXY),
            ("=1.1.1.1", PROXY),
            ("for=1.1.1.1, for=\"[2001:db8::1]:4711, for=10.0.0.2", PROXY),
        ];
        for (fwd, want) in cases {
            let h = hdrs(&[("forwarded", fwd)]);
            assert_eq!(client_ip(ip(PROXY), &h, &p), ip(want), "{fwd}");
        }
        // Repeated Forwarded headers are one list.
        let h = hdrs(&[
            ("forwarded", "for=198.51.100.7"),
            ("forwarded", "for=10.0.0.2"),
        ]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip("198.51.100.7"));
    }

    #[test]
    fn forwarded_preferred_over_xff_unless_configured() {
        let h = hdrs(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("forwarded", "for=198.51.100.2"),
        ]);
        assert_eq!(client_ip(ip(PROXY), &h, &proxies()), ip("198.51.100.2"));
        let xff = proxies().with_header(ProxyHeader::XForwardedFor);
        assert_eq!(client_ip(ip(PROXY), &h, &xff), ip("198.51.100.1"));
        let fwd = proxies().with_header(ProxyHeader::Forwarded);
        assert_eq!(client_ip(ip(PROXY), &h, &fwd), ip("198.51.100.2"));
        let only_xff = hdrs(&[("x-forwarded-for", "198.51.100.1")]);
        assert_eq!(client_ip(ip(PROXY), &only_xff, &fwd), ip(PROXY));
    }

    #[test]
    fn proxy_report_only_from_a_trusted_peer_and_its_header() {
        let h = hdrs(&[
            ("x-forwarded-proto", "HTTPS"),
            ("x-forwarded-host", "app.example:8443"),
            (
                "forwarded",
                "for=1.1.1.1;proto=http;host=\"fwd.example:80\"",
            ),
        ]);
        let xff = proxies().with_header(ProxyHeader::XForwardedFor);
        // Anyone else's say is ignored.
        assert_eq!(
            proxy_report(ip("1.1.1.1"), &h, &xff),
            ProxyReport::default()
        );
        let r = proxy_report(ip(PROXY), &h, &xff);
        assert_eq!(r.https, Some(true));
        assert_eq!(r.host.as_deref(), Some("app.example:8443"));
        let fwd = proxies().with_header(ProxyHeader::Forwarded);
        let r = proxy_report(ip(PROXY), &h, &fwd);
        assert_eq!(r.https, Some(false));
        assert_eq!(r.host.as_deref(), Some("fwd.example:80"));
        // The other header is not read.
        let only = hdrs(&[("x-forwarded-proto", "https")]);
        assert_eq!(proxy_report(ip(PROXY), &only, &fwd), ProxyReport::default());
    }

    #[test]
    fn proxy_report_is_the_nearest_proxys_entry() {
        let xff = proxies().with_header(ProxyHeader::XForwardedFor);
        // Appended lists and repeated lines: the rightmost entry.
        let h = hdrs(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-host", "forged.example, real.example "),
        ]);
        let r = proxy_report(ip(PROXY), &h, &xff);
        assert_eq!(r.https, Some(false));
        assert_eq!(r.host.as_deref(), Some("real.example"));
        // Anything but http/https is no scheme; an empty entry no host.
        for v in ["wss", "https ;x", "", "ftp"] {
            let h = hdrs(&[("x-forwarded-proto", v), ("x-forwarded-host", "a.example,")]);
            assert_eq!(
                proxy_report(ip(PROXY), &h, &xff),
                ProxyReport::default(),
                "{v}"
            );
        }
        let fwd = proxies().with_header(ProxyHeader::Forwarded);
        let cases: [(&str, Option<bool>, Option<&str>); 6] = [
            (
                "proto=http;host=a, PROTO=HTTPS;Host=\"b:1\"",
                Some(true),
                Some("b:1"),
            ),
            ("for=1.1.1.1;proto=https, for=2.2.2.2", None, None),
            ("proto=https;proto=https", None, None),
            ("proto=https;junk", None, None),
            ("host=\"unterminated", None, None),
            (
                "for=1.1.1.1;host=\"a,b\";proto=https",
                Some(true),
                Some("a,b"),
            ),
        ];
        for (v, https, host) in cases {
            let h = hdrs(&[("forwarded", v)]);
            let r = proxy_report(ip(PROXY), &h, &fwd);
            assert_eq!((r.https, r.host.as_deref()), (https, host), "{v}");
        }
    }

    #[test]
    fn header_over_64_hops() {
        let p = proxies();
        // A forged client address left of 100 trusted hops is out of reach:
        // the walk stops at the 64th hop from the right.
        let hops: Vec<String> = (0..100)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect();
        let xff = format!("6.6.6.6, {}", hops.join(", "));
        let h = hdrs(&[("x-forwarded-for", &xff)]);
        let want = ip(&hops[100 - MAX_HOPS]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), want);

        let fwd: Vec<String> = hops.iter().map(|h| format!("for={h}")).collect();
        let fwd = format!("for=6.6.6.6, {}", fwd.join(", "));
        let h = hdrs(&[("forwarded", &fwd)]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), want);

        // Exactly 64 trusted hops and the client beyond them: not reached.
        let xff = format!("198.51.100.7, {}", hops[..MAX_HOPS].join(", "));
        let h = hdrs(&[("x-forwarded-for", &xff)]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip(&hops[0]));
        // 63 trusted hops: the client is the 64th.
        let xff = format!("198.51.100.7, {}", hops[..MAX_HOPS - 1].join(", "));
        let h = hdrs(&[("x-forwarded-for", &xff)]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip("198.51.100.7"));

        // Thousands of empty elements are bounded too.
        let xff = format!("6.6.6.6{}", ",".repeat(5000));
        let h = hdrs(&[("x-forwarded-for", &xff)]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip(PROXY));
    }
}
