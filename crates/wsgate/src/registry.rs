//! Live sessions of this node and the slots they hold: the global and
//! per-user connection caps (cluster-wide through the store when it is
//! shared), the entries the admin API lists, revokes and refreshes, and the
//! line to each session's task ([`Controls`]). Takes the store and the
//! metrics it uses, never the whole gateway.

use crate::metrics::Metrics;
use crate::store::Store;
use crate::tasks::Tasks;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use wsgate_core::revocation::Target;
use wsgate_core::Reason;

/// Live sessions of this node: counts under the caps, and the entries the
/// admin API lists, revokes and refreshes. An entry lives exactly as long as
/// its [`Slot`], so nothing leaks whatever ends the session.
pub struct Registry {
    active: AtomicUsize,
    inner: Mutex<RegistryInner>,
    /// Woken when the last session ends (a drain waits on it).
    idle: tokio::sync::Notify,
    /// `limits.max_connections` and `limits.connections_per_user` (0: none).
    max_connections: usize,
    per_user: u32,
    next_id: AtomicU64,
    /// Random per process: names this node's cluster-wide slot leases.
    node_id: String,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// Asks for a slot renewal now (the store came back).
    renew_now: tokio::sync::Notify,
    /// Where slot releases run (shutdown waits for them).
    tasks: Tasks,
}

#[derive(Default)]
struct RegistryInner {
    per_user: HashMap<String, u32>,
    sessions: HashMap<u64, Entry>,
    /// Cluster-wide per-user slots this node holds: holder -> sub.
    leases: HashMap<String, String>,
    /// Slots whose grab or release had no confirmed outcome (a timeout, a
    /// store error): holder -> (sub, until when a late grab could still
    /// leave it in the store). Released again at every renewal until then,
    /// so a grab that runs late cannot leave a phantom slot behind.
    undo: HashMap<String, (String, std::time::Instant)>,
}

/// At most this many unconfirmed slots are remembered for undoing; past it
/// the oldest lapse by their lease alone.
const MAX_UNDO: usize = 65_536;

/// How long a cluster-wide per-user slot lives without renewal: a crashed
/// node's slots free themselves within this.
pub const USER_SLOT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// What the admin API sees of a live session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    pub id: u64,
    pub sub: String,
    pub sid: Option<String>,
    pub jti: Option<String>,
    /// Serialized as text ("203.0.113.7"); kept binary so an upgrade does
    /// not format it (1.3k instructions) for a listing that may never come.
    pub ip: std::net::IpAddr,
    pub origin: Option<String>,
    pub transport: &'static str,
    /// Unix ms.
    pub connected_at: i64,
    /// Unix ms; moves on refresh.
    pub deadline: i64,
}

/// A request to a live session's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Close 4403.
    Revoke,
    /// Re-authenticate within `expiry_warning` (admin refresh).
    Reauth,
    /// Close 1001: the gateway is shutting down.
    Drain,
}

impl Control {
    /// Taken in this order when several are pending: closing wins.
    const ALL: [Control; 3] = [Control::Revoke, Control::Drain, Control::Reauth];

    fn bit(self) -> u8 {
        match self {
            Control::Revoke => 1,
            Control::Drain => 2,
            Control::Reauth => 4,
        }
    }
}

/// The registry's line to one session: pending requests as bits and the
/// task's waker. A few dozen bytes per session where a channel took ~600,
/// and a request repeated before it is taken is one request, as it should.
#[derive(Default)]
pub struct Controls {
    pending: AtomicU8,
    waker: futures_util::task::AtomicWaker,
}

impl Controls {
    pub fn send(&self, c: Control) {
        self.pending.fetch_or(c.bit(), Ordering::AcqRel);
        self.waker.wake();
    }

    fn take(&self) -> Option<Control> {
        let pending = self.pending.load(Ordering::Acquire);
        let c = Control::ALL.into_iter().find(|c| pending & c.bit() != 0)?;
        self.pending.fetch_and(!c.bit(), Ordering::AcqRel);
        Some(c)
    }

    /// The next request; cancel-safe (nothing is taken until it is returned).
    pub fn poll_recv(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Control> {
        if let Some(c) = self.take() {
            return std::task::Poll::Ready(c);
        }
        self.waker.register(cx.waker());
        // A send between the first look and the registration.
        self.take()
            .map_or(std::task::Poll::Pending, std::task::Poll::Ready)
    }

    /// [`poll_recv`](Self::poll_recv) as a future.
    pub fn recv(&self) -> impl std::future::Future<Output = Control> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }
}

