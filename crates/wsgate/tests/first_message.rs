//! First-message auth (docs/reference.md) over real sockets.

mod common;
use common::*;
use futures_util::SinkExt;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn config() -> String {
    base_config("[limits]\nmax_unauthenticated = 2").replace(
        "leeway = \"1s\"",
        "leeway = \"1s\"\nfirst_message = true\nfirst_message_timeout = \"1s\"",
    )
}

#[tokio::test]
async fn auth_then_data() {
    let gw = Gateway::start(&config());
    let (mut ws, _) = upgrade(&gw.url(), &[]).await.open();
    let ok: Value = serde_json::from_str(
        &echo(
            &mut ws,
            &json!({"type": "auth", "token": token("fm")}).to_string(),
        )
        .await,
    )
    .expect("json");
    assert_eq!(ok["type"], "auth_ok");
    assert_eq!(ok["sub"], "fm");
    assert!(ok["exp"].as_i64().expect("exp") > now());
    assert_eq!(echo(&mut ws, "data").await, "data");
    let ev = gw.events("handshake", 1);
    assert_eq!(ev[0]["transport"], "first_message");
    // A credential on the upgrade still works as usual.
    bearer(&gw.url(), &token("fm2")).await.open();
}

#[tokio::test]
async fn nothing_forwarded_before_auth_and_failures_close_4001() {
    let gw = Gateway::start(&config());
    // Data first: refused, never echoed.
    let (mut ws, _) = upgrade(&gw.url(), &[]).await.open();
    let fail: Value = serde_json::from_str(&echo(&mut ws, "hello").await).expect("json");
    assert_eq!(
        fail,
        json!({"type": "auth_fail", "reason": "missing_token"})
    );
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4001);
    // A bad token.
    let (mut ws, _) = upgrade(&gw.url(), &[]).await.open();
    let fail: Value = serde_json::from_str(
        &echo(
            &mut ws,
            &json!({"type": "auth", "token": "x.y.z"}).to_string(),
        )
        .await,
    )
    .expect("json");
    assert_eq!(fail["reason"], "malformed_token");
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4001);
    // Binary first.
    let (mut ws, _) = upgrade(&gw.url(), &[]).await.open();
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    assert!(next_text(&mut ws).await.contains("auth_fail"));
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4001);
}

#[tokio::test]
async fn silence_times_out_with_4001() {
    let gw = Gateway::start(&config());
    let (mut ws, _) = upgrade(&gw.url(), &[]).await.open();
    let started = std::time::Instant::now();
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await.0, 4001);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn origin_still_checked_and_unauthenticated_capped() {
    let gw = Gateway::start(&config());
    upgrade(&gw.url(), &[("origin", "http://evil.test")])
        .await
        .refused(403, "origin_not_allowed");
    let (_a, _) = upgrade(&gw.url(), &[]).await.open();
    let (_b, _) = upgrade(&gw.url(), &[]).await.open();
    upgrade(&gw.url(), &[])
        .await
        .refused(429, "too_many_connections");
    // Authenticated upgrades are not held back by the unauthenticated cap.
    bearer(&gw.url(), &token("x")).await.open();
}
