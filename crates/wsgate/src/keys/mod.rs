//! Verification keys, wherever they come from (issue 9): configured secrets
//! and PEM keys, JWK set files, and JWK sets fetched from identity
//! providers; one verifier per issuer, the token's (unverified) `iss` only
//! choosing which one checks it.
//!
//! Key sets change without a restart: JWKS URLs refresh in the background
//! and on unknown `kid`s (rate-limited); the configuration and every key
//! file are reloaded on SIGHUP and when a file changes. A reload that fails
//! is logged and the keys in use are kept.

pub mod fetch;
mod source;

use crate::config::{Config, KeyConfig, KeySource, SecretSource};
use crate::tasks::Tasks;
use jsonwebtoken::DecodingKey;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use source::JwksSource;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use wsgate_core::verify::{unverified_issuer, ClaimRules, Verified, Verifier, VerifyKey};
use wsgate_core::{Reason, UnixMillis};

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// --- metrics ---------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    source: String,
    trigger: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Key metrics. The `source` label is the configuration location
/// (`auth.keys[0]`), a closed set; never a kid or a URL.
pub struct KeyMetrics {
    refreshes: Family<RefreshLabels, Counter>,
    loaded: Family<SourceLabels, Gauge>,
    pub refetches_limited: Counter,
    reloads: Family<ResultLabels, Counter>,
}

impl KeyMetrics {
    pub fn register(r: &mut Registry) -> Arc<KeyMetrics> {
        let m = KeyMetrics {
            refreshes: Family::default(),
            loaded: Family::default(),
            refetches_limited: Counter::default(),
            reloads: Family::default(),
        };
        r.register(
            "wsgate_key_refreshes",
            "JWKS fetches by source, trigger (startup, scheduled, unknown_kid) and result",
            m.refreshes.clone(),
        );
        r.register(
            "wsgate_keys_loaded",
            "Usable keys currently held per JWKS source",
            m.loaded.clone(),
        );
        r.register(
            "wsgate_key_refetches_limited",
            "Unknown-kid refetches refused by the per-source rate limit",
            m.refetches_limited.clone(),
        );
        r.register(
            "wsgate_key_reloads",
            "Key configuration reloads (SIGHUP or file change) by result",
            m.reloads.clone(),
        );
        Arc::new(m)
    }

