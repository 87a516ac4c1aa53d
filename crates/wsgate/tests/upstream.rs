//! The upstream backend (docs/reference.md) against a real upstream WebSocket server
//! started by each test on 127.0.0.1.
// Test helpers: a failed setup step should panic on the spot.
#![allow(clippy::unwrap_used, clippy::result_large_err)]

mod common;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderMap;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "admin-token-0123456789-0123456789";
const IDENTITY_SECRET: &str = "identity-secret-0123456789abcdef-0123";

/// What the upstream saw of one connection.
struct Seen {
    uri: String,
    headers: HeaderMap,
    /// Everything the gateway sent, in order (data, pings, the close).
    events: mpsc::UnboundedReceiver<Message>,
}

/// How the test upstream behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Echoes data; `close:<code>:<reason>` makes it close; `ping` makes it ping.
    Echo,
    /// Answers the upgrade with `200 OK`.
    Http200,
    /// Accepts TCP and never answers.
    Silent,
    /// Sends 64 KiB binary messages as fast as it can, counting them.
    Flood,
    /// A hand-written 101 with a text frame "hello" in the same write.
    Greeting,
    /// A hand-written 101 whose `Sec-WebSocket-Accept` is wrong.
    BadAccept,
    /// A correct 101 that picks a subprotocol nobody offered.
    UnofferedProtocol,
    /// The greeting's 101 and frame in pieces, 30 ms apart (a head that
    /// arrives over several reads).
    Trickle,
    /// A 101 with 20 KiB of headers (over the 16 KiB cap).
    HugeHead,
}

struct Upstream {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    sent: Arc<AtomicUsize>,
    /// TCP connections accepted.
    accepted: Arc<AtomicUsize>,
}

/// How the HTTP/2 test upstream behaves.
#[derive(Clone, Copy, PartialEq)]
enum H2Mode {
    /// RFC 8441: echoes like `Mode::Echo`; a text `flood` turns the
    /// stream into `Mode::Flood`.
    Echo,
    /// An HTTP/2 server that never enables extended CONNECT.
    NoExtendedConnect,
    /// Answers every CONNECT `403`.
    Forbidden,
    /// Echoes, but sends GOAWAY once a connection's first stream arrived
    /// (a server shutting down gracefully): that stream lives on, new
    /// ones must go elsewhere.
    GoAwayAfterFirst,
    /// Echoes, but drops the whole connection (no GOAWAY, TCP closed)
    /// 300 ms after its first stream arrived: a crashed upstream.
    DieAfterFirst,
}

impl Upstream {
    async fn start(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let sent = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (counter, conns) = (sent.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                let counter = counter.clone();
                tokio::spawn(serve(s, mode, tx, counter));
            }
        });
        Upstream {
            addr,
            seen,
            sent,
            accepted,
        }
    }

    /// An HTTP/2-only upstream (prior knowledge): WebSockets as extended
    /// CONNECT streams.
    async fn start_h2(mode: H2Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let sent = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (counter, conns) = (sent.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_h2(s, mode, tx.clone(), counter.clone()));
            }
        });
        Upstream {
            addr,
            seen,
            sent,
            accepted,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/app?upstream=1", self.addr)
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("upstream connection in time")
            .expect("upstream running")
    }
}

async fn serve(
    mut s: TcpStream,
    mode: Mode,
    tx: mpsc::UnboundedSender<Seen>,
    sent: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    match mode {
        Mode::Silent => {
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
            return;
        }
        Mode::Greeting
        | Mode::BadAccept
        | Mode::UnofferedProtocol
        | Mode::Trickle
        | Mode::HugeHead => {
            let mut buf = vec![0u8; 16384];
            let mut n = 0;
            while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => n += k,
                }
            }
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let key = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("sec-websocket-key:")
                        .then(|| l[18..].trim().to_owned())
                })
                .unwrap();
            let accept = match mode {
                Mode::BadAccept => "dGhlIHNhbXBsZSBub25jZQ==".to_owned(),
                _ => tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
            };
            let proto = match mode {
                Mode::UnofferedProtocol => {
                    "Sec-WebSocket-Protocol: nobody-offered-this\r\n".to_owned()
                }
                Mode::HugeHead => format!("X-Padding: {}\r\n", "p".repeat(20 * 1024)),
                _ => String::new(),
            };
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{proto}\r\n"
            )
            .into_bytes();
            // An unmasked text frame (server to client): "hello".
            out.extend_from_slice(&[0x81, 5]);
            out.extend_from_slice(b"hello");
            if mode == Mode::Trickle {
                for piece in out.chunks(out.len() / 3 + 1) {
                    let _ = s.write_all(piece).await;
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            } else {
                let _ = s.write_all(&out).await;
            }
            // Hold the socket until the gateway closes it.
            while let Ok(k) = s.read(&mut buf).await {
                if k == 0 {
                    return;
                }
            }
            return;
        }
        Mode::Http200 => {
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
            return;
        }
        _ => {}
    }
    let (req_tx, req_rx) = std::sync::mpsc::channel();
    let callback = move |req: &Request, mut resp: Response| {
        // Picks the first application protocol offered, as a server would.
        if let Some(p) = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
        {
            resp.headers_mut()
                .insert("sec-websocket-protocol", p.trim().parse().unwrap());
        }
        let _ = req_tx.send((req.uri().to_string(), req.headers().clone()));
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(s, callback).await else {
        return;
    };
    let (uri, headers) = req_rx.recv().unwrap();
    relay(ws, mode, uri, headers, tx, sent).await;
}

