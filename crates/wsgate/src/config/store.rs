//! `[store]`: where sessions, revocations and tickets are shared
//! (`memory://` for one node, `redis://` for several).

use super::build::Builder;
use super::{de, urls};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// Default `store.key_prefix`.
pub const DEFAULT_STORE_KEY_PREFIX: &str = "wsgate:";

/// `[store]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub url: StoreUrl,
    /// Prepended to every Redis key, so several deployments (or test runs)
    /// can share one Redis without seeing each other's state.
    pub key_prefix: String,
    /// How long this node's revocation set may go unconfirmed by the store
    /// (no answered ping on the revocation feed, no reload) before it
    /// counts as unknown: upgrades and ticket mints then answer
    /// `503 store_unavailable`, `/readyz` 503.
    #[serde(with = "de::duration")]
    pub max_revocation_staleness: Duration,
    /// After Redis lost its data (restarted without persistence), how long
    /// nodes wait for one that held the complete revocation set to write it
    /// back before trusting what is stored.
    #[serde(with = "de::duration")]
    pub revocation_writeback_wait: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: StoreUrl("memory://".into()),
            key_prefix: DEFAULT_STORE_KEY_PREFIX.into(),
            max_revocation_staleness: Duration::from_secs(3),
            revocation_writeback_wait: Duration::from_secs(5),
        }
    }
}

impl StoreConfig {
    pub fn is_memory(&self) -> bool {
        self.url.0 == "memory://"
    }

    pub fn is_redis(&self) -> bool {
        self.url.0.starts_with("redis://") || self.url.0.starts_with("rediss://")
    }
}

/// `store.url`: a redis URL may carry a password, so `Debug`, `Display`
/// and `Serialize` show it with the password `[redacted]`; [`StoreUrl::as_str`]
/// is the URL itself.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct StoreUrl(String);

impl StoreUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&urls::without_password(&self.0))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for StoreUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl PartialEq<&str> for StoreUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl Builder<'_> {
    pub(super) fn check_store(&mut self, s: &StoreConfig) {
        let scheme = urls::store_scheme(s.url.as_str());
        let ok = s.is_memory() || matches!(scheme.as_deref(), Some("redis" | "rediss"));
        if s.url.as_str().starts_with("rediss://") {
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
}
