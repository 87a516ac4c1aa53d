//! What the node holds for peers that are behind, and its bounds.
//!
//! Per socket, the bytes queued for it (the hub's queue, the outbox) and
//! handed to its WebSocket but not yet taken by the kernel count against
//! `limits.max_buffered_bytes`: a side is read only while what it produces
//! fits, and a hub delivery that would not fit makes the socket a slow
//! consumer. A message larger than the budget still goes out alone.
//!
//! Per node, [`Backlog`] sums what is held because a peer is behind: a
//! socket's bytes from the moment a write finds its peer not taking more
//! until that write completes, and every hub delivery once for as long as
//! any socket still holds it (a delivery is shared by its subscribers).
//! Past `limits.max_buffered_bytes_total`, every socket that falls behind is
//! closed `1013 "slow consumer"` instead of adding to it: a single
//! user's many sockets, or many users', cannot grow the node past it.
//!
//! Sockets that keep up never touch the node-wide count: their writes
//! complete at once.

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The node's byte budgets and what it holds now.
pub struct Backlog {
    /// `limits.max_buffered_bytes`.
    pub per_socket: usize,
    /// `limits.max_message_bytes`: the most one read of a peer can produce.
    reserve: usize,
    /// `limits.max_buffered_bytes_total`.
    total: usize,
    /// `limits.write_timeout`.
    pub write_timeout: Duration,
    /// Bytes held now (`wsgate_buffered_bytes`).
    held: Gauge,
}

impl Backlog {
    pub fn new(limits: &crate::config::LimitsConfig, held: Gauge) -> Self {
        Backlog {
            per_socket: limits.max_buffered_bytes,
            reserve: limits.max_message_bytes,
            total: limits.max_buffered_bytes_total,
            write_timeout: limits.write_timeout,
            held,
        }
    }

    /// Whether a socket holding `bytes` may take whatever one more read of
    /// the other side produces (up to a maximal message): always when it
    /// holds nothing, so a message larger than the budget still goes out.
    pub fn room(&self, bytes: usize) -> bool {
        bytes == 0 || bytes.saturating_add(self.reserve) <= self.per_socket
    }

    /// Counts `n` more bytes held, unless that would take the node past its
    /// total; returns whether it did.
    pub fn try_charge(&self, n: usize) -> bool {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let before = self.held.inc_by(n);
        if before.saturating_add(n) > self.total_i64() {
            self.held.dec_by(n);
            return false;
        }
        true
    }

    /// Counts `n` more bytes held, whatever the total.
    fn charge(&self, n: usize) {
        self.held.inc_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn release(&self, n: usize) {
        self.held.dec_by(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Whether the node holds more than its total.
    pub fn over(&self) -> bool {
        self.held.get() > self.total_i64()
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        usize::try_from(self.held.get()).unwrap_or(0)
    }

    fn total_i64(&self) -> i64 {
        i64::try_from(self.total).unwrap_or(i64::MAX)
    }

    /// `text` as a message shared by several sockets, counted once for as
    /// long as any of them holds it.
    pub fn shared(&self, text: String) -> Utf8Bytes {
        // serde_json grows its buffer by doubling: kept as is, a delivery
        // would hold up to twice its length for as long as a slow
        // subscriber has it. An exact copy costs one memcpy per publish.
        let text: Box<str> = if text.capacity() - text.len() > text.len() / 16 + 64 {
            Box::from(text.as_str())
        } else {
            text.into_boxed_str()
        };
        self.charge(text.len());
        let counted = Counted {
            text,
            held: self.held.clone(),
        };
        // Valid UTF-8 already (a String); the check is one pass over it.
        Utf8Bytes::try_from(Bytes::from_owner(counted)).unwrap_or_default()
    }
}

/// A shared message's bytes; released from the count when the last socket
/// lets go of them.
struct Counted {
    text: Box<str>,
    held: Gauge,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.held
            .dec_by(i64::try_from(self.text.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(per_socket: usize, total: usize) -> Backlog {
        let limits = crate::config::LimitsConfig {
            max_buffered_bytes: per_socket,
            max_buffered_bytes_total: total,
            max_message_bytes: 100,
            ..Default::default()
        };
        Backlog::new(&limits, Gauge::default())
    }

    #[test]
    fn a_socket_reads_on_while_a_whole_message_still_fits() {
        let b = backlog(250, 1000);
        assert!(b.room(0), "an empty socket always takes one message");
        assert!(b.room(150));
        assert!(!b.room(151));
        // A budget below one message: one message at a time.
        let b = backlog(50, 1000);
        assert!(b.room(0));
        assert!(!b.room(1));
    }

    #[test]
    fn the_node_total_refuses_what_would_cross_it() {
        let b = backlog(100, 1000);
        assert!(b.try_charge(600));
        assert!(b.try_charge(400));
        assert!(!b.try_charge(1), "at the total");
        assert_eq!(b.held(), 1000, "a refused charge counts nothing");
        assert!(!b.over());
        b.release(1000);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn a_shared_message_counts_once_until_its_last_holder_lets_go() {
        let b = backlog(100, 1000);
        let m = b.shared("x".repeat(300));
        let copies = [m.clone(), m.clone()];
        assert_eq!(b.held(), 300);
        drop(m);
        assert_eq!(b.held(), 300);
        assert_eq!(copies[0].as_str(), "x".repeat(300));
        drop(copies);
        assert_eq!(b.held(), 0);
        // Over the total by shared messages: over() says so.
        let big = b.shared("y".repeat(1001));
        assert!(b.over());
        drop(big);
        assert!(!b.over());
    }
}