/// The upstream's side of an open WebSocket: reports it, then echoes (or
/// floods) as `mode` says.
async fn relay<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    mode: Mode,
    uri: String,
    headers: HeaderMap,
    tx: mpsc::UnboundedSender<Seen>,
    sent: Arc<AtomicUsize>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (ev_tx, events) = mpsc::unbounded_channel();
    let _ = tx.send(Seen {
        uri,
        headers,
        events,
    });
    let flood = |mut ws: tokio_tungstenite::WebSocketStream<S>, sent: Arc<AtomicUsize>| async move {
        let chunk = vec![7u8; 64 * 1024];
        while ws.send(Message::Binary(chunk.clone().into())).await.is_ok() {
            sent.fetch_add(1, Ordering::SeqCst);
        }
    };
    if mode == Mode::Flood {
        return flood(ws, sent).await;
    }
    while let Some(Ok(m)) = ws.next().await {
        let _ = ev_tx.send(m.clone());
        match m {
            Message::Text(t) if t.as_str() == "flood" => return flood(ws, sent).await,
            // Gone without a close frame: a crashed upstream.
            Message::Text(t) if t.as_str() == "die" => return,
            Message::Text(t) if t.starts_with("close:") => {
                let mut it = t.splitn(3, ':').skip(1);
                let code: u16 = it.next().unwrap().parse().unwrap();
                let reason = it.next().unwrap_or("").to_owned();
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: reason.into(),
                    }))
                    .await;
            }
            Message::Text(t) if t.as_str() == "ping" => {
                let _ = ws.send(Message::Ping(b"up".to_vec().into())).await;
            }
            Message::Text(_) | Message::Binary(_) if ws.send(m.clone()).await.is_err() => return,
            _ => {}
        }
    }
}

/// One HTTP/2 connection of the test upstream: each extended CONNECT with
/// `:protocol websocket` becomes a WebSocket stream (RFC 8441).
async fn serve_h2<S>(s: S, mode: H2Mode, tx: mpsc::UnboundedSender<Seen>, sent: Arc<AtomicUsize>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let first = Arc::new(tokio::sync::Notify::new());
    let arrived = first.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let (tx, sent) = (tx.clone(), sent.clone());
            arrived.notify_one();
            async move {
                let mut resp = hyper::Response::new(String::new());
                let websocket = req.method() == hyper::Method::CONNECT
                    && req
                        .extensions()
                        .get::<hyper::ext::Protocol>()
                        .is_some_and(|p| p.as_str() == "websocket");
                if !websocket || mode == H2Mode::Forbidden {
                    *resp.status_mut() = hyper::StatusCode::FORBIDDEN;
                    return Ok::<_, std::convert::Infallible>(resp);
                }
                if let Some(p) = req
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next())
                {
                    resp.headers_mut()
                        .insert("sec-websocket-protocol", p.trim().parse().unwrap());
                }
                let uri = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let headers = req.headers().clone();
                let on = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    let Ok(stream) = on.await else { return };
                    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(stream),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        None,
                    )
                    .await;
                    relay(ws, Mode::Echo, uri, headers, tx, sent).await;
                });
                Ok(resp)
            }
        });
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    if mode != H2Mode::NoExtendedConnect {
        b.enable_connect_protocol();
    }
    let conn = b.serve_connection(TokioIo::new(s), service);
    tokio::pin!(conn);
    if mode == H2Mode::GoAwayAfterFirst {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = first.notified() => conn.as_mut().graceful_shutdown(),
        }
    }
    if mode == H2Mode::DieAfterFirst {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = first.notified() => {}
        }
        // Served for a while, then gone: dropping the connection closes
        // the socket, and every stream on it with it.
        let _ = tokio::time::timeout(Duration::from_millis(300), conn.as_mut()).await;
        return;
    }
    let _ = conn.await;
}

fn config(upstream: &str, extra: &str) -> String {
    base_config(extra).replace(
        "kind = \"echo\"",
        &format!("kind = \"upstream\"\nupstream = {upstream:?}\nidentity_secret_env = \"TEST_IDENTITY_SECRET\""),
    )
}

fn start(upstream: &str, extra: &str) -> Gateway {
    launch(&config(upstream, extra))
}

fn launch(cfg: &str) -> Gateway {
    Gateway::start_with_env(
        cfg,
        &[
            ("WSGATE_ADMIN_TOKEN", ADMIN),
            ("TEST_IDENTITY_SECRET", IDENTITY_SECRET),
        ],
    )
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Checks the signature the way docs/backends.md tells an upstream to.
fn signature_ok(h: &HeaderMap) -> bool {
    let get = |n| header(h, n).unwrap_or("");
    let input = format!(
        "v1\n{}\n{}\n{}\n{}",
        get("x-wsgate-sub"),
        get("x-wsgate-session"),
        get("x-wsgate-claims"),
        get("x-wsgate-timestamp")
    );
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, IDENTITY_SECRET.as_bytes());
    let Some(sig) = get("x-wsgate-signature").strip_prefix("v1=") else {
        return false;
    };
    let Ok(tag) = URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    aws_lc_rs::hmac::verify(&key, input.as_bytes(), &tag).is_ok()
}

