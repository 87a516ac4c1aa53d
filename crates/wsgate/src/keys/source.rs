//! A `jwks_url` key source: its current keys and the task that keeps them
//! fresh (scheduled by `Cache-Control`, on demand for unknown `kid`s under
//! a rate limit, with backoff while the IdP is down; the last good set is
//! kept meanwhile).

use super::fetch::Fetcher;
use super::KeyMetrics;
use crate::clock::now_ms;
use crate::config::JwksOptions;
use jsonwebtoken::Algorithm;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use wsgate_core::jwks::{parse_set, CacheBounds, RefetchGate};
use wsgate_core::verify::VerifyKey;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub struct JwksSource {
    /// Where it is configured (`auth.keys[0]`): metrics label and log field.
    pub name: String,
    pub url: String,
    pub opts: JwksOptions,
    pub pinned: Option<Algorithm>,
    pub only_kid: Option<String>,
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    /// Bumped on every successful load.
    generation: AtomicU64,
    loaded: AtomicBool,
    in_flight: AtomicBool,
    retired: AtomicBool,
    gate: Mutex<RefetchGate>,
    wake: Notify,
    /// Completed fetch attempts, for callers waiting on a refetch.
    attempts: watch::Sender<u64>,
}

impl JwksSource {
    pub fn new(
        name: String,
        url: String,
        opts: JwksOptions,
        pinned: Option<Algorithm>,
        only_kid: Option<String>,
    ) -> Arc<JwksSource> {
        Arc::new(JwksSource {
            name,
            gate: Mutex::new(RefetchGate::new(ms(opts.refetch_interval))),
            url,
            opts,
            pinned,
            only_kid,
            keys: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            loaded: AtomicBool::new(false),
            in_flight: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            wake: Notify::new(),
            attempts: watch::channel(0).0,
        })
    }

    /// Whether `other` would fetch the same keys the same way (kept across reloads).
    pub fn same_as(
        &self,
        url: &str,
        opts: &JwksOptions,
        pinned: Option<Algorithm>,
        kid: Option<&str>,
    ) -> bool {
        self.url == url
            && &self.opts == opts
            && self.pinned == pinned
            && self.only_kid.as_deref() == kid
    }

    pub fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Stops the task (the source left the configuration).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// An unknown `kid` was seen: asks for a refetch unless one ran within
    /// `refetch_interval`. Returns what to wait on when a fetch is coming.
    pub fn request_refetch(&self, metrics: &KeyMetrics) -> Option<watch::Receiver<u64>> {
        let rx = self.attempts.subscribe();
        if self.in_flight.load(Ordering::Acquire) {
            return Some(rx);
        }
        let allowed = self
            .gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_acquire(now_ms());
        if !allowed {
            metrics.refetches_limited.inc();
            return None;
        }
        self.wake.notify_one();
        Some(rx)
    }

    /// Fetches now, then keeps the set fresh until retired.
    pub async fn run(self: Arc<Self>, metrics: Arc<KeyMetrics>) {
        let bounds = CacheBounds {
            min_ms: ms(self.opts.cache_min),
            max_ms: ms(self.opts.cache_max),
        };
        let mut failures: u32 = 0;
        let mut wait: Option<Duration> = None;
        loop {
            let trigger = match wait {
                None => "startup",
                Some(d) => tokio::select! {
                    _ = tokio::time::sleep(d) => "scheduled",
                    _ = self.wake.notified() => "unknown_kid",
                },
            };
            if self.retired.load(Ordering::Acquire) {
                return;
            }
            if trigger != "unknown_kid" {
                self.gate
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(now_ms());
            }
            self.in_flight.store(true, Ordering::Release);
            // A fresh trust store each time: a replaced CA file or system
            // bundle is picked up without a restart.
            let outcome = match Fetcher::new(self.opts.ca_file.as_deref(), self.opts.fetch_timeout)
            {
                Ok(fetcher) => self.fetch_once(&fetcher, bounds).await,
                Err(e) => Err(e),
            };
            self.in_flight.store(false, Ordering::Release);
            let ok = outcome.is_ok();
            metrics.refresh(&self.name, trigger, ok);
            metrics.loaded(&self.name, self.keys().len());
            wait = Some(match outcome {
                Ok(ttl_ms) => {
                    failures = 0;
                    let next = CacheBounds::refresh_at(0, ttl_ms);
                    Duration::from_millis(u64::try_from(next).unwrap_or(0))
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let retry = bounds.retry_ms(failures);
                    tracing::warn!(
                        event = "jwks_refresh_failed",
                        source = self.name.as_str(),
                        url = self.url.as_str(),
                        trigger,
                        error = e.to_string().as_str(),
                        keeping = self.keys().len() as u64,
                        retry_ms = retry,
                    );
                    Duration::from_millis(u64::try_from(retry).unwrap_or(1000))
                }
            });
            self.attempts.send_modify(|n| *n += 1);
        }
    }

    /// One fetch; on success installs the keys and returns the cache time.
    async fn fetch_once(
        &self,
        fetcher: &Fetcher,
        bounds: CacheBounds,
    ) -> crate::error::Result<i64> {
        let got = fetcher.get(&self.url).await?;
        let parsed = parse_set(&got.body, self.pinned, self.only_kid.as_deref()).map_err(|e| {
            crate::error::Error::explain(
                crate::error::Kind::Invalid,
                crate::error::Side::Upstream,
                e,
            )
        })?;
        for why in &parsed.skipped {
            tracing::warn!(
                event = "jwks_key_skipped",
                source = self.name.as_str(),
                reason = why.as_str()
            );
        }
        if parsed.keys.is_empty() {
            return Err(crate::error::Error::explain(
                crate::error::Kind::Invalid,
                crate::error::Side::Upstream,
                "the set holds no usable signature key",
            ));
        }
        let ttl = bounds.ttl_ms(got.cache_control.as_deref());
        let kids: Vec<&str> = parsed
            .keys
            .iter()
            .map(|k| k.kid.as_deref().unwrap_or("-"))
            .collect();
        tracing::info!(
            event = "jwks_refreshed",
            source = self.name.as_str(),
            url = self.url.as_str(),
            keys = parsed.keys.len() as u64,
            kids = kids.join(",").as_str(),
            cache_s = (ttl / 1000) as u64,
        );
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(parsed.keys);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.loaded.store(true, Ordering::Release);
        Ok(ttl)
    }
}
