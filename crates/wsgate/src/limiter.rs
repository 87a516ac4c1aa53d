//! Per-IP handshake rate limit, decided before any token is verified so that
//! a flood of upgrades costs a hash lookup each, not a signature check.
//!
//! A GCRA token bucket per key (`handshakes_per_ip_per_sec` refill,
//! `handshake_burst_per_ip` capacity) in a sharded map of plain `u64`s: one
//! short mutex hold per check, no allocation except a new key's slot.
//!
//! Keys: an IPv4 address (IPv4-mapped IPv6 included), or an IPv6 /64. One
//! host on IPv6 usually owns a whole /64 (SLAAC, privacy addresses), so
//! per-address buckets would give an attacker 2^64 of them.
//!
//! Memory is bounded by `max_keys` (about 35 MB at 1,000,000): when the map
//! is full, new keys are refused (fail closed) rather than admitted or
//! stored, until [`HandshakeLimiter::retain_recent`] drops idle ones. A key
//! is idle once its bucket has refilled completely (`burst / per_sec`
//! seconds after its last handshake); dropping it then changes nothing,
//! because a fresh bucket is a full one.
//!
//! Why not `governor`: its keyed limiter cannot refuse a key it has not seen
//! without storing it (no `contains`, private store), so it cannot cap
//! memory by shedding, and it reads its own clock.

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Shards bound lock contention between worker threads.
const SHARDS: usize = 64;

/// What a new address is told when the table is full: by then
/// `retain_recent` (called every few seconds) will have run.
pub const SHED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The bucket an address is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6Prefix64(u64),
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => {
                // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d;
                // keyed by /64 they would all share one bucket. Likewise for
                // the NAT64 well-known prefix 64:ff9b::/96.
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return IpKey::V4(u32::from(v4));
                }
                let bits = u128::from(v6);
                if bits >> 32 == u128::from(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0)) >> 32 {
                    return IpKey::V4(bits as u32);
                }
                IpKey::V6Prefix64((bits >> 64) as u64)
            }
        }
    }
}

/// As an address (`10.0.0.1`) or a prefix (`2001:db8:1:2::/64`), for logs.
impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpKey::V4(a) => std::net::Ipv4Addr::from(*a).fmt(f),
            IpKey::V6Prefix64(p) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*p) << 64)),
        }
    }
}

impl IpKey {
    /// One `u64` for the map: 16-byte slots instead of 24 under a flood.
    /// IPv4 takes the values below 2^32, which as /64 prefixes lie in
    /// `::/32` (reserved: loopback, unspecified, deprecated IPv4-compatible),
    /// never a real client's network, so sharing them is harmless.
    fn packed(self) -> u64 {
        match self {
            IpKey::V4(v4) => u64::from(v4),
            IpKey::V6Prefix64(prefix) => prefix,
        }
    }
}

/// Cache-line aligned so that neighbouring shards' locks do not contend.
#[repr(align(128))]
struct Shard(Mutex<HashMap<u64, u64>>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, u64>> {
        // A panic while holding the lock cannot leave a half-written u64;
        // the map is still valid.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Limited {
    /// Times are nanoseconds since `base`, so a bucket is one `u64`.
    base: Instant,
    /// Nanoseconds per token.
    interval: u64,
    /// How far ahead of `now` a key's theoretical arrival time may be and
    /// still be admitted: `(burst - 1) * interval`.
    tolerance: u64,
    per_shard_cap: usize,
    /// Keyed SipHash: shard choice must not be steerable by the attacker,
    /// or one shard could be filled and its share of new clients shed.
    hasher: RandomState,
    shards: Box<[Shard]>,
}

/// Connections per address whose first request head has not arrived yet,
/// counted from accept (through a PROXY header and the TLS handshake): one
/// address cannot hold thousands of half-open handshakes (slowloris, half
/// ClientHellos). Keyed as the rate limiter is ([`IpKey`]: an IPv6 /64 is
/// one address). The table holds only addresses with an unfinished
/// handshake, so it is bounded by the number of open connections.
#[derive(Default)]
pub struct PendingHandshakes {
    per_ip: std::sync::Mutex<std::collections::HashMap<IpKey, u32>>,
}

/// A pending handshake; released on drop.
pub struct PendingGuard<'a> {
    table: &'a PendingHandshakes,
    key: IpKey,
}

impl PendingHandshakes {
    /// Takes a slot for `ip`, or `None` when it already has `cap` (0: no cap).
    pub fn acquire(&self, ip: IpAddr, cap: u32) -> Option<PendingGuard<'_>> {
        let key = IpKey::from(ip);
        let mut g = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = g.entry(key).or_insert(0);
        if cap > 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(PendingGuard { table: self, key })
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.table.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = g.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.remove(&self.key);
            }
        }
    }
}

