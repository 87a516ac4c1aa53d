//! Kernel-side drop of addresses that keep flooding after their 429s
//! (`limits.block_after_refusals`, off by default).
//!
//! A refused upgrade still costs the gateway an accept, a write and a close
//! (~10 µs of kernel time each on the benchmark machine): a client that
//! ignores `Retry-After` and hammers at tens of thousands per second eats a
//! core that way however cheap the 429 itself is. Once an address has been
//! refused `block_after_refusals` times within one second, its SYNs are
//! dropped by a classic BPF socket filter on the listening socket, for
//! `block_duration`: the kernel discards them before a socket exists, and
//! the peer's TCP backs off on its own (1 s, 3 s, ...).
//!
//! Bounded: at most [`MAX_TRACKED`] addresses counted per second and
//! [`MAX_BLOCKED`] blocked at once (past that, the 429s simply go on). Keys
//! are the limiter's: an IPv4 address or an IPv6 /64. Only direct peers are
//! ever blocked: never a trusted proxy, and never on a PROXY-protocol
//! listener, where every packet comes from the balancer.
//!
//! Sockets accepted while a filter is attached inherit it (the kernel copies
//! it on accept), which costs established connections of that time one
//! short filter run per packet; they never match it, since their peer was
//! not blocked when they were accepted.

use crate::limiter::IpKey;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Addresses blocked at once at most: the filter runs two instructions per
/// IPv4 entry and five per IPv6 /64 on every packet of every socket that
/// carries it.
pub const MAX_BLOCKED: usize = 256;
/// Distinct addresses whose refusals are counted within one second.
pub const MAX_TRACKED: usize = 4096;

/// What [`Blocklist::refused`] and [`Blocklist::expire`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    None,
    /// The blocked set changed: attach this program (or detach, if `None`).
    Filter(Option<Vec<Ins>>),
}

struct Inner {
    /// Refusals in the current second, per key.
    counts: HashMap<IpKey, u32>,
    /// Start of the current counting second.
    window: Option<Instant>,
    /// Blocked keys and when each block ends.
    blocked: HashMap<IpKey, Instant>,
}

/// The policy: counts refusals, decides blocks and their ends, and builds
/// the filter for the current set. Driven by an explicit `now`.
pub struct Blocklist {
    threshold: u32,
    duration: Duration,
    inner: Mutex<Inner>,
    /// The listening sockets the filter goes on (duplicated descriptors of
    /// the same sockets).
    listeners: Mutex<Vec<socket2::Socket>>,
}

