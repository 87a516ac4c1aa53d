//! Configuration: a TOML file, `WSGATE_<SECTION>__<KEY>` environment
//! overrides, secret indirection (`*_env`, `*_file`) and validation that
//! reports every problem it can find, one line each, naming the key.
//!
//! Secrets never appear inline in the file and never in any message or in
//! [`Config::redacted`]: only the names of the variables and files they come
//! from do.

mod keys;
mod overrides;
mod secret;
#[cfg(test)]
mod tests;

pub use keys::{IssuerConfig, JwksOptions, PreviousSecret};
pub use secret::{Secret, SecretSource};

use ipnet::IpNet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Table, Value};
use wsgate_core::origin::OriginPolicy;
use wsgate_core::verify::{alg_name, parse_alg};
use wsgate_core::Transport;

/// The validated, effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub tickets: TicketsConfig,
    pub origins: OriginsConfig,
    pub limits: LimitsConfig,
    pub store: StoreConfig,
    pub backend: BackendConfig,
    pub trusted_proxies: TrustedProxiesConfig,
    pub hub: HubConfig,
    pub log: LogConfig,
    pub dev_mode: bool,
    /// The file it was loaded from (reloaded on SIGHUP for keys); `None` in dev mode.
    pub source: Option<PathBuf>,
}

/// `[server]`: the public listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    pub path: String,
    #[serde(deserialize_with = "de::duration")]
    pub handshake_timeout: Duration,
    pub max_header_bytes: usize,
    pub tls: Option<TlsConfig>,
    /// A PROXY protocol v1/v2 header starts every main-listener connection
    /// (from the L4 balancers in `trusted_proxies`); its source address is
    /// the client, and forwarding headers are not read.
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: an L7 proxy sits in front of the balancer,
    /// so when the PROXY source address is in `trusted_proxies`, its
    /// forwarding header (`trusted_proxies.header`) is read, as a direct
    /// trusted proxy's is. Off (the default), nothing in front appends to
    /// those headers and a client could write any address in them. Never
    /// for `PROXY UNKNOWN` / v2 `LOCAL` headers.
    pub proxy_protocol_forwarded: bool,
    /// On SIGTERM: how long live sockets keep working (while `/readyz`
    /// says 503 so the load balancer drains) before they are closed 1001.
    #[serde(deserialize_with = "de::duration")]
    pub shutdown_grace: Duration,
    /// Then how long close handshakes may take before the process exits.
    #[serde(deserialize_with = "de::duration")]
    pub shutdown_timeout: Duration,
    /// Runtime worker threads; 0: one per CPU the process may use; 1:
    /// the current-thread scheduler (see main.rs `runtime_builder`).
    pub worker_threads: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: "/ws".into(),
            handshake_timeout: Duration::from_secs(5),
            max_header_bytes: 16384,
            tls: None,
            proxy_protocol: false,
            proxy_protocol_forwarded: false,
            shutdown_grace: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            worker_threads: 0,
        }
    }
}

impl ServerConfig {
    /// The runtime's worker threads: `worker_threads`, or with 0 the CPUs
    /// this process may run on (its affinity mask, e.g. `taskset`, and
    /// its cgroup CPU quota).
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// `worker_threads = 1`: tokio's current-thread scheduler.
    pub fn current_thread(&self) -> bool {
        self.worker_threads == 1
    }
}

/// `[server.tls]` / `[admin.tls]`: both files are required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[admin]`: metrics and the admin API.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `None`: the admin API is disabled.
    pub token: Option<Secret>,
    /// The variable consulted for the token (absent when `token_file` is used).
    pub token_env: Option<String>,
    pub tls: Option<TlsConfig>,
    /// A non-loopback listener without `[admin.tls]`, on purpose (warned).
    pub allow_plaintext: bool,
}

/// `[auth]`: credentials and their verification.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Enabled transports, in precedence order.
    pub transports: Vec<Transport>,
    pub cookie_name: String,
    pub cookie_csrf: bool,
    pub ticket_param: String,
    pub query_param: String,
    pub subprotocol: String,
    pub leeway: Duration,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub max_token_bytes: usize,
    pub first_message: bool,
    pub first_message_timeout: Duration,
    pub refresh: bool,
    pub expiry_warning: Duration,
    /// `None` when configured as `"0s"`.
    pub max_session: Option<Duration>,
    /// The longest a token may live (`exp - iat`): how long a revocation is
    /// kept. Longer-lived tokens are refused (`expired`) so that no token can
    /// outlive the record of its revocation.
    pub max_token_lifetime: Duration,
    pub keys: Vec<KeyConfig>,
    /// `[[auth.issuers]]`: more issuers, each with its own keys and audience.
    pub issuers: Vec<IssuerConfig>,
}

/// One `[[auth.keys]]` entry.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// Pinned algorithm; always set except for JWKS sources, where it may be omitted.
    pub alg: Option<Algorithm>,
    pub kid: Option<String>,
    pub source: KeySource,
    /// Fetching and caching (JWKS sources; defaults otherwise).
    pub jwks: JwksOptions,
    /// HS secrets: the previous secret, accepted during a rotation overlap.
    pub previous: Option<PreviousSecret>,
}

/// Where a verification key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// HS256/384/512 shared secret.
    Secret(Secret),
    /// A PEM public key, already read and checked for the key's algorithm.
    PublicKeyPem { path: PathBuf, pem: Vec<u8> },
    /// An `https://` JWK set (or `http://` on loopback).
    JwksUrl(String),
    /// A JWK set file, checked to hold a non-empty `keys` array.
    JwksFile(PathBuf),
}

impl KeyConfig {
    /// The key for `jsonwebtoken`; JWKS sources are loaded elsewhere.
    pub fn decoding_key(&self) -> Result<DecodingKey, String> {
        match &self.source {
            KeySource::Secret(s) => match self.alg.map(Algorithm::family) {
                // Refuse a secret under an asymmetric alg: that is the
                // classic algorithm-confusion hole.
                Some(AlgorithmFamily::Hmac) => Ok(DecodingKey::from_secret(s.expose())),
                _ => Err("a secret key needs alg HS256, HS384 or HS512".into()),
            },
            KeySource::PublicKeyPem { pem, .. } => {
                let alg = self
                    .alg
                    .ok_or_else(|| "alg is required for a public_key_file key".to_string())?;
                public_key_from_pem(alg, pem)
            }
            KeySource::JwksUrl(_) | KeySource::JwksFile(_) => {
                Err("jwks keys are loaded by the key manager".into())
            }
        }
    }
}

/// `[tickets]`: short-lived single-use upgrade tickets.
#[derive(Debug, Clone)]
pub struct TicketsConfig {
    pub enabled: bool,
    pub ttl: Duration,
    pub audience: String,
    /// `None` (memory store only): the server generates a per-process secret.
    pub secret: Option<Secret>,
    /// The variable consulted for the secret (absent when `secret_file` is used).
    pub secret_env: Option<String>,
}

/// `[origins]`: the Origin allow-list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginsConfig {
    pub allow: Vec<String>,
    pub allow_missing: bool,
}

