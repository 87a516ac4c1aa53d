//! `/metrics` after known traffic: counts must match exactly.

mod common;
use common::*;
use std::time::Duration;

/// Value of the sample whose name and labels match `series` exactly
/// (e.g. `wsgate_closes_total{code="1000"}`); 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

async fn scrape(gw: &Gateway) -> String {
    let r = http(gw.admin, "GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .expect("type")
        .starts_with("text/plain"));
    r.body
}

// Multi-threaded: the proxy runs on the test's runtime while the harness
// blocks a thread waiting for the gateway to be ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_match_driven_traffic() {
    // Redis behind a proxy the test cuts before the ticket is redeemed: the
    // redemption fails closed (no per-user cap, so bearer upgrades need the
    // store only for the revocation set, loaded before).
    let proxy =
        common::faults::FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], 6379))).await;
    let cfg = base_config(&format!(
        "[store]\nurl = \"{}\"\nkey_prefix = \"{}\"\n[tickets]\nsecret_env = \"TEST_TICKET_SECRET\"\n[limits]\nconnections_per_user = 0",
        proxy.redis_url(),
        unique_prefix("metrics")
    ));
    let gw = Gateway::start_with_env(
        &cfg,
        &[(
            "TEST_TICKET_SECRET",
            "ticket-secret-0123456789abcdef-012345",
        )],
    );
    let (mut a, _) = bearer(&gw.url(), &token("m1")).await.open();
    let (mut b, _) = bearer(&gw.url(), &token("m2")).await.open();
    upgrade(&gw.url(), &[]).await.refused(401, "missing_token");
    bearer(&gw.url(), "x.y.z")
        .await
        .refused(401, "malformed_token");
    for m in ["one", "two", "three"] {
        assert_eq!(echo(&mut a, m).await, m);
    }
    // A ticket is minted, then its redemption hits the dead store.
    let r = http(
        gw.addr,
        "POST",
        "/v1/tickets",
        &[("authorization", &format!("Bearer {}", token("m3")))],
        "",
    )
    .await;
    assert_eq!(r.status, 201);
    let t = r.json()["ticket"].as_str().expect("ticket").to_string();
    proxy.set(common::faults::Mode::Reset);
    upgrade(&format!("{}?ticket={t}", gw.url()), &[])
        .await
        .refused(503, "store_unavailable");

    let text = scrape(&gw).await;
    let hs = |result: &str, reason: &str, transport: &str| {
        sample(
            &text,
            &format!("wsgate_handshakes_total{{result=\"{result}\",reason=\"{reason}\",transport=\"{transport}\"}}"),
        )
    };
    assert_eq!(hs("accepted", "none", "bearer"), 2.0, "{text}");
    assert_eq!(hs("rejected", "missing_token", "none"), 1.0);
    assert_eq!(hs("rejected", "malformed_token", "bearer"), 1.0);
    assert_eq!(hs("rejected", "store_unavailable", "ticket"), 1.0);
    assert_eq!(sample(&text, "wsgate_connections_active"), 2.0);
    assert_eq!(
        sample(&text, "wsgate_messages_total{direction=\"in\"}"),
        3.0
    );
    assert_eq!(
        sample(&text, "wsgate_messages_total{direction=\"out\"}"),
        3.0
    );
    assert_eq!(sample(&text, "wsgate_bytes_total{direction=\"in\"}"), 11.0);
    assert_eq!(sample(&text, "wsgate_tickets_issued_total"), 1.0);
    assert!(sample(&text, "wsgate_store_errors_total") >= 1.0);
    // Four verifications observed: the two accepted upgrades, the malformed
    // one, and the ticket mint's.
    assert_eq!(sample(&text, "wsgate_token_verify_seconds_count"), 4.0);
    assert!(text.contains("wsgate_revocations_total 0"), "{text}");

    // Close both sockets: the gauge goes back down, closes are counted by code.
    a.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "".into(),
    }))
    .await
    .expect("close");
    drop(b.close(None).await);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(&gw).await;
        if sample(&text, "wsgate_connections_active") == 0.0 {
            assert_eq!(
                sample(&text, "wsgate_closes_total{code=\"1000\"}"),
                1.0,
                "{text}"
            );
            assert_eq!(
                sample(&text, "wsgate_closes_total{code=\"1005\"}"),
                1.0,
                "{text}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "gauge stuck: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Never a sub, IP or token as a label value.
    let text = scrape(&gw).await;
    for needle in ["m1", "m2", "127.0.0.1", &t[..20]] {
        assert!(!text.contains(needle), "{needle} in metrics");
    }
    // /metrics is on the admin listener only.
    assert_eq!(http(gw.addr, "GET", "/metrics", &[], "").await.status, 404);
}

#[tokio::test]
async fn egress_alert_logs_counts_and_optionally_closes() {
    let gw = Gateway::start(&base_config("[limits]\negress_alert_bytes_per_min = 1000"));
    let (mut ws, _) = bearer(&gw.url(), &token("hog")).await.open();
    let (_other, _) = bearer(&gw.url(), &token("calm")).await.open();
    let big = "x".repeat(600);
    for _ in 0..3 {
        assert_eq!(echo(&mut ws, &big).await, big);
    }
    let alerts = gw.events("egress_alert", 1);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["sub"], "hog");
    assert_eq!(alerts[0]["level"], "warn");
    let text = scrape(&gw).await;
    assert_eq!(sample(&text, "wsgate_egress_alerts_total"), 1.0, "{text}");
    assert_eq!(
        sample(&text, "wsgate_sessions_active{transport=\"bearer\"}"),
        2.0,
        "{text}"
    );
    // Logging only: the socket stays open.
    assert_eq!(echo(&mut ws, "ok").await, "ok");

    let strict = Gateway::start(&base_config(
        "[limits]\negress_alert_bytes_per_min = 1000\negress_alert_close = true",
    ));
    let (mut ws, _) = bearer(&strict.url(), &token("hog")).await.open();
    assert_eq!(echo(&mut ws, &big).await, big);
    futures_util::SinkExt::send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::Text(big.clone().into()),
    )
    .await
    .expect("send");
    let (code, reason) = close_code(&mut ws, Duration::from_secs(5)).await;
    assert_eq!((code, reason.as_str()), (1008, "egress limit"));
}
