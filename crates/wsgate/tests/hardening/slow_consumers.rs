//! Slow consumers: peers that stop reading while the gateway has data for
//! them. Each socket may hold `limits.max_buffered_bytes` (or one larger
//! message) for a peer that is behind, the node `limits.max_buffered_bytes_total`,
//! and a socket whose writes make no progress for `limits.write_timeout`
//! is closed `1013 "slow consumer"`: in hub, echo and upstream mode, towards
//! clients and towards the upstream. The gateway's RSS is watched
//! throughout: the attack of issue 28 (900 KB messages at 50/s to a
//! subscriber that never reads) grew it by 568 MB in 8 s.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Raw = WebSocketStream<TcpStream>;

/// The size of the messages.
const BIG: usize = 900_000;

/// The gateway's resident memory, KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples a process's RSS every 10 ms until stopped; keeps the peak.
struct PeakRss {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl PeakRss {
    fn watch(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        });
        PeakRss { stop, sampler }
    }

    fn peak_kib(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().expect("sampler")
    }
}

/// A client whose socket has a 4 KiB receive buffer (a window the size of
/// a mobile client that stopped reading), upgraded with `token`.
async fn tiny_window_client(gw: &Gateway, token: &str) -> Raw {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(gw.addr).await.unwrap();
    let mut req = gw.url().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    ws
}

/// Whether the gateway has closed `ws`: reading it to the end (what was
/// queued, then a close frame or the end of the stream) finishes in time.
async fn ended(ws: &mut Raw) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await
    .is_ok()
}

async fn slow_clients(gw: &Gateway) -> f64 {
    metric(gw, "wsgate_slow_consumers_total{peer=\"client\"}").await
}

/// Waits until `wsgate_slow_consumers_total{peer}` reaches `n`; returns when.
async fn slow_reached(gw: &Gateway, peer: &str, n: f64, within: Duration) -> Option<Instant> {
    let name = format!("wsgate_slow_consumers_total{{peer=\"{peer}\"}}");
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if metric(gw, &name).await >= n {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Everything held for slow peers is given back once they are gone.
async fn nothing_held(gw: &Gateway) {
    for _ in 0..250 {
        if metric(gw, "wsgate_buffered_bytes").await == 0.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("wsgate_buffered_bytes never went back to 0");
}

fn hub_config(limits: &str) -> String {
    base_config(&format!(
        "[limits]\nconnections_per_user = 0\n{limits}\n\
         [[hub.grants]]\nsubscribe = [\"feed:*\"]\npublish = [\"feed:*\"]\n"
    ))
    .replace("kind = \"echo\"", "kind = \"hub\"")
}

/// Publishes `count` messages of `size` bytes on `channel` at `per_sec`,
/// reading the acks as they come; returns how many were acked.
async fn publish(gw: &Gateway, channel: &str, size: usize, per_sec: u32, count: usize) -> usize {
    let (ws, _) = bearer(&gw.url(), &token("publisher")).await.open();
    let (mut tx, mut rx) = ws.split();
    let acks = tokio::spawn(async move {
        let mut n = 0;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), rx.next()).await {
            if m.to_text().is_ok_and(|t| t.contains("\"ack\"")) {
                n += 1;
            }
        }
        n
    });
    let data = "x".repeat(size);
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec);
    for id in 0..count {
        tick.tick().await;
        let m = json!({"type": "publish", "channel": channel, "data": data, "id": id});
        tx.send(Message::text(m.to_string())).await.unwrap();
    }
    let n = acks.await.unwrap();
    let _ = tx.close().await;
    n
}

async fn subscribe(ws: &mut Raw, channel: &str) {
    let m = json!({"type": "subscribe", "channel": channel, "id": "s"});
    ws.send(Message::text(m.to_string())).await.unwrap();
    let ack = ws.next().await.unwrap().unwrap();
    assert!(ack.to_text().unwrap().contains("\"ack\""), "{ack:?}");
}

