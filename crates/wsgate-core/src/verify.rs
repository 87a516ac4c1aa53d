//! Token verification: pinned algorithms per key, then claims at an explicit `now`.
//!
//! The signature and key handling are jsonwebtoken's (aws-lc-rs backend).
//! This module decides which key a token may be checked against (never
//! trusting the token's `alg` alone) and applies the claim rules with a
//! caller-supplied clock, so every edge is testable without sleeping.

use crate::reason::Reason;
use crate::UnixMillis;
use aws_lc_rs::hmac;
use aws_lc_rs::signature::{self as sig, ParsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::str::FromStr;

/// A verification key with its pinned algorithm.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// RSA modulus sizes the verifier accepts: RFC 7518 §3.3 requires 2048
/// bits or more, and aws-lc's `RSA_*_2048_8192_*` stop at 8192.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

/// The modulus size of an RSA key in bits; `None` for anything else.
pub fn rsa_bits(key: &DecodingKey) -> Option<usize> {
    if key.family() != jsonwebtoken::AlgorithmFamily::Rsa {
        return None;
    }
    match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => sig::RsaParameters::public_modulus_len(der)
            .ok()
            .and_then(|b| usize::try_from(b).ok()),
        DecodingKeyKind::RsaModulusExponent { n, .. } => {
            let first = n.iter().position(|&b| b != 0)?;
            let n = &n[first..];
            Some(n.len() * 8 - n[0].leading_zeros() as usize)
        }
    }
}

impl VerifyKey {
    /// Whether any signature can verify under this key: the verifier can
    /// prepare it for its algorithm, and an RSA key is 2048 to 8192 bits.
    /// Every token checked against a key that is not usable is refused
    /// `bad_signature`, so loading one should be refused, with the reason,
    /// instead.
    pub fn is_usable(&self) -> bool {
        let sized = self.alg.family() != jsonwebtoken::AlgorithmFamily::Rsa
            || rsa_bits(&self.key).is_some_and(|b| RSA_BITS.contains(&b));
        sized && !matches!(Prepared::new(self), Prepared::Unprepared)
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// Claim rules applied after the signature checks out.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// When non-empty, `aud` must contain one of these.
    pub audience: Vec<String>,
    /// Clock tolerance on exp / nbf / iat.
    pub leeway_ms: i64,
    /// When set, tokens living longer than this (`exp` - `iat`, or - now
    /// without `iat`) are refused `expired`: a revocation is only kept this
    /// long, and no token may outlive the record of its revocation.
    pub max_lifetime_ms: Option<i64>,
    /// Tokens whose `aud` contains this are refused here (tickets never
    /// pass as session tokens).
    pub forbidden_audience: Option<String>,
}

/// A key prepared once for every token it checks.
// A verifier holds a handful of these; the HMAC key stays inline.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Prepared {
    /// The HMAC key with its pads already hashed: building it per token (as
    /// `jsonwebtoken::crypto::verify` does) was two SHA-2 blocks of every HS
    /// verification.
    Hmac(hmac::Key),
    /// The public key already decoded: per token, jsonwebtoken clones the
    /// key and aws-lc-rs decodes and validates it again (for RSA that
    /// includes building the modulus' Montgomery context).
    Public(ParsedPublicKey),
    /// A key aws-lc-rs would not parse: left to jsonwebtoken, which refuses
    /// every signature under it.
    Unprepared,
}

