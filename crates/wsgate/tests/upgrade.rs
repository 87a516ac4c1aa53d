//! The upgrade pipeline over real sockets: every transport and every
//! rejection that applies before tickets and the store.

mod common;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn bearer_connects_and_echoes() {
    let gw = Gateway::start(&base_config(""));
    let (mut ws, headers) = bearer(&gw.url(), &token("alice")).await.open();
    assert!(headers.get("sec-websocket-protocol").is_none());
    assert_eq!(echo(&mut ws, "hello").await, "hello");
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    let ev = gw.events("handshake", 1);
    assert_eq!(ev[0]["result"], "accepted");
    assert_eq!(ev[0]["transport"], "bearer");
    assert_eq!(ev[0]["sub"], "alice");
    assert_eq!(ev[0]["status"], 101);
    for k in ["ts", "level", "reason", "ip", "origin", "latency_us"] {
        assert!(
            ev[0].get(k).is_some() || k == "reason" || k == "origin",
            "{k} in {}",
            ev[0]
        );
    }
    let closes = gw.events("close", 1);
    assert_eq!(closes[0]["sub"], "alice");
    assert_eq!(closes[0]["code"], 1000);
    assert!(closes[0]["duration_ms"].is_u64());
    assert_eq!(closes[0]["bytes_in"], 5);
    assert_eq!(closes[0]["bytes_out"], 5);
}

#[tokio::test]
async fn subprotocol_echoes_sentinel_never_token() {
    let gw = Gateway::start(&base_config(""));
    let t = token("bob");
    let proto = format!("jwt, {t}");
    let (mut ws, headers) = upgrade(&gw.url(), &[("sec-websocket-protocol", &proto)])
        .await
        .open();
    assert_eq!(
        headers.get("sec-websocket-protocol").expect("protocol"),
        "jwt"
    );
    assert_eq!(echo(&mut ws, "x").await, "x");
    // With an application protocol the backend does not know, still the sentinel.
    let proto = format!("chat.v1, jwt, {t}");
    let (_ws, headers) = upgrade(&gw.url(), &[("sec-websocket-protocol", &proto)])
        .await
        .open();
    assert_eq!(
        headers.get("sec-websocket-protocol").expect("protocol"),
        "jwt"
    );
}

#[tokio::test]
async fn cookie_needs_allowed_origin() {
    let gw = Gateway::start(&base_config(""));
    let cookie = format!("other=1; session={}", token("carol"));
    let (mut ws, _) = upgrade(
        &gw.url(),
        &[("cookie", &cookie), ("origin", "http://app.test")],
    )
    .await
    .open();
    assert_eq!(echo(&mut ws, "c").await, "c");
    // Wildcard origin.
    upgrade(
        &gw.url(),
        &[("cookie", &cookie), ("origin", "https://a.example.test")],
    )
    .await
    .open();
    // Cross-site hijacking: the browser attaches the cookie from evil.test.
    upgrade(
        &gw.url(),
        &[("cookie", &cookie), ("origin", "http://evil.test")],
    )
    .await
    .refused(403, "origin_not_allowed");
    // No Origin at all: allow_missing never covers the cookie.
    upgrade(&gw.url(), &[("cookie", &cookie)])
        .await
        .refused(403, "origin_not_allowed");
    upgrade(&gw.url(), &[("cookie", &cookie), ("origin", "null")])
        .await
        .refused(403, "origin_not_allowed");
}

