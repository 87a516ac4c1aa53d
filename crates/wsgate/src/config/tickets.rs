//! `[tickets]`: short-lived single-use upgrade tickets and their secret.

use super::build::{fmt_dur, unset_what, Builder};
use super::redact;
use super::{de, AuthConfig, KeySource, Secret, StoreConfig};
use serde::{Deserialize, Serialize, Serializer};
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_TICKET_SECRET_ENV: &str = "WSGATE_TICKET_SECRET";
const MAX_TICKET_TTL: Duration = Duration::from_secs(60);
/// Shared secrets (ticket, identity) shorter than this are refused.
pub(super) const MIN_SHARED_SECRET: usize = 32;

/// `[tickets]`: short-lived single-use upgrade tickets.
#[derive(Debug, Clone, Serialize)]
pub struct TicketsConfig {
    pub enabled: bool,
    #[serde(with = "de::duration")]
    pub ttl: Duration,
    pub audience: String,
    /// The variable consulted for the secret (absent when `secret_file` is used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// `None` (memory store only): the server generates a per-process secret.
    #[serde(flatten, serialize_with = "secret")]
    pub secret: Option<Secret>,
}

fn secret<S: Serializer>(t: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    redact::secret_field(
        s,
        "secret",
        t,
        true,
        Some("a random per-process secret is generated"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTickets {
    enabled: bool,
    #[serde(with = "de::duration")]
    ttl: Duration,
    pub(super) audience: String,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
}

impl Default for RawTickets {
    fn default() -> Self {
        RawTickets {
            enabled: true,
            ttl: Duration::from_secs(30),
            audience: "wsgate-ticket".into(),
            secret_env: None,
            secret_file: None,
        }
    }
}

impl Builder<'_> {
    pub(super) fn build_tickets(&mut self, raw: RawTickets, store: &StoreConfig) -> TicketsConfig {
        if raw.ttl.is_zero() {
            self.problem("tickets.ttl: must be greater than 0".into());
        } else if raw.ttl > MAX_TICKET_TTL {
            self.problem(format!(
                "tickets.ttl: {} is longer than the 60s maximum",
                fmt_dur(raw.ttl)
            ));
        }
        if raw.audience.is_empty() {
            self.problem("tickets.audience: must not be empty".into());
        }
        let (secret, secret_env) = self.resolve_secret(
            "tickets.secret",
            raw.secret_env,
            raw.secret_file,
            Some(DEFAULT_TICKET_SECRET_ENV),
            false,
        );
        if let Some(s) = &secret {
            if s.len() < MIN_SHARED_SECRET {
                self.problem(format!(
                    "tickets.secret: the ticket secret is {} bytes; at least {MIN_SHARED_SECRET} are required",
                    s.len()
                ));
            }
        } else if raw.enabled && store.is_redis() && !self.dev {
            self.problem(format!(
                "tickets: no ticket secret ({}); with a redis store every node must share one: \
                 set it, or tickets.secret_env / tickets.secret_file",
                unset_what(secret_env.as_deref(), "tickets.secret_env")
            ));
        }
        TicketsConfig {
            enabled: raw.enabled,
            ttl: raw.ttl,
            audience: raw.audience,
            secret,
            secret_env,
        }
    }

    /// A ticket secret equal to a session-token secret would let tickets
    /// and session tokens stand in for each other.
    pub(super) fn check_ticket_secret_distinct(
        &mut self,
        tickets: &TicketsConfig,
        auth: &AuthConfig,
    ) {
        let Some(ts) = &tickets.secret else { return };
        for (i, k) in auth.keys.iter().enumerate() {
            if let KeySource::Secret(s) = &k.source {
                if s == ts {
                    self.problem(format!(
                        "tickets.secret: is the same secret as auth.keys[{i}]; use a separate one"
                    ));
                }
            }
        }
    }
}
