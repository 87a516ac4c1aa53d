//! The steps every path that turns a credential into rights shares (the
//! upgrade, the ticket mint; first-message auth and in-band refresh check
//! revocation the same way): the per-IP charge before any verification, and
//! verification followed by the revocation check. A path that skips one of
//! them is how a revoked user once minted tickets; keeping them here keeps
//! the paths from drifting apart.

use crate::blocklist::{Blocklist, Change};
use crate::clock::now_ms;
use crate::keys::Keys;
use crate::limiter::HandshakeLimiter;
use crate::metrics::Metrics;
use crate::revocations::Revocations;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wsgate_core::client_ip::TrustedProxies;
use wsgate_core::verify::Verified;
use wsgate_core::Reason;

/// What those steps consult: the per-IP limiter and kernel block list, the
/// keys, the revocations. Built once (app.rs); every path holds it by
/// reference.
pub struct Admission {
    /// Per-IP handshake rate (decided before any token is verified).
    pub limiter: HandshakeLimiter,
    /// Addresses dropped in the kernel (`limits.block_after_refusals`).
    pub blocklist: Blocklist,
    pub trusted_proxies: TrustedProxies,
    /// `server.proxy_protocol`: every peer is a balancer, none is blocked.
    pub proxy_protocol: bool,
    /// `limits.block_duration`, for the log line.
    pub block_duration: Duration,
    /// Session-token keys of every issuer (reloadable; see keys/mod.rs).
    pub keys: Arc<Keys>,
    pub revocations: Arc<Revocations>,
    pub metrics: Arc<Metrics>,
}

impl Admission {
    /// Charges one request that is about to verify a credential to
    /// `client`'s handshake bucket (`limits.handshakes_per_ip_per_sec`). A
    /// refusal of a direct peer counts toward `limits.block_after_refusals`;
    /// a trusted proxy and the clients behind one are never blocked in the
    /// kernel (the filter sees only the proxy's address).
    pub fn charge(&self, client: IpAddr, peer: IpAddr) -> Result<(), Reason> {
        if self.limiter.check(client).is_ok() {
            return Ok(());
        }
        if !self.proxy_protocol && !self.trusted_proxies.contains(peer) {
            self.count_refusal(peer);
        }
        Err(Reason::RateLimited)
    }

    /// Verifies a session token and refuses it when revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Verified, Reason> {
        self.not_revoked(self.verify(token).await?)
    }

    /// Verifies a session token with the configured keys; an unknown `kid`
    /// may wait for one rate-limited JWKS refetch. Not yet a decision: the
    /// caller must also apply [`not_revoked`](Self::not_revoked) (or use
    /// [`authenticate`](Self::authenticate)).
    pub async fn verify(&self, token: &str) -> Result<Verified, Reason> {
        let t0 = Instant::now();
        let v = self.keys.verify_fresh(token, now_ms()).await;
        self.metrics.verify_time(t0.elapsed());
        v
    }

    /// Passes `v` unless a revocation in force matches it. While this node
    /// cannot trust its revocation set (not loaded yet, or no longer
    /// confirmed by the store: [`crate::revocations`]) nothing passes: `503
    /// store_unavailable`, never a guess.
    pub fn not_revoked(&self, v: Verified) -> Result<Verified, Reason> {
        self.revocations_known()?;
        if self.revocations.is_revoked(&v, now_ms()) {
            return Err(Reason::Revoked);
        }
        Ok(v)
    }

    /// `503 store_unavailable` while this node cannot trust its revocation
    /// set. Also checked before a ticket is spent, so a redemption that
    /// would be refused for it does not use the ticket up.
    pub fn revocations_known(&self) -> Result<(), Reason> {
        if self.revocations.is_known(now_ms()) {
            Ok(())
        } else {
            Err(Reason::StoreUnavailable)
        }
    }

    /// Counts a rate-limit refusal of a direct peer towards a kernel block.
    pub fn count_refusal(&self, ip: IpAddr) {
        let change = self.blocklist.refused(ip, Instant::now());
        if change != Change::None {
            self.metrics.blocks.inc();
            tracing::warn!(
                event = "address_blocked",
                address = %crate::limiter::IpKey::from(ip),
                reason = "rate_limited",
                seconds = self.block_duration.as_secs()
            );
            self.apply_blocks(change);
        }
    }

    /// Installs a new kernel filter, if the block list changed.
    pub fn apply_blocks(&self, change: Change) {
        if change == Change::None {
            return;
        }
        if let Err(e) = self.blocklist.apply(change) {
            // The 429s go on; only the kernel-side drop is missing.
            tracing::error!(event = "block_filter_error", error = %e);
        }
        self.metrics.blocked.set(self.blocklist.len() as i64);
    }
}
