//! What a connection may cost before its first request head is in: one
//! `server.handshake_timeout` from accept for the PROXY header, the TLS
//! handshake and the head together; the per-IP pending cap taken at
//! accept, before TLS; the PROXY header's 4,096-byte cap however the bytes
//! arrive; and no client-written forwarding header believed behind an L4
//! balancer unless the operator says an L7 proxy sits in front of it.
// Test helpers: a failed setup step should panic on the spot.
#![allow(clippy::unwrap_used)]

use super::{bytes, good_head};
use crate::common::*;
use futures_util::SinkExt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, ClientConnection, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------- helpers

/// `base_config` with this handshake timeout and `server` lines added to
/// `[server]`, and `extra` sections at the end.
fn config(timeout: &str, server: &str, extra: &str) -> String {
    base_config(extra).replace(
        "handshake_timeout = \"1s\"",
        &format!("handshake_timeout = \"{timeout}\"\n{server}"),
    )
}

/// `[server.tls]` lines for a fresh self-signed `localhost` certificate in
/// `dir`; returns them and the certificate to trust.
fn tls_lines(dir: &Path) -> (String, CertificateDer<'static>) {
    let (cert, key, der) = super::tls_files(dir);
    let lines = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
        cert.display(),
        key.display()
    );
    (lines, der)
}

/// `[server.tls]` goes after every other `[server]` key.
fn with_tls(config: &str, tls: &str) -> String {
    config.replace(
        "max_header_bytes = 16384",
        &format!("max_header_bytes = 16384\n{tls}"),
    )
}

fn client_config(trust: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// The first half of a real ClientHello (rustls's, for `localhost`): the
/// record header promises more than ever comes.
fn half_client_hello(trust: &CertificateDer<'static>) -> Vec<u8> {
    let mut conn = ClientConnection::new(client_config(trust), localhost()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "a ClientHello: {} bytes", hello.len());
    hello.truncate(hello.len() / 2);
    hello
}

async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// Connects from `src` and sends `bytes`; `None` when the gateway reset
/// the connection before that was done.
async fn try_send_from(src: &str, to: SocketAddr, bytes: &[u8]) -> Option<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let mut s = match sock.connect(to).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("connect from {src}: {e}"),
    };
    match s.write_all(bytes).await {
        Ok(()) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => panic!("write from {src}: {e}"),
    }
}

/// The gateway process's open file descriptors.
fn open_fds(gw: &Gateway) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", gw.pid()))
        .unwrap()
        .count()
}

/// Whether the gateway ended the connection (EOF or reset) within `d`,
/// having sent nothing.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, d: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(d, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("answered: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

/// A `PROXY` v1 line naming `src` as the client.
fn proxy_v1(src: &str) -> String {
    format!("PROXY TCP4 {src} 127.0.0.1 40000 443\r\n")
}

/// A v2 `PROXY` header from 198.51.100.9, `total` bytes long: the
/// addresses, then a NOOP TLV padding it out.
fn proxy_v2_of_len(total: usize) -> Vec<u8> {
    let pad = total - 16 - 12 - 3;
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&u16::try_from(12 + 3 + pad).unwrap().to_be_bytes());
    h.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1, 0xc3, 0x50, 0x01, 0xbb]);
    h.push(0x04);
    h.extend_from_slice(&u16::try_from(pad).unwrap().to_be_bytes());
    h.resize(total, b'x');
    h
}

/// A v2 `LOCAL` header (the balancer's own health check).
const PROXY_V2_LOCAL: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";

/// A wss:// upgrade over `tcp` (anything already written on it, e.g. a
/// PROXY header, goes first), echoing one message.
async fn wss_echo(tcp: TcpStream, trust: &CertificateDer<'static>, port: u16, sub: &str) {
    let tls = TlsConnector::from(client_config(trust))
        .connect(localhost(), tcp)
        .await
        .expect("TLS handshake");
    let mut req = format!("wss://localhost:{port}/ws")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token(sub)).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("wss upgrade");
    ws.send(Message::Text("still served".into())).await.unwrap();
    use futures_util::StreamExt;
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time");
    assert_eq!(got.unwrap().unwrap(), Message::Text("still served".into()));
}

