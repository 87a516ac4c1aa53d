//! When to look for changed files: on SIGHUP at once, else every 5 s.
//! Shared by the TLS certificate and the key reloaders.

use std::time::Duration;

pub struct Trigger {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
    tick: tokio::time::Interval,
}

impl Trigger {
    /// Hooks SIGHUP now: created before the gateway says it is listening,
    /// an early SIGHUP cannot take the default action (terminate).
    pub fn hook() -> Self {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Trigger {
            #[cfg(unix)]
            hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
            tick,
        }
    }

    /// Waits for the next check; `true` when forced by SIGHUP (reload even
    /// if nothing looks changed).
    pub async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(h) = self.hup.as_mut() {
            return tokio::select! {
                _ = h.recv() => true,
                _ = self.tick.tick() => false,
            };
        }
        self.tick.tick().await;
        false
    }
}
