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
    /// Malformed, obfuscated (`_hidden`), `unknown`, or not an address in
    /// ASCII: nothing further left can be believed.
    Opaque,
}

/// The client's address.
///
/// Only when `peer` is trusted are `X-Forwarded-For` / `Forwarded`
/// consulted; the client is the rightmost address that is not a trusted
/// proxy (walking from the right, skipping trusted hops); if every hop is
/// trusted, the leftmost. A malformed or opaque entry stops the walk: the
/// last good address reached is used, a trusted hop, or the peer when the
/// nearest proxy's own entry (the rightmost) is the bad one. At most
/// [`MAX_HOPS`] entries are considered. The peer is returned unchanged
/// (IPv4-mapped addresses are not rewritten).
///
/// Headers are read as bytes, entry by entry: a byte that is not visible
/// ASCII (obs-text, which HTTP allows in field values) spoils only the
/// entry it is in. Anything a client writes lies left of the entry its
/// proxy appends, so no byte a client sends can stop the walk before its
/// own address, nor make the gateway fall back to the proxy's.
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
/// the right, and as bytes: what a client wrote further left cannot spoil
/// it. A proxy must set these itself: one that passes a client's through
/// untouched lets the client choose them.
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
            let value = headers.get_all(name).iter().next_back()?.as_bytes();
            let entry = trim_ows(value.rsplit(|&b| b == b',').next()?);
            (!entry.is_empty()).then_some(Cow::Borrowed(entry))
        };
        (last(X_FORWARDED_PROTO), last(X_FORWARDED_HOST))
    };
    let https = proto.and_then(|p| {
        if p.eq_ignore_ascii_case(b"https") {
            Some(true)
        } else if p.eq_ignore_ascii_case(b"http") {
            Some(false)
        } else {
            None
        }
    });
    ProxyReport {
        https,
        host: host.and_then(text),
    }
}