/// Issue 28's attack, twice: two subscribers that never read, each fed
/// 900 KB messages at 50/s by its own publisher. Each is closed `1013` as
/// soon as a second message would put it past its budget, the publishers
/// are never slowed, and the gateway grows by a few MB, not hundreds.
#[tokio::test]
async fn hub_subscribers_that_never_read_hold_one_message_each() {
    let gw = Gateway::start(&hub_config(""));
    let mut subs = Vec::new();
    for c in ["feed:a", "feed:b"] {
        let mut s = tiny_window_client(&gw, &token("sloth")).await;
        subscribe(&mut s, c).await;
        subs.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_kib(gw.pid());
    let peak = PeakRss::watch(gw.pid());
    // 3 s at 50/s: 135 MB per pair if they were buffered.
    let (a, b) = tokio::join!(
        publish(&gw, "feed:a", BIG, 50, 150),
        publish(&gw, "feed:b", BIG, 50, 150)
    );
    let grown = peak.peak_kib().saturating_sub(base);
    eprintln!("gateway RSS: {base} KiB before, grew by {grown} KiB at the peak");
    assert_eq!(
        (a, b),
        (150, 150),
        "every publish acked: publishers never wait"
    );
    assert_eq!(slow_clients(&gw).await, 2.0);
    let closes = gw.events("close", 4);
    let slow = closes
        .iter()
        .filter(|e| e["code"] == 1013 && e["reason"] == "slow consumer")
        .count();
    assert_eq!(slow, 2, "{closes:?}");
    for s in &mut subs {
        assert!(ended(s).await, "the subscriber's connection ended");
    }
    // Two subscribers of one message each, two publishers' messages in
    // flight, allocator slack: well under 40 MB; unbounded it was 1.1 GB.
    assert!(grown < 40 * 1024, "RSS grew by {grown} KiB");
    nothing_held(&gw).await;
}

/// A subscriber that reads nothing while its budget is far from full is
/// closed by the blocked-write deadline (`limits.write_timeout`, 2 s): not
/// before its writes have made no progress for 2 s, not much after.
#[tokio::test]
async fn a_hub_subscriber_that_never_reads_is_closed_by_the_write_deadline() {
    let gw = Gateway::start(&hub_config("max_buffered_bytes = 67108864"));
    let mut sub = tiny_window_client(&gw, &token("sloth")).await;
    subscribe(&mut sub, "feed:a").await;
    let t0 = Instant::now();
    // 256 KiB at 25/s: the kernel's buffers (a few MB on loopback) are full
    // within a second, 64 MiB would take 10 s.
    let publisher = tokio::spawn({
        let url = gw.url();
        async move {
            let (mut ws, _) = bearer(&url, &token("publisher")).await.open();
            let data = "y".repeat(256 * 1024);
            for id in 0..150 {
                let m = json!({"type": "publish", "channel": "feed:a", "data": data, "id": id});
                if ws.send(Message::text(m.to_string())).await.is_err() {
                    return;
                }
                while let Ok(Some(Ok(_))) =
                    tokio::time::timeout(Duration::from_millis(40), ws.next()).await
                {
                }
            }
        }
    });
    let slow_at = slow_reached(&gw, "client", 1.0, Duration::from_secs(8))
        .await
        .expect("closed as a slow consumer");
    let after = slow_at - t0;
    // The socket blocks once the kernel's buffers are full (within a
    // second); then 2 s of no progress, checked every 0.5 s.
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(4),
        "closed {after:?} after the first publish"
    );
    assert!(ended(&mut sub).await, "the subscriber's connection ended");
    let close = &gw.events("close", 1)[0];
    assert_eq!(
        (close["code"].as_u64(), close["reason"].as_str()),
        (Some(1013), Some("slow consumer"))
    );
    publisher.abort();
    nothing_held(&gw).await;
}