#[tokio::test]
async fn cookie_csrf_check() {
    let gw = Gateway::start(
        &base_config("").replace("leeway = \"1s\"", "leeway = \"1s\"\ncookie_csrf = true"),
    );
    let mut c = claims("dave", 3600);
    c["csrf"] = json!("csrf-value-123");
    let cookie = format!("session={}", hs(&c));
    let o = ("origin", "http://app.test");
    upgrade(
        &format!("{}?csrf=csrf-value-123", gw.url()),
        &[("cookie", &cookie), o],
    )
    .await
    .open();
    upgrade(
        &format!("{}?csrf=wrong", gw.url()),
        &[("cookie", &cookie), o],
    )
    .await
    .refused(403, "csrf_failed");
    upgrade(&gw.url(), &[("cookie", &cookie), o])
        .await
        .refused(403, "csrf_failed");
    // A token without a csrf claim can never pass.
    let cookie2 = format!("session={}", token("dave"));
    upgrade(&format!("{}?csrf=", gw.url()), &[("cookie", &cookie2), o])
        .await
        .refused(403, "csrf_failed");
}

#[tokio::test]
async fn query_transport_is_opt_in_and_never_logged() {
    let t = token("erin");
    let gw = Gateway::start(&base_config(""));
    let (mut ws, _) = upgrade(&format!("{}?token={t}", gw.url()), &[])
        .await
        .open();
    assert_eq!(echo(&mut ws, "q").await, "q");
    // Startup warned about it.
    assert!(gw
        .logs()
        .iter()
        .any(|l| l.contains("config_warning") && l.contains("query")));
    // Not enabled by default.
    let off = Gateway::start(&base_config("").replace(", \"query\"]", "]"));
    upgrade(&format!("{}?token={t}", off.url()), &[])
        .await
        .refused(401, "missing_token");
    for gw in [&gw, &off] {
        let sig = t.rsplit('.').next().expect("sig");
        assert!(
            !gw.logs().iter().any(|l| l.contains(sig)),
            "token leaked into logs"
        );
    }
}

#[tokio::test]
async fn precedence_explicit_beats_cookie() {
    let gw = Gateway::start(&base_config(""));
    // A bad bearer token next to a good cookie: the explicit one is judged.
    let cookie = format!("session={}", token("frank"));
    upgrade(
        &gw.url(),
        &[
            ("authorization", "Bearer not.a.jwt"),
            ("cookie", &cookie),
            ("origin", "http://app.test"),
        ],
    )
    .await
    .refused(401, "malformed_token");
    let ev = gw.events("handshake", 1);
    assert_eq!(ev[0]["transport"], "bearer");
}

#[tokio::test]
async fn ticket_param_without_tickets() {
    let gw = Gateway::start(&base_config(""));
    upgrade(&format!("{}?ticket={}", gw.url(), token("g")), &[])
        .await
        .refused(401, "ticket_required");
}

#[tokio::test]
async fn token_rejections() {
    let gw = Gateway::start(&base_config(""));
    let url = gw.url();
    let www = |h: &tokio_tungstenite::tungstenite::http::HeaderMap| {
        h.get("www-authenticate")
            .expect("www-authenticate")
            .to_str()
            .expect("ascii")
            .to_string()
    };
    let h = upgrade(&url, &[]).await.refused(401, "missing_token");
    assert_eq!(www(&h), r#"Bearer realm="wsgate""#);
    let h = bearer(&url, "garbage")
        .await
        .refused(401, "malformed_token");
    assert_eq!(www(&h), r#"Bearer realm="wsgate", error="invalid_token""#);
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-another-secret-another"),
        None,
        &claims("a", 60),
    );
    bearer(&url, &other).await.refused(401, "bad_signature");
    let hs512 = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        &claims("a", 60),
    );
    bearer(&url, &hs512)
        .await
        .refused(401, "algorithm_not_allowed");
    bearer(&url, &hs(&claims("a", -30)))
        .await
        .refused(401, "expired");
    let mut c = claims("a", 60);
    c["nbf"] = json!(now() + 120);
    bearer(&url, &hs(&c)).await.refused(401, "not_yet_valid");
    let mut c = claims("a", 60);
    c.as_object_mut().expect("obj").remove("exp");
    bearer(&url, &hs(&c)).await.refused(401, "missing_claim");
    let big = "a".repeat(9000);
    bearer(&url, &big).await.refused(400, "token_too_large");
    // alg none.
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none"}"#),
        b64.encode(claims("root", 60).to_string())
    );
    bearer(&url, &none)
        .await
        .refused(401, "algorithm_not_allowed");
    // Invalid base64 and invalid UTF-8 inside a token.
    bearer(&url, "@@@.###.$$$")
        .await
        .refused(401, "malformed_token");
    let bad_utf8 = format!(
        "{}.{}.sig",
        b64.encode([0xffu8, 0xfe]),
        b64.encode([0xc3u8, 0x28])
    );
    bearer(&url, &bad_utf8)
        .await
        .refused(401, "malformed_token");
    // No response ever echoes the token.
    let t = hs(&claims("a", -30));
    if let Upgrade::Refused { body, headers, .. } = bearer(&url, &t).await {
        assert!(!body.to_string().contains(&t));
        assert!(!format!("{headers:?}").contains(&t[t.len() - 20..]));
    }
}