async fn next_event(seen: &mut Seen) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), seen.events.recv()).await {
            Ok(Some(Message::Pong(_))) => continue,
            Ok(Some(m)) => return m,
            other => panic!("expected an upstream event, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn identity_is_forwarded_and_the_credential_is_not() {
    let mut up = Upstream::start(Mode::Echo).await;
    let gw = start(&up.url(), "");
    let tok = token("alice");
    let url = format!("{}?room=7", gw.url());
    let (mut ws, _) = upgrade(
        &url,
        &[
            ("authorization", &format!("Bearer {tok}")),
            ("cookie", "session=not-the-token; theme=dark"),
            ("x-wsgate-sub", "mallory"),
            ("x-wsgate-claims", "e30"),
            ("x-request-id", "req-42"),
            ("origin", "http://app.test"),
        ],
    )
    .await
    .open();
    let seen = up.next().await;
    let h = &seen.headers;
    assert_eq!(header(h, "x-wsgate-sub"), Some("alice"));
    assert_eq!(
        h.get_all("x-wsgate-sub").iter().count(),
        1,
        "client's copy dropped"
    );
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(header(h, "x-wsgate-claims").unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "alice");
    let session: u64 = header(h, "x-wsgate-session").unwrap().parse().unwrap();
    assert!(session > 0);
    assert!(signature_ok(h), "signature verifies: {h:?}");
    assert!(h.get("authorization").is_none());
    assert_eq!(header(h, "cookie"), Some("theme=dark"));
    assert_eq!(header(h, "x-request-id"), Some("req-42"));
    assert_eq!(header(h, "origin"), Some("http://app.test"));
    assert_eq!(header(h, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.uri, "/app?upstream=1&room=7");
    // X-Wsgate-Claims is the token's payload by definition; what makes it
    // a credential, the signature, is never forwarded.
    let signature = tok.rsplit('.').next().unwrap();
    for (name, v) in h {
        let v = String::from_utf8_lossy(v.as_bytes());
        assert!(
            !v.contains(signature) && !v.contains(&tok),
            "credential in {name}"
        );
    }
    // A forged signature is detectable by the upstream.
    let mut forged = h.clone();
    forged.insert("x-wsgate-sub", "mallory".parse().unwrap());
    assert!(!signature_ok(&forged));
    assert_eq!(echo(&mut ws, "hello").await, "hello");
    // The session the upstream was told about is the one the admin API lists.
    let list = http(
        gw.admin,
        "GET",
        "/admin/v1/sessions?sub=alice",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        "",
    )
    .await
    .json();
    assert_eq!(list["sessions"][0]["id"], json!(session), "{list}");
}

#[tokio::test]
async fn token_subprotocol_stays_and_the_application_protocol_passes() {
    let mut up = Upstream::start(Mode::Echo).await;
    let gw = start(&up.url(), "");
    let tok = token("bob");
    let (mut ws, resp) = upgrade(
        &gw.url(),
        &[("sec-websocket-protocol", &format!("jwt, {tok}, chat.v2"))],
    )
    .await
    .open();
    // The upstream chose chat.v2; the client gets exactly that one.
    assert_eq!(
        resp.get("sec-websocket-protocol")
            .unwrap()
            .to_str()
            .unwrap(),
        "chat.v2"
    );
    let seen = up.next().await;
    assert_eq!(
        header(&seen.headers, "sec-websocket-protocol"),
        Some("chat.v2")
    );
    assert_eq!(echo(&mut ws, "x").await, "x");
}

#[tokio::test]
async fn ticket_param_is_not_forwarded() {
    let mut up = Upstream::start(Mode::Echo).await;
    let gw = start(&up.url(), "");
    let auth = format!("Bearer {}", token("carol"));
    let r = http(
        gw.addr,
        "POST",
        "/v1/tickets",
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let ticket = r.json()["ticket"].as_str().unwrap().to_owned();
    let url = format!("{}?lang=en&ticket={ticket}", gw.url());
    let (_ws, _) = upgrade(&url, &[]).await.open();
    let seen = up.next().await;
    assert_eq!(seen.uri, "/app?upstream=1&lang=en");
    assert_eq!(header(&seen.headers, "x-wsgate-sub"), Some("carol"));
}

/// The next binary message from the gateway, skipping pings and pongs.
async fn next_binary(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
) -> tokio_tungstenite::tungstenite::Bytes {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => return b,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn frames_are_relayed_intact_both_ways() {
    let mut up = Upstream::start(Mode::Echo).await;
    let gw = start(&up.url(), "");
    let (mut ws, _) = bearer(&gw.url(), &token("dave")).await.open();
    let mut seen = up.next().await;
    assert_eq!(echo(&mut ws, "héllo").await, "héllo");
    assert_eq!(next_event(&mut seen).await, Message::Text("héllo".into()));
    // 1 MiB binary, every byte checked.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    let back = next_binary(&mut ws).await;
    assert!(back.as_ref() == big.as_slice(), "1 MiB intact");
    assert!(matches!(next_event(&mut seen).await, Message::Binary(b) if b.len() == big.len()));
    // A message in three fragments arrives whole.
    for (part, op, fin) in [
        ("frag", OpCode::Data(Data::Text), false),
        ("men", OpCode::Data(Data::Continue), false),
        ("ted", OpCode::Data(Data::Continue), true),
    ] {
        ws.send(Message::Frame(Frame::message(
            part.as_bytes().to_vec(),
            op,
            fin,
        )))
        .await
        .unwrap();
    }
    assert_eq!(next_text(&mut ws).await, "fragmented");
    assert_eq!(
        next_event(&mut seen).await,
        Message::Text("fragmented".into())
    );
    // Pings are answered on each side and relayed neither way (each side
    // has its own keep-alive with the gateway).
    ws.send(Message::Ping(b"cli".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    assert!(
        matches!(&pong, Ok(Some(Ok(Message::Pong(p)))) if p.as_ref() == b"cli"),
        "expected the pong, got {pong:?}"
    );
    ws.send(Message::Text("ping".into())).await.unwrap();
    assert_eq!(next_event(&mut seen).await, Message::Text("ping".into()));
    let answer = tokio::time::timeout(Duration::from_secs(10), seen.events.recv()).await;
    assert_eq!(answer.unwrap(), Some(Message::Pong(b"up".to_vec().into())));
    // Everything the client gets up to the next echo: not the upstream's ping.
    ws.send(Message::Text("after".into())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "after" => break,
            Ok(Some(Ok(Message::Ping(p)))) => assert_ne!(p.as_ref(), b"up", "relayed"),
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

/// After a large message both WebSockets of the pair (client and upstream)
/// are replaced by fresh ones once quiet, giving back the buffers it grew;
/// nothing is lost or reordered on either side.
#[tokio::test]
async fn both_sockets_are_recycled_after_a_large_message() {
    let mut up = Upstream::start(Mode::Echo).await;
    let gw = start(&up.url(), "");
    let (mut ws, _) = bearer(&gw.url(), &token("rita")).await.open();
    let mut seen = up.next().await;
    let big: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
    for round in 0..2 {
        ws.send(Message::Binary(big.clone().into())).await.unwrap();
        let back = next_binary(&mut ws).await;
        assert!(back.as_ref() == big.as_slice(), "round {round}: intact");
        assert!(matches!(next_event(&mut seen).await, Message::Binary(b) if b.len() == big.len()));
        // Quiet past the recycle delay; both sides are replaced meanwhile.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for i in 0..20 {
            ws.send(Message::text(format!("m{round}-{i}")))
                .await
                .unwrap();
        }
        for i in 0..20 {
            assert_eq!(next_text(&mut ws).await, format!("m{round}-{i}"));
            assert_eq!(
                next_event(&mut seen).await,
                Message::Text(format!("m{round}-{i}").into())
            );
        }
    }
    let m = http(gw.admin, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("wsgate_websocket_recycles_total 4"), "{m}");
}

/// A host name is looked up once and reused (not one lookup per client);
/// `localhost` may list `::1` first, where nothing listens: the next
/// address is tried.
#[tokio::test]
async fn a_host_name_is_looked_up_once_for_many_clients() {
    let up = Upstream::start(Mode::Echo).await;
    let gw = start(
        &format!("ws://localhost:{}/app?upstream=1", up.addr.port()),
        "",
    );
    for i in 0..3 {
        let (mut ws, _) = bearer(&gw.url(), &token(&format!("n{i}"))).await.open();
        assert_eq!(echo(&mut ws, "by name").await, "by name");
    }
    let resolved = gw.events("upstream_resolved", 1);
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert!(resolved[0]["addresses"].as_u64().is_some_and(|n| n >= 1));
}

#[tokio::test]
async fn close_codes_are_relayed_both_ways() {
    let mut up = Upstream::start(Mode::Echo).await;
    let gw = start(&up.url(), "");
    // Client closes: the upstream sees the client's code and reason.
    let (mut ws, _) = bearer(&gw.url(), &token("erin")).await.open();
    let mut seen = up.next().await;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "done here".into(),
    }))
    .await
    .unwrap();
    match next_event(&mut seen).await {
        Message::Close(Some(f)) => {
            assert_eq!((u16::from(f.code), f.reason.as_str()), (4000, "done here"))
        }
        other => panic!("expected close, got {other:?}"),
    }
    // Upstream closes: the client sees the upstream's code and reason.
    let (mut ws, _) = bearer(&gw.url(), &token("erin")).await.open();
    let _seen = up.next().await;
    ws.send(Message::Text("close:4321:see you".into()))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        (4321, "see you".into())
    );
    let closes = gw.events("close", 2);
    assert!(closes.iter().any(|c| c["code"] == 4321), "{closes:?}");
}

/// Opens a session for `sub`, revokes `sub` through the admin API, and
/// checks that both the client and the upstream get 4403.
async fn revocation_closes_both_sides(gw: &Gateway, up: &mut Upstream, sub: &str) {
    let (mut ws, _) = bearer(&gw.url(), &token(sub)).await.open();
    let mut seen = up.next().await;
    let r = http(
        gw.admin,
        "POST",
        "/admin/v1/revoke",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        &format!(r#"{{"sub":"{sub}"}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4403);
    match next_event(&mut seen).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4403),
        other => panic!("expected close, got {other:?}"),
    }
}

#[tokio::test]
async fn revocation_and_expiry_close_both_sides() {
    let mut up = Upstream::start(Mode::Echo).await;
    let gw = start(&up.url(), "");
    revocation_closes_both_sides(&gw, &mut up, "frank").await;
    // Expiry: 4401 on both sides (exp in 1 s, leeway 1 s).
    let (mut ws, _) = bearer(&gw.url(), &hs(&claims("grace", 1))).await.open();
    let mut seen = up.next().await;
    assert_eq!(close_code(&mut ws, Duration::from_secs(6)).await.0, 4401);
    match next_event(&mut seen).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 4401),
        other => panic!("expected close, got {other:?}"),
    }
}

#[tokio::test]
async fn upstream_down_or_not_websocket_is_502() {
    // A port nobody listens on.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let gw = start(&format!("ws://{addr}/ws"), "");
    bearer(&gw.url(), &token("gina"))
        .await
        .refused(502, "upstream_unavailable");
    let http200 = Upstream::start(Mode::Http200).await;
    let gw2 = start(&http200.url(), "");
    bearer(&gw2.url(), &token("gina"))
        .await
        .refused(502, "upstream_unavailable");
    // No session was left behind, and the per-user slot is free again.
    let m = http(gw2.admin, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("wsgate_connections_active 0"), "{m}");
}

#[tokio::test]
async fn bytes_right_behind_the_101_reach_the_client() {
    // The upstream's first frame comes in the same segment as its 101:
    // the handshake must hand those bytes on, not drop them.
    // Also when the head and the frame arrive in pieces.
    for mode in [Mode::Greeting, Mode::Trickle] {
        let up = Upstream::start(mode).await;
        let gw = start(&up.url(), "");
        for _ in 0..5 {
            let (mut ws, _) = bearer(&gw.url(), &token("gwen")).await.open();
            assert_eq!(next_text(&mut ws).await, "hello");
        }
    }
}

#[tokio::test]
async fn a_wrong_or_oversized_101_is_502() {
    // A response head over 16 KiB is refused as well.
    for mode in [Mode::BadAccept, Mode::UnofferedProtocol, Mode::HugeHead] {
        let up = Upstream::start(mode).await;
        let gw = start(&up.url(), "");
        bearer(&gw.url(), &token("gus"))
            .await
            .refused(502, "upstream_unavailable");
    }
}

#[tokio::test]
async fn silent_upstream_is_504_after_connect_timeout() {
    let silent = Upstream::start(Mode::Silent).await;
    let cfg = config(&silent.url(), "").replace(
        "kind = \"upstream\"",
        "kind = \"upstream\"\nconnect_timeout = \"500ms\"",
    );
    let gw = Gateway::start_with_env(&cfg, &[("TEST_IDENTITY_SECRET", IDENTITY_SECRET)]);
    let t0 = std::time::Instant::now();
    bearer(&gw.url(), &token("hank"))
        .await
        .refused(504, "upstream_timeout");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn messages_failing_the_schema_close_1007() {
    let mut up = Upstream::start(Mode::Echo).await;
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.json");
    std::fs::write(
        &schema,
        json!({
            "type": "object",
            "required": ["op"],
            "properties": {"op": {"enum": ["say", "join"]}, "text": {"type": "string", "maxLength": 100}}
        })
        .to_string(),
    )
    .unwrap();
    let cfg = config(&up.url(), "").replace(
        "kind = \"upstream\"",
        &format!(
            "kind = \"upstream\"\nmessage_schema_file = {:?}",
            schema.display().to_string()
        ),
    );
    let gw = Gateway::start_with_env(&cfg, &[("TEST_IDENTITY_SECRET", IDENTITY_SECRET)]);
    let (mut ws, _) = bearer(&gw.url(), &token("ivy")).await.open();
    let mut seen = up.next().await;
    let ok = r#"{"op":"say","text":"hi"}"#;
    assert_eq!(echo(&mut ws, ok).await, ok);
    assert_eq!(next_event(&mut seen).await, Message::Text(ok.into()));
    ws.send(Message::Text(r#"{"op":"drop_tables"}"#.into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 1007);
    // The invalid message never reached the upstream.
    match next_event(&mut seen).await {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1007),
        other => panic!("expected close, got {other:?}"),
    }
    let m = http(gw.admin, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("wsgate_schema_rejections_total 1"), "{m}");
}

#[tokio::test]
async fn first_message_auth_opens_the_upstream_after_auth() {
    let mut up = Upstream::start(Mode::Echo).await;
    let cfg = config(&up.url(), "").replace("[auth]", "[auth]\nfirst_message = true");
    let gw = Gateway::start_with_env(&cfg, &[("TEST_IDENTITY_SECRET", IDENTITY_SECRET)]);
    let (mut ws, _) = upgrade(&gw.url(), &[]).await.open();
    let auth = json!({"type": "auth", "token": token("jack")}).to_string();
    let ok: Value = serde_json::from_str(&echo(&mut ws, &auth).await).unwrap();
    assert_eq!(ok["type"], "auth_ok");
    let seen = up.next().await;
    assert_eq!(header(&seen.headers, "x-wsgate-sub"), Some("jack"));
    assert_eq!(echo(&mut ws, "after auth").await, "after auth");
}

#[tokio::test]
async fn a_client_that_does_not_read_slows_the_upstream() {
    let mut up = Upstream::start(Mode::Flood).await;
    // Backpressure alone: a write deadline longer than the test (the
    // deadline itself: tests/hardening/slow_consumers.rs).
    let gw = start(
        &up.url(),
        "[limits]\nidle_timeout = \"60s\"\nwrite_timeout = \"60s\"",
    );
    let (mut ws, _) = bearer(&gw.url(), &token("kim")).await.open();
    let _seen = up.next().await;
    // The client reads nothing for a while: the upstream must stall once
    // the kernel buffers and the gateway's small queues are full.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = up.sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = up.sent.load(Ordering::SeqCst);
    assert_eq!(
        stalled, later,
        "upstream kept sending into a stalled client"
    );
    // 64 KiB messages: socket buffers on loopback hold a few MiB; an
    // unbounded relay would have taken thousands.
    assert!(stalled < 400, "{stalled} messages buffered");
    // Reading resumes the flow, every message intact.
    for _ in 0..(stalled + 50) {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b.len(), 64 * 1024),
            Ok(Some(Ok(Message::Ping(_)))) => {}
            other => panic!("expected data, got {other:?}"),
        }
    }
    assert!(up.sent.load(Ordering::SeqCst) > stalled);
}

/// A TLS echo upstream for localhost with a fresh self-signed certificate;
/// returns its port and the certificate's PEM file. With `h2`: HTTP/2 only
/// (ALPN `h2`), WebSockets as extended CONNECT streams.
async fn tls_upstream(dir: &std::path::Path, h2: bool) -> (u16, std::path::PathBuf) {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let pem = dir.join("upstream-ca.pem");
    std::fs::write(&pem, ck.cert.pem()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(ck.signing_key.serialize_pem().as_bytes()).unwrap();
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(ck.cert.der().to_vec())], key)
        .unwrap();
    if h2 {
        cfg.alpn_protocols = vec![b"h2".to_vec()];
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                if h2 {
                    let (tx, _) = mpsc::unbounded_channel();
                    return serve_h2(tls, H2Mode::Echo, tx, Arc::default()).await;
                }
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, pem)
}

