//! The session's timers: one deadline per kind, on the monotonic clock.

use super::MonoMillis;

/// What a session waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The next keep-alive round: idle check, upstream silence, pings.
    Ping = 0,
    /// Give back the buffers a large message grew, once the socket is quiet.
    Recycle = 1,
    /// Send `auth_expiring` (in-band refresh on).
    Warning = 2,
    /// Close `4401` unless re-authenticated.
    Deadline = 3,
}

/// When each [`Timer`] fires, if it is set. Kept as plain numbers with
/// [`UNSET`] for none (half the size of `Option`s: every live socket holds
/// one); read and written as `Option`s.
#[derive(Debug, Clone, Copy)]
pub(super) struct TimerTable {
    at: [MonoMillis; 4],
}

/// No deadline: past the end of any clock this table is used with.
const UNSET: MonoMillis = MonoMillis::MAX;

impl Default for TimerTable {
    fn default() -> Self {
        TimerTable { at: [UNSET; 4] }
    }
}

impl TimerTable {
    /// Sets `t` to fire at `at` (capped just short of [`UNSET`]).
    pub fn set(&mut self, t: Timer, at: MonoMillis) {
        self.at[t as usize] = at.min(UNSET - 1);
    }

    pub fn stop(&mut self, t: Timer) {
        self.at[t as usize] = UNSET;
    }

    #[inline]
    pub fn get(&self, t: Timer) -> Option<MonoMillis> {
        Some(self.at[t as usize]).filter(|&at| at != UNSET)
    }

    /// Whether `t` is set and due at `now`.
    pub fn expired(&self, t: Timer, now: MonoMillis) -> bool {
        self.get(t).is_some_and(|at| at <= now)
    }

    /// The earliest deadline of all.
    #[inline]
    pub fn next(&self) -> Option<MonoMillis> {
        Some(self.at.iter().copied().fold(UNSET, MonoMillis::min)).filter(|&at| at != UNSET)
    }

    pub fn clear(&mut self) {
        *self = TimerTable::default();
    }
}
