//! After a large message the session replaces the client's WebSocket with a
//! fresh one (tungstenite keeps its buffers at their largest) once the
//! socket has been quiet for a second. Nothing may be lost or reordered.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_socket_keeps_working_across_recycles() {
    let gw = Gateway::start(&base_config(""));
    let (mut ws, _) = bearer(&gw.url(), &token("alice")).await.open();
    let big: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
    for round in 0..2 {
        ws.send(Message::Binary(big.clone().into()))
            .await
            .expect("send");
        let back = ws.next().await.and_then(|m| m.ok());
        assert_eq!(
            back,
            Some(Message::Binary(big.clone().into())),
            "round {round}"
        );
        // Quiet past the recycle delay; the recycle happens meanwhile.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // A ping answered by the new WebSocket, then pipelined messages.
        ws.send(Message::Ping(b"p".to_vec().into()))
            .await
            .expect("ping");
        for i in 0..20 {
            ws.send(Message::text(format!("m{i}"))).await.expect("send");
        }
        let mut got = Vec::new();
        while got.len() < 20 {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => got.push(t.to_string()),
                Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(&p[..], b"p"),
                other => panic!("round {round}: unexpected {other:?}"),
            }
        }
        let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        assert_eq!(got, want, "round {round}");
    }
    let m = http(gw.admin, "GET", "/metrics", &[], "").await.body;
    assert!(m.contains("wsgate_websocket_recycles_total 2"), "{m}");
}
