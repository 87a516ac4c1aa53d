//! Why a socket was closed after `101`, in one enum.
//!
//! A [`CloseReason`] says everything the gateway does when it ends a
//! socket: the code it logs and counts, the frame each side gets (or that
//! it relays the other peer's), whether queued messages are delivered
//! first, and the log line's reason. The connection task never writes a
//! close code itself; where a [`Reason`] applies, the code comes from it.

use crate::reason::{close, Reason};

/// How a read or a write of a WebSocket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// A message over `limits.max_message_bytes`.
    MessageTooBig,
    /// A frame over the frame limit.
    FrameTooBig,
    InvalidUtf8,
    /// Any other violation of RFC 6455.
    Protocol,
    /// The connection went away (a reset, EOF without a close frame, a
    /// failed write): nothing can be sent on it any more.
    Lost,
}

impl WireError {
    pub const ALL: [WireError; 5] = [
        WireError::MessageTooBig,
        WireError::FrameTooBig,
        WireError::InvalidUtf8,
        WireError::Protocol,
        WireError::Lost,
    ];

    /// The close frame answering this error on the socket that made it.
    /// `Lost` has none on the wire: 1006 is only ever logged.
    pub const fn close(self) -> (u16, &'static str) {
        match self {
            WireError::MessageTooBig => (close::TOO_BIG, "message too big"),
            WireError::FrameTooBig => (close::TOO_BIG, "frame too big"),
            WireError::InvalidUtf8 => (close::INVALID_PAYLOAD, "invalid utf-8"),
            WireError::Protocol => (close::PROTOCOL, "protocol error"),
            WireError::Lost => (close::ABNORMAL, "connection lost"),
        }
    }
}

/// Whether a peer's close code may be relayed to the other peer as is: the
/// reserved codes (1005 none, 1006, 1015) are never sent on the wire, a
/// relay sends `1000` without text instead.
pub const fn relayable(code: u16) -> bool {
    !matches!(code, close::NO_STATUS | close::ABNORMAL | close::TLS_FAILED)
}

/// What one side of the session gets when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerClose {
    /// A close frame with this code and text.
    Send { code: u16, text: &'static str },
    /// The close frame the other peer sent (`1000` when it carried a
    /// reserved code or none, see [`relayable`]).
    Relay,
    /// Nothing: the side is gone, or closed first and was answered.
    Skip,
}

/// Why a socket was closed after `101`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The session's deadline passed without a refresh.
    Expired,
    /// An admin revocation matched the session.
    Revoked,
    /// The gateway is shutting down.
    Draining,
    /// Nothing from the client within `limits.idle_timeout`.
    Idle,
    /// Frames past `limits.messages_per_sec` (before auth too).
    RateLimited,
    /// A message the upstream's schema does not accept.
    SchemaMismatch,
    /// The user's egress past the alert threshold, with `egress_alert_close`.
    EgressLimit,
    /// The client sent something unreadable (its `Lost` is [`ClientLost`](Self::ClientLost)).
    ClientError(WireError),
    /// The client went away without a close frame.
    ClientLost,
    /// The client did not read what it was sent (`write_timeout`, byte budgets).
    ClientSlow,
    /// The client closed with this code ([`close::NO_STATUS`]: none).
    ClientClosed(u16),
    /// The upstream closed with this code ([`close::NO_STATUS`]: none).
    UpstreamClosed(u16),
    /// The upstream went away (an end, a reset, a failed write).
    UpstreamLost,
    /// Neither a frame nor a pong from the upstream within `idle_timeout`.
    UpstreamSilent,
    /// The upstream did not read what it was sent.
    UpstreamSlow,
    /// The upstream sent something unreadable.
    UpstreamError(WireError),
    /// No auth message within `auth.first_message_timeout`.
    AuthTimeout,
    /// First-message auth refused for this reason (`auth_fail` was sent).
    AuthFailed(Reason),
}

/// The peer code of peer closes in [`CloseReason::ALL`].
const ANY_PEER_CODE: u16 = close::NORMAL;

/// The kinds without data, then each wire error on either side (but
/// `Lost`, reported as `ClientLost` / `UpstreamLost`), then each refusal.
const FIXED: [CloseReason; 15] = [
    CloseReason::Expired,
    CloseReason::Revoked,
    CloseReason::Draining,
    CloseReason::Idle,
    CloseReason::RateLimited,
    CloseReason::SchemaMismatch,
    CloseReason::EgressLimit,
    CloseReason::ClientLost,
    CloseReason::ClientSlow,
    CloseReason::ClientClosed(ANY_PEER_CODE),
    CloseReason::UpstreamClosed(ANY_PEER_CODE),
    CloseReason::UpstreamLost,
    CloseReason::UpstreamSilent,
    CloseReason::UpstreamSlow,
    CloseReason::AuthTimeout,
];
const WIRE: usize = WireError::ALL.len() - 1;
const ALL_LEN: usize = FIXED.len() + 2 * WIRE + Reason::ALL.len();