impl OriginsConfig {
    /// The policy; the entries were validated at load, so this cannot fail
    /// for a loaded config (an invalid list yields a deny-all policy).
    pub fn policy(&self) -> OriginPolicy {
        OriginPolicy::new(&self.allow, self.allow_missing).unwrap_or_default()
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub handshakes_per_ip_per_sec: u32,
    pub handshake_burst_per_ip: u32,
    /// 0 = unlimited.
    pub connections_per_user: u32,
    pub max_connections: u32,
    pub max_message_bytes: usize,
    pub messages_per_sec: u32,
    #[serde(deserialize_with = "de::duration")]
    pub idle_timeout: Duration,
    #[serde(deserialize_with = "de::duration")]
    pub ping_interval: Duration,
    /// First-message sockets not yet authenticated, per node.
    pub max_unauthenticated: u32,
    /// Upgrade requests from one IP being processed at once.
    pub pending_handshakes_per_ip: u32,
    /// Hub deliveries queued towards one client at most (also bounded in
    /// bytes by `max_buffered_bytes`).
    pub outgoing_queue: usize,
    /// Bytes the gateway holds for one socket whose peer is behind: queued
    /// for it or handed to the socket and not yet taken by the kernel.
    /// A larger message still goes out alone (crate::backlog).
    pub max_buffered_bytes: usize,
    /// The same, summed over the node: past it every socket that falls
    /// behind is closed `1013 "slow consumer"`.
    pub max_buffered_bytes_total: usize,
    /// A socket whose writes make no progress for this long is closed
    /// `1013 "slow consumer"` (its peer, client or upstream, is not reading).
    #[serde(deserialize_with = "de::duration")]
    pub write_timeout: Duration,
    /// The most one socket read takes (at most 64 KiB). Client and upstream
    /// sockets read through a per-thread buffer and hold only what is not
    /// yet consumed ([`ReadAhead`](crate::readahead::ReadAhead)).
    pub read_buffer_bytes: usize,
    /// Bytes one user may receive per minute (all sockets of the node)
    /// before an `egress_alert` is logged and counted; 0 = off. A user
    /// suddenly pulling far more than usual is a sign of a stolen token.
    pub egress_alert_bytes_per_min: u64,
    /// Also close the socket that crossed the threshold (1008).
    pub egress_alert_close: bool,
    /// Rate-limit refusals of one address (IPv4, or IPv6 /64) within one
    /// second after which its new connections are dropped in the kernel
    /// for `block_duration` (a BPF filter on the listener); 0 = off.
    /// Direct peers only: never trusted proxies, never with PROXY protocol.
    pub block_after_refusals: u32,
    #[serde(deserialize_with = "de::duration")]
    pub block_duration: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            handshakes_per_ip_per_sec: 20,
            handshake_burst_per_ip: 40,
            connections_per_user: 10,
            max_connections: 100_000,
            max_message_bytes: 1_048_576,
            messages_per_sec: 100,
            idle_timeout: Duration::from_secs(120),
            ping_interval: Duration::from_secs(30),
            max_unauthenticated: 1000,
            pending_handshakes_per_ip: 64,
            outgoing_queue: 256,
            max_buffered_bytes: 1024 * 1024,
            max_buffered_bytes_total: 256 * 1024 * 1024,
            write_timeout: Duration::from_secs(2),
            read_buffer_bytes: 4096,
            egress_alert_bytes_per_min: 0,
            egress_alert_close: false,
            block_after_refusals: 0,
            block_duration: Duration::from_secs(60),
        }
    }
}

/// `[store]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: String,
    /// Prepended to every Redis key, so several deployments (or test runs)
    /// can share one Redis without seeing each other's state.
    pub key_prefix: String,
    /// How long this node's revocation set may go unconfirmed by the store
    /// (no answered ping on the revocation feed, no reload) before it
    /// counts as unknown: upgrades and ticket mints then answer
    /// `503 store_unavailable`, `/readyz` 503.
    #[serde(deserialize_with = "de::duration")]
    pub max_revocation_staleness: Duration,
    /// After Redis lost its data (restarted without persistence), how long
    /// nodes wait for one that held the complete revocation set to write it
    /// back before trusting what is stored.
    #[serde(deserialize_with = "de::duration")]
    pub revocation_writeback_wait: Duration,
}

/// Default `store.key_prefix`.
pub const DEFAULT_STORE_KEY_PREFIX: &str = "wsgate:";

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "memory://".into(),
            key_prefix: DEFAULT_STORE_KEY_PREFIX.into(),
            max_revocation_staleness: Duration::from_secs(3),
            revocation_writeback_wait: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A redis URL may carry a password.
        f.debug_struct("StoreConfig")
            .field("url", &redact::store_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("max_revocation_staleness", &self.max_revocation_staleness)
            .field("revocation_writeback_wait", &self.revocation_writeback_wait)
            .finish()
    }
}

impl StoreConfig {
    pub fn is_memory(&self) -> bool {
        self.url == "memory://"
    }

    pub fn is_redis(&self) -> bool {
        self.url.starts_with("redis://") || self.url.starts_with("rediss://")
    }
}

/// `[backend]`.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub kind: BackendKind,
    pub upstream: Option<String>,
    pub upstream_ca_file: Option<PathBuf>,
    /// Upstream WebSockets as RFC 8441 streams of shared HTTP/2 connections.
    pub upstream_http2: bool,
    /// The most streams the gateway opens on one HTTP/2 connection.
    pub upstream_http2_streams: usize,
    pub message_schema_file: Option<PathBuf>,
    /// HMAC key signing the identity headers forwarded upstream.
    pub identity_secret: Option<Secret>,
    /// Forwarding / client-identity headers (`X-Real-IP`, ...) passed to
    /// the upstream as the client wrote them; every other one of that
    /// family is dropped (backend/forwarded.rs). Lower case, no duplicates.
    pub forward_client_headers: Vec<http::HeaderName>,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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

/// `[trusted_proxies]`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxiesConfig {
    pub cidrs: Vec<IpNet>,
    /// Which forwarding header the trusted proxies write. Only that one is
    /// read: a proxy passes the other through untouched, and a client could
    /// choose its own address with it.
    pub header: wsgate_core::client_ip::ProxyHeader,
}

impl TrustedProxiesConfig {
    /// Whether `ip` is a trusted proxy (IPv4-mapped IPv6 peers count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.cidrs.iter().any(|net| net.contains(&ip))
    }
}

/// `[hub]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    pub grants: Vec<Grant>,
}

/// One `[[hub.grants]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grant {
    /// No claim: the grant applies to every authenticated user.
    pub claim: Option<String>,
    /// Matches when the claim equals it or (array) contains it.
    #[serde(deserialize_with = "de::grant_value")]
    pub value: Option<String>,
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Human,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Human => "human",
        }
    }
}