impl Prepared {
    fn new(k: &VerifyKey) -> Self {
        let hmac_alg = match k.alg {
            Algorithm::HS256 => Some(hmac::HMAC_SHA256),
            Algorithm::HS384 => Some(hmac::HMAC_SHA384),
            Algorithm::HS512 => Some(hmac::HMAC_SHA512),
            _ => None,
        };
        if let Some(alg) = hmac_alg {
            return match k.key.try_get_as_bytes() {
                Ok(secret) => Prepared::Hmac(hmac::Key::new(alg, secret)),
                Err(_) => Prepared::Unprepared,
            };
        }
        // The same verification algorithms jsonwebtoken's aws-lc provider
        // picks (RSA keys of 2048 bits or more; fixed-size ECDSA signatures).
        let parsed = match (k.alg, k.key.kind()) {
            (Algorithm::ES256, DecodingKeyKind::SecretOrDer(b)) => {
                ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, b)
            }
            (Algorithm::ES384, DecodingKeyKind::SecretOrDer(b)) => {
                ParsedPublicKey::new(&sig::ECDSA_P384_SHA384_FIXED, b)
            }
            (Algorithm::EdDSA, DecodingKeyKind::SecretOrDer(b)) => {
                ParsedPublicKey::new(&sig::ED25519, b)
            }
            (alg, kind) => {
                let params: &'static sig::RsaParameters = match alg {
                    Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
                    _ => return Prepared::Unprepared,
                };
                match kind {
                    DecodingKeyKind::SecretOrDer(der) => ParsedPublicKey::new(params, der),
                    DecodingKeyKind::RsaModulusExponent { n, e } => {
                        sig::RsaPublicKeyComponents { n, e }.to_parsed_public_key(params)
                    }
                }
            }
        };
        parsed.map_or(Prepared::Unprepared, Prepared::Public)
    }
}

/// Verifies tokens against a fixed set of keys and rules.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<VerifyKey>,
    /// `prepared[i]` is `keys[i]` made ready for verification.
    prepared: Vec<Prepared>,
    rules: ClaimRules,
}

/// A token that verified at some `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub sub: String,
    /// `exp` in milliseconds since the epoch.
    pub exp_ms: UnixMillis,
    pub iat_ms: Option<UnixMillis>,
    pub jti: Option<String>,
    pub sid: Option<String>,
    pub alg: Algorithm,
    /// Every claim, as verified.
    pub claims: Map<String, Value>,
}

impl Verified {
    /// `exp` in whole seconds, as clients see it in `auth_ok`.
    pub fn exp_secs(&self) -> i64 {
        self.exp_ms.div_euclid(1000)
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Parses an algorithm name as configured or as found in a token header.
/// `none` and anything not supported are `None`.
pub fn parse_alg(s: &str) -> Option<Algorithm> {
    // jsonwebtoken knows no "none"; be explicit anyway so it can never slip in.
    if s.eq_ignore_ascii_case("none") {
        return None;
    }
    Algorithm::from_str(s).ok()
}

/// Canonical name of an algorithm.
pub fn alg_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// A JSON number claim as milliseconds. Strings and other types are refused
/// (no "exp": "9999999999" type confusion).
fn numeric_ms(v: &Value) -> Result<i64, Reason> {
    let secs = v
        .as_f64()
        .filter(|f| f.is_finite())
        .ok_or(Reason::MalformedToken)?;
    // Saturate far-future and far-past values instead of overflowing.
    Ok((secs * 1000.0)
        .round()
        .clamp(i64::MIN as f64 / 2.0, i64::MAX as f64 / 2.0) as i64)
}

fn opt_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, Reason> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Reason::MalformedToken),
    }
}

impl Verifier {
    pub fn new(keys: Vec<VerifyKey>, rules: ClaimRules) -> Self {
        let prepared = keys.iter().map(Prepared::new).collect();
        Verifier {
            keys,
            prepared,
            rules,
        }
    }

    pub fn rules(&self) -> &ClaimRules {
        &self.rules
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Verifies signature and claims at `now`.
    pub fn verify(&self, token: &str, now: UnixMillis) -> Result<Verified, Reason> {
        let (alg, claims) = self.verify_signature(token)?;
        self.check_claims(alg, claims, now)
    }

    /// Checks structure, header, key choice and signature; returns the payload.
    fn verify_signature(&self, token: &str) -> Result<(Algorithm, Map<String, Value>), Reason> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            // JWE (5 parts), unsecured or truncated tokens.
            return Err(Reason::MalformedToken);
        };
        let header_bytes = URL_SAFE_NO_PAD
            .decode(h64)
            .map_err(|_| Reason::MalformedToken)?;
        // Duplicate member names are refused (see crate::json).
        let header =
            crate::json::unique_object(&header_bytes).map_err(|_| Reason::MalformedToken)?;
        // We understand no JWS extension, so any `crit` is refused (RFC 7515
        // 4.1.11), the empty list (which the RFC forbids) and `null` too; so
        // is `b64` (RFC 7797). Checked on the object: serde reads `null` as
        // absent.
        if header.contains_key("crit") || header.contains_key("b64") {
            return Err(Reason::MalformedToken);
        }
        let header: RawHeader =
            serde_json::from_value(Value::Object(header)).map_err(|_| Reason::MalformedToken)?;
        let alg = parse_alg(&header.alg).ok_or(Reason::AlgorithmNotAllowed)?;

