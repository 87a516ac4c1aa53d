//! Upgrades answered without hyper's connection machinery.
//!
//! A WebSocket upgrade is one request on a fresh connection, and a refused
//! one closes it (`Connection: close`, docs/reference.md): there is no keep-alive to
//! serve. So when the first head on the main listener is `GET <server.path>`,
//! the head [`read_head`](crate::head_io::read_head) already buffered is parsed
//! once by crate::http_head (httparse, hyper's own parser), decided exactly as on hyper's
//! path ([`upgrade::answer`]), and the refusal (prebuilt bytes) or the `101`
//! is written here. Skipped per upgrade: hyper's connection state and
//! buffers, its response encoder, its upgrade channel and the task that
//! waited on it, and the boxed stream it hands over. Every other request,
//! and an upgrade that follows another request on a kept-alive connection,
//! stays on hyper.

use super::peer::Peer;
use super::respond;
use super::upgrade::{self, Answer};
use crate::app::App;
use crate::head_io::Rewind;
use crate::http_head;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use wsgate_core::Reason;

/// Serves a connection whose first head is an upgrade request.
pub async fn serve<S>(app: Arc<App>, mut stream: S, head: BytesMut, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let timeout = app.config.server.handshake_timeout;
    let (req, rest) = match parse(head.freeze()) {
        Ok(parsed) => parsed,
        Err(reason) => {
            upgrade::log_early_rejection(peer.ip(), reason);
            app.metrics.handshake(Err(reason), None);
            let raw = respond::reject_raw(reason, false);
            return write_and_close(&mut stream, &raw, timeout).await;
        }
    };
    let (accept, protocol, next) = match upgrade::answer(&app, &req, peer).await {
        Answer::Refuse { reason, presented } => {
            let raw = respond::reject_raw(reason, presented);
            return write_and_close(&mut stream, &raw, timeout).await;
        }
        Answer::Switch {
            accept,
            protocol,
            next,
        } => (accept, protocol, next),
    };
    drop(req);
    let head = switching(&accept, protocol.as_ref());
    let written = tokio::time::timeout(timeout, async {
        stream.write_all(&head).await?;
        // A TLS stream may still hold the record.
        stream.flush().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        // The peer left or stalled: dropping `next` ends the session
        // before it started (registry entry, per-user slot).
        return;
    }
    upgrade::begin(app, Box::new(Rewind::new(rest, stream)), next).await;
}

/// Writes a whole response, then closes our side, bounded by `timeout`.
pub async fn write_and_close<S: AsyncWrite + Unpin>(stream: &mut S, raw: &[u8], timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        let _ = stream.write_all(raw).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The `101` of RFC 6455 4.2.2.
fn switching(accept: &HeaderValue, protocol: Option<&HeaderValue>) -> Vec<u8> {
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    if let Some(p) = protocol {
        out.extend_from_slice(b"\r\nsec-websocket-protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    // Last, as hyper writes it.
    respond::push_date(&mut out);
    out.extend_from_slice(b"\r\n");
    out
}

/// Parses a complete head into a request (header values and target share
/// the head's buffer) and the bytes that followed it
/// ([`http_head::parse_request`]). Whatever hyper would have refused with
/// an empty `400` is `400 bad_upgrade` here. A request body is refused by
/// the upgrade checks, on both paths.
pub fn parse(buf: Bytes) -> Result<(Request<()>, Bytes), Reason> {
    http_head::parse_request(buf).map_err(http_head::Error::reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Version};

    fn parse_str(s: &str) -> Result<(Request<()>, Bytes), Reason> {
        parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn parse_bytes(s: &[u8]) -> Result<(Request<()>, Bytes), Reason> {
        parse(Bytes::copy_from_slice(s))
    }

    #[test]
    fn parses_an_upgrade_and_keeps_what_follows() {
        let (req, rest) = parse_bytes(
            b"GET /ws?ticket=t HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nX-Two: 1\r\nx-two: 2\r\n\r\n\x81\x00",
        )
        .expect("parses");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path(), "/ws");
        assert_eq!(req.uri().query(), Some("ticket=t"));
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["upgrade"], "websocket");
        assert_eq!(req.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(&rest[..], b"\x81\x00");
        let (req, rest) = parse_str("GET /ws HTTP/1.0\r\n\r\n").expect("parses");
        assert_eq!(req.version(), Version::HTTP_10);
        assert!(rest.is_empty());
    }

    #[test]
    fn refuses_what_hyper_would() {
        for head in [
            "GET /ws HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET /ws HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            "GET /ws HTTP/2.0\r\n\r\n",
            "GET /ws HTTP/1.1\r\nX: a\0b\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: a\r\n",
        ] {
            assert_eq!(parse_str(head).err(), Some(Reason::BadUpgrade), "{head:?}");
        }
    }

    #[test]
    fn switching_protocols_head() {
        let accept = HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let head = String::from_utf8(switching(&accept, None)).expect("ascii");
        let (fixed, date) = head.split_at(head.len() - respond::DATE_LINE_LEN - 2);
        assert_eq!(
            fixed,
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        );
        assert!(
            date.starts_with("date: ") && date.ends_with(" GMT\r\n\r\n"),
            "{date:?}"
        );
        let jwt = HeaderValue::from_static("jwt");
        let head = String::from_utf8(switching(&accept, Some(&jwt))).expect("ascii");
        assert!(head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nsec-websocket-protocol: jwt\r\ndate: "), "{head}");
    }
}