/// Echo mode: clients that send 900 KB messages and never read. The
/// gateway stops reading each once one echo waits for it, and closes it
/// `1013` after the write deadline; RSS grows by about one message each.
#[tokio::test]
async fn echo_clients_that_never_read_are_bounded_and_closed() {
    let gw = Gateway::start(&base_config("[limits]\nconnections_per_user = 0"));
    let base = rss_kib(gw.pid());
    let peak = PeakRss::watch(gw.pid());
    let t0 = Instant::now();
    let mut senders = Vec::new();
    let n = 4;
    for _ in 0..n {
        let mut ws = tiny_window_client(&gw, &token("sloth")).await;
        senders.push(tokio::spawn(async move {
            let blob = vec![b'z'; BIG];
            // Sends block once the gateway stops reading: bounded by time.
            let _ = tokio::time::timeout(Duration::from_secs(4), async {
                for _ in 0..100 {
                    if ws.send(Message::binary(blob.clone())).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            ws
        }));
    }
    let slow_at = slow_reached(&gw, "client", n as f64, Duration::from_secs(8))
        .await
        .expect("every client closed as a slow consumer");
    assert!(slow_at - t0 >= Duration::from_secs(2), "{:?}", slow_at - t0);
    assert!(slow_at - t0 < Duration::from_secs(5), "{:?}", slow_at - t0);
    for s in senders {
        let mut ws = s.await.unwrap();
        assert!(ended(&mut ws).await, "the client's connection ended");
    }
    let grown = peak.peak_kib().saturating_sub(base);
    eprintln!("gateway RSS: {base} KiB before, grew by {grown} KiB at the peak");
    // Four messages held, the ones being read, allocator slack. Before,
    // 16 queued echoes each: ~60 MB.
    assert!(grown < 24 * 1024, "RSS grew by {grown} KiB");
    nothing_held(&gw).await;
}

/// One user's many sockets cannot pass the node's total: with
/// `max_buffered_bytes_total` at 20 MB, eight clients that each make the
/// gateway hold a 6 MB echo (more than loopback's kernel buffers take)
/// see those past the total closed at once, long before the write
/// deadline.
#[tokio::test]
async fn many_sockets_of_one_user_cannot_pass_the_node_total() {
    let gw = Gateway::start(&base_config(
        "[limits]\nconnections_per_user = 0\nmax_message_bytes = 8388608\n\
         max_buffered_bytes_total = 20000000\nwrite_timeout = \"30s\"",
    ));
    const HUGE: usize = 6_000_000;
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut ws = tiny_window_client(&gw, &token("hoarder")).await;
        ws.send(Message::binary(vec![b'h'; HUGE])).await.unwrap();
        clients.push(ws);
    }
    // At most three fit; the others are closed as they fall behind — by the
    // node-wide budget, well before the 30 s write timeout could (the bound
    // leaves room for a debug build on a loaded 2-core machine).
    let five = slow_reached(&gw, "client", 5.0, Duration::from_secs(20))
        .await
        .expect("the sockets past the total closed");
    assert!(five - t0 < Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slow_clients(&gw).await, 5.0, "those within it stay");
    let held = metric(&gw, "wsgate_buffered_bytes").await;
    assert!(held > 0.0 && held <= 20_000_000.0, "{held}");
    // Reading again: those past the total are closed — with `1013` (after
    // their echo if they read while the gateway still flushes them), or, when
    // the gateway closed while their 6 MB were still arriving, by the
    // kernel's reset (a socket closed with unread input sends RST, which
    // discards the close frame queued before it). The others get their
    // echo whole and stay open.
    #[derive(Debug, PartialEq)]
    enum End {
        Open,
        Closed(u16, String),
        Reset,
    }
    let outcomes = futures_util::future::join_all(clients.iter_mut().map(|ws| async move {
        let mut echoed = false;
        loop {
            match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => echoed = b.len() == HUGE,
                Ok(Some(Ok(Message::Close(f)))) => {
                    let f = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                    let (code, text) = f.unwrap_or((1005, String::new()));
                    return (echoed, End::Closed(code, text));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_))) | Ok(None) => return (echoed, End::Reset),
                Err(_) => return (echoed, End::Open),
            }
        }
    }))
    .await;
    let slow = End::Closed(1013, "slow consumer".to_owned());
    assert_eq!(
        outcomes
            .iter()
            .filter(|(echoed, e)| *e == slow || (*e == End::Reset && !echoed))
            .count(),
        5,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == (true, End::Open)).count(),
        3,
        "{outcomes:?}"
    );
    drop(clients);
    nothing_held(&gw).await;
}

