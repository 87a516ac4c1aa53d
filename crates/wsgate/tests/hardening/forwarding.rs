//! Client-sent forwarding and client-identity headers never reach the
//! upstream as the client wrote them: a real upstream (HTTP/1.1 or HTTP/2)
//! records the head the gateway sends it, and holds none of the forged
//! values; `X-Forwarded-For`, `-Proto` and `-Host` are the gateway's.
// Test helpers: a failed setup step should panic on the spot.
#![allow(clippy::unwrap_used)]

use super::{bytes, good_head, raw};
use crate::common::*;
use futures_util::SinkExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Header fields as the upstream received them: names lower-cased, in order.
type Fields = Vec<(String, String)>;

/// What a forging client sends: every header of the family, in several
/// spellings, repeated, as comma lists. The forged values all carry
/// `6.6.6.6`, `evil.example` or `/admin`, which must appear nowhere
/// upstream.
const FORGED: &[(&str, &str)] = &[
    ("X-Forwarded-For", "6.6.6.6"),
    ("x-forwarded-for", "6.6.6.6, 10.6.6.6"),
    ("X-FORWARDED-PROTO", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "6666"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Ssl", "on"),
    (
        "X-Forwarded-Client-Cert",
        "By=spiffe://evil.example;Subject=\"CN=admin\"",
    ),
    ("Forwarded", "for=6.6.6.6;proto=https;host=evil.example"),
    ("forwarded", "for=\"[2001:db8::6]\", for=6.6.6.6"),
    ("X-Real-IP", "6.6.6.6"),
    ("x-real-ip", "6.6.6.6"),
    ("X-REAL-IP", "6.6.6.6, 6.6.6.7"),
    ("True-Client-IP", "6.6.6.6"),
    ("CF-Connecting-IP", "6.6.6.6"),
    ("Fastly-Client-IP", "6.6.6.6"),
    ("X-Cluster-Client-IP", "6.6.6.6"),
    ("X-Client-IP", "6.6.6.6"),
    ("Client-IP", "6.6.6.6"),
    ("X-Envoy-External-Address", "6.6.6.6"),
    ("X-Client-Cert", ":MIIBevil.example:"),
    ("X-Client-Cert-Chain", ":MIIBevil.example:"),
    ("X-SSL-Client-Verify", "SUCCESS evil.example"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    // Underscore spellings, which CGI-style servers (WSGI, PHP, Rack) read
    // as the dashed names: dropped whole, as nginx does.
    ("X_Forwarded_For", "6.6.6.8"),
    ("X-Forwarded_For", "6.6.6.8"),
    ("X_Real_IP", "6.6.6.8"),
    ("True_Client_IP", "6.6.6.8"),
    ("X_Wsgate_Sub", "6.6.6.8-admin"),
    ("X-Wsgate_Sub", "6.6.6.8-admin"),
    // More of the family, found passing by an outside review.
    ("Front-End-Https", "on evil.example"),
    ("X-Url-Scheme", "https evil.example"),
    ("X-Host", "evil.example"),
    ("X-Original-Host", "evil.example"),
    ("X-Envoy-Internal", "true evil.example"),
    ("X-Azure-ClientIP", "6.6.6.9"),
    ("WL-Proxy-Client-IP", "6.6.6.9"),
    ("Proxy-Client-IP", "6.6.6.9"),
    ("Remote-Addr", "6.6.6.9"),
    ("X-Remote-Addr", "6.6.6.9"),
    ("X-Originating-IP", "6.6.6.9"),
    ("Ssl-Client-Cert", ":MIIBevil.example:"),
    ("Cdn-Src-Ip", "6.6.6.9"),
];

/// Markers of a forged value.
const MARKS: [&str; 3] = ["6.6.6.", "evil.example", "/admin"];

/// A head with a valid bearer upgrade, `host` as its Host, and `extra`.
fn head(host: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut lines = good_head(&token("fwd"));
    lines[1] = format!("Host: {host}");
    lines.extend(extra.iter().map(|(k, v)| format!("{k}: {v}")));
    lines.push("X-Request-Id: kept-1".into());
    bytes(&lines)
}

/// Every value the upstream got for `name`.
fn all<'a>(f: &'a Fields, name: &str) -> Vec<&'a str> {
    f.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The upstream head holds no forged value and no header of the family
/// but the gateway's three, each once, with these values.
#[track_caller]
fn only_the_gateways(f: &Fields, xff: &str, proto: &str, host: Option<&str>) {
    for (n, v) in f {
        for m in MARKS {
            assert!(
                !v.contains(m),
                "forged value reached the upstream: {n}: {v}\n{f:?}"
            );
        }
    }
    for (name, _) in FORGED {
        let n = name.to_ascii_lowercase();
        if !["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"].contains(&n.as_str()) {
            assert!(all(f, &n).is_empty(), "{n} reached the upstream\n{f:?}");
        }
    }
    assert_eq!(all(f, "x-forwarded-for"), [xff], "{f:?}");
    assert_eq!(all(f, "x-forwarded-proto"), [proto], "{f:?}");
    assert_eq!(
        all(f, "x-forwarded-host"),
        host.into_iter().collect::<Vec<_>>(),
        "{f:?}"
    );
    // Not everything was dropped.
    assert_eq!(all(f, "x-request-id"), ["kept-1"], "{f:?}");
}

/// A WebSocket upstream that records each request head it receives.
struct Recorder {
    addr: SocketAddr,
    heads: mpsc::UnboundedReceiver<Fields>,
}

impl Recorder {
    /// HTTP/1.1: reads the head as sent, answers a correct `101`, then
    /// holds the socket until the gateway closes it.
    async fn http1() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, heads) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_http1(s, tx.clone()));
            }
        });
        Recorder { addr, heads }
    }

    /// HTTP/2 with extended CONNECT (RFC 8441): records each stream's
    /// request headers, accepts it with `200`, holds it open.
    async fn h2() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, heads) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_h2(s, tx.clone()));
            }
        });
        Recorder { addr, heads }
    }

    async fn next(&mut self) -> Fields {
        tokio::time::timeout(Duration::from_secs(10), self.heads.recv())
            .await
            .expect("an upstream request in time")
            .expect("upstream running")
    }
}