/// Writes `head` one byte every 100 ms while watching for the gateway to
/// end the connection; returns when it has (or after `give_up`), with
/// what it sent back.
async fn dribble_until_closed<S>(s: S, head: &[u8], give_up: Duration) -> Vec<u8>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(s);
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    let mut next = head.iter();
    let stop = tokio::time::Instant::now() + give_up;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => return answer,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick() => {
                if let Some(b) = next.next() {
                    if w.write_all(&[*b]).await.is_err() || w.flush().await.is_err() {
                        // Reset: the read above reports it next.
                        continue;
                    }
                }
            }
            _ = tokio::time::sleep_until(stop) => return answer,
        }
    }
}

fn upgrade_head(sub: &str, extra: &[&str]) -> Vec<u8> {
    let mut lines = good_head(&token(sub));
    lines.extend(extra.iter().map(|l| l.to_string()));
    bytes(&lines)
}

/// Sends `bytes` and reads the answer until EOF, reset or 3 s.
async fn answer(to: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(to).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `ip` of the last `handshake` log line, once there are `n`.
fn last_handshake_ip(gw: &Gateway, n: usize) -> String {
    let ev = gw.events("handshake", n);
    assert_eq!(ev.len(), n, "handshake lines: {ev:?}");
    ev[n - 1]["ip"].as_str().unwrap().to_string()
}

// ------------------------------------------- pending cap before TLS (28.2)

/// 120 connections from one address, each sending half a ClientHello: the
/// pending cap (8) is taken at accept, so 8 are held and the rest are reset
/// at once, unread, counted and logged as `rate_limited`; the gateway's
/// descriptors grow by the cap, not by the attack; a wss:// client from
/// another address is served meanwhile. (Before: all 120 were held for the
/// whole handshake timeout, ~14 KB of TLS state each.)
#[tokio::test]
async fn half_client_hellos_from_one_ip_are_capped_before_tls() {
    const CAP: usize = 8;
    const ATTACK: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert) = tls_lines(dir.path());
    let gw = Gateway::start_with_env(
        &with_tls(&config("10s", "", ""), &tls),
        &[("WSGATE_LIMITS__PENDING_HANDSHAKES_PER_IP", "8")],
    );
    let baseline = open_fds(&gw);
    let hello = half_client_hello(&cert);
    let mut attack = Vec::new();
    for _ in 0..ATTACK {
        // A reset at once may already show on connect or on the write:
        // that connection was refused, as one closed unread.
        attack.push(try_send_from("127.0.0.2", gw.addr, &hello).await);
    }
    let closed = futures_util::future::join_all(attack.iter_mut().map(|s| async {
        match s {
            Some(s) => closed_within(s, Duration::from_secs(2)).await,
            None => true,
        }
    }))
    .await;
    let held = closed.iter().filter(|c| !**c).count();
    assert_eq!(held, CAP, "connections the gateway kept");
    let grown = open_fds(&gw).saturating_sub(baseline);
    assert!(
        grown <= CAP + 2,
        "gateway holds {grown} more descriptors than before the attack"
    );

    // A legitimate client from another address, while the cap is full.
    let tcp = connect_from("127.0.0.3", gw.addr).await;
    wss_echo(tcp, &cert, gw.addr.port(), "legit").await;

    let refused = (ATTACK - CAP) as f64;
    let m =
        "wsgate_handshakes_total{result=\"rejected\",reason=\"rate_limited\",transport=\"none\"}";
    assert_eq!(metric(&gw, m).await, refused);
    let logged: Vec<_> = gw
        .events("handshake", ATTACK - CAP)
        .into_iter()
        .filter(|e| e["reason"] == "rate_limited" && e["ip"] == "127.0.0.2")
        .collect();
    assert_eq!(logged.len(), ATTACK - CAP);
}

