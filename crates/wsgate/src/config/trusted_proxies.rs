//! `[trusted_proxies]`: the proxies whose forwarding header names the client.

use super::build::Builder;
use super::redact;
use ipnet::IpNet;
use serde::{Deserialize, Serialize, Serializer};
use std::net::IpAddr;
use wsgate_core::client_ip::ProxyHeader;

/// `[trusted_proxies]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrustedProxiesConfig {
    #[serde(serialize_with = "redact::display_list")]
    pub cidrs: Vec<IpNet>,
    /// Which forwarding header the trusted proxies write. Only that one is
    /// read: a proxy passes the other through untouched, and a client could
    /// choose its own address with it.
    #[serde(serialize_with = "header_name")]
    pub header: ProxyHeader,
}

impl TrustedProxiesConfig {
    /// Whether `ip` is a trusted proxy (IPv4-mapped IPv6 peers count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.cidrs.iter().any(|net| net.contains(&ip))
    }
}

fn header_name<S: Serializer>(h: &ProxyHeader, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match h {
        ProxyHeader::Forwarded => "forwarded",
        _ => "x-forwarded-for",
    })
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTrustedProxies {
    cidrs: Vec<String>,
    header: Option<String>,
}

impl Builder<'_> {
    pub(super) fn build_proxies(&mut self, raw: RawTrustedProxies) -> TrustedProxiesConfig {
        let mut cidrs = Vec::new();
        for (i, s) in raw.cidrs.iter().enumerate() {
            let parsed = s
                .parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(n) => cidrs.push(n),
                Err(_) => self.problem(format!(
                    "trusted_proxies.cidrs[{i}]: {s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8){}",
                    self.via("trusted_proxies.cidrs")
                )),
            }
        }
        let header = match raw.header.as_deref() {
            None | Some("x-forwarded-for") => ProxyHeader::XForwardedFor,
            Some("forwarded") => ProxyHeader::Forwarded,
            Some(other) => {
                self.problem(format!(
                    "trusted_proxies.header: {other:?} is not \"x-forwarded-for\" or \"forwarded\"{}",
                    self.via("trusted_proxies.header")
                ));
                ProxyHeader::XForwardedFor
            }
        };
        TrustedProxiesConfig { cidrs, header }
    }
}