#[tokio::test]
async fn wss_upstream_is_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (port, ca) = tls_upstream(dir.path(), false).await;
    let url = format!("wss://localhost:{port}/app");
    // Trusted through backend.upstream_ca_file: relayed over TLS.
    let cfg = config(&url, "").replace(
        "kind = \"upstream\"",
        &format!(
            "kind = \"upstream\"\nupstream_ca_file = {:?}",
            ca.display().to_string()
        ),
    );
    let gw = Gateway::start_with_env(&cfg, &[("TEST_IDENTITY_SECRET", IDENTITY_SECRET)]);
    let (mut ws, _) = bearer(&gw.url(), &token("lena")).await.open();
    assert_eq!(echo(&mut ws, "over tls").await, "over tls");
    // With only the system roots the self-signed upstream is not trusted:
    // 502, never a relay to an unverified peer.
    let gw2 = start(&url, "");
    bearer(&gw2.url(), &token("lena"))
        .await
        .refused(502, "upstream_unavailable");
    // The log line may trail the answer: wait for it.
    let errors = gw2.events("upstream_error", 1);
    assert!(errors.iter().any(|e| e["stage"] == "tls"), "{errors:?}");
}

/// A gateway relaying to `upstream` over HTTP/2 (RFC 8441).
fn start_h2(upstream: &str, backend_extra: &str) -> Gateway {
    launch(&config(upstream, "").replace(
        "kind = \"upstream\"",
        &format!("kind = \"upstream\"\nupstream_http2 = true\n{backend_extra}"),
    ))
}

