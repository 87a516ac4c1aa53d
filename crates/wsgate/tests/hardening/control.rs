//! Control frames and in-band control messages: pings count toward the
//! message rate; oddly written `auth` messages are never forwarded.

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn with_limits(limits: &str) -> String {
    base_config(&format!("[limits]\n{limits}"))
}

fn upstream_config(upstream: SocketAddr, limits: &str) -> String {
    with_limits(limits).replace(
        "kind = \"echo\"",
        &format!("kind = \"upstream\"\nupstream = \"ws://{upstream}/up\""),
    )
}

fn first_message_config(limits: &str) -> String {
    with_limits(limits).replace(
        "leeway = \"1s\"",
        "leeway = \"1s\"\nfirst_message = true\nfirst_message_timeout = \"5s\"",
    )
}

/// A test upstream that records every frame the gateway sends it.
struct Recorder {
    addr: SocketAddr,
    frames: mpsc::UnboundedReceiver<Message>,
}

impl Recorder {
    /// `mute`: completes the WebSocket handshake, then neither reads nor
    /// writes (a hung upstream: pings go unanswered). Otherwise it echoes
    /// data, and answers a text `ping-me` with a ping of its own.
    async fn start(mute: bool) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    if mute {
                        // Held, never polled, until the test ends.
                        let _held = ws;
                        return std::future::pending::<()>().await;
                    }
                    while let Some(Ok(m)) = ws.next().await {
                        let _ = tx.send(m.clone());
                        match m {
                            Message::Text(t) if t.as_str() == "ping-me" => {
                                let _ = ws.send(Message::Ping(b"up".to_vec().into())).await;
                            }
                            Message::Text(_) | Message::Binary(_) => {
                                let _ = ws.send(m).await;
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        Recorder { addr, frames }
    }

    /// Everything recorded so far.
    fn drain(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(m) = self.frames.try_recv() {
            out.push(m);
        }
        out
    }

    /// The next data frame, skipping pings and pongs.
    async fn next_data(&mut self) -> Message {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.frames.recv())
                .await
                .expect("a frame in time")
                .expect("upstream running");
            if !matches!(m, Message::Ping(_) | Message::Pong(_)) {
                return m;
            }
        }
    }
}

/// What a client saw while sending frames at a steady pace.
#[derive(Default)]
struct Paced {
    sent: usize,
    /// Payloads of the pongs received, in order.
    pongs: Vec<Vec<u8>>,
    /// Pings the gateway sent.
    pings: usize,
    /// Data messages received.
    data: usize,
    close: Option<(u16, String)>,
}

/// Sends `make(i)` `per_sec` times a second (0: never) for `during` (or
/// until the gateway closes), reading everything the gateway sends
/// meanwhile (which answers its pings).
async fn pace(
    ws: &mut Ws,
    per_sec: u32,
    during: Duration,
    make: impl Fn(usize) -> Message,
) -> Paced {
    let mut out = Paced::default();
    let end = tokio::time::Instant::now() + during;
    let period = Duration::from_secs(1)
        .checked_div(per_sec)
        .unwrap_or(during);
    let mut next_send = if per_sec == 0 {
        end
    } else {
        tokio::time::Instant::now()
    };
    // Reads on for a moment after the last send: the last answers.
    while tokio::time::Instant::now() < end + Duration::from_millis(300) {
        let wake = if next_send < end {
            next_send
        } else {
            end + Duration::from_millis(300)
        };
        match tokio::time::timeout_at(wake, ws.next()).await {
            Err(_) if next_send < end => {
                if ws.send(make(out.sent)).await.is_err() {
                    break;
                }
                out.sent += 1;
                next_send += period;
            }
            Err(_) => break,
            Ok(Some(Ok(Message::Pong(p)))) => out.pongs.push(p.to_vec()),
            Ok(Some(Ok(Message::Ping(_)))) => out.pings += 1,
            Ok(Some(Ok(Message::Text(_) | Message::Binary(_)))) => out.data += 1,
            Ok(Some(Ok(Message::Close(f)))) => {
                out.close = Some(f.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                }));
                break;
            }
            Ok(Some(Ok(other))) => panic!("unexpected {other:?}"),
            Ok(Some(Err(_)) | None) => break,
        }
    }
    out
}

