//! Typed errors, after pingora-error: what went wrong (a [`Kind`]), whose
//! side it is on (a [`Side`]: the client, the upstream, the store, or the
//! gateway itself), what it was doing (the context) and the underlying
//! error (the cause). Startup, reload and fetch paths return these instead
//! of strings; [`Error::reason`] is the one place such an error becomes the
//! [`Reason`] a client is refused or closed with (server/respond.rs and
//! `Reason::close_code` turn that into the status or close code).
//!
//! The text is the context, then `: ` and the cause when there is one, as
//! the strings these replace were: log lines and `wsgate check` output read
//! the same.

use std::borrow::Cow;
use std::fmt;
use wsgate_core::Reason;

/// What kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A configured file or value that cannot be used (a key, a
    /// certificate, a schema, a URL).
    Config,
    /// No connection (refused, unreachable, a name that does not resolve).
    Connect,
    /// The TLS handshake or its certificates.
    Tls,
    /// The peer answered, but not as HTTP or not with what was asked.
    Protocol,
    /// No answer in time.
    Timeout,
    /// An answer whose content is unusable (an empty key set, a bad body).
    Invalid,
    /// The backend is unreachable or refused the operation.
    Unavailable,
}

/// Whose side the failure is on (pingora's `ErrorSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    /// The upstream service, or a remote the gateway fetches from (JWKS).
    Upstream,
    Store,
    /// The gateway's own configuration or state.
    Internal,
}

type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A failure with its kind, side, context and cause.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    side: Side,
    context: Cow<'static, str>,
    cause: Option<Cause>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure described by its context alone.
    pub fn explain(kind: Kind, side: Side, context: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            side,
            context: context.into(),
            cause: None,
        }
    }

    /// A failure caused by `cause`, while doing `context`.
    pub fn because(
        kind: Kind,
        side: Side,
        context: impl Into<Cow<'static, str>>,
        cause: impl Into<Cause>,
    ) -> Self {
        Error {
            kind,
            side,
            context: context.into(),
            cause: Some(cause.into()),
        }
    }

    /// An unusable configured value or argument: the gateway's side.
    pub fn config(context: impl Into<Cow<'static, str>>) -> Self {
        Error::explain(Kind::Config, Side::Internal, context)
    }

    /// As [`config`](Self::config), caused by `cause`.
    pub fn config_because(context: impl Into<Cow<'static, str>>, cause: impl Into<Cause>) -> Self {
        Error::because(Kind::Config, Side::Internal, context, cause)
    }

    /// The same failure, its text prefixed with `outer` (`outer: text`).
    pub fn within(self, outer: impl fmt::Display) -> Self {
        let (kind, side) = (self.kind, self.side);
        Error::because(kind, side, outer.to_string(), self)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn side(&self) -> Side {
        self.side
    }

    /// The reason a client is refused with when this failure stops its
    /// request: the store's or the upstream's unavailability (a timeout
    /// told apart), else the client's own bad upgrade.
    pub fn reason(&self) -> Reason {
        match (self.side, self.kind) {
            (Side::Store, _) => Reason::StoreUnavailable,
            (Side::Upstream, Kind::Timeout) => Reason::UpstreamTimeout,
            (Side::Upstream, _) | (Side::Internal, _) => Reason::UpstreamUnavailable,
            (Side::Client, _) => Reason::BadUpgrade,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(c) => write!(f, "{}: {c}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_context_then_cause() {
        let e = Error::explain(Kind::Invalid, Side::Upstream, "HTTP 404");
        assert_eq!(e.to_string(), "HTTP 404");
        let io = std::io::Error::other("refused");
        let e = Error::because(Kind::Connect, Side::Upstream, "connect h:1", io);
        assert_eq!(e.to_string(), "connect h:1: refused");
        assert_eq!(
            e.within("https://h/jwks").to_string(),
            "https://h/jwks: connect h:1: refused"
        );
    }

    #[test]
    fn reasons_by_side() {
        let r = |s, k| Error::explain(k, s, "x").reason();
        assert_eq!(r(Side::Store, Kind::Timeout), Reason::StoreUnavailable);
        assert_eq!(r(Side::Upstream, Kind::Timeout), Reason::UpstreamTimeout);
        assert_eq!(
            r(Side::Upstream, Kind::Connect),
            Reason::UpstreamUnavailable
        );
    }
}
