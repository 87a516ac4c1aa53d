//! `[backend]`: where messages go (the built-in hub, an upstream
//! WebSocket service, or echo) and how the upstream is reached.

use super::build::Builder;
use super::redact;
use super::tickets::MIN_SHARED_SECRET;
use super::{de, urls, Secret};
use serde::{Deserialize, Serialize, Serializer};
use std::path::PathBuf;
use std::time::Duration;

/// Streams per upstream HTTP/2 connection: past a few thousand one
/// connection (one task, one socket) becomes the bottleneck.
const MAX_HTTP2_STREAMS: usize = 10_000;

/// `[backend]`.
#[derive(Debug, Clone, Serialize)]
pub struct BackendConfig {
    pub kind: BackendKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ca_file: Option<PathBuf>,
    /// Upstream WebSockets as RFC 8441 streams of shared HTTP/2 connections.
    pub upstream_http2: bool,
    /// The most streams the gateway opens on one HTTP/2 connection.
    pub upstream_http2_streams: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_schema_file: Option<PathBuf>,
    /// HMAC key signing the identity headers forwarded upstream.
    #[serde(flatten, serialize_with = "identity_secret")]
    pub identity_secret: Option<Secret>,
    /// Forwarding / client-identity headers (`X-Real-IP`, ...) passed to
    /// the upstream as the client wrote them; every other one of that
    /// family is dropped (backend/forwarded.rs). Lower case, no duplicates.
    #[serde(serialize_with = "redact::display_list")]
    pub forward_client_headers: Vec<http::HeaderName>,
    #[serde(with = "de::duration")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Hub,
    Upstream,
    Echo,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Hub => "hub",
            BackendKind::Upstream => "upstream",
            BackendKind::Echo => "echo",
        }
    }
}

fn identity_secret<S: Serializer>(t: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    redact::secret_field(s, "identity_secret", t, false, None)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBackend {
    kind: BackendKind,
    upstream: Option<String>,
    upstream_ca_file: Option<PathBuf>,
    upstream_http2: bool,
    upstream_http2_streams: usize,
    message_schema_file: Option<PathBuf>,
    identity_secret_env: Option<String>,
    identity_secret_file: Option<PathBuf>,
    #[serde(deserialize_with = "de::string_or_list")]
    forward_client_headers: Vec<String>,
    #[serde(with = "de::duration")]
    connect_timeout: Duration,
}

impl Default for RawBackend {
    fn default() -> Self {
        RawBackend {
            kind: BackendKind::Hub,
            upstream: None,
            upstream_ca_file: None,
            upstream_http2: false,
            upstream_http2_streams: 100,
            message_schema_file: None,
            identity_secret_env: None,
            identity_secret_file: None,
            forward_client_headers: Vec::new(),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Builder<'_> {
    pub(super) fn build_backend(&mut self, raw: RawBackend) -> BackendConfig {
        match (&raw.upstream, raw.kind) {
            (None, BackendKind::Upstream) => {
                self.problem("backend.upstream: required when backend.kind = \"upstream\"".into())
            }
            (Some(u), _) => {
                if let Err(e) = urls::check_upstream(u) {
                    self.problem(format!("backend.upstream: {e}"));
                }
            }
            (None, _) => {}
        }
        let upstream_ca_file = raw.upstream_ca_file.map(|p| self.path(&p));
        if let Some(p) = &upstream_ca_file {
            self.check_pem_file(
                "backend.upstream_ca_file",
                p,
                "CERTIFICATE-----",
                "certificate",
            );
        }
        let message_schema_file = raw.message_schema_file.map(|p| self.path(&p));
        if let Some(p) = &message_schema_file {
            match std::fs::read(p) {
                Ok(bytes) => {
                    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                        self.problem(format!(
                            "backend.message_schema_file: {} is not JSON: {e}",
                            p.display()
                        ));
                    }
                }
                Err(e) => self.problem(format!(
                    "backend.message_schema_file: cannot read {}: {e}",
                    p.display()
                )),
            }
        }
        let (identity_secret, _) = self.resolve_secret(
            "backend.identity_secret",
            raw.identity_secret_env,
            raw.identity_secret_file,
            None,
            true,
        );
        if let Some(s) = &identity_secret {
            if s.len() < MIN_SHARED_SECRET {
                self.problem(format!(
                    "backend.identity_secret: is {} bytes; at least {MIN_SHARED_SECRET} are required",
                    s.len()
                ));
            }
        }
        if raw.connect_timeout.is_zero() {
            self.problem("backend.connect_timeout: must be greater than 0".into());
        }
        if !(1..=MAX_HTTP2_STREAMS).contains(&raw.upstream_http2_streams) {
            self.problem(format!(
                "backend.upstream_http2_streams: must be 1..={MAX_HTTP2_STREAMS}, got {}",
                raw.upstream_http2_streams
            ));
        }
        let forward_client_headers = self.forward_client_headers(&raw.forward_client_headers);
        BackendConfig {
            kind: raw.kind,
            upstream: raw.upstream,
            upstream_ca_file,
            upstream_http2: raw.upstream_http2,
            upstream_http2_streams: raw.upstream_http2_streams,
            message_schema_file,
            identity_secret,
            forward_client_headers,
            connect_timeout: raw.connect_timeout,
        }
    }

    /// `backend.forward_client_headers`: header names (any case) of the
    /// forwarding family the gateway otherwise drops, except the three it
    /// writes itself.
    fn forward_client_headers(&mut self, names: &[String]) -> Vec<http::HeaderName> {
        use crate::backend::forwarded;
        let mut out: Vec<http::HeaderName> = Vec::new();
        for (i, raw) in names.iter().enumerate() {
            let at = format!("backend.forward_client_headers[{i}]");
            let via = self.via("backend.forward_client_headers");
            match http::HeaderName::from_bytes(raw.as_bytes()) {
                Err(_) => self.problem(format!("{at}: {raw:?} is not a valid header name{via}")),
                Ok(n) if forwarded::WRITTEN.contains(&n) => self.problem(format!(
                    "{at}: {raw:?} is written by the gateway from what it verified; \
                     it cannot be passed through{via}"
                )),
                Ok(n) if !forwarded::in_family(n.as_str()) => self.problem(format!(
                    "{at}: {raw:?} is not a forwarding header; only those are dropped, \
                     and the others reach the upstream anyway (docs/backends.md){via}"
                )),
                Ok(n) => {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
        }
        out
    }
}
