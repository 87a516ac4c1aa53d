//! The gateway's shared state, built once from a validated [`Config`].

use crate::config::{Config, KeySource, Secret};
use crate::limiter::HandshakeLimiter;
use crate::metrics::Metrics;
use crate::store::Store;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wsgate_core::client_ip::TrustedProxies;
use wsgate_core::credential::ExtractPolicy;
use wsgate_core::origin::OriginPolicy;
use wsgate_core::revocation::{RevocationSet, Target};
use wsgate_core::session::SessionPolicy;
use wsgate_core::verify::{ClaimRules, Verifier, VerifyKey};
use wsgate_core::Reason;

/// Everything a connection needs, shared by all of them.
pub struct App {
    pub config: Config,
    /// Session-token keys of every issuer (reloadable; see keys/mod.rs).
    pub verifier: crate::keys::Keys,
    pub origins: OriginPolicy,
    pub extract: ExtractPolicy,
    pub session_policy: SessionPolicy,
    /// Upstream sockets: tungstenite reads through its own buffer.
    pub ws_config: WebSocketConfig,
    /// Client sockets: a small tungstenite buffer, fed by a
    /// [`ReadAhead`](crate::readahead::ReadAhead) of `read_buffer_bytes`.
    pub client_ws_config: WebSocketConfig,
    pub registry: Registry,
    /// TLS certificates of the listeners, when configured (hot-reloadable).
    pub tls_main: Option<crate::tls::Tls>,
    pub tls_admin: Option<crate::tls::Tls>,
    /// Per-user egress monitoring.
    pub egress: crate::egress::Egress,
    /// The channel hub (used when `backend.kind = "hub"`).
    pub hub: crate::backend::hub::Hub,
    /// What the node holds for peers that are behind, and its bounds.
    pub backlog: Arc<crate::backlog::Backlog>,
    /// The upstream service (used when `backend.kind = "upstream"`).
    pub upstream: Option<crate::backend::upstream::Upstream>,
    /// First-message sockets not yet authenticated (their own small cap).
    pub unauthenticated: AtomicUsize,
    /// Revocations in force, kept in step with the store's feed.
    pub revocations: RwLock<RevocationSet>,
    /// Whether `revocations` may be trusted now (crate::revocations).
    pub revocation_freshness: crate::revocations::Freshness,
    /// Asks the revocation feed to reload and write back (a revocation's
    /// write to the store may not have landed).
    pub revocation_resync: tokio::sync::Notify,
    /// Asks for a slot renewal now (the store came back).
    pub slots_resync: tokio::sync::Notify,
    pub draining: AtomicBool,
    next_id: AtomicU64,
    /// Random per process: names this node's cluster-wide slot leases.
    pub node_id: String,
    /// Dev mode only: the key that signs `/dev/login` tokens.
    pub dev_signer: Option<EncodingKey>,
    /// Shared state (single use, later revocations and counts).
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    /// Per-IP handshake rate (decided before any token is verified).
    pub limiter: HandshakeLimiter,
    /// Failed admin authentications per peer IP (server/admin/failures.rs).
    pub admin_failures: crate::server::admin::failures::AuthFailures,
    /// Unfinished handshakes per peer IP (`limits.pending_handshakes_per_ip`).
    pub pending: crate::limiter::PendingHandshakes,
    /// Addresses dropped in the kernel (`limits.block_after_refusals`).
    pub blocklist: crate::blocklist::Blocklist,
    pub trusted_proxies: TrustedProxies,
    /// Last result of the periodic store check (`/readyz`).
    pub store_ready: AtomicBool,
    /// Tickets: signer and verifier from the ticket secret, when enabled.
    pub tickets: Option<Tickets>,
}

/// The ticket secret in its two uses.
pub struct Tickets {
    pub signer: EncodingKey,
    pub verifier: Verifier,
    pub ttl_ms: i64,
}

/// tungstenite's own read buffer on client sockets, allocated per socket
/// and kept for its life; the [`ReadAhead`](crate::readahead::ReadAhead)
/// in front of it makes the large socket reads. Also the most tungstenite
/// takes per read call, so smaller means more (cheap, in-memory) calls.
pub const CLIENT_WS_BUFFER: usize = 512;

