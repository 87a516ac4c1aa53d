//! `[[auth.issuers]]`: several issuers at once, each with its own keys,
//! audience and subject namespace (`sub_prefix`).

use super::build::Builder;
use super::keys::RawKey;
use super::{de, KeyConfig};
use serde::{Deserialize, Serialize, Serializer};

/// One `[[auth.issuers]]` entry: tokens whose `iss` is one of `issuer`
/// are verified with these keys and this audience only.
#[derive(Debug, Clone, Serialize)]
pub struct IssuerConfig {
    /// The exact `iss` values of one authority (usually one; Google writes
    /// two spellings): its subjects are one namespace.
    #[serde(serialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    pub audience: Vec<String>,
    pub keys: Vec<KeyConfig>,
    /// Prepended to `sub` of this issuer's tokens, so that subjects of
    /// different issuers cannot collide (`user:{sub}` channels, caps,
    /// revocation by sub).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sub_prefix: String,
}

/// One `iss` as a string, several as a list: as the file writes them.
fn one_or_many<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    match v {
        [one] => s.serialize_str(one),
        many => many.serialize(s),
    }
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

impl Builder<'_> {
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