fn ping(i: usize) -> Message {
    Message::Ping(format!("p{i}").into_bytes().into())
}

// ------------------------------------------------------ control frames

/// Issue 23.4: 3,000 pings a second on a 100 msg/s socket got 3,000 pongs
/// and the socket stayed open. Pings now take a token of the message rate
/// like data: three times the rate is closed 4429.
#[tokio::test]
async fn a_ping_flood_is_closed_4429() {
    let gw = Gateway::start(&with_limits("messages_per_sec = 10"));
    let (mut ws, _) = bearer(&gw.url(), &token("pinger")).await.open();
    // 30 a second against 10 (burst 20): out of tokens after ~1 s.
    let seen = pace(&mut ws, 30, Duration::from_secs(4), ping).await;
    assert_eq!(
        seen.close,
        Some((4429, "message rate exceeded".into())),
        "sent {} pings, {} pongs",
        seen.sent,
        seen.pongs.len()
    );
    assert!(seen.sent < 60, "closed after {} pings", seen.sent);
    // Unsolicited pongs are frames to read too.
    let (mut ws, _) = bearer(&gw.url(), &token("ponger")).await.open();
    let seen = pace(&mut ws, 30, Duration::from_secs(4), |_| {
        Message::Pong(b"x".to_vec().into())
    })
    .await;
    assert_eq!(seen.close.map(|c| c.0), Some(4429), "sent {}", seen.sent);
    // A ping flood before first-message auth is bounded the same way.
    let gw = Gateway::start(&first_message_config("messages_per_sec = 10"));
    let (mut ws, _) = upgrade(&gw.url(), &[]).await.open();
    let seen = pace(&mut ws, 30, Duration::from_secs(4), ping).await;
    assert_eq!(seen.close.map(|c| c.0), Some(4429), "sent {}", seen.sent);
}

/// Pings within the rate are each answered with their own payload, and
/// the socket stays open.
#[tokio::test]
async fn pings_within_the_rate_are_answered() {
    let gw = Gateway::start(&with_limits("messages_per_sec = 10"));
    let (mut ws, _) = bearer(&gw.url(), &token("steady")).await.open();
    let seen = pace(&mut ws, 5, Duration::from_secs(3), ping).await;
    assert_eq!(seen.close, None);
    let want: Vec<Vec<u8>> = (0..seen.sent)
        .map(|i| format!("p{i}").into_bytes())
        .collect();
    assert_eq!(seen.pongs, want);
    assert!(seen.sent >= 14, "{}", seen.sent);
    assert_eq!(echo(&mut ws, "still open").await, "still open");
}

/// Issue 23.4: in upstream mode each client ping was also sent upstream
/// (2,000 in, 2,000 out). The gateway now answers the client's pings
/// itself and relays none; nor does it relay the upstream's pings to the
/// client (it answers those too).
#[tokio::test]
async fn pings_are_not_relayed_either_way() {
    let mut up = Recorder::start(false).await;
    let gw = Gateway::start(&upstream_config(up.addr, ""));
    let (mut ws, _) = bearer(&gw.url(), &token("relay")).await.open();
    let seen = pace(&mut ws, 50, Duration::from_secs(2), ping).await;
    assert_eq!(seen.close, None);
    assert_eq!(seen.pongs.len(), seen.sent);
    assert!(seen.sent >= 90, "{}", seen.sent);
    // Data still flows, and everything the client sent before it reached
    // the upstream: no ping among it (the keep-alive is every 30 s here).
    assert_eq!(echo(&mut ws, "after").await, "after");
    let frames = up.drain();
    assert!(
        frames.contains(&Message::Text("after".into())),
        "{frames:?}"
    );
    let pings = frames
        .iter()
        .filter(|m| matches!(m, Message::Ping(_)))
        .count();
    assert_eq!(pings, 0, "client pings relayed upstream");
    // The upstream pings: answered by the gateway, never seen by the client.
    ws.send(Message::Text("ping-me".into()))
        .await
        .expect("send");
    assert_eq!(up.next_data().await, Message::Text("ping-me".into()));
    let pong = tokio::time::timeout(Duration::from_secs(5), up.frames.recv())
        .await
        .expect("pong in time");
    assert_eq!(pong, Some(Message::Pong(b"up".to_vec().into())));
    let seen = pace(&mut ws, 10, Duration::from_millis(500), |_| {
        Message::Text("x".into())
    })
    .await;
    assert_eq!((seen.pings, seen.close), (0, None), "upstream ping relayed");
    assert_eq!(seen.data, seen.sent);
}

