//! This node's revocation set, kept in step with the store, and whether it
//! can be trusted right now.
//!
//! A node that does not know the revocations must not admit anyone: it
//! would let a revoked token in. So the set counts as *known* only once it
//! was loaded from the store (complete: see `Store::revocations`), and
//! stays known only while the store keeps confirming it: each answered
//! ping on the revocation feed (everything announced before it has been
//! delivered) extends it by `store.max_revocation_staleness`. Past that,
//! the admission check (`Admission::not_revoked`) answers `503
//! store_unavailable` and `/readyz` is 503 until the feed is back and the
//! set reloaded.

use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::registry::{Control, Registry};
use crate::store::{Feed, Store};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use wsgate_core::revocation::{Revocation, RevocationSet};
use wsgate_core::verify::Verified;
use wsgate_core::UnixMillis;

/// The revocations in force on this node, whether they may be trusted, and
/// the sessions a new one closes.
pub struct Revocations {
    set: RwLock<RevocationSet>,
    freshness: Freshness,
    /// Asks the feed to reload and write back (a revocation's write to the
    /// store may not have landed, or the store lost the set).
    resync: tokio::sync::Notify,
    registry: Arc<Registry>,
}

impl Revocations {
    /// `shared`: the store is shared with other nodes, so the set is unknown
    /// until loaded and goes stale after `staleness` without confirmation.
    pub fn new(shared: bool, staleness: Duration, registry: Arc<Registry>) -> Self {
        Revocations {
            set: RwLock::new(RevocationSet::new()),
            freshness: if shared {
                Freshness::new(staleness)
            } else {
                Freshness::always()
            },
            resync: tokio::sync::Notify::new(),
            registry,
        }
    }

    /// Whether the set may be trusted at `now`.
    pub fn is_known(&self, now: UnixMillis) -> bool {
        self.freshness.is_known(now)
    }

    /// Whether a verified token is revoked at `now`.
    pub fn is_revoked(&self, v: &Verified, now: UnixMillis) -> bool {
        self.set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_revoked(v, now)
    }

    /// Has the feed reload the set and write back what the store lacks.
    pub fn resync_soon(&self) {
        self.resync.notify_one();
    }

    /// Adds a revocation to this node's set and closes matching sessions.
    pub fn apply(&self, r: Revocation) -> usize {
        let target = r.target.clone();
        self.set
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r);
        self.registry.signal(&target, Control::Revoke)
    }

    fn prune(&self, now: UnixMillis) {
        self.set
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .prune(now);
    }
}

/// Until when the revocation set counts as current.
pub struct Freshness {
    /// Wall-clock ms; 0 until the first complete load. `i64::MAX` for a
    /// store that is the node's own memory.
    until: AtomicI64,

    staleness_ms: i64,
}

impl Freshness {
    /// For a shared store: unknown until loaded.
    pub fn new(staleness: Duration) -> Self {
        Freshness {
            until: AtomicI64::new(0),
            staleness_ms: i64::try_from(staleness.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// For the in-memory store: the node's own set is the whole truth.
    pub fn always() -> Self {
        Freshness {
            until: AtomicI64::new(i64::MAX),
            staleness_ms: i64::MAX,
        }
    }

    /// Whether the set may be trusted at `now`.
    pub fn is_known(&self, now: UnixMillis) -> bool {
        now < self.until.load(Ordering::Acquire)
    }

    /// The store confirmed the set as of `at` (a load, an answered ping).
    pub fn confirmed(&self, at: UnixMillis) {
        self.until
            .fetch_max(at.saturating_add(self.staleness_ms), Ordering::AcqRel);
    }

    /// Whether the set was current at `at`: then this node holds every
    /// revocation made before it, and may vouch for a store that lost the
    /// set at `at`. (`at` is the store's clock, `until` this node's: they
    /// must agree to within the staleness bound, as NTP keeps them.)
    fn was_known_at(&self, at: UnixMillis) -> bool {
        at < self.until.load(Ordering::Acquire)
    }
}

/// What the feed task works with: the set it keeps, the store it follows,
/// the slots it asks to renew after a reload.
pub struct FeedHandles {
    pub revocations: Arc<Revocations>,
    pub store: Arc<dyn Store>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// This node's id: refreshes it announced itself are not taken twice.
    pub node_id: String,
}

/// Keeps this node's revocations in step with the store: each announced
/// revocation closes matching sessions; a resync (start, reconnect, or a
/// revocation whose write may not have landed) reloads the whole set and
/// writes back what the store lacks; each answered ping confirms it.
pub async fn feed(h: FeedHandles) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    h.store.watch_revocations(tx);
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    // Pings confirm only a set that was loaded once (a resync is handled
    // in line, so later pings always follow a completed reload).
    let mut synced = false;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            () = h.revocations.resync.notified() => Some(Feed::Resync),
            _ = prune.tick() => {
                h.revocations.prune(now_ms());
                continue;
            }
        };
        match ev {
            None => return,
            Some(Feed::Revoked(r)) => {
                h.revocations.apply(r);
            }
            Some(Feed::Alive(at)) => {
                if synced {
                    h.revocations.freshness.confirmed(at);
                }
            }
            Some(Feed::Refresh { node, target }) => {
                // The node that took the call already asked its own sessions.
                if node != h.node_id {
                    h.registry.signal(&target, Control::Reauth);
                }
            }
            Some(Feed::Resync) => {
                resync(&h).await;
                synced = true;
            }
        }
    }
}

/// Reloads the whole set until the store has it complete, writing back
/// what this node knows and the store lacks (a Redis restarted without
/// persistence forgot it; a revocation's write may have timed out).
async fn resync(h: &FeedHandles) {
    let revocations = &h.revocations;
    let mut wait = Duration::from_millis(200);
    let mut vouch = false;
    loop {
        let started = now_ms();
        match h.store.revocations(started, vouch).await {
            Ok(snapshot) => {
                let n = snapshot.revocations.len();
                let mut stored = RevocationSet::new();
                for r in snapshot.revocations {
                    stored.insert(r.clone());
                    revocations.apply(r);
                }
                let wrote = write_back(h, &stored, started).await;
                if snapshot.complete {
                    revocations.freshness.confirmed(started);
                    // The store may have come back without this node's slots.
                    h.registry.renew_soon();
                    tracing::info!(event = "revocations_loaded", count = n as u64);
                    return;
                }
                // The store lost the set. A node whose set was current when
                // that happened has now written it back, and vouches for
                // the store's on its next load; others wait for such a node
                // (or for store.revocation_writeback_wait).
                let lost_at = snapshot.incomplete_since.unwrap_or(i64::MAX);
                if !vouch && wrote && revocations.freshness.was_known_at(lost_at) {
                    vouch = true;
                    continue;
                }
                tracing::warn!(
                    event = "revocations_incomplete",
                    count = n as u64,
                    reason = "the store lost its data; waiting for a node to write the set back"
                );
            }
            Err(e) => {
                h.metrics.store_errors.inc();
                tracing::warn!(event = "store_error", op = "revocations", error = %e);
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// Writes back the revocations this node knows that `stored` lacks; true
/// when every write succeeded.
async fn write_back(h: &FeedHandles, stored: &RevocationSet, now: UnixMillis) -> bool {
    let known = h
        .revocations
        .set
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .entries();
    let mut ok = true;
    for r in known
        .into_iter()
        .filter(|r| r.until > now && !stored.covers(r))
    {
        if let Err(e) = h.store.revoke(&r).await {
            ok = false;
            h.metrics.store_errors.inc();
            tracing::warn!(event = "store_error", op = "revoke_repair", error = %e);
        }
    }
    ok
}
