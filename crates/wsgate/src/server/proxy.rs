//! PROXY protocol v1/v2 (`server.proxy_protocol`) for L4 load balancers:
//! the header is parsed by the `ppp` crate; this module only reads it under
//! the connection's handshake deadline and hands the remaining bytes on.

use bytes::BytesMut;
use ppp::{HeaderResult, PartialResult};
use std::net::IpAddr;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// A PROXY header is at most 16 + 65535 bytes by the spec; real balancers
/// send well under this (a v1 line is at most 107), and more is refused.
/// At most this many bytes are ever read before the header is complete,
/// so the cap holds whether they arrive in one segment or a byte at a
/// time; a v2 header declaring more is refused as soon as its 16-byte
/// preamble is in.
pub const MAX_HEADER: usize = 4096;

/// Why no client address came out of the header.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Missing, malformed, over [`MAX_HEADER`], or the peer left.
    Invalid,
    /// Not complete by the deadline.
    TimedOut,
}

/// Reads the PROXY header by `deadline`. Returns the client address it
/// names (`None` for `LOCAL`/`UNKNOWN`, e.g. the balancer's own health
/// checks) and the bytes read past it.
pub async fn read<S: AsyncRead + Unpin>(
    io: &mut S,
    deadline: Instant,
) -> Result<(Option<IpAddr>, BytesMut), Refused> {
    let mut buf = BytesMut::with_capacity(256);
    let fut = async {
        loop {
            // Never more than the cap in all: `take` bounds this read.
            let room = (MAX_HEADER - buf.len()) as u64;
            match (&mut *io).take(room).read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err(Refused::Invalid),
                Ok(_) => {}
            }
            let parsed = HeaderResult::parse(&buf);
            if parsed.is_incomplete() {
                let declared_too_long = matches!(
                    parsed,
                    HeaderResult::V2(Err(ppp::v2::ParseError::Partial(_, len)))
                        if 16 + len > MAX_HEADER
                );
                if declared_too_long || buf.len() >= MAX_HEADER {
                    return Err(Refused::Invalid);
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
                _ => return Err(Refused::Invalid),
            };
            let rest = buf.split_off(len.min(buf.len()));
            return Ok((source, rest));
        }
    };
    tokio::time::timeout_at(deadline, fut)
        .await
        .unwrap_or(Err(Refused::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(1)
    }

    async fn parse(bytes: &[u8]) -> Result<(Option<IpAddr>, BytesMut), Refused> {
        let (mut a, mut b) = tokio::io::duplex(1 << 17);
        a.write_all(bytes).await.expect("write");
        drop(a);
        read(&mut b, soon()).await
    }

    /// A v2 `PROXY` header from 198.51.100.9, `total` bytes long: the
    /// addresses, then a NOOP TLV padding it out.
    fn v2_of_len(total: usize) -> Vec<u8> {
        let pad = total - 16 - 12 - 3;
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&((12 + 3 + pad) as u16).to_be_bytes());
        h.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1, 0xc3, 0x50, 0x01, 0xbb]);
        h.push(0x04);
        h.extend_from_slice(&(pad as u16).to_be_bytes());
        h.resize(total, b'x');
        h
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
        let r = read(&mut b, Instant::now() + Duration::from_millis(50)).await;
        assert_eq!(r.err(), Some(Refused::TimedOut));
    }

    /// The cap holds however the bytes arrive: at once (one read may see
    /// the whole header) or a few at a time.
    #[tokio::test]
    async fn cap_at_once_and_dribbled() {
        let mut at_cap = v2_of_len(MAX_HEADER);
        at_cap.extend_from_slice(b"GET");
        let (mut a, mut b) = tokio::io::duplex(1 << 17);
        a.write_all(&at_cap).await.expect("write");
        drop(a);
        let (ip, rest) = read(&mut b, soon()).await.expect("at the cap");
        assert_eq!(ip, Some("198.51.100.9".parse().expect("ip")));
        // Nothing past the cap was read: what follows is still the stream's.
        assert!(rest.is_empty());
        let mut after = Vec::new();
        b.read_to_end(&mut after).await.expect("read");
        assert_eq!(after, b"GET");
        for total in [MAX_HEADER + 1, 5000, 65535 + 16] {
            let r = parse(&v2_of_len(total)).await;
            assert_eq!(r.err(), Some(Refused::Invalid), "{total} at once");
        }
        for (total, ok) in [(MAX_HEADER, true), (MAX_HEADER + 1, false)] {
            let (mut a, mut b) = tokio::io::duplex(1 << 17);
            let h = v2_of_len(total);
            let writer = tokio::spawn(async move {
                for chunk in h.chunks(100) {
                    if a.write_all(chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let _ = a.write_all(b"GET").await;
                // Held open: only the cap may end the read.
                tokio::time::sleep(Duration::from_secs(2)).await;
            });
            let r = read(&mut b, Instant::now() + Duration::from_secs(3)).await;
            writer.abort();
            assert_eq!(r.is_ok(), ok, "{total} dribbled: {:?}", r.err());
        }
    }
}
