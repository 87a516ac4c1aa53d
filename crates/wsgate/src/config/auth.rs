//! `[auth]`: which transports carry credentials and how tokens are
//! verified. Its key entries are in `keys`, `[[auth.issuers]]` in `issuers`.

use super::build::{fmt_dur, Builder};
use super::issuers::RawIssuer;
use super::keys::RawKey;
use super::{de, redact, IssuerConfig, KeyConfig};
use serde::{Deserialize, Serialize, Serializer};
use std::time::Duration;
use wsgate_core::Transport;

const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// `[auth]`: credentials and their verification.
#[derive(Debug, Clone, Serialize)]
pub struct AuthConfig {
    /// Enabled transports, in precedence order.
    #[serde(serialize_with = "redact::display_list")]
    pub transports: Vec<Transport>,
    pub cookie_name: String,
    pub cookie_csrf: bool,
    pub ticket_param: String,
    pub query_param: String,
    pub subprotocol: String,
    #[serde(with = "de::duration")]
    pub leeway: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub max_token_bytes: usize,
    pub first_message: bool,
    #[serde(with = "de::duration")]
    pub first_message_timeout: Duration,
    pub refresh: bool,
    #[serde(with = "de::duration")]
    pub expiry_warning: Duration,
    /// `None` when configured as `"0s"`.
    #[serde(serialize_with = "max_session")]
    pub max_session: Option<Duration>,
    /// The longest a token may live (`exp - iat`): how long a revocation is
    /// kept. Longer-lived tokens are refused (`expired`) so that no token can
    /// outlive the record of its revocation.
    #[serde(with = "de::duration")]
    pub max_token_lifetime: Duration,
    pub keys: Vec<KeyConfig>,
    /// `[[auth.issuers]]`: more issuers, each with its own keys and audience.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<IssuerConfig>,
}

/// Shown as written: `"0s"` for no limit.
fn max_session<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    de::duration::serialize(&d.unwrap_or(Duration::ZERO), s)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAuth {
    transports: Vec<String>,
    cookie_name: String,
    cookie_csrf: bool,
    ticket_param: String,
    query_param: String,
    subprotocol: String,
    #[serde(with = "de::duration")]
    leeway: Duration,
    issuer: Option<String>,
    #[serde(deserialize_with = "de::string_or_list")]
    audience: Vec<String>,
    max_token_bytes: usize,
    first_message: bool,
    #[serde(with = "de::duration")]
    first_message_timeout: Duration,
    refresh: bool,
    #[serde(with = "de::duration")]
    expiry_warning: Duration,
    #[serde(with = "de::duration")]
    max_session: Duration,
    #[serde(with = "de::duration")]
    max_token_lifetime: Duration,
    keys: Vec<RawKey>,
    issuers: Vec<RawIssuer>,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            transports: ["bearer", "subprotocol", "ticket", "cookie"]
                .map(String::from)
                .to_vec(),
            cookie_name: "session".into(),
            cookie_csrf: false,
            ticket_param: "ticket".into(),
            query_param: "token".into(),
            subprotocol: "jwt".into(),
            leeway: Duration::from_secs(5),
            issuer: None,
            audience: Vec::new(),
            max_token_bytes: 8192,
            first_message: false,
            first_message_timeout: Duration::from_secs(5),
            refresh: true,
            expiry_warning: Duration::from_secs(30),
            max_session: Duration::ZERO,
            max_token_lifetime: Duration::from_secs(7 * 24 * 3600),
            keys: Vec::new(),
            issuers: Vec::new(),
        }
    }
}

/// RFC 9110 token: what subprotocol and cookie names must be.
fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

const TRANSPORTS: &[&str] = &["bearer", "subprotocol", "ticket", "cookie", "query"];

