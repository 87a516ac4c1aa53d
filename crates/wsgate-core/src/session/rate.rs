//! Per-socket message rate: `per_sec` with a burst of twice that (docs/reference.md).

use super::MonoMillis;

/// A token bucket over the monotonic clock. Whole milliseconds lose
/// nothing: each refill is measured from the last reading, so truncation
/// does not add up. The rate is passed in, not kept: every live socket
/// holds one of these.
#[derive(Debug, Clone, Copy)]
pub struct MessageRate {
    tokens: f64,
    /// The last frame (or the start).
    last: MonoMillis,
}

impl MessageRate {
    /// A full bucket at `now` (the config guarantees a rate above 0).
    pub fn new(per_sec: u32, now: MonoMillis) -> Self {
        MessageRate {
            tokens: f64::from(per_sec) * 2.0,
            last: now,
        }
    }

    /// When the last frame came (or the bucket was made).
    pub fn last(&self) -> MonoMillis {
        self.last
    }

    /// Takes one message's token at `per_sec` (as made); `false` when the
    /// rate is exceeded.
    #[inline]
    pub fn allow(&mut self, per_sec: u32, now: MonoMillis) -> bool {
        let per_sec = f64::from(per_sec);
        let elapsed = now.saturating_sub(self.last) as f64 / 1000.0;
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * per_sec).min(per_sec * 2.0);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 10;

    #[test]
    fn burst_of_twice_the_rate_then_refill() {
        let mut r = MessageRate::new(RATE, 1_000);
        for _ in 0..20 {
            assert!(r.allow(RATE, 1_000));
        }
        assert!(!r.allow(RATE, 1_000), "burst spent");
        assert!(!r.allow(RATE, 1_099), "under one token after 99 ms");
        assert!(r.allow(RATE, 1_100), "one token per 100 ms");
        // A long pause refills to the burst, no more.
        for _ in 0..20 {
            assert!(r.allow(RATE, 60_000));
        }
        assert!(!r.allow(RATE, 60_000));
    }

    #[test]
    fn steady_rate_at_the_limit_never_trips() {
        // One message every 100 ms at 10/s, read in whole ms: truncation
        // must not drain the bucket over time.
        let mut r = MessageRate::new(RATE, 0);
        for i in 0..100_000u64 {
            assert!(r.allow(RATE, i * 100 + (i % 3)), "message {i}");
        }
    }
}