impl Blocklist {
    /// `threshold` 0: never blocks.
    pub fn new(threshold: u32, duration: Duration) -> Self {
        Blocklist {
            threshold,
            duration,
            inner: Mutex::new(Inner {
                counts: HashMap::new(),
                window: None,
                blocked: HashMap::new(),
            }),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Puts future filters on `listener` too.
    pub fn watch(&self, listener: &tokio::net::TcpListener) -> std::io::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let dup = socket2::SockRef::from(listener).try_clone()?;
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(dup);
        Ok(())
    }

    /// Attaches (or detaches) the filter a [`Change`] carries.
    pub fn apply(&self, change: Change) -> std::io::Result<()> {
        let Change::Filter(program) = change else {
            return Ok(());
        };
        let program: Option<Vec<socket2::SockFilter>> =
            program.map(|p| p.into_iter().map(Into::into).collect());
        for s in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            match &program {
                Some(p) => s.attach_filter(p)?,
                None => s.detach_filter()?,
            }
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.threshold > 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain maps: a panic elsewhere cannot leave them half-updated.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocked addresses now.
    pub fn len(&self) -> usize {
        self.lock().blocked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An upgrade from `ip` was refused for its rate. Returns the new filter
    /// when this refusal makes `ip` cross the threshold.
    pub fn refused(&self, ip: IpAddr, now: Instant) -> Change {
        if !self.enabled() {
            return Change::None;
        }
        let key = IpKey::from(ip);
        let mut g = self.lock();
        if g.window
            .is_none_or(|w| now.saturating_duration_since(w) >= Duration::from_secs(1))
        {
            g.window = Some(now);
            g.counts.clear();
        }
        if g.blocked.contains_key(&key) {
            // Connections accepted just before the filter went on.
            return Change::None;
        }
        let full = g.counts.len() >= MAX_TRACKED;
        let n = match g.counts.get_mut(&key) {
            Some(n) => {
                *n += 1;
                *n
            }
            None if full => return Change::None,
            None => {
                g.counts.insert(key, 1);
                1
            }
        };
        if n < self.threshold || g.blocked.len() >= MAX_BLOCKED {
            return Change::None;
        }
        g.counts.remove(&key);
        g.blocked.insert(key, now + self.duration);
        Change::Filter(Some(program(g.blocked.keys().copied())))
    }

    /// Ends the blocks that are due; returns the filter for what is left.
    pub fn expire(&self, now: Instant) -> (Vec<IpKey>, Change) {
        let mut g = self.lock();
        let ended: Vec<IpKey> = g
            .blocked
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(k, _)| *k)
            .collect();
        if ended.is_empty() {
            return (ended, Change::None);
        }
        for k in &ended {
            g.blocked.remove(k);
        }
        let change = if g.blocked.is_empty() {
            Change::Filter(None)
        } else {
            Change::Filter(Some(program(g.blocked.keys().copied())))
        };
        (ended, change)
    }
}

// Classic BPF opcodes (linux/filter.h); socket2 takes raw instructions.
const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const RSH_K: u16 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const RET_K: u16 = 0x06; // BPF_RET | BPF_K
/// SKF_NET_OFF: loads relative to the IP header (a TCP socket's filter
/// sees the segment from its TCP header on).
const NET: u32 = (-0x10_0000i32) as u32;
const ACCEPT: u32 = u32::MAX;
const DROP: u32 = 0;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ins {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl From<Ins> for socket2::SockFilter {
    fn from(i: Ins) -> Self {
        socket2::SockFilter::new(i.code, i.jt, i.jf, i.k)
    }
}

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> Ins {
    Ins { code, jt, jf, k }
}

/// A filter that drops packets from the given keys and accepts the rest.
/// Only short forward jumps per entry (cBPF's conditional jumps reach 255
/// instructions), one long `ja` to the IPv4 part.
pub fn program(keys: impl Iterator<Item = IpKey>) -> Vec<Ins> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for k in keys {
        match k {
            IpKey::V4(a) => v4.push(a),
            IpKey::V6Prefix64(p) => v6.push(p),
        }
    }
    v4.sort_unstable();
    v6.sort_unstable();
    let mut p = vec![
        ins(LD_B_ABS, 0, 0, NET), // 0: version and IHL
        ins(RSH_K, 0, 0, 4),      // 1: version
        ins(JEQ_K, 0, 1, 4),      // 2: IPv4 -> 3, else -> 4
        ins(JA, 0, 0, 0),         // 3: to the IPv4 part (k set below)
        ins(JEQ_K, 1, 0, 6),      // 4: IPv6 -> 6
        ins(RET_K, 0, 0, ACCEPT), // 5: neither
    ];
    for prefix in v6 {
        p.extend([
            ins(LD_W_ABS, 0, 0, NET + 8), // source address, bits 0-31
            ins(JEQ_K, 0, 3, (prefix >> 32) as u32),
            ins(LD_W_ABS, 0, 0, NET + 12), // bits 32-63
            ins(JEQ_K, 0, 1, prefix as u32),
            ins(RET_K, 0, 0, DROP),
        ]);
    }
    p.push(ins(RET_K, 0, 0, ACCEPT));
    let v4_start = p.len();
    p[3] = ins(JA, 0, 0, (v4_start - 4) as u32);
    p.push(ins(LD_W_ABS, 0, 0, NET + 12)); // IPv4 source address
    for a in v4 {
        p.extend([ins(JEQ_K, 0, 1, a), ins(RET_K, 0, 0, DROP)]);
    }
    p.push(ins(RET_K, 0, 0, ACCEPT));
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse::<Ipv4Addr>().expect("v4"))
    }

