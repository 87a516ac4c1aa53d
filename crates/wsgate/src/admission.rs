//! The steps every path that turns a credential into rights shares (the
//! upgrade, the ticket mint; first-message auth and in-band refresh check
//! revocation the same way): the per-IP charge before any verification, and
//! verification followed by the revocation check. A path that skips one of
//! them is how a revoked user once minted tickets; keeping them here keeps
//! the paths from drifting apart.

use crate::app::App;
use crate::clock::now_ms;
use std::net::IpAddr;
use std::time::Instant;
use wsgate_core::verify::Verified;
use wsgate_core::Reason;

/// Charges one request that is about to verify a credential to `client`'s
/// handshake bucket (`limits.handshakes_per_ip_per_sec`). A refusal of a
/// direct peer counts toward `limits.block_after_refusals`; a trusted proxy
/// and the clients behind one are never blocked in the kernel (the filter
/// sees only the proxy's address).
pub fn charge(app: &App, client: IpAddr, peer: IpAddr) -> Result<(), Reason> {
    if app.limiter.check(client).is_ok() {
        return Ok(());
    }
    if !app.config.server.proxy_protocol && !app.trusted_proxies.contains(peer) {
        count_refusal(app, peer);
    }
    Err(Reason::RateLimited)
}

/// Verifies a session token and refuses it when revoked.
pub async fn authenticate(app: &App, token: &str) -> Result<Verified, Reason> {
    not_revoked(app, verify(app, token).await?)
}

/// Verifies a session token with the configured keys; an unknown `kid` may
/// wait for one rate-limited JWKS refetch. Not yet a decision: the caller
/// must also apply [`not_revoked`] (or use [`authenticate`]).
pub async fn verify(app: &App, token: &str) -> Result<Verified, Reason> {
    let t0 = Instant::now();
    let v = app.verifier.verify_fresh(token, now_ms()).await;
    app.metrics.verify_time(t0.elapsed());
    v
}

/// Passes `v` unless a revocation in force matches it. While this node
/// cannot trust its revocation set (not loaded yet, or no longer confirmed
/// by the store: [`crate::revocations`]) nothing passes: `503
/// store_unavailable`, never a guess.
pub fn not_revoked(app: &App, v: Verified) -> Result<Verified, Reason> {
    revocations_known(app)?;
    if app.is_revoked(&v, now_ms()) {
        return Err(Reason::Revoked);
    }
    Ok(v)
}

/// `503 store_unavailable` while this node cannot trust its revocation set.
/// Also checked before a ticket is spent, so a redemption that would be
/// refused for it does not use the ticket up.
pub fn revocations_known(app: &App) -> Result<(), Reason> {
    if app.revocation_freshness.is_known(now_ms()) {
        Ok(())
    } else {
        Err(Reason::StoreUnavailable)
    }
}

/// Counts a rate-limit refusal of a direct peer towards a kernel block.
pub fn count_refusal(app: &App, ip: IpAddr) {
    let change = app.blocklist.refused(ip, Instant::now());
    if change != crate::blocklist::Change::None {
        app.metrics.blocks.inc();
        tracing::warn!(
            event = "address_blocked",
            address = %crate::limiter::IpKey::from(ip),
            reason = "rate_limited",
            seconds = app.config.limits.block_duration.as_secs()
        );
        apply_blocks(app, change);
    }
}

/// Installs a new kernel filter, if the block list changed.
pub fn apply_blocks(app: &App, change: crate::blocklist::Change) {
    if change == crate::blocklist::Change::None {
        return;
    }
    if let Err(e) = app.blocklist.apply(change) {
        // The 429s go on; only the kernel-side drop is missing.
        tracing::error!(event = "block_filter_error", error = %e);
    }
    app.metrics.blocked.set(app.blocklist.len() as i64);
}