#[tokio::test]
async fn issuer_and_audience() {
    let gw = Gateway::start(&base_config("").replace(
        "leeway = \"1s\"",
        "leeway = \"1s\"\nissuer = \"https://idp.test\"\naudience = [\"api\"]",
    ));
    let mut c = claims("a", 60);
    c["iss"] = json!("https://idp.test");
    c["aud"] = json!(["other", "api"]);
    bearer(&gw.url(), &hs(&c)).await.open();
    c["aud"] = json!("nope");
    bearer(&gw.url(), &hs(&c))
        .await
        .refused(401, "bad_audience");
    c["aud"] = json!("api");
    c["iss"] = json!("https://evil.test");
    bearer(&gw.url(), &hs(&c)).await.refused(401, "bad_issuer");
}

#[tokio::test]
async fn origin_policy() {
    let gw = Gateway::start(&base_config(""));
    let t = token("o");
    let auth = format!("Bearer {t}");
    upgrade(
        &gw.url(),
        &[("authorization", &auth), ("origin", "http://app.test")],
    )
    .await
    .open();
    upgrade(
        &gw.url(),
        &[
            ("authorization", &auth),
            ("origin", "https://x.y.example.test"),
        ],
    )
    .await
    .open();
    upgrade(
        &gw.url(),
        &[("authorization", &auth), ("origin", "https://example.test")],
    )
    .await
    .refused(403, "origin_not_allowed");
    upgrade(
        &gw.url(),
        &[("authorization", &auth), ("origin", "http://app.test.evil")],
    )
    .await
    .refused(403, "origin_not_allowed");
    // Missing origin refused when allow_missing is off.
    let strict =
        Gateway::start(&base_config("").replace("allow_missing = true", "allow_missing = false"));
    upgrade(&strict.url(), &[("authorization", &auth)])
        .await
        .refused(403, "origin_not_allowed");
}

#[tokio::test]
async fn per_user_cap() {
    let gw = Gateway::start(&base_config("[limits]\nconnections_per_user = 2"));
    let t = token("capped");
    let (_a, _) = bearer(&gw.url(), &t).await.open();
    let (_b, _) = bearer(&gw.url(), &t).await.open();
    let h = bearer(&gw.url(), &t)
        .await
        .refused(429, "too_many_connections");
    assert!(h.get("retry-after").is_some());
    bearer(&gw.url(), &token("someone-else")).await.open();
}

#[tokio::test]
async fn closes_4401_at_expiry() {
    let gw = Gateway::start(&base_config(""));
    // exp in 2s, leeway 1s: closed about 3s from now.
    let (mut ws, _) = bearer(&gw.url(), &hs(&claims("short", 2))).await.open();
    let started = std::time::Instant::now();
    let mut got_warning = false;
    let (code, reason) = loop {
        match tokio::time::timeout(
            Duration::from_secs(6),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                assert_eq!(v["type"], "auth_expiring");
                got_warning = true;
            }
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))))) => {
                break (u16::from(f.code), f.reason.to_string())
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!((code, reason.as_str()), (4401, "token expired"));
    assert!(got_warning, "auth_expiring before the deadline");
    let el = started.elapsed();
    assert!(
        el >= Duration::from_millis(1500) && el < Duration::from_millis(4500),
        "{el:?}"
    );
    let closes = gw.events("close", 1);
    assert_eq!(closes[0]["code"], 4401);
}

