//! `[server]`: the public listener, and `[server.tls]` / `[admin.tls]`.

use super::build::Builder;
use super::de;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const MIN_HEADER_BYTES: usize = 1024;
const MAX_HEADER_BYTES: usize = 1024 * 1024;
/// More runtime threads than this is a typo, not a machine.
const MAX_WORKER_THREADS: usize = 1024;

/// `[server]`: the public listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    pub path: String,
    #[serde(with = "de::duration")]
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
    #[serde(with = "de::duration")]
    pub shutdown_grace: Duration,
    /// Then how long close handshakes may take before the process exits.
    #[serde(with = "de::duration")]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Builder<'_> {
    pub(super) fn check_server(&mut self, s: &mut ServerConfig) {
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

    pub(super) fn check_tls(&mut self, at: &str, tls: &mut TlsConfig) {
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
}