/// Behind PROXY protocol the balancer is not capped, but the client the
/// header names is, still before TLS: 30 half ClientHellos "from"
/// 203.0.113.9 hold 4 slots; another client behind the same balancer is
/// served.
#[tokio::test]
async fn half_client_hellos_behind_proxy_protocol_are_capped_per_source() {
    const CAP: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert) = tls_lines(dir.path());
    let gw = Gateway::start_with_env(
        &with_tls(
            &config(
                "10s",
                "proxy_protocol = true",
                "[trusted_proxies]\ncidrs = [\"127.0.0.1/32\"]",
            ),
            &tls,
        ),
        &[("WSGATE_LIMITS__PENDING_HANDSHAKES_PER_IP", "4")],
    );
    let mut hello = proxy_v1("203.0.113.9").into_bytes();
    hello.extend_from_slice(&half_client_hello(&cert));
    let mut attack = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(&hello).await.unwrap();
        attack.push(s);
    }
    let closed = futures_util::future::join_all(
        attack
            .iter_mut()
            .map(|s| closed_within(s, Duration::from_secs(2))),
    )
    .await;
    assert_eq!(closed.iter().filter(|c| !**c).count(), CAP, "{closed:?}");

    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(proxy_v1("203.0.113.10").as_bytes())
        .await
        .unwrap();
    wss_echo(tcp, &cert, gw.addr.port(), "behind-lb").await;
    let ev = gw.events("handshake", 27);
    let refused = ev
        .iter()
        .filter(|e| e["reason"] == "rate_limited" && e["ip"] == "203.0.113.9")
        .count();
    assert_eq!(refused, 30 - CAP);
    assert!(ev
        .iter()
        .any(|e| e["result"] == "accepted" && e["ip"] == "203.0.113.10"));
}

// ------------------------------------------- one deadline from accept (28.3)

/// A TLS handshake finished at 1.4 s of a 2 s timeout, then a head dribbled
/// a byte every 100 ms: reset at the one deadline, 2 s from accept (before:
/// the head had 2 s of its own, reset at ~3.4 s).
#[tokio::test]
async fn tls_late_then_dribbled_head_is_reset_at_one_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert) = tls_lines(dir.path());
    let gw = Gateway::start(&with_tls(&config("2s", "", ""), &tls));
    let t0 = Instant::now();
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1400)).await;
    let stream = TlsConnector::from(client_config(&cert))
        .connect(localhost(), tcp)
        .await
        .expect("TLS handshake within the deadline");
    let answer =
        dribble_until_closed(stream, &upgrade_head("late", &[]), Duration::from_secs(6)).await;
    let closed_at = t0.elapsed();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        closed_at >= Duration::from_millis(1900) && closed_at < Duration::from_millis(2900),
        "closed {closed_at:?} after connect; the deadline was 2 s"
    );
}

/// A PROXY header at 1.2 s of a 2 s timeout and a complete upgrade head at
/// 2.4 s: no `101` (before: the head had 2 s of its own and was upgraded);
/// the connection ends at the deadline. The same two within 2 s upgrade.
#[tokio::test]
async fn proxy_late_then_head_misses_the_one_deadline() {
    let gw = Gateway::start(&config(
        "2s",
        "proxy_protocol = true",
        "[trusted_proxies]\ncidrs = [\"127.0.0.1/32\"]",
    ));
    // In time: PROXY at 0.6 s, head at 1.2 s.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(proxy_v1("203.0.113.20").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(&upgrade_head("in-time", &[])).await.unwrap();
    let mut buf = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf))
        .await
        .expect("answer in time")
        .unwrap();
    assert_eq!(&buf, b"HTTP/1.1 101");

    // Late: PROXY at 1.2 s, head at 2.4 s.
    let t0 = Instant::now();
    let s = TcpStream::connect(gw.addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let _ = w.write_all(proxy_v1("203.0.113.21").as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let _ = w.write_all(&upgrade_head("late", &[])).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut out)).await;
    let closed_at = t0.elapsed();
    writer.abort();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert!(
        closed_at >= Duration::from_millis(1900) && closed_at < Duration::from_millis(2900),
        "closed {closed_at:?} after connect; the deadline was 2 s"
    );
    assert_eq!(
        gw.events("handshake", 1).len(),
        1,
        "only the in-time upgrade"
    );
}

/// PROXY header, TLS handshake and head share one deadline: PROXY at 0.7 s,
/// TLS done by ~1.4 s, then a dribbled head, reset at 2 s from accept
/// (before: up to three timeouts, one per stage).
#[tokio::test]
async fn proxy_tls_and_head_share_one_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let (tls, cert) = tls_lines(dir.path());
    let gw = Gateway::start(&with_tls(
        &config(
            "2s",
            "proxy_protocol = true",
            "[trusted_proxies]\ncidrs = [\"127.0.0.1/32\"]",
        ),
        &tls,
    ));
    let t0 = Instant::now();
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    tcp.write_all(proxy_v1("203.0.113.30").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stream = TlsConnector::from(client_config(&cert))
        .connect(localhost(), tcp)
        .await
        .expect("TLS handshake within the deadline");
    let answer =
        dribble_until_closed(stream, &upgrade_head("late", &[]), Duration::from_secs(6)).await;
    let closed_at = t0.elapsed();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        closed_at >= Duration::from_millis(1900) && closed_at < Duration::from_millis(2900),
        "closed {closed_at:?} after connect; the deadline was 2 s"
    );
}