impl Builder<'_> {
    fn build_transports(&mut self, raw: &RawAuth) -> Vec<Transport> {
        let mut transports = Vec::new();
        for name in &raw.transports {
            match Transport::from_config_name(name) {
                Some(t) if transports.contains(&t) => self.problem(format!(
                    "auth.transports: {name:?} is listed twice{}",
                    self.via("auth.transports")
                )),
                Some(t) => transports.push(t),
                None => {
                    let hint = if name == "first_message" {
                        " (first-message auth is turned on with auth.first_message = true)"
                            .to_string()
                    } else {
                        de::did_you_mean(name, TRANSPORTS)
                            .map(|near| format!(" (did you mean {near:?}?)"))
                            .unwrap_or_default()
                    };
                    self.problem(format!(
                        "auth.transports: unknown transport {name:?}; expected bearer, \
                         subprotocol, ticket, cookie or query{hint}{}",
                        self.via("auth.transports")
                    ));
                }
            }
        }
        if raw.transports.is_empty() && !raw.first_message {
            self.problem(
                "auth.transports: is empty, so no client could authenticate; list at least one \
                 transport or set auth.first_message = true"
                    .into(),
            );
        }
        transports
    }

    pub(super) fn build_auth(&mut self, raw: RawAuth, ticket_audience: &str) -> AuthConfig {
        let transports = self.build_transports(&raw);
        if !is_http_token(&raw.cookie_name) {
            self.problem(format!(
                "auth.cookie_name: {:?} is not a valid cookie name",
                raw.cookie_name
            ));
        }
        for (key, v) in [
            ("auth.ticket_param", &raw.ticket_param),
            ("auth.query_param", &raw.query_param),
        ] {
            if v.is_empty() || v.chars().any(|c| "&=#?+% ".contains(c) || c.is_control()) {
                self.problem(format!("{key}: {v:?} is not a usable query parameter name"));
            }
        }
        if raw.ticket_param == raw.query_param
            && transports.contains(&Transport::Ticket)
            && transports.contains(&Transport::Query)
        {
            self.problem(format!(
                "auth.query_param: equals auth.ticket_param ({:?}); the ticket and query \
                 transports need different parameters",
                raw.query_param
            ));
        }
        if !is_http_token(&raw.subprotocol) {
            self.problem(format!(
                "auth.subprotocol: {:?} is not a valid subprotocol name (an HTTP token)",
                raw.subprotocol
            ));
        }
        if raw.leeway > MAX_LEEWAY {
            self.problem(format!(
                "auth.leeway: {} is more than the 5m maximum",
                fmt_dur(raw.leeway)
            ));
        }
        if raw.issuer.as_deref() == Some("") {
            self.problem(
                "auth.issuer: must not be empty (remove the key to accept any issuer)".into(),
            );
        }
        for (i, aud) in raw.audience.iter().enumerate() {
            if aud.is_empty() {
                self.problem(format!("auth.audience[{i}]: must not be empty"));
            } else if aud == ticket_audience {
                self.problem(format!(
                    "auth.audience: contains the ticket audience {aud:?}; session tokens with it \
                     would be refused as tickets"
                ));
            }
        }
        for (key, zero) in [
            ("max_token_bytes", raw.max_token_bytes == 0),
            ("max_token_lifetime", raw.max_token_lifetime.is_zero()),
            ("first_message_timeout", raw.first_message_timeout.is_zero()),
            ("expiry_warning", raw.expiry_warning.is_zero()),
        ] {
            if zero {
                self.problem(format!("auth.{key}: must be greater than 0"));
            }
        }
        if raw.keys.is_empty() && raw.issuers.is_empty() && !self.dev {
            self.problem(
                "auth.keys: at least one [[auth.keys]] entry is required (alg with secret_env, \
                 secret_file or public_key_file, or a jwks_url / jwks_file)"
                    .into(),
            );
        }
        let auth_keys = !raw.keys.is_empty();
        let keys = self.build_keys(raw.keys);
        let issuers = self.build_issuers(
            raw.issuers,
            &raw.audience,
            raw.issuer.as_deref(),
            ticket_audience,
            auth_keys,
        );
        AuthConfig {
            transports,
            cookie_name: raw.cookie_name,
            cookie_csrf: raw.cookie_csrf,
            ticket_param: raw.ticket_param,
            query_param: raw.query_param,
            subprotocol: raw.subprotocol,
            leeway: raw.leeway,
            issuer: raw.issuer,
            audience: raw.audience,
            max_token_bytes: raw.max_token_bytes,
            first_message: raw.first_message,
            first_message_timeout: raw.first_message_timeout,
            refresh: raw.refresh,
            expiry_warning: raw.expiry_warning,
            max_session: (!raw.max_session.is_zero()).then_some(raw.max_session),
            max_token_lifetime: raw.max_token_lifetime,
            keys,
            issuers,
        }
    }
}