// ---------------------------------------------------------------------------
// Raw sections: what the file says, before secrets and paths are resolved.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAuth {
    transports: Vec<String>,
    cookie_name: String,
    cookie_csrf: bool,
    ticket_param: String,
    query_param: String,
    subprotocol: String,
    #[serde(deserialize_with = "de::duration")]
    leeway: Duration,
    issuer: Option<String>,
    #[serde(deserialize_with = "de::string_or_list")]
    audience: Vec<String>,
    max_token_bytes: usize,
    first_message: bool,
    #[serde(deserialize_with = "de::duration")]
    first_message_timeout: Duration,
    refresh: bool,
    #[serde(deserialize_with = "de::duration")]
    expiry_warning: Duration,
    #[serde(deserialize_with = "de::duration")]
    max_session: Duration,
    #[serde(deserialize_with = "de::duration")]
    max_token_lifetime: Duration,
    keys: Vec<RawKey>,
    issuers: Vec<keys::RawIssuer>,
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

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKey {
    alg: Option<String>,
    kid: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    public_key_file: Option<PathBuf>,
    jwks_url: Option<String>,
    jwks_file: Option<PathBuf>,
    // See config/keys.rs.
    ca_file: Option<PathBuf>,
    cache_min: Option<String>,
    cache_max: Option<String>,
    refetch_interval: Option<String>,
    fetch_timeout: Option<String>,
    previous_secret_env: Option<String>,
    previous_secret_file: Option<PathBuf>,
    previous_until: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTickets {
    enabled: bool,
    #[serde(deserialize_with = "de::duration")]
    ttl: Duration,
    audience: String,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawBackend {
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
    #[serde(deserialize_with = "de::duration")]
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

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTrustedProxies {
    cidrs: Vec<String>,
    header: Option<String>,
}

const SECTIONS: &[&str] = &[
    "server",
    "admin",
    "auth",
    "tickets",
    "origins",
    "limits",
    "store",
    "backend",
    "trusted_proxies",
    "hub",
    "log",
];

const DEFAULT_ADMIN_TOKEN_ENV: &str = "WSGATE_ADMIN_TOKEN";
const DEFAULT_TICKET_SECRET_ENV: &str = "WSGATE_TICKET_SECRET";
const MAX_LEEWAY: Duration = Duration::from_secs(300);
const MAX_TICKET_TTL: Duration = Duration::from_secs(60);
const MIN_HEADER_BYTES: usize = 1024;
const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// More runtime threads than this is a typo, not a machine.
const MAX_WORKER_THREADS: usize = 1024;
const MIN_SHARED_SECRET: usize = 32;
/// Streams per upstream HTTP/2 connection: past a few thousand one
/// connection (one task, one socket) becomes the bottleneck.
const MAX_HTTP2_STREAMS: usize = 10_000;
/// Admin tokens shorter than this are a config error: guessing one must be
/// hopeless even without the failure limit (server/admin/failures.rs).
pub const MIN_ADMIN_TOKEN: usize = 32;

/// An admin listener reachable from other hosts, speaking plain HTTP.
fn admin_in_clear(a: &AdminConfig) -> bool {
    !a.listen.ip().to_canonical().is_loopback() && a.tls.is_none()
}

impl Config {
    /// Loads `path`, applies `WSGATE_<SECTION>__<KEY>` overrides, resolves
    /// `_env`/`_file` secrets (variables are looked up in `env_vars`) and
    /// validates. Relative paths are relative to the config file's folder.
    pub fn load(path: &Path, env_vars: &[(String, String)]) -> Result<Config, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("{}: cannot read config file: {e}", path.display())])?;
        let mut table = text
            .parse::<Table>()
            .map_err(|e| vec![toml_syntax_error(path, &text, &e)])?;
        let mut problems = Vec::new();
        let applied = overrides::apply(&mut table, env_vars, &mut problems);
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut c = Builder::new(base, env_vars, false, applied, problems).build(table)?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Dev mode (SPEC 1): loopback listeners, a random HS256 key
    /// (`auth.keys[0]`), local origins, hub backend, memory store, random
    /// ticket secret. `WSGATE_` overrides apply; listeners stay on loopback.
    pub fn dev(env_vars: &[(String, String)]) -> Result<Config, Vec<String>> {
        let mut table = Table::new();
        let mut problems = Vec::new();
        let applied = overrides::apply(&mut table, env_vars, &mut problems);
        Builder::new(PathBuf::new(), env_vars, true, applied, problems).build(table)
    }

    /// The origins dev mode allows for a listener: the listener's own
    /// address and `localhost`, on its port. The server may call this again
    /// after binding port 0 to learn the real port.
    pub fn dev_origins(listen: SocketAddr) -> Vec<String> {
        let port = listen.port();
        let host = match listen.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        vec![
            format!("http://{host}:{port}"),
            format!("http://localhost:{port}"),
        ]
    }

    /// The effective config as TOML, every secret value shown as
    /// `[redacted]` (variable names and file paths are shown).
    pub fn redacted(&self) -> String {
        redact::render(self)
    }

    /// Non-fatal findings worth a line in the startup log.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let a = &self.auth;
        let has = |t: Transport| a.transports.contains(&t);
        if has(Transport::Query) {
            w.push(format!(
                "auth.transports includes \"query\": session tokens in ?{}= end up in access logs, \
                 proxy logs and browser history; prefer tickets",
                a.query_param
            ));
        }
        let exposed = !self.server.listen.ip().is_loopback()
            && self.server.tls.is_none()
            && self.trusted_proxies.cidrs.is_empty();
        if exposed && (has(Transport::Cookie) || has(Transport::Ticket)) {
            w.push(format!(
                "server.listen {} is not a loopback address and there is no [server.tls] and no \
                 trusted_proxies: cookie and ticket credentials cross the network in clear text \
                 unless a TLS-terminating proxy is in front (list it in trusted_proxies.cidrs)",
                self.server.listen
            ));
        }
        if self.server.proxy_protocol_forwarded && !self.server.proxy_protocol {
            w.push(
                "server.proxy_protocol_forwarded has no effect without server.proxy_protocol: \
                 a trusted proxy's forwarding headers are read anyway"
                    .into(),
            );
        }
        if self.limits.block_after_refusals > 0 && self.server.proxy_protocol {
            w.push(
                "limits.block_after_refusals has no effect with server.proxy_protocol: every \
                 packet comes from the balancer, which is never blocked"
                    .into(),
            );
        }
        if self.tickets.enabled && self.tickets.secret.is_none() {
            w.push(format!(
                "tickets: no ticket secret ({}): a random per-process secret is used, so tickets \
                 are only valid on this node",
                unset_what(self.tickets.secret_env.as_deref(), "tickets.secret_env")
            ));
        }
        if self.tickets.enabled && !has(Transport::Ticket) && !self.dev_mode {
            w.push(
                "tickets.enabled = true but \"ticket\" is not in auth.transports: issued tickets \
                 cannot be used to connect"
                    .into(),
            );
        }
        if !self.tickets.enabled && has(Transport::Ticket) {
            w.push(
                "auth.transports includes \"ticket\" but tickets.enabled = false: the ticket \
                 transport accepts nothing"
                    .into(),
            );
        }
        if self.admin.token.is_none() {
            w.push(format!(
                "admin: no admin token ({}): the admin API (/admin/v1/*) is disabled",
                unset_what(self.admin.token_env.as_deref(), "admin.token_env")
            ));
        }
        if self.admin.allow_plaintext && admin_in_clear(&self.admin) {
            w.push(format!(
                "admin.allow_plaintext = true: the admin listener {} is not a loopback address \
                 and has no [admin.tls]; the admin token and every admin request cross the \
                 network in clear text",
                self.admin.listen
            ));
        }
        if self.origins.allow.is_empty() {
            w.push(if self.origins.allow_missing {
                "origins.allow is empty: every browser upgrade is refused (only clients that send \
                 no Origin header can connect)"
                    .into()
            } else {
                "origins.allow is empty and origins.allow_missing = false: every upgrade is refused"
                    .into()
            });
        }
        if self.backend.kind == BackendKind::Hub && self.hub.grants.is_empty() {
            w.push(
                "hub.grants is empty: with the hub backend every subscribe and publish is refused \
                 (forbidden)"
                    .into(),
            );
        }
        if self.backend.kind == BackendKind::Upstream {
            if let Some(up) = &self.backend.upstream {
                if up.starts_with("ws://") && !url_host_is_loopback(&up["ws://".len()..]) {
                    w.push(
                        "backend.upstream uses ws:// to a non-loopback host: forwarded identity \
                         headers and messages travel unencrypted"
                            .into(),
                    );
                }
            }
            if self.backend.identity_secret.is_none() {
                w.push(
                    "backend: no identity secret (identity_secret_env / identity_secret_file): \
                     the upstream cannot verify that identity headers come from the gateway"
                        .into(),
                );
            }
        }
        w
    }
}

fn unset_what(env: Option<&str>, key: &str) -> String {
    match env {
        Some(name) => format!("{name} is not set"),
        None => format!("{key} is not set"),
    }
}

/// A TOML syntax error as one line: `file: line L, column C: message`.
fn toml_syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{}: line {line}, column {col}: {msg}", path.display())
        }
        None => format!("{}: {msg}", path.display()),
    }
}

// ---------------------------------------------------------------------------
// Building and validation.

struct Builder<'a> {
    base: PathBuf,
    env: HashMap<&'a str, &'a str>,
    dev: bool,
    applied: Vec<overrides::Applied>,
    problems: Vec<String>,
    failed: BTreeSet<&'static str>,
}

enum EnvLookup<'a> {
    Set(&'a str),
    Unset,
    Empty,
}

