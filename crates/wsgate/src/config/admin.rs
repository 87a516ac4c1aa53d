//! `[admin]`: the listener of metrics and the admin API, and its token.

use super::build::{unset_what, Builder};
use super::redact;
use super::{de, Secret, ServerConfig, TlsConfig};
use serde::{Deserialize, Serialize, Serializer};
use std::net::SocketAddr;
use std::path::PathBuf;

const DEFAULT_ADMIN_TOKEN_ENV: &str = "WSGATE_ADMIN_TOKEN";
/// Admin tokens shorter than this are a config error: guessing one must be
/// hopeless even without the failure limit (auth_failures.rs).
pub const MIN_ADMIN_TOKEN: usize = 32;

/// `[admin]`: metrics and the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The variable consulted for the token (absent when `token_file` is used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// `None`: the admin API is disabled.
    #[serde(flatten, serialize_with = "token")]
    pub token: Option<Secret>,
    pub tls: Option<TlsConfig>,
    /// A non-loopback listener without `[admin.tls]`, on purpose (warned).
    #[serde(skip_serializing_if = "super::redact::is_false")]
    pub allow_plaintext: bool,
}

fn token<S: Serializer>(t: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    redact::secret_field(s, "token", t, true, Some("admin API disabled"))
}

impl AdminConfig {
    /// A listener reachable from other hosts, speaking plain HTTP.
    pub(super) fn in_clear(&self) -> bool {
        !self.listen.ip().to_canonical().is_loopback() && self.tls.is_none()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    #[serde(deserialize_with = "de::socket_addr")]
    listen: SocketAddr,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    tls: Option<TlsConfig>,
    allow_plaintext: bool,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
            token_env: None,
            token_file: None,
            tls: None,
            allow_plaintext: false,
        }
    }
}

impl Builder<'_> {
    pub(super) fn build_admin(&mut self, raw: RawAdmin, server: &ServerConfig) -> AdminConfig {
        let (token, token_env) = self.resolve_secret(
            "admin.token",
            raw.token_env,
            raw.token_file,
            Some(DEFAULT_ADMIN_TOKEN_ENV),
            false,
        );
        let mut tls = raw.tls;
        if let Some(t) = &mut tls {
            self.check_tls("admin.tls", t);
        }
        let loopback = raw.listen.ip().to_canonical().is_loopback();
        if !loopback && token.is_none() {
            let via = self.via("admin.listen");
            self.problem(format!(
                "admin.listen: {} is not a loopback address, so an admin token is required \
                 ({}; set it, or admin.token_env / admin.token_file){via}",
                raw.listen,
                unset_what(token_env.as_deref(), "admin.token_env")
            ));
        }
        if !loopback && tls.is_none() && !raw.allow_plaintext {
            let via = self.via("admin.listen");
            self.problem(format!(
                "admin.listen: {} is not a loopback address, so [admin.tls] is required: the \
                 admin token would cross the network in clear text (a TLS-terminating sidecar \
                 or mesh in front: set admin.allow_plaintext = true){via}",
                raw.listen
            ));
        }
        if let Some(t) = &token {
            if t.len() < MIN_ADMIN_TOKEN {
                let from = token_env
                    .as_deref()
                    .map_or_else(|| "admin.token_file".to_string(), |e| format!("${e}"));
                self.problem(format!(
                    "admin.token: the admin token ({from}) is {} bytes long; at least \
                     {MIN_ADMIN_TOKEN} are required (e.g. openssl rand -hex 32)",
                    t.len()
                ));
            }
        }
        if raw.listen == server.listen && raw.listen.port() != 0 {
            self.problem(format!(
                "admin.listen: {} is also server.listen; the admin listener needs its own address",
                raw.listen
            ));
        }
        AdminConfig {
            listen: raw.listen,
            token,
            token_env,
            tls,
            allow_plaintext: raw.allow_plaintext,
        }
    }
}