impl CloseReason {
    /// Every kind of close, once each (peer closes with code 1000, wire
    /// errors and auth refusals one by one): for exhaustive tests and
    /// metric pre-registration.
    pub const ALL: [CloseReason; ALL_LEN] = {
        let mut all = [CloseReason::Expired; ALL_LEN];
        let mut i = 0;
        while i < FIXED.len() {
            all[i] = FIXED[i];
            i += 1;
        }
        let mut w = 0;
        while w < WIRE {
            all[i] = CloseReason::ClientError(WireError::ALL[w]);
            all[i + 1] = CloseReason::UpstreamError(WireError::ALL[w]);
            i += 2;
            w += 1;
        }
        let mut r = 0;
        while r < Reason::ALL.len() {
            all[i] = CloseReason::AuthFailed(Reason::ALL[r]);
            i += 1;
            r += 1;
        }
        all
    };

    /// The code logged (`code` of the `close` line) and counted
    /// (`wsgate_closes_total{code}`): the code sent to the client, the
    /// peer's own when it closed, 1006 when the client is gone.
    pub const fn code(self) -> u16 {
        match self {
            CloseReason::ClientClosed(code) | CloseReason::UpstreamClosed(code) => code,
            CloseReason::ClientLost => close::ABNORMAL,
            CloseReason::ClientError(e) => e.close().0,
            CloseReason::AuthFailed(r) => r.first_message_close().0,
            other => other.sent().0,
        }
    }

    /// The `reason` of the `close` log line.
    pub const fn log_reason(self) -> &'static str {
        match self {
            CloseReason::ClientClosed(_) => "closed by client",
            CloseReason::UpstreamClosed(_) => "closed by upstream",
            CloseReason::ClientLost => "connection lost",
            CloseReason::ClientError(e) => e.close().1,
            CloseReason::AuthFailed(r) => r.code(),
            other => other.sent().1,
        }
    }

    /// A stable snake_case name for the cause, for metrics and tests (the
    /// close metric itself is labelled by [`code`](Self::code)).
    pub const fn metric_label(self) -> &'static str {
        match self {
            CloseReason::Expired => "expired",
            CloseReason::Revoked => "revoked",
            CloseReason::Draining => "draining",
            CloseReason::Idle => "idle",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::SchemaMismatch => "schema_mismatch",
            CloseReason::EgressLimit => "egress_limit",
            CloseReason::ClientError(_) => "client_error",
            CloseReason::ClientLost => "client_lost",
            CloseReason::ClientSlow => "client_slow",
            CloseReason::ClientClosed(_) => "client_closed",
            CloseReason::UpstreamClosed(_) => "upstream_closed",
            CloseReason::UpstreamLost => "upstream_lost",
            CloseReason::UpstreamSilent => "upstream_silent",
            CloseReason::UpstreamSlow => "upstream_slow",
            CloseReason::UpstreamError(_) => "upstream_error",
            CloseReason::AuthTimeout => "auth_timeout",
            CloseReason::AuthFailed(_) => "auth_failed",
        }
    }

    /// What the client gets.
    pub const fn client(self) -> PeerClose {
        match self {
            CloseReason::ClientLost | CloseReason::ClientClosed(_) => PeerClose::Skip,
            CloseReason::UpstreamClosed(_) => PeerClose::Relay,
            CloseReason::ClientError(e) => send(e.close()),
            CloseReason::AuthFailed(r) => send(r.first_message_close()),
            other => send(other.sent()),
        }
    }

    /// What the upstream gets (`backend.kind = "upstream"`).
    pub const fn upstream(self) -> PeerClose {
        match self {
            CloseReason::ClientClosed(_) => PeerClose::Relay,
            CloseReason::ClientLost => send((close::GOING_AWAY, "client gone")),
            CloseReason::ClientSlow => send((close::TRY_AGAIN_LATER, "client slow")),
            CloseReason::UpstreamSlow => send((close::TRY_AGAIN_LATER, "slow consumer")),
            CloseReason::UpstreamError(e) => send(e.close()),
            CloseReason::UpstreamClosed(_)
            | CloseReason::UpstreamLost
            | CloseReason::UpstreamSilent => PeerClose::Skip,
            other => other.client(),
        }
    }

    /// Whether what is queued is delivered before the close frames: a
    /// peer closed in order, so the other side gets everything it sent.
    pub const fn flush(self) -> bool {
        matches!(
            self,
            CloseReason::ClientClosed(_) | CloseReason::UpstreamClosed(_)
        )
    }

    /// The code and text the gateway sends for the reasons where both are
    /// its own (the others are answered in the callers above).
    const fn sent(self) -> (u16, &'static str) {
        match self {
            CloseReason::Expired => (Reason::Expired.close_code(), "token expired"),
            CloseReason::Revoked => (Reason::Revoked.close_code(), "session revoked"),
            CloseReason::Draining => (Reason::Draining.close_code(), "server shutting down"),
            CloseReason::Idle => (close::IDLE, "idle timeout"),
            CloseReason::RateLimited => (Reason::RateLimited.close_code(), "message rate exceeded"),
            CloseReason::SchemaMismatch => {
                (close::INVALID_PAYLOAD, "message does not match the schema")
            }
            CloseReason::EgressLimit => (close::POLICY, "egress limit"),
            CloseReason::ClientSlow => (close::TRY_AGAIN_LATER, "slow consumer"),
            CloseReason::UpstreamLost | CloseReason::UpstreamSilent => {
                (Reason::UpstreamUnavailable.close_code(), "upstream lost")
            }
            CloseReason::UpstreamSlow => (close::TRY_AGAIN_LATER, "upstream slow"),
            CloseReason::UpstreamError(_) => (close::INTERNAL, "upstream error"),
            CloseReason::AuthTimeout => (close::AUTH_FAILED, "authentication timeout"),
            // Answered by code(), log_reason() and client() themselves.
            CloseReason::ClientError(_)
            | CloseReason::ClientLost
            | CloseReason::ClientClosed(_)
            | CloseReason::UpstreamClosed(_)
            | CloseReason::AuthFailed(_) => (close::INTERNAL, "internal error"),
        }
    }
}

