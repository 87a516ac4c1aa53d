//! Failed admin authentications, per peer address (issue 28: 94 guesses
//! found a 1-byte token in 0.02 s, and 300 wrong guesses left no trace).
//! Each failure is charged to its address's token bucket ([`BURST`]
//! failures, then one per second); an address over it is answered `429`
//! before its token is even compared, so guessing runs at one try a
//! second at best. A correct token is never charged. Each failure is
//! logged, within a process-wide line budget, and counted.
//!
//! The buckets are the handshake limiter's (bounded table, keyed per IPv4
//! address or IPv6 /64; when the table is full new addresses are refused,
//! failing closed): only failing addresses are stored, and a bucket that
//! has refilled is forgotten.

use crate::limiter::HandshakeLimiter;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Failures an address may make before it waits.
pub const BURST: u32 = 10;
/// Failures an address regains per second.
pub const PER_SEC: u32 = 1;
/// What a refused address is told: one failure is regained per second.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Addresses tracked at most (~0.6 MB).
const MAX_KEYS: usize = 16_384;
/// Log lines for failures, process-wide: a burst, then this many a second;
/// beyond that they are counted (`suppressed` on the next line) and only
/// the metric sees them.
const LOG_PER_SEC: u32 = 20;
const LOG_BURST: u32 = 100;
/// How often idle buckets are dropped (they are idle `BURST / PER_SEC`
/// seconds after an address's last failure).
const PRUNE_EVERY_MS: i64 = 5_000;

/// Why a request failed to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// A bearer token that is not the admin token.
    WrongToken,
    /// No admin token is configured: every call is refused.
    Disabled,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::MissingToken => "missing_token",
            Failure::WrongToken => "wrong_token",
            Failure::Disabled => "admin_api_disabled",
        }
    }
}

pub struct AuthFailures {
    per_ip: HandshakeLimiter,
    /// One bucket (under a fixed key) for the log line budget.
    lines: HandshakeLimiter,
    suppressed: AtomicU64,
    last_prune_ms: AtomicI64,
}

impl Default for AuthFailures {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthFailures {
    pub fn new() -> Self {
        AuthFailures {
            per_ip: HandshakeLimiter::new(PER_SEC, BURST, MAX_KEYS),
            lines: HandshakeLimiter::new(LOG_PER_SEC, LOG_BURST, 1),
            suppressed: AtomicU64::new(0),
            last_prune_ms: AtomicI64::new(crate::clock::now_ms()),
        }
    }

    /// Whether `ip` has failed too often to be heard now. Also when the
    /// table is full and `ip` is not in it: refusing is the safe side.
    pub fn is_limited(&self, ip: IpAddr) -> bool {
        self.prune_if_due();
        self.per_ip.is_limited(ip)
    }

    /// Charges a failure to `ip`; logs it within the line budget. `path` is
    /// one of the admin API's own paths or `"other"`: never text the
    /// client chose.
    pub fn record(&self, ip: IpAddr, path: &'static str, why: Failure) {
        let _ = self.per_ip.check(ip);
        let locked_out = self.per_ip.is_limited(ip);
        if self.lines.check(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(
            event = "admin_auth_failed",
            ip = %ip,
            path,
            reason = why.as_str(),
            locked_out,
            suppressed,
        );
    }

    fn prune_if_due(&self) {
        let now = crate::clock::now_ms();
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= PRUNE_EVERY_MS
            && self
                .last_prune_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.per_ip.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_its_burst_and_alone() {
        let f = AuthFailures::new();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..BURST {
            assert!(!f.is_limited(a));
            f.record(a, "/admin/v1/sessions", Failure::WrongToken);
        }
        assert!(f.is_limited(a));
        assert!(!f.is_limited(b));
        // One IPv6 /64 is one address.
        let v6 = |s: &str| s.parse::<IpAddr>().expect("ip");
        for _ in 0..BURST {
            f.record(v6("2001:db8::1"), "other", Failure::MissingToken);
        }
        assert!(f.is_limited(v6("2001:db8::ffff")));
        assert!(!f.is_limited(v6("2001:db8:0:1::1")));
    }
}
