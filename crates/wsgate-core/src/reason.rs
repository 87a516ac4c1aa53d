//! Every way an upgrade or a live session can be refused, in one place.
//!
//! A [`Reason`] maps to its stable wire code (used in JSON bodies, log lines
//! and metric labels), its HTTP status before `101`, and its WebSocket close
//! code after `101`. Nothing else in the gateway invents a status or a code.

use http::StatusCode;

/// Why a request or a session was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    BadUpgrade,
    UnsupportedVersion,
    TokenTooLarge,
    HeadersTooLarge,
    MissingToken,
    MalformedToken,
    BadSignature,
    AlgorithmNotAllowed,
    UnknownKey,
    Expired,
    NotYetValid,
    BadAudience,
    BadIssuer,
    MissingClaim,
    TicketReplayed,
    TicketRequired,
    Revoked,
    OriginNotAllowed,
    CsrfFailed,
    RateLimited,
    TooManyConnections,
    StoreUnavailable,
    /// The store did not confirm a ticket's single use (a timeout): it may
    /// have been spent, so the client must fetch a new one. On the wire it
    /// is `store_unavailable`, with a message that says so.
    TicketOutcomeUnknown,
    Draining,
    /// The upstream refused, failed or did not answer `101` (`backend.kind = "upstream"`).
    UpstreamUnavailable,
    /// The upstream did not complete its handshake within `backend.connect_timeout`.
    UpstreamTimeout,
}

impl Reason {
    /// Every variant, for exhaustive tests and metric pre-registration.
    pub const ALL: [Reason; 26] = [
        Reason::BadUpgrade,
        Reason::UnsupportedVersion,
        Reason::TokenTooLarge,
        Reason::HeadersTooLarge,
        Reason::MissingToken,
        Reason::MalformedToken,
        Reason::BadSignature,
        Reason::AlgorithmNotAllowed,
        Reason::UnknownKey,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::BadAudience,
        Reason::BadIssuer,
        Reason::MissingClaim,
        Reason::TicketReplayed,
        Reason::TicketRequired,
        Reason::Revoked,
        Reason::OriginNotAllowed,
        Reason::CsrfFailed,
        Reason::RateLimited,
        Reason::TooManyConnections,
        Reason::StoreUnavailable,
        Reason::TicketOutcomeUnknown,
        Reason::Draining,
        Reason::UpstreamUnavailable,
        Reason::UpstreamTimeout,
    ];