        // Key choice: a kid selects keys with that kid (or, if none has it,
        // keys configured without a kid); no kid means every key.
        let keys = self.keys.iter().enumerate();
        let by_kid: Vec<(usize, &VerifyKey)> = match &header.kid {
            Some(kid) => {
                let exact: Vec<_> = keys
                    .clone()
                    .filter(|(_, k)| k.kid.as_deref() == Some(kid.as_str()))
                    .collect();
                if exact.is_empty() {
                    keys.filter(|(_, k)| k.kid.is_none()).collect()
                } else {
                    exact
                }
            }
            None => keys.collect(),
        };
        if by_kid.is_empty() {
            return Err(Reason::UnknownKey);
        }
        let mut candidates = by_kid.into_iter().filter(|(_, k)| k.alg == alg).peekable();
        if candidates.peek().is_none() {
            return Err(Reason::AlgorithmNotAllowed);
        }
        let message_len = h64.len() + 1 + p64.len();
        let message = &token.as_bytes()[..message_len];
        let mut verified = false;
        let mut signature: Option<Vec<u8>> = None;
        for (i, k) in candidates {
            let prepared = self.prepared.get(i).unwrap_or(&Prepared::Unprepared);
            if let Prepared::Unprepared = prepared {
                match jsonwebtoken::crypto::verify(s64, message, &k.key, alg) {
                    Ok(true) => {
                        verified = true;
                        break;
                    }
                    Ok(false) => continue,
                    Err(e) => {
                        if let jsonwebtoken::errors::ErrorKind::Base64(_) = e.kind() {
                            return Err(Reason::MalformedToken);
                        }
                        // Wrong-length signatures and similar: not valid.
                        continue;
                    }
                }
            }
            let sig = match &signature {
                Some(sig) => sig,
                None => signature.insert(
                    URL_SAFE_NO_PAD
                        .decode(s64)
                        .map_err(|_| Reason::MalformedToken)?,
                ),
            };
            let ok = match prepared {
                // Constant time; a wrong-length signature is just not valid.
                Prepared::Hmac(key) => hmac::verify(key, message, sig).is_ok(),
                Prepared::Public(key) => key.verify_sig(message, sig).is_ok(),
                Prepared::Unprepared => false,
            };
            if ok {
                verified = true;
                break;
            }
        }
        if !verified {
            return Err(Reason::BadSignature);
        }
        let payload = URL_SAFE_NO_PAD
            .decode(p64)
            .map_err(|_| Reason::MalformedToken)?;
        let claims = crate::json::unique_object(&payload).map_err(|_| Reason::MalformedToken)?;
        Ok((alg, claims))
    }

    fn check_claims(
        &self,
        alg: Algorithm,
        claims: Map<String, Value>,
        now: UnixMillis,
    ) -> Result<Verified, Reason> {
        let leeway = self.rules.leeway_ms;
        let exp_ms = numeric_ms(claims.get("exp").ok_or(Reason::MissingClaim)?)?;
        // Valid while now < exp + leeway (RFC 7519: "on or after" exp is expired).
        if now >= exp_ms.saturating_add(leeway) {
            return Err(Reason::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            if now.saturating_add(leeway) < numeric_ms(nbf)? {
                return Err(Reason::NotYetValid);
            }
        }
        let iat_ms = match claims.get("iat") {
            Some(v) => {
                let iat = numeric_ms(v)?;
                if iat > now.saturating_add(leeway) {
                    return Err(Reason::NotYetValid);
                }
                Some(iat)
            }
            None => None,
        };
        if let Some(max) = self.rules.max_lifetime_ms {
            let start = iat_ms.unwrap_or(now);
            if exp_ms.saturating_sub(start) > max.saturating_add(leeway) {
                return Err(Reason::Expired);
            }
        }
        if let Some(iss) = &self.rules.issuer {
            match claims.get("iss") {
                None => return Err(Reason::MissingClaim),
                Some(Value::String(s)) if s == iss => {}
                Some(_) => return Err(Reason::BadIssuer),
            }
        }
        let auds = audiences(&claims)?;
        if !self.rules.audience.is_empty() {
            if auds.is_none() {
                return Err(Reason::MissingClaim);
            }
            if !auds
                .iter()
                .flatten()
                .any(|a| self.rules.audience.iter().any(|want| want == a))
            {
                return Err(Reason::BadAudience);
            }
        }
        if let Some(forbidden) = &self.rules.forbidden_audience {
            if auds.iter().flatten().any(|a| a == forbidden) {
                return Err(Reason::TicketRequired);
            }
        }
        let sub = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None | Some(Value::String(_)) => return Err(Reason::MissingClaim),
            Some(_) => return Err(Reason::MalformedToken),
        };
        let jti = opt_string(&claims, "jti")?;
        let sid = opt_string(&claims, "sid")?;
        Ok(Verified {
            sub,
            exp_ms,
            iat_ms,
            jti,
            sid,
            alg,
            claims,
        })
    }
}