#[tokio::test]
async fn http2_upstream_carries_many_clients_on_one_connection() {
    let mut up = Upstream::start_h2(H2Mode::Echo).await;
    let gw = start_h2(&up.url(), "");
    let mut clients = Vec::new();
    for i in 0..5 {
        let tok = token(&format!("h2-{i}"));
        let (mut ws, resp) = upgrade(
            &format!("{}?room={i}", gw.url()),
            &[
                ("authorization", &format!("Bearer {tok}")),
                ("cookie", "session=not-the-token; theme=dark"),
                ("x-wsgate-sub", "mallory"),
                ("sec-websocket-protocol", "chat.v2"),
            ],
        )
        .await
        .open();
        let seen = up.next().await;
        let h = &seen.headers;
        assert_eq!(header(h, "x-wsgate-sub"), Some(format!("h2-{i}").as_str()));
        assert_eq!(h.get_all("x-wsgate-sub").iter().count(), 1);
        assert!(signature_ok(h), "signature verifies: {h:?}");
        assert_eq!(header(h, "cookie"), Some("theme=dark"));
        assert_eq!(header(h, "sec-websocket-version"), Some("13"));
        // RFC 8441 5: no HTTP/1.1 upgrade headers on an HTTP/2 stream.
        for n in [
            "authorization",
            "sec-websocket-key",
            "upgrade",
            "connection",
            "host",
        ] {
            assert!(h.get(n).is_none(), "{n} forwarded: {h:?}");
        }
        assert_eq!(seen.uri, format!("/app?upstream=1&room={i}"));
        // The upstream's choice of subprotocol reaches the client.
        assert_eq!(header(&resp, "sec-websocket-protocol"), Some("chat.v2"));
        assert_eq!(echo(&mut ws, &format!("m{i}")).await, format!("m{i}"));
        clients.push((ws, seen));
    }
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one HTTP/2 connection"
    );
    assert_eq!(metric(&gw, "wsgate_upstream_http2_connections").await, 1.0);
    // Interleaved traffic stays on its own stream, binary intact.
    for (i, (ws, _)) in clients.iter_mut().enumerate().rev() {
        let payload: Vec<u8> = (0..70_000u32).map(|b| (b as u8) ^ (i as u8)).collect();
        ws.send(Message::Binary(payload.clone().into()))
            .await
            .unwrap();
        assert_eq!(next_binary(ws).await.as_ref(), &payload[..]);
    }
    // Close codes both ways, per stream.
    let (mut ws, mut seen) = clients.pop().unwrap();
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "done here".into(),
    }))
    .await
    .unwrap();
    // (after the echoes this stream carried)
    let close = loop {
        match next_event(&mut seen).await {
            Message::Text(_) | Message::Binary(_) => continue,
            other => break other,
        }
    };
    match close {
        Message::Close(Some(f)) => {
            assert_eq!((u16::from(f.code), f.reason.as_str()), (4000, "done here"))
        }
        other => panic!("expected close, got {other:?}"),
    }
    let (ws, _) = &mut clients[0];
    ws.send(Message::Text("close:4321:see you".into()))
        .await
        .unwrap();
    assert_eq!(
        close_code(ws, Duration::from_secs(5)).await,
        (4321, "see you".into())
    );
    // The other streams of the connection are untouched.
    let (ws, _) = &mut clients[1];
    assert_eq!(echo(ws, "still here").await, "still here");
}

