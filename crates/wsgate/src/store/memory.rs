//! `memory://`: the store of a single node. State lives in this process and
//! dies with it, which the epoch fence below accounts for.

use super::{Feed, Snapshot, Store, StoreError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use wsgate_core::revocation::Revocation;
use wsgate_core::UnixMillis;

/// Default capacity of the used-id table. One entry costs roughly the id
/// (a 22-40 byte `jti`) plus map overhead, so about 100 MB at the cap; with
/// tickets living at most 60 s this is far above any sane ticket rate.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

/// Below this size pruning is not worth scheduling more finely.
const MIN_PRUNE_THRESHOLD: usize = 1024;

/// A single node's store: a bounded table of used ids with their expiry.
pub struct MemoryStore {
    /// Creation time. Ids issued before it are refused: with a configured
    /// ticket secret, tickets minted before a restart still verify after
    /// it, and this process cannot know whether they were already used.
    epoch: UnixMillis,
    max_entries: usize,
    table: Mutex<Table>,
    /// Revocations of this node (there is no other).
    revocations: Mutex<(RevocationList, Vec<mpsc::Sender<Feed>>)>,
}

/// Revocations kept with their full records, pruned as they expire.
type RevocationList = Vec<Revocation>;

struct Table {
    /// id -> expiry (Unix ms). An entry at or past its expiry is absent.
    used: HashMap<String, UnixMillis>,
    /// Prune expired entries when `used` reaches this length. Doubling it
    /// after each prune keeps the cost amortised O(1) per insert.
    prune_at: usize,
    /// When the table was found full of live entries: nothing can expire
    /// before this instant, so until then `Full` is answered without
    /// rescanning the whole table on every call.
    full_until: Option<UnixMillis>,
}

impl MemoryStore {
    /// An empty store holding at most `max_entries` live ids; its epoch is
    /// now.
    pub fn new(max_entries: usize) -> Self {
        Self::with_epoch(max_entries, crate::clock::now_ms())
    }

    fn with_epoch(max_entries: usize, epoch: UnixMillis) -> Self {
        MemoryStore {
            epoch,
            max_entries,
            table: Mutex::new(Table {
                used: HashMap::new(),
                prune_at: MIN_PRUNE_THRESHOLD.min(max_entries),
                full_until: None,
            }),
            revocations: Mutex::new((Vec::new(), Vec::new())),
        }
    }

    /// Live and expired entries currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().used.len()
    }

    /// Whether the table holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every change is one insert or one retain), so a poisoned lock is
        // still safe to use; failing every later call would be worse.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The synchronous core of [`Store::use_once`], at an explicit `now`.
    fn use_once_at(
        &self,
        id: &str,
        issued_at: UnixMillis,
        ttl: Duration,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        if issued_at < self.epoch {
            return Ok(false);
        }
        // At least 1 ms, so that an id is never recorded as already expired.
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let expiry = now.saturating_add(ttl_ms);

        let mut t = self.lock();
        if let Some(exp) = t.used.get_mut(id) {
            if *exp > now {
                return Ok(false);
            }
            // Expired: the id is usable again, reusing its slot.
            *exp = expiry;
            return Ok(true);
        }
        if t.used.len() >= t.prune_at {
            self.prune(&mut t, now);
        }
        if t.used.len() >= self.max_entries {
            // Fail closed: accepting without recording would allow a replay.
            return Err(StoreError::Full);
        }
        t.used.insert(id.to_owned(), expiry);
        Ok(true)
    }

    fn prune(&self, t: &mut Table, now: UnixMillis) {
        if t.full_until.is_some_and(|until| now < until) {
            return;
        }
        let mut earliest = UnixMillis::MAX;
        t.used.retain(|_, exp| {
            let live = *exp > now;
            if live {
                earliest = earliest.min(*exp);
            }
            live
        });
        let len = t.used.len();
        t.prune_at = len
            .saturating_mul(2)
            .max(MIN_PRUNE_THRESHOLD)
            .min(self.max_entries);
        t.full_until = (len >= self.max_entries).then_some(earliest);
        if len < t.used.capacity() / 4 {
            // Give back memory after a burst.
            t.used.shrink_to(len.saturating_mul(2));
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn use_once(
        &self,
        id: &str,
        issued_at: UnixMillis,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.use_once_at(id, issued_at, ttl, crate::clock::now_ms())
    }

    async fn revoke(&self, r: &Revocation) -> Result<(), StoreError> {
        let now = crate::clock::now_ms();
        let mut g = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        g.0.retain(|x| x.until > now);
        g.0.push(r.clone());
        // A full or closed watcher gets a resync instead of a lost event.
        g.1.retain(|tx| match tx.try_send(Feed::Revoked(r.clone())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let _ = tx.try_send(Feed::Resync);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        Ok(())
    }

    /// Always complete: the set lives and dies with the one node using it.
    async fn revocations(&self, now: UnixMillis, _vouch: bool) -> Result<Snapshot, StoreError> {
        let g = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Snapshot {
            revocations: g.0.iter().filter(|r| r.until > now).cloned().collect(),
            complete: true,
            incomplete_since: None,
        })
    }

    async fn revocations_intact(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    fn watch_revocations(&self, tx: mpsc::Sender<Feed>) {
        let _ = tx.try_send(Feed::Resync);
        let mut g = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        g.1.push(tx);
    }

    fn is_shared(&self) -> bool {
        false
    }

    // One node: the registry's per-user counts are the whole truth, so the
    // gateway never asks a memory store for slots.
    async fn acquire_user_slot(
        &self,
        _sub: &str,
        _holder: &str,
        _cap: u32,
        _lease: Duration,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn release_user_slot(&self, _sub: &str, _holder: &str) -> Result<(), StoreError> {
        Ok(())
    }

    // One node: the hub delivers locally and has no one else to tell.
    async fn hub_publish(&self, _payload: &str) -> Result<(), StoreError> {
        Ok(())
    }

    fn watch_hub(&self, _tx: mpsc::Sender<super::HubFeed>) {}

    async fn announce_refresh(&self, _payload: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn renew_user_slots(
        &self,
        _held: &[(String, String)],
        _lease: Duration,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;
    use std::sync::Arc;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn first_use_then_used() {
        let s = MemoryStore::new(DEFAULT_MAX_ENTRIES);
        let now = now_ms();
        let ttl = Duration::from_secs(30);
        assert!(s.use_once("a", now, ttl).await.expect("first"));
        assert!(!s.use_once("a", now, ttl).await.expect("second"));
        assert!(!s.use_once("a", now + 5, ttl).await.expect("third"));
        assert!(s.use_once("b", now, ttl).await.expect("other id"));
        assert_eq!(s.kind(), "memory");
        s.ping().await.expect("ping");
    }

    #[test]
    fn expiry_frees_the_id_only_after_ttl() {
        let s = MemoryStore::with_epoch(100, 1_000);
        let ttl = 50 * MS;
        assert_eq!(s.use_once_at("x", 1_000, ttl, 2_000).ok(), Some(true));
        assert_eq!(s.use_once_at("x", 1_000, ttl, 2_001).ok(), Some(false));
        assert_eq!(s.use_once_at("x", 1_000, ttl, 2_049).ok(), Some(false));
        // At expiry the entry is absent.
        assert_eq!(s.use_once_at("x", 1_000, ttl, 2_050).ok(), Some(true));
        assert_eq!(s.use_once_at("x", 1_000, ttl, 2_051).ok(), Some(false));
        // A zero ttl still records the id for 1 ms.
        assert_eq!(
            s.use_once_at("z", 1_000, Duration::ZERO, 3_000).ok(),
            Some(true)
        );
        assert_eq!(
            s.use_once_at("z", 1_000, Duration::ZERO, 3_000).ok(),
            Some(false)
        );
        assert_eq!(
            s.use_once_at("z", 1_000, Duration::ZERO, 3_001).ok(),
            Some(true)
        );
        // A huge ttl saturates instead of overflowing.
        assert_eq!(
            s.use_once_at("h", 1_000, Duration::MAX, 3_000).ok(),
            Some(true)
        );
        assert_eq!(
            s.use_once_at("h", 1_000, Duration::MAX, i64::MAX - 1).ok(),
            Some(false)
        );
    }

    #[tokio::test]
    async fn expiry_in_real_time() {
        let s = MemoryStore::new(DEFAULT_MAX_ENTRIES);
        let issued = now_ms();
        let ttl = 80 * MS;
        assert!(s.use_once("t", issued, ttl).await.expect("first"));
        assert!(!s.use_once("t", issued, ttl).await.expect("within ttl"));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(s.use_once("t", issued, ttl).await.expect("after ttl"));
    }

    #[tokio::test]
    async fn issued_before_epoch_is_refused() {
        let s = MemoryStore::new(DEFAULT_MAX_ENTRIES);
        let ttl = Duration::from_secs(30);
        assert!(!s.use_once("old", s.epoch - 1, ttl).await.expect("old"));
        assert!(!s.use_once("old2", 0, ttl).await.expect("very old"));
        assert!(s.use_once("new", s.epoch, ttl).await.expect("at epoch"));
        // Refusing does not record anything.
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn pruning_keeps_the_table_bounded() {
        let cap = 100_000;
        let s = MemoryStore::with_epoch(cap, 0);
        let ttl = 10 * MS;
        let mut now = 1_000;
        // Many rounds of short-lived ids, each round after the previous
        // one expired: the table never grows past a small multiple of one
        // round, far below the cap.
        for round in 0..50 {
            for i in 0..3_000 {
                let id = format!("r{round}-{i}");
                assert_eq!(s.use_once_at(&id, 0, ttl, now).ok(), Some(true));
            }
            now += 20;
            assert!(
                s.len() <= 2 * 3_000 + MIN_PRUNE_THRESHOLD,
                "len {}",
                s.len()
            );
        }
    }

    #[tokio::test]
    async fn pruning_in_real_time() {
        let s = MemoryStore::new(10_000);
        let issued = now_ms();
        for i in 0..5_000 {
            assert!(s
                .use_once(&format!("a{i}"), issued, 30 * MS)
                .await
                .expect("a"));
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Without pruning this would reach 10 000 entries and answer Full.
        for i in 0..5_000 {
            assert!(s
                .use_once(&format!("b{i}"), issued, 30 * MS)
                .await
                .expect("b"));
        }
        assert!(
            s.len() <= 2 * 5_000 + MIN_PRUNE_THRESHOLD,
            "len {}",
            s.len()
        );
        assert!(s.len() < 10_000);
    }

    #[test]
    fn full_when_at_capacity_with_live_entries() {
        let s = MemoryStore::with_epoch(10, 0);
        let ttl = 100 * MS;
        for i in 0..10 {
            assert_eq!(
                s.use_once_at(&format!("id{i}"), 0, ttl, 1_000).ok(),
                Some(true)
            );
        }
        assert!(matches!(
            s.use_once_at("one-more", 0, ttl, 1_050),
            Err(StoreError::Full)
        ));
        // Used ids are still reported as used, not as an error.
        assert_eq!(s.use_once_at("id3", 0, ttl, 1_050).ok(), Some(false));
        // Once the entries expire there is room again.
        assert_eq!(s.use_once_at("one-more", 0, ttl, 1_100).ok(), Some(true));
        assert_eq!(s.len(), 1);
        // Capacity zero holds nothing and fails closed.
        let z = MemoryStore::with_epoch(0, 0);
        assert!(matches!(
            z.use_once_at("a", 0, ttl, 1),
            Err(StoreError::Full)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 8)]
    async fn concurrent_uses_of_one_id_accept_exactly_one() {
        let s = Arc::new(MemoryStore::new(DEFAULT_MAX_ENTRIES));
        let issued = now_ms();
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let s = s.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    s.use_once("shared", issued, Duration::from_secs(30)).await
                })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            if t.await.expect("task").expect("use_once") {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 1);
    }
}
