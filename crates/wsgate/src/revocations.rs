//! This node's revocation set, kept in step with the store, and whether it
//! can be trusted right now.
//!
//! A node that does not know the revocations must not admit anyone: it
//! would let a revoked token in. So the set counts as *known* only once it
//! was loaded from the store (complete: see `Store::revocations`), and
//! stays known only while the store keeps confirming it: each answered
//! ping on the revocation feed (everything announced before it has been
//! delivered) extends it by `store.max_revocation_staleness`. Past that,
//! [`crate::admission::not_revoked`] answers `503 store_unavailable` and
//! `/readyz` is 503 until the feed is back and the set reloaded.

use crate::app::{App, Control};
use crate::clock::now_ms;
use crate::store::Feed;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wsgate_core::revocation::RevocationSet;
use wsgate_core::UnixMillis;

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

/// Keeps this node's revocations in step with the store: each announced
/// revocation closes matching sessions; a resync (start, reconnect, or a
/// revocation whose write may not have landed) reloads the whole set and
/// writes back what the store lacks; each answered ping confirms it.
pub async fn feed(app: Arc<App>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    app.store.watch_revocations(tx);
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    // Pings confirm only a set that was loaded once (a resync is handled
    // in line, so later pings always follow a completed reload).
    let mut synced = false;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            () = app.revocation_resync.notified() => Some(Feed::Resync),
            _ = prune.tick() => {
                app.egress.prune(now_ms());
                app.revocations
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .prune(now_ms());
                continue;
            }
        };
        match ev {
            None => return,
            Some(Feed::Revoked(r)) => {
                apply(&app, r);
            }
            Some(Feed::Alive(at)) => {
                if synced {
                    app.revocation_freshness.confirmed(at);
                }
            }
            Some(Feed::Refresh { node, target }) => {
                // The node that took the call already asked its own sessions.
                if node != app.node_id {
                    app.registry.signal(&target, Control::Reauth);
                }
            }
            Some(Feed::Resync) => {
                resync(&app).await;
                synced = true;
            }
        }
    }
}

/// Adds a revocation to this node's set and closes matching sessions.
pub fn apply(app: &App, r: wsgate_core::revocation::Revocation) -> usize {
    let target = r.target.clone();
    app.revocations
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(r);
    app.registry.signal(&target, Control::Revoke)
}

/// Reloads the whole set until the store has it complete, writing back
/// what this node knows and the store lacks (a Redis restarted without
/// persistence forgot it; a revocation's write may have timed out).
async fn resync(app: &App) {
    let mut wait = Duration::from_millis(200);
    let mut vouch = false;
    loop {
        let started = now_ms();
        match app.store.revocations(started, vouch).await {
            Ok(snapshot) => {
                let n = snapshot.revocations.len();
                let mut stored = RevocationSet::new();
                for r in snapshot.revocations {
                    stored.insert(r.clone());
                    apply(app, r);
                }
                let wrote = write_back(app, &stored, started).await;
                if snapshot.complete {
                    app.revocation_freshness.confirmed(started);
                    // The store may have come back without this node's slots.
                    app.slots_resync.notify_one();
                    tracing::info!(event = "revocations_loaded", count = n as u64);
                    return;
                }
                // The store lost the set. A node whose set was current when
                // that happened has now written it back, and vouches for
                // the store's on its next load; others wait for such a node
                // (or for store.revocation_writeback_wait).
                let lost_at = snapshot.incomplete_since.unwrap_or(i64::MAX);
                if !vouch && wrote && app.revocation_freshness.was_known_at(lost_at) {
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
                app.metrics.store_errors.inc();
                tracing::warn!(event = "store_error", op = "revocations", error = %e);
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// Writes back the revocations this node knows that `stored` lacks; true
/// when every write succeeded.
async fn write_back(app: &App, stored: &RevocationSet, now: UnixMillis) -> bool {
    let known = app
        .revocations
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .entries();
    let mut ok = true;
    for r in known
        .into_iter()
        .filter(|r| r.until > now && !stored.covers(r))
    {
        if let Err(e) = app.store.revoke(&r).await {
            ok = false;
            app.metrics.store_errors.inc();
            tracing::warn!(event = "store_error", op = "revoke_repair", error = %e);
        }
    }
    ok
}
