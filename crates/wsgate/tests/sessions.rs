//! Revocation, admin refresh and the session list (docs/reference.md), on one node
//! and across three nodes sharing a real Redis.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

const ADMIN: &str = "admin-token-0123456789-0123456789";

fn start(extra: &str) -> Gateway {
    Gateway::start_with_env(&base_config(extra), &[("WSGATE_ADMIN_TOKEN", ADMIN)])
}

async fn admin(gw: &Gateway, method: &str, path: &str, body: serde_json::Value) -> HttpResponse {
    let auth = format!("Bearer {ADMIN}");
    http(
        gw.admin,
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &body.to_string(),
    )
    .await
}

#[tokio::test]
async fn admin_api_needs_the_admin_token() {
    let gw = start("");
    for (m, p) in [("GET", "/admin/v1/sessions"), ("POST", "/admin/v1/revoke")] {
        let r = http(gw.admin, m, p, &[], "{\"sub\":\"x\"}").await;
        assert_eq!(r.status, 401, "{p}");
        let r = http(
            gw.admin,
            m,
            p,
            &[("authorization", "Bearer wrong")],
            "{\"sub\":\"x\"}",
        )
        .await;
        assert_eq!(r.status, 401, "{p}");
    }
    // Never on the main listener.
    let r = http(
        gw.addr,
        "GET",
        "/admin/v1/sessions",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    // No admin token configured: the API is closed.
    let closed = Gateway::start(&base_config(""));
    let r = http(
        closed.admin,
        "GET",
        "/admin/v1/sessions",
        &[("authorization", "Bearer ")],
        "",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = admin(
        &gw,
        "POST",
        "/admin/v1/revoke",
        json!({"sub": "a", "jti": "b"}),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn revoke_by_sub_closes_4403_and_refuses_old_tokens() {
    let gw = start("");
    let old = token("alice");
    let (mut a1, _) = bearer(&gw.url(), &old).await.open();
    let (mut a2, _) = bearer(&gw.url(), &hs(&claims("alice", 600))).await.open();
    let (mut b, _) = bearer(&gw.url(), &token("bob")).await.open();
    let list = admin(&gw, "GET", "/admin/v1/sessions?sub=alice", json!({}))
        .await
        .json();
    let sessions = list["sessions"].as_array().expect("list");
    assert_eq!(sessions.len(), 2);
    for k in [
        "id",
        "sub",
        "sid",
        "jti",
        "ip",
        "origin",
        "transport",
        "connected_at",
        "deadline",
    ] {
        assert!(sessions[0].get(k).is_some(), "{k}");
    }
    // iat has second granularity: make the revocation strictly later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = admin(&gw, "POST", "/admin/v1/revoke", json!({"sub": "alice"})).await;
    assert_eq!(r.json(), json!({"closed": 2}));
    for ws in [&mut a1, &mut a2] {
        assert_eq!(close_code(ws, Duration::from_secs(5)).await.0, 4403);
    }
    assert_eq!(echo(&mut b, "still").await, "still");
    bearer(&gw.url(), &old).await.refused(401, "revoked");
    // A fresh login works once its iat (whole seconds) is after the revocation;
    // a token issued in the revocation's own second is refused (fail closed).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_fresh, _) = bearer(&gw.url(), &token("alice")).await.open();
    // The revoked sessions leave the list once their close handshake ends.
    drop((a1, a2));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let all = admin(&gw, "GET", "/admin/v1/sessions", json!({}))
            .await
            .json();
        if all["sessions"].as_array().expect("list").len() == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{all}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn revoke_by_jti_and_sid_and_refresh_refused() {
    let gw = start("");
    let mut c = claims("carol", 600);
    c["jti"] = json!("jti-1");
    c["sid"] = json!("sid-1");
    let t = hs(&c);
    let (mut ws, _) = bearer(&gw.url(), &t).await.open();
    let mut other = claims("carol", 600);
    other["jti"] = json!("jti-2");
    other["sid"] = json!("sid-2");
    let (mut ws2, _) = bearer(&gw.url(), &hs(&other)).await.open();
    assert_eq!(
        admin(&gw, "POST", "/admin/v1/revoke", json!({"jti": "jti-1"}))
            .await
            .json(),
        json!({"closed": 1})
    );
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4403);
    bearer(&gw.url(), &t).await.refused(401, "revoked");
    // Refreshing with a revoked token fails in-band.
    let reply = echo(&mut ws2, &json!({"type": "auth", "token": t}).to_string()).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&reply).expect("json")["reason"],
        "revoked"
    );
    assert_eq!(
        admin(&gw, "POST", "/admin/v1/revoke", json!({"sid": "sid-2"}))
            .await
            .json(),
        json!({"closed": 1})
    );
    assert_eq!(close_code(&mut ws2, Duration::from_secs(5)).await.0, 4403);
    let ev = gw.events("close", 2);
    assert!(ev.iter().all(|e| e["code"] == 4403));
}

#[tokio::test]
async fn admin_refresh_forces_reauthentication() {
    // expiry_warning is 1s in the base config.
    let gw = start("");
    let (mut ws, _) = bearer(&gw.url(), &token("dave")).await.open();
    let (mut kept, _) = bearer(&gw.url(), &token("dave")).await.open();
    assert_eq!(
        admin(&gw, "POST", "/admin/v1/refresh", json!({"sub": "dave"}))
            .await
            .json(),
        json!({"refreshed": 2})
    );
    assert!(next_text(&mut ws).await.contains("auth_expiring"));
    assert!(next_text(&mut kept).await.contains("auth_expiring"));
    let ok = echo(
        &mut kept,
        &json!({"type": "auth", "token": token("dave")}).to_string(),
    )
    .await;
    assert!(ok.contains("auth_ok"), "{ok}");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4401);
    assert_eq!(echo(&mut kept, "alive").await, "alive");
}

fn cluster_config(prefix: &str) -> String {
    base_config(&format!(
        "[store]\nurl = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"{prefix}\"\n[tickets]\nsecret_env = \"TEST_TICKET_SECRET\""
    ))
}

const ENV: [(&str, &str); 2] = [
    ("WSGATE_ADMIN_TOKEN", ADMIN),
    (
        "TEST_TICKET_SECRET",
        "ticket-secret-0123456789abcdef-0123456789",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_on_one_node_closes_sockets_on_all() {
    let cfg = cluster_config(&unique_prefix("cluster-revoke"));
    let nodes: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start_with_env(&cfg, &ENV))
        .collect();
    let t = token("erin");
    let mut sockets = Vec::new();
    for n in &nodes {
        sockets.push(bearer(&n.url(), &t).await.open().0);
    }
    // Let every node's feed subscribe before revoking.
    for n in &nodes {
        n.events("revocations_loaded", 1);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = admin(
        &nodes[0],
        "POST",
        "/admin/v1/revoke",
        json!({"sub": "erin"}),
    )
    .await;
    assert_eq!(r.json(), json!({"closed": 1}));
    for ws in &mut sockets {
        assert_eq!(close_code(ws, Duration::from_secs(5)).await.0, 4403);
    }
    for n in &nodes {
        bearer(&n.url(), &t).await.refused(401, "revoked");
    }
    // A node started after the revocation refuses the old token too.
    let late = Gateway::start_with_env(&cfg, &ENV);
    late.events("revocations_loaded", 1);
    bearer(&late.url(), &t).await.refused(401, "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_survives_a_redis_restart() {
    let mut redis = OwnRedis::start();
    let cfg = base_config(&format!(
        "[store]\nurl = \"{}\"\nkey_prefix = \"r:\"\n[tickets]\nsecret_env = \"TEST_TICKET_SECRET\"",
        redis.url()
    ));
    let a = Gateway::start_with_env(&cfg, &ENV);
    let b = Gateway::start_with_env(&cfg, &ENV);
    let t = token("frank");
    let (mut on_b, _) = bearer(&b.url(), &t).await.open();
    b.events("revocations_loaded", 1);
    // Redis goes away and comes back (empty); the revocation is made after.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Wait until both nodes have resubscribed.
    a.events("revocations_loaded", 2);
    b.events("revocations_loaded", 2);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = admin(&a, "POST", "/admin/v1/revoke", json!({"sub": "frank"})).await;
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "revoke never succeeded: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(close_code(&mut on_b, Duration::from_secs(5)).await.0, 4403);
    bearer(&b.url(), &t).await.refused(401, "revoked");
}

#[tokio::test]
async fn refreshed_identity_is_what_revocation_sees() {
    let gw = start("");
    let (mut ws, _) = bearer(&gw.url(), &token("gina")).await.open();
    let mut fresh = claims("gina", 600);
    fresh["jti"] = json!("fresh-jti");
    let ok = echo(
        &mut ws,
        &json!({"type": "auth", "token": hs(&fresh)}).to_string(),
    )
    .await;
    assert!(ok.contains("auth_ok"), "{ok}");
    let list = admin(&gw, "GET", "/admin/v1/sessions?sub=gina", json!({}))
        .await
        .json();
    assert_eq!(list["sessions"][0]["jti"], "fresh-jti");
    assert_eq!(
        list["sessions"][0]["deadline"],
        (fresh["exp"].as_i64().expect("exp") + 1) * 1000
    );
    let r = admin(&gw, "POST", "/admin/v1/revoke", json!({"jti": "fresh-jti"})).await;
    assert_eq!(r.json(), json!({"closed": 1}));
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_cap_counts_across_nodes() {
    let cfg = cluster_config(&unique_prefix("cluster-cap"))
        .replace("[backend]", "[limits]\nconnections_per_user = 2\n[backend]");
    let a = Gateway::start_with_env(&cfg, &ENV);
    let b = Gateway::start_with_env(&cfg, &ENV);
    let t = token("hank");
    let (mut on_a, _) = bearer(&a.url(), &t).await.open();
    let (_on_b, _) = bearer(&b.url(), &t).await.open();
    bearer(&b.url(), &t)
        .await
        .refused(429, "too_many_connections");
    bearer(&a.url(), &t)
        .await
        .refused(429, "too_many_connections");
    // Other users are not affected.
    bearer(&a.url(), &token("ivy")).await.open();
    // Closing on A frees a slot that B can take.
    on_a.close(None).await.expect("close");
    drop(on_a);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match bearer(&b.url(), &t).await {
            Upgrade::Open(..) => break,
            Upgrade::Refused { status, .. } => {
                assert_eq!(status, 429);
                assert!(std::time::Instant::now() < deadline, "slot never freed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_outlives_a_redis_restart_that_lost_it() {
    let mut redis = OwnRedis::start();
    let cfg = base_config(&format!(
        "[store]\nurl = \"{}\"\nkey_prefix = \"lost:\"\n[tickets]\nsecret_env = \"TEST_TICKET_SECRET\"",
        redis.url()
    ));
    let a = Gateway::start_with_env(&cfg, &ENV);
    let b = Gateway::start_with_env(&cfg, &ENV);
    assert!(a.wait_ready(Duration::from_secs(10)));
    a.events("revocations_loaded", 1);
    b.events("revocations_loaded", 1);
    let t = token("judy");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = admin(&a, "POST", "/admin/v1/revoke", json!({"sub": "judy"})).await;
    assert_eq!(r.status, 200);
    // Redis restarts without persistence: the revocation is gone from it.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    // The surviving nodes resync and write back what they know...
    a.events("revocations_loaded", 2);
    b.events("revocations_loaded", 2);
    bearer(&b.url(), &t).await.refused(401, "revoked");
    // ...so a node started after the restart refuses the old token too.
    let c = Gateway::start_with_env(&cfg, &ENV);
    c.events("revocations_loaded", 1);
    bearer(&c.url(), &t).await.refused(401, "revoked");
}

#[tokio::test]
async fn max_session_forces_reauthentication() {
    // A 1 h token, max_session 2 s: the session must re-authenticate.
    let gw = Gateway::start(
        &base_config("").replace("leeway = \"1s\"", "leeway = \"1s\"\nmax_session = \"2s\""),
    );
    let (mut ws, _) = bearer(&gw.url(), &token("kim")).await.open();
    let warn: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).expect("json");
    assert_eq!(warn["type"], "auth_expiring");
    assert!(warn["exp"].as_i64().expect("exp") <= now() + 2);
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4401);
    assert!(started.elapsed() < Duration::from_secs(3));
    // Refreshing in time keeps it alive for another max_session.
    let (mut ws, _) = bearer(&gw.url(), &token("kim")).await.open();
    assert!(next_text(&mut ws).await.contains("auth_expiring"));
    let ok = echo(
        &mut ws,
        &json!({"type": "auth", "token": token("kim")}).to_string(),
    )
    .await;
    assert!(ok.contains("auth_ok"), "{ok}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(next_text(&mut ws).await.contains("auth_expiring"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refresh_reaches_every_node() {
    let cfg = cluster_config(&unique_prefix("cluster-refresh"));
    let a = Gateway::start_with_env(&cfg, &ENV);
    let b = Gateway::start_with_env(&cfg, &ENV);
    a.events("revocations_loaded", 1);
    b.events("revocations_loaded", 1);
    let (mut on_b, _) = bearer(&b.url(), &token("lee")).await.open();
    let r = admin(&a, "POST", "/admin/v1/refresh", json!({"sub": "lee"})).await;
    assert_eq!(r.json(), json!({"refreshed": 0}));
    assert!(next_text(&mut on_b).await.contains("auth_expiring"));
    assert_eq!(close_code(&mut on_b, Duration::from_secs(5)).await.0, 4401);
}
