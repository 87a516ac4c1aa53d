//! `[[auth.keys]]` entries (and those of `[[auth.issuers]]`): where a key
//! comes from, its pinned algorithm, and the options beyond the source
//! (issue 9, keys from identity providers): JWKS fetching and caching, and
//! an HS secret's previous secret kept for a rotation overlap.

use super::build::{fmt_dur, Builder};
use super::redact::SecretKeys;
use super::{pem, urls, Secret};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use wsgate_core::verify::{alg_name, parse_alg};

/// One `[[auth.keys]]` entry.
#[derive(Debug, Clone)]
pub struct KeyConfig {
    /// Pinned algorithm; always set except for JWKS sources, where it may be omitted.
    pub alg: Option<Algorithm>,
    pub kid: Option<String>,
    pub source: KeySource,
    /// Fetching and caching (JWKS sources; defaults otherwise).
    pub jwks: JwksOptions,
    /// HS secrets: the previous secret, accepted during a rotation overlap.
    pub previous: Option<PreviousSecret>,
}

/// Where a verification key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// HS256/384/512 shared secret.
    Secret(Secret),
    /// A PEM public key, already read and checked for the key's algorithm.
    PublicKeyPem { path: PathBuf, pem: Vec<u8> },
    /// An `https://` JWK set (or `http://` on loopback).
    JwksUrl(String),
    /// A JWK set file, checked to hold a non-empty `keys` array.
    JwksFile(PathBuf),
}

impl KeyConfig {
    /// The key for `jsonwebtoken`; JWKS sources are loaded elsewhere.
    pub fn decoding_key(&self) -> Result<DecodingKey, String> {
        match &self.source {
            KeySource::Secret(s) => match self.alg.map(Algorithm::family) {
                // Refuse a secret under an asymmetric alg: that is the
                // classic algorithm-confusion hole.
                Some(AlgorithmFamily::Hmac) => Ok(DecodingKey::from_secret(s.expose())),
                _ => Err("a secret key needs alg HS256, HS384 or HS512".into()),
            },
            KeySource::PublicKeyPem { pem, .. } => {
                let alg = self
                    .alg
                    .ok_or_else(|| "alg is required for a public_key_file key".to_string())?;
                pem::public_key_from_pem(alg, pem)
            }
            KeySource::JwksUrl(_) | KeySource::JwksFile(_) => {
                Err("jwks keys are loaded by the key manager".into())
            }
        }
    }
}

impl Serialize for KeyConfig {
    /// As the file writes it: the source's own key, and the JWKS options
    /// only for a `jwks_url` (they mean nothing to other sources).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(a) = self.alg {
            m.serialize_entry("alg", alg_name(a))?;
        }
        if let Some(kid) = &self.kid {
            m.serialize_entry("kid", kid)?;
        }
        match &self.source {
            KeySource::Secret(sec) => SecretKeys {
                key: "secret",
                secret: Some(sec),
                env_apart: false,
                unset: None,
            }
            .write(&mut m)?,
            KeySource::PublicKeyPem { path, .. } => m.serialize_entry("public_key_file", path)?,
            KeySource::JwksUrl(url) => {
                m.serialize_entry("jwks_url", url)?;
                let j = &self.jwks;
                if let Some(ca) = &j.ca_file {
                    m.serialize_entry("ca_file", ca)?;
                }
                for (key, d) in [
                    ("cache_min", j.cache_min),
                    ("cache_max", j.cache_max),
                    ("refetch_interval", j.refetch_interval),
                    ("fetch_timeout", j.fetch_timeout),
                ] {
                    m.serialize_entry(key, &fmt_dur(d))?;
                }
            }
            KeySource::JwksFile(path) => m.serialize_entry("jwks_file", path)?,
        }
        if let Some(p) = &self.previous {
            SecretKeys {
                key: "previous_secret",
                secret: Some(&p.secret),
                env_apart: false,
                unset: None,
            }
            .write(&mut m)?;
            m.serialize_entry("previous_until", &p.until_text)?;
        }
        m.end()
    }
}