/// Distinct client IPs (or IPv6 /64s) the handshake limiter tracks at most
/// (~35 MB); beyond that new addresses are refused until idle ones expire.
const LIMITER_MAX_KEYS: usize = 1_000_000;

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl App {
    /// Builds the state; fails on keys the gateway cannot load.
    pub fn new(config: Config) -> Result<Arc<App>, Vec<String>> {
        let mut problems = Vec::new();
        let metrics = Metrics::new();
        let keys = crate::keys::Keys::new(&config, metrics.keys.clone())
            .map_err(|p| problems.extend(p))
            .ok();
        let origins = match OriginPolicy::new(&config.origins.allow, config.origins.allow_missing) {
            Ok(p) => p,
            Err(bad) => {
                problems.extend(bad.into_iter().map(|b| format!("origins.allow: {b}")));
                OriginPolicy::default()
            }
        };
        if config.server.proxy_protocol && config.trusted_proxies.cidrs.is_empty() {
            // Fail closed: without trusted balancers every connection would
            // be dropped, and trusting everyone would let clients spoof.
            problems.push(
                "server.proxy_protocol: list the load balancers in trusted_proxies.cidrs".into(),
            );
        }
        let mut load_tls = |name: &str, t: &Option<crate::config::TlsConfig>| {
            t.as_ref().and_then(|t| match crate::tls::Tls::load(t) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(format!("{name}.tls: {e}"));
                    None
                }
            })
        };
        let tls_main = load_tls("server", &config.server.tls);
        let tls_admin = load_tls("admin", &config.admin.tls);
        let (Some(keys), true) = (keys, problems.is_empty()) else {
            return Err(problems);
        };
        let auth = &config.auth;
        let extract = ExtractPolicy {
            transports: auth.transports.clone(),
            cookie_name: auth.cookie_name.clone(),
            ticket_param: auth.ticket_param.clone(),
            query_param: auth.query_param.clone(),
            subprotocol: auth.subprotocol.clone(),
            max_token_bytes: auth.max_token_bytes,
        };
        let session_policy = SessionPolicy {
            leeway_ms: ms(auth.leeway),
            expiry_warning_ms: ms(auth.expiry_warning),
            max_session_ms: auth.max_session.map(ms),
            refresh: auth.refresh,
        };
        let max_msg = config.limits.max_message_bytes;
        // Small read buffers keep idle sockets cheap; writes go out eagerly and
        // the write buffer is bounded so a stalled peer cannot grow it.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.limits.read_buffer_bytes)
            .write_buffer_size(0)
            .max_write_buffer_size(max_msg.saturating_add(64 * 1024))
            .max_message_size(Some(max_msg))
            .max_frame_size(Some(max_msg));
        let client_ws_config = ws_config.read_buffer_size(CLIENT_WS_BUFFER);
        let backlog = Arc::new(crate::backlog::Backlog::new(
            &config.limits,
            metrics.buffered.clone(),
        ));
        let store = crate::store::open(&config.store).map_err(|e| vec![e])?;
        let tickets = config.tickets.enabled.then(|| {
            // Without a configured secret (memory store only, config
            // validation refuses it with Redis) tickets are this node's alone.
            let secret = config
                .tickets
                .secret
                .clone()
                .unwrap_or_else(|| Secret::random(32));
            Tickets {
                signer: EncodingKey::from_secret(secret.expose()),
                verifier: Verifier::new(
                    vec![VerifyKey {
                        kid: None,
                        alg: Algorithm::HS256,
                        key: DecodingKey::from_secret(secret.expose()),
                    }],
                    ClaimRules {
                        issuer: None,
                        audience: vec![config.tickets.audience.clone()],
                        leeway_ms: ms(auth.leeway),
                        max_lifetime_ms: None,
                        forbidden_audience: None,
                    },
                ),
                ttl_ms: ms(config.tickets.ttl),
            }
        });
        let upstream = if config.backend.kind == crate::config::BackendKind::Upstream {
            match crate::backend::upstream::Upstream::load(
                &config.backend,
                metrics.upstream_http2_connections.clone(),
            ) {
                Ok(u) => Some(u),
                Err(e) => return Err(vec![e]),
            }
        } else {
            None
        };
        let dev_signer = if config.dev_mode {
            config.auth.keys.first().and_then(|k| match &k.source {
                KeySource::Secret(s) => Some(EncodingKey::from_secret(s.expose())),
                _ => None,
            })
        } else {
            None
        };
        Ok(Arc::new(App {
            verifier: keys,
            origins,
            extract,
            session_policy,
            ws_config,
            client_ws_config,
            registry: Registry::default(),
            tls_main,
            tls_admin,
            egress: crate::egress::Egress::new(config.limits.egress_alert_bytes_per_min),
            hub: crate::backend::hub::Hub::new(
                config
                    .hub
                    .grants
                    .iter()
                    .map(|g| wsgate_core::grants::Grant {
                        claim: g.claim.clone(),
                        value: g.value.clone(),
                        subscribe: g.subscribe.clone(),
                        publish: g.publish.clone(),
                    })
                    .collect(),
                backlog.clone(),
            ),
            backlog,
            upstream,
            unauthenticated: AtomicUsize::new(0),
            revocations: RwLock::new(RevocationSet::new()),
            revocation_freshness: if store.is_shared() {
                crate::revocations::Freshness::new(config.store.max_revocation_staleness)
            } else {
                crate::revocations::Freshness::always()
            },
            revocation_resync: tokio::sync::Notify::new(),
            slots_resync: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            node_id: crate::mint::random_id(9),
            dev_signer,
            store,
            metrics,
            limiter: HandshakeLimiter::new(
                config.limits.handshakes_per_ip_per_sec,
                config.limits.handshake_burst_per_ip,
                LIMITER_MAX_KEYS,
            ),
            admin_failures: crate::server::admin::failures::AuthFailures::new(),
            pending: crate::limiter::PendingHandshakes::default(),
            blocklist: crate::blocklist::Blocklist::new(
                config.limits.block_after_refusals,
                config.limits.block_duration,
            ),
            trusted_proxies: TrustedProxies::new(config.trusted_proxies.cidrs.clone())
                .with_header(config.trusted_proxies.header),
            store_ready: AtomicBool::new(true),
            tickets,
            config,
        }))
    }

    /// A connection id unique within this process.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Live sessions of this node: counts under the caps, and the entries the