/// Per-IP handshake rate limiter; share it behind an `Arc`.
pub struct HandshakeLimiter {
    /// `None`: unlimited.
    limited: Option<Limited>,
    per_sec: u32,
    burst: u32,
    max_keys: usize,
}

impl fmt::Debug for HandshakeLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeLimiter")
            .field("per_sec", &self.per_sec)
            .field("burst", &self.burst)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl HandshakeLimiter {
    /// `per_sec == 0`: unlimited (always allow, store nothing). `burst` and
    /// `max_keys` are raised to at least 1. The cap is enforced per shard
    /// (`max_keys / shards` each), so shedding may start a few percent
    /// before `len()` reaches `max_keys`; `len()` never exceeds it.
    pub fn new(per_sec: u32, burst: u32, max_keys: usize) -> Self {
        let burst = burst.max(1);
        let max_keys = max_keys.max(1);
        let limited = (per_sec > 0).then(|| {
            // Over 10^9/s rounds to 1ns, not 0 (which would admit anything).
            let interval = (1_000_000_000 / u64::from(per_sec)).max(1);
            let n = SHARDS.min(max_keys);
            Limited {
                base: Instant::now(),
                interval,
                tolerance: interval.saturating_mul(u64::from(burst) - 1),
                per_shard_cap: max_keys / n,
                hasher: RandomState::new(),
                shards: (0..n).map(|_| Shard(Mutex::new(HashMap::new()))).collect(),
            }
        });
        HandshakeLimiter {
            limited,
            per_sec,
            burst,
            max_keys,
        }
    }

    /// `Ok(())`, or `Err(retry_after)`: when the next handshake from this
    /// address would be admitted (round up for a `Retry-After` header).
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        match &self.limited {
            None => Ok(()),
            Some(l) => l.check(IpKey::from(ip), Instant::now()),
        }
    }

    /// [`check`](Self::check) at an explicit time (tests, replay).
    pub fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        match &self.limited {
            None => Ok(()),
            Some(l) => l.check(IpKey::from(ip), now),
        }
    }

    /// Whether [`check`](Self::check) would refuse this address now,
    /// without charging a token: lets the server answer an address that is
    /// over its rate before doing any other work for it.
    pub fn is_limited(&self, ip: IpAddr) -> bool {
        match &self.limited {
            None => false,
            Some(l) => l.is_limited(IpKey::from(ip), Instant::now()),
        }
    }

    /// Drop idle keys; the server calls this every few seconds.
    pub fn retain_recent(&self) {
        self.retain_recent_at(Instant::now());
    }

    /// [`retain_recent`](Self::retain_recent) at an explicit time.
    pub fn retain_recent_at(&self, now: Instant) {
        if let Some(l) = &self.limited {
            l.retain(now);
        }
    }

    /// Keys currently stored (locks each shard in turn; for metrics).
    pub fn len(&self) -> usize {
        self.limited
            .as_ref()
            .map_or(0, |l| l.shards.iter().map(|s| s.lock().len()).sum())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Limited {
    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, key: u64) -> &Shard {
        let h = self.hasher.hash_one(key);
        // `shards` is never empty (at least one shard is built).
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    fn check(&self, key: IpKey, now: Instant) -> Result<(), Duration> {
        let key = key.packed();
        let now = self.nanos(now);
        let mut map = self.shard(key).lock();
        let len = map.len();
        match map.entry(key) {
            Entry::Occupied(mut e) => {
                let (start, over) = self.over(*e.get(), now);
                if over > 0 {
                    return Err(Duration::from_nanos(over));
                }
                *e.get_mut() = start.saturating_add(self.interval);
                Ok(())
            }
            Entry::Vacant(e) => {
                if len >= self.per_shard_cap {
                    return Err(SHED_RETRY_AFTER);
                }
                // A new key has a full bucket: admit and charge one token.
                e.insert(now.saturating_add(self.interval));
                Ok(())
            }
        }
    }

    fn is_limited(&self, key: IpKey, now: Instant) -> bool {
        let key = key.packed();
        let now = self.nanos(now);
        let map = self.shard(key).lock();
        match map.get(&key) {
            Some(&tat) => self.over(tat, now).1 > 0,
            None => map.len() >= self.per_shard_cap,
        }
    }

    /// For a key whose next arrival is `tat`: when this arrival starts and
    /// by how many nanoseconds it is over the burst (0: admitted). Threads
    /// may pass slightly stale `now`s; `max` keeps arrivals monotonic.
    fn over(&self, tat: u64, now: u64) -> (u64, u64) {
        let start = tat.max(now);
        (start, (start - now).saturating_sub(self.tolerance))
    }

    fn retain(&self, now: Instant) {
        let now = self.nanos(now);
        for shard in self.shards.iter() {
            let mut map = shard.lock();
            // Arrival time in the past = bucket full = same as absent.
            map.retain(|_, tat| *tat > now);
            // Give back memory after a flood, without churning on every call.
            let len = map.len();
            if map.capacity() > 4 * len.max(256) {
                map.shrink_to(len * 2);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pending_cap_per_address_as_the_limiter_keys_it() {
        let p = PendingHandshakes::default();
        let held: Vec<_> = (1..=3)
            .map(|i| p.acquire(ip(&format!("2001:db8::{i}")), 3).expect("slot"))
            .collect();
        // The same /64, another interface id: the same address.
        assert!(p.acquire(ip("2001:db8::ffff:1"), 3).is_none());
        assert!(p.acquire(ip("2001:db8:0:1::1"), 3).is_some());
        let v4: Vec<_> = (0..2)
            .map(|_| p.acquire(ip("192.0.2.7"), 2).expect("slot"))
            .collect();
        assert!(p.acquire(ip("::ffff:192.0.2.7"), 2).is_none());
        drop(v4);
        assert!(p.acquire(ip("::ffff:192.0.2.7"), 2).is_some());
        drop(held);
        assert!(p.acquire(ip("2001:db8::9"), 3).is_some());
        // 0: no cap.
        let many: Vec<_> = (0..100)
            .map(|_| p.acquire(ip("198.51.100.1"), 0).expect("uncapped"))
            .collect();
        drop(many);
        assert!(p.per_ip.lock().expect("lock").is_empty());
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let l = HandshakeLimiter::new(20, 40, 1000);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..40 {
            assert_eq!(l.check_at(a, t0), Ok(()), "request {i}");
        }
        // One token per 50ms.
        assert_eq!(l.check_at(a, t0), Err(ms(50)));
        assert_eq!(l.check_at(a, t0 + ms(20)), Err(ms(30)));
        // Refusals are not charged.
        assert_eq!(l.check_at(a, t0 + ms(20)), Err(ms(30)));
    }

    #[test]
    fn peek_agrees_with_check_and_charges_nothing() {
        let l = HandshakeLimiter::new(20, 2, 1000);
        let a = ip("192.0.2.1");
        assert!(!l.is_limited(a));
        assert!(!l.is_limited(a), "peeking charged a token");
        assert!(l.check(a).is_ok());
        assert!(!l.is_limited(a));
        assert!(l.check(a).is_ok());
        assert!(l.is_limited(a));
        assert!(l.check(a).is_err());
        // The same /64 shares the bucket.
        let v6 = HandshakeLimiter::new(20, 1, 1000);
        assert!(v6.check(ip("2001:db8::1")).is_ok());
        assert!(v6.is_limited(ip("2001:db8::2")));
        assert!(!HandshakeLimiter::new(0, 1, 1).is_limited(a));
    }

    #[test]
    fn refills_over_time() {
        let l = HandshakeLimiter::new(10, 3, 1000);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(l.check_at(a, t0).is_ok());
        }
        assert!(l.check_at(a, t0).is_err());
        // One token back after 100ms, and only one.
        assert!(l.check_at(a, t0 + ms(100)).is_ok());
        assert!(l.check_at(a, t0 + ms(100)).is_err());
        // A long pause refills to the burst, not beyond.
        let t1 = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.check_at(a, t1).is_ok());
        }
        assert_eq!(l.check_at(a, t1), Err(ms(100)));
        // Steady rate at exactly the limit is admitted indefinitely.
        let t2 = t1 + Duration::from_secs(60);
        for i in 0..100 {
            assert!(l.check_at(a, t2 + ms(100 * i)).is_ok(), "tick {i}");
        }
    }

    #[test]
    fn ipv6_keyed_by_64() {
        let l = HandshakeLimiter::new(1, 2, 1000);
        let t = Instant::now();
        assert!(l.check_at(ip("2001:db8:1:2::1"), t).is_ok());
        assert!(l
            .check_at(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t)
            .is_ok());
        // Same /64, bucket now empty.
        assert!(l.check_at(ip("2001:db8:1:2:dead:beef::7"), t).is_err());
        // Neighbouring /64s have their own.
        assert!(l.check_at(ip("2001:db8:1:3::1"), t).is_ok());
        assert!(l.check_at(ip("2001:db8:1:1::1"), t).is_ok());
        assert_eq!(l.len(), 3);
    }

    #[test]
    fn ipv4_independent_and_mapped_is_ipv4() {
        let l = HandshakeLimiter::new(1, 1, 1000);
        let t = Instant::now();
        assert!(l.check_at(ip("192.0.2.1"), t).is_ok());
        assert!(l.check_at(ip("192.0.2.1"), t).is_err());
        assert!(l.check_at(ip("192.0.2.2"), t).is_ok());
        assert!(l.check_at(ip("198.51.100.1"), t).is_ok());
        // Mapped peers share the plain IPv4 bucket, not a common /64.
        assert!(l.check_at(ip("::ffff:192.0.2.1"), t).is_err());
        assert!(l.check_at(ip("::ffff:192.0.2.3"), t).is_ok());
        assert_eq!(
            IpKey::from(ip("64:ff9b::192.0.2.9")),
            IpKey::from(ip("192.0.2.9"))
        );
        assert_ne!(
            IpKey::from(ip("64:ff9b:1::192.0.2.9")),
            IpKey::from(ip("192.0.2.9"))
        );
    }

    #[test]
    fn unlimited_mode() {
        let l = HandshakeLimiter::new(0, 0, 0);
        let a = ip("192.0.2.1");
        for _ in 0..10_000 {
            assert_eq!(l.check(a), Ok(()));
        }
        l.retain_recent();
        assert_eq!(l.len(), 0);
        assert!(l.is_empty());
    }

    #[test]
    fn real_clock_smoke() {
        let l = HandshakeLimiter::new(1, 1, 10);
        let a = ip("192.0.2.1");
        assert_eq!(l.check(a), Ok(()));
        let retry = l.check(a).expect_err("second within a second");
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(1),
            "{retry:?}"
        );
    }

    #[test]
    fn retain_drops_only_idle_keys() {
        let l = HandshakeLimiter::new(10, 2, 1000);
        let t0 = Instant::now();
        assert!(l.check_at(ip("192.0.2.1"), t0).is_ok());
        assert!(l.check_at(ip("192.0.2.2"), t0).is_ok());
        assert!(l.check_at(ip("192.0.2.2"), t0).is_ok());
        // .1 refilled at +100ms, .2 at +200ms.
        l.retain_recent_at(t0 + ms(150));
        assert_eq!(l.len(), 1);
        // .2's state survived: one token back, not two.
        assert!(l.check_at(ip("192.0.2.2"), t0 + ms(150)).is_ok());
        assert!(l.check_at(ip("192.0.2.2"), t0 + ms(150)).is_err());
        l.retain_recent_at(t0 + Duration::from_secs(10));
        assert_eq!(l.len(), 0);
    }

    #[test]
    fn memory_bound_sheds_new_keys() {
        let max = 50_000;
        let l = HandshakeLimiter::new(20, 40, max);
        let t0 = Instant::now();
        let mut admitted = 0usize;
        let mut shed = 0usize;
        for i in 0..200_000u32 {
            match l.check_at(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), t0) {
                Ok(()) => admitted += 1,
                Err(d) => {
                    assert_eq!(d, SHED_RETRY_AFTER);
                    shed += 1;
                }
            }
        }
        assert!(l.len() <= max, "len {}", l.len());
        assert_eq!(admitted, l.len());
        assert_eq!(admitted + shed, 200_000);
        // The per-shard cap sheds a little early, not much.
        assert!(admitted > max * 9 / 10, "admitted {admitted}");
        // Known keys keep working while full.
        assert!(l
            .check_at(IpAddr::V4(Ipv4Addr::from(0x0a00_0000)), t0)
            .is_ok());
        // Still full within the refill time...
        l.retain_recent_at(t0 + ms(10));
        assert!(l.len() > max * 9 / 10);
        // ...and empty once every bucket has refilled.
        l.retain_recent_at(t0 + Duration::from_secs(3));
        assert_eq!(l.len(), 0);
        let t1 = t0 + Duration::from_secs(3);
        assert!(l.check_at(ip("198.51.100.1"), t1).is_ok());

        // IPv6 in distinct /64s is bounded the same way.
        for i in 0..200_000u64 {
            let addr = Ipv6Addr::from((u128::from(0x2001_0db8_0000_0000u64 + i) << 64) | 1);
            let _ = l.check_at(IpAddr::V6(addr), t1);
        }
        assert!(l.len() <= max);
        // A tiny cap still holds (fewer keys than shards).
        let tiny = HandshakeLimiter::new(20, 40, 3);
        for i in 0..100u32 {
            let _ = tiny.check_at(IpAddr::V4(Ipv4Addr::from(i)), t0);
        }
        assert!(tiny.len() <= 3 && !tiny.is_empty());
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_burst() {
        let l = Arc::new(HandshakeLimiter::new(1, 100, 1000));
        let t = Instant::now();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let l = Arc::clone(&l);
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| l.check_at(ip("192.0.2.1"), t).is_ok())
                        .count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(total, 100);
    }
}
