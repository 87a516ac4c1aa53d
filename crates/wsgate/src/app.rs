//! The gateway, built once from a validated [`Config`] (the composition
//! root, as linkerd2-proxy's `app` builds its stacks): each component is
//! made here from its part of the config and handed the narrow handles it
//! uses (the metrics, the store, the registry), never the gateway itself.
//! [`App`] holds those handles for the listeners and the session tasks
//! (server/, conn.rs); no component imports this module.

use crate::admission::Admission;
use crate::auth_failures::AuthFailures;
use crate::backend::hub::Hub;
use crate::backend::upstream::Upstream;
use crate::config::{Config, KeySource, Secret};
use crate::keys::Keys;
use crate::limiter::HandshakeLimiter;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::revocations::Revocations;
use crate::store::Store;
use crate::tasks::Tasks;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wsgate_core::client_ip::TrustedProxies;
use wsgate_core::credential::ExtractPolicy;
use wsgate_core::origin::OriginPolicy;
use wsgate_core::session::SessionPolicy;
use wsgate_core::verify::{ClaimRules, Verifier, VerifyKey};
use wsgate_core::Reason;

// The session registry's types, where the session task has always found them.
pub use crate::registry::{Control, Controls, SessionInfo, Slot, USER_SLOT_LEASE};

/// Everything the listeners and the session tasks need, shared by all of them.
pub struct App {
    pub config: Config,
    pub origins: OriginPolicy,
    pub extract: ExtractPolicy,
    pub session_policy: SessionPolicy,
    /// Upstream sockets: tungstenite reads through its own buffer.
    pub ws_config: WebSocketConfig,
    /// Client sockets: a small tungstenite buffer, fed by a
    /// `ReadAhead` (readahead.rs) of `read_buffer_bytes`.
    pub client_ws_config: WebSocketConfig,
    /// Live sessions and their slots.
    pub registry: Arc<Registry>,
    /// The steps every credential path shares (limiter, block list, keys,
    /// revocations).
    pub admission: Admission,
    /// TLS certificates of the listeners, when configured (hot-reloadable).
    pub tls_main: Option<crate::tls::Tls>,
    pub tls_admin: Option<crate::tls::Tls>,
    /// Per-user egress monitoring.
    pub egress: Arc<crate::egress::Egress>,
    /// The channel hub (used when `backend.kind = "hub"`).
    pub hub: Arc<Hub>,
    /// What the node holds for peers that are behind, and its bounds.
    pub backlog: Arc<crate::backlog::Backlog>,
    /// The upstream service (used when `backend.kind = "upstream"`).
    pub upstream: Option<Upstream>,
    /// First-message sockets not yet authenticated (their own small cap).
    pub unauthenticated: AtomicUsize,
    pub draining: AtomicBool,
    /// Random per process: names this node in the store (leases, hub and
    /// refresh announcements).
    pub node_id: String,
    /// Dev mode only: the key that signs `/dev/login` tokens.
    pub dev_signer: Option<EncodingKey>,
    /// Shared state (single use, later revocations and counts).
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Failed admin authentications per peer IP (auth_failures.rs).
    pub admin_failures: AuthFailures,
    /// Unfinished handshakes per peer IP (`limits.pending_handshakes_per_ip`).
    pub pending: crate::limiter::PendingHandshakes,
    /// Last result of the periodic store check (`/readyz`).
    pub store_ready: AtomicBool,
    /// Tickets: signer and verifier from the ticket secret, when enabled.
    pub tickets: Option<Tickets>,
    /// Every task but the sessions', and the signal that stops the loops.
    pub tasks: Tasks,
}

/// The ticket secret in its two uses.
pub struct Tickets {
    pub signer: EncodingKey,
    pub verifier: Verifier,
    pub ttl_ms: i64,
}

pub use crate::outbox::CLIENT_WS_BUFFER;

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
        let metrics = Arc::new(Metrics::new());
        let keys = Keys::new(&config, metrics.keys.clone())
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
        let store = crate::store::open(&config.store).map_err(|e| vec![e.to_string()])?;
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
        let tasks = Tasks::new();
        let upstream = if config.backend.kind == crate::config::BackendKind::Upstream {
            match Upstream::load(
                &config.backend,
                &config.auth,
                client_ws_config,
                config.limits.read_buffer_bytes,
                metrics.clone(),
                &tasks,
            ) {
                Ok(u) => Some(u),
                Err(e) => return Err(vec![e.to_string()]),
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
        let node_id = crate::mint::random_id(9);
        let registry = Arc::new(Registry::new(
            config.limits.max_connections,
            config.limits.connections_per_user,
            node_id.clone(),
            store.clone(),
            metrics.clone(),
            tasks.clone(),
        ));
        let revocations = Arc::new(Revocations::new(
            store.is_shared(),
            config.store.max_revocation_staleness,
            registry.clone(),
        ));
        let limits = &config.limits;
        let admission = Admission {
            limiter: HandshakeLimiter::new(
                limits.handshakes_per_ip_per_sec,
                limits.handshake_burst_per_ip,
                LIMITER_MAX_KEYS,
            ),
            blocklist: crate::blocklist::Blocklist::new(
                limits.block_after_refusals,
                limits.block_duration,
            ),
            trusted_proxies: TrustedProxies::new(config.trusted_proxies.cidrs.clone())
                .with_header(config.trusted_proxies.header),
            proxy_protocol: config.server.proxy_protocol,
            block_duration: limits.block_duration,
            keys: Arc::new(keys),
            revocations,
            metrics: metrics.clone(),
        };
        let grants = config
            .hub
            .grants
            .iter()
            .map(|g| wsgate_core::grants::Grant {
                claim: g.claim.clone(),
                value: g.value.clone(),
                subscribe: g.subscribe.clone(),
                publish: g.publish.clone(),
            })
            .collect();
        Ok(Arc::new(App {
            origins,
            extract,
            session_policy,
            ws_config,
            client_ws_config,
            registry,
            admission,
            tls_main,
            tls_admin,
            egress: Arc::new(crate::egress::Egress::new(
                config.limits.egress_alert_bytes_per_min,
            )),
            hub: Arc::new(Hub::new(grants, backlog.clone(), node_id.clone())),
            backlog,
            upstream,
            unauthenticated: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            node_id,
            dev_signer,
            store,
            metrics,
            admin_failures: AuthFailures::new(),
            pending: crate::limiter::PendingHandshakes::default(),
            store_ready: AtomicBool::new(true),
            tickets,
            tasks,
            config,
        }))
    }

    /// A connection id unique within this process.
    pub fn next_id(&self) -> u64 {
        self.registry.next_id()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Takes a slot for `sub` under the per-user and global caps.
    pub fn acquire_slot(&self, sub: &str) -> Result<Slot, Reason> {
        self.registry.acquire(sub)
    }

    /// Takes a slot, counting `connections_per_user` across the cluster when
    /// the store is shared. A store that cannot answer fails closed.
    pub async fn acquire_slot_everywhere(&self, sub: &str) -> Result<Slot, Reason> {
        self.registry.acquire_everywhere(sub).await
    }
}