#[tokio::test]
async fn in_band_refresh_moves_deadline() {
    let gw = Gateway::start(&base_config(""));
    let (mut ws, _) = bearer(&gw.url(), &hs(&claims("r", 2))).await.open();
    let warn = next_text(&mut ws).await;
    assert!(warn.contains("auth_expiring"));
    let fresh = hs(&claims("r", 3600));
    let ok: serde_json::Value = serde_json::from_str(
        &echo(
            &mut ws,
            &json!({"type": "auth", "token": fresh}).to_string(),
        )
        .await,
    )
    .expect("json");
    assert_eq!(ok["type"], "auth_ok");
    assert_eq!(ok["sub"], "r");
    // Another subject cannot take over.
    let fail: serde_json::Value = serde_json::from_str(
        &echo(
            &mut ws,
            &json!({"type": "auth", "token": token("mallory")}).to_string(),
        )
        .await,
    )
    .expect("json");
    assert_eq!(fail["type"], "auth_fail");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(echo(&mut ws, "still here").await, "still here");
}

/// Raw HTTP for requests a WebSocket client would never send.
async fn raw(addr: std::net::SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(req).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("")
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[tokio::test]
async fn malformed_upgrades() {
    let gw = Gateway::start(&base_config(""));
    let auth = format!("Authorization: Bearer {}\r\n", token("m"));
    let req = |method: &str, extra: &str| {
        format!("{method} /ws HTTP/1.1\r\nHost: x\r\n{auth}{extra}\r\n").into_bytes()
    };
    let up =
        |key: &str, ver: &str| format!("Upgrade: websocket\r\nConnection: Upgrade\r\n{key}{ver}");
    let k = format!("Sec-WebSocket-Key: {KEY}\r\n");
    // A valid one first, to show the rest fail for their own reason.
    let ok = raw(
        gw.addr,
        &req("GET", &up(&k, "Sec-WebSocket-Version: 13\r\n")),
    )
    .await;
    assert_eq!(status_of(&ok), "101", "{ok}");
    for (name, r) in [
        (
            "no key",
            req("GET", &up("", "Sec-WebSocket-Version: 13\r\n")),
        ),
        (
            "bad key",
            req(
                "GET",
                &up(
                    "Sec-WebSocket-Key: !!!\r\n",
                    "Sec-WebSocket-Version: 13\r\n",
                ),
            ),
        ),
        (
            "short key",
            req(
                "GET",
                &up(
                    "Sec-WebSocket-Key: YWJj\r\n",
                    "Sec-WebSocket-Version: 13\r\n",
                ),
            ),
        ),
        ("no version", req("GET", &up(&k, ""))),
        (
            "post",
            req(
                "POST",
                &up(&k, "Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n"),
            ),
        ),
        (
            "no upgrade",
            req("GET", &format!("{k}Sec-WebSocket-Version: 13\r\n")),
        ),
    ] {
        let resp = raw(gw.addr, &r).await;
        assert_eq!(status_of(&resp), "400", "{name}: {resp}");
        assert!(resp.contains(r#""error":"bad_upgrade""#), "{name}: {resp}");
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{name}: {resp}"
        );
    }
    let resp = raw(
        gw.addr,
        &req("GET", &up(&k, "Sec-WebSocket-Version: 8\r\n")),
    )
    .await;
    assert_eq!(status_of(&resp), "426", "{resp}");
    assert!(resp
        .to_ascii_lowercase()
        .contains("sec-websocket-version: 13"));
    // Huge head.
    let huge = req(
        "GET",
        &format!(
            "X-Big: {}\r\n{}",
            "a".repeat(20_000),
            up(&k, "Sec-WebSocket-Version: 13\r\n")
        ),
    );
    let resp = raw(gw.addr, &huge).await;
    assert_eq!(status_of(&resp), "431", "{resp}");
    assert!(resp.contains("headers_too_large"));
    // Garbage that is not HTTP at all.
    let resp = raw(gw.addr, b"\x16\x03\x01\x00\xff garbage\r\n\r\n").await;
    assert!(resp.is_empty() || status_of(&resp) == "400", "{resp}");
    // Invalid UTF-8 in header values.
    let mut r = req("GET", &up(&k, "Sec-WebSocket-Version: 13\r\n"));
    let pos = r.len() - 2;
    r.splice(pos..pos, b"Origin: \xff\xfe\r\n".iter().copied());
    let resp = raw(gw.addr, &r).await;
    assert_eq!(status_of(&resp), "403", "{resp}");
    // The gateway is still fine.
    bearer(&gw.url(), &token("after")).await.open();
}

#[tokio::test]
async fn slow_head_is_dropped() {
    let gw = Gateway::start(&base_config(""));
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    // handshake_timeout is 1s: the server closes well before 3s.
    let r = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
}

#[tokio::test]
async fn oversized_message_closes_1009() {
    let gw = Gateway::start(&base_config("[limits]\nmax_message_bytes = 1024"));
    let (mut ws, _) = bearer(&gw.url(), &token("big")).await.open();
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Binary(vec![0u8; 4096].into()),
    )
    .await
    .expect("send");
    let (code, _) = close_code(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn health_endpoints() {
    let gw = Gateway::start(&base_config(""));
    for addr in [gw.addr, gw.admin] {
        for path in ["/healthz", "/readyz"] {
            let resp = raw(
                addr,
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await;
            assert_eq!(status_of(&resp), "200", "{path}: {resp}");
        }
    }
}

#[tokio::test]
async fn per_ip_rate_limit_before_verification() {
    let env = [
        ("WSGATE_LIMITS__HANDSHAKES_PER_IP_PER_SEC", "1"),
        ("WSGATE_LIMITS__HANDSHAKE_BURST_PER_IP", "3"),
    ];
    let gw = Gateway::start_with_env(&base_config(""), &env);
    let t = token("rl");
    for _ in 0..3 {
        bearer(&gw.url(), &t).await.open();
    }
    // Even a garbage token is refused by rate before it is looked at.
    let h = bearer(&gw.url(), "garbage")
        .await
        .refused(429, "rate_limited");
    assert!(h.get("retry-after").is_some());
    // X-Forwarded-For from an untrusted peer changes nothing.
    upgrade(
        &gw.url(),
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("authorization", &format!("Bearer {t}")),
        ],
    )
    .await
    .refused(429, "rate_limited");
    // Only upgrades are limited: the same address still gets /healthz.
    let resp = raw(
        gw.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), "200", "{resp}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bearer(&gw.url(), &t).await.open();
    // Every refusal above was counted and logged with its reason.
    let refused = gw
        .events("handshake", 10)
        .into_iter()
        .filter(|e| e["reason"] == "rate_limited")
        .count();
    assert_eq!(refused, 2);

    // Behind a trusted proxy, each forwarded client has its own bucket.
    let proxied = Gateway::start_with_env(
        &base_config("[trusted_proxies]\ncidrs = [\"127.0.0.1/32\"]"),
        &env,
    );
    for i in 0..3 {
        let xff = format!("198.51.100.{i}");
        for _ in 0..3 {
            upgrade(
                &proxied.url(),
                &[
                    ("x-forwarded-for", &xff),
                    ("authorization", &format!("Bearer {t}")),
                ],
            )
            .await
            .open();
        }
    }
    upgrade(
        &proxied.url(),
        &[
            ("x-forwarded-for", "198.51.100.0"),
            ("authorization", &format!("Bearer {t}")),
        ],
    )
    .await
    .refused(429, "rate_limited");
    let ev = proxied.events("handshake", 10);
    assert_eq!(ev.last().expect("line")["ip"], "198.51.100.0");
}

#[tokio::test]
async fn message_rate_closes_4429() {
    let gw = Gateway::start_with_env(
        &base_config(""),
        &[("WSGATE_LIMITS__MESSAGES_PER_SEC", "5")],
    );
    let (mut ws, _) = bearer(&gw.url(), &token("chatty")).await.open();
    // Burst is 2x: ten quick messages pass, then the socket is closed.
    for i in 0..10 {
        assert_eq!(echo(&mut ws, &i.to_string()).await, i.to_string());
    }
    for i in 0..5 {
        let _ = futures_util::SinkExt::send(
            &mut ws,
            tokio_tungstenite::tungstenite::Message::Text(i.to_string().into()),
        )
        .await;
    }
    let mut code = 0;
    while let Ok(Some(m)) = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    {
        if let Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f))) = m {
            code = u16::from(f.code);
            break;
        }
    }
    assert_eq!(code, 4429);
}