struct Entry {
    info: SessionInfo,
    control: Arc<Controls>,
}

/// A held connection slot; released on drop (with its registry entry and
/// its cluster-wide lease).
pub struct Slot {
    registry: Arc<Registry>,
    sub: String,
    id: Option<u64>,
    lease: Option<String>,
}

impl Registry {
    pub fn new(
        max_connections: u32,
        per_user: u32,
        node_id: String,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        tasks: Tasks,
    ) -> Self {
        Registry {
            active: AtomicUsize::new(0),
            inner: Mutex::default(),
            idle: tokio::sync::Notify::new(),
            max_connections: max_connections as usize,
            per_user,
            next_id: AtomicU64::new(1),
            node_id,
            store,
            metrics,
            renew_now: tokio::sync::Notify::new(),
            tasks,
        }
    }

    /// A connection id unique within this process.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live sessions, optionally of one subject.
    pub fn list(&self, sub: Option<&str>) -> Vec<SessionInfo> {
        let g = self.lock();
        let mut v: Vec<SessionInfo> = g
            .sessions
            .values()
            .filter(|e| sub.is_none_or(|s| e.info.sub == s))
            .map(|e| e.info.clone())
            .collect();
        v.sort_by_key(|i| i.id);
        v
    }

    /// Sends `c` to every session; returns how many.
    pub fn signal_all(&self, c: Control) -> usize {
        self.lock()
            .sessions
            .values()
            .inspect(|e| e.control.send(c))
            .count()
    }

    /// Sends `c` to every session matching `target`; returns how many.
    pub fn signal(&self, target: &Target, c: Control) -> usize {
        let g = self.lock();
        g.sessions
            .values()
            .filter(|e| match target {
                Target::Sub(s) => e.info.sub == *s,
                Target::Jti(j) => e.info.jti.as_deref() == Some(j.as_str()),
                Target::Sid(s) => e.info.sid.as_deref() == Some(s.as_str()),
            })
            .inspect(|e| e.control.send(c))
            .count()
    }

