//! Minimal, unauthenticated WebSocket echo server on tokio-tungstenite.
//!
//! It accepts every upgrade (on any path), echoes text and binary messages,
//! and — so that `wsgate-bench --transport subprotocol` works against it —
//! selects the `jwt` subprotocol when the client offers it. It is the
//! "plain Rust echo server" baseline for wsgate's BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p wsgate-bench --example echo_server -- 127.0.0.1:9001 [READ_BUFFER_BYTES]
//! ```
//!
//! tungstenite allocates (and touches) a 128 KiB read buffer per socket by
//! default, which dominates idle memory; the optional second argument sets
//! `WebSocketConfig::read_buffer_size` to compare, e.g. `4096`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let config = match args.next() {
        None => WebSocketConfig::default(),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => WebSocketConfig::default().read_buffer_size(n),
            _ => {
                eprintln!("usage: echo_server [ADDR] [READ_BUFFER_BYTES]");
                std::process::exit(2);
            }
        },
    };
    let listener = TcpListener::bind(&addr).await?;
    eprintln!(
        "echo_server listening on ws://{}/ (read buffer {} bytes)",
        listener.local_addr()?,
        config.read_buffer_size
    );
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                tokio::spawn(serve(stream, config));
            }
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(stream: TcpStream, config: WebSocketConfig) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, select_jwt, Some(config)).await
    else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// Answers `Sec-WebSocket-Protocol: jwt` if the client offered `jwt`.
// The signature is tungstenite's handshake `Callback`; its error type is not ours to shrink.
#[allow(clippy::result_large_err)]
fn select_jwt(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offers_jwt = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "jwt");
    if offers_jwt {
        resp.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("jwt"));
    }
    Ok(resp)
}