#[tokio::test]
async fn silent_peer_closes_4408() {
    let gw = Gateway::start_with_env(
        &base_config(""),
        &[
            ("WSGATE_LIMITS__PING_INTERVAL", "300ms"),
            ("WSGATE_LIMITS__IDLE_TIMEOUT", "1s"),
        ],
    );
    // A raw upgrade whose socket is then never read: no pong ever comes back.
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        token("quiet")
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let ev = gw.events("close", 1);
    assert_eq!(
        ev.first().map(|e| e["code"].clone()),
        Some(serde_json::json!(4408)),
        "{ev:?}"
    );
    // A client that answers pings stays connected past the idle timeout.
    let (mut ws, _) = bearer(&gw.url(), &token("chatty")).await.open();
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < until {
        // Reading lets the client answer the gateway's pings.
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            futures_util::StreamExt::next(&mut ws),
        )
        .await;
    }
    assert_eq!(echo(&mut ws, "alive").await, "alive");
}

/// A TCP connection from another loopback address (an "attacker" IP).
async fn connect_from(src: &str, to: std::net::SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{src}:0").parse().expect("addr"))
        .expect("bind");
    sock.connect(to).await.expect("connect")
}

#[tokio::test]
async fn slow_heads_do_not_delay_valid_clients_and_are_capped_per_ip() {
    let gw = Gateway::start_with_env(
        &base_config(""),
        &[("WSGATE_LIMITS__PENDING_HANDSHAKES_PER_IP", "1000")],
    );
    // 300 slowloris sockets from 127.0.0.2, each sending a partial head.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut s = connect_from("127.0.0.2", gw.addr).await;
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        slow.push(s);
    }
    // A valid client is served at once meanwhile.
    let started = std::time::Instant::now();
    let (mut ws, _) = bearer(&gw.url(), &token("valid")).await.open();
    assert_eq!(echo(&mut ws, "fast").await, "fast");
    // Served long before the slow heads' 3 s deadline: nothing waited on them.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    // Every slow socket is reset once its deadline passes (a RST, not a
    // FIN: no TIME_WAIT left behind per slowloris socket).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    for s in &mut slow {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        assert!(
            matches!(&r, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{r:?}"
        );
    }

    // With a cap of 5 pending handshakes per IP, the 6th is refused at once.
    let capped = Gateway::start_with_env(
        &base_config(""),
        &[("WSGATE_LIMITS__PENDING_HANDSHAKES_PER_IP", "5")],
    );
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = connect_from("127.0.0.3", capped.addr).await;
        s.write_all(b"GET /ws HTTP/1.1\r\n").await.expect("write");
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut sixth = connect_from("127.0.0.3", capped.addr).await;
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), sixth.read_to_string(&mut out)).await;
    assert!(out.starts_with("HTTP/1.1 429"), "{out}");
    assert!(out.contains("rate_limited") && out.to_ascii_lowercase().contains("retry-after"));
    // Another address is unaffected.
    bearer(&capped.url(), &token("other")).await.open();
}