/// An upstream that accepts the WebSocket and then reads nothing, through
/// a 4 KiB receive buffer.
async fn deaf_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = sock.listen(16).unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(s).await {
                held.push(ws);
            }
        }
    });
    (addr, task)
}

/// An upstream that floods its client with 64 KiB messages.
async fn flooding_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                let blob = vec![b'f'; 64 * 1024];
                while ws.send(Message::binary(blob.clone())).await.is_ok() {}
            });
        }
    });
    (addr, task)
}

fn upstream_config(upstream: SocketAddr) -> String {
    base_config("").replace(
        "kind = \"echo\"",
        &format!("kind = \"upstream\"\nupstream = \"ws://{upstream}/up\""),
    )
}

/// Upstream mode, towards the upstream: one that stops reading while a
/// client sends 900 KB messages is given up after the write deadline; the
/// client is told `1013 "upstream slow"`, and the gateway held about one
/// message meanwhile.
#[tokio::test]
async fn an_upstream_that_never_reads_is_closed_by_the_write_deadline() {
    let (up, _task) = deaf_upstream().await;
    let gw = Gateway::start(&upstream_config(up));
    let (ws, _) = bearer(&gw.url(), &token("talker")).await.open();
    let (mut tx, mut rx) = ws.split();
    let base = rss_kib(gw.pid());
    let peak = PeakRss::watch(gw.pid());
    let t0 = Instant::now();
    let sender = tokio::spawn(async move {
        let blob = vec![b'u'; BIG];
        let _ = tokio::time::timeout(Duration::from_secs(6), async {
            for _ in 0..200 {
                if tx.send(Message::binary(blob.clone())).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    });
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match rx.next().await {
                Some(Ok(Message::Close(f))) => {
                    return f.map(|f| (u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed in time");
    let after = t0.elapsed();
    assert_eq!(closed, Some((1013, "upstream slow".to_owned())));
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(5),
        "{after:?}"
    );
    assert_eq!(
        metric(&gw, "wsgate_slow_consumers_total{peer=\"upstream\"}").await,
        1.0
    );
    let grown = peak.peak_kib().saturating_sub(base);
    eprintln!("gateway RSS: {base} KiB before, grew by {grown} KiB at the peak");
    assert!(grown < 16 * 1024, "RSS grew by {grown} KiB");
    sender.abort();
    nothing_held(&gw).await;
}

/// Upstream mode, towards the client: a flooding upstream and a client
/// that reads nothing. The gateway stops reading the upstream, then closes
/// the client `1013` after the write deadline.
#[tokio::test]
async fn upstream_mode_a_client_that_never_reads_is_closed_by_the_write_deadline() {
    let (up, _task) = flooding_upstream().await;
    let gw = Gateway::start(&upstream_config(up));
    let t0 = Instant::now();
    let mut ws = tiny_window_client(&gw, &token("sloth")).await;
    let slow_at = slow_reached(&gw, "client", 1.0, Duration::from_secs(8))
        .await
        .expect("closed as a slow consumer");
    assert!(
        slow_at - t0 >= Duration::from_secs(2) && slow_at - t0 < Duration::from_secs(5),
        "{:?}",
        slow_at - t0
    );
    assert!(ended(&mut ws).await, "the client's connection ended");
    let close = &gw.events("close", 1)[0];
    assert_eq!(
        (close["code"].as_u64(), close["reason"].as_str()),
        (Some(1013), Some("slow consumer"))
    );
    nothing_held(&gw).await;
}
