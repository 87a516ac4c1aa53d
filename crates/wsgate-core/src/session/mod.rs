//! The life of an authenticated socket as one state machine driven by `now`.
//!
//! Shaped like quinn-proto's `Connection`: the connection task feeds in
//! what happened ([`Session::handle`]; for every frame the cheap
//! [`Session::on_client_frame`] / [`Session::on_upstream_frame`]; an
//! in-band refresh, answered at once, [`Session::refresh`]), asks
//! when to wake ([`Session::poll_timeout`]) and then calls
//! [`Session::handle_timeout`], and after each call takes what to do from
//! [`Session::poll`] until `None`. Every decision about a live socket —
//! deadline, warning, refresh, admin refresh, revocation, drain, idle,
//! pings, upstream silence, message rate, egress, buffer recycling, and
//! how each close looks ([`CloseReason`]) — is taken here; the task only
//! does the I/O. Nothing here sleeps, reads a clock or touches a socket,
//! so every edge is a plain unit test.
//!
//! Two clocks ([`Now`]): a token's deadline is a wall-clock instant (`exp`
//! is Unix time); idle, pings, rate and recycling run on a monotonic clock
//! in whole milliseconds ([`MonoMillis`]), so a step of the wall clock
//! never idles out every socket at once. The timer table holds monotonic
//! deadlines only; the token's are converted from the wall clock at each
//! wake-up, where it is read again (a step is noticed by the next wake-up,
//! a ping interval at most).

mod rate;
#[cfg(test)]
mod tests;
mod timer;

pub use rate::MessageRate;

use crate::close_reason::{CloseReason, WireError};
use crate::reason::Reason;
use crate::verify::Verified;
use crate::UnixMillis;
use timer::{Timer, TimerTable};

/// Milliseconds on a monotonic clock, from an epoch the caller picks (the
/// gateway: the first reading in the process). It never goes back.
pub type MonoMillis = u64;

/// The two readings a session decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono: MonoMillis,
    pub wall: UnixMillis,
}

/// How long a socket that carried a large message must be quiet before
/// its buffers are given back (see [`Action::Recycle`]).
pub const RECYCLE_AFTER_MS: MonoMillis = 1_000;

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

/// Keep-alive and traffic settings of a live socket, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketLimits {
    pub idle_timeout_ms: MonoMillis,
    pub ping_interval_ms: MonoMillis,
    /// Above 0 (the config checks).
    pub messages_per_sec: u32,
    /// Close sockets whose user is past the egress alert threshold.
    pub egress_alert_close: bool,
    /// The session relays to an upstream WebSocket, which is pinged and
    /// watched for silence too.
    pub upstream: bool,
}

/// The result of adding a socket's egress to its user's minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressVerdict {
    /// Under the threshold (or monitoring off).
    Ok,
    /// This addition crossed it: alert once for this user and minute.
    Alert { bytes: u64 },
    /// Already over it this minute.
    Over,
}

/// What happened to the session, as the connection task saw it.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// Admin refresh: re-authenticate within the warning window.
    Reauth,
    /// An admin revocation matched the session.
    Revoke,
    /// The gateway is shutting down.
    Drain,
    /// A message over the WebSocket's base buffer crossed a socket.
    LargeMessage,
    /// The outcome of the last [`Action::Recycle`]: `false` when it had to
    /// wait (something queued, a frame half read).
    Recycled { done: bool },
    /// A flush of the socket's egress into its user's minute.
    Egress(EgressVerdict),
    /// A client message the upstream's schema does not accept.
    SchemaRejected,
    /// The client closed with this code (`close::NO_STATUS`: none).
    ClientClosed { code: u16 },
    /// Reading or writing the client failed (`Lost`: it is gone).
    ClientError(WireError),
    /// The client did not take what it was sent in time.
    ClientSlow,
    /// The upstream closed with this code (`close::NO_STATUS`: none).
    UpstreamClosed { code: u16 },
    /// Reading or writing the upstream failed (`Lost`: it is gone).
    UpstreamError(WireError),
    /// The upstream did not take what it was sent in time.
    UpstreamSlow,
}

