//! Single-use tickets (docs/reference.md) over real sockets, on the memory store and
//! on real Redis (shared 127.0.0.1:6379, or a test's own redis-server).

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

const APP: &str = "http://app.test";

async fn ticket(gw: &Gateway, session: &str) -> String {
    let r = mint(gw, session).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.json()["ticket"].as_str().expect("ticket").to_string()
}

fn ticket_url(gw: &Gateway, t: &str) -> String {
    format!("{}?ticket={t}", gw.url())
}

#[tokio::test]
async fn mint_connect_once_then_replayed() {
    let gw = Gateway::start(&base_config(""));
    let r = mint(&gw, &token("alice")).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    let t = body["ticket"].as_str().expect("ticket");
    assert_eq!(body["expires_in"], 30);
    let url = body["url"].as_str().expect("url");
    assert_eq!(url, format!("ws://{}/ws?ticket={t}", gw.addr));
    // The ticket is a JWT for the ticket audience with a >= 128-bit jti.
    let claims: serde_json::Value = {
        use base64::Engine;
        let p = t.split('.').nth(1).expect("payload");
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .expect("b64"),
        )
        .expect("json")
    };
    assert_eq!(claims["aud"], "wsgate-ticket");
    assert_eq!(claims["sub"], "alice");
    assert!(claims["jti"].as_str().expect("jti").len() >= 22);
    assert!(claims["exp"].as_i64().expect("exp") <= now() + 30);
    assert!(claims["session_exp"].as_i64().expect("session_exp") > now() + 3000);
    let (mut ws, _) = upgrade(url, &[]).await.open();
    assert_eq!(echo(&mut ws, "t").await, "t");
    upgrade(url, &[]).await.refused(401, "ticket_replayed");
    let ev = gw.events("handshake", 2);
    assert_eq!(ev[0]["transport"], "ticket");
    // No log line carries the ticket.
    let sig = t.rsplit('.').next().expect("sig");
    assert!(!gw.logs().iter().any(|l| l.contains(sig)));
}

#[tokio::test]
async fn ticket_only_through_ticket_param() {
    let gw = Gateway::start(&base_config(""));
    let t = ticket(&gw, &token("bob")).await;
    // Signed with the ticket secret, not a session key: no session transport verifies it.
    bearer(&gw.url(), &t).await.refused(401, "bad_signature");
    upgrade(
        &gw.url(),
        &[("sec-websocket-protocol", &format!("jwt, {t}"))],
    )
    .await
    .refused(401, "bad_signature");
    upgrade(
        &gw.url(),
        &[("cookie", &format!("session={t}")), ("origin", APP)],
    )
    .await
    .refused(401, "bad_signature");
    upgrade(&format!("{}?token={t}", gw.url()), &[])
        .await
        .refused(401, "bad_signature");
    // A session token in the ticket param.
    upgrade(&ticket_url(&gw, &token("bob")), &[])
        .await
        .refused(401, "ticket_required");
    // A ticket cannot mint another ticket.
    assert_eq!(mint(&gw, &t).await.status, 401);
    // Garbage in the ticket param.
    upgrade(&ticket_url(&gw, "nope"), &[])
        .await
        .refused(401, "malformed_token");
    // The ticket is still unused after all that.
    upgrade(&ticket_url(&gw, &t), &[]).await.open();
}

