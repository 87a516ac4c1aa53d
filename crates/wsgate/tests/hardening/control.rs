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