// -------------------------------- forwarding headers behind PROXY (28.4)

/// Forged forwarding headers, both families.
const FORGED: [&str; 2] = ["X-Forwarded-For: 6.6.6.6", "Forwarded: for=6.6.6.7"];

/// Behind an L4 balancer nothing appends to forwarding headers: by default
/// they are never read, whether the header is `UNKNOWN`, v2 `LOCAL`, or
/// names a source inside `trusted_proxies`.
#[tokio::test]
async fn proxy_protocol_never_reads_client_forwarding_headers_by_default() {
    let gw = Gateway::start(&config(
        "2s",
        "proxy_protocol = true",
        "[trusted_proxies]\ncidrs = [\"127.0.0.0/8\"]",
    ));
    let cases: [(&[u8], &str); 4] = [
        (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
        (PROXY_V2_LOCAL, "127.0.0.1"),
        // A client inside the trusted range is still only a client.
        (b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 443\r\n", "127.0.0.9"),
        (
            b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n",
            "203.0.113.7",
        ),
    ];
    for (n, (proxy, want)) in cases.into_iter().enumerate() {
        let mut req = proxy.to_vec();
        req.extend_from_slice(&upgrade_head(&format!("fwd-{n}"), &FORGED));
        let resp = answer(gw.addr, &req).await;
        assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
        assert_eq!(last_handshake_ip(&gw, n + 1), want, "case {n}");
    }
}

/// `server.proxy_protocol_forwarded = true` (an L7 proxy in front of the
/// balancer): a PROXY source inside `trusted_proxies` has its header read;
/// `UNKNOWN`/`LOCAL` still never do, nor any other source.
#[tokio::test]
async fn proxy_protocol_forwarded_reads_only_a_trusted_sources_header() {
    let gw = Gateway::start(&config(
        "2s",
        "proxy_protocol = true\nproxy_protocol_forwarded = true",
        "[trusted_proxies]\ncidrs = [\"127.0.0.0/8\"]\nheader = \"x-forwarded-for\"",
    ));
    let cases: [(&[u8], &str); 4] = [
        (b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 443\r\n", "6.6.6.6"),
        (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
        (PROXY_V2_LOCAL, "127.0.0.1"),
        (
            b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 443\r\n",
            "203.0.113.7",
        ),
    ];
    for (n, (proxy, want)) in cases.into_iter().enumerate() {
        let mut req = proxy.to_vec();
        req.extend_from_slice(&upgrade_head(&format!("l7-{n}"), &FORGED));
        let resp = answer(gw.addr, &req).await;
        assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
        assert_eq!(last_handshake_ip(&gw, n + 1), want, "case {n}");
    }
}

// ------------------------------------------------ PROXY header cap (28.4)

/// The 4,096-byte PROXY header cap holds whether the header arrives in one
/// write or dribbled: a 4,096-byte v2 header is served either way, 4,097
/// and 5,000 bytes are refused either way (before: at once, 5,000 passed).
#[tokio::test]
async fn proxy_header_cap_holds_at_once_and_dribbled() {
    let gw = Gateway::start(&config(
        "3s",
        "proxy_protocol = true",
        "[trusted_proxies]\ncidrs = [\"127.0.0.1/32\"]",
    ));
    let request = b"GET /healthz HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n";
    for total in [4096, 4097, 5000] {
        for dribbled in [false, true] {
            let mut bytes = proxy_v2_of_len(total);
            bytes.extend_from_slice(request);
            let mut s = TcpStream::connect(gw.addr).await.unwrap();
            let (mut r, mut w) = s.split();
            let write = async {
                if dribbled {
                    for chunk in bytes.chunks(64) {
                        if w.write_all(chunk).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                } else {
                    let _ = w.write_all(&bytes).await;
                }
            };
            let read = async {
                let mut out = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(4), r.read_to_end(&mut out)).await;
                String::from_utf8_lossy(&out).into_owned()
            };
            let ((), resp) = tokio::join!(write, read);
            if total <= 4096 {
                assert!(
                    resp.starts_with("HTTP/1.1 200"),
                    "{total} dribbled={dribbled}: {resp}"
                );
            } else {
                assert!(resp.is_empty(), "{total} dribbled={dribbled}: {resp}");
            }
        }
    }
}
