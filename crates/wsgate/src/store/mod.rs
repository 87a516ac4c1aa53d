//! Shared state between gateway nodes: `memory://` for one node, `redis://`
//! for a cluster. Everything that must hold across nodes goes through
//! [`Store`]; a store error always fails closed (`503 store_unavailable`).
//!
//! Today the store carries single-use ticket ids. Revocations, per-user
//! connection counts (leases) and hub fan-out are added as methods of this
//! same trait by their issues, so a deployment has one place to point at
//! Redis and one failure mode to reason about.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use wsgate_core::UnixMillis;

/// Why the store could not answer. Every variant fails closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable, timed out, or answered an error.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bounded in-memory table is full of live entries.
    #[error("store full")]
    Full,
}

/// Shared state of a cluster (or of one node).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Atomically records `id` as used for `ttl` (the credential's remaining
    /// life). Returns `Ok(true)` the first time and `Ok(false) ` on any later
    /// call, from any node sharing the store. A credential issued
    /// (`issued_at`) before the store last lost its state (a restart of a
    /// non-persistent Redis, a fresh in-memory store) cannot be proven unused
    /// and is reported as used: no id is ever accepted twice.
    async fn use_once(
        &self,
        id: &str,
        issued_at: UnixMillis,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `memory` or `redis`, for logs.
    fn kind(&self) -> &'static str;
}

/// Opens the store named by `store.url` (`memory://` or `redis://...`).
/// Never blocks on the network: a Redis that is down at startup is
/// connected to lazily, and requests fail closed until it answers.
pub fn open(url: &str, key_prefix: &str) -> Result<Arc<dyn Store>, String> {
    if url.starts_with("memory://") {
        Ok(Arc::new(memory::MemoryStore::new(
            memory::DEFAULT_MAX_ENTRIES,
        )))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(Arc::new(redis::RedisStore::new(url, key_prefix)?))
    } else {
        Err(format!("store.url: unsupported scheme in {url:?}"))
    }
}
