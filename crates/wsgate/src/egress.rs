//! Egress monitoring: bytes sent to each user per minute, across their
//! sockets on this node. A user suddenly pulling far more data than usual
//! is a sign of a stolen token; crossing `limits.egress_alert_bytes_per_min`
//! logs an `egress_alert`, counts `wsgate_egress_alerts_total`, and with
//! `egress_alert_close` closes the sockets that keep sending.
//!
//! Sockets add their bytes in batches (see [`Meter`]), so the shared map is
//! touched about once a second per busy socket, not per message. What a
//! verdict means for the socket (alert, close) is the session's decision
//! (`wsgate_core::session`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use wsgate_core::UnixMillis;

/// What crossing the threshold means for the caller; the session decides
/// what follows (wsgate_core::session).
pub use wsgate_core::session::EgressVerdict as Verdict;

struct Window {
    minute: i64,
    bytes: u64,
    alerted: bool,
}

/// Per-user egress of this node, in one-minute windows.
pub struct Egress {
    limit: u64,
    users: Mutex<HashMap<String, Window>>,
}

impl Egress {
    /// `limit` bytes per user per minute; 0 turns monitoring off.
    pub fn new(limit: u64) -> Self {
        Egress {
            limit,
            users: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Adds `bytes` sent to `sub` at `now`.
    pub fn add(&self, sub: &str, bytes: u64, now: UnixMillis) -> Verdict {
        if !self.enabled() {
            return Verdict::Ok;
        }
        let minute = now.div_euclid(60_000);
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let w = users.entry(sub.to_owned()).or_insert(Window {
            minute,
            bytes: 0,
            alerted: false,
        });
        if w.minute != minute {
            *w = Window {
                minute,
                bytes: 0,
                alerted: false,
            };
        }
        w.bytes = w.bytes.saturating_add(bytes);
        if w.bytes <= self.limit {
            Verdict::Ok
        } else if !w.alerted {
            w.alerted = true;
            Verdict::Alert { bytes: w.bytes }
        } else {
            Verdict::Over
        }
    }

    /// Forgets windows older than the current minute (bounded by active users).
    pub fn prune(&self, now: UnixMillis) {
        let minute = now.div_euclid(60_000);
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, w| w.minute >= minute);
    }

    pub fn tracked(&self) -> usize {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A socket's batching of its egress into the shared [`Egress`].
pub struct Meter {
    pending: u64,
    last_flush: Instant,
    batch: u64,
}

impl Meter {
    pub fn new(e: &Egress) -> Self {
        Meter {
            pending: 0,
            last_flush: Instant::now(),
            // Small enough to notice a crossing promptly, large enough to
            // keep the shared map off the per-message path.
            batch: (e.limit / 4).clamp(1, 64 * 1024),
        }
    }

    /// Records `n` bytes sent; flushes to `e` when the batch is full or a
    /// second has passed. Returns the verdict of a flush, if one happened.
    pub fn record(&mut self, e: &Egress, sub: &str, n: u64, now: UnixMillis) -> Option<Verdict> {
        if !e.enabled() {
            return None;
        }
        self.pending += n;
        if self.pending < self.batch && self.last_flush.elapsed() < Duration::from_secs(1) {
            return None;
        }
        let bytes = std::mem::take(&mut self.pending);
        self.last_flush = Instant::now();
        Some(e.add(sub, bytes, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A whole minute, so windows start at T0.
    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn alerts_once_per_minute_then_over() {
        let e = Egress::new(1000);
        assert_eq!(e.add("a", 600, T0), Verdict::Ok);
        assert_eq!(e.add("a", 600, T0 + 1), Verdict::Alert { bytes: 1200 });
        assert_eq!(e.add("a", 10, T0 + 2), Verdict::Over);
        // Other users are separate.
        assert_eq!(e.add("b", 900, T0 + 3), Verdict::Ok);
        // A new minute starts over.
        assert_eq!(e.add("a", 10, T0 + 60_000), Verdict::Ok);
    }

    #[test]
    fn off_and_prune() {
        let off = Egress::new(0);
        assert_eq!(off.add("a", u64::MAX, T0), Verdict::Ok);
        let e = Egress::new(10);
        e.add("a", 1, T0);
        e.add("b", 1, T0 + 60_000);
        e.prune(T0 + 60_000);
        assert_eq!(e.tracked(), 1);
    }

    #[test]
    fn meter_batches() {
        let e = Egress::new(4000);
        let mut m = Meter::new(&e);
        assert_eq!(m.record(&e, "a", 500, T0), None);
        assert_eq!(m.record(&e, "a", 500, T0), Some(Verdict::Ok));
        assert_eq!(
            m.record(&e, "a", 3500, T0),
            Some(Verdict::Alert { bytes: 4500 })
        );
    }
}
