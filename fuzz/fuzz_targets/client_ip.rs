//! The client address behind trusted proxies (wsgate-core client_ip.rs):
//! any bytes as the header lines a client sends (`\n` separates lines;
//! the first byte picks `X-Forwarded-For` or `Forwarded` per line), then
//! what a proxy in front adds: the proxy's entry must win, whatever the
//! client wrote before it.
#![no_main]
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use wsgate_core::client_ip::{client_ip, proxy_report, ProxyHeader, TrustedProxies};

const PROXY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 50));

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut client = HeaderMap::new();
    for (i, line) in rest.split(|&b| b == b'\n').enumerate() {
        let Ok(value) = HeaderValue::from_bytes(line) else {
            return;
        };
        let name = if (pick >> (i % 8)) & 1 == 0 {
            "x-forwarded-for"
        } else {
            "forwarded"
        };
        client.append(name, value);
    }
    let trusted = TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("cidr")]);
    // Whatever the headers, from an untrusted peer they are not read.
    assert_eq!(client_ip(CLIENT, &client, &trusted), CLIENT);
    for header in [
        ProxyHeader::Auto,
        ProxyHeader::Forwarded,
        ProxyHeader::XForwardedFor,
    ] {
        let _ = client_ip(PROXY, &client, &trusted.clone().with_header(header));
        let _ = proxy_report(PROXY, &client, &trusted.clone().with_header(header));
    }

    // The proxy appends its entry to the client's last X-Forwarded-For
    // line, as nginx's $proxy_add_x_forwarded_for does.
    let xff = trusted.clone().with_header(ProxyHeader::XForwardedFor);
    let mut appended = HeaderMap::new();
    let lines: Vec<&HeaderValue> = client.get_all("x-forwarded-for").iter().collect();
    for (i, v) in lines.iter().enumerate() {
        let v = if i + 1 == lines.len() {
            HeaderValue::from_bytes(&[v.as_bytes(), b", 203.0.113.50"].concat()).expect("value")
        } else {
            (*v).clone()
        };
        appended.append("x-forwarded-for", v);
    }
    if lines.is_empty() {
        appended.append("x-forwarded-for", HeaderValue::from_static("203.0.113.50"));
    }
    appended.append("x-forwarded-host", HeaderValue::from_static("real.example"));
    assert_eq!(client_ip(PROXY, &appended, &xff), CLIENT);

    // A proxy that adds its own line (HAProxy), for either header.
    for (name, own, header) in [
        (
            "x-forwarded-for",
            "203.0.113.50",
            ProxyHeader::XForwardedFor,
        ),
        (
            "forwarded",
            "for=203.0.113.50;host=real.example",
            ProxyHeader::Forwarded,
        ),
    ] {
        let mut h = client.clone();
        h.append(name, HeaderValue::from_static(own));
        h.append("x-forwarded-host", HeaderValue::from_static("real.example"));
        let t = trusted.clone().with_header(header);
        assert_eq!(client_ip(PROXY, &h, &t), CLIENT);
        assert_eq!(
            proxy_report(PROXY, &h, &t).host.as_deref(),
            Some("real.example")
        );
    }
});