    /// This reason's position in [`Reason::ALL`], for tables built per reason.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stable reason code (docs/reference.md) (JSON `error`, log `reason`, metric label).
    pub const fn code(self) -> &'static str {
        match self {
            // A wrong version is still a bad upgrade on the wire; only the status differs.
            Reason::BadUpgrade | Reason::UnsupportedVersion => "bad_upgrade",
            Reason::TokenTooLarge => "token_too_large",
            Reason::HeadersTooLarge => "headers_too_large",
            Reason::MissingToken => "missing_token",
            Reason::MalformedToken => "malformed_token",
            Reason::BadSignature => "bad_signature",
            Reason::AlgorithmNotAllowed => "algorithm_not_allowed",
            Reason::UnknownKey => "unknown_key",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::BadAudience => "bad_audience",
            Reason::BadIssuer => "bad_issuer",
            Reason::MissingClaim => "missing_claim",
            Reason::TicketReplayed => "ticket_replayed",
            Reason::TicketRequired => "ticket_required",
            Reason::Revoked => "revoked",
            Reason::OriginNotAllowed => "origin_not_allowed",
            Reason::CsrfFailed => "csrf_failed",
            Reason::RateLimited => "rate_limited",
            Reason::TooManyConnections => "too_many_connections",
            Reason::StoreUnavailable | Reason::TicketOutcomeUnknown => "store_unavailable",
            Reason::Draining => "draining",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// HTTP status of a rejection before `101`.
    pub const fn status(self) -> StatusCode {
        match self {
            Reason::BadUpgrade | Reason::TokenTooLarge => StatusCode::BAD_REQUEST,
            Reason::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Reason::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reason::MissingToken
            | Reason::MalformedToken
            | Reason::BadSignature
            | Reason::AlgorithmNotAllowed
            | Reason::UnknownKey
            | Reason::Expired
            | Reason::NotYetValid
            | Reason::BadAudience
            | Reason::BadIssuer
            | Reason::MissingClaim
            | Reason::TicketReplayed
            | Reason::TicketRequired
            | Reason::Revoked => StatusCode::UNAUTHORIZED,
            Reason::OriginNotAllowed | Reason::CsrfFailed => StatusCode::FORBIDDEN,
            Reason::RateLimited | Reason::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
            Reason::StoreUnavailable | Reason::TicketOutcomeUnknown | Reason::Draining => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reason::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Reason::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// Close code when the same decision is taken after `101` (first-message
    /// auth, in-band refresh, revocation of a live session).
    pub const fn close_code(self) -> u16 {
        match self {
            Reason::Expired => close::EXPIRED,
            Reason::Revoked => close::REVOKED,
            Reason::RateLimited => close::RATE_LIMITED,
            Reason::Draining => close::GOING_AWAY,
            Reason::StoreUnavailable
            | Reason::TicketOutcomeUnknown
            | Reason::UpstreamUnavailable
            | Reason::UpstreamTimeout => close::TRY_AGAIN_LATER,
            _ => close::AUTH_FAILED,
        }
    }

    /// Close code and text when first-message auth (docs/reference.md) ends in this
    /// refusal: `4001` for anything about the credential; the service
    /// codes when the gateway could not decide (store or upstream away:
    /// `1013`, try again) or is shutting down (`1001`), so a client does not
    /// take an outage for a bad credential.
    pub const fn first_message_close(self) -> (u16, &'static str) {
        match self {
            Reason::StoreUnavailable | Reason::TicketOutcomeUnknown => {
                (close::TRY_AGAIN_LATER, "store unavailable")
            }
            Reason::UpstreamUnavailable | Reason::UpstreamTimeout => {
                (close::TRY_AGAIN_LATER, "upstream unavailable")
            }
            Reason::Draining => (close::GOING_AWAY, "server shutting down"),
            _ => (close::AUTH_FAILED, "authentication failed"),
        }
    }

    /// Human text for the JSON `message`. Never contains request data.
    pub const fn message(self) -> &'static str {
        match self {
            Reason::BadUpgrade => "not a valid WebSocket upgrade request",
            Reason::UnsupportedVersion => "only WebSocket version 13 is supported",
            Reason::TokenTooLarge => "the token is larger than allowed",
            Reason::HeadersTooLarge => "the request head is larger than allowed",
            Reason::MissingToken => "no credential was presented",
            Reason::MalformedToken => "the token is not a well-formed JWT",
            Reason::BadSignature => "the token signature is invalid",
            Reason::AlgorithmNotAllowed => "the token algorithm is not allowed",
            Reason::UnknownKey => "no configured key matches the token",
            Reason::Expired => "the token has expired",
            Reason::NotYetValid => "the token is not valid yet",
            Reason::BadAudience => "the token audience is not accepted",
            Reason::BadIssuer => "the token issuer is not accepted",
            Reason::MissingClaim => "the token lacks a required claim",
            Reason::TicketReplayed => "the ticket was already used",
            Reason::TicketRequired => "this parameter only accepts a ticket",
            Reason::Revoked => "the session was revoked",
            Reason::OriginNotAllowed => "the Origin is not allowed",
            Reason::CsrfFailed => "the CSRF check failed",
            Reason::RateLimited => "too many requests",
            Reason::TooManyConnections => "too many connections",
            Reason::StoreUnavailable => "the session store is unavailable",
            Reason::TicketOutcomeUnknown => {
                "the session store did not confirm the ticket's use: it may be spent, fetch a new ticket"
            }
            Reason::Draining => "the gateway is shutting down",
            Reason::UpstreamUnavailable => "the upstream service is unavailable",
            Reason::UpstreamTimeout => "the upstream service did not answer in time",
        }
    }

    /// True for the 401 family, which carries `WWW-Authenticate` (RFC 6750).
    pub fn is_unauthorized(self) -> bool {
        self.status() == StatusCode::UNAUTHORIZED
    }

    /// Whether the refusal is worth a `Retry-After` header.
    pub const fn retry_after_secs(self) -> Option<u32> {
        match self {
            Reason::RateLimited | Reason::TooManyConnections => Some(1),
            Reason::StoreUnavailable
            | Reason::TicketOutcomeUnknown
            | Reason::Draining
            | Reason::UpstreamUnavailable
            | Reason::UpstreamTimeout => Some(5),
            _ => None,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// WebSocket close codes (docs/reference.md, "Close codes").
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    /// A close frame without a code; never sent.
    pub const NO_STATUS: u16 = 1005;
    /// Logged for a connection lost without a close; never sent (RFC 6455 7.4.1).
    pub const ABNORMAL: u16 = 1006;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A failed TLS handshake; never sent.
    pub const TLS_FAILED: u16 = 1015;
    pub const AUTH_FAILED: u16 = 4001;
    pub const EXPIRED: u16 = 4401;
    pub const REVOKED: u16 = 4403;
    pub const IDLE: u16 = 4408;
    pub const RATE_LIMITED: u16 = 4429;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_reason_has_the_spec_status() {
        let expect = |r: Reason, s: u16| assert_eq!(r.status().as_u16(), s, "{r:?}");
        for r in Reason::ALL {
            let s = match r.code() {
                "bad_upgrade" if r == Reason::UnsupportedVersion => 426,
                "bad_upgrade" | "token_too_large" => 400,
                "headers_too_large" => 431,
                "origin_not_allowed" | "csrf_failed" => 403,
                "rate_limited" | "too_many_connections" => 429,
                "store_unavailable" | "draining" => 503,
                "upstream_unavailable" => 502,
                "upstream_timeout" => 504,
                _ => 401,
            };
            expect(r, s);
        }
    }

    #[test]
    fn codes_are_unique_except_version_and_ticket_outcome() {
        let codes: HashSet<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len() - 2);
        assert_eq!(Reason::TicketOutcomeUnknown.code(), "store_unavailable");
        assert_ne!(
            Reason::TicketOutcomeUnknown.message(),
            Reason::StoreUnavailable.message()
        );
    }

    #[test]
    fn index_is_the_position_in_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    #[test]
    fn close_codes() {
        assert_eq!(Reason::Expired.close_code(), 4401);
        assert_eq!(Reason::Revoked.close_code(), 4403);
        assert_eq!(Reason::BadSignature.close_code(), 4001);
        assert_eq!(Reason::RateLimited.close_code(), 4429);
    }

    #[test]
    fn first_message_closes() {
        assert_eq!(Reason::BadSignature.first_message_close().0, 4001);
        assert_eq!(Reason::Revoked.first_message_close().0, 4001);
        assert_eq!(Reason::TooManyConnections.first_message_close().0, 4001);
        assert_eq!(Reason::StoreUnavailable.first_message_close().0, 1013);
        assert_eq!(Reason::UpstreamTimeout.first_message_close().0, 1013);
        for r in Reason::ALL {
            assert!(r.first_message_close().1.len() <= 123, "{r:?}");
        }
    }

    #[test]
    fn retry_after_on_429() {
        assert!(Reason::RateLimited.retry_after_secs().is_some());
        assert!(Reason::TooManyConnections.retry_after_secs().is_some());
        assert!(Reason::BadSignature.retry_after_secs().is_none());
    }
}
