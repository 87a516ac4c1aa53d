//! The life of an authenticated socket as a state machine driven by `now`.
//!
//! The gateway's per-connection task asks [`Session::next_wakeup`] when to
//! call [`Session::on_tick`], and feeds in refresh results. Nothing here
//! sleeps or reads a clock, so every deadline edge is a plain unit test.

use crate::reason::{close, Reason};
use crate::verify::Verified;
use crate::UnixMillis;

/// Lifecycle settings from `[auth]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Grace after `exp` before the socket is closed.
    pub leeway_ms: i64,
    /// How long before the deadline `auth_expiring` is sent (refresh on).
    pub expiry_warning_ms: i64,
    /// Re-authentication at least this often, when set.
    pub max_session_ms: Option<i64>,
    /// Whether in-band refresh is on (and so whether warnings are sent).
    pub refresh: bool,
}

/// What the connection task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `{"type":"auth_expiring","exp":exp}`.
    SendExpiring { exp: i64 },
    /// Send `{"type":"auth_ok","sub":..,"exp":..}`.
    SendAuthOk { sub: String, exp: i64 },
    /// Send `{"type":"auth_fail","reason":..}`.
    SendAuthFail { reason: Reason },
    /// Close the socket with this code and reason text.
    Close { code: u16, reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Closed,
}

/// One live, authenticated session.
#[derive(Debug, Clone)]
pub struct Session {
    policy: SessionPolicy,
    sub: String,
    /// The credential's own expiry (token `exp`, or a ticket's `session_exp`).
    exp_ms: UnixMillis,
    last_auth_ms: UnixMillis,
    /// Set by an admin refresh: re-authenticate before this instant.
    forced_by_ms: Option<UnixMillis>,
    warned: bool,
    phase: Phase,
}

impl Session {
    /// Starts a session authenticated at `now` whose credential expires at `exp_ms`.
    pub fn new(policy: SessionPolicy, sub: String, exp_ms: UnixMillis, now: UnixMillis) -> Self {
        Session {
            policy,
            sub,
            exp_ms,
            last_auth_ms: now,
            forced_by_ms: None,
            warned: false,
            phase: Phase::Open,
        }
    }

    pub fn sub(&self) -> &str {
        &self.sub
    }

    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The instant the socket is closed 4401 unless re-authenticated.
    pub fn deadline(&self) -> UnixMillis {
        let mut d = self.exp_ms.saturating_add(self.policy.leeway_ms);
        if let Some(max) = self.policy.max_session_ms {
            d = d.min(self.last_auth_ms.saturating_add(max));
        }
        if let Some(f) = self.forced_by_ms {
            d = d.min(f);
        }
        d
    }

    /// The expiry clients are told (Unix seconds): the credential's `exp`,
    /// or earlier when max_session or an admin refresh cuts it short.
    pub fn exp_secs(&self) -> i64 {
        let cut = self.deadline();
        let exp = if cut < self.exp_ms.saturating_add(self.policy.leeway_ms) {
            cut
        } else {
            self.exp_ms
        };
        exp.div_euclid(1000)
    }

    fn warning_at(&self) -> Option<UnixMillis> {
        if !self.policy.refresh || self.warned {
            return None;
        }
        Some(
            self.deadline()
                .saturating_sub(self.policy.expiry_warning_ms),
        )
    }

    /// When `on_tick` must next be called; `None` once closed.
    pub fn next_wakeup(&self) -> Option<UnixMillis> {
        if self.is_closed() {
            return None;
        }
        Some(match self.warning_at() {
            Some(w) => w.min(self.deadline()),
            None => self.deadline(),
        })
    }

    /// Advances time: the warning, then the close at the deadline.
    pub fn on_tick(&mut self, now: UnixMillis) -> Option<Action> {
        if self.is_closed() {
            return None;
        }
        if now >= self.deadline() {
            self.phase = Phase::Closed;
            return Some(Action::Close {
                code: close::EXPIRED,
                reason: "token expired",
            });
        }
        match self.warning_at() {
            Some(w) if now >= w => {
                self.warned = true;
                Some(Action::SendExpiring {
                    exp: self.exp_secs(),
                })
            }
            _ => None,
        }
    }

    /// An in-band `auth` message was verified (or not) at `now`.
    /// Success needs the same `sub`; failure changes nothing.
    pub fn on_refresh(&mut self, result: Result<&Verified, Reason>, now: UnixMillis) -> Action {
        if self.is_closed() {
            return Action::SendAuthFail {
                reason: Reason::Expired,
            };
        }
        if !self.policy.refresh {
            return Action::SendAuthFail {
                reason: Reason::BadUpgrade,
            };
        }
        match result {
            Ok(v) if v.sub == self.sub => {
                self.exp_ms = v.exp_ms;
                self.last_auth_ms = now;
                self.forced_by_ms = None;
                // A fresh token that still ends inside the warning window
                // is not warned about again at once: `auth_ok` carries its
                // exp, and re-warning would invite a refresh loop.
                self.warned = self.deadline() <= now.saturating_add(self.policy.expiry_warning_ms);
                Action::SendAuthOk {
                    sub: self.sub.clone(),
                    exp: self.exp_secs(),
                }
            }
            // A different subject can never take over a socket.
            Ok(_) => Action::SendAuthFail {
                reason: Reason::BadSignature,
            },
            Err(reason) => Action::SendAuthFail { reason },
        }
    }

