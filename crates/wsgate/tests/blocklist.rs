//! `limits.block_after_refusals`: an address that keeps upgrading past its
//! 429s is dropped in the kernel (its SYNs go unanswered) while everyone
//! else is served, and the block ends after `block_duration`. Real sockets
//! from several loopback addresses; the filter is the kernel's.

mod common;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn start(extra: &str) -> Gateway {
    start_with(&base_config(extra))
}

fn start_on(listen: &str) -> Gateway {
    start_with(&base_config("").replace(
        "127.0.0.1:0\"\nhandshake",
        &format!("{listen}\"\nhandshake"),
    ))
}

/// One upgrade a second per address, and a block after five refusals in a
/// second (the test harness sets the rate limits through the environment).
fn start_with(config: &str) -> Gateway {
    Gateway::start_with_env(
        config,
        &[
            ("WSGATE_LIMITS__HANDSHAKES_PER_IP_PER_SEC", "1"),
            ("WSGATE_LIMITS__HANDSHAKE_BURST_PER_IP", "1"),
            ("WSGATE_LIMITS__BLOCK_AFTER_REFUSALS", "5"),
            ("WSGATE_LIMITS__BLOCK_DURATION", "2s"),
        ],
    )
}

/// Connects from `src`, or `None` when no SYN-ACK comes within `wait`.
async fn try_connect(src: &str, to: SocketAddr, wait: Duration) -> Option<TcpStream> {
    let src: std::net::IpAddr = src.parse().expect("source address");
    let sock = match src {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .expect("socket");
    sock.bind(SocketAddr::new(src, 0)).expect("bind");
    match tokio::time::timeout(wait, sock.connect(to)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => panic!("connect from {src}: {e}"),
        Err(_) => None,
    }
}

/// One upgrade from `src` with a valid token; the status line's code.
async fn upgrade_from(src: &str, to: SocketAddr) -> Option<String> {
    let mut s = try_connect(src, to, Duration::from_secs(1)).await?;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {}\r\n\r\n",
        token("flooder")
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("answer")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    Some(head.split(' ').nth(1).unwrap_or("").to_string())
}

/// One upgrade from `src` spends its burst (101); the next `n` are 429s.
async fn spend_then_refused(src: &str, to: SocketAddr, n: usize) {
    assert_eq!(upgrade_from(src, to).await.as_deref(), Some("101"));
    for _ in 0..n {
        assert_eq!(upgrade_from(src, to).await.as_deref(), Some("429"));
    }
}

#[tokio::test]
async fn a_flooding_address_is_dropped_in_the_kernel_then_released() {
    let gw = start("");
    // The burst (1) is spent on a 101; the next five are 429s.
    spend_then_refused("127.0.0.2", gw.addr, 5).await;
    // Now its SYNs are dropped: no connection at all.
    assert!(
        try_connect("127.0.0.2", gw.addr, Duration::from_millis(700))
            .await
            .is_none(),
        "127.0.0.2 should be blocked"
    );
    // Everyone else is served: another address, and the admin listener.
    let (mut ws, _) = bearer(&gw.url(), &token("alice")).await.open();
    assert_eq!(echo(&mut ws, "still here").await, "still here");
    assert_eq!(
        upgrade_from("127.0.0.3", gw.addr).await.as_deref(),
        Some("101")
    );
    assert_eq!(metric(&gw, "wsgate_addresses_blocked").await, 1.0);
    assert_eq!(metric(&gw, "wsgate_address_blocks_total").await, 1.0);
    let ev = gw.events("address_blocked", 1);
    assert_eq!(ev[0]["address"], "127.0.0.2");
    assert_eq!(ev[0]["seconds"], 2);
    // The socket opened before the block is unaffected.
    assert_eq!(echo(&mut ws, "and still").await, "and still");

    // Released after block_duration (2 s, checked every second).
    let start = Instant::now();
    let answer = loop {
        if let Some(code) = upgrade_from("127.0.0.2", gw.addr).await {
            break code;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "block never lifted"
        );
    };
    assert_eq!(answer, "101");
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert_eq!(metric(&gw, "wsgate_addresses_blocked").await, 0.0);
    gw.events("address_unblocked", 1);
}

#[tokio::test]
async fn below_the_threshold_and_trusted_proxies_are_never_blocked() {
    let gw = start("[trusted_proxies]\ncidrs = [\"127.0.0.4/32\"]");
    // Four refusals a second from 127.0.0.5 stay under block_after_refusals.
    spend_then_refused("127.0.0.5", gw.addr, 4).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(upgrade_from("127.0.0.5", gw.addr).await.is_some());
    // A trusted proxy's own address is refused by rate (no forwarded
    // header: it is the client) but never dropped: it carries everyone.
    for _ in 0..12 {
        assert!(
            upgrade_from("127.0.0.4", gw.addr).await.is_some(),
            "a trusted proxy was blocked"
        );
    }
    assert_eq!(metric(&gw, "wsgate_address_blocks_total").await, 0.0);
}

/// On a dual-stack listener: IPv6 peers are blocked by /64, and IPv4 peers
/// (arriving as IPv4 packets) are told apart by the filter.
#[tokio::test]
async fn ipv6_peers_are_blocked_by_prefix_on_a_dual_stack_listener() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let gw = start_on("[::]:0");
    let v6 = SocketAddr::new("::1".parse().expect("v6"), gw.addr.port());
    let v4 = SocketAddr::new("127.0.0.1".parse().expect("v4"), gw.addr.port());
    spend_then_refused("::1", v6, 5).await;
    assert!(try_connect("::1", v6, Duration::from_millis(700))
        .await
        .is_none());
    assert_eq!(upgrade_from("127.0.0.6", v4).await.as_deref(), Some("101"));
    let ev = gw.events("address_blocked", 1);
    assert_eq!(ev[0]["address"], "::/64");
}