#[tokio::test]
async fn http2_streams_per_connection_are_bounded_and_given_back() {
    let mut up = Upstream::start_h2(H2Mode::Echo).await;
    let gw = start_h2(&up.url(), "upstream_http2_streams = 2");
    let mut open = Vec::new();
    for i in 0..3 {
        let (ws, _) = bearer(&gw.url(), &token(&format!("s{i}"))).await.open();
        let _ = up.next().await;
        open.push(ws);
    }
    // Two streams fill the first connection; the third client opens a second.
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(metric(&gw, "wsgate_upstream_http2_connections").await, 2.0);
    // Closed clients give their streams back: new ones reuse the connections.
    for mut ws in open.drain(..) {
        ws.close(None).await.unwrap();
        let _ = close_code(&mut ws, Duration::from_secs(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..4 {
        let (mut ws, _) = bearer(&gw.url(), &token(&format!("t{i}"))).await.open();
        let _ = up.next().await;
        assert_eq!(echo(&mut ws, "again").await, "again");
        open.push(ws);
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2, "no new connection");
}

#[tokio::test]
async fn http2_upstream_revocation_closes_the_stream() {
    let mut up = Upstream::start_h2(H2Mode::Echo).await;
    let gw = start_h2(&up.url(), "");
    revocation_closes_both_sides(&gw, &mut up, "hank").await;
}

#[tokio::test]
async fn http2_upstream_that_refuses_or_cannot_is_502() {
    // An HTTP/2 server without SETTINGS_ENABLE_CONNECT_PROTOCOL.
    let up = Upstream::start_h2(H2Mode::NoExtendedConnect).await;
    let gw = start_h2(&up.url(), "connect_timeout = \"2s\"");
    bearer(&gw.url(), &token("ivy"))
        .await
        .refused(502, "upstream_unavailable");
    let errors = gw.events("upstream_error", 1);
    assert!(
        errors.iter().any(|e| e["error"]
            .as_str()
            .is_some_and(|e| e.contains("extended CONNECT"))),
        "{errors:?}"
    );
    // A CONNECT answered 403.
    let up = Upstream::start_h2(H2Mode::Forbidden).await;
    let gw = start_h2(&up.url(), "");
    bearer(&gw.url(), &token("ivy"))
        .await
        .refused(502, "upstream_unavailable");
    // An HTTP/1.1-only upstream does not understand the preface.
    let up = Upstream::start(Mode::Echo).await;
    let gw = start_h2(&up.url(), "connect_timeout = \"2s\"");
    let refused = bearer(&gw.url(), &token("ivy")).await;
    refused.refused(502, "upstream_unavailable");
    let m = http(gw.admin, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("wsgate_connections_active 0"), "{m}");
}

#[tokio::test]
async fn http2_a_stalled_client_stalls_its_stream_only() {
    let mut up = Upstream::start_h2(H2Mode::Echo).await;
    // Backpressure alone, as above.
    let gw = launch(
        &config(&up.url(), "[limits]\nwrite_timeout = \"60s\"").replace(
            "kind = \"upstream\"",
            "kind = \"upstream\"\nupstream_http2 = true",
        ),
    );
    let (mut slow, _) = bearer(&gw.url(), &token("kim")).await.open();
    let _ = up.next().await;
    let (mut fast, _) = bearer(&gw.url(), &token("lou")).await.open();
    let _ = up.next().await;
    slow.send(Message::Text("flood".into())).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = up.sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        stalled,
        up.sent.load(Ordering::SeqCst),
        "upstream kept sending"
    );
    // The stream window and the gateway's queues, not the kernel's
    // buffers, bound it: a few hundred KiB to a few MiB.
    assert!(stalled < 100, "{stalled} messages buffered");
    // The other stream of the same connection is not held up.
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    for i in 0..20 {
        let m = format!("f{i}");
        assert_eq!(echo(&mut fast, &m).await, m);
    }
    // Reading resumes the flood, every message intact.
    for _ in 0..(stalled + 50) {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => assert_eq!(b.len(), 64 * 1024),
            Ok(Some(Ok(Message::Ping(_)))) => {}
            other => panic!("expected data, got {other:?}"),
        }
    }
    assert!(up.sent.load(Ordering::SeqCst) > stalled);
}

#[tokio::test]
async fn http2_upstream_going_away_costs_no_client() {
    let mut up = Upstream::start_h2(H2Mode::GoAwayAfterFirst).await;
    let gw = start_h2(&up.url(), "");
    let (mut first, _) = bearer(&gw.url(), &token("jo")).await.open();
    let _ = up.next().await;
    // Each connection goes away after its first stream: every later client
    // lands on a connection that is closing, and must still get through.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (mut ws, _) = bearer(&gw.url(), &token(&format!("jo{i}"))).await.open();
        let _ = up.next().await;
        assert_eq!(echo(&mut ws, "through").await, "through");
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 4);
    // The stream opened before the GOAWAY is untouched.
    assert_eq!(echo(&mut first, "still here").await, "still here");
}

