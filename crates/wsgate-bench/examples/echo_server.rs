//! Minimal, unauthenticated WebSocket echo server on tokio-tungstenite.
//!
//! It accepts every upgrade (on any path), echoes text and binary messages,
//! and — so that `wsgate-bench --transport subprotocol` works against it —
//! selects the `jwt` subprotocol when the client offers it. It is the
//! "plain Rust echo server" baseline for wsgate's BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p wsgate-bench --example echo_server -- 127.0.0.1:9001 [READ_BUFFER_BYTES] [h2 | tls CERT KEY]
//! ```
//!
//! tungstenite allocates (and touches) a 128 KiB read buffer per socket by
//! default, which dominates idle memory; the optional second argument sets
//! `WebSocketConfig::read_buffer_size` to compare, e.g. `4096`.
//!
//! With `h2` as third argument the same server speaks HTTP/2 only (prior
//! knowledge, no TLS) and takes WebSockets as RFC 8441 extended CONNECT
//! streams, many per connection: the upstream for wsgate's
//! `backend.upstream_http2` (and HAProxy's `proto h2`). The echo loop and
//! the WebSocket configuration are the same in both modes. A separate mode,
//! not a sniff of the first bytes: peeking would add a syscall to every
//! HTTP/1.1 connection of the reference it already is.
//!
//! With `tls CERT KEY` (PEM files) it speaks `wss://`: rustls as wsgate's
//! TLS listener sets it up (the default provider and session cache, ALPN
//! `http/1.1`), then the same HTTP/1.1 upgrade and echo loop. That is the
//! TLS ceiling of BENCHMARKS.md: what TLS plus WebSocket cost without any
//! authentication (bench-tls.sh).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".to_string());
    let config = match args.next() {
        None => WebSocketConfig::default(),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => WebSocketConfig::default().read_buffer_size(n),
            _ => usage(),
        },
    };
    let (h2, tls) = match args.next().as_deref() {
        None => (false, None),
        Some("h2") => (true, None),
        Some("tls") => match (args.next(), args.next()) {
            (Some(cert), Some(key)) => (false, Some(acceptor(&cert, &key)?)),
            _ => usage(),
        },
        Some(_) => usage(),
    };
    let listener = TcpListener::bind(&addr).await?;
    eprintln!(
        "echo_server listening on {}://{}/ ({}, read buffer {} bytes)",
        if tls.is_some() { "wss" } else { "ws" },
        listener.local_addr()?,
        if h2 {
            "HTTP/2 extended CONNECT"
        } else {
            "HTTP/1.1"
        },
        config.read_buffer_size
    );
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) if h2 => {
                tokio::spawn(serve_h2(stream, config));
            }
            Ok((stream, _peer)) => {
                let _ = stream.set_nodelay(true);
                match &tls {
                    Some(acceptor) => {
                        let accept = acceptor.accept(stream);
                        tokio::spawn(async move {
                            if let Ok(stream) = accept.await {
                                serve(stream, config).await;
                            }
                        });
                    }
                    None => {
                        tokio::spawn(serve(stream, config));
                    }
                }
            }
            Err(e) => {
                // E.g. EMFILE: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S, config: WebSocketConfig) {
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, select_jwt, Some(config)).await
    else {
        return;
    };
    echo(&mut ws).await;
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// One HTTP/2 connection: every `CONNECT` with `:protocol websocket` is
/// answered `200` and its stream echoed; anything else `400`.
async fn serve_h2(stream: TcpStream, config: WebSocketConfig) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(
        move |mut req: hyper::Request<hyper::body::Incoming>| async move {
            let websocket = req.method() == hyper::Method::CONNECT
                && req
                    .extensions()
                    .get::<hyper::ext::Protocol>()
                    .is_some_and(|p| p.as_str() == "websocket");
            let mut resp = hyper::Response::new(String::new());
            if !websocket {
                *resp.status_mut() = hyper::StatusCode::BAD_REQUEST;
                return Ok::<_, std::convert::Infallible>(resp);
            }
            if offers_jwt(req.headers()) {
                resp.headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static("jwt"));
            }
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(stream) = upgrade.await {
                    let mut ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(stream),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    echo(&mut ws).await;
                }
            });
            Ok(resp)
        },
    );
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .enable_connect_protocol()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// rustls as wsgate's listener builds it (crates/wsgate/src/tls.rs).
fn acceptor(cert: &str, key: &str) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(&e))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg)))
}

fn usage() -> ! {
    eprintln!("usage: echo_server [ADDR] [READ_BUFFER_BYTES] [h2 | tls CERT KEY]");
    std::process::exit(2);
}

fn offers_jwt(h: &HeaderMap) -> bool {
    h.get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == "jwt")
}

/// Answers `Sec-WebSocket-Protocol: jwt` if the client offered `jwt`.
// The signature is tungstenite's handshake `Callback`; its error type is not ours to shrink.
#[allow(clippy::result_large_err)]
fn select_jwt(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if offers_jwt(req.headers()) {
        resp.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static("jwt"));
    }
    Ok(resp)
}
