//! The forwarding headers an upstream receives (docs/backends.md,
//! "Forwarding headers"). Headers that name the client's address, scheme,
//! host, certificate or original URL are written by proxies and believed
//! by the services behind them, so a client must not choose them: every
//! client-sent header of that family is dropped, and the gateway writes
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` from what
//! it established itself, as Envoy (`use_remote_address`) and HAProxy
//! (`option forwardfor` + `http-request del-header`) do at an edge.
//! `backend.forward_client_headers` names those of the family a deployment
//! wants passed through as the client wrote them.

use http::header::{HeaderName, HeaderValue, HOST};
use http::{HeaderMap, Uri};
use std::net::{IpAddr, Ipv6Addr};
use wsgate_core::client_ip::{proxy_report, TrustedProxies};

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Written by the gateway on every upstream request: never passed through.
pub const WRITTEN: [HeaderName; 3] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST];

/// Whether `name` (lower case, as [`HeaderName`] holds it) is a forwarding
/// or client-identity header: `Forwarded`, `X-Forwarded-*`,
/// `X-Client-Cert*` and the other names below, each read by some proxy,
/// CDN or framework as the client's address, scheme, host, certificate or
/// original URL. Runs for every header of every proxied upgrade: a
/// dispatch on the first byte, then a few comparisons, no allocation.
pub fn in_family(name: &str) -> bool {
    match name.as_bytes().first() {
        Some(b'x') => {
            name.starts_with("x-forwarded-")
                || name.starts_with("x-client-cert")
                || name.starts_with("x-ssl-")
                || name.starts_with("x-amzn-mtls-clientcert")
                || name.starts_with("x-envoy-")
                || name.starts_with("x-azure-")
                || name.starts_with("x-arr-")
                || name.starts_with("x-remote-")
                || matches!(
                    name,
                    "x-forwarded"
                        | "x-real-ip"
                        | "x-real-port"
                        | "x-client-ip"
                        | "x-cluster-client-ip"
                        | "x-original-forwarded-for"
                        | "x-originating-ip"
                        | "x-proxyuser-ip"
                        | "x-appengine-user-ip"
                        | "x-original-url"
                        | "x-original-uri"
                        | "x-original-host"
                        | "x-rewrite-url"
                        | "x-host"
                        | "x-scheme"
                        | "x-url-scheme"
                        | "x-https"
                        | "x-coming-from"
                )
        }
        Some(b'f') => matches!(
            name,
            "forwarded"
                | "forwarded-for"
                | "fastly-client-ip"
                | "fly-client-ip"
                | "front-end-https"
        ),
        Some(b't') => name == "true-client-ip",
        Some(b'c') => matches!(
            name,
            "client-ip"
                | "cf-connecting-ip"
                | "cf-connecting-ipv6"
                | "cf-pseudo-ipv4"
                | "cdn-src-ip"
        ),
        Some(b'r') => name == "remote-addr",
        Some(b'p') => name == "proxy-client-ip",
        Some(b'w') => name == "wl-proxy-client-ip",
        Some(b'a') => name == "ali-cdn-real-ip",
        Some(b's') => name.starts_with("ssl-client-"),
        _ => false,
    }
}

/// Whether a client header name carries an underscore. CGI-style servers
/// (WSGI, PHP, Rack) read `X_Real_IP` and `X-Real-IP` as the same
/// `HTTP_X_REAL_IP`, so such a name would smuggle any header of the family
/// (or `X-Wsgate-*`) past the checks on its dashed spelling. They are
/// dropped whole, as nginx does by default (`underscores_in_headers off`).
pub fn has_underscore(name: &str) -> bool {
    name.as_bytes().contains(&b'_')
}

/// What the gateway established about a client's request, written
/// upstream as `X-Forwarded-For`, `X-Forwarded-Proto` and
/// `X-Forwarded-Host`.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// The client address, resolved with `trusted_proxies`.
    pub client: IpAddr,
    /// The client used TLS: the listener's, or what a trusted proxy says.
    pub https: bool,
    /// The host the client asked for, when it is a plausible `host[:port]`.
    pub host: Option<HeaderValue>,
}

impl Forwarding {
    /// From the request as it reached the gateway: `peer` is the TCP peer
    /// (or the PROXY protocol source), `client` the address resolved from
    /// it, `tls` whether the listener is TLS. A trusted proxy's own
    /// `X-Forwarded-Proto` / `X-Forwarded-Host` (or `Forwarded` `proto=` /
    /// `host=`) are believed, as Envoy does with `xff_num_trusted_hops`;
    /// anyone else's never are.
    pub fn new(
        headers: &HeaderMap,
        uri: &Uri,
        peer: IpAddr,
        client: IpAddr,
        trusted: &TrustedProxies,
        tls: bool,
    ) -> Self {
        let report = proxy_report(peer, headers, trusted);
        let host = match report.host {
            // What a trusted proxy said, or nothing if it is no host: not
            // the Host it sent the gateway, which names the gateway.
            Some(h) => plausible(h.as_bytes())
                .then(|| HeaderValue::from_str(&h).ok())
                .flatten(),
            // An absolute-form target names the host and Host is ignored
            // (RFC 9112 3.2.2).
            None => match uri.authority() {
                Some(a) => plausible(a.as_str().as_bytes())
                    .then(|| HeaderValue::from_str(a.as_str()).ok())
                    .flatten(),
                None => headers
                    .get(HOST)
                    .filter(|h| plausible(h.as_bytes()))
                    .cloned(),
            },
        };
        Forwarding {
            client,
            https: report.https.unwrap_or(tls),
            host,
        }
    }

    /// `X-Forwarded-Proto`.
    pub fn proto(&self) -> HeaderValue {
        HeaderValue::from_static(if self.https { "https" } else { "http" })
    }
}

/// The bytes of a host name in [`plausible`]: a table, one load per byte.
const NAME_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_';
        b += 1;
    }
    t
};

/// A plausible `host[:port]`: a DNS name or IPv4 address (letters, digits,
/// `-`, `.`, `_`) or a bracketed IPv6 address, then an optional decimal
/// port. Not userinfo, spaces, commas, a path or percent-encoding: an
/// upstream builds URLs and redirects from this value.
pub fn plausible(h: &[u8]) -> bool {
    // One pass over the bytes, no UTF-8 check or number parsing: this runs
    // on every proxied upgrade.
    let rest = match h.strip_prefix(b"[") {
        Some(v6) => {
            let Some(end) = v6.iter().position(|&b| b == b']') else {
                return false;
            };
            let ip = std::str::from_utf8(&v6[..end])
                .ok()
                .and_then(|s| s.parse::<Ipv6Addr>().ok());
            if ip.is_none() {
                return false;
            }
            &v6[end + 1..]
        }
        None => {
            let end = h
                .iter()
                .position(|&b| !NAME_BYTE[usize::from(b)])
                .unwrap_or(h.len());
            if end == 0 || end > 253 {
                return false;
            }
            &h[end..]
        }
    };
    match rest {
        [] => true,
        [b':', port @ ..] if (1..=5).contains(&port.len()) => {
            let mut n: u32 = 0;
            for &d in port {
                if !d.is_ascii_digit() {
                    return false;
                }
                n = n * 10 + u32::from(d - b'0');
            }
            n <= u32::from(u16::MAX)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every name the docs list, in the case variants a client may send:
    /// HeaderName lower-cases them as they are parsed.
    const FAMILY: &[&str] = &[
        "Forwarded",
        "X-Forwarded-For",
        "X-FORWARDED-PROTO",
        "x-forwarded-host",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "X-Forwarded-Client-Cert",
        "X-Forwarded",
        "X-Real-IP",
        "x-REAL-ip",
        "True-Client-IP",
        "CF-Connecting-IP",
        "CF-Connecting-IPv6",
        "CF-Pseudo-IPv4",
        "Fastly-Client-IP",
        "Fly-Client-IP",
        "X-Cluster-Client-IP",
        "X-Client-IP",
        "Client-IP",
        "Forwarded-For",
        "X-Original-Forwarded-For",
        "X-AppEngine-User-IP",
        "X-Envoy-External-Address",
        "X-Client-Cert",
        "X-Client-Cert-Chain",
        "X-Client-Certificate",
        "X-SSL-Client-Cert",
        "X-SSL-Client-Verify",
        "X-Amzn-Mtls-Clientcert",
        "X-Amzn-Mtls-Clientcert-Leaf",
        "X-ARR-ClientCert",
        "X-Original-URL",
        "X-Original-URI",
        "X-Rewrite-URL",
        "X-Scheme",
        // Found passing through by an outside review.
        "Front-End-Https",
        "X-Url-Scheme",
        "X-Host",
        "X-Original-Host",
        "X-Envoy-Original-Path",
        "X-Envoy-Internal",
        "X-Azure-ClientIP",
        "X-Azure-SocketIP",
        "X-ProxyUser-Ip",
        "WL-Proxy-Client-IP",
        "Proxy-Client-IP",
        "Remote-Addr",
        "X-Remote-IP",
        "X-Remote-Addr",
        "X-Originating-IP",
        "X-Real-Port",
        "X-Arr-Ssl",
        "Ssl-Client-Cert",
        "Cdn-Src-Ip",
        "Ali-Cdn-Real-Ip",
        "X-Coming-From",
        "X-Https",
    ];

    fn name(s: &str) -> HeaderName {
        HeaderName::from_bytes(s.as_bytes()).expect("header name")
    }

    #[test]
    fn the_family_is_recognised_in_any_case() {
        for n in FAMILY {
            assert!(in_family(name(n).as_str()), "{n}");
        }
        for n in WRITTEN {
            assert!(in_family(n.as_str()), "{n}");
        }
    }

    #[test]
    fn other_headers_are_not_in_the_family() {
        for n in [
            "host",
            "origin",
            "user-agent",
            "cookie",
            "x-request-id",
            "x-forwarder",
            "x-forwardedfor",
            "forwarded-host",
            "x-real-ipx",
            "x-client",
            "x-client-id",
            "x-original",
            "true-client",
            "cf-ray",
            "fastly-debug",
            "x",
            "accept-language",
            "sec-websocket-protocol",
            "client-hints",
            "traceparent",
        ] {
            assert!(!in_family(name(n).as_str()), "{n}");
        }
    }

    #[test]
    fn plausible_hosts() {
        for h in [
            "app.example",
            "app.example:8443",
            "localhost",
            "127.0.0.1:8080",
            "[::1]",
            "[2001:db8::1]:443",
            "under_score.example",
            "x:0",
            "x:65535",
        ] {
            assert!(plausible(h.as_bytes()), "{h}");
        }
        for h in [
            "",
            ":80",
            "user@app.example",
            "app.example/evil",
            "app.example, evil.example",
            "app example",
            "app.example:",
            "app.example:65536",
            "app.example:123456",
            "app.example:80:80",
            "app.example:+80",
            "[::1",
            "[not-v6]",
            "[::1]x",
            "[::1]:",
            "::1",
            "%61pp.example",
            "app.example\"",
            "ünicode.example",
        ] {
            assert!(!plausible(h.as_bytes()), "{h}");
        }
        assert!(plausible("a".repeat(253).as_bytes()));
        assert!(!plausible("a".repeat(254).as_bytes()));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(name(k), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_gets_the_gateways_own_view() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]);
        let h = headers(&[
            ("host", "gw.example:8080"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let uri: Uri = "/ws".parse().expect("uri");
        let peer = ip("203.0.113.7");
        let f = Forwarding::new(&h, &uri, peer, peer, &trusted, false);
        assert_eq!(f.client, peer);
        assert_eq!(f.proto(), "http");
        assert_eq!(
            f.host.as_ref().map(|h| h.as_bytes()),
            Some(&b"gw.example:8080"[..])
        );
        assert_eq!(
            Forwarding::new(&h, &uri, peer, peer, &trusted, true).proto(),
            "https"
        );
        // A Host that is no host is not forwarded.
        let bad = headers(&[("host", "gw.example, evil.example")]);
        assert!(Forwarding::new(&bad, &uri, peer, peer, &trusted, false)
            .host
            .is_none());
        // An absolute-form target names the host.
        let abs: Uri = "http://abs.example:81/ws".parse().expect("uri");
        let f = Forwarding::new(&h, &abs, peer, peer, &trusted, false);
        assert_eq!(
            f.host.as_ref().map(|h| h.as_bytes()),
            Some(&b"abs.example:81"[..])
        );
    }

    #[test]
    fn a_trusted_proxy_reports_scheme_and_host() {
        let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")]);
        let uri: Uri = "/ws".parse().expect("uri");
        let (proxy, client) = (ip("10.0.0.1"), ip("203.0.113.7"));
        let h = headers(&[
            ("host", "gateway.internal"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example"),
        ]);
        let f = Forwarding::new(&h, &uri, proxy, client, &trusted, false);
        assert_eq!(f.client, client);
        assert_eq!(f.proto(), "https");
        assert_eq!(
            f.host.as_ref().map(|h| h.as_bytes()),
            Some(&b"app.example"[..])
        );
        // Silent proxy: the listener's scheme and the Host it sent.
        let h = headers(&[("host", "gateway.internal")]);
        let f = Forwarding::new(&h, &uri, proxy, client, &trusted, true);
        assert_eq!(f.proto(), "https");
        assert_eq!(
            f.host.as_ref().map(|h| h.as_bytes()),
            Some(&b"gateway.internal"[..])
        );
        // A host the proxy reports that is none: no X-Forwarded-Host.
        let h = headers(&[("host", "gateway.internal"), ("x-forwarded-host", "a b")]);
        assert!(Forwarding::new(&h, &uri, proxy, client, &trusted, false)
            .host
            .is_none());
    }
}