#[tokio::test]
async fn global_connection_cap() {
    let gw = Gateway::start_with_env(&base_config(""), &[("WSGATE_LIMITS__MAX_CONNECTIONS", "2")]);
    let (_a, _) = bearer(&gw.url(), &token("g1")).await.open();
    let (_b, _) = bearer(&gw.url(), &token("g2")).await.open();
    let h = bearer(&gw.url(), &token("g3"))
        .await
        .refused(429, "too_many_connections");
    assert!(h.get("retry-after").is_some());
}

#[tokio::test]
async fn proxy_protocol_from_trusted_balancers_only() {
    let gw = Gateway::start(
        &base_config("[trusted_proxies]\ncidrs = [\"127.0.0.1/32\"]").replace(
            "max_header_bytes = 16384",
            "max_header_bytes = 16384\nproxy_protocol = true",
        ),
    );
    let upgrade_req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        token("behind-lb")
    );
    let with_v1 = format!("PROXY TCP4 203.0.113.50 127.0.0.1 5555 8080\r\n{upgrade_req}");
    let resp = raw(gw.addr, with_v1.as_bytes()).await;
    assert_eq!(status_of(&resp), "101", "{resp}");
    let ev = gw.events("handshake", 1);
    assert_eq!(ev[0]["ip"], "203.0.113.50");
    // No header: dropped without an answer.
    assert!(raw(gw.addr, upgrade_req.as_bytes()).await.is_empty());
    // A PROXY header from a peer that is not a trusted balancer: dropped.
    let mut s = connect_from("127.0.0.2", gw.addr).await;
    s.write_all(with_v1.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
}