/// The gateway keeps its own keep-alive with the upstream: pings every
/// `ping_interval`, and an upstream that sends nothing (no message, no
/// pong) for `idle_timeout` is dropped and the client closed 1013.
#[tokio::test]
async fn the_upstream_keep_alive_drops_a_hung_upstream() {
    let limits = "ping_interval = \"200ms\"\nidle_timeout = \"1s\"";
    // A live upstream: pinged, answers, the session outlives idle_timeout.
    let mut up = Recorder::start(false).await;
    let gw = Gateway::start(&upstream_config(up.addr, limits));
    let (mut ws, _) = bearer(&gw.url(), &token("alive")).await.open();
    // The client reads (so it answers the gateway's pings) and sends nothing.
    let seen = pace(&mut ws, 0, Duration::from_millis(2500), ping).await;
    assert_eq!(seen.close, None);
    assert!(seen.pings >= 6, "{} pings to the client", seen.pings);
    let pings = up
        .drain()
        .iter()
        .filter(|m| matches!(m, Message::Ping(_)))
        .count();
    assert!(
        (6..=20).contains(&pings),
        "{pings} keep-alive pings in 2.5 s"
    );
    // A hung upstream: connected, but never reads or answers.
    let mute = Recorder::start(true).await;
    let gw = Gateway::start(&upstream_config(mute.addr, limits));
    let (mut ws, _) = bearer(&gw.url(), &token("hung")).await.open();
    let started = std::time::Instant::now();
    assert_eq!(
        close_code(&mut ws, Duration::from_secs(5)).await,
        (1013, "upstream lost".into())
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(2500),
        "{after:?}"
    );
    let ev = gw.events("upstream_error", 1);
    assert!(ev.iter().any(|e| e["stage"] == "keepalive"), "{ev:?}");
}

// ------------------------------------------------------ control messages