async fn serve_http1(mut s: TcpStream, tx: mpsc::UnboundedSender<Fields>) {
    let mut buf = vec![0u8; 65536];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut fields);
    assert!(req.parse(&buf[..n]).unwrap().is_complete());
    let head: Fields = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    let key = all(&head, "sec-websocket-key")[0].to_owned();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let _ = tx.send(head);
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    let _ = s.write_all(answer.as_bytes()).await;
    while let Ok(k) = s.read(&mut buf).await {
        if k == 0 {
            return;
        }
    }
}

async fn serve_h2(s: TcpStream, tx: mpsc::UnboundedSender<Fields>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let head: Fields = req
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            let _ = tx.send(head);
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                // Held until the gateway drops the stream.
                if let Ok(mut io) = on.await.map(TokioIo::new) {
                    let mut buf = [0u8; 1024];
                    while matches!(io.read(&mut buf).await, Ok(k) if k > 0) {}
                }
            });
            async { Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new())) }
        });
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.enable_connect_protocol();
    let _ = b.serve_connection(TokioIo::new(s), service).await;
}

/// A gateway in front of `up`, with `backend` and `extra` lines added.
fn gateway(up: &Recorder, backend: &str, extra: &str) -> Gateway {
    let cfg = base_config(extra).replace(
        "kind = \"echo\"",
        &format!(
            "kind = \"upstream\"\nupstream = \"ws://{}/app\"\n{backend}",
            up.addr
        ),
    );
    Gateway::start(&cfg)
}

#[tokio::test]
async fn forged_forwarding_headers_never_reach_an_http1_upstream() {
    let mut up = Recorder::http1().await;
    let gw = gateway(&up, "", "");
    let r = raw(gw.addr, &head("app.example:8443", FORGED)).await;
    assert_eq!(r.status, 101, "{}", r.head);
    let f = up.next().await;
    // The address is the TCP peer's, the scheme the plain listener's, the
    // host the one the client asked the gateway for.
    only_the_gateways(&f, "127.0.0.1", "http", Some("app.example:8443"));
}

#[tokio::test]
async fn forged_forwarding_headers_never_reach_an_http2_upstream() {
    let mut up = Recorder::h2().await;
    let gw = gateway(&up, "upstream_http2 = true", "");
    for _ in 0..2 {
        // Twice: the second stream shares the first's connection (and its
        // HPACK tables).
        let r = raw(gw.addr, &head("app.example", FORGED)).await;
        assert_eq!(r.status, 101, "{}", r.head);
        only_the_gateways(&up.next().await, "127.0.0.1", "http", Some("app.example"));
    }
}

#[tokio::test]
async fn an_implausible_host_is_not_forwarded() {
    let mut up = Recorder::http1().await;
    let gw = gateway(&up, "", "");
    for host in [
        "app.example@evil.example",
        "app.example, evil.example",
        "app.example/admin",
    ] {
        let r = raw(gw.addr, &head(host, FORGED)).await;
        assert_eq!(r.status, 101, "{}", r.head);
        only_the_gateways(&up.next().await, "127.0.0.1", "http", None);
    }
}

#[tokio::test]
async fn an_allowed_header_passes_as_the_client_wrote_it() {
    for h2 in [false, true] {
        let mut up = if h2 {
            Recorder::h2().await
        } else {
            Recorder::http1().await
        };
        let backend = format!("forward_client_headers = [\"X-Real-IP\"]\nupstream_http2 = {h2}");
        let gw = gateway(&up, &backend, "");
        let sent = [
            ("X-Real-IP", "198.51.100.1"),
            ("x-real-ip", "198.51.100.2, 198.51.100.3"),
            ("True-Client-IP", "6.6.6.6"),
            ("X-Forwarded-For", "6.6.6.6"),
        ];
        let r = raw(gw.addr, &head("app.example", &sent)).await;
        assert_eq!(r.status, 101, "{}", r.head);
        let f = up.next().await;
        assert_eq!(
            all(&f, "x-real-ip"),
            ["198.51.100.1", "198.51.100.2, 198.51.100.3"],
            "h2 {h2}: {f:?}"
        );
        assert!(all(&f, "true-client-ip").is_empty(), "h2 {h2}: {f:?}");
        assert_eq!(all(&f, "x-forwarded-for"), ["127.0.0.1"], "h2 {h2}: {f:?}");
    }
}

