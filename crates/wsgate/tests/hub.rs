//! The channel hub (docs/reference.md) over real sockets.

mod common;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "admin-token-0123456789-0123456789";

fn config() -> String {
    base_config(
        r#"
[[hub.grants]]
subscribe = ["public:*", "user:{sub}"]
publish = ["chat:*"]
[[hub.grants]]
claim = "roles"
value = "admin"
subscribe = ["*"]
publish = ["*"]
"#,
    )
    .replace("kind = \"echo\"", "kind = \"hub\"")
}

fn start() -> Gateway {
    Gateway::start_with_env(&config(), &[("WSGATE_ADMIN_TOKEN", ADMIN)])
}

fn with_roles(sub: &str, roles: &[&str]) -> String {
    let mut c = claims(sub, 3600);
    c["roles"] = json!(roles);
    hs(&c)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ask(ws: &mut Ws, v: Value) -> Value {
    serde_json::from_str(&echo(ws, &v.to_string()).await).expect("json reply")
}

async fn next_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).expect("json")
}

#[tokio::test]
async fn subscribe_publish_deliver() {
    let gw = start();
    let (mut alice, _) = bearer(&gw.url(), &with_roles("alice", &["user"]))
        .await
        .open();
    let (mut bob, _) = bearer(&gw.url(), &with_roles("bob", &["user"]))
        .await
        .open();
    // chat:* is publishable, not subscribable, for users; admin can subscribe.
    assert_eq!(
        ask(
            &mut alice,
            json!({"type": "subscribe", "channel": "chat:lobby", "id": 1})
        )
        .await,
        json!({"type": "error", "id": 1, "reason": "forbidden"})
    );
    assert_eq!(
        ask(
            &mut alice,
            json!({"type": "subscribe", "channel": "public:news", "id": "a"})
        )
        .await,
        json!({"type": "ack", "id": "a"})
    );
    let (mut root, _) = bearer(&gw.url(), &with_roles("root", &["admin"]))
        .await
        .open();
    assert_eq!(
        ask(
            &mut root,
            json!({"type": "subscribe", "channel": "chat:lobby", "id": 1})
        )
        .await["type"],
        "ack"
    );
    assert_eq!(
        ask(
            &mut bob,
            json!({"type": "publish", "channel": "chat:lobby", "data": {"t": "hi"}, "id": 7})
        )
        .await,
        json!({"type": "ack", "id": 7})
    );
    assert_eq!(
        next_json(&mut root).await,
        json!({"type": "message", "channel": "chat:lobby", "data": {"t": "hi"}, "from": "bob"})
    );
    // Users cannot publish on public:*; admins can, and subscribers get it.
    assert_eq!(
        ask(
            &mut bob,
            json!({"type": "publish", "channel": "public:news", "data": 1, "id": 8})
        )
        .await["reason"],
        "forbidden"
    );
    assert_eq!(
        ask(
            &mut root,
            json!({"type": "publish", "channel": "public:news", "data": 2, "id": 9})
        )
        .await["type"],
        "ack"
    );
    assert_eq!(next_json(&mut alice).await["data"], 2);
    // user:{sub} is one's own only.
    assert_eq!(
        ask(
            &mut bob,
            json!({"type": "subscribe", "channel": "user:alice", "id": 1})
        )
        .await["reason"],
        "forbidden"
    );
    assert_eq!(
        ask(
            &mut alice,
            json!({"type": "subscribe", "channel": "user:alice", "id": 1})
        )
        .await["type"],
        "ack"
    );
    // Unsubscribe stops deliveries.
    assert_eq!(
        ask(
            &mut alice,
            json!({"type": "unsubscribe", "channel": "public:news", "id": 2})
        )
        .await["type"],
        "ack"
    );
    let r = http(
        gw.admin,
        "POST",
        "/admin/v1/publish",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        &json!({"channel": "public:news", "data": "x"}).to_string(),
    )
    .await;
    assert_eq!(r.json(), json!({"delivered": 0}));
}