impl<'a> Builder<'a> {
    fn new(
        base: PathBuf,
        env_vars: &'a [(String, String)],
        dev: bool,
        applied: Vec<overrides::Applied>,
        problems: Vec<String>,
    ) -> Self {
        Builder {
            base,
            env: env_vars
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            dev,
            applied,
            problems,
            failed: BTreeSet::new(),
        }
    }

    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }

    fn env(&self, name: &str) -> EnvLookup<'a> {
        match self.env.get(name) {
            None => EnvLookup::Unset,
            Some(&"") => EnvLookup::Empty,
            Some(v) => EnvLookup::Set(v),
        }
    }

    /// ` (set by WSGATE_...)` when an override set `key` or a parent of it.
    fn via(&self, key: &str) -> String {
        self.applied
            .iter()
            .find(|a| {
                key == a.key
                    || key.starts_with(&format!("{}.", a.key))
                    || key.starts_with(&format!("{}[", a.key))
            })
            .map(|a| format!(" (set by {})", a.var))
            .unwrap_or_default()
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || self.base.as_os_str().is_empty() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// Deserializes one section; on failure reports it and uses defaults
    /// (the section's own checks are then skipped to avoid follow-on noise).
    fn section<T: DeserializeOwned + Default>(
        &mut self,
        root: &mut Table,
        name: &'static str,
    ) -> T {
        let Some(value) = root.remove(name) else {
            return T::default();
        };
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => t,
            Err(e) => {
                let inner = e.path().to_string();
                let at = if inner.is_empty() || inner == "?" {
                    name.to_string()
                } else if inner.starts_with('[') {
                    format!("{name}{inner}")
                } else {
                    format!("{name}.{inner}")
                };
                let msg = e.inner().message().trim().to_string();
                let line = match msg
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split_once('`'))
                {
                    Some((key, rest)) => {
                        // The path usually already ends with the unknown key.
                        let full = if at == key || at.ends_with(&format!(".{key}")) {
                            at.clone()
                        } else {
                            format!("{at}.{key}")
                        };
                        let expected = rest.trim_start_matches(',').trim();
                        format!("{full}: unknown key; {expected}{}", self.via(&full))
                    }
                    None => format!("{at}: {msg}{}", self.via(&at)),
                };
                self.problem(line);
                self.failed.insert(name);
                T::default()
            }
        }
    }

    fn ok(&self, section: &str) -> bool {
        !self.failed.contains(section)
    }

    /// Runs a section's checks, dropping their findings when the section
    /// itself did not parse (its values are defaults, not the operator's).
    fn checked<T>(&mut self, section: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let before = self.problems.len();
        let out = f(self);
        if !self.ok(section) {
            self.problems.truncate(before);
        }
        out
    }

    fn build(mut self, mut root: Table) -> Result<Config, Vec<String>> {
        let mut server: ServerConfig = self.section(&mut root, "server");
        let admin_raw: RawAdmin = self.section(&mut root, "admin");
        let auth_raw: RawAuth = self.section(&mut root, "auth");
        let tickets_raw: RawTickets = self.section(&mut root, "tickets");
        let mut origins: OriginsConfig = self.section(&mut root, "origins");
        let limits: LimitsConfig = self.section(&mut root, "limits");
        let store: StoreConfig = self.section(&mut root, "store");
        let backend_raw: RawBackend = self.section(&mut root, "backend");
        let proxies_raw: RawTrustedProxies = self.section(&mut root, "trusted_proxies");
        let mut hub: HubConfig = self.section(&mut root, "hub");
        let log: LogConfig = self.section(&mut root, "log");
        for (key, value) in root {
            let what = if value.is_table() { "section" } else { "key" };
            let via = self.via(&key);
            self.problem(format!(
                "{key}: unknown {what}; expected one of {}{via}",
                SECTIONS.join(", ")
            ));
        }

        self.checked("server", |b| b.check_server(&mut server));
        let admin = self.checked("admin", |b| b.build_admin(admin_raw, &server));
        let mut auth = self.checked("auth", |b| b.build_auth(auth_raw, &tickets_raw.audience));
        let mut tickets = self.checked("tickets", |b| b.build_tickets(tickets_raw, &store));
        self.checked("limits", |b| b.check_limits(&limits));
        self.checked("store", |b| b.check_store(&store));
        let backend = self.checked("backend", |b| b.build_backend(backend_raw));
        let trusted_proxies = self.checked("trusted_proxies", |b| b.build_proxies(proxies_raw));
        self.checked("hub", |b| b.check_hub(&hub));
        self.checked("log", |b| b.check_log(&log));

        if self.dev {
            self.apply_dev(
                &server,
                &admin,
                &mut auth,
                &mut tickets,
                &mut origins,
                &mut hub,
            );
        }
        self.checked("origins", |b| b.check_origins(&origins));
        if self.ok("tickets") && self.ok("auth") {
            self.check_ticket_secret_distinct(&tickets, &auth);
        }

        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        Ok(Config {
            server,
            admin,
            auth,
            tickets,
            origins,
            limits,
            store,
            backend,
            trusted_proxies,
            hub,
            log,
            dev_mode: self.dev,
            source: None,
        })
    }

    fn apply_dev(
        &mut self,
        server: &ServerConfig,
        admin: &AdminConfig,
        auth: &mut AuthConfig,
        tickets: &mut TicketsConfig,
        origins: &mut OriginsConfig,
        hub: &mut HubConfig,
    ) {
        for (key, addr) in [
            ("server.listen", server.listen),
            ("admin.listen", admin.listen),
        ] {
            if !addr.ip().is_loopback() {
                let via = self.via(key);
                self.problem(format!(
                    "{key}: dev mode listens on loopback addresses only, not {addr}{via}; \
                     use a config file to listen elsewhere"
                ));
            }
        }
        // The generated key is first, so the server signs dev tokens with keys[0].
        auth.keys.insert(
            0,
            KeyConfig {
                alg: Some(Algorithm::HS256),
                kid: None,
                source: KeySource::Secret(Secret::random(32)),
                jwks: JwksOptions::default(),
                previous: None,
            },
        );
        if tickets.secret.is_none() {
            tickets.secret = Some(Secret::random(32));
        }
        for o in Config::dev_origins(server.listen) {
            if !origins.allow.contains(&o) {
                origins.allow.push(o);
            }
        }
        // The banner's token is meant for CLI clients, which send no Origin;
        // the cookie transport still demands an allowed Origin.
        origins.allow_missing = true;
        if hub.grants.is_empty() {
            // Everything is allowed so the demo page works out of the box.
            hub.grants.push(Grant {
                claim: None,
                value: None,
                subscribe: vec!["*".into()],
                publish: vec!["*".into()],
            });
        }
    }

    // --- secrets -----------------------------------------------------------

    /// Reads a secret file, trimming one trailing newline.
    fn read_secret_file(&mut self, key: &str, path: &Path) -> Option<Secret> {
        match std::fs::read(path) {
            Ok(mut bytes) => {
                if bytes.ends_with(b"\r\n") {
                    bytes.truncate(bytes.len() - 2);
                } else if bytes.ends_with(b"\n") {
                    bytes.truncate(bytes.len() - 1);
                }
                if bytes.is_empty() {
                    self.problem(format!("{key}: {} is empty", path.display()));
                    return None;
                }
                Some(Secret::with_source(
                    bytes,
                    SecretSource::File(path.to_path_buf()),
                ))
            }
            Err(e) => {
                self.problem(format!("{key}: cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// Resolves `<at>_env` / `<at>_file`. Returns the secret and the name of
    /// the variable consulted. An unset variable is a problem only when
    /// `required`; the caller decides what a missing optional secret means.
    fn resolve_secret(
        &mut self,
        at: &str,
        env: Option<String>,
        file: Option<PathBuf>,
        default_env: Option<&str>,
        required: bool,
    ) -> (Option<Secret>, Option<String>) {
        let via = self.via(&format!("{at}_env"));
        match (env, file) {
            (Some(_), Some(_)) => {
                self.problem(format!(
                    "{at}_env and {at}_file are both set; give only one{via}"
                ));
                (None, None)
            }
            (None, Some(file)) => {
                let path = self.path(&file);
                (self.read_secret_file(&format!("{at}_file"), &path), None)
            }
            (env, None) => {
                let Some(name) = env.or_else(|| default_env.map(String::from)) else {
                    return (None, None);
                };
                if name.is_empty() {
                    self.problem(format!("{at}_env: must name an environment variable{via}"));
                    return (None, None);
                }
                match self.env(&name) {
                    EnvLookup::Set(v) => (
                        Some(Secret::with_source(
                            v.as_bytes().to_vec(),
                            SecretSource::Env(name.clone()),
                        )),
                        Some(name),
                    ),
                    miss => {
                        if required {
                            let how = match miss {
                                EnvLookup::Empty => "is empty",
                                _ => "is not set",
                            };
                            self.problem(format!(
                                "{at}_env: environment variable {name} {how}{via}"
                            ));
                        }
                        (None, Some(name))
                    }
                }
            }
        }
    }

    // --- sections ----------------------------------------------------------

    fn check_server(&mut self, s: &mut ServerConfig) {
        if !s.path.starts_with('/')
            || s.path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            self.problem(format!(
                "server.path: must start with '/' and contain no spaces, '?' or '#' (got {:?})",
                s.path
            ));
        }
        if s.handshake_timeout.is_zero() {
            self.problem("server.handshake_timeout: must be greater than 0".into());
        }
        if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&s.max_header_bytes) {
            self.problem(format!(
                "server.max_header_bytes: must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES} (got {})",
                s.max_header_bytes
            ));
        }
        if s.worker_threads > MAX_WORKER_THREADS {
            self.problem(format!(
                "server.worker_threads: must be between 0 (one per CPU) and {MAX_WORKER_THREADS} (got {})",
                s.worker_threads
            ));
        }
        if let Some(tls) = &mut s.tls {
            self.check_tls("server.tls", tls);
        }
    }

    fn check_tls(&mut self, at: &str, tls: &mut TlsConfig) {
        tls.cert_file = self.path(&tls.cert_file);
        tls.key_file = self.path(&tls.key_file);
        let cert = tls.cert_file.clone();
        let key = tls.key_file.clone();
        self.check_pem_file(
            &format!("{at}.cert_file"),
            &cert,
            "CERTIFICATE-----",
            "certificate",
        );
        self.check_pem_file(
            &format!("{at}.key_file"),
            &key,
            "PRIVATE KEY-----",
            "private key",
        );
    }

    /// A readable file holding a PEM block whose BEGIN line ends with `marker`.
    fn check_pem_file(&mut self, key: &str, path: &Path, marker: &str, what: &str) {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let found = text
                    .lines()
                    .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(marker));
                if !found {
                    self.problem(format!("{key}: {} holds no PEM {what}", path.display()));
                }
            }
            Err(e) => self.problem(format!("{key}: cannot read {}: {e}", path.display())),
        }
    }

    fn build_admin(&mut self, raw: RawAdmin, server: &ServerConfig) -> AdminConfig {
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

    fn build_auth(&mut self, raw: RawAuth, ticket_audience: &str) -> AuthConfig {
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
                    } else {
                        ""
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
        if !is_cookie_name(&raw.cookie_name) {
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
        if raw.max_token_bytes == 0 {
            self.problem("auth.max_token_bytes: must be greater than 0".into());
        }
        if raw.max_token_lifetime.is_zero() {
            self.problem("auth.max_token_lifetime: must be greater than 0".into());
        }
        if raw.first_message_timeout.is_zero() {
            self.problem("auth.first_message_timeout: must be greater than 0".into());
        }
        if raw.expiry_warning.is_zero() {
            self.problem("auth.expiry_warning: must be greater than 0".into());
        }
        if raw.keys.is_empty() && raw.issuers.is_empty() && !self.dev {
            self.problem(
                "auth.keys: at least one [[auth.keys]] entry is required (alg with secret_env, \
                 secret_file or public_key_file, or a jwks_url / jwks_file)"
                    .into(),
            );
        }
        // Raw indices are kept so messages match the file even when an
        // earlier entry failed.
        let auth_keys = !raw.keys.is_empty();
        let mut keys: Vec<(usize, KeyConfig)> = Vec::new();
        for (i, k) in raw.keys.into_iter().enumerate() {
            if let Some(k) = self.build_key(&format!("auth.keys[{i}]"), k) {
                keys.push((i, k));
            }
        }
        for (n, (i, k)) in keys.iter().enumerate() {
            let dup = keys[..n]
                .iter()
                .any(|(_, o)| k.kid.is_some() && o.kid == k.kid && o.alg == k.alg);
            if dup {
                self.problem(format!(
                    "auth.keys[{i}].kid: another key has kid {:?} and the same alg",
                    k.kid.as_deref().unwrap_or_default()
                ));
            }
        }
        let keys = keys.into_iter().map(|(_, k)| k).collect();
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

    fn build_key(&mut self, at: &str, mut raw: RawKey) -> Option<KeyConfig> {
        let extras = keys::RawExtras::take(&mut raw);
        let alg = match raw.alg.as_deref() {
            None => None,
            Some(s) => match parse_alg(s) {
                Some(a) => Some(a),
                None => {
                    self.problem(format!(
                        "{at}.alg: unknown algorithm {s:?}; expected HS256, HS384, HS512, RS256, \
                         RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA{}",
                        self.via(&format!("{at}.alg"))
                    ));
                    return None;
                }
            },
        };
        if raw.kid.as_deref() == Some("") {
            self.problem(format!("{at}.kid: must not be empty"));
        }
        let given: Vec<&str> = [
            ("secret_env", raw.secret_env.is_some()),
            ("secret_file", raw.secret_file.is_some()),
            ("public_key_file", raw.public_key_file.is_some()),
            ("jwks_url", raw.jwks_url.is_some()),
            ("jwks_file", raw.jwks_file.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
        if given.is_empty() {
            self.problem(format!(
                "{at}: no key source; set one of secret_env, secret_file, public_key_file, \
                 jwks_url, jwks_file"
            ));
            return None;
        }
        if given.len() > 1 {
            self.problem(format!(
                "{at}: {} are both set; give only one key source",
                given.join(" and ")
            ));
            return None;
        }
        let source = if raw.secret_env.is_some() || raw.secret_file.is_some() {
            let (secret, _) = self.resolve_secret(
                &format!("{at}.secret"),
                raw.secret_env,
                raw.secret_file,
                None,
                true,
            );
            let secret = secret?;
            match alg {
                None => {
                    self.problem(format!(
                        "{at}.alg: required (HS256, HS384 or HS512 for a secret)"
                    ));
                    return None;
                }
                Some(a) if a.family() != AlgorithmFamily::Hmac => {
                    self.problem(format!(
                        "{at}: {} is an asymmetric algorithm and needs public_key_file, not a secret",
                        alg_name(a)
                    ));
                    return None;
                }
                Some(a) => {
                    let min = hs_min_len(a);
                    if secret.len() < min {
                        self.problem(format!(
                            "{at}: the {} secret is {} bytes; at least {min} are required",
                            alg_name(a),
                            secret.len()
                        ));
                        return None;
                    }
                }
            }
            KeySource::Secret(secret)
        } else if let Some(file) = raw.public_key_file {
            let path = self.path(&file);
            let Some(a) = alg else {
                self.problem(format!(
                    "{at}.alg: required (RS*, PS*, ES256, ES384 or EdDSA for a public key)"
                ));
                return None;
            };
            if a.family() == AlgorithmFamily::Hmac {
                self.problem(format!(
                    "{at}: {} uses a shared secret (secret_env or secret_file), not public_key_file",
                    alg_name(a)
                ));
                return None;
            }
            let pem = match std::fs::read(&path) {
                Ok(p) => p,
                Err(e) => {
                    self.problem(format!(
                        "{at}.public_key_file: cannot read {}: {e}",
                        path.display()
                    ));
                    return None;
                }
            };
            if let Err(e) = public_key_from_pem(a, &pem) {
                self.problem(format!("{at}.public_key_file: {}: {e}", path.display()));
                return None;
            }
            KeySource::PublicKeyPem { path, pem }
        } else if let Some(url) = raw.jwks_url {
            if let Err(e) = check_jwks_url(&url) {
                self.problem(format!("{at}.jwks_url: {e}"));
                return None;
            }
            KeySource::JwksUrl(url)
        } else if let Some(file) = raw.jwks_file {
            let path = self.path(&file);
            if let Err(e) = check_jwks_file(&path) {
                self.problem(format!("{at}.jwks_file: {}: {e}", path.display()));
                return None;
            }
            KeySource::JwksFile(path)
        } else {
            return None;
        };
        let (jwks, previous) = self.key_extras(at, extras, &source, alg)?;
        Some(KeyConfig {
            alg,
            kid: raw.kid,
            source,
            jwks,
            previous,
        })
    }

    fn build_tickets(&mut self, raw: RawTickets, store: &StoreConfig) -> TicketsConfig {
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
    fn check_ticket_secret_distinct(&mut self, tickets: &TicketsConfig, auth: &AuthConfig) {
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

    fn check_origins(&mut self, o: &OriginsConfig) {
        if let Err(bad) = OriginPolicy::new(&o.allow, o.allow_missing) {
            for b in bad {
                let idx = o.allow.iter().position(|a| *a == b.0);
                let at = idx.map_or("origins.allow".into(), |i| format!("origins.allow[{i}]"));
                let via = self.via(&at);
                self.problem(format!("{at}: {b}{via}"));
            }
        }
    }

    fn check_limits(&mut self, l: &LimitsConfig) {
        let positive: [(&str, u64); 12] = [
            (
                "handshakes_per_ip_per_sec",
                u64::from(l.handshakes_per_ip_per_sec),
            ),
            (
                "handshake_burst_per_ip",
                u64::from(l.handshake_burst_per_ip),
            ),
            ("max_connections", u64::from(l.max_connections)),
            ("max_message_bytes", l.max_message_bytes as u64),
            ("messages_per_sec", u64::from(l.messages_per_sec)),
            ("max_unauthenticated", u64::from(l.max_unauthenticated)),
            (
                "pending_handshakes_per_ip",
                u64::from(l.pending_handshakes_per_ip),
            ),
            ("outgoing_queue", l.outgoing_queue as u64),
            ("max_buffered_bytes", l.max_buffered_bytes as u64),
            (
                "max_buffered_bytes_total",
                l.max_buffered_bytes_total as u64,
            ),
            (
                "idle_timeout",
                l.idle_timeout.as_millis().min(u128::from(u64::MAX)) as u64,
            ),
            (
                "write_timeout",
                l.write_timeout.as_millis().min(u128::from(u64::MAX)) as u64,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                self.problem(format!(
                    "limits.{key}: must be greater than 0 (only connections_per_user uses 0 for unlimited)"
                ));
            }
        }
        if l.max_buffered_bytes_total < l.max_buffered_bytes {
            self.problem(format!(
                "limits.max_buffered_bytes_total: {} is less than limits.max_buffered_bytes ({})",
                l.max_buffered_bytes_total, l.max_buffered_bytes
            ));
        }
        if !(256..=1_048_576).contains(&l.read_buffer_bytes) {
            self.problem(format!(
                "limits.read_buffer_bytes: must be between 256 and 1048576, got {}",
                l.read_buffer_bytes
            ));
        }
        if l.block_after_refusals > 0
            && !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&l.block_duration)
        {
            self.problem(format!(
                "limits.block_duration: must be between 1s and 24h, got {}",
                fmt_dur(l.block_duration)
            ));
        }
        if l.ping_interval.is_zero() {
            self.problem("limits.ping_interval: must be greater than 0".into());
        } else if l.ping_interval >= l.idle_timeout && !l.idle_timeout.is_zero() {
            self.problem(format!(
                "limits.ping_interval: {} must be shorter than limits.idle_timeout ({})",
                fmt_dur(l.ping_interval),
                fmt_dur(l.idle_timeout)
            ));
        }
    }

    fn check_store(&mut self, s: &StoreConfig) {
        let ok = s.is_memory()
            || ["redis://", "rediss://"].iter().any(|scheme| {
                s.url.strip_prefix(scheme).is_some_and(|rest| {
                    !authority(rest).rsplit('@').next().unwrap_or("").is_empty()
                })
            });
        if s.url.starts_with("rediss://") {
            // The Redis client is built without TLS for now (it arrives with
            // the TLS work); refusing here beats failing at startup.
            let via = self.via("store.url");
            self.problem(format!(
                "store.url: rediss:// (TLS to Redis) is not supported by this build yet; \
                 use redis:// over a private network or a TLS tunnel{via}"
            ));
        } else if !ok {
            // The URL may carry a password: never echo it.
            let via = self.via("store.url");
            self.problem(format!(
                "store.url: must be \"memory://\" or a redis://host[:port][/db] or rediss:// URL{via}"
            ));
        }
        // Printable ASCII without spaces: the prefix is part of every key and
        // shows up in `redis-cli` output, where odd bytes would only confuse.
        let prefix_ok =
            !s.key_prefix.is_empty() && s.key_prefix.bytes().all(|b| b.is_ascii_graphic());
        if !prefix_ok {
            let via = self.via("store.key_prefix");
            self.problem(format!(
                "store.key_prefix: must be non-empty printable ASCII without spaces, got {:?}{via}",
                s.key_prefix
            ));
        }
        // Below the feed's ping period plus its answer's timeout every
        // healthy node would flap between known and unknown.
        if s.max_revocation_staleness < Duration::from_secs(2) {
            let via = self.via("store.max_revocation_staleness");
            self.problem(format!(
                "store.max_revocation_staleness: must be at least 2s (the revocation feed is \
                 pinged every 500ms and waits 1s for the answer){via}"
            ));
        }
        if s.revocation_writeback_wait > Duration::from_secs(600) {
            let via = self.via("store.revocation_writeback_wait");
            self.problem(format!("store.revocation_writeback_wait: at most 10m{via}"));
        }
    }

    fn build_backend(&mut self, raw: RawBackend) -> BackendConfig {
        match (&raw.upstream, raw.kind) {
            (None, BackendKind::Upstream) => {
                self.problem("backend.upstream: required when backend.kind = \"upstream\"".into())
            }
            (Some(u), _) => {
                let rest = u.strip_prefix("ws://").or_else(|| u.strip_prefix("wss://"));
                let host_ok = rest.is_some_and(|r| !authority(r).is_empty());
                if !host_ok {
                    self.problem(format!(
                        "backend.upstream: {u:?} must be a ws:// or wss:// URL with a host"
                    ));
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

    fn build_proxies(&mut self, raw: RawTrustedProxies) -> TrustedProxiesConfig {
        let mut cidrs = Vec::new();
        for (i, s) in raw.cidrs.iter().enumerate() {
            let parsed = s
                .parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(n) => cidrs.push(n),
                Err(_) => self.problem(format!(
                    "trusted_proxies.cidrs[{i}]: {s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8){}",
                    self.via("trusted_proxies.cidrs")
                )),
            }
        }
        use wsgate_core::client_ip::ProxyHeader;
        let header = match raw.header.as_deref() {
            None | Some("x-forwarded-for") => ProxyHeader::XForwardedFor,
            Some("forwarded") => ProxyHeader::Forwarded,
            Some(other) => {
                self.problem(format!(
                    "trusted_proxies.header: {other:?} is not \"x-forwarded-for\" or \"forwarded\"{}",
                    self.via("trusted_proxies.header")
                ));
                ProxyHeader::XForwardedFor
            }
        };
        TrustedProxiesConfig { cidrs, header }
    }

    fn check_hub(&mut self, h: &HubConfig) {
        for (i, g) in h.grants.iter().enumerate() {
            let at = format!("hub.grants[{i}]");
            match (&g.claim, &g.value) {
                (None, Some(_)) => self.problem(format!(
                    "{at}.value: given without claim; add claim = \"...\""
                )),
                (Some(c), _) if c.is_empty() => {
                    self.problem(format!("{at}.claim: must not be empty"))
                }
                (Some(c), None) => self.problem(format!(
                    "{at}.value: required with claim = {c:?} (the grant matches when the claim \
                     equals or contains it)"
                )),
                _ => {}
            }
            for (kind, pats) in [("subscribe", &g.subscribe), ("publish", &g.publish)] {
                for (j, p) in pats.iter().enumerate() {
                    if p.is_empty() || !p.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                        self.problem(format!(
                            "{at}.{kind}[{j}]: {p:?} is not a channel pattern (1 or more printable \
                             ASCII characters)"
                        ));
                    }
                }
            }
        }
    }

    fn check_log(&mut self, l: &LogConfig) {
        const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
        let plain = !l.level.contains('=') && !l.level.contains(',');
        let ok = if plain {
            LEVELS
                .iter()
                .any(|lv| lv.eq_ignore_ascii_case(l.level.trim()))
        } else {
            tracing_subscriber::EnvFilter::try_new(&l.level).is_ok()
        };
        if !ok {
            self.problem(format!(
                "log.level: {:?} is not a level (trace, debug, info, warn, error, off) or a \
                 filter directive such as \"info,wsgate=debug\"{}",
                l.level,
                self.via("log.level")
            ));
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers.

fn hs_min_len(a: Algorithm) -> usize {
    match a {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// RFC 6265 cookie-name (an HTTP token).
fn is_cookie_name(s: &str) -> bool {
    is_http_token(s)
}

/// RFC 9110 token: what subprotocol and cookie names must be.
fn is_http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The authority of a URL after its `scheme://`.
fn authority(rest: &str) -> &str {
    rest.split(['/', '?', '#']).next().unwrap_or("")
}

/// The host of `host[:port]...` after `scheme://`, brackets kept for IPv6.
fn url_host(rest: &str) -> &str {
    let auth = authority(rest);
    let auth = auth.rsplit('@').next().unwrap_or(auth);
    if auth.starts_with('[') {
        auth.split_inclusive(']').next().unwrap_or(auth)
    } else {
        auth.split(':').next().unwrap_or(auth)
    }
}

fn url_host_is_loopback(rest: &str) -> bool {
    let host = url_host(rest);
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// JWKS must come over TLS; plain http only from this machine.
fn check_jwks_url(url: &str) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix("https://") {
        if url_host(rest).is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        return Ok(());
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let host = url_host(rest);
        if ["127.0.0.1", "localhost", "[::1]"].contains(&host.to_ascii_lowercase().as_str()) {
            return Ok(());
        }
        return Err(format!(
            "{url:?} must use https:// (http:// is accepted only for 127.0.0.1, localhost and [::1])"
        ));
    }
    Err(format!("{url:?} must be an https:// URL"))
}

fn check_jwks_file(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("is not JSON: {e}"))?;
    match doc.get("keys").and_then(serde_json::Value::as_array) {
        Some(keys) if !keys.is_empty() => Ok(()),
        Some(_) => Err("holds an empty \"keys\" array".into()),
        None => Err("is not a JWK set (no \"keys\" array)".into()),
    }
}

/// The label of the first PEM block (`PUBLIC KEY`, `PRIVATE KEY`, ...).
fn pem_label(pem: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(pem).ok()?;
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
            .map(str::to_owned)
    })
}

/// Parses a PEM public key for `alg`'s family, checking the EC curve.
fn public_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    let name = alg_name(alg);
    let label = pem_label(pem).ok_or("not a PEM file (no -----BEGIN line)")?;
    if label.contains("PRIVATE KEY") {
        return Err(
            "is a private key; configure the public key (openssl pkey -in KEY -pubout)".into(),
        );
    }
    if label != "PUBLIC KEY" && label != "RSA PUBLIC KEY" {
        return Err(format!(
            "holds a {label:?} PEM block; expected a public key (-----BEGIN PUBLIC KEY-----)"
        ));
    }
    match alg.family() {
        AlgorithmFamily::Hmac => Err(format!("{name} uses a shared secret, not a public key")),
        AlgorithmFamily::Rsa => {
            let key = DecodingKey::from_rsa_pem(pem)
                .map_err(|_| format!("is not an RSA public key, which {name} needs"))?;
            // Loaded, it would refuse every token `bad_signature`.
            use wsgate_core::verify::{rsa_bits, RSA_BITS};
            match rsa_bits(&key) {
                Some(bits) if RSA_BITS.contains(&bits) => Ok(key),
                bits => Err(format!(
                    "is a {}-bit RSA key: {name} needs {} to {} bits (RFC 7518 3.3)",
                    bits.unwrap_or(0),
                    RSA_BITS.start(),
                    RSA_BITS.end()
                )),
            }
        }
        AlgorithmFamily::Ec => {
            let key = DecodingKey::from_ec_pem(pem)
                .map_err(|_| format!("is not an EC public key, which {name} needs"))?;
            // The curve is fixed by the alg: P-256 for ES256, P-384 for ES384.
            // A SEC1 point is 1 + 2*32 (or 1 + 32 compressed) bytes on P-256.
            let point_len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
            let curve = match point_len {
                65 | 33 => "P-256",
                97 | 49 => "P-384",
                _ => "an unsupported curve",
            };
            let want = if alg == Algorithm::ES384 {
                "P-384"
            } else {
                "P-256"
            };
            if curve != want {
                return Err(format!("is a key on {curve}, but {name} needs {want}"));
            }
            Ok(key)
        }
        AlgorithmFamily::Ed => {
            let key = DecodingKey::from_ed_pem(pem)
                .map_err(|_| format!("is not an Ed25519 public key, which {name} needs"))?;
            if key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0) != 32 {
                return Err("is not an Ed25519 public key".into());
            }
            Ok(key)
        }
    }
}

// ---------------------------------------------------------------------------
// Deserialization helpers: one clear message per bad value.

mod de {
    use serde::de::{self, Deserializer, Visitor};
    use serde::Deserialize;
    use std::fmt;
    use std::net::SocketAddr;
    use std::time::Duration;

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration string such as \"500ms\", \"30s\", \"5m\" or \"1h\"")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
            humantime::parse_duration(s.trim()).map_err(|e| {
                E::custom(format!(
                    "invalid duration {s:?} ({e}); use e.g. \"500ms\", \"30s\", \"5m\", \"1h\""
                ))
            })
        }
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct AddrVisitor;

    impl Visitor<'_> for AddrVisitor {
        type Value = SocketAddr;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an address IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8080\"")
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<SocketAddr, E> {
            s.trim().parse().map_err(|_| {
                E::custom(format!(
                    "invalid address {s:?}; expected IP:PORT such as \"127.0.0.1:8080\", \
                     \"0.0.0.0:8080\" or \"[::1]:8080\" (host names are not resolved)"
                ))
            })
        }
    }

    pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        d.deserialize_any(AddrVisitor)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    /// `"api"` or `["api", "ws"]`.
    pub fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(s)) => Ok(vec![s]),
            Ok(OneOrMany::Many(v)) => Ok(v),
            Err(_) => Err(de::Error::custom("expected a string or a list of strings")),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Str(String),
        Bool(bool),
        Int(i64),
    }

    /// Claims compare as text, so `value = true` and `value = 42` are
    /// stringified (`"true"`, `"42"`).
    pub fn grant_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Scalar::deserialize(d) {
            Ok(Scalar::Str(s)) => Ok(Some(s)),
            Ok(Scalar::Bool(b)) => Ok(Some(b.to_string())),
            Ok(Scalar::Int(i)) => Ok(Some(i.to_string())),
            Err(_) => Err(de::Error::custom("expected a string, boolean or integer")),
        }
    }
}