const fn send((code, text): (u16, &'static str)) -> PeerClose {
    PeerClose::Send { code, text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn all_lists_each_kind_once() {
        let set: HashSet<_> = CloseReason::ALL.iter().collect();
        assert_eq!(set.len(), CloseReason::ALL.len());
        for r in Reason::ALL {
            assert!(CloseReason::ALL.contains(&CloseReason::AuthFailed(r)));
        }
        let labels: HashSet<_> = CloseReason::ALL.iter().map(|r| r.metric_label()).collect();
        assert_eq!(labels.len(), 18, "one label per variant");
    }

    #[test]
    fn frames_fit_and_never_carry_reserved_codes() {
        for r in CloseReason::ALL {
            for side in [r.client(), r.upstream()] {
                if let PeerClose::Send { code, text } = side {
                    assert!(text.len() <= 123, "{r:?}");
                    assert!(!matches!(code, 1005 | 1006 | 1015), "{r:?}");
                    assert!(code >= 1000, "{r:?}");
                }
            }
            assert!(!r.log_reason().is_empty(), "{r:?}");
        }
    }

    #[test]
    fn codes_come_from_reason_where_one_applies() {
        assert_eq!(CloseReason::Expired.code(), Reason::Expired.close_code());
        assert_eq!(CloseReason::Revoked.code(), 4403);
        assert_eq!(CloseReason::Draining.code(), 1001);
        assert_eq!(CloseReason::RateLimited.code(), 4429);
        assert_eq!(CloseReason::UpstreamLost.code(), 1013);
        assert_eq!(CloseReason::Idle.code(), 4408);
        for r in Reason::ALL {
            let c = CloseReason::AuthFailed(r);
            assert_eq!((c.code(), c.client()), {
                let (code, text) = r.first_message_close();
                (code, PeerClose::Send { code, text })
            });
            assert_eq!(c.log_reason(), r.code());
        }
    }

    #[test]
    fn reserved_codes_are_never_relayed() {
        for code in [1005, 1006, 1015] {
            assert!(!relayable(code), "{code}");
        }
        for code in [1000, 1001, 1011, 4000, 4403] {
            assert!(relayable(code), "{code}");
        }
    }

    #[test]
    fn each_side_gets_what_it_did_not_cause() {
        use PeerClose::{Relay, Send, Skip};
        let c = CloseReason::ClientClosed(4000);
        assert_eq!((c.code(), c.client(), c.upstream()), (4000, Skip, Relay));
        assert!(c.flush());
        let u = CloseReason::UpstreamClosed(1005);
        assert_eq!((u.code(), u.client(), u.upstream()), (1005, Relay, Skip));
        assert!(u.flush());
        let lost = CloseReason::ClientLost;
        assert_eq!((lost.code(), lost.client()), (1006, Skip));
        assert_eq!(
            lost.upstream(),
            Send {
                code: 1001,
                text: "client gone"
            }
        );
        let e = CloseReason::UpstreamError(WireError::InvalidUtf8);
        assert_eq!(
            (e.code(), e.log_reason(), e.upstream()),
            (
                1011,
                "upstream error",
                Send {
                    code: 1007,
                    text: "invalid utf-8"
                }
            )
        );
        let slow = CloseReason::ClientSlow;
        assert_eq!(slow.log_reason(), "slow consumer");
        assert_eq!(
            slow.upstream(),
            Send {
                code: 1013,
                text: "client slow"
            }
        );
        let up_slow = CloseReason::UpstreamSlow;
        assert_eq!(
            (up_slow.code(), up_slow.log_reason()),
            (1013, "upstream slow")
        );
        assert_eq!(
            up_slow.upstream(),
            Send {
                code: 1013,
                text: "slow consumer"
            }
        );
        for r in [CloseReason::UpstreamLost, CloseReason::UpstreamSilent] {
            assert_eq!(
                (r.code(), r.log_reason(), r.upstream()),
                (1013, "upstream lost", Skip)
            );
        }
        let too_big = CloseReason::ClientError(WireError::MessageTooBig);
        assert_eq!(
            (too_big.code(), too_big.log_reason()),
            (1009, "message too big")
        );
        assert!(!CloseReason::Revoked.flush());
    }
}