/// Bytes as text, when they are visible ASCII (the only host a caller can
/// use; anything else is no report).
fn text(b: Cow<'_, [u8]>) -> Option<Cow<'_, str>> {
    if !b
        .iter()
        .all(|c| c.is_ascii_graphic() || *c == b' ' || *c == b'\t')
    {
        return None;
    }
    match b {
        Cow::Borrowed(b) => std::str::from_utf8(b).ok().map(Cow::Borrowed),
        Cow::Owned(v) => String::from_utf8(v).ok().map(Cow::Owned),
    }
}

type Bytes<'a> = Option<Cow<'a, [u8]>>;

/// `proto=` and `host=` of the last element of the last `Forwarded`
/// header; nothing from a malformed element.
fn nearest_forwarded(headers: &HeaderMap) -> (Bytes<'_>, Bytes<'_>) {
    let Some(line) = headers.get_all(FORWARDED).iter().next_back() else {
        return (None, None);
    };
    let Some(element) = split_unquoted(line.as_bytes(), b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
        .last()
    else {
        return (None, None);
    };
    let (mut proto, mut host) = (None, None);
    for pair in split_unquoted(element, b';') {
        let pair = trim_ows(pair);
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = split_once(pair, b'=') else {
            return (None, None);
        };
        let Some(value) = unquote(trim_ows(value)) else {
            return (None, None);
        };
        let slot = match trim_ows(name) {
            n if n.eq_ignore_ascii_case(b"proto") => &mut proto,
            n if n.eq_ignore_ascii_case(b"host") => &mut host,
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
/// one list in order, so the last header's last entry comes first. Split
/// on bytes, so one entry's odd byte spoils that entry only. Empty list
/// elements are skipped (RFC 9110 §5.6.1) but still count as hops for the
/// work bound.
fn xff_hops(headers: &HeaderMap) -> impl Iterator<Item = Option<Hop>> + '_ {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|&b| b == b','))
        .map(|entry| {
            let entry = trim_ows(entry);
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
        for element in split_unquoted(value.as_bytes(), b',') {
            let element = trim_ows(element);
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
fn forwarded_element(element: &[u8]) -> Hop {
    let mut found: Option<IpAddr> = None;
    for pair in split_unquoted(element, b';') {
        let pair = trim_ows(pair);
        if pair.is_empty() {
            continue;
        }
        let Some((name, value)) = split_once(pair, b'=') else {
            return Hop::Opaque;
        };
        let name = trim_ows(name);
        if name.is_empty() || !name.iter().copied().all(is_tchar) {
            return Hop::Opaque;
        }
        let Some(value) = unquote(trim_ows(value)) else {
            return Hop::Opaque;
        };
        if name.eq_ignore_ascii_case(b"for") {
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
fn split_unquoted(s: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut i = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut in_quote = false;
        while i < s.len() {
            let b = s[i];
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

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|&b| b == sep)?;
    Some((&s[..at], &s[at + 1..]))
}

/// A token, or a quoted-string with its escapes removed.
fn unquote(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let Some(inner) = value.strip_prefix(b"\"") else {
        return (!value.is_empty() && !value.iter().any(|b| matches!(b, b'"' | b' ' | b'\t')))
            .then_some(Cow::Borrowed(value));
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.push(*bytes.next()?),
            // The closing quote must be the last byte.
            b'"' => return bytes.as_slice().is_empty().then_some(out.into()),
            b => out.push(b),
        }
    }
    None
}

/// An address with an optional port: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:443`. Anything else (including `unknown`,
/// obfuscated `_names` and any byte that is not ASCII) is `None`.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    // Only ASCII spells an address; the check makes the conversion total.
    let node = std::str::from_utf8(node).ok().filter(|s| s.is_ascii())?;
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

/// Without the optional whitespace (SP, HTAB) around a list element.
fn trim_ows(s: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = s.iter().position(|b| !ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &s[start..end]
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

    fn raw_hdrs(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_bytes(value).expect("value"));
        }
        h
    }

    /// Issue 28: one obs-text byte in what the client sent made the whole
    /// header unreadable, and the gateway fell back to the proxy's address.
    #[test]
    fn client_bytes_never_hide_the_address_its_proxy_appended() {
        let p = proxies();
        let want = ip("203.0.113.50");
        // Every byte a field value may hold, as the client's whole header,
        // then what nginx's $proxy_add_x_forwarded_for appends.
        for b in (0x20u8..=0xff).filter(|&b| b != 0x7f).chain([b'\t']) {
            for client in [
                vec![b],
                vec![b'1', b, b'2'],
                [b"6.6.6.6", &[b][..]].concat(),
            ] {
                let line = [&client[..], b", 203.0.113.50"].concat();
                let h = raw_hdrs(&[("x-forwarded-for", &line)]);
                assert_eq!(client_ip(ip(PROXY), &h, &p), want, "{line:?}");
                // The client's own line, then the proxy's (HAProxy adds one).
                let h = raw_hdrs(&[
                    ("x-forwarded-for", &client),
                    ("x-forwarded-for", b"203.0.113.50"),
                ]);
                assert_eq!(client_ip(ip(PROXY), &h, &p), want, "{client:?}");
                let h = raw_hdrs(&[("forwarded", &client), ("forwarded", b"for=203.0.113.50")]);
                assert_eq!(client_ip(ip(PROXY), &h, &p), want, "{client:?}");
            }
        }
        // Through a chain of trusted proxies too.
        let h = raw_hdrs(&[("x-forwarded-for", b"\x80, 203.0.113.50, 10.0.0.3")]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), want);
        // obs-text inside a quoted Forwarded value is legal (RFC 7230 qdtext):
        // the element still names its node.
        let h = raw_hdrs(&[("forwarded", b"for=6.6.6.6;host=\"\xe9\", for=203.0.113.50")]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), want);
        let h = raw_hdrs(&[("forwarded", b"for=203.0.113.50;host=\"caf\xe9.example\"")]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), want);
    }

    /// A bad entry ends the walk at the last good address: a trusted hop
    /// (the address a trusted proxy vouched for), and the peer only when
    /// the peer's own entry is the bad one.
    #[test]
    fn a_bad_byte_ends_the_walk_at_the_last_good_address() {
        let p = proxies();
        let cases: [(&[u8], &str); 7] = [
            (b"\x80, 10.0.0.3", "10.0.0.3"),
            (b"6.6.6.6, 10.0.0.4\xff, 10.0.0.3", "10.0.0.3"),
            (b"198.51.100.7, 10.0.0.3\x80", PROXY),
            (b"198.51.100.7\x80", PROXY),
            (b"\xc2\xa0198.51.100.7", PROXY),
            // Non-ASCII digits and look-alikes are no address.
            (b"\xef\xbc\x91.2.3.4", PROXY),
            (b"203.0.113.50 \x80", PROXY),
        ];
        for (xff, want) in cases {
            let h = raw_hdrs(&[("x-forwarded-for", xff)]);
            assert_eq!(client_ip(ip(PROXY), &h, &p), ip(want), "{xff:?}");
        }
        let h = raw_hdrs(&[("forwarded", b"for=198.51.100.7, for=\"\x80\"")]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip(PROXY));
        let h = raw_hdrs(&[("forwarded", b"for=\x80, for=10.0.0.3")]);
        assert_eq!(client_ip(ip(PROXY), &h, &p), ip("10.0.0.3"));
        // An untrusted peer's headers are never read, whatever they hold.
        let h = raw_hdrs(&[("x-forwarded-for", b"\x80, 1.1.1.1")]);
        assert_eq!(client_ip(ip("1.2.3.4"), &h, &p), ip("1.2.3.4"));
    }

    #[test]
    fn proxy_report_reads_the_nearest_entry_as_bytes() {
        let xff = proxies().with_header(ProxyHeader::XForwardedFor);
        let h = raw_hdrs(&[
            ("x-forwarded-proto", b"\xff, https"),
            ("x-forwarded-host", b"\x80evil.example, real.example"),
        ]);
        let r = proxy_report(ip(PROXY), &h, &xff);
        assert_eq!(r.https, Some(true));
        assert_eq!(r.host.as_deref(), Some("real.example"));
        // The nearest entry itself not ASCII: no host, no scheme.
        let h = raw_hdrs(&[
            ("x-forwarded-proto", b"http\xff"),
            ("x-forwarded-host", b"r\xe9al.example"),
        ]);
        assert_eq!(proxy_report(ip(PROXY), &h, &xff), ProxyReport::default());
        let fwd = proxies().with_header(ProxyHeader::Forwarded);
        let h = raw_hdrs(&[(
            "forwarded",
            b"host=\"\x80\", for=1.1.1.1;proto=https;host=real.example",
        )]);
        let r = proxy_report(ip(PROXY), &h, &fwd);
        assert_eq!(
            (r.https, r.host.as_deref()),
            (Some(true), Some("real.example"))
        );
        let h = raw_hdrs(&[("forwarded", b"proto=https;host=\"caf\xe9\"")]);
        let r = proxy_report(ip(PROXY), &h, &fwd);
        assert_eq!((r.https, r.host.as_deref()), (Some(true), None));
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
