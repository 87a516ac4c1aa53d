//! The one place the gateway reads the wall clock for token decisions.

use std::time::{SystemTime, UNIX_EPOCH};
use wsgate_core::UnixMillis;

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How long until `at`, from `now`; zero if it is past.
pub fn until(at: UnixMillis, now: UnixMillis) -> std::time::Duration {
    std::time::Duration::from_millis(at.saturating_sub(now).max(0) as u64)
}