/// A JSON message the gateway sends the client (docs/reference.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// `{"type":"auth_expiring","exp":exp}`.
    Expiring { exp: i64 },
    /// `{"type":"auth_ok","sub":..,"exp":exp}`.
    AuthOk { exp: i64 },
    /// `{"type":"auth_fail","reason":..}`.
    AuthFail { reason: Reason },
}

/// What the connection task must do, in the order the session decided.
/// A [`Notice`] that answers a refresh is returned by [`Session::refresh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Queue a ping for the upstream.
    PingUpstream,
    /// Queue a ping for the client.
    PingClient,
    /// Replace each socket's WebSocket with a fresh one over the same
    /// stream if nothing would be lost; report with [`Event::Recycled`].
    Recycle,
    /// Queue this message for the client (`auth_expiring`).
    Notify(Notice),
    /// The user crossed the egress alert threshold: log and count it.
    EgressAlert { bytes: u64 },
    /// End the session (always the last action).
    Close(CloseReason),
}

// Actions waiting in `Session::poll`, one bit each, polled in this order.
const PING_UPSTREAM: u8 = 1;
const PING_CLIENT: u8 = 1 << 1;
const RECYCLE: u8 = 1 << 2;
const NOTIFY: u8 = 1 << 3;
const EGRESS_ALERT: u8 = 1 << 4;
const CLOSE: u8 = 1 << 5;

/// One live, authenticated session.
#[derive(Debug, Clone)]
pub struct Session {
    policy: SessionPolicy,
    limits: SocketLimits,
    sub: String,
    /// The credential's own expiry (token `exp`, or a ticket's `session_exp`).
    exp_ms: UnixMillis,
    last_auth_ms: UnixMillis,
    /// Set by an admin refresh: re-authenticate before this instant
    /// (`UnixMillis::MAX`: not set; an `Option` would cost every socket 8 bytes).
    forced_by_ms: UnixMillis,
    warned: bool,
    timers: TimerTable,
    /// The message rate; its last reading is the client's last frame.
    rate: MessageRate,
    /// Keep-alive rounds since the upstream last sent anything (a message,
    /// a pong). Counted, not timed: no clock read per relayed message.
    upstream_quiet: u32,
    /// Set once: why the session ended.
    closed: Option<CloseReason>,
    actions: u8,
    alert_bytes: u64,
}

impl Session {
    /// Starts a session authenticated at `now` whose credential expires at `exp_ms`.
    pub fn new(
        policy: SessionPolicy,
        limits: SocketLimits,
        sub: String,
        exp_ms: UnixMillis,
        now: Now,
    ) -> Self {
        let mut s = Session {
            policy,
            limits,
            sub,
            exp_ms,
            last_auth_ms: now.wall,
            forced_by_ms: UnixMillis::MAX,
            warned: false,
            timers: TimerTable::default(),
            rate: MessageRate::new(limits.messages_per_sec, now.mono),
            upstream_quiet: 0,
            closed: None,
            actions: 0,
            alert_bytes: 0,
        };
        s.timers.set(
            Timer::Ping,
            now.mono.saturating_add(limits.ping_interval_ms),
        );
        s.arm_token_timers(now);
        s
    }

    pub fn sub(&self) -> &str {
        &self.sub
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Why the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed
    }