// ---------------------------------------------------------------------------
// `wsgate check` output.

mod redact {
    use super::*;

    const REDACTED: &str = "[redacted]";

    fn s(v: impl Into<String>) -> Value {
        Value::String(v.into())
    }

    fn int(n: impl TryInto<i64>) -> Value {
        Value::Integer(n.try_into().unwrap_or(i64::MAX))
    }

    fn dur(d: Duration) -> Value {
        s(fmt_dur(d))
    }

    fn path(p: &Path) -> Value {
        s(p.display().to_string())
    }

    fn list<T: ToString>(items: &[T]) -> Value {
        Value::Array(items.iter().map(|i| s(i.to_string())).collect())
    }

    /// `<prefix>_env` / `<prefix>_file` as configured, and `<prefix>` as `[redacted]`.
    fn secret(t: &mut Table, prefix: &str, sec: Option<&Secret>, unset: Option<(&str, &str)>) {
        match sec {
            Some(sec) => {
                match sec.source() {
                    SecretSource::Env(name) => {
                        t.insert(format!("{prefix}_env"), s(name.clone()));
                    }
                    SecretSource::File(p) => {
                        t.insert(format!("{prefix}_file"), path(p));
                    }
                    SecretSource::Generated => {
                        t.insert(
                            prefix.to_string(),
                            s(format!("{REDACTED} (generated at startup)")),
                        );
                        return;
                    }
                    SecretSource::Provided => {}
                }
                t.insert(prefix.to_string(), s(REDACTED));
            }
            None => {
                if let Some((env, note)) = unset {
                    if !env.is_empty() {
                        t.insert(format!("{prefix}_env"), s(env));
                    }
                    t.insert(prefix.to_string(), s(format!("(unset: {note})")));
                }
            }
        }
    }

