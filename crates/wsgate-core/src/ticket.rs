//! Single-use tickets (docs/reference.md): what a ticket carries and what a redeemed
//! ticket means. Signing and single use are the caller's (jsonwebtoken and
//! the store); this module is the policy.

use crate::reason::Reason;
use crate::verify::Verified;
use crate::UnixMillis;
use serde_json::{Map, Value};

/// Claims a session token never passes on to a ticket: the ticket gets its
/// own registered claims, and the CSRF value stays with the session.
const NOT_COPIED: [&str; 10] = [
    "iss",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "csrf",
    "session_exp",
    "session_jti",
    "session_iat",
];

/// Builds a ticket's claims for the session `session` at `now`.
/// `jti` must come from a CSPRNG (>= 128 bits).
pub fn claims(
    session: &Verified,
    audience: &str,
    ttl_ms: i64,
    jti: String,
    now: UnixMillis,
) -> Map<String, Value> {
    let mut c: Map<String, Value> = session
        .claims
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // exp <= now + ttl, and never past the session it stands for.
    let exp = (now + ttl_ms).div_euclid(1000).min(session.exp_secs());
    c.insert("sub".into(), Value::from(session.sub.clone()));
    c.insert("aud".into(), Value::from(audience));
    // A fractional NumericDate (RFC 7519 allows it): the store's restart
    // fence compares issue times to the millisecond.
    c.insert("iat".into(), Value::from(now as f64 / 1000.0));
    c.insert("exp".into(), Value::from(exp));
    c.insert("jti".into(), Value::from(jti));
    c.insert("session_exp".into(), Value::from(session.exp_secs()));
    if let Some(j) = &session.jti {
        c.insert("session_jti".into(), Value::from(j.clone()));
    }
    // The session token's own issue time: a revocation by `sub` ("tokens
    // issued before ...") must match the socket a ticket opens exactly as it
    // matches the token. Without it the socket has no `iat`, which every
    // `sub` revocation matches (fail closed).
    if let Some(iat) = session.iat_ms {
        c.insert("session_iat".into(), Value::from(iat as f64 / 1000.0));
    }
    c
}

/// A verified ticket, ready for its single use.
#[derive(Debug, Clone, PartialEq)]
pub struct Redeemable {
    /// The id the store marks as used.
    pub jti: String,
    /// When the ticket was issued (the store's restart fence).
    pub issued_at: UnixMillis,
    /// The identity the socket gets: the ticket's claims, with the session
    /// token's deadline (`session_exp`), `jti` (`session_jti`) and issue
    /// time (`session_iat`), so revocations match it as they match the token.
    pub session: Verified,
}