    /// The instant the socket is closed 4401 unless re-authenticated.
    pub fn deadline(&self) -> UnixMillis {
        let mut d = self.exp_ms.saturating_add(self.policy.leeway_ms);
        if let Some(max) = self.policy.max_session_ms {
            d = d.min(self.last_auth_ms.saturating_add(max));
        }
        d.min(self.forced_by_ms)
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

    /// Whether buffer recycling is already scheduled (large messages seen
    /// meanwhile need no [`Event::LargeMessage`]).
    #[inline]
    pub fn recycle_armed(&self) -> bool {
        self.timers.get(Timer::Recycle).is_some()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called
    /// (perhaps already past); `None` once closed.
    #[inline]
    pub fn poll_timeout(&self) -> Option<MonoMillis> {
        if self.is_closed() {
            return None;
        }
        self.timers.next()
    }

    /// A frame from the client other than a close, at `now`: it is alive,
    /// and the frame takes a token of the message rate. `false` when the
    /// rate is exceeded: the session is closed (4429). The relay's per-frame
    /// call: no action is built unless it closes.
    #[inline]
    pub fn on_client_frame(&mut self, now: MonoMillis) -> bool {
        if self.rate.allow(self.limits.messages_per_sec, now) {
            return true;
        }
        self.close(CloseReason::RateLimited);
        false
    }

    /// A frame from the upstream (a message, a ping, a pong): it is alive.
    #[inline]
    pub fn on_upstream_frame(&mut self) {
        self.upstream_quiet = 0;
    }

    /// Fires what is due at `now`: the keep-alive round (idle close,
    /// upstream silence, pings), buffer recycling, then the token's warning
    /// and deadline by the wall clock, read again on every wake-up.
    /// `reading_upstream`: whether the upstream could be read since the last
    /// round (the client's queue had room); rounds where it could not do not
    /// count as upstream silence.
    pub fn handle_timeout(&mut self, now: Now, reading_upstream: bool) {
        if self.is_closed() {
            return;
        }
        if self.timers.expired(Timer::Ping, now.mono) {
            self.keepalive(now.mono, reading_upstream);
            if self.is_closed() {
                return;
            }
        }
        if self.timers.expired(Timer::Recycle, now.mono) {
            let quiet_at = self.rate.last().saturating_add(RECYCLE_AFTER_MS);
            if now.mono < quiet_at {
                // Still talking: wait for a quiet second.
                self.timers.set(Timer::Recycle, quiet_at);
            } else {
                self.timers.stop(Timer::Recycle);
                self.actions |= RECYCLE;
            }
        }
        if now.wall >= self.deadline() {
            self.close(CloseReason::Expired);
            return;
        }
        if self.warning_at().is_some_and(|w| now.wall >= w) {
            self.warn_expiring();
        }
        self.arm_token_timers(now);
    }

    /// An in-band `auth` message was verified at `now` (or refused for this
    /// reason): the answer to send. Success needs the same `sub` and moves
    /// the deadline; failure changes nothing. Answered at once, not through
    /// [`poll`](Self::poll): on `auth_ok` the caller adopts the new
    /// credential's identity before anything else happens.
    pub fn refresh(&mut self, result: Result<&Verified, Reason>, now: Now) -> Notice {
        if self.is_closed() {
            return Notice::AuthFail {
                reason: Reason::Expired,
            };
        }
        if !self.policy.refresh {
            return Notice::AuthFail {
                reason: Reason::BadUpgrade,
            };
        }
        match result {
            Ok(v) if v.sub == self.sub => {
                self.exp_ms = v.exp_ms;
                self.last_auth_ms = now.wall;
                self.forced_by_ms = UnixMillis::MAX;
                // A fresh token that still ends inside the warning window
                // is not warned about again at once: `auth_ok` carries its
                // exp, and re-warning would invite a refresh loop.
                self.warned =
                    self.deadline() <= now.wall.saturating_add(self.policy.expiry_warning_ms);
                self.arm_token_timers(now);
                Notice::AuthOk {
                    exp: self.exp_secs(),
                }
            }
            // A different subject can never take over a socket.
            Ok(_) => Notice::AuthFail {
                reason: Reason::BadSignature,
            },
            Err(reason) => Notice::AuthFail { reason },
        }
    }

    /// Feeds one event in; its consequences come out of [`poll`](Self::poll).
    pub fn handle(&mut self, ev: Event, now: Now) {
        if self.is_closed() {
            return;
        }
        match ev {
            Event::Reauth => {
                self.forced_by_ms = now.wall.saturating_add(self.policy.expiry_warning_ms);
                self.warn_expiring();
                self.arm_token_timers(now);
            }
            Event::Revoke => self.close(CloseReason::Revoked),
            Event::Drain => self.close(CloseReason::Draining),
            Event::LargeMessage => {
                if !self.recycle_armed() {
                    self.timers
                        .set(Timer::Recycle, now.mono.saturating_add(RECYCLE_AFTER_MS));
                }
            }
            Event::Recycled { done: true } => {}
            Event::Recycled { done: false } => self
                .timers
                .set(Timer::Recycle, now.mono.saturating_add(RECYCLE_AFTER_MS)),
            Event::Egress(v) => {
                if let EgressVerdict::Alert { bytes } = v {
                    self.alert_bytes = bytes;
                    self.actions |= EGRESS_ALERT;
                }
                if v != EgressVerdict::Ok && self.limits.egress_alert_close {
                    self.close(CloseReason::EgressLimit);
                }
            }
            Event::SchemaRejected => self.close(CloseReason::SchemaMismatch),
            Event::ClientClosed { code } => self.close(CloseReason::ClientClosed(code)),
            Event::ClientError(WireError::Lost) => self.close(CloseReason::ClientLost),
            Event::ClientError(e) => self.close(CloseReason::ClientError(e)),
            Event::ClientSlow => self.close(CloseReason::ClientSlow),
            Event::UpstreamClosed { code } => self.close(CloseReason::UpstreamClosed(code)),
            Event::UpstreamError(WireError::Lost) => self.close(CloseReason::UpstreamLost),
            Event::UpstreamError(e) => self.close(CloseReason::UpstreamError(e)),
            Event::UpstreamSlow => self.close(CloseReason::UpstreamSlow),
        }
    }

    /// The next thing to do, in the order decided; `None` when done (the
    /// common case, checked after every frame: one test).
    #[inline]
    pub fn poll(&mut self) -> Option<Action> {
        if self.actions == 0 {
            return None;
        }
        let next = self.actions & self.actions.wrapping_neg();
        self.actions &= !next;
        Some(match next {
            PING_UPSTREAM => Action::PingUpstream,
            PING_CLIENT => Action::PingClient,
            RECYCLE => Action::Recycle,
            // The one notice decided on a timer or an admin refresh; its
            // exp is read now, right after the decision.
            NOTIFY => Action::Notify(Notice::Expiring {
                exp: self.exp_secs(),
            }),
            EGRESS_ALERT => Action::EgressAlert {
                bytes: std::mem::take(&mut self.alert_bytes),
            },
            // CLOSE, the last bit set.
            _ => Action::Close(self.closed.unwrap_or(CloseReason::Expired)),
        })
    }

    /// The keep-alive round: idle close, upstream silence, pings.
    fn keepalive(&mut self, now: MonoMillis, reading_upstream: bool) {
        let idle = self.limits.idle_timeout_ms;
        if now.saturating_sub(self.rate.last()) >= idle {
            self.close(CloseReason::Idle);
            return;
        }
        if self.limits.upstream {
            if reading_upstream {
                self.upstream_quiet = self.upstream_quiet.saturating_add(1);
            }
            // The current round is not over: silent for at least
            // (quiet - 1) whole intervals.
            let silent = self
                .limits
                .ping_interval_ms
                .saturating_mul(u64::from(self.upstream_quiet.saturating_sub(1)));
            if silent >= idle {
                self.close(CloseReason::UpstreamSilent);
                return;
            }
            self.actions |= PING_UPSTREAM;
        }
        // A peer that does not read is caught by write_timeout once
        // something waits for it; one that reads nothing at all, by
        // idle_timeout too.
        self.actions |= PING_CLIENT;
        self.timers.set(
            Timer::Ping,
            now.saturating_add(self.limits.ping_interval_ms),
        );
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

    /// The token's timers on the monotonic clock, as of `now`.
    fn arm_token_timers(&mut self, now: Now) {
        let mono = |at: UnixMillis| {
            let ahead = at.saturating_sub(now.wall).max(0);
            now.mono.saturating_add(ahead.unsigned_abs())
        };
        self.timers.set(Timer::Deadline, mono(self.deadline()));
        match self.warning_at() {
            Some(w) => self.timers.set(Timer::Warning, mono(w)),
            None => self.timers.stop(Timer::Warning),
        }
    }

    fn warn_expiring(&mut self) {
        self.warned = true;
        self.actions |= NOTIFY;
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_none() {
            self.closed = Some(reason);
            self.actions |= CLOSE;
            self.timers.clear();
        }
    }
}