    fn refresh(&self, source: &str, trigger: &'static str, ok: bool) {
        self.refreshes
            .get_or_create(&RefreshLabels {
                source: source.to_string(),
                trigger,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    fn loaded(&self, source: &str, n: usize) {
        self.loaded
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn reload(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }
}

// --- one issuer ------------------------------------------------------------

/// Source generations and active previous secrets: when it changes, the
/// issuer's verifier is rebuilt.
type Stamp = (u64, usize);

struct Issuer {
    /// `None`: the `[auth]` keys with no `auth.issuer` (any `iss`).
    iss: Option<String>,
    sub_prefix: String,
    rules: ClaimRules,
    fixed: Vec<VerifyKey>,
    /// Previous HS secrets and the end of their overlap (Unix ms).
    previous: Vec<(VerifyKey, UnixMillis)>,
    urls: Vec<Arc<JwksSource>>,
    cache: RwLock<(Stamp, Arc<Verifier>)>,
}

impl Issuer {
    fn stamp(&self, now: UnixMillis) -> Stamp {
        (
            self.urls.iter().map(|s| s.generation()).sum(),
            self.previous.iter().filter(|(_, u)| now < *u).count(),
        )
    }

    fn compose(&self, now: UnixMillis) -> Verifier {
        // Current keys first: the previous secret is only tried after them.
        let mut keys = self.fixed.clone();
        keys.extend(
            self.previous
                .iter()
                .filter(|(_, u)| now < *u)
                .map(|(k, _)| k.clone()),
        );
        for s in &self.urls {
            keys.extend(s.keys().iter().cloned());
        }
        Verifier::new(keys, self.rules.clone())
    }

    fn verifier(&self, now: UnixMillis) -> Arc<Verifier> {
        let stamp = self.stamp(now);
        {
            let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
            if c.0 == stamp {
                return c.1.clone();
            }
        }
        let v = Arc::new(self.compose(now));
        *self.cache.write().unwrap_or_else(|p| p.into_inner()) = (stamp, v.clone());
        v
    }

    /// This issuer under another `iss` spelling, sharing its key sources.
    fn respelled(&self, iss: &str, rules: ClaimRules, now: UnixMillis) -> Issuer {
        let mut i = Issuer {
            iss: Some(iss.to_string()),
            sub_prefix: self.sub_prefix.clone(),
            rules,
            fixed: self.fixed.clone(),
            previous: self.previous.clone(),
            urls: self.urls.clone(),
            cache: RwLock::new((
                (0, 0),
                Arc::new(Verifier::new(Vec::new(), ClaimRules::default())),
            )),
        };
        i.cache = RwLock::new((i.stamp(now), Arc::new(i.compose(now))));
        i
    }

    fn verify(&self, token: &str, now: UnixMillis) -> Result<Verified, Reason> {
        let mut v = self.verifier(now).verify(token, now)?;
        if !self.sub_prefix.is_empty() {
            v.sub = format!("{}{}", self.sub_prefix, v.sub);
            v.claims
                .insert("sub".into(), serde_json::Value::String(v.sub.clone()));
        }
        Ok(v)
    }
}

/// Results after which a refetch may help: the key is not (yet) known.
fn wants_refetch(r: Reason) -> bool {
    matches!(r, Reason::UnknownKey | Reason::AlgorithmNotAllowed)
}

// --- the whole key set -------------------------------------------------------

/// One issuer as configured: (location, its `iss` spellings (none: any
/// `iss`), audience, keys, sub prefix).
type Entry<'a> = (String, &'a [String], &'a [String], &'a [KeyConfig], &'a str);

struct KeyState {
    issuers: Vec<Issuer>,
    sources: Vec<Arc<JwksSource>>,
    /// Files whose change triggers a reload, with their mtime at load.
    watched: Vec<(PathBuf, Option<SystemTime>)>,
}

fn modified(p: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl KeyState {
    fn build(config: &Config, reuse: &[Arc<JwksSource>]) -> Result<KeyState, Vec<String>> {
        let auth = &config.auth;
        let mut problems = Vec::new();
        let mut st = KeyState {
            issuers: Vec::new(),
            sources: Vec::new(),
            watched: Vec::new(),
        };
        if let Some(p) = &config.source {
            st.watched.push((p.clone(), modified(p)));
        }
        let rules = |iss: Option<&str>, audience: &[String]| ClaimRules {
            issuer: iss.map(str::to_string),
            audience: audience.to_vec(),
            leeway_ms: ms(auth.leeway),
            max_lifetime_ms: Some(ms(auth.max_token_lifetime)),
            forbidden_audience: Some(config.tickets.audience.clone()),
        };
        let mut entries: Vec<Entry<'_>> = Vec::new();
        if !auth.keys.is_empty() {
            entries.push((
                "auth".into(),
                auth.issuer.as_slice(),
                &auth.audience,
                &auth.keys,
                "",
            ));
        }
        for (j, i) in auth.issuers.iter().enumerate() {
            entries.push((
                format!("auth.issuers[{j}]"),
                i.issuer.as_slice(),
                &i.audience,
                &i.keys,
                i.sub_prefix.as_str(),
            ));
        }
        for (at, spellings, audience, keys, prefix) in entries {
            let iss = spellings.first().map(String::as_str);
            let mut issuer = Issuer {
                iss: iss.map(str::to_string),
                sub_prefix: prefix.to_string(),
                rules: rules(iss, audience),
                fixed: Vec::new(),
                previous: Vec::new(),
                urls: Vec::new(),
                cache: RwLock::new((
                    (0, 0),
                    Arc::new(Verifier::new(Vec::new(), ClaimRules::default())),
                )),
            };
            for (n, k) in keys.iter().enumerate() {
                let name = format!("{at}.keys[{n}]");
                if let Err(e) = st.add_key(&mut issuer, &name, k, reuse) {
                    problems.push(format!("{name}: {e}"));
                }
            }
            let now = crate::clock::now_ms();
            issuer.cache = RwLock::new((issuer.stamp(now), Arc::new(issuer.compose(now))));
            // Each further spelling: the same keys and namespace, its own
            // `iss` check.
            for other in spellings.iter().skip(1) {
                st.issuers
                    .push(issuer.respelled(other, rules(Some(other), audience), now));
            }
            st.issuers.push(issuer);
        }
        if problems.is_empty() {
            Ok(st)
        } else {
            Err(problems)
        }
    }

    fn watch_secret(&mut self, s: &crate::config::Secret) {
        if let SecretSource::File(p) = s.source() {
            self.watched.push((p.clone(), modified(p)));
        }
    }

    fn add_key(
        &mut self,
        issuer: &mut Issuer,
        name: &str,
        k: &KeyConfig,
        reuse: &[Arc<JwksSource>],
    ) -> Result<(), String> {
        match &k.source {
            KeySource::Secret(_) | KeySource::PublicKeyPem { .. } => {
                let alg = k.alg.ok_or("alg is required")?;
                issuer.fixed.push(VerifyKey {
                    kid: k.kid.clone(),
                    alg,
                    key: k.decoding_key()?,
                });
                match &k.source {
                    KeySource::Secret(s) => self.watch_secret(s),
                    KeySource::PublicKeyPem { path, .. } => {
                        self.watched.push((path.clone(), modified(path)))
                    }
                    _ => {}
                }
                if let Some(p) = &k.previous {
                    self.watch_secret(&p.secret);
                    let until = p
                        .until
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(ms)
                        .unwrap_or(0);
                    issuer.previous.push((
                        VerifyKey {
                            kid: k.kid.clone(),
                            alg,
                            key: DecodingKey::from_secret(p.secret.expose()),
                        },
                        until,
                    ));
                }
            }
            KeySource::JwksFile(path) => {
                self.watched.push((path.clone(), modified(path)));
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let set = wsgate_core::jwks::parse_set(&bytes, k.alg, k.kid.as_deref())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                for why in &set.skipped {
                    tracing::warn!(
                        event = "jwks_key_skipped",
                        source = name,
                        reason = why.as_str()
                    );
                }
                if set.keys.is_empty() {
                    return Err(format!("{}: no usable signature key", path.display()));
                }
                issuer.fixed.extend(set.keys);
            }
            KeySource::JwksUrl(url) => {
                if let Some(ca) = &k.jwks.ca_file {
                    self.watched.push((ca.clone(), modified(ca)));
                }
                let src = reuse
                    .iter()
                    .find(|s| s.name == name && s.same_as(url, &k.jwks, k.alg, k.kid.as_deref()))
                    .cloned()
                    .unwrap_or_else(|| {
                        JwksSource::new(
                            name.to_string(),
                            url.clone(),
                            k.jwks.clone(),
                            k.alg,
                            k.kid.clone(),
                        )
                    });
                issuer.urls.push(src.clone());
                self.sources.push(src);
            }
        }
        Ok(())
    }

    /// The issuer that verifies `token`: by its `iss` when several are
    /// configured (read unverified, only to choose; the chosen verifier
    /// checks it), else the `[auth]` keys that accept any issuer.
    fn select(&self, token: &str) -> Result<&Issuer, Reason> {
        if let [only] = self.issuers.as_slice() {
            return Ok(only);
        }
        let iss = unverified_issuer(token)?;
        if let Some(i) = &iss {
            if let Some(x) = self.issuers.iter().find(|x| x.iss.as_deref() == Some(i)) {
                return Ok(x);
            }
        }
        if let Some(any) = self.issuers.iter().find(|x| x.iss.is_none()) {
            return Ok(any);
        }
        Err(if iss.is_some() {
            Reason::BadIssuer
        } else {
            Reason::MissingClaim
        })
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.watched.iter().map(|(p, _)| modified(p)).collect()
    }

    fn changed(&self, now: &[Option<SystemTime>]) -> bool {
        self.watched.iter().map(|(_, t)| *t).ne(now.iter().copied())
    }
}

/// Every verification key of the gateway, swappable at run time.
pub struct Keys {
    state: RwLock<Arc<KeyState>>,
    metrics: Arc<KeyMetrics>,
}

impl Keys {
    /// Loads configured secrets, PEM keys and JWK set files; JWKS URLs are
    /// fetched once [`run`] starts (until then `/readyz` says not ready).
    pub fn new(config: &Config, metrics: Arc<KeyMetrics>) -> Result<Keys, Vec<String>> {
        Ok(Keys {
            state: RwLock::new(Arc::new(KeyState::build(config, &[])?)),
            metrics,
        })
    }

    fn state(&self) -> Arc<KeyState> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ready: every JWKS URL has loaded once and every issuer has a key.
    pub fn has_keys(&self) -> bool {
        let st = self.state();
        let now = crate::clock::now_ms();
        st.sources.iter().all(|s| s.loaded())
            && st.issuers.iter().all(|i| i.verifier(now).has_keys())
    }

    /// Verifies without waiting. An unknown `kid` asks for a background
    /// refetch (rate-limited), so a retry can succeed.
    pub fn verify(&self, token: &str, now: UnixMillis) -> Result<Verified, Reason> {
        let st = self.state();
        let issuer = st.select(token)?;
        let r = issuer.verify(token, now);
        if let Err(reason) = r {
            if wants_refetch(reason) {
                for s in &issuer.urls {
                    let _ = s.request_refetch(&self.metrics);
                }
            }
        }
        r
    }

    /// Like [`Keys::verify`], but an unknown `kid` waits for the refetch
    /// (when the rate limit allows one) and tries once more.
    pub async fn verify_fresh(&self, token: &str, now: UnixMillis) -> Result<Verified, Reason> {
        let st = self.state();
        let issuer = st.select(token)?;
        let r = issuer.verify(token, now);
        match r {
            Err(reason) if wants_refetch(reason) && !issuer.urls.is_empty() => {}
            r => return r,
        }
        let waits: Vec<_> = issuer
            .urls
            .iter()
            .filter_map(|s| {
                s.request_refetch(&self.metrics)
                    .map(|rx| (s.opts.fetch_timeout, rx))
            })
            .collect();
        if waits.is_empty() {
            return r;
        }
        for (t, mut rx) in waits {
            let _ = tokio::time::timeout(t + Duration::from_secs(1), rx.changed()).await;
        }
        // Once more, without asking for another refetch.
        let st = self.state();
        st.select(token)?.verify(token, crate::clock::now_ms())
    }

    /// Builds a key set from a freshly loaded configuration and swaps it in;
    /// on any problem the current set stays. Returns new JWKS sources to start.
    fn reload(&self, config: &Config) -> Result<Vec<Arc<JwksSource>>, Vec<String>> {
        let old = self.state();
        let new = KeyState::build(config, &old.sources)?;
        let fresh: Vec<_> = new
            .sources
            .iter()
            .filter(|s| !old.sources.iter().any(|o| Arc::ptr_eq(o, s)))
            .cloned()
            .collect();
        for o in &old.sources {
            if !new.sources.iter().any(|s| Arc::ptr_eq(o, s)) {
                o.retire();
            }
        }
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        Ok(fresh)
    }
}

/// Starts the JWKS sources and the reload task. SIGHUP is hooked here,
/// before the gateway says it is listening, so an early SIGHUP cannot take
/// the default action (terminate).
/// `source`: the config file to reload from (none in dev mode).
pub fn start(keys: &Arc<Keys>, source: Option<&Path>, tasks: &Tasks) {
    for s in keys.state().sources.iter() {
        tasks.spawn_loop(s.clone().run(keys.metrics.clone()));
    }
    let Some(path) = source else {
        return; // dev mode: nothing to reload from
    };
    let trigger = crate::reload::Trigger::hook();
    tasks.spawn_loop(run(keys.clone(), path.to_owned(), trigger, tasks.clone()));
}

/// Reloads keys on SIGHUP or when the config or a key file changes
/// (checked every 5 s), like the TLS certificates.
async fn run(keys: Arc<Keys>, path: PathBuf, mut trigger: crate::reload::Trigger, tasks: Tasks) {
    // Stamps of a reload that failed: not retried until the files change again.
    let mut failed: Option<Vec<Option<SystemTime>>> = None;
    loop {
        let forced = trigger.next().await;
        let st = keys.state();
        let stamps = st.stamps();
        if !forced && (!st.changed(&stamps) || failed.as_ref() == Some(&stamps)) {
            continue;
        }
        let env: Vec<(String, String)> = std::env::vars().collect();
        let result = crate::config::Config::load(&path, &env).and_then(|c| keys.reload(&c));
        match result {
            Ok(fresh) => {
                failed = None;
                keys.metrics.reload(true);
                let st = keys.state();
                tracing::info!(
                    event = "keys_reloaded",
                    trigger = if forced { "sighup" } else { "file_change" },
                    issuers = st.issuers.len() as u64,
                    jwks_urls = st.sources.len() as u64,
                );
                for s in fresh {
                    tasks.spawn_loop(s.run(keys.metrics.clone()));
                }
            }
            Err(problems) => {
                failed = Some(stamps);
                keys.metrics.reload(false);
                for p in &problems {
                    tracing::error!(
                        event = "keys_reload_failed",
                        error = p.as_str(),
                        keeping = "current keys"
                    );
                }
            }
        }
    }
}