/// How a `jwks_url` / `jwks_file` source is fetched and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksOptions {
    /// PEM CA bundle trusted for the JWKS host instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Lower and upper bound on the `Cache-Control: max-age` honoured.
    pub cache_min: Duration,
    pub cache_max: Duration,
    /// An unknown `kid` refetches the set at most once per this.
    pub refetch_interval: Duration,
    /// Whole fetch (connect, TLS, request, body).
    pub fetch_timeout: Duration,
}

impl Default for JwksOptions {
    fn default() -> Self {
        JwksOptions {
            ca_file: None,
            cache_min: Duration::from_secs(300),
            cache_max: Duration::from_secs(3600),
            refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// The secret an HS key had before a rotation, accepted until `until`.
#[derive(Debug, Clone)]
pub struct PreviousSecret {
    pub secret: Secret,
    pub until: SystemTime,
    /// As written in the file (RFC 3339), for `wsgate check`.
    pub until_text: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawKey {
    alg: Option<String>,
    kid: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    public_key_file: Option<PathBuf>,
    jwks_url: Option<String>,
    jwks_file: Option<PathBuf>,
    // Taken apart by RawExtras::take.
    ca_file: Option<PathBuf>,
    cache_min: Option<String>,
    cache_max: Option<String>,
    refetch_interval: Option<String>,
    fetch_timeout: Option<String>,
    previous_secret_env: Option<String>,
    previous_secret_file: Option<PathBuf>,
    previous_until: Option<String>,
}

/// The options of a `[[auth.keys]]` entry that are not its source.
#[derive(Default)]
pub(super) struct RawExtras {
    pub ca_file: Option<PathBuf>,
    pub cache_min: Option<String>,
    pub cache_max: Option<String>,
    pub refetch_interval: Option<String>,
    pub fetch_timeout: Option<String>,
    pub previous_secret_env: Option<String>,
    pub previous_secret_file: Option<PathBuf>,
    pub previous_until: Option<String>,
}

impl RawExtras {
    pub(super) fn take(raw: &mut RawKey) -> RawExtras {
        RawExtras {
            ca_file: raw.ca_file.take(),
            cache_min: raw.cache_min.take(),
            cache_max: raw.cache_max.take(),
            refetch_interval: raw.refetch_interval.take(),
            fetch_timeout: raw.fetch_timeout.take(),
            previous_secret_env: raw.previous_secret_env.take(),
            previous_secret_file: raw.previous_secret_file.take(),
            previous_until: raw.previous_until.take(),
        }
    }
}

fn hs_min_len(a: Algorithm) -> usize {
    match a {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

impl Builder<'_> {
    /// Builds `[[auth.keys]]`; raw indices are kept so messages match the
    /// file even when an earlier entry failed.
    pub(super) fn build_keys(&mut self, raw: Vec<RawKey>) -> Vec<KeyConfig> {
        let mut keys: Vec<(usize, KeyConfig)> = Vec::new();
        for (i, k) in raw.into_iter().enumerate() {
            if let Some(k) = self.build_key(&format!("auth.keys[{i}]"), k) {
                keys.push((i, k));
            }
        }
        for (n, (i, k)) in keys.iter().enumerate() {
            let dup = keys[..n]
                .iter()
                .any(|(_, o)| k.kid.is_some() && o.kid == k.kid && o.alg == k.alg);
            if dup {
                self.problem(format!(
                    "auth.keys[{i}].kid: another key has kid {:?} and the same alg",
                    k.kid.as_deref().unwrap_or_default()
                ));
            }
        }
        keys.into_iter().map(|(_, k)| k).collect()
    }

    /// A JWK set holds public keys (symmetric ones are never taken from
    /// it): pinned to an HS algorithm, no key of it would ever be used and
    /// the node would never become ready.
    fn check_jwks_alg(&mut self, at: &str, source: &str, alg: Option<Algorithm>) -> Option<()> {
        match alg {
            Some(a) if a.family() == AlgorithmFamily::Hmac => {
                let via = self.via(&format!("{at}.alg"));
                self.problem(format!(
                    "{at}.alg: {} is a shared-secret algorithm, but {source} is a JWK set, whose                      keys are public keys (RS*, PS*, ES256, ES384, EdDSA); set the algorithm                      your identity provider signs with, or remove alg to take each key's own,                      or use secret_env / secret_file for an HS key{via}",
                    alg_name(a)
                ));
                None
            }
            _ => Some(()),
        }
    }

    pub(super) fn build_key(&mut self, at: &str, mut raw: RawKey) -> Option<KeyConfig> {
        let extras = RawExtras::take(&mut raw);
        let alg = match raw.alg.as_deref() {
            None => None,
            Some(s) => match parse_alg(s) {
                Some(a) => Some(a),
                None => {
                    self.problem(format!(
                        "{at}.alg: unknown algorithm {s:?}; expected HS256, HS384, HS512, RS256, \
                         RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA{}",
                        self.via(&format!("{at}.alg"))
                    ));
                    return None;
                }
            },
        };
        if raw.kid.as_deref() == Some("") {
            self.problem(format!("{at}.kid: must not be empty"));
        }
        let given: Vec<&str> = [
            ("secret_env", raw.secret_env.is_some()),
            ("secret_file", raw.secret_file.is_some()),
            ("public_key_file", raw.public_key_file.is_some()),
            ("jwks_url", raw.jwks_url.is_some()),
            ("jwks_file", raw.jwks_file.is_some()),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
        if given.is_empty() {
            self.problem(format!(
                "{at}: no key source; set one of secret_env, secret_file, public_key_file, \
                 jwks_url, jwks_file"
            ));
            return None;
        }
        if given.len() > 1 {
            self.problem(format!(
                "{at}: {} are both set; give only one key source",
                given.join(" and ")
            ));
            return None;
        }
        let source = if raw.secret_env.is_some() || raw.secret_file.is_some() {
            let (secret, _) = self.resolve_secret(
                &format!("{at}.secret"),
                raw.secret_env,
                raw.secret_file,
                None,
                true,
            );
            let secret = secret?;
            match alg {
                None => {
                    self.problem(format!(
                        "{at}.alg: required (HS256, HS384 or HS512 for a secret)"
                    ));
                    return None;
                }
                Some(a) if a.family() != AlgorithmFamily::Hmac => {
                    self.problem(format!(
                        "{at}: {} is an asymmetric algorithm and needs public_key_file, not a secret",
                        alg_name(a)
                    ));
                    return None;
                }
                Some(a) => {
                    let min = hs_min_len(a);
                    if secret.len() < min {
                        self.problem(format!(
                            "{at}: the {} secret is {} bytes; at least {min} are required",
                            alg_name(a),
                            secret.len()
                        ));
                        return None;
                    }
                }
            }
            KeySource::Secret(secret)
        } else if let Some(file) = raw.public_key_file {
            let path = self.path(&file);
            let Some(a) = alg else {
                self.problem(format!(
                    "{at}.alg: required (RS*, PS*, ES256, ES384 or EdDSA for a public key)"
                ));
                return None;
            };
            if a.family() == AlgorithmFamily::Hmac {
                self.problem(format!(
                    "{at}: {} uses a shared secret (secret_env or secret_file), not public_key_file",
                    alg_name(a)
                ));
                return None;
            }
            let pem = match std::fs::read(&path) {
                Ok(p) => p,
                Err(e) => {
                    self.problem(format!(
                        "{at}.public_key_file: cannot read {}: {e}",
                        path.display()
                    ));
                    return None;
                }
            };
            if let Err(e) = pem::public_key_from_pem(a, &pem) {
                self.problem(format!("{at}.public_key_file: {}: {e}", path.display()));
                return None;
            }
            KeySource::PublicKeyPem { path, pem }
        } else if let Some(url) = raw.jwks_url {
            if let Err(e) = urls::check_jwks(&url) {
                self.problem(format!("{at}.jwks_url: {e}"));
                return None;
            }
            self.check_jwks_alg(at, "jwks_url", alg)?;
            KeySource::JwksUrl(url)
        } else if let Some(file) = raw.jwks_file {
            let path = self.path(&file);
            if let Err(e) = pem::check_jwks_file(&path) {
                self.problem(format!("{at}.jwks_file: {}: {e}", path.display()));
                return None;
            }
            self.check_jwks_alg(at, "jwks_file", alg)?;
            KeySource::JwksFile(path)
        } else {
            return None;
        };
        let (jwks, previous) = self.key_extras(at, extras, &source, alg)?;
        Some(KeyConfig {
            alg,
            kid: raw.kid,
            source,
            jwks,
            previous,
        })
    }
}

impl Builder<'_> {
    fn dur_opt(&mut self, key: &str, v: Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match humantime::parse_duration(s.trim()) {
                Ok(d) => d,
                Err(e) => {
                    self.problem(format!("{key}: {s:?} is not a duration: {e}"));
                    default
                }
            },
        }
    }

    /// Checks the extras against the key's source; returns them resolved.
    pub(super) fn key_extras(
        &mut self,
        at: &str,
        x: RawExtras,
        source: &KeySource,
        alg: Option<jsonwebtoken::Algorithm>,
    ) -> Option<(JwksOptions, Option<PreviousSecret>)> {
        let is_url = matches!(source, KeySource::JwksUrl(_));
        let is_jwks = is_url || matches!(source, KeySource::JwksFile(_));
        let is_secret = matches!(source, KeySource::Secret(_));
        let before = self.problems.len();
        for (name, set, ok) in [
            ("ca_file", x.ca_file.is_some(), is_url),
            ("cache_min", x.cache_min.is_some(), is_url),
            ("cache_max", x.cache_max.is_some(), is_url),
            ("refetch_interval", x.refetch_interval.is_some(), is_url),
            ("fetch_timeout", x.fetch_timeout.is_some(), is_url),
            (
                "previous_secret_env",
                x.previous_secret_env.is_some(),
                is_secret,
            ),
            (
                "previous_secret_file",
                x.previous_secret_file.is_some(),
                is_secret,
            ),
            ("previous_until", x.previous_until.is_some(), is_secret),
        ] {
            if set && !ok {
                let what = if name.starts_with("previous") {
                    "secret_env / secret_file"
                } else {
                    "jwks_url"
                };
                self.problem(format!("{at}.{name}: only applies to a {what} key"));
            }
        }
        let d = JwksOptions::default();
        let mut j = JwksOptions {
            ca_file: x.ca_file.map(|p| self.path(&p)),
            cache_min: self.dur_opt(&format!("{at}.cache_min"), x.cache_min, d.cache_min),
            cache_max: self.dur_opt(&format!("{at}.cache_max"), x.cache_max, d.cache_max),
            refetch_interval: self.dur_opt(
                &format!("{at}.refetch_interval"),
                x.refetch_interval,
                d.refetch_interval,
            ),
            fetch_timeout: self.dur_opt(
                &format!("{at}.fetch_timeout"),
                x.fetch_timeout,
                d.fetch_timeout,
            ),
        };
        if is_jwks {
            if j.cache_min < Duration::from_secs(1) {
                self.problem(format!("{at}.cache_min: must be at least 1s"));
            }
            if j.cache_max < j.cache_min {
                self.problem(format!(
                    "{at}.cache_max: {} is shorter than cache_min {}",
                    fmt_dur(j.cache_max),
                    fmt_dur(j.cache_min)
                ));
            }
            if j.refetch_interval < Duration::from_secs(1) {
                self.problem(format!("{at}.refetch_interval: must be at least 1s"));
            }
            if j.fetch_timeout.is_zero() || j.fetch_timeout > Duration::from_secs(60) {
                self.problem(format!("{at}.fetch_timeout: must be between 1ms and 60s"));
            }
            if let Some(ca) = &j.ca_file {
                let ca = ca.clone();
                self.check_pem_file(
                    &format!("{at}.ca_file"),
                    &ca,
                    "CERTIFICATE-----",
                    "certificate",
                );
            }
        } else {
            j = JwksOptions::default();
        }
        let mut previous = None;
        if is_secret {
            let (sec, _) = if x.previous_secret_env.is_some() || x.previous_secret_file.is_some() {
                self.resolve_secret(
                    &format!("{at}.previous_secret"),
                    x.previous_secret_env,
                    x.previous_secret_file,
                    None,
                    true,
                )
            } else {
                (None, None)
            };
            match (sec, x.previous_until) {
                (None, None) => {}
                (Some(_), None) => self.problem(format!(
                    "{at}.previous_until: required with a previous secret (RFC 3339, e.g. \
                     \"2026-12-01T00:00:00Z\"): the old secret is refused after it"
                )),
                (None, Some(_)) if self.problems.len() == before => self.problem(format!(
                    "{at}.previous_until: given without previous_secret_env / previous_secret_file"
                )),
                (None, Some(_)) => {}
                (Some(sec), Some(text)) => match humantime::parse_rfc3339_weak(text.trim()) {
                    Err(e) => self.problem(format!(
                        "{at}.previous_until: {text:?} is not an RFC 3339 time: {e}"
                    )),
                    Ok(until) => {
                        let min = alg.map(hs_min_len).unwrap_or(32);
                        if alg.map(|a| a.family()) == Some(AlgorithmFamily::Hmac) && sec.len() < min
                        {
                            self.problem(format!(
                                "{at}: the previous secret is {} bytes; at least {min} are required",
                                sec.len()
                            ));
                        } else {
                            previous = Some(PreviousSecret {
                                secret: sec,
                                until,
                                until_text: text,
                            });
                        }
                    }
                },
            }
        }
        (self.problems.len() == before).then_some((j, previous))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::time::Duration;

    const ORIGINS: &str = "[origins]\nallow = [\"https://app.example\"]\n";
    const S1: &str = "0123456789abcdef0123456789abcdef";

    fn load(text: &str) -> Result<Config, Vec<String>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wsgate.toml");
        std::fs::write(&path, format!("{ORIGINS}{text}")).expect("write");
        let env = vec![
            ("S1".to_string(), S1.to_string()),
            ("SHORT".to_string(), "short".to_string()),
        ];
        Config::load(&path, &env)
    }

    #[track_caller]
    fn problem(text: &str, needle: &str) {
        let p = load(text).expect_err("expected problems");
        assert!(
            p.iter().any(|l| l.contains(needle)),
            "no {needle:?} in:\n{}",
            p.join("\n")
        );
    }

    #[test]
    fn jwks_options() {
        let c = load(
            "[[auth.keys]]\njwks_url = \"https://idp.example/jwks\"\ncache_min = \"10s\"\n\
             cache_max = \"2h\"\nrefetch_interval = \"1m\"\nfetch_timeout = \"2s\"\n",
        )
        .expect("valid");
        let j = &c.auth.keys[0].jwks;
        assert_eq!(
            (
                j.cache_min,
                j.cache_max,
                j.refetch_interval,
                j.fetch_timeout
            ),
            (
                Duration::from_secs(10),
                Duration::from_secs(7200),
                Duration::from_secs(60),
                Duration::from_secs(2)
            )
        );
        let out = c.redacted();
        assert!(out.contains("cache_max = \"2h\""), "{out}");
        problem(
            "[[auth.keys]]\njwks_url = \"https://i/j\"\ncache_min = \"1h\"\ncache_max = \"1m\"\n",
            "auth.keys[0].cache_max: 1m is shorter than cache_min 1h",
        );
        problem(
            "[[auth.keys]]\njwks_url = \"https://i/j\"\nrefetch_interval = \"soon\"\n",
            "auth.keys[0].refetch_interval: \"soon\" is not a duration",
        );
        problem(
            "[[auth.keys]]\njwks_url = \"https://i/j\"\nca_file = \"/nonexistent/ca.pem\"\n",
            "auth.keys[0].ca_file: cannot read",
        );
        problem(
            "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\ncache_min = \"1m\"\n",
            "auth.keys[0].cache_min: only applies to a jwks_url key",
        );
    }

    #[test]
    fn previous_secret() {
        let c = load(
            "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\nprevious_secret_env = \"S1\"\n\
             previous_until = \"2030-01-01T00:00:00Z\"\n",
        )
        .expect("valid");
        let p = c.auth.keys[0].previous.as_ref().expect("previous");
        assert_eq!(p.until_text, "2030-01-01T00:00:00Z");
        let out = c.redacted();
        assert!(out.contains("previous_secret = \"[redacted]\""), "{out}");
        assert!(!out.contains(S1), "{out}");
        problem(
            "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\nprevious_secret_env = \"S1\"\n",
            "auth.keys[0].previous_until: required",
        );
        problem(
            "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\nprevious_until = \"2030-01-01T00:00:00Z\"\n",
            "given without previous_secret_env",
        );
        problem(
            "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\nprevious_secret_env = \"S1\"\nprevious_until = \"tomorrow\"\n",
            "is not an RFC 3339 time",
        );
        problem(
            "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\nprevious_secret_env = \"SHORT\"\nprevious_until = \"2030-01-01T00:00:00Z\"\n",
            "the previous secret is 5 bytes",
        );
        problem(
            "[[auth.keys]]\njwks_url = \"https://i/j\"\nprevious_secret_env = \"S1\"\n",
            "previous_secret_env: only applies to a secret_env / secret_file key",
        );
    }

    #[test]
    fn issuers() {
        let c = load(
            "[auth]\naudience = \"api\"\n[[auth.issuers]]\nissuer = \"https://a/\"\n\
             [[auth.issuers.keys]]\njwks_url = \"https://a/jwks\"\n[[auth.issuers]]\n\
             issuer = \"https://b/\"\naudience = [\"b1\", \"b2\"]\nsub_prefix = \"b:\"\n\
             [[auth.issuers.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\n",
        )
        .expect("valid without [[auth.keys]]");
        let i = &c.auth.issuers;
        assert_eq!(i.len(), 2);
        assert_eq!(
            i[0].audience,
            vec!["api".to_string()],
            "inherits auth.audience"
        );
        assert_eq!(i[1].audience, vec!["b1".to_string(), "b2".to_string()]);
        assert_eq!(i[1].sub_prefix, "b:");
        let out = c.redacted();
        assert!(out.contains("[[auth.issuers]]"), "{out}");
        problem(
            "[[auth.issuers]]\nissuer = \"https://a/\"\n[[auth.issuers.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\n\
             [[auth.issuers]]\nissuer = \"https://a/\"\n[[auth.issuers.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\n",
            "auth.issuers[1].issuer: \"https://a/\" is configured twice",
        );
        problem(
            "[[auth.issuers]]\naudience = \"x\"\n[[auth.issuers.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\n",
            "auth.issuers[0].issuer: required",
        );
        problem(
            "[[auth.issuers]]\nissuer = \"https://a/\"\n",
            "auth.issuers[0].keys: at least one",
        );
        problem(
            "[[auth.issuers]]\nissuer = \"https://a/\"\n[[auth.issuers.keys]]\nalg = \"HS256\"\nsecret_env = \"SHORT\"\n",
            "auth.issuers[0].keys[0]: the HS256 secret is 5 bytes",
        );
        problem(
            "[[auth.issuers]]\nissuer = \"https://a/\"\nbogus = 1\n[[auth.issuers.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\n",
            "bogus",
        );
    }

    /// `[[auth.issuers]]` with these (issuer, sub_prefix) pairs, each
    /// with an HS256 key; `auth_keys`: `[[auth.keys]]` too.
    fn issuers_with(list: &[(&str, &str)], auth_keys: bool) -> String {
        let mut t = String::new();
        if auth_keys {
            t.push_str("[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\n");
        }
        for (iss, prefix) in list {
            t.push_str(&format!(
                "[[auth.issuers]]\nissuer = {iss}\nsub_prefix = {prefix:?}\n\
                 [[auth.issuers.keys]]\nalg = \"HS256\"\nsecret_env = \"S1\"\n"
            ));
        }
        t
    }

    /// Issue 28: two issuers with the same sub_prefix were accepted, and a
    /// user of one could be a user of the other.
    #[test]
    fn issuers_never_share_a_subject_namespace() {
        let a = "\"https://a/\"";
        let b = "\"https://b/\"";
        for (list, auth_keys, needle) in [
            (
                vec![(a, "t|"), (b, "t|")],
                false,
                "auth.issuers[1].sub_prefix: \"t|\" is also the sub_prefix of auth.issuers[0] (\"t|\")",
            ),
            (
                vec![(a, ""), (b, "")],
                false,
                "auth.issuers[1].sub_prefix: \"\" is also the sub_prefix of auth.issuers[0]",
            ),
            (
                vec![(a, "")],
                true,
                "auth.issuers[0].sub_prefix: \"\" is also the sub_prefix of [[auth.keys]]",
            ),
            (
                vec![(a, "t"), (b, "t|")],
                false,
                "auth.issuers[1].sub_prefix: \"t|\" begins with the sub_prefix of auth.issuers[0] (\"t\")",
            ),
            (
                vec![(a, "t|x|"), (b, "t|")],
                false,
                "auth.issuers[1].sub_prefix: \"t|\" begins the sub_prefix of auth.issuers[0] (\"t|x|\")",
            ),
        ] {
            problem(&issuers_with(&list, auth_keys), needle);
        }
        // Distinct prefixes, one of them empty (your own issuer), are fine;
        // so are the [[auth.keys]] with prefixed issuers beside them.
        load(&issuers_with(
            &[(a, ""), (b, "b|"), ("\"https://c/\"", "c|")],
            false,
        ))
        .expect("distinct prefixes");
        load(&issuers_with(&[(a, "a|"), (b, "b|")], true)).expect("prefixed issuers");
        // One IdP's several iss spellings are one entry, one namespace.
        let c = load(&issuers_with(
            &[(
                "[\"https://accounts.google.com\", \"accounts.google.com\"]",
                "",
            )],
            false,
        ))
        .expect("a list of spellings");
        assert_eq!(
            c.auth.issuers[0].issuer,
            ["https://accounts.google.com", "accounts.google.com"]
        );
        assert!(c
            .redacted()
            .contains(r#"issuer = ["https://accounts.google.com", "accounts.google.com"]"#));
        problem(
            &issuers_with(&[("[\"https://a/\", \"https://a/\"]", "")], false),
            "auth.issuers[0].issuer: \"https://a/\" is configured twice",
        );
        problem(
            &issuers_with(
                &[(a, "a|"), ("[\"https://b/\", \"https://a/\"]", "b|")],
                false,
            ),
            "auth.issuers[1].issuer: \"https://a/\" is configured twice",
        );
        for bad in ["[]", "[\"\"]", "\"\""] {
            problem(
                &issuers_with(&[(bad, "")], false),
                "auth.issuers[0].issuer: required",
            );
        }
    }
}
