//! Configuration: a TOML file, `WSGATE_<SECTION>__<KEY>` environment
//! overrides, secret indirection (`*_env`, `*_file`) and validation that
//! reports every problem it can find, one line each, naming the key.
//!
//! One module per TOML section owns that section: its effective type,
//! what the file says before secrets and paths are resolved (`Raw*`), and
//! its checks. `build` runs them in order, `de` reads TOML values with
//! typed errors, `urls` reads every URL, `warnings` lists risky but valid
//! settings. The redacted view `wsgate check` prints is the `Serialize`
//! form of [`Config`]: a [`Secret`] serialises as `[redacted]` (`redact`).
//!
//! Secrets never appear inline in the file and never in any message or in
//! [`Config::redacted`]: only the names of the variables and files they come
//! from do.

mod admin;
mod auth;
mod backend;
mod build;
mod de;
mod hub;
mod issuers;
mod keys;
mod limits;
mod log;
mod origins;
mod overrides;
mod pem;
mod redact;
mod secret;
mod server;
mod store;
#[cfg(test)]
mod tests;
mod tickets;
mod trusted_proxies;
mod urls;
mod warnings;

pub use admin::{AdminConfig, MIN_ADMIN_TOKEN};
pub use auth::AuthConfig;
pub use backend::{BackendConfig, BackendKind};
pub use hub::{Grant, HubConfig};
pub use issuers::IssuerConfig;
pub use keys::{JwksOptions, KeyConfig, KeySource, PreviousSecret};
pub use limits::LimitsConfig;
pub use log::{LogConfig, LogFormat};
pub use origins::OriginsConfig;
pub use secret::{Secret, SecretSource};
pub use server::{ServerConfig, TlsConfig};
pub use store::{StoreConfig, StoreUrl, DEFAULT_STORE_KEY_PREFIX};
pub use tickets::TicketsConfig;
pub use trusted_proxies::TrustedProxiesConfig;

use build::Builder;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::Table;

/// The validated, effective configuration. Its `Serialize` form is the
/// redacted view ([`Config::redacted`]), sections in the documented order.
#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip)]
    pub dev_mode: bool,
    /// The file it was loaded from (reloaded on SIGHUP for keys); `None` in dev mode.
    #[serde(skip)]
    pub source: Option<PathBuf>,
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
            .map_err(|e| vec![build::toml_syntax_error(path, &text, &e)])?;
        let mut problems = Vec::new();
        let applied = overrides::apply(&mut table, env_vars, &mut problems);
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut c = Builder::new(base, env_vars, false, applied, problems).build(table)?;
        c.source = Some(path.to_path_buf());
        Ok(c)
    }

    /// Dev mode (docs/reference.md): loopback listeners, a random HS256 key
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
}
