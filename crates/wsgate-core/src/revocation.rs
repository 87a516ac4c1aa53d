//! Revocations in force, as a pure data structure with an explicit clock.
//!
//! A revocation by `sub` refuses tokens of that subject issued before it
//! (so a fresh login still works); by `jti` or `sid` it refuses that token
//! or that session outright. Each entry expires when no token it could
//! match can still be valid, so the set stays bounded.

use crate::verify::Verified;
use crate::UnixMillis;
use std::collections::HashMap;

/// What a revocation matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// Tokens of this subject issued before `at` (ms).
    Sub(String),
    /// One token.
    Jti(String),
    /// One session (all tokens carrying this `sid`).
    Sid(String),
}

impl Target {
    /// `sub`, `jti` or `sid`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Sub(_) => "sub",
            Target::Jti(_) => "jti",
            Target::Sid(_) => "sid",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Target::Sub(v) | Target::Jti(v) | Target::Sid(v) => v,
        }
    }

    /// Parses `("sub"|"jti"|"sid", value)`.
    pub fn from_parts(kind: &str, value: &str) -> Option<Target> {
        let v = value.to_owned();
        match kind {
            "sub" => Some(Target::Sub(v)),
            "jti" => Some(Target::Jti(v)),
            "sid" => Some(Target::Sid(v)),
            _ => None,
        }
    }
}

/// One revocation: what, when it was made, until when it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub target: Target,
    /// When it was made (sub revocations match tokens issued before this).
    pub at: UnixMillis,
    /// After this no token it could match is still valid.
    pub until: UnixMillis,
}

impl Revocation {
    /// Whether this revocation refuses `token`.
    pub fn matches(&self, token: &Verified) -> bool {
        match &self.target {
            Target::Sub(s) => {
                // A token without iat cannot prove it came after: refused.
                *s == token.sub && token.iat_ms.is_none_or(|iat| iat < self.at)
            }
            Target::Jti(j) => token.jti.as_deref() == Some(j.as_str()),
            Target::Sid(s) => token.sid.as_deref() == Some(s.as_str()),
        }
    }
}

/// The revocations a node knows about.
#[derive(Debug, Default, Clone)]
pub struct RevocationSet {
    /// Keyed by target; a later revocation of the same target extends it.
    entries: HashMap<Target, (UnixMillis, UnixMillis)>,
}

impl RevocationSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds (or extends) a revocation.
    pub fn insert(&mut self, r: Revocation) {
        let e = self.entries.entry(r.target).or_insert((r.at, r.until));
        e.0 = e.0.max(r.at);
        e.1 = e.1.max(r.until);
    }

    /// Whether `token` is refused at `now`.
    pub fn is_revoked(&self, token: &Verified, now: UnixMillis) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        let hit = |t: Target| {
            self.entries.get(&t).is_some_and(|&(at, until)| {
                now < until
                    && Revocation {
                        target: t.clone(),
                        at,
                        until,
                    }
                    .matches(token)
            })
        };
        hit(Target::Sub(token.sub.clone()))
            || token.jti.clone().is_some_and(|j| hit(Target::Jti(j)))
            || token.sid.clone().is_some_and(|s| hit(Target::Sid(s)))
    }

    /// Every revocation held, as records.
    pub fn entries(&self) -> Vec<Revocation> {
        self.entries
            .iter()
            .map(|(t, &(at, until))| Revocation {
                target: t.clone(),
                at,
                until,
            })
            .collect()
    }

    /// Whether the set holds a revocation of `target` at least as strong as `r`.
    pub fn covers(&self, r: &Revocation) -> bool {
        self.entries
            .get(&r.target)
            .is_some_and(|&(at, until)| at >= r.at && until >= r.until)
    }

    /// Drops entries that can no longer match anything.
    pub fn prune(&mut self, now: UnixMillis) {
        self.entries.retain(|_, &mut (_, until)| now < until);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;

    const T0: i64 = 1_800_000_000_000;

    fn tok(sub: &str, iat: Option<i64>, jti: Option<&str>, sid: Option<&str>) -> Verified {
        Verified {
            sub: sub.into(),
            exp_ms: T0 + 3_600_000,
            iat_ms: iat,
            jti: jti.map(Into::into),
            sid: sid.map(Into::into),
            alg: Algorithm::HS256,
            claims: Default::default(),
        }
    }

    fn rev(target: Target, at: i64) -> Revocation {
        Revocation {
            target,
            at,
            until: at + 3_600_000,
        }
    }

    #[test]
    fn sub_revocation_spares_newer_logins() {
        let mut s = RevocationSet::new();
        s.insert(rev(Target::Sub("alice".into()), T0));
        assert!(s.is_revoked(&tok("alice", Some(T0 - 1), None, None), T0));
        assert!(!s.is_revoked(&tok("alice", Some(T0), None, None), T0));
        assert!(s.is_revoked(&tok("alice", None, None, None), T0));
        assert!(!s.is_revoked(&tok("bob", Some(T0 - 1), None, None), T0));
    }

    #[test]
    fn jti_and_sid() {
        let mut s = RevocationSet::new();
        s.insert(rev(Target::Jti("j1".into()), T0));
        s.insert(rev(Target::Sid("s1".into()), T0));
        assert!(s.is_revoked(&tok("a", Some(T0 + 5), Some("j1"), None), T0 + 10));
        assert!(s.is_revoked(&tok("a", Some(T0 + 5), None, Some("s1")), T0 + 10));
        assert!(!s.is_revoked(&tok("a", Some(T0 + 5), Some("j2"), Some("s2")), T0 + 10));
    }

    #[test]
    fn entries_expire_and_prune() {
        let mut s = RevocationSet::new();
        s.insert(rev(Target::Jti("j1".into()), T0));
        let t = tok("a", Some(T0), Some("j1"), None);
        assert!(s.is_revoked(&t, T0 + 3_599_999));
        assert!(!s.is_revoked(&t, T0 + 3_600_000));
        s.prune(T0 + 3_600_000);
        assert!(s.is_empty());
    }

    #[test]
    fn re_revoking_extends() {
        let mut s = RevocationSet::new();
        s.insert(rev(Target::Sub("a".into()), T0));
        s.insert(rev(Target::Sub("a".into()), T0 + 1000));
        assert!(s.is_revoked(&tok("a", Some(T0 + 500), None, None), T0 + 2000));
        assert_eq!(s.len(), 1);
    }
}
