//! Key options beyond the source itself (issue 9, keys from identity
//! providers): JWKS fetching and caching, an HS secret's previous secret
//! kept for a rotation overlap, and `[[auth.issuers]]` for several issuers
//! at once.

use super::{de, fmt_dur, Builder, KeyConfig, KeySource, RawKey};
use jsonwebtoken::AlgorithmFamily;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use toml::{Table, Value};

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
    pub secret: super::Secret,
    pub until: SystemTime,
    /// As written in the file (RFC 3339), for `wsgate check`.
    pub until_text: String,
}

/// One `[[auth.issuers]]` entry: tokens whose `iss` is one of `issuer`
/// are verified with these keys and this audience only.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The exact `iss` values of one authority (usually one; Google writes
    /// two spellings): its subjects are one namespace.
    pub issuer: Vec<String>,
    pub audience: Vec<String>,
    pub keys: Vec<KeyConfig>,
    /// Prepended to `sub` of this issuer's tokens, so that subjects of
    /// different issuers cannot collide (`user:{sub}` channels, caps,
    /// revocation by sub).
    pub sub_prefix: String,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIssuer {
    #[serde(deserialize_with = "opt_string_or_list")]
    issuer: Option<Vec<String>>,
    #[serde(deserialize_with = "opt_string_or_list")]
    audience: Option<Vec<String>>,
    sub_prefix: String,
    keys: Vec<RawKey>,
}

fn opt_string_or_list<'a, D: serde::Deserializer<'a>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    de::string_or_list(d).map(Some)
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
                        let min = alg.map(super::hs_min_len).unwrap_or(32);
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

    /// `auth_keys`: whether `[[auth.keys]]` are configured, an issuer of
    /// their own whose subjects carry no prefix.
    pub(super) fn build_issuers(
        &mut self,
        raw: Vec<RawIssuer>,
        default_audience: &[String],
        default_issuer: Option<&str>,
        ticket_audience: &str,
        auth_keys: bool,
    ) -> Vec<IssuerConfig> {
        let mut out: Vec<IssuerConfig> = Vec::new();
        // Where each sub_prefix is used: (config location, prefix).
        let mut prefixes: Vec<(String, String)> = Vec::new();
        if auth_keys {
            prefixes.push(("[[auth.keys]]".into(), String::new()));
        }
        for (i, r) in raw.into_iter().enumerate() {
            let at = format!("auth.issuers[{i}]");
            let issuer = r.issuer.unwrap_or_default();
            if issuer.is_empty() || issuer.iter().any(String::is_empty) {
                self.problem(format!(
                    "{at}.issuer: required (the exact iss of its tokens, or a list of them)"
                ));
                continue;
            }
            for (n, iss) in issuer.iter().enumerate() {
                if Some(iss.as_str()) == default_issuer
                    || issuer[..n].contains(iss)
                    || out.iter().any(|o| o.issuer.contains(iss))
                {
                    self.problem(format!(
                        "{at}.issuer: {iss:?} is configured twice (auth.issuer or another \
                         [[auth.issuers]])"
                    ));
                }
            }
            self.check_sub_prefix(&at, &r.sub_prefix, &prefixes);
            prefixes.push((at.clone(), r.sub_prefix.clone()));
            let audience = r.audience.unwrap_or_else(|| default_audience.to_vec());
            for a in &audience {
                if a.is_empty() {
                    self.problem(format!("{at}.audience: must not contain an empty string"));
                } else if a == ticket_audience {
                    self.problem(format!("{at}.audience: contains the ticket audience {a:?}"));
                }
            }
            if r.keys.is_empty() {
                self.problem(format!(
                    "{at}.keys: at least one [[auth.issuers.keys]] entry"
                ));
            }
            let mut keys = Vec::new();
            for (k, raw_key) in r.keys.into_iter().enumerate() {
                if let Some(key) = self.build_key(&format!("{at}.keys[{k}]"), raw_key) {
                    keys.push(key);
                }
            }
            out.push(IssuerConfig {
                issuer,
                audience,
                keys,
                sub_prefix: r.sub_prefix,
            });
        }
        out
    }
}

impl Builder<'_> {
    /// Subjects of two issuers must never be able to meet: no two may share
    /// a `sub_prefix` (the empty one included), and no non-empty prefix may
    /// begin another (issuer `t` could mint `|bob` and be issuer `t|`'s
    /// `bob`). The empty prefix may start any other: it is the one issuer
    /// whose subjects are taken as they are, presumably your own.
    fn check_sub_prefix(&mut self, at: &str, prefix: &str, seen: &[(String, String)]) {
        for (other, p) in seen {
            let clash = if p == prefix {
                Some("is also the sub_prefix of")
            } else if !p.is_empty() && prefix.starts_with(p.as_str()) {
                Some("begins with the sub_prefix of")
            } else if !prefix.is_empty() && p.starts_with(prefix) {
                Some("begins the sub_prefix of")
            } else {
                None
            };
            if let Some(how) = clash {
                self.problem(format!(
                    "{at}.sub_prefix: {prefix:?} {how} {other} ({p:?}): users of the two \
                     issuers could share a sub (caps, user:{{sub}} channels, revocation by \
                     sub); give each issuer its own prefix, or list the iss spellings of one \
                     IdP in one entry (issuer = [..])"
                ));
            }
        }
    }
}

/// `wsgate check` rendering of the extras.
pub(super) fn render_extras(kt: &mut Table, k: &KeyConfig) {
    let s = |v: String| Value::String(v);
    if matches!(k.source, KeySource::JwksUrl(_)) {
        let j = &k.jwks;
        if let Some(ca) = &j.ca_file {
            kt.insert("ca_file".into(), s(ca.display().to_string()));
        }
        kt.insert("cache_min".into(), s(fmt_dur(j.cache_min)));
        kt.insert("cache_max".into(), s(fmt_dur(j.cache_max)));
        kt.insert("refetch_interval".into(), s(fmt_dur(j.refetch_interval)));
        kt.insert("fetch_timeout".into(), s(fmt_dur(j.fetch_timeout)));
    }
    if let Some(p) = &k.previous {
        match p.secret.source() {
            super::SecretSource::Env(n) => {
                kt.insert("previous_secret_env".into(), s(n.clone()));
            }
            super::SecretSource::File(f) => {
                kt.insert("previous_secret_file".into(), s(f.display().to_string()));
            }
            _ => {}
        }
        kt.insert("previous_secret".into(), s("[redacted]".into()));
        kt.insert("previous_until".into(), s(p.until_text.clone()));
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