    /// Admin refresh: the client must re-authenticate within the warning window.
    pub fn force_reauth(&mut self, now: UnixMillis) -> Option<Action> {
        if self.is_closed() {
            return None;
        }
        self.forced_by_ms = Some(now.saturating_add(self.policy.expiry_warning_ms));
        self.warned = true;
        Some(Action::SendExpiring {
            exp: self.exp_secs(),
        })
    }

    /// The session is over for another cause (revocation, drain, peer close).
    pub fn close(&mut self) {
        self.phase = Phase::Closed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;

    const T0: i64 = 1_800_000_000_000;

    fn policy() -> SessionPolicy {
        SessionPolicy {
            leeway_ms: 5_000,
            expiry_warning_ms: 30_000,
            max_session_ms: None,
            refresh: true,
        }
    }

    fn verified(sub: &str, exp_ms: i64) -> Verified {
        Verified {
            sub: sub.into(),
            exp_ms,
            iat_ms: None,
            jti: None,
            sid: None,
            alg: Algorithm::HS256,
            claims: Default::default(),
        }
    }

    #[test]
    fn closes_4401_at_exp_plus_leeway() {
        let mut s = Session::new(
            SessionPolicy {
                refresh: false,
                ..policy()
            },
            "a".into(),
            T0 + 60_000,
            T0,
        );
        assert_eq!(s.next_wakeup(), Some(T0 + 65_000));
        assert_eq!(s.on_tick(T0 + 64_999), None);
        assert_eq!(
            s.on_tick(T0 + 65_000),
            Some(Action::Close {
                code: 4401,
                reason: "token expired"
            })
        );
        assert!(s.is_closed());
        assert_eq!(s.next_wakeup(), None);
        assert_eq!(s.on_tick(T0 + 70_000), None);
    }

    #[test]
    fn warning_then_refresh_moves_deadline() {
        let mut s = Session::new(policy(), "a".into(), T0 + 60_000, T0);
        assert_eq!(s.next_wakeup(), Some(T0 + 35_000));
        assert_eq!(s.on_tick(T0 + 34_999), None);
        assert_eq!(
            s.on_tick(T0 + 35_000),
            Some(Action::SendExpiring {
                exp: (T0 + 60_000) / 1000
            })
        );
        assert_eq!(s.next_wakeup(), Some(T0 + 65_000));
        let a = s.on_refresh(Ok(&verified("a", T0 + 600_000)), T0 + 40_000);
        assert_eq!(
            a,
            Action::SendAuthOk {
                sub: "a".into(),
                exp: (T0 + 600_000) / 1000
            }
        );
        assert_eq!(s.deadline(), T0 + 605_000);
        assert_eq!(s.next_wakeup(), Some(T0 + 575_000));
    }

    #[test]
    fn a_short_refresh_is_not_warned_again_at_once() {
        let mut s = Session::new(policy(), "a".into(), T0 + 60_000, T0);
        assert!(matches!(
            s.on_tick(T0 + 35_000),
            Some(Action::SendExpiring { .. })
        ));
        // The new token ends 20 s later: inside the 30 s warning window.
        let a = s.on_refresh(Ok(&verified("a", T0 + 60_000)), T0 + 40_000);
        assert!(matches!(a, Action::SendAuthOk { .. }));
        assert_eq!(
            s.next_wakeup(),
            Some(T0 + 65_000),
            "no immediate re-warning"
        );
        assert_eq!(s.on_tick(T0 + 40_001), None);
        // A long refresh arms the warning again.
        s.on_refresh(Ok(&verified("a", T0 + 600_000)), T0 + 41_000);
        assert_eq!(s.next_wakeup(), Some(T0 + 575_000));
    }

    #[test]
    fn refresh_with_other_sub_or_error_changes_nothing() {
        let mut s = Session::new(policy(), "a".into(), T0 + 60_000, T0);
        let before = s.deadline();
        assert!(matches!(
            s.on_refresh(Ok(&verified("b", T0 + 600_000)), T0),
            Action::SendAuthFail { .. }
        ));
        assert_eq!(
            s.on_refresh(Err(Reason::Expired), T0),
            Action::SendAuthFail {
                reason: Reason::Expired
            }
        );
        assert_eq!(s.deadline(), before);
    }

    #[test]
    fn max_session_caps_a_long_token() {
        let p = SessionPolicy {
            max_session_ms: Some(1_800_000),
            ..policy()
        };
        let mut s = Session::new(p, "a".into(), T0 + 86_400_000, T0);
        assert_eq!(s.deadline(), T0 + 1_800_000);
        assert_eq!(s.exp_secs(), (T0 + 1_800_000) / 1000);
        s.on_refresh(Ok(&verified("a", T0 + 86_400_000)), T0 + 1_000_000);
        assert_eq!(s.deadline(), T0 + 2_800_000);
    }

    #[test]
    fn forced_reauth_gives_warning_window() {
        let mut s = Session::new(policy(), "a".into(), T0 + 3_600_000, T0);
        assert!(matches!(
            s.force_reauth(T0 + 10_000),
            Some(Action::SendExpiring { .. })
        ));
        assert_eq!(s.deadline(), T0 + 40_000);
        assert_eq!(s.on_tick(T0 + 39_999), None);
        assert!(matches!(
            s.on_tick(T0 + 40_000),
            Some(Action::Close { code: 4401, .. })
        ));
    }

    #[test]
    fn already_past_warning_sends_it_at_once() {
        let mut s = Session::new(policy(), "a".into(), T0 + 10_000, T0);
        assert_eq!(s.next_wakeup(), Some(T0 - 15_000));
        assert!(matches!(s.on_tick(T0), Some(Action::SendExpiring { .. })));
        assert_eq!(s.next_wakeup(), Some(T0 + 15_000));
    }
}