    fn tls(t: &mut Table, tls: Option<&TlsConfig>) {
        if let Some(tls) = tls {
            let mut x = Table::new();
            x.insert("cert_file".into(), path(&tls.cert_file));
            x.insert("key_file".into(), path(&tls.key_file));
            t.insert("tls".into(), Value::Table(x));
        }
    }

    /// A redis URL with its password replaced.
    pub(super) fn store_url(url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_string();
        };
        let auth = authority(rest);
        let Some((userinfo, host)) = auth.rsplit_once('@') else {
            return url.to_string();
        };
        let user = match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:{REDACTED}"),
            // A lone userinfo is the password in redis URLs (`redis://pass@host`).
            None => REDACTED.to_string(),
        };
        format!("{scheme}://{user}@{host}{}", &rest[auth.len()..])
    }

    fn server(c: &Config) -> Table {
        let v = &c.server;
        let mut t = Table::new();
        t.insert("listen".into(), s(v.listen.to_string()));
        t.insert("path".into(), s(v.path.clone()));
        t.insert("handshake_timeout".into(), dur(v.handshake_timeout));
        t.insert("max_header_bytes".into(), int(v.max_header_bytes));
        t.insert("proxy_protocol".into(), Value::Boolean(v.proxy_protocol));
        t.insert(
            "proxy_protocol_forwarded".into(),
            Value::Boolean(v.proxy_protocol_forwarded),
        );
        t.insert("shutdown_grace".into(), dur(v.shutdown_grace));
        t.insert("shutdown_timeout".into(), dur(v.shutdown_timeout));
        t.insert("worker_threads".into(), int(v.worker_threads));
        tls(&mut t, v.tls.as_ref());
        t
    }

    fn admin(c: &Config) -> Table {
        let v = &c.admin;
        let mut t = Table::new();
        t.insert("listen".into(), s(v.listen.to_string()));
        let env = v.token_env.as_deref().unwrap_or("");
        secret(
            &mut t,
            "token",
            v.token.as_ref(),
            Some((env, "admin API disabled")),
        );
        tls(&mut t, v.tls.as_ref());
        if v.allow_plaintext {
            t.insert("allow_plaintext".into(), Value::Boolean(true));
        }
        t
    }

    fn auth(c: &Config) -> Table {
        let v = &c.auth;
        let mut t = Table::new();
        t.insert("transports".into(), list(&v.transports));
        t.insert("cookie_name".into(), s(v.cookie_name.clone()));
        t.insert("cookie_csrf".into(), Value::Boolean(v.cookie_csrf));
        t.insert("ticket_param".into(), s(v.ticket_param.clone()));
        t.insert("query_param".into(), s(v.query_param.clone()));
        t.insert("subprotocol".into(), s(v.subprotocol.clone()));
        t.insert("leeway".into(), dur(v.leeway));
        if let Some(iss) = &v.issuer {
            t.insert("issuer".into(), s(iss.clone()));
        }
        t.insert("audience".into(), list(&v.audience));
        t.insert("max_token_bytes".into(), int(v.max_token_bytes));
        t.insert("first_message".into(), Value::Boolean(v.first_message));
        t.insert("first_message_timeout".into(), dur(v.first_message_timeout));
        t.insert("max_token_lifetime".into(), dur(v.max_token_lifetime));
        t.insert("refresh".into(), Value::Boolean(v.refresh));
        t.insert("expiry_warning".into(), dur(v.expiry_warning));
        t.insert(
            "max_session".into(),
            dur(v.max_session.unwrap_or(Duration::ZERO)),
        );
        let key_table = |k: &KeyConfig| {
            let mut kt = Table::new();
            if let Some(a) = k.alg {
                kt.insert("alg".into(), s(alg_name(a)));
            }
            if let Some(kid) = &k.kid {
                kt.insert("kid".into(), s(kid.clone()));
            }
            match &k.source {
                KeySource::Secret(sec) => secret(&mut kt, "secret", Some(sec), None),
                KeySource::PublicKeyPem { path: p, .. } => {
                    kt.insert("public_key_file".into(), path(p));
                }
                KeySource::JwksUrl(u) => {
                    kt.insert("jwks_url".into(), s(u.clone()));
                }
                KeySource::JwksFile(p) => {
                    kt.insert("jwks_file".into(), path(p));
                }
            }
            keys::render_extras(&mut kt, k);
            Value::Table(kt)
        };
        t.insert(
            "keys".into(),
            Value::Array(v.keys.iter().map(key_table).collect()),
        );
        if !v.issuers.is_empty() {
            let issuers = v
                .issuers
                .iter()
                .map(|i| {
                    let mut it = Table::new();
                    let issuer = match i.issuer.as_slice() {
                        [one] => s(one.clone()),
                        many => list(many),
                    };
                    it.insert("issuer".into(), issuer);
                    it.insert("audience".into(), list(&i.audience));
                    if !i.sub_prefix.is_empty() {
                        it.insert("sub_prefix".into(), s(i.sub_prefix.clone()));
                    }
                    it.insert(
                        "keys".into(),
                        Value::Array(i.keys.iter().map(key_table).collect()),
                    );
                    Value::Table(it)
                })
                .collect();
            t.insert("issuers".into(), Value::Array(issuers));
        }
        t
    }

    fn tickets(c: &Config) -> Table {
        let v = &c.tickets;
        let mut t = Table::new();
        t.insert("enabled".into(), Value::Boolean(v.enabled));
        t.insert("ttl".into(), dur(v.ttl));
        t.insert("audience".into(), s(v.audience.clone()));
        let env = v.secret_env.as_deref().unwrap_or("");
        secret(
            &mut t,
            "secret",
            v.secret.as_ref(),
            Some((env, "a random per-process secret is generated")),
        );
        t
    }

    fn limits(c: &Config) -> Table {
        let v = &c.limits;
        let mut t = Table::new();
        t.insert(
            "handshakes_per_ip_per_sec".into(),
            int(v.handshakes_per_ip_per_sec),
        );
        t.insert(
            "handshake_burst_per_ip".into(),
            int(v.handshake_burst_per_ip),
        );
        t.insert("connections_per_user".into(), int(v.connections_per_user));
        t.insert("max_connections".into(), int(v.max_connections));
        t.insert("max_message_bytes".into(), int(v.max_message_bytes));
        t.insert("messages_per_sec".into(), int(v.messages_per_sec));
        t.insert("idle_timeout".into(), dur(v.idle_timeout));
        t.insert("ping_interval".into(), dur(v.ping_interval));
        t.insert("max_unauthenticated".into(), int(v.max_unauthenticated));
        t.insert(
            "pending_handshakes_per_ip".into(),
            int(v.pending_handshakes_per_ip),
        );
        t.insert("outgoing_queue".into(), int(v.outgoing_queue));
        t.insert("max_buffered_bytes".into(), int(v.max_buffered_bytes));
        t.insert(
            "max_buffered_bytes_total".into(),
            int(v.max_buffered_bytes_total),
        );
        t.insert("write_timeout".into(), dur(v.write_timeout));
        t.insert("read_buffer_bytes".into(), int(v.read_buffer_bytes));
        t.insert(
            "egress_alert_bytes_per_min".into(),
            Value::Integer(i64::try_from(v.egress_alert_bytes_per_min).unwrap_or(i64::MAX)),
        );
        t.insert(
            "egress_alert_close".into(),
            Value::Boolean(v.egress_alert_close),
        );
        t.insert("block_after_refusals".into(), int(v.block_after_refusals));
        t.insert("block_duration".into(), dur(v.block_duration));
        t
    }

    fn backend(c: &Config) -> Table {
        let v = &c.backend;
        let mut t = Table::new();
        t.insert("kind".into(), s(v.kind.as_str()));
        if let Some(u) = &v.upstream {
            t.insert("upstream".into(), s(u.clone()));
        }
        if let Some(p) = &v.upstream_ca_file {
            t.insert("upstream_ca_file".into(), path(p));
        }
        t.insert("upstream_http2".into(), Value::Boolean(v.upstream_http2));
        t.insert(
            "upstream_http2_streams".into(),
            int(v.upstream_http2_streams),
        );
        if let Some(p) = &v.message_schema_file {
            t.insert("message_schema_file".into(), path(p));
        }
        secret(&mut t, "identity_secret", v.identity_secret.as_ref(), None);
        t.insert(
            "forward_client_headers".into(),
            list(&v.forward_client_headers),
        );
        t.insert("connect_timeout".into(), dur(v.connect_timeout));
        t
    }

    fn hub(c: &Config) -> Table {
        let grants = c
            .hub
            .grants
            .iter()
            .map(|g| {
                let mut gt = Table::new();
                if let Some(claim) = &g.claim {
                    gt.insert("claim".into(), s(claim.clone()));
                }
                if let Some(value) = &g.value {
                    gt.insert("value".into(), s(value.clone()));
                }
                gt.insert("subscribe".into(), list(&g.subscribe));
                gt.insert("publish".into(), list(&g.publish));
                Value::Table(gt)
            })
            .collect();
        let mut t = Table::new();
        t.insert("grants".into(), Value::Array(grants));
        t
    }

    pub(super) fn render(c: &Config) -> String {
        let mut origins = Table::new();
        origins.insert("allow".into(), list(&c.origins.allow));
        origins.insert(
            "allow_missing".into(),
            Value::Boolean(c.origins.allow_missing),
        );
        let mut store = Table::new();
        store.insert("url".into(), s(store_url(&c.store.url)));
        store.insert("key_prefix".into(), s(c.store.key_prefix.clone()));
        store.insert(
            "max_revocation_staleness".into(),
            dur(c.store.max_revocation_staleness),
        );
        store.insert(
            "revocation_writeback_wait".into(),
            dur(c.store.revocation_writeback_wait),
        );
        let mut proxies = Table::new();
        proxies.insert("cidrs".into(), list(&c.trusted_proxies.cidrs));
        proxies.insert(
            "header".into(),
            s(match c.trusted_proxies.header {
                wsgate_core::client_ip::ProxyHeader::Forwarded => "forwarded",
                _ => "x-forwarded-for",
            }),
        );
        let mut log = Table::new();
        log.insert("level".into(), s(c.log.level.clone()));
        log.insert("format".into(), s(c.log.format.as_str()));

        let sections = [
            ("server", server(c)),
            ("admin", admin(c)),
            ("auth", auth(c)),
            ("tickets", tickets(c)),
            ("origins", origins),
            ("limits", limits(c)),
            ("store", store),
            ("backend", backend(c)),
            ("trusted_proxies", proxies),
            ("hub", hub(c)),
            ("log", log),
        ];
        let mut out = String::from(
            "# wsgate effective configuration; secret values are shown as \"[redacted]\"\n",
        );
        if c.dev_mode {
            out.push_str("# dev mode: generated keys, loopback only; not for production\n");
        }
        // One section at a time keeps the documented order (toml sorts keys).
        for (name, table) in sections {
            let mut doc = Table::new();
            doc.insert(name.to_string(), Value::Table(table));
            out.push('\n');
            match toml::to_string(&doc) {
                Ok(text) => out.push_str(&text),
                Err(e) => out.push_str(&format!("# [{name}] could not be rendered: {e}\n")),
            }
        }
        out
    }
}
