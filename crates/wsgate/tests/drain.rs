//! SIGTERM drain over real sockets: readiness flips, sockets get 1001 after
//! the grace period, the process exits 0.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn term(gw: &Gateway) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
}

#[tokio::test]
async fn sigterm_drains_with_1001_and_exits_0() {
    let mut gw = Gateway::start(&base_config("").replace(
        "handshake_timeout = \"1s\"",
        "handshake_timeout = \"1s\"\nshutdown_grace = \"1s\"\nshutdown_timeout = \"3s\"",
    ));
    let (mut ws, _) = bearer(&gw.url(), &token("d")).await.open();
    assert_eq!(http(gw.admin, "GET", "/readyz", &[], "").await.status, 200);
    // The admin listener keeps answering during the drain: readiness is 503.
    let started = Instant::now();
    term(&gw);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = http(gw.admin, "GET", "/readyz", &[], "").await.status;
        if s == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "readyz stayed {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Live sockets keep working during the grace period.
    assert_eq!(echo(&mut ws, "still").await, "still");
    let (code, _) = close_code(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, 1001);
    assert!(started.elapsed() >= Duration::from_millis(900));
    drop(ws);
    let status = gw.wait_exit(Duration::from_secs(5)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(1 + 3 + 2));
    assert!(gw.events("close", 1).iter().any(|e| e["code"] == 1001));
}

#[tokio::test]
async fn second_signal_exits_at_once() {
    let mut gw = Gateway::start(&base_config("").replace(
        "handshake_timeout = \"1s\"",
        "handshake_timeout = \"1s\"\nshutdown_grace = \"30s\"",
    ));
    let (_ws, _) = bearer(&gw.url(), &token("d")).await.open();
    term(&gw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    term(&gw);
    let status = gw.wait_exit(Duration::from_secs(3)).expect("exited");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(2));
}