#[tokio::test]
async fn file_descriptor_exhaustion_neither_spins_nor_crashes() {
    let gw = Gateway::start_with_nofile(&base_config(""), 64);
    // Far more connections than descriptors: the kernel queues them, the
    // gateway's accept fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..120 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(gw.addr)).await
        {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = gw.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = gw.cpu_ticks() - before;
    // Backing off, not spinning: well under one core-second in two seconds.
    assert!(
        used < 60,
        "gateway used {used} ticks in 2 s while out of descriptors"
    );
    assert!(
        !gw.events("accept_error", 1).is_empty(),
        "EMFILE was not reported"
    );
    // Once the descriptors come back, service resumes.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(
            Duration::from_secs(2),
            upgrade(
                &gw.url(),
                &[("authorization", &format!("Bearer {}", token("back")))],
            ),
        )
        .await
        {
            Ok(Upgrade::Open(..)) => break,
            _ => assert!(std::time::Instant::now() < deadline, "did not recover"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `server.worker_threads`: 1 runs the gateway on the current-thread
/// scheduler, anything else (0: one per CPU) on the multi-threaded one;
/// both serve, refuse and enforce expiry the same way.
#[tokio::test]
async fn worker_threads_pick_the_scheduler() {
    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    for (threads, workers, scheduler) in [
        ("1", "1", "current_thread"),
        ("3", "3", "multi_thread"),
        ("0", cpus.as_str(), "multi_thread"),
    ] {
        let gw = Gateway::start_with_env(
            &base_config(""),
            &[("WSGATE_SERVER__WORKER_THREADS", threads)],
        );
        let listening = gw.events("listening", 1);
        assert_eq!(listening[0]["scheduler"], scheduler, "{}", listening[0]);
        assert_eq!(listening[0]["workers"].to_string(), workers);
        let (mut ws, _) = bearer(&gw.url(), &hs(&claims("short", 1))).await.open();
        assert_eq!(echo(&mut ws, "hi").await, "hi");
        bearer(&gw.url(), "not.a.token")
            .await
            .refused(401, "malformed_token");
        // exp in 1s, leeway 1s: the timer fires on this scheduler too.
        let (code, _) = close_code(&mut ws, Duration::from_secs(5)).await;
        assert_eq!(code, 4401, "{scheduler}");
    }
}