#[tokio::test]
async fn wss_http2_upstream_negotiates_h2_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let trusting = |url: &str, ca: &std::path::Path| {
        let cfg = config(url, "").replace(
            "kind = \"upstream\"",
            &format!(
                "kind = \"upstream\"\nupstream_http2 = true\nupstream_ca_file = {:?}",
                ca.display().to_string()
            ),
        );
        Gateway::start_with_env(&cfg, &[("TEST_IDENTITY_SECRET", IDENTITY_SECRET)])
    };
    // An HTTP/2 upstream over TLS: streams of one verified connection.
    let (port, ca) = tls_upstream(dir.path(), true).await;
    let gw = trusting(&format!("wss://localhost:{port}/app"), &ca);
    for i in 0..3 {
        let (mut ws, _) = bearer(&gw.url(), &token(&format!("tls{i}"))).await.open();
        assert_eq!(echo(&mut ws, "over h2 and tls").await, "over h2 and tls");
    }
    assert_eq!(metric(&gw, "wsgate_upstream_http2_connections").await, 1.0);
    // A TLS upstream that does not offer h2 by ALPN is refused, not sent
    // an HTTP/2 preface it would misread.
    let h1 = tempfile::tempdir().unwrap();
    let (port, ca) = tls_upstream(h1.path(), false).await;
    let gw = trusting(&format!("wss://localhost:{port}/app"), &ca);
    bearer(&gw.url(), &token("tls"))
        .await
        .refused(502, "upstream_unavailable");
    let errors = gw.events("upstream_error", 1);
    assert!(
        errors
            .iter()
            .any(|e| e["error"].as_str().is_some_and(|e| e.contains("ALPN"))),
        "{errors:?}"
    );
}