#[tokio::test]
async fn a_trusted_proxy_reports_client_scheme_and_host_with_its_own_header() {
    let mut up = Recorder::http1().await;
    // The test client is the trusted proxy (127.0.0.1).
    let gw = gateway(&up, "", "[trusted_proxies]\ncidrs = [\"127.0.0.1\"]");
    let proxied = [
        ("X-Forwarded-For", "6.6.6.6, 203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "app.example"),
        ("X-Real-IP", "6.6.6.6"),
    ];
    let r = raw(gw.addr, &head("gateway.internal", &proxied)).await;
    assert_eq!(r.status, 101, "{}", r.head);
    let f = up.next().await;
    // Only the verified client, not the chain: every way of reading the
    // header gives the same address.
    assert_eq!(all(&f, "x-forwarded-for"), ["203.0.113.9"], "{f:?}");
    assert_eq!(all(&f, "x-forwarded-proto"), ["https"], "{f:?}");
    assert_eq!(all(&f, "x-forwarded-host"), ["app.example"], "{f:?}");
    assert!(all(&f, "x-real-ip").is_empty(), "{f:?}");

    // Proxies that write Forwarded: X-Forwarded-Proto/Host are not theirs,
    // so not read.
    let mut up = Recorder::http1().await;
    let gw = gateway(
        &up,
        "",
        "[trusted_proxies]\ncidrs = [\"127.0.0.1\"]\nheader = \"forwarded\"",
    );
    let proxied = [
        (
            "Forwarded",
            "for=203.0.113.9;proto=http;host=\"app.example:8080\"",
        ),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
    ];
    let r = raw(gw.addr, &head("gateway.internal", &proxied)).await;
    assert_eq!(r.status, 101, "{}", r.head);
    let f = up.next().await;
    assert_eq!(all(&f, "x-forwarded-for"), ["203.0.113.9"], "{f:?}");
    assert_eq!(all(&f, "x-forwarded-proto"), ["http"], "{f:?}");
    assert_eq!(all(&f, "x-forwarded-host"), ["app.example:8080"], "{f:?}");
    assert!(all(&f, "forwarded").is_empty(), "{f:?}");
}

#[tokio::test]
async fn first_message_auth_forwards_the_gateways_headers_too() {
    let mut up = Recorder::http1().await;
    let gw = Gateway::start(
        &base_config("")
            .replace(
                "kind = \"echo\"",
                &format!("kind = \"upstream\"\nupstream = \"ws://{}/app\"", up.addr),
            )
            .replace("[auth]", "[auth]\nfirst_message = true"),
    );
    let mut forged: Vec<(&str, &str)> = FORGED.to_vec();
    forged.push(("X-Request-Id", "kept-1"));
    let (mut ws, _) = upgrade(&gw.url(), &forged).await.open();
    let auth = serde_json::json!({"type": "auth", "token": token("fm")}).to_string();
    ws.send(Message::Text(auth.into())).await.unwrap();
    assert!(next_text(&mut ws).await.contains("auth_ok"));
    // The request was kept from the upgrade until the token verified.
    let host = gw.addr.to_string();
    only_the_gateways(&up.next().await, "127.0.0.1", "http", Some(&host));
}

/// Writes `req` over `io` and reads up to the end of the answer's head.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, req: &[u8]) -> String {
    io.write_all(req).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), io.read(&mut buf)).await {
            Ok(Ok(k)) if k > 0 => out.extend_from_slice(&buf[..k]),
            other => panic!("no answer: {other:?}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn over_a_tls_listener_the_scheme_is_https() {
    use tokio_rustls::rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = super::tls_files(dir.path());
    let mut up = Recorder::http1().await;
    let tls = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
        cert.display(),
        key.display()
    );
    let cfg = base_config("")
        .replace(
            "max_header_bytes = 16384",
            &format!("max_header_bytes = 16384\n{tls}"),
        )
        .replace(
            "kind = \"echo\"",
            &format!("kind = \"upstream\"\nupstream = \"ws://{}/app\"", up.addr),
        );
    let gw = Gateway::start(&cfg);
    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let mut io = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    // The client claims plain HTTP: the listener knows better.
    let mut forged: Vec<(&str, &str)> = FORGED.to_vec();
    forged.push(("X-Forwarded-Proto", "http"));
    let answer = exchange(&mut io, &head("localhost", &forged)).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    only_the_gateways(&up.next().await, "127.0.0.1", "https", Some("localhost"));
}