/// admin API lists, revokes and refreshes. An entry lives exactly as long as
/// its [`Slot`], so nothing leaks whatever ends the session.
#[derive(Default)]
pub struct Registry {
    active: AtomicUsize,
    inner: Mutex<RegistryInner>,
    /// Woken when the last session ends (a drain waits on it).
    idle: tokio::sync::Notify,
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
    app: Arc<App>,
    sub: String,
    id: Option<u64>,
    lease: Option<String>,
}

impl Registry {
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
}

impl App {
    /// Takes a slot for `sub` under the per-user and global caps.
    pub fn acquire_slot(self: &Arc<Self>, sub: &str) -> Result<Slot, Reason> {
        let limits = &self.config.limits;
        let reg = &self.registry;
        let prev = reg.active.fetch_add(1, Ordering::AcqRel);
        if prev >= limits.max_connections as usize {
            reg.release_one();
            return Err(Reason::TooManyConnections);
        }
        let mut g = reg.lock();
        let n = g.per_user.entry(sub.to_owned()).or_insert(0);
        if limits.connections_per_user > 0 && *n >= limits.connections_per_user {
            if *n == 0 {
                g.per_user.remove(sub);
            }
            drop(g);
            reg.release_one();
            return Err(Reason::TooManyConnections);
        }
        *n += 1;
        Ok(Slot {
            app: self.clone(),
            sub: sub.to_owned(),
            id: None,
            lease: None,
        })
    }

    /// Takes a slot, counting `connections_per_user` across the cluster when
    /// the store is shared. A store that cannot answer fails closed.
    pub async fn acquire_slot_everywhere(self: &Arc<Self>, sub: &str) -> Result<Slot, Reason> {
        let mut slot = self.acquire_slot(sub)?;
        let cap = self.config.limits.connections_per_user;
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
                self.registry
                    .lock()
                    .leases
                    .insert(holder.clone(), sub.to_owned());
                slot.lease = Some(holder);
                Ok(slot)
            }
            Ok(false) => Err(Reason::TooManyConnections),
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(event = "store_error", op = "acquire_user_slot", error = %e);
                // The grab may still run (Redis paused, a reply lost): take
                // it back now and at the next renewals.
                self.registry.undo_later(sub, holder.clone());
                let app = self.clone();
                let sub = sub.to_owned();
                tokio::spawn(async move {
                    let _ = app.store.release_user_slot(&sub, &holder).await;
                });
                Err(Reason::StoreUnavailable)
            }
        }
    }

    /// Whether a verified token is revoked at `now`.
    pub fn is_revoked(&self, v: &wsgate_core::verify::Verified, now: i64) -> bool {
        self.revocations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_revoked(v, now)
    }
}

impl Slot {
    /// Registers the session behind this slot; the entry goes with the slot.
    pub fn attach(&mut self, info: SessionInfo, control: Arc<Controls>) {
        self.id = Some(info.id);
        self.app
            .registry
            .lock()
            .sessions
            .insert(info.id, Entry { info, control });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let reg = &self.app.registry;
        let mut g = reg.lock();
        if let Some(id) = self.id {
            g.sessions.remove(&id);
        }
        if let Some(holder) = self.lease.take() {
            g.leases.remove(&holder);
            // Drop cannot wait; if this fails the lease expires by itself.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let app = self.app.clone();
                let sub = self.sub.clone();
                rt.spawn(async move {
                    if app.store.release_user_slot(&sub, &holder).await.is_err() {
                        // Retried at the next renewals, else it lapses.
                        app.registry.undo_later(&sub, holder);
                    }
                });
            }
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