#[tokio::test]
async fn ticket_socket_lives_until_session_exp() {
    let gw = Gateway::start(&base_config("[tickets]\nttl = \"1s\""));
    let t = ticket(&gw, &token("carol")).await;
    let (mut ws, _) = upgrade(&ticket_url(&gw, &t), &[]).await.open();
    // Ticket exp (1s) + leeway (1s) long past: the socket follows the session.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(echo(&mut ws, "alive").await, "alive");
    // An expired ticket is refused.
    let t2 = ticket(&gw, &token("carol")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    upgrade(&ticket_url(&gw, &t2), &[])
        .await
        .refused(401, "expired");
    // And a short session caps the ticket-opened socket.
    let t3 = ticket(&gw, &hs(&claims("carol", 2))).await;
    let (mut ws, _) = upgrade(&ticket_url(&gw, &t3), &[]).await.open();
    let (code, _) = close_code(&mut ws, Duration::from_secs(6)).await;
    assert_eq!(code, 4401);
}

#[tokio::test]
async fn cookie_csrf_and_cors() {
    let gw = Gateway::start(&base_config(""));
    let mut c = claims("dave", 3600);
    c["csrf"] = json!("csrf-abc");
    let cookie = format!("session={}", hs(&c));
    let post = |hdrs: Vec<(&'static str, String)>| {
        let gw_addr = gw.addr;
        async move {
            let h: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http(gw_addr, "POST", "/v1/tickets", &h, "").await
        }
    };
    let ok = post(vec![
        ("cookie", cookie.clone()),
        ("origin", APP.into()),
        ("x-csrf-token", "csrf-abc".into()),
    ])
    .await;
    assert_eq!(ok.status, 201, "{ok:?}");
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert!(ok.header("vary").expect("vary").contains("Origin"));
    let r = post(vec![
        ("cookie", cookie.clone()),
        ("origin", APP.into()),
        ("x-csrf-token", "wrong".into()),
    ])
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("csrf_failed"))
    );
    let r = post(vec![("cookie", cookie.clone()), ("origin", APP.into())]).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("csrf_failed"))
    );
    // No Origin: the cookie alone never mints.
    let r = post(vec![
        ("cookie", cookie.clone()),
        ("x-csrf-token", "csrf-abc".into()),
    ])
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    // Another site.
    let r = post(vec![
        ("cookie", cookie.clone()),
        ("origin", "http://evil.test".into()),
        ("x-csrf-token", "csrf-abc".into()),
    ])
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("origin_not_allowed"))
    );
    assert!(r.header("access-control-allow-origin").is_none());
    // Preflight.
    let pre = http(
        gw.addr,
        "OPTIONS",
        "/v1/tickets",
        &[
            ("origin", "https://a.example.test"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(pre.status, 204, "{pre:?}");
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://a.example.test")
    );
    assert_eq!(pre.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("Authorization, Content-Type, X-CSRF-Token")
    );
    assert_eq!(pre.header("access-control-allow-credentials"), Some("true"));
    let pre = http(
        gw.addr,
        "OPTIONS",
        "/v1/tickets",
        &[("origin", "http://evil.test")],
        "",
    )
    .await;
    assert_eq!(pre.status, 403);
    assert!(pre.header("access-control-allow-origin").is_none());
    // Missing credential.
    let r = http(gw.addr, "POST", "/v1/tickets", &[("origin", APP)], "").await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("missing_token"))
    );
    let r = http(gw.addr, "GET", "/v1/tickets", &[], "").await;
    assert_eq!(r.status, 405);
}