/// Checks what a verified ticket must carry beyond a token.
pub fn redeemable(ticket: Verified) -> Result<Redeemable, Reason> {
    let jti = ticket.jti.clone().ok_or(Reason::MissingClaim)?;
    let issued_at = ticket.iat_ms.ok_or(Reason::MissingClaim)?;
    let session_exp = ticket
        .claims
        .get("session_exp")
        .ok_or(Reason::MissingClaim)?
        .as_f64()
        .filter(|f| f.is_finite())
        .ok_or(Reason::MalformedToken)?;
    let session_jti = match ticket.claims.get("session_jti") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Reason::MalformedToken),
    };
    let session_iat = match ticket.claims.get("session_iat") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|f| f.is_finite())
                .ok_or(Reason::MalformedToken)?,
        ),
    };
    let mut session = ticket;
    // Saturating float-to-int: huge values clamp instead of wrapping.
    session.exp_ms = (session_exp * 1000.0) as i64;
    session.jti = session_jti;
    session.iat_ms = session_iat.map(|s| (s * 1000.0) as i64);
    Ok(Redeemable {
        jti,
        issued_at,
        session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn session() -> Verified {
        let claims = json!({
            "sub": "alice", "iss": "https://idp", "aud": "api", "exp": NOW / 1000 + 3600,
            "iat": NOW / 1000, "jti": "sess-1", "sid": "s-9", "csrf": "secret-csrf",
            "roles": ["admin"], "scope": "read write"
        });
        Verified {
            sub: "alice".into(),
            exp_ms: NOW + 3_600_000,
            iat_ms: Some(NOW),
            jti: Some("sess-1".into()),
            sid: Some("s-9".into()),
            alg: Algorithm::HS256,
            claims: claims.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn ticket_carries_authorization_claims_not_csrf() {
        let c = claims(&session(), "wsgate-ticket", 30_000, "j".into(), NOW);
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["aud"], "wsgate-ticket");
        assert_eq!(c["exp"], NOW / 1000 + 30);
        assert_eq!(c["iat"].as_f64(), Some(NOW as f64 / 1000.0));
        assert_eq!(c["session_exp"], NOW / 1000 + 3600);
        assert_eq!(c["session_jti"], "sess-1");
        assert_eq!(c["roles"], json!(["admin"]));
        assert_eq!(c["scope"], "read write");
        assert_eq!(c["sid"], "s-9");
        assert!(!c.contains_key("csrf"));
        assert!(!c.contains_key("iss"));
    }

    #[test]
    fn ticket_never_outlives_session() {
        let mut s = session();
        s.exp_ms = NOW + 10_000;
        let c = claims(&s, "t", 30_000, "j".into(), NOW);
        assert_eq!(c["exp"], NOW / 1000 + 10);
    }

    #[test]
    fn redeemed_ticket_takes_session_deadline() {
        let c = claims(&session(), "t", 30_000, "tj".into(), NOW);
        let v = Verified {
            sub: "alice".into(),
            exp_ms: NOW + 30_000,
            iat_ms: Some(NOW),
            jti: Some("tj".into()),
            sid: Some("s-9".into()),
            alg: Algorithm::HS256,
            claims: c,
        };
        let r = redeemable(v).expect("redeemable");
        assert_eq!(r.jti, "tj");
        assert_eq!(r.issued_at, NOW);
        assert_eq!(r.session.exp_ms, NOW + 3_600_000);
        assert_eq!(r.session.jti.as_deref(), Some("sess-1"));
    }

    /// A ticket minted after a `sub` revocation that refuses its session
    /// token is refused too: the socket carries the token's `iat`, not the
    /// ticket's.
    #[test]
    fn redeemed_ticket_carries_the_session_iat() {
        let minted_at = NOW + 5_000;
        let c = claims(&session(), "t", 30_000, "tj".into(), minted_at);
        assert_eq!(c["session_iat"].as_f64(), Some(NOW as f64 / 1000.0));
        let ticket = Verified {
            sub: "alice".into(),
            exp_ms: minted_at + 30_000,
            iat_ms: Some(minted_at),
            jti: Some("tj".into()),
            sid: Some("s-9".into()),
            alg: Algorithm::HS256,
            claims: c,
        };
        let r = redeemable(ticket.clone()).expect("redeemable");
        assert_eq!(
            r.issued_at, minted_at,
            "the store's fence keeps the ticket's own"
        );
        assert_eq!(r.session.iat_ms, Some(NOW));
        let mut set = crate::revocation::RevocationSet::new();
        set.insert(crate::revocation::Revocation {
            target: crate::revocation::Target::Sub("alice".into()),
            at: NOW + 1_000,
            until: NOW + 7_200_000,
        });
        assert!(set.is_revoked(&r.session, minted_at + 1_000));
        // No session_iat (a session token without iat): no issue time to
        // prove it came after a revocation, so every `sub` revocation hits.
        let mut bare = ticket.clone();
        bare.claims.remove("session_iat");
        let r = redeemable(bare).expect("redeemable");
        assert_eq!(r.session.iat_ms, None);
        assert!(set.is_revoked(&r.session, minted_at + 1_000));
        let mut bad = ticket;
        bad.claims.insert("session_iat".into(), json!("1"));
        assert_eq!(redeemable(bad), Err(Reason::MalformedToken));
    }

    #[test]
    fn redeem_needs_jti_iat_session_exp() {
        let base = Verified {
            sub: "a".into(),
            exp_ms: NOW,
            iat_ms: Some(NOW),
            jti: Some("j".into()),
            sid: None,
            alg: Algorithm::HS256,
            claims: json!({"session_exp": 5})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        assert!(redeemable(base.clone()).is_ok());
        let mut v = base.clone();
        v.jti = None;
        assert_eq!(redeemable(v), Err(Reason::MissingClaim));
        let mut v = base.clone();
        v.iat_ms = None;
        assert_eq!(redeemable(v), Err(Reason::MissingClaim));
        let mut v = base.clone();
        v.claims.remove("session_exp");
        assert_eq!(redeemable(v), Err(Reason::MissingClaim));
        let mut v = base;
        v.claims.insert("session_exp".into(), json!("5"));
        assert_eq!(redeemable(v), Err(Reason::MalformedToken));
    }
}
