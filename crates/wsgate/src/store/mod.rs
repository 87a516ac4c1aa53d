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

use crate::error::{Error, Kind, Side};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use wsgate_core::revocation::Revocation;
use wsgate_core::UnixMillis;

/// Why the store could not answer. Every variant fails closed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or answered an error: the operation did
    /// not take effect.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The operation was sent but its answer never came (a timeout, a
    /// connection lost): it may or may not have taken effect.
    #[error("store unavailable, outcome unknown: {0}")]
    Unconfirmed(String),
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

    /// Persists `r` until `r.until` and announces it to every node sharing
    /// the store (this one included, through [`Store::watch_revocations`]).
    async fn revoke(&self, r: &Revocation) -> Result<(), StoreError>;

    /// Every revocation still in force at `now`: what a node loads when it
    /// starts and after each reconnect of its revocation feed, with whether
    /// the store vouches that the set is complete. A store that lost the
    /// set (a Redis restarted without persistence, a flush) does not, until
    /// a node that held the complete set up to the loss wrote it back and
    /// called this with `vouch` (or, with no such node, until a wait set by
    /// the store has passed since the loss was seen).
    async fn revocations(&self, now: UnixMillis, vouch: bool) -> Result<Snapshot, StoreError>;

    /// Whether the stored set is still marked complete (cheap; polled, so a
    /// node notices a flush that its subscription survived).
    async fn revocations_intact(&self) -> Result<bool, StoreError>;

    /// Starts delivering [`Feed`] events to `tx`: each revocation announced
    /// by any node, and a `Resync` whenever the feed (re)connects, because
    /// pub/sub is at-most-once and announcements may have been missed.
    /// Called once per node. The channel is bounded; a full channel turns
    /// into a `Resync` rather than a lost revocation.
    fn watch_revocations(&self, tx: mpsc::Sender<Feed>);

    /// Whether state is shared with other nodes (per-user caps then need
    /// the store; a single node counts in its own registry).
    fn is_shared(&self) -> bool;

    /// Takes one of `sub`'s `cap` connection slots across the cluster for
    /// `holder` (unique per connection), leased for `lease`. `Ok(false)` when
    /// the user is at the cap. Leases of a crashed node simply expire.
    async fn acquire_user_slot(
        &self,
        sub: &str,
        holder: &str,
        cap: u32,
        lease: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives a slot back.
    async fn release_user_slot(&self, sub: &str, holder: &str) -> Result<(), StoreError>;

    /// Extends the leases of slots this node still holds.
    async fn renew_user_slots(
        &self,
        held: &[(String, String)],
        lease: Duration,
    ) -> Result<(), StoreError>;

    /// Announces a hub message to every node (at-most-once, like any
    /// real-time fan-out). Only called when [`Store::is_shared`].
    async fn hub_publish(&self, payload: &str) -> Result<(), StoreError>;

    /// Starts delivering hub announcements (from every node, this one
    /// included) to `tx`, resubscribing after reconnects; each
    /// (re)subscription is announced as [`HubFeed::Gap`].
    fn watch_hub(&self, tx: mpsc::Sender<HubFeed>);

    /// Announces an admin refresh to the other nodes (shared store only).
    async fn announce_refresh(&self, payload: &str) -> Result<(), StoreError>;

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// `memory` or `redis`, for logs.
    fn kind(&self) -> &'static str;
}

/// The revocations a store holds, and whether they are all there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub revocations: Vec<Revocation>,
    pub complete: bool,
    /// When not complete: since when (ms, the store's clock) the set has
    /// been seen incomplete, i.e. about when it was lost.
    pub incomplete_since: Option<UnixMillis>,
}

/// What the hub feed delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubFeed {
    /// An announcement from some node.
    Message(String),
    /// The feed was (re)subscribed: announcements made before may not have
    /// reached this node.
    Gap,
}

/// What the revocation feed delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// A revocation announced by some node.
    Revoked(Revocation),
    /// Reload everything with [`Store::revocations`]: the feed (re)connected
    /// or fell behind.
    Resync,
    /// The feed answered a ping sent at this time: every revocation
    /// announced before it has been delivered.
    Alive(UnixMillis),
    /// An admin refresh made on node `node`: matching sessions must
    /// re-authenticate (nothing is stored: it concerns live sessions only).
    Refresh {
        node: String,
        target: wsgate_core::revocation::Target,
    },
}

/// An admin refresh as announced: `{"op":"refresh","node","kind","value"}`.
pub fn refresh_to_json(node: &str, t: &wsgate_core::revocation::Target) -> String {
    serde_json::json!({"op": "refresh", "node": node, "kind": t.kind(), "value": t.value()})
        .to_string()
}

/// Parses a feed payload: a revocation, a refresh, or (unknown) a resync.
pub fn feed_from_json(s: &str) -> Feed {
    if let Some(r) = revocation_from_json(s) {
        return Feed::Revoked(r);
    }
    let parsed = serde_json::from_str::<serde_json::Value>(s)
        .ok()
        .and_then(|v| {
            if v.get("op")?.as_str()? != "refresh" {
                return None;
            }
            Some(Feed::Refresh {
                node: v.get("node")?.as_str()?.to_owned(),
                target: wsgate_core::revocation::Target::from_parts(
                    v.get("kind")?.as_str()?,
                    v.get("value")?.as_str()?,
                )?,
            })
        });
    parsed.unwrap_or(Feed::Resync)
}

/// A revocation as stored and announced: `{"kind","value","at","until"}`.
pub fn revocation_to_json(r: &Revocation) -> String {
    serde_json::json!({
        "kind": r.target.kind(),
        "value": r.target.value(),
        "at": r.at,
        "until": r.until,
    })
    .to_string()
}

/// Parses [`revocation_to_json`]'s output; `None` for anything else.
pub fn revocation_from_json(s: &str) -> Option<Revocation> {
    let v: serde_json::Value = serde_json::from_str(s).ok()?;
    Some(Revocation {
        target: wsgate_core::revocation::Target::from_parts(
            v.get("kind")?.as_str()?,
            v.get("value")?.as_str()?,
        )?,
        at: v.get("at")?.as_i64()?,
        until: v.get("until")?.as_i64()?,
    })
}

/// Opens the store named by `store.url` (`memory://` or `redis://...`).
/// Never blocks on the network: a Redis that is down at startup is
/// connected to lazily, and requests fail closed until it answers.
pub fn open(c: &crate::config::StoreConfig) -> crate::error::Result<Arc<dyn Store>> {
    let url = c.url.as_str();
    if url.starts_with("memory://") {
        Ok(Arc::new(memory::MemoryStore::new(
            memory::DEFAULT_MAX_ENTRIES,
        )))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        Ok(Arc::new(
            redis::RedisStore::new(url, &c.key_prefix)?
                .with_writeback_wait(c.revocation_writeback_wait),
        ))
    } else {
        let context = format!("store.url: unsupported scheme in {url:?}");
        Err(Error::explain(Kind::Config, Side::Store, context))
    }
}