/// The `iss` of a token, read WITHOUT verifying anything: only to choose
/// which issuer's keys and rules verify it (the chosen verifier checks
/// `iss` again). `Ok(None)`: no `iss` claim.
pub fn unverified_issuer(token: &str) -> Result<Option<String>, Reason> {
    let mut parts = token.split('.');
    let (Some(_), Some(p64), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Reason::MalformedToken);
    };
    #[derive(Deserialize)]
    struct Iss {
        #[serde(default)]
        iss: Option<Value>,
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p64)
        .map_err(|_| Reason::MalformedToken)?;
    let p: Iss = serde_json::from_slice(&payload).map_err(|_| Reason::MalformedToken)?;
    match p.iss {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reason::MalformedToken),
    }
}

/// `aud` as a list: a string or an array of strings.
fn audiences(claims: &Map<String, Value>) -> Result<Option<Vec<&str>>, Reason> {
    match claims.get("aud") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().ok_or(Reason::MalformedToken))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Reason::MalformedToken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: i64 = 1_800_000_000_000;

    fn hs_key(kid: Option<&str>) -> VerifyKey {
        VerifyKey {
            kid: kid.map(str::to_string),
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(SECRET),
        }
    }

    fn sign(header: &Header, claims: &Value, secret: &[u8]) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret)).expect("sign")
    }

    fn hs(claims: Value) -> String {
        sign(&Header::new(Algorithm::HS256), &claims, SECRET)
    }

    fn base() -> Value {
        json!({"sub": "alice", "exp": NOW / 1000 + 60, "iat": NOW / 1000})
    }

    fn with(mut v: Value, k: &str, val: Value) -> Value {
        v[k] = val;
        v
    }

    fn without(mut v: Value, k: &str) -> Value {
        v.as_object_mut().expect("object").remove(k);
        v
    }

    fn verifier(rules: ClaimRules) -> Verifier {
        Verifier::new(vec![hs_key(None)], rules)
    }

    fn leeway5() -> ClaimRules {
        ClaimRules {
            leeway_ms: 5_000,
            ..Default::default()
        }
    }

    #[test]
    fn valid_token() {
        let v = verifier(leeway5()).verify(&hs(base()), NOW).expect("valid");
        assert_eq!(v.sub, "alice");
        assert_eq!(v.exp_ms, NOW + 60_000);
        assert_eq!(v.alg, Algorithm::HS256);
    }

    #[test]
    fn exp_edges_with_leeway() {
        let v = verifier(leeway5());
        let t = hs(with(base(), "exp", json!(NOW / 1000)));
        assert!(v.verify(&t, NOW + 4_999).is_ok());
        assert_eq!(v.verify(&t, NOW + 5_000), Err(Reason::Expired));
        assert_eq!(v.verify(&t, NOW + 60_000), Err(Reason::Expired));
    }

    #[test]
    fn nbf_and_iat_edges() {
        let v = verifier(leeway5());
        let t = hs(with(base(), "nbf", json!(NOW / 1000 + 5)));
        assert!(v.verify(&t, NOW).is_ok());
        assert_eq!(v.verify(&t, NOW - 1), Err(Reason::NotYetValid));
        let t = hs(with(base(), "iat", json!(NOW / 1000 + 5)));
        assert!(v.verify(&t, NOW).is_ok());
        assert_eq!(v.verify(&t, NOW - 1), Err(Reason::NotYetValid));
    }

    #[test]
    fn required_and_typed_claims() {
        let v = verifier(leeway5());
        assert_eq!(
            v.verify(&hs(without(base(), "exp")), NOW),
            Err(Reason::MissingClaim)
        );
        assert_eq!(
            v.verify(&hs(without(base(), "sub")), NOW),
            Err(Reason::MissingClaim)
        );
        assert_eq!(
            v.verify(&hs(with(base(), "sub", json!(""))), NOW),
            Err(Reason::MissingClaim)
        );
        // Type confusion: a string exp is not a date.
        let s = hs(with(base(), "exp", json!(format!("{}", NOW / 1000 + 60))));
        assert_eq!(v.verify(&s, NOW), Err(Reason::MalformedToken));
        assert_eq!(
            v.verify(&hs(with(base(), "nbf", json!("0"))), NOW),
            Err(Reason::MalformedToken)
        );
        assert_eq!(
            v.verify(&hs(with(base(), "sub", json!(1))), NOW),
            Err(Reason::MalformedToken)
        );
        // Fractional and huge dates are handled without overflow.
        assert!(v
            .verify(&hs(with(base(), "exp", json!(1e300))), NOW)
            .is_ok());
        assert!(v
            .verify(
                &hs(with(base(), "exp", json!((NOW / 1000 + 1) as f64 + 0.5))),
                NOW
            )
            .is_ok());
    }

    #[test]
    fn overlong_tokens_are_refused() {
        let v = verifier(ClaimRules {
            max_lifetime_ms: Some(3_600_000),
            ..leeway5()
        });
        assert!(v
            .verify(&hs(with(base(), "exp", json!(NOW / 1000 + 3600))), NOW)
            .is_ok());
        let long = with(base(), "exp", json!(NOW / 1000 + 3700));
        assert_eq!(v.verify(&hs(long.clone()), NOW), Err(Reason::Expired));
        assert_eq!(
            v.verify(&hs(without(long, "iat")), NOW),
            Err(Reason::Expired)
        );
    }

    #[test]
    fn issuer_and_audience() {
        let v = verifier(ClaimRules {
            issuer: Some("https://idp".into()),
            audience: vec!["api".into(), "ws".into()],
            ..leeway5()
        });
        let ok = with(
            with(base(), "iss", json!("https://idp")),
            "aud",
            json!(["x", "ws"]),
        );
        assert!(v.verify(&hs(ok.clone()), NOW).is_ok());
        assert!(v
            .verify(&hs(with(ok.clone(), "aud", json!("api"))), NOW)
            .is_ok());
        assert_eq!(
            v.verify(&hs(with(ok.clone(), "aud", json!("other"))), NOW),
            Err(Reason::BadAudience)
        );
        assert_eq!(
            v.verify(&hs(without(ok.clone(), "aud")), NOW),
            Err(Reason::MissingClaim)
        );
        assert_eq!(
            v.verify(&hs(with(ok.clone(), "iss", json!("https://evil"))), NOW),
            Err(Reason::BadIssuer)
        );
        assert_eq!(
            v.verify(&hs(without(ok.clone(), "iss")), NOW),
            Err(Reason::MissingClaim)
        );
        assert_eq!(
            v.verify(&hs(with(ok, "aud", json!(5))), NOW),
            Err(Reason::MalformedToken)
        );
    }

    #[test]
    fn ticket_audience_is_refused_outside_tickets() {
        let v = verifier(ClaimRules {
            forbidden_audience: Some("wsgate-ticket".into()),
            ..leeway5()
        });
        let t = hs(with(base(), "aud", json!("wsgate-ticket")));
        assert_eq!(v.verify(&t, NOW), Err(Reason::TicketRequired));
    }

    #[test]
    fn signature_and_algorithm() {
        let v = verifier(leeway5());
        let other = sign(
            &Header::new(Algorithm::HS256),
            &base(),
            b"another-secret-another-secret-xx",
        );
        assert_eq!(v.verify(&other, NOW), Err(Reason::BadSignature));
        // Same secret, algorithm not pinned for the key.
        let t = sign(&Header::new(Algorithm::HS512), &base(), SECRET);
        assert_eq!(v.verify(&t, NOW), Err(Reason::AlgorithmNotAllowed));
        // alg: none, with and without a signature.
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let p = URL_SAFE_NO_PAD.encode(base().to_string());
        assert_eq!(
            v.verify(&format!("{h}.{p}."), NOW),
            Err(Reason::AlgorithmNotAllowed)
        );
        let h2 = URL_SAFE_NO_PAD.encode(br#"{"alg":"NoNe"}"#);
        assert_eq!(
            v.verify(&format!("{h2}.{p}.abc"), NOW),
            Err(Reason::AlgorithmNotAllowed)
        );
        // Tampered payload.
        let good = hs(base());
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(with(base(), "sub", json!("root")).to_string());
        parts[1] = &evil;
        assert_eq!(v.verify(&parts.join("."), NOW), Err(Reason::BadSignature));
        // Signatures of the wrong length: truncated, extended, empty.
        let (msg, sig) = good.rsplit_once('.').expect("three parts");
        let raw = URL_SAFE_NO_PAD.decode(sig).expect("base64");
        for bad in [&raw[..31], &[raw.as_slice(), &[0u8]].concat()[..], &[][..]] {
            let t = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(bad));
            assert_eq!(
                v.verify(&t, NOW),
                Err(Reason::BadSignature),
                "{}",
                bad.len()
            );
        }
        // The same key tried after a kid-less wrong one: still accepted.
        let two = Verifier::new(
            vec![
                VerifyKey {
                    kid: None,
                    alg: Algorithm::HS256,
                    key: DecodingKey::from_secret(b"another-secret-another-secret-xx"),
                },
                hs_key(None),
            ],
            leeway5(),
        );
        assert!(two.verify(&good, NOW).is_ok());
    }

    #[test]
    fn malformed_inputs() {
        let v = verifier(leeway5());
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c.d.e",
            "!!!.???.###",
            "eyJhbGciOiJIUzI1NiJ9.e30",
            "bm90IGpzb24.e30.sig",
        ] {
            assert_eq!(v.verify(t, NOW), Err(Reason::MalformedToken), "{t}");
        }
        // Valid header, signature not base64.
        let good = hs(base());
        let (msg, _) = good.rsplit_once('.').expect("three parts");
        assert_eq!(
            v.verify(&format!("{msg}.***"), NOW),
            Err(Reason::MalformedToken)
        );
        // Invalid UTF-8 inside base64 header.
        let h = URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x22]);
        assert_eq!(
            v.verify(&format!("{h}.e30.c2ln"), NOW),
            Err(Reason::MalformedToken)
        );
    }

    #[test]
    fn crit_is_always_rejected() {
        let v = verifier(leeway5());
        let mk = |crit: &str| {
            let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"HS256","crit":{crit}}}"#));
            let p = URL_SAFE_NO_PAD.encode(base().to_string());
            let msg = format!("{h}.{p}");
            let sig = jsonwebtoken::crypto::sign(
                msg.as_bytes(),
                &EncodingKey::from_secret(SECRET),
                Algorithm::HS256,
            )
            .expect("sign");
            format!("{msg}.{sig}")
        };
        assert_eq!(
            v.verify(&mk(r#"["exp"]"#), NOW),
            Err(Reason::MalformedToken)
        );
        assert_eq!(v.verify(&mk(r#""x""#), NOW), Err(Reason::MalformedToken));
        // RFC 7515 4.1.11: "MUST NOT be used" as an empty list.
        assert_eq!(v.verify(&mk("[]"), NOW), Err(Reason::MalformedToken));
        assert_eq!(v.verify(&mk("null"), NOW), Err(Reason::MalformedToken));
        assert!(v.verify(&hs(base()), NOW).is_ok());
    }

    #[test]
    fn issuer_peek() {
        assert_eq!(unverified_issuer(&hs(base())), Ok(None));
        let t = hs(with(base(), "iss", json!("https://a")));
        assert_eq!(unverified_issuer(&t), Ok(Some("https://a".into())));
        let t = hs(with(base(), "iss", json!(3)));
        assert_eq!(unverified_issuer(&t), Err(Reason::MalformedToken));
        assert_eq!(unverified_issuer("a.b"), Err(Reason::MalformedToken));
        assert_eq!(unverified_issuer("a.!!.c"), Err(Reason::MalformedToken));
    }

    #[test]
    fn kid_selection() {
        let other_secret = b"ffffffffffffffffffffffffffffffff";
        let v = Verifier::new(
            vec![
                hs_key(Some("a")),
                VerifyKey {
                    kid: Some("b".into()),
                    alg: Algorithm::HS256,
                    key: DecodingKey::from_secret(other_secret),
                },
            ],
            leeway5(),
        );
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("b".into());
        assert!(v.verify(&sign(&h, &base(), other_secret), NOW).is_ok());
        // kid b, signed with a's secret: kid pins the key.
        assert_eq!(
            v.verify(&sign(&h, &base(), SECRET), NOW),
            Err(Reason::BadSignature)
        );
        h.kid = Some("zzz".into());
        assert_eq!(
            v.verify(&sign(&h, &base(), SECRET), NOW),
            Err(Reason::UnknownKey)
        );
        // No kid: every key is tried.
        assert!(v.verify(&hs(base()), NOW).is_ok());
    }
}

#[cfg(test)]
mod algorithm_tests {
    //! Every supported algorithm with real keys (the test PEMs of the gateway crate).
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    fn pem(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../wsgate/tests/data")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn pair_of(alg: Algorithm) -> (EncodingKey, DecodingKey) {
        use Algorithm::*;
        match alg {
            HS256 | HS384 | HS512 => {
                let s = [7u8; 64];
                (EncodingKey::from_secret(&s), DecodingKey::from_secret(&s))
            }
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => (
                EncodingKey::from_rsa_pem(&pem("rsa.pem")).expect("rsa"),
                DecodingKey::from_rsa_pem(&pem("rsa.pub.pem")).expect("rsa pub"),
            ),
            ES256 => (
                EncodingKey::from_ec_pem(&pem("ec256.pem")).expect("ec256"),
                DecodingKey::from_ec_pem(&pem("ec256.pub.pem")).expect("ec256 pub"),
            ),
            ES384 => (
                EncodingKey::from_ec_pem(&pem("ec384.pem")).expect("ec384"),
                DecodingKey::from_ec_pem(&pem("ec384.pub.pem")).expect("ec384 pub"),
            ),
            EdDSA => (
                EncodingKey::from_ed_pem(&pem("ed25519.pem")).expect("ed"),
                DecodingKey::from_ed_pem(&pem("ed25519.pub.pem")).expect("ed pub"),
            ),
            _ => unreachable!("not a supported algorithm"),
        }
    }

    const ALL: [Algorithm; 12] = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    fn claims() -> serde_json::Value {
        json!({"sub": "alice", "exp": NOW / 1000 + 60})
    }

    /// jsonwebtoken panics at run time without a crypto backend; this proves
    /// aws-lc-rs is compiled in and used for signing and verifying.
    #[test]
    fn crypto_backend_is_compiled_in() {
        let (ek, dk) = pair_of(Algorithm::ES256);
        let t = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &ek).expect("sign");
        let v = Verifier::new(
            vec![VerifyKey {
                kid: None,
                alg: Algorithm::ES256,
                key: dk,
            }],
            ClaimRules::default(),
        );
        assert!(v.verify(&t, NOW).is_ok());
    }

    #[test]
    fn every_algorithm_verifies_and_is_pinned() {
        for alg in ALL {
            let (ek, dk) = pair_of(alg);
            let v = Verifier::new(
                vec![VerifyKey {
                    kid: None,
                    alg,
                    key: dk,
                }],
                ClaimRules::default(),
            );
            let t = jsonwebtoken::encode(&Header::new(alg), &claims(), &ek).expect("sign");
            assert_eq!(v.verify(&t, NOW).map(|x| x.alg), Ok(alg), "{alg:?}");
            // Flip a bit of the signature.
            let (msg, sig) = t.rsplit_once('.').expect("3 parts");
            let mut s = URL_SAFE_NO_PAD.decode(sig).expect("b64");
            s[0] ^= 1;
            let bad = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(s));
            assert_eq!(v.verify(&bad, NOW), Err(Reason::BadSignature), "{alg:?}");
            // The same key under any other algorithm is refused before crypto.
            for other in ALL.iter().filter(|o| **o != alg) {
                let (ek2, _) = pair_of(*other);
                let t2 = jsonwebtoken::encode(&Header::new(*other), &claims(), &ek2).expect("sign");
                assert_eq!(
                    v.verify(&t2, NOW),
                    Err(Reason::AlgorithmNotAllowed),
                    "{alg:?} vs {other:?}"
                );
            }
        }
    }

    fn one_key(alg: Algorithm, key: DecodingKey) -> Verifier {
        Verifier::new(
            vec![VerifyKey {
                kid: None,
                alg,
                key,
            }],
            ClaimRules::default(),
        )
    }

    /// The DER inside a one-block PEM test file.
    fn der(name: &str) -> Vec<u8> {
        let body: String = std::str::from_utf8(&pem(name))
            .expect("pem")
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("b64")
    }

    /// JWKS RSA keys arrive as n/e components, prepared by another path than
    /// PEM keys; both accept the same tokens and refuse the same forgeries.
    #[test]
    fn rsa_components_verify_like_pem() {
        use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RsaPublicKeyComponents};
        let pair = RsaKeyPair::from_pkcs8(&der("rsa.pem")).expect("pkcs8");
        let c: RsaPublicKeyComponents<Vec<u8>> = pair.public_key().into();
        for alg in [Algorithm::RS256, Algorithm::PS512] {
            let v = one_key(alg, DecodingKey::from_rsa_raw_components(&c.n, &c.e));
            assert!(matches!(v.prepared[0], Prepared::Public(_)));
            let (ek, _) = pair_of(alg);
            let t = jsonwebtoken::encode(&Header::new(alg), &claims(), &ek).expect("sign");
            assert_eq!(v.verify(&t, NOW).map(|x| x.alg), Ok(alg));
            let (msg, sig64) = t.rsplit_once('.').expect("3 parts");
            let mut sig = URL_SAFE_NO_PAD.decode(sig64).expect("b64");
            sig[0] ^= 1;
            let forged = format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig));
            assert_eq!(v.verify(&forged, NOW), Err(Reason::BadSignature));
        }
    }

    /// RSA keys under 2048 bits are refused whichever way they are prepared
    /// (the token in tests/data is validly signed by the 1024-bit key).
    #[test]
    fn short_rsa_keys_are_refused() {
        let token = String::from_utf8(pem("rsa1024.jwt")).expect("utf8");
        let token = token.trim();
        let dk = DecodingKey::from_rsa_pem(&pem("rsa1024.pub.pem")).expect("pem");
        // Proof that the signature itself is good.
        let (msg, sig64) = token.rsplit_once('.').expect("3 parts");
        let spki = der("rsa1024.pub.pem");
        let legacy = aws_lc_rs::signature::UnparsedPublicKey::new(
            &sig::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
            &spki,
        );
        let sig = URL_SAFE_NO_PAD.decode(sig64).expect("b64");
        assert!(legacy.verify(msg.as_bytes(), &sig).is_ok());
        // Which is why such a key is reported unusable, to refuse it at load.
        assert_eq!(rsa_bits(&dk), Some(1024));
        let key = |alg, key| VerifyKey {
            kid: None,
            alg,
            key,
        };
        assert!(!key(Algorithm::RS256, dk.clone()).is_usable());
        let (_, good) = pair_of(Algorithm::PS256);
        assert_eq!(rsa_bits(&good), Some(2048));
        assert!(key(Algorithm::PS256, good).is_usable());
        let v = one_key(Algorithm::RS256, dk);
        assert_eq!(v.verify(token, NOW), Err(Reason::BadSignature));
    }

    /// The classic RS256 -> HS256 confusion: HMAC keyed with the public key PEM.
    #[test]
    fn public_key_as_hmac_secret_is_refused() {
        let (_, dk) = pair_of(Algorithm::RS256);
        let v = Verifier::new(
            vec![VerifyKey {
                kid: None,
                alg: Algorithm::RS256,
                key: dk,
            }],
            ClaimRules::default(),
        );
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(&pem("rsa.pub.pem")),
        )
        .expect("sign");
        assert_eq!(v.verify(&forged, NOW), Err(Reason::AlgorithmNotAllowed));
    }
}
