//! PROXY protocol v1/v2 (`server.proxy_protocol`) for L4 load balancers:
//! the header is parsed by the `ppp` crate; this module only reads it under
//! the handshake deadline and hands the remaining bytes on.

use bytes::BytesMut;
use ppp::{HeaderResult, PartialResult};
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A PROXY header is at most 16 + 65535 bytes by the spec; real balancers
/// send well under this, and more is refused.
const MAX_HEADER: usize = 4096;

/// Reads the PROXY header. Returns the client address it names (`None`
/// for `LOCAL`/`UNKNOWN`, e.g. the balancer's own health checks) and the
/// bytes read past it, or `Err` for a missing, malformed or slow header.
pub async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> Result<(Option<IpAddr>, BytesMut), ()> {
    let mut buf = BytesMut::with_capacity(256);
    let fut = async {
        loop {
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err(()),
                Ok(_) => {}
            }
            let parsed = HeaderResult::parse(&buf);
            if parsed.is_incomplete() {
                if buf.len() > MAX_HEADER {
                    return Err(());
                }
                continue;
            }
            let (len, source) = match parsed {
                HeaderResult::V1(Ok(h)) => (
                    h.header.len(),
                    match h.addresses {
                        ppp::v1::Addresses::Tcp4(a) => Some(IpAddr::V4(a.source_address)),
                        ppp::v1::Addresses::Tcp6(a) => Some(IpAddr::V6(a.source_address)),
                        ppp::v1::Addresses::Unknown => None,
                    },
                ),
                HeaderResult::V2(Ok(h)) => (
                    h.len(),
                    match (h.command, h.addresses) {
                        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                            Some(IpAddr::V4(a.source_address))
                        }
                        (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                            Some(IpAddr::V6(a.source_address))
                        }
                        _ => None,
                    },
                ),
                _ => return Err(()),
            };
            let rest = buf.split_off(len.min(buf.len()));
            return Ok((source, rest));
        }
    };
    tokio::time::timeout(timeout, fut).await.unwrap_or(Err(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn parse(bytes: &[u8]) -> Result<(Option<IpAddr>, BytesMut), ()> {
        let (mut a, mut b) = tokio::io::duplex(8192);
        a.write_all(bytes).await.expect("write");
        drop(a);
        read(&mut b, Duration::from_secs(1)).await
    }

    #[tokio::test]
    async fn v1_and_leftover() {
        let (ip, rest) = parse(b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET / HTTP/1.1\r\n")
            .await
            .expect("v1");
        assert_eq!(ip, Some("203.0.113.7".parse().expect("ip")));
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
        let (ip, _) = parse(b"PROXY UNKNOWN\r\n").await.expect("unknown");
        assert_eq!(ip, None);
    }

    #[tokio::test]
    async fn v2_proxy_and_local() {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend_from_slice(&[
            0x21, 0x11, 0, 12, 198, 51, 100, 9, 10, 0, 0, 1, 0xc3, 0x50, 0x01, 0xbb,
        ]);
        h.extend_from_slice(b"rest");
        let (ip, rest) = parse(&h).await.expect("v2");
        assert_eq!(ip, Some("198.51.100.9".parse().expect("ip")));
        assert_eq!(&rest[..], b"rest");
        let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).await.expect("local").0, None);
    }

    #[tokio::test]
    async fn garbage_missing_and_slow_are_refused() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.is_err());
        assert!(parse(b"PROXY TCP4 nope\r\n").await.is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4").await.is_err());
        let (_a, mut b) = tokio::io::duplex(64);
        assert!(read(&mut b, Duration::from_millis(50)).await.is_err());
    }
}
