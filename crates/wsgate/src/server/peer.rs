//! Who is at the other end of a connection, and how far what it says about
//! the client may be believed: whether its forwarding headers may name the
//! client, and whether it is held to the per-IP pending-handshake cap.
//! Decided once per connection, where the address is learned (accept, or
//! the PROXY protocol header), so that every later step applies the same
//! rule (docs/deployment.md, "Client IPs").

use crate::app::App;
use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use wsgate_core::client_ip::TrustedProxies;

/// No proxy: forwarding headers never name the client.
static NO_PROXIES: LazyLock<TrustedProxies> = LazyLock::new(TrustedProxies::default);

/// The address a connection speaks for, and what it may claim.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The TCP peer, or the client a PROXY protocol header names.
    pub addr: SocketAddr,
    /// Its forwarding headers (`trusted_proxies.header`) may name the
    /// client: it is a trusted proxy, and nothing rules its headers out.
    headers: bool,
    /// Held to `limits.pending_handshakes_per_ip`. A proxy whose headers
    /// name its clients is not: they all share its address, and the
    /// per-IP limits apply to the addresses it forwards, after the head.
    capped: bool,
}

impl Peer {
    /// A TCP peer: a trusted proxy's headers are read, anyone else is the
    /// client and capped.
    pub fn direct(app: &App, addr: SocketAddr) -> Self {
        let trusted = app.admission.trusted_proxies.contains(addr.ip());
        Peer {
            addr,
            headers: trusted,
            capped: !trusted,
        }
    }

    /// The source address of a `PROXY TCP4/TCP6` header (or v2 `PROXY`
    /// command). It is the client, unless `server.proxy_protocol_forwarded`
    /// says an L7 proxy sits in front of the balancer and this source is
    /// one of `trusted_proxies`: then its headers are read, as a direct
    /// trusted proxy's are. An L4 balancer appends to no header, so without
    /// that setting a client-written `X-Forwarded-For` would reach the
    /// gateway as the client wrote it.
    pub fn proxied(app: &App, source: IpAddr, port: u16) -> Self {
        let headers = app.config.server.proxy_protocol_forwarded
            && app.admission.trusted_proxies.contains(source);
        Peer {
            addr: SocketAddr::new(source, port),
            headers,
            capped: !headers,
        }
    }

    /// A `PROXY UNKNOWN` or v2 `LOCAL` header: the balancer speaking for
    /// itself (health checks) or for a client it cannot name. Its address
    /// stands, as a trusted proxy's (not capped), but no forwarding header
    /// is believed: nothing in front appended to them.
    pub fn balancer(addr: SocketAddr) -> Self {
        Peer {
            addr,
            headers: false,
            capped: false,
        }
    }

    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    /// The proxies whose forwarding headers may name this connection's
    /// client: `trusted_proxies`, or none at all. Passed to
    /// [`wsgate_core::client_ip`] in place of `app.admission.trusted_proxies`.
    pub fn proxies<'a>(&self, app: &'a App) -> &'a TrustedProxies {
        if self.headers {
            &app.admission.trusted_proxies
        } else {
            &NO_PROXIES
        }
    }

    /// The `limits.pending_handshakes_per_ip` that applies (0: none).
    pub fn pending_cap(&self, app: &App) -> u32 {
        if self.capped {
            app.config.limits.pending_handshakes_per_ip
        } else {
            0
        }
    }
}