#[tokio::test]
async fn bad_requests_keep_the_socket() {
    let gw = start();
    let (mut ws, _) = bearer(&gw.url(), &with_roles("c", &[])).await.open();
    for (msg, id) in [
        ("not json".to_string(), Value::Null),
        (json!({"type": "dance", "id": 3}).to_string(), json!(3)),
        (json!({"type": "subscribe", "id": 4}).to_string(), json!(4)),
        (
            json!({"type": "subscribe", "channel": "", "id": 5}).to_string(),
            json!(5),
        ),
        (
            json!({"type": "subscribe", "channel": "x".repeat(201), "id": 6}).to_string(),
            json!(6),
        ),
        (
            json!({"type": "publish", "channel": "chat:a", "id": 7}).to_string(),
            json!(7),
        ),
    ] {
        let r: Value = serde_json::from_str(&echo(&mut ws, &msg).await).expect("json");
        assert_eq!(
            r,
            json!({"type": "error", "id": id, "reason": "bad_request"}),
            "{msg}"
        );
    }
    // Still usable.
    assert_eq!(
        ask(
            &mut ws,
            json!({"type": "subscribe", "channel": "public:x", "id": 1})
        )
        .await["type"],
        "ack"
    );
}

#[tokio::test]
async fn admin_publish_and_refresh_that_drops_privileges() {
    let gw = start();
    let (mut ws, _) = bearer(&gw.url(), &with_roles("dana", &["admin"]))
        .await
        .open();
    assert_eq!(
        ask(
            &mut ws,
            json!({"type": "subscribe", "channel": "ops:alerts", "id": 1})
        )
        .await["type"],
        "ack"
    );
    let publish = |data: &'static str| {
        let addr = gw.admin;
        async move {
            http(
                addr,
                "POST",
                "/admin/v1/publish",
                &[("authorization", &format!("Bearer {ADMIN}"))],
                &json!({"channel": "ops:alerts", "data": data}).to_string(),
            )
            .await
            .json()
        }
    };
    assert_eq!(publish("one").await, json!({"delivered": 1}));
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "message", "channel": "ops:alerts", "data": "one", "from": null})
    );
    // Refresh with a token that no longer has the admin role.
    let ok = ask(
        &mut ws,
        json!({"type": "auth", "token": with_roles("dana", &["user"])}),
    )
    .await;
    assert_eq!(ok["type"], "auth_ok");
    assert_eq!(publish("two").await, json!({"delivered": 0}));
    assert_eq!(
        ask(
            &mut ws,
            json!({"type": "subscribe", "channel": "ops:alerts", "id": 2})
        )
        .await["reason"],
        "forbidden"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_reach_subscribers_on_every_node() {
    let cfg = config().replace(
        "[backend]",
        &format!(
            "[store]\nurl = \"redis://127.0.0.1:6379/0\"\nkey_prefix = \"{}\"\n[tickets]\nsecret_env = \"TEST_TICKET_SECRET\"\n[backend]",
            unique_prefix("hub")
        ),
    );
    let env = [
        ("WSGATE_ADMIN_TOKEN", ADMIN),
        (
            "TEST_TICKET_SECRET",
            "ticket-secret-0123456789abcdef-0123456789",
        ),
    ];
    let a = Gateway::start_with_env(&cfg, &env);
    let b = Gateway::start_with_env(&cfg, &env);
    let (mut on_b, _) = bearer(&b.url(), &with_roles("sam", &["admin"]))
        .await
        .open();
    let (mut on_a, _) = bearer(&a.url(), &with_roles("pat", &["user"])).await.open();
    assert_eq!(
        ask(
            &mut on_b,
            json!({"type": "subscribe", "channel": "chat:all", "id": 1})
        )
        .await["type"],
        "ack"
    );
    // Both nodes subscribe to the hub channel asynchronously at start: retry
    // until the first cross-node message arrives.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert_eq!(
            ask(
                &mut on_a,
                json!({"type": "publish", "channel": "chat:all", "data": "ping", "id": 2})
            )
            .await["type"],
            "ack"
        );
        match tokio::time::timeout(std::time::Duration::from_millis(300), next_json(&mut on_b))
            .await
        {
            // B's hub feed came up after the subscription: it says so.
            Ok(m) if m["type"] == "hub_gap" => assert_eq!(m["channel"], "chat:all"),
            Ok(m) => {
                assert_eq!(
                    m,
                    json!({"type": "message", "channel": "chat:all", "data": "ping", "from": "pat"})
                );
                break;
            }
            Err(_) => assert!(
                std::time::Instant::now() < deadline,
                "no cross-node delivery"
            ),
        }
    }
    // A server-side publish on A reaches B too, exactly once.
    let r = http(
        a.admin,
        "POST",
        "/admin/v1/publish",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        &json!({"channel": "chat:all", "data": "server"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    loop {
        let m = next_json(&mut on_b).await;
        if m["data"] == "server" {
            assert_eq!(m["from"], Value::Null);
            break;
        }
    }
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_closed_1013_without_slowing_publishers() {
    let gw = Gateway::start_with_env(
        &config().replace("[log]", "[limits]\noutgoing_queue = 8\n[log]"),
        &[("WSGATE_ADMIN_TOKEN", ADMIN)],
    );
    let (mut slow, _) = bearer(&gw.url(), &with_roles("sloth", &["user"]))
        .await
        .open();
    let (mut fast, _) = bearer(&gw.url(), &with_roles("hare", &["user"]))
        .await
        .open();
    for ws in [&mut slow, &mut fast] {
        let r = ask(
            ws,
            json!({"type": "subscribe", "channel": "public:feed", "id": 1}),
        )
        .await;
        assert_eq!(r["type"], "ack");
    }
    // The fast subscriber drains its socket while the slow one reads nothing.
    let reader = tokio::spawn(async move {
        let mut n = 0usize;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            futures_util::StreamExt::next(&mut fast),
        )
        .await
        {
            if m.is_text() {
                n += 1;
            }
        }
        n
    });
    let blob = "x".repeat(64 * 1024);
    let body = json!({"channel": "public:feed", "data": blob}).to_string();
    let auth = format!("Bearer {ADMIN}");
    let t0 = std::time::Instant::now();
    let mut delivered = 0;
    for _ in 0..300 {
        let r = http(
            gw.admin,
            "POST",
            "/admin/v1/publish",
            &[("authorization", &auth)],
            &body,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        delivered += r.json()["delivered"].as_u64().unwrap_or(0);
    }
    // Publishing never waited on the stalled socket.
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t0.elapsed()
    );
    assert!(
        delivered >= 300,
        "the fast subscriber got every publish: {delivered}"
    );
    // The slow socket gets what was already in flight, then 1013 — unless
    // the gateway's close grace (2 s) ran out while the socket's buffers were
    // still full, as on a loaded machine: then the socket just ends. Either
    // way the gateway closed it as a slow consumer.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut slow)).await {
            Ok(Some(Ok(Message::Close(f)))) => {
                let f = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                assert_eq!(f, Some((1013, "slow consumer".to_owned())));
                break;
            }
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => break,
            Err(_) => panic!("the slow subscriber was not closed"),
        }
    }
    let slow_closed = metric(&gw, "wsgate_slow_consumers_total{peer=\"client\"}").await;
    assert_eq!(slow_closed, 1.0);
    assert_eq!(reader.await.unwrap(), 300);
}

/// Sessions keep only the claims the grants read (memory per socket): a
/// nested claim path still decides, for as long as the socket lives.
#[tokio::test]
async fn nested_claim_grants_survive_claim_trimming() {
    let cfg = base_config(
        r#"
[[hub.grants]]
claim = "realm_access.roles"
value = "ops"
subscribe = ["ops:*"]
"#,
    )
    .replace("kind = \"echo\"", "kind = \"hub\"");
    let gw = Gateway::start(&cfg);
    let token = |roles: &[&str]| {
        let mut c = claims("carol", 3600);
        c["realm_access"] = json!({"roles": roles});
        c["unused"] = json!("dropped after the upgrade");
        hs(&c)
    };
    let (mut ops, _) = bearer(&gw.url(), &token(&["ops"])).await.open();
    let (mut other, _) = bearer(&gw.url(), &token(&["dev"])).await.open();
    let sub = json!({"type": "subscribe", "channel": "ops:alerts", "id": 1});
    assert_eq!(
        ask(&mut ops, sub.clone()).await,
        json!({"type": "ack", "id": 1})
    );
    assert_eq!(
        ask(&mut other, sub).await,
        json!({"type": "error", "id": 1, "reason": "forbidden"})
    );
}