async fn race(gw: &Gateway, t: &str, n: usize) -> (usize, usize) {
    let url = ticket_url(gw, t);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                match upgrade(&url, &[]).await {
                    Upgrade::Open(ws, _) => {
                        // Keep it open until every attempt is decided.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        drop(ws);
                        (1, 0)
                    }
                    Upgrade::Refused { status, body, .. } => {
                        assert_eq!(
                            (status, body["error"].as_str()),
                            (401, Some("ticket_replayed"))
                        );
                        (0, 1)
                    }
                }
            })
        })
        .collect();
    let mut out = (0, 0);
    for t in tasks {
        let (a, b) = t.await.expect("task");
        out.0 += a;
        out.1 += b;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_redemptions_one_wins_memory() {
    let gw = Gateway::start(&base_config(""));
    let t = ticket(&gw, &token("racer")).await;
    assert_eq!(race(&gw, &t, 50).await, (1, 49));
}

fn redis_config(url: &str, prefix: &str) -> String {
    base_config(&format!(
        "[store]\nurl = \"{url}\"\nkey_prefix = \"{prefix}\"\n[tickets]\nsecret_env = \"TEST_TICKET_SECRET\""
    ))
}

const TICKET_SECRET: &str = "ticket-secret-0123456789abcdef-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_share_single_use_on_redis() {
    let cfg = redis_config("redis://127.0.0.1:6379/0", &unique_prefix("two-nodes"));
    let env = [("TEST_TICKET_SECRET", TICKET_SECRET)];
    let a = Gateway::start_with_env(&cfg, &env);
    let b = Gateway::start_with_env(&cfg, &env);
    let t = ticket(&a, &token("node-hopper")).await;
    // Minted on A, used on B, then refused on A.
    let (mut ws, _) = upgrade(&ticket_url(&b, &t), &[]).await.open();
    assert_eq!(echo(&mut ws, "b").await, "b");
    upgrade(&ticket_url(&a, &t), &[])
        .await
        .refused(401, "ticket_replayed");
    // 50 concurrent redemptions across both nodes: exactly one 101.
    let t = ticket(&b, &token("racer")).await;
    let (ra, rb) = tokio::join!(race(&a, &t, 25), race(&b, &t, 25));
    assert_eq!((ra.0 + rb.0, ra.1 + rb.1), (1, 49));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_then_recovers() {
    let mut redis = OwnRedis::start();
    let cfg = redis_config(&redis.url(), "restart:");
    let gw = Gateway::start_with_env(&cfg, &[("TEST_TICKET_SECRET", TICKET_SECRET)]);
    let session = token("survivor");
    let t = ticket(&gw, &session).await;
    upgrade(&ticket_url(&gw, &t), &[]).await.open();
    let before_restart = ticket(&gw, &session).await;
    redis.stop();
    let t2 = ticket(&gw, &session).await;
    let h = upgrade(&ticket_url(&gw, &t2), &[])
        .await
        .refused(503, "store_unavailable");
    assert!(h.get("retry-after").is_some());
    // The per-user cap is counted in the store: bearer upgrades fail closed too.
    bearer(&gw.url(), &session)
        .await
        .refused(503, "store_unavailable");
    redis.restart();
    // Recovers by itself: a fresh ticket works within a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let t3 = ticket(&gw, &session).await;
        match upgrade(&ticket_url(&gw, &t3), &[]).await {
            Upgrade::Open(..) => break,
            Upgrade::Refused { status, body, .. } => {
                // 503 while reconnecting; a ticket minted before the first
                // node re-set the epoch after the restart is refused as used.
                assert!(
                    status == 503 || body["error"] == "ticket_replayed",
                    "{status} {body}"
                );
                assert!(std::time::Instant::now() < deadline, "no recovery");
            }
        }
    }
    // A ticket issued before the restart cannot be proven unused: refused.
    upgrade(&ticket_url(&gw, &before_restart), &[])
        .await
        .refused(401, "ticket_replayed");
}

#[tokio::test]
async fn readyz_follows_the_store() {
    let mut redis = OwnRedis::start();
    let gw = Gateway::start_with_env(
        &redis_config(&redis.url(), "ready:"),
        &[("TEST_TICKET_SECRET", TICKET_SECRET)],
    );
    let ready = |gw: &Gateway| {
        let addr = gw.admin;
        async move { http(addr, "GET", "/readyz", &[], "").await.status }
    };
    let wait_for = |want: u16| {
        let addr = gw.admin;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let s = http(addr, "GET", "/readyz", &[], "").await.status;
                if s == want {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "readyz stuck at {s}, want {want}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_for(200).await;
    redis.stop();
    wait_for(503).await;
    // Liveness is not readiness.
    assert_eq!(http(gw.admin, "GET", "/healthz", &[], "").await.status, 200);
    redis.restart();
    wait_for(200).await;
    assert_eq!(ready(&gw).await, 200);
}