/// Oddly written auth messages: (text, the answer's `type`, its reason).
fn odd_auth_messages(t: &str) -> Vec<(String, &'static str, Option<&'static str>)> {
    vec![
        // Escapes: after unescaping, an auth message.
        (
            format!(r#"{{"type":"\u0061uth","token":"{t}"}}"#),
            "auth_ok",
            None,
        ),
        (
            format!(r#"{{"\u0074ype":"auth","t\u006Fken":"{t}"}}"#),
            "auth_ok",
            None,
        ),
        // Repeated members: read differently by different parsers.
        (
            format!(r#"{{"type":"x","type":"auth","token":"{t}"}}"#),
            "auth_fail",
            Some("malformed_token"),
        ),
        (
            format!(r#"{{"type":"auth","type":"auth","token":"{t}"}}"#),
            "auth_fail",
            Some("malformed_token"),
        ),
        (
            format!(r#"{{"type":"auth","type":"x","token":"{t}"}}"#),
            "auth_fail",
            Some("malformed_token"),
        ),
        // What lenient parsers accept: data after the object, NaN.
        (
            format!(r#"{{"type":"auth","token":"{t}"}} {{"type":"x"}}"#),
            "auth_fail",
            Some("malformed_token"),
        ),
        (
            format!(r#"{{"n":NaN,"type":"auth","token":"{t}"}}"#),
            "auth_fail",
            Some("malformed_token"),
        ),
    ]
}

/// Sends each odd auth message and checks its answer, then a probe: had
/// any of them been forwarded, its echo would come before the probe's.
async fn refresh_with_odd_auth(ws: &mut Ws, t: &str, probe: Value) -> Value {
    for (text, kind, reason) in odd_auth_messages(t) {
        let answer: Value = serde_json::from_str(&echo(ws, &text).await).expect("json");
        assert_eq!(answer["type"], kind, "{text}: {answer}");
        if let Some(r) = reason {
            assert_eq!(answer["reason"], r, "{text}");
        }
    }
    serde_json::from_str(&echo(ws, &probe.to_string()).await).expect("json")
}

/// Issue 23.5: `{"type":"\u0061uth",...}` or two `type` members passed the
/// byte-level check and reached the backend, token and all. Recognised on
/// the parsed JSON now, answered, never echoed.
#[tokio::test]
async fn odd_auth_messages_are_never_echoed() {
    let gw = Gateway::start(&base_config(""));
    let (mut ws, _) = bearer(&gw.url(), &token("odd")).await.open();
    let probe = json!({"probe": 1});
    assert_eq!(
        refresh_with_odd_auth(&mut ws, &token("odd"), probe.clone()).await,
        probe
    );
}

/// The same in upstream mode: the upstream records every frame it gets,
/// and no frame carries the token.
#[tokio::test]
async fn odd_auth_messages_never_reach_the_upstream() {
    let mut up = Recorder::start(false).await;
    let gw = Gateway::start(&upstream_config(up.addr, ""));
    let (mut ws, _) = bearer(&gw.url(), &token("odd-up")).await.open();
    let fresh = token("odd-up");
    let probe = json!({"probe": 2});
    assert_eq!(
        refresh_with_odd_auth(&mut ws, &fresh, probe.clone()).await,
        probe
    );
    assert_eq!(
        up.next_data().await,
        Message::Text(probe.to_string().into())
    );
    for m in up.drain() {
        let bytes = m.into_data();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&fresh),
            "token reached the upstream"
        );
    }
}

/// The same in the hub; and a hub message with two `type` members is
/// refused, not read as either.
#[tokio::test]
async fn odd_auth_messages_in_the_hub() {
    let cfg = base_config("[[hub.grants]]\nsubscribe = [\"public:*\"]\npublish = [\"public:*\"]")
        .replace("kind = \"echo\"", "kind = \"hub\"");
    let gw = Gateway::start(&cfg);
    let (mut ws, _) = bearer(&gw.url(), &token("odd-hub")).await.open();
    let probe = json!({"type": "subscribe", "channel": "public:a", "id": 1});
    assert_eq!(
        refresh_with_odd_auth(&mut ws, &token("odd-hub"), probe).await,
        json!({"type": "ack", "id": 1})
    );
    for text in [
        r#"{"type":"subscribe","type":"publish","channel":"public:a","data":1,"id":2}"#,
        r#"{"type":"subscribe","channel":"public:a","channel":"public:b","id":2}"#,
    ] {
        let answer: Value = serde_json::from_str(&echo(&mut ws, text).await).expect("json");
        assert_eq!(
            answer,
            json!({"type": "error", "id": null, "reason": "bad_request"}),
            "{text}"
        );
    }
    // A hub message naming auth as a second type is an auth message gone wrong.
    let answer: Value = serde_json::from_str(
        &echo(
            &mut ws,
            r#"{"type":"publish","channel":"public:a","data":1,"type":"auth"}"#,
        )
        .await,
    )
    .expect("json");
    assert_eq!(
        answer,
        json!({"type": "auth_fail", "reason": "malformed_token"})
    );
}

/// First-message auth reads the first message the same way: an escaped
/// auth message authenticates; one with repeated members is refused 4001,
/// and nothing is echoed.
#[tokio::test]
async fn odd_first_messages() {
    let gw = Gateway::start(&first_message_config(""));
    let t = token("odd-first");
    let (mut ws, _) = upgrade(&gw.url(), &[]).await.open();
    let ok: Value = serde_json::from_str(
        &echo(&mut ws, &format!(r#"{{"type":"\u0061uth","token":"{t}"}}"#)).await,
    )
    .expect("json");
    assert_eq!(
        (ok["type"].as_str(), ok["sub"].as_str()),
        (Some("auth_ok"), Some("odd-first"))
    );
    assert_eq!(echo(&mut ws, "data").await, "data");
    for text in [
        format!(r#"{{"type":"x","type":"auth","token":"{t}"}}"#),
        format!(r#"{{"type":"auth","type":"auth","token":"{t}"}}"#),
        format!(r#"{{"type":"auth","token":"{t}"}}garbage"#),
    ] {
        let (mut ws, _) = upgrade(&gw.url(), &[]).await.open();
        let fail: Value = serde_json::from_str(&echo(&mut ws, &text).await).expect("json");
        assert_eq!(
            fail,
            json!({"type": "auth_fail", "reason": "malformed_token"}),
            "{text}"
        );
        assert_eq!(
            close_code(&mut ws, Duration::from_secs(5)).await.0,
            4001,
            "{text}"
        );
    }
}