    #[test]
    fn off_never_blocks() {
        let b = Blocklist::new(0, Duration::from_secs(60));
        let t = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(b.refused(v4("10.0.0.1"), t), Change::None);
        }
        assert!(b.is_empty());
    }

    #[test]
    fn blocks_at_the_threshold_within_one_second_and_expires() {
        let b = Blocklist::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        // Two refusals a second never cross 3 per second.
        for s in 0..5 {
            let t = t0 + Duration::from_secs(s);
            assert_eq!(b.refused(v4("10.0.0.1"), t), Change::None);
            assert_eq!(b.refused(v4("10.0.0.1"), t), Change::None);
        }
        let t = t0 + Duration::from_secs(6);
        assert_eq!(b.refused(v4("10.0.0.1"), t), Change::None);
        assert_eq!(b.refused(v4("10.0.0.1"), t), Change::None);
        let Change::Filter(Some(p)) = b.refused(v4("10.0.0.1"), t) else {
            panic!("third refusal in a second blocks");
        };
        assert!(p.iter().any(|i| *i == ins(JEQ_K, 0, 1, 0x0a00_0001)));
        assert_eq!(b.len(), 1);
        // Others are counted apart.
        assert_eq!(b.refused(v4("10.0.0.2"), t), Change::None);
        // Not yet due.
        let (ended, c) = b.expire(t + Duration::from_secs(9));
        assert!(ended.is_empty() && c == Change::None);
        let (ended, c) = b.expire(t + Duration::from_secs(10));
        assert_eq!(ended, vec![IpKey::V4(0x0a00_0001)]);
        assert_eq!(c, Change::Filter(None));
        assert!(b.is_empty());
    }

    #[test]
    fn bounded_blocked_and_tracked() {
        let b = Blocklist::new(1, Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..(MAX_BLOCKED as u32 + 50) {
            let _ = b.refused(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)), t);
        }
        assert_eq!(b.len(), MAX_BLOCKED);
        let b = Blocklist::new(2, Duration::from_secs(60));
        for i in 0..(MAX_TRACKED as u32 + 10) {
            let _ = b.refused(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i)), t);
        }
        // The untracked ones cannot cross: their second refusal is ignored.
        let late = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + MAX_TRACKED as u32 + 5));
        assert_eq!(b.refused(late, t), Change::None);
        assert!(b.is_empty());
        // A tracked one still can.
        assert!(matches!(
            b.refused(IpAddr::V4(Ipv4Addr::from(0x0b00_0000)), t),
            Change::Filter(Some(_))
        ));
    }

    #[test]
    fn ipv6_by_prefix_and_mapped_ipv4_as_ipv4() {
        let b = Blocklist::new(2, Duration::from_secs(60));
        let t = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse::<Ipv6Addr>().expect("v6").into();
        let same64: IpAddr = "2001:db8:1:2:ffff::9"
            .parse::<Ipv6Addr>()
            .expect("v6")
            .into();
        assert_eq!(b.refused(a, t), Change::None);
        let Change::Filter(Some(p)) = b.refused(same64, t) else {
            panic!("one /64");
        };
        assert!(p.iter().any(|i| *i == ins(JEQ_K, 0, 3, 0x2001_0db8)));
        assert!(p.iter().any(|i| *i == ins(JEQ_K, 0, 1, 0x0001_0002)));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse::<Ipv6Addr>().expect("v6").into();
        assert_eq!(b.refused(mapped, t), Change::None);
        let Change::Filter(Some(p)) = b.refused(v4("10.0.0.7"), t) else {
            panic!("mapped counts as IPv4");
        };
        assert!(p.iter().any(|i| *i == ins(JEQ_K, 0, 1, 0x0a00_0007)));
    }

    /// The jump layout: every conditional jump lands inside the program and
    /// the IPv4 part is where the `ja` says, whatever the sizes.
    #[test]
    fn program_jumps_stay_in_bounds() {
        let keys: Vec<IpKey> = (0..MAX_BLOCKED as u64)
            .map(|i| {
                if i % 2 == 0 {
                    IpKey::V4(i as u32)
                } else {
                    IpKey::V6Prefix64(i << 40)
                }
            })
            .collect();
        for n in [0, 1, 2, keys.len()] {
            let p = program(keys[..n].iter().copied());
            assert!(p.len() < 4096);
            for (i, f) in p.iter().enumerate() {
                if f.code == JEQ_K {
                    assert!(i + 1 + usize::from(f.jt.max(f.jf)) < p.len());
                }
                if f.code == JA {
                    let to = i + 1 + f.k as usize;
                    assert_eq!(
                        p[to],
                        ins(LD_W_ABS, 0, 0, NET + 12),
                        "ja lands on the IPv4 load"
                    );
                }
            }
            assert_eq!(p.last(), Some(&ins(RET_K, 0, 0, ACCEPT)));
        }
    }
}