    /// The cluster-wide slots this node holds, for renewal.
    /// Remembers a slot to take back at the next renewals (see `undo`).
    pub fn undo_later(&self, sub: &str, holder: String) {
        let until = std::time::Instant::now() + USER_SLOT_LEASE;
        let mut g = self.lock();
        if g.undo.len() >= MAX_UNDO {
            if let Some(oldest) = g
                .undo
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(h, _)| h.clone())
            {
                g.undo.remove(&oldest);
            }
        }
        g.undo.insert(holder, (sub.to_owned(), until));
    }

    /// The slots to take back now; forgets those past their lease.
    pub fn undo_due(&self) -> Vec<(String, String)> {
        let now = std::time::Instant::now();
        let mut g = self.lock();
        g.undo.retain(|_, (_, until)| *until > now);
        g.undo
            .iter()
            .map(|(h, (sub, _))| (sub.clone(), h.clone()))
            .collect()
    }

    /// One session fewer; the last one wakes a drain.
    fn release_one(&self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until no session is left, at most until `deadline`.
    pub async fn drained(&self, deadline: tokio::time::Instant) {
        loop {
            // Registered before the check, so a last session ending in
            // between is not missed.
            let idle = self.idle.notified();
            if self.active() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return;
            }
        }
    }

    pub fn leases(&self) -> Vec<(String, String)> {
        self.lock()
            .leases
            .iter()
            .map(|(holder, sub)| (sub.clone(), holder.clone()))
            .collect()
    }

    /// Records a session's new deadline (admin refresh).
    pub fn set_deadline(&self, id: u64, deadline: i64) {
        if let Some(e) = self.lock().sessions.get_mut(&id) {
            e.info.deadline = deadline;
        }
    }

    /// Records a session's new identity after an in-band refresh.
    pub fn update(&self, id: u64, v: &wsgate_core::verify::Verified, deadline: i64) {
        if let Some(e) = self.lock().sessions.get_mut(&id) {
            e.info.jti = v.jti.clone();
            e.info.sid = v.sid.clone();
            e.info.deadline = deadline;
        }
    }

    /// Takes a slot for `sub` under the per-user and global caps.
    pub fn acquire(self: &Arc<Self>, sub: &str) -> Result<Slot, Reason> {
        let prev = self.active.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_connections {
            self.release_one();
            return Err(Reason::TooManyConnections);
        }
        let mut g = self.lock();
        let n = g.per_user.entry(sub.to_owned()).or_insert(0);
        if self.per_user > 0 && *n >= self.per_user {
            if *n == 0 {
                g.per_user.remove(sub);
            }
            drop(g);
            self.release_one();
            return Err(Reason::TooManyConnections);
        }
        *n += 1;
        Ok(Slot {
            registry: self.clone(),
            sub: sub.to_owned(),
            id: None,
            lease: None,
        })
    }

    /// Takes a slot, counting `connections_per_user` across the cluster when
    /// the store is shared. A store that cannot answer fails closed.
    pub async fn acquire_everywhere(self: &Arc<Self>, sub: &str) -> Result<Slot, Reason> {
        let mut slot = self.acquire(sub)?;
        let cap = self.per_user;
        if cap == 0 || !self.store.is_shared() {
            return Ok(slot);
        }
        let holder = format!("{}:{}", self.node_id, self.next_id());
        match self
            .store
            .acquire_user_slot(sub, &holder, cap, USER_SLOT_LEASE)
            .await
        {
            Ok(true) => {
                self.lock().leases.insert(holder.clone(), sub.to_owned());
                slot.lease = Some(holder);
                Ok(slot)
            }
            Ok(false) => Err(Reason::TooManyConnections),
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(event = "store_error", op = "acquire_user_slot", error = %e);
                // The grab may still run (Redis paused, a reply lost): take
                // it back now and at the next renewals.
                self.undo_later(sub, holder.clone());
                let registry = self.clone();
                let sub = sub.to_owned();
                self.tasks.spawn(async move {
                    let _ = registry.store.release_user_slot(&sub, &holder).await;
                });
                Err(Reason::StoreUnavailable)
            }
        }
    }

    /// Asks [`renew`](Self::renew) to run now (the store came back).
    pub fn renew_soon(&self) {
        self.renew_now.notify_one();
    }

    /// Renews this node's cluster-wide per-user slots well before they
    /// lapse, re-creating any the store forgot (a Redis restarted without
    /// persistence), and takes back slots whose grab or release had no
    /// confirmed outcome. Runs every third of the lease and after each
    /// revocation resync (the store may just have come back), so after a
    /// fault the counts match this node's live sockets within one period.
    pub async fn renew(self: Arc<Self>) {
        let lease = USER_SLOT_LEASE;
        let mut tick = tokio::time::interval(lease / 3);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.renew_now.notified() => {}
            }
            for (sub, holder) in self.undo_due() {
                if let Err(e) = self.store.release_user_slot(&sub, &holder).await {
                    self.metrics.store_errors.inc();
                    tracing::warn!(event = "store_error", op = "release_user_slot", error = %e);
                    break;
                }
            }
            let held = self.leases();
            if let Err(e) = self.store.renew_user_slots(&held, lease).await {
                self.metrics.store_errors.inc();
                tracing::warn!(event = "store_error", op = "renew_user_slots", error = %e);
            }
        }
    }
}

impl Slot {
    /// Registers the session behind this slot; the entry goes with the slot.
    pub fn attach(&mut self, info: SessionInfo, control: Arc<Controls>) {
        self.id = Some(info.id);
        self.registry
            .lock()
            .sessions
            .insert(info.id, Entry { info, control });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let reg = &self.registry;
        let mut g = reg.lock();
        if let Some(id) = self.id {
            g.sessions.remove(&id);
        }
        if let Some(holder) = self.lease.take() {
            g.leases.remove(&holder);
            // Drop cannot wait; if this fails the lease expires by itself.
            let registry = self.registry.clone();
            let sub = self.sub.clone();
            self.registry.tasks.spawn_if_runtime(async move {
                if registry
                    .store
                    .release_user_slot(&sub, &holder)
                    .await
                    .is_err()
                {
                    // Retried at the next renewals, else it lapses.
                    registry.undo_later(&sub, holder);
                }
            });
        }
        if let Some(n) = g.per_user.get_mut(&self.sub) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.per_user.remove(&self.sub);
            }
        }
        drop(g);
        reg.release_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn controls_closing_first_and_repeats_coalesce() {
        let c = Arc::new(Controls::default());
        c.send(Control::Reauth);
        c.send(Control::Reauth);
        c.send(Control::Revoke);
        assert_eq!(c.recv().await, Control::Revoke);
        assert_eq!(c.recv().await, Control::Reauth);
        let idle = tokio::time::timeout(Duration::from_millis(20), c.recv()).await;
        assert!(idle.is_err(), "nothing pending after the repeat");
        // A send from elsewhere wakes a waiting task.
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.recv().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        c.send(Control::Drain);
        let got = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(matches!(got, Ok(Ok(Control::Drain))));
    }
}