#[tokio::test]
async fn http2_upstream_crash_closes_its_clients_1013_and_the_next_reconnects() {
    let mut up = Upstream::start_h2(H2Mode::DieAfterFirst).await;
    let gw = start_h2(&up.url(), "");
    let (mut a, _) = bearer(&gw.url(), &token("kay")).await.open();
    let _ = up.next().await;
    let (mut b, _) = bearer(&gw.url(), &token("lee")).await.open();
    let _ = up.next().await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1);
    // Both streams of the dead connection end "upstream lost".
    for ws in [&mut a, &mut b] {
        assert_eq!(
            close_code(ws, Duration::from_secs(5)).await,
            (1013, "upstream lost".into())
        );
    }
    // The next client gets a fresh connection.
    let (mut c, _) = bearer(&gw.url(), &token("kay")).await.open();
    let _ = up.next().await;
    assert_eq!(echo(&mut c, "again").await, "again");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upstream_gone_without_a_close_is_1013_upstream_lost() {
    let mut up = Upstream::start(Mode::Echo).await;
    let gw = start(&up.url(), "");
    let (mut ws, _) = bearer(&gw.url(), &token("max")).await.open();
    let _ = up.next().await;
    ws.send(Message::Text("die".into())).await.unwrap();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        (1013, "upstream lost".into())
    );
}
