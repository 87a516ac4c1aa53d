//! JWK sets from identity providers, without I/O: which keys of a set are
//! usable and under which pinned algorithm, how long a fetched set is
//! cached, and when an unknown `kid` may trigger a refetch.
//!
//! The algorithm of a key comes from configuration, else from the JWK's own
//! `alg`, else from its curve (EC, OKP): never from a token. RSA keys with
//! no `alg` anywhere are skipped (RS256 vs PS256 cannot be told apart), and
//! so are RSA keys under 2048 bits (RFC 7518 §3.3) or over 8192 (what the
//! verifier accepts): every signature under them would fail. A `kid` names
//! one key: different keys sharing a `kid` and an algorithm are skipped,
//! all of them (see [`parse_set`]).

use crate::verify::{alg_name, rsa_bits, VerifyKey, RSA_BITS};
use crate::UnixMillis;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;

/// Most keys taken from (and skipped entries reported for) one set; a set
/// is a handful in practice.
pub const MAX_KEYS: usize = 64;

/// The usable keys of a JWK set, and a line per key skipped (no key
/// material in it: kid, kty and why).
#[derive(Debug, Default)]
pub struct ParsedSet {
    pub keys: Vec<VerifyKey>,
    pub skipped: Vec<String>,
}

/// Parses a JWK set document. `pinned`: the configured algorithm, which
/// every key must fit. `only_kid`: keep only that key. Keys for encryption,
/// symmetric keys, unsupported types and unusable sizes are skipped, not
/// fatal (IdPs mix encryption keys into their sets); an unparseable document
/// is an error.
///
/// Different keys with the same `kid` and algorithm are all skipped: a token
/// naming that `kid` could mean either, and taking both would let either
/// key's tokens pass where one was meant (with `only_kid`, a second key).
/// The rest of the set is used, so an IdP that publishes such a pair (a
/// botched rotation) breaks only the tokens of that `kid`, which are refused
/// `unknown_key`, and each skip is reported. RFC 7517 §4.5 allows a shared
/// `kid` across key types ("equivalent alternatives"): those are kept, each
/// only verifies its own algorithm. The same key listed twice is one key.
pub fn parse_set(
    doc: &[u8],
    pinned: Option<Algorithm>,
    only_kid: Option<&str>,
) -> Result<ParsedSet, String> {
    let v: Value = serde_json::from_slice(doc).map_err(|e| format!("not JSON: {e}"))?;
    let Some(items) = v.get("keys").and_then(Value::as_array) else {
        return Err("not a JWK set (no \"keys\" array)".into());
    };
    let mut out = ParsedSet::default();
    // Usable keys with their label and parameters, for the kid check.
    let mut found: Vec<(String, AlgorithmParameters, VerifyKey)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let kid = item.get("kid").and_then(Value::as_str);
        let label = format!("key {i} (kid {:?})", kid.unwrap_or("-"));
        if only_kid.is_some() && kid != only_kid {
            continue;
        }
        if found.len() >= MAX_KEYS || out.skipped.len() >= MAX_KEYS {
            out.skipped.push(format!(
                "{} more entries ignored: more than {MAX_KEYS} in the set",
                items.len() - i
            ));
            break;
        }
        let jwk: Jwk = match serde_json::from_value(item.clone()) {
            Ok(j) => j,
            Err(e) => {
                out.skipped.push(format!("{label}: not a usable JWK: {e}"));
                continue;
            }
        };
        match usable(&jwk, pinned) {
            Ok(k) => found.push((label, jwk.algorithm, k)),
            Err(why) => out.skipped.push(format!("{label}: {why}")),
        }
    }
    for (n, (label, params, key)) in found.iter().enumerate() {
        let same_name = |(_, _, k): &&(String, AlgorithmParameters, VerifyKey)| {
            key.kid.is_some() && k.kid == key.kid && k.alg == key.alg
        };
        let earlier = found[..n].iter().find(same_name);
        let rivals = found
            .iter()
            .filter(same_name)
            .filter(|(_, p, _)| p != params);
        let kid = key.kid.as_deref().unwrap_or_default();
        if rivals.clone().next().is_some() {
            out.skipped.push(format!(
                "{label}: kid {kid:?} also names {} other {} key(s) of this set: which one a \
                 token means is ambiguous, so none is used (RFC 7517 4.5)",
                rivals.count(),
                alg_name(key.alg)
            ));
        } else if let Some((first, _, _)) = earlier {
            out.skipped
                .push(format!("{label}: the same key as {first}"));
        } else {
            out.keys.push(key.clone());
        }
    }
    Ok(out)
}

/// The algorithms a key's type and curve allow.
fn fits(params: &AlgorithmParameters, alg: Algorithm) -> bool {
    match params {
        AlgorithmParameters::RSA(_) => alg.family() == AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(ec) => matches!(
            (&ec.curve, alg),
            (EllipticCurve::P256, Algorithm::ES256) | (EllipticCurve::P384, Algorithm::ES384)
        ),
        AlgorithmParameters::OctetKeyPair(okp) => {
            okp.curve == EllipticCurve::Ed25519 && alg == Algorithm::EdDSA
        }
        _ => false,
    }
}

/// One JWK as a verification key with its pinned algorithm.
fn usable(jwk: &Jwk, pinned: Option<Algorithm>) -> Result<VerifyKey, String> {
    let c = &jwk.common;
    match &c.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("not a signature key (use)".into()),
    }
    if let Some(ops) = &c.key_operations {
        if !ops.iter().any(|o| matches!(o, KeyOperations::Verify)) {
            return Err("key_ops does not include verify".into());
        }
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        // A shared secret published in a key set is never what an IdP
        // means; HS keys are configured with secret_env / secret_file.
        return Err("symmetric (oct) keys are not accepted from a JWK set".into());
    }
    let own = match c.key_algorithm {
        None => None,
        Some(a) => Some(Algorithm::try_from(a).map_err(|_| format!("unsupported alg {a}"))?),
    };
    let implied = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        AlgorithmParameters::RSA(_) => None,
        _ => return Err("unsupported key type".into()),
    };
    let alg = match (pinned, own) {
        (Some(p), Some(o)) if p != o => {
            return Err(format!(
                "alg {} differs from the configured {}",
                alg_name(o),
                alg_name(p)
            ))
        }
        (Some(p), _) => p,
        (None, Some(o)) => o,
        (None, None) => implied.ok_or(
            "RSA key without alg; set alg in the [[auth.keys]] entry (e.g. alg = \"RS256\")",
        )?,
    };
    if !fits(&jwk.algorithm, alg) {
        return Err(format!("key type does not fit alg {}", alg_name(alg)));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad key parameters: {e}"))?;
    match rsa_bits(&key) {
        Some(bits) if !RSA_BITS.contains(&bits) => {
            return Err(format!(
                "RSA key of {bits} bits: {} to {} are required (RFC 7518 3.3)",
                RSA_BITS.start(),
                RSA_BITS.end()
            ))
        }
        _ => {}
    }
    let key = VerifyKey {
        kid: c.key_id.clone(),
        alg,
        key,
    };
    // What the verifier itself would refuse (a point off its curve, ...).
    if !key.is_usable() {
        return Err(format!("bad key parameters for alg {}", alg_name(alg)));
    }
    Ok(key)
}

/// Bounds on how long a fetched set is used before it is fetched again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBounds {
    pub min_ms: i64,
    pub max_ms: i64,
}

impl CacheBounds {
    /// The cache lifetime for a response's `Cache-Control`: its `max-age`
    /// bounded by `[min, max]`; `no-cache`/`no-store` count as 0 (so the
    /// minimum); no usable max-age means the maximum.
    pub fn ttl_ms(&self, cache_control: Option<&str>) -> i64 {
        let mut age: Option<i64> = None;
        for d in cache_control.unwrap_or("").split(',') {
            let d = d.trim();
            let (name, val) = d.split_once('=').unwrap_or((d, ""));
            let name = name.trim().to_ascii_lowercase();
            if name == "no-cache" || name == "no-store" {
                age = Some(0);
                break;
            }
            if name == "max-age" {
                if let Ok(secs) = val.trim().trim_matches('"').parse::<u64>() {
                    age = Some(i64::try_from(secs.min(1 << 40)).unwrap_or(i64::MAX) * 1000);
                }
            }
        }
        age.unwrap_or(self.max_ms)
            .clamp(self.min_ms, self.max_ms.max(self.min_ms))
    }

    /// When to refresh a set fetched at `fetched` with `ttl`: a tenth before
    /// it lapses, so the cache is renewed while the IdP is up.
    pub fn refresh_at(fetched: UnixMillis, ttl_ms: i64) -> UnixMillis {
        fetched.saturating_add(ttl_ms - ttl_ms / 10)
    }

    /// Delay before retrying after `failures` consecutive failed fetches:
    /// 1 s doubling, at most the minimum cache time (and at most 5 min).
    pub fn retry_ms(&self, failures: u32) -> i64 {
        let cap = self.min_ms.clamp(1000, 300_000);
        1000i64
            .saturating_mul(1i64 << failures.saturating_sub(1).min(20))
            .min(cap)
    }
}

/// At most one fetch per `interval_ms`, whatever asks for it: forged `kid`s
/// cannot turn into a request storm against the IdP.
#[derive(Debug, Clone)]
pub struct RefetchGate {
    interval_ms: i64,
    last: Option<UnixMillis>,
}

impl RefetchGate {
    pub fn new(interval_ms: i64) -> Self {
        RefetchGate {
            interval_ms,
            last: None,
        }
    }

    /// Records a fetch at `now` (scheduled fetches count too).
    pub fn record(&mut self, now: UnixMillis) {
        self.last = Some(now);
    }

    /// Whether an on-demand fetch may start at `now`; if so it is recorded.
    pub fn try_acquire(&mut self, now: UnixMillis) -> bool {
        match self.last {
            Some(t) if now < t.saturating_add(self.interval_ms) && now >= t => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const B: CacheBounds = CacheBounds {
        min_ms: 60_000,
        max_ms: 3_600_000,
    };

    #[test]
    fn cache_time_is_bounded() {
        assert_eq!(B.ttl_ms(Some("public, max-age=600")), 600_000);
        assert_eq!(B.ttl_ms(Some("max-age=5")), 60_000);
        assert_eq!(B.ttl_ms(Some("max-age=86400, must-revalidate")), 3_600_000);
        assert_eq!(B.ttl_ms(Some("MAX-AGE=\"120\"")), 120_000);
        assert_eq!(B.ttl_ms(Some("no-store")), 60_000);
        assert_eq!(B.ttl_ms(Some("max-age=600, no-cache")), 60_000);
        assert_eq!(B.ttl_ms(None), 3_600_000);
        assert_eq!(B.ttl_ms(Some("max-age=-1")), 3_600_000);
        assert_eq!(B.ttl_ms(Some("max-age=99999999999999999999")), 3_600_000);
        assert_eq!(B.ttl_ms(Some("garbage")), 3_600_000);
        // A max below the min never inverts the clamp.
        let odd = CacheBounds {
            min_ms: 10,
            max_ms: 5,
        };
        assert_eq!(odd.ttl_ms(None), 10);
        assert_eq!(CacheBounds::refresh_at(1000, 600_000), 1000 + 540_000);
    }

    #[test]
    fn retry_backs_off_within_bounds() {
        assert_eq!(B.retry_ms(1), 1000);
        assert_eq!(B.retry_ms(2), 2000);
        assert_eq!(B.retry_ms(5), 16_000);
        assert_eq!(B.retry_ms(30), 60_000);
        assert_eq!(B.retry_ms(u32::MAX), 60_000);
    }

    #[test]
    fn refetch_is_rate_limited() {
        let mut g = RefetchGate::new(30_000);
        assert!(g.try_acquire(1_000));
        assert!(!g.try_acquire(1_001));
        assert!(!g.try_acquire(30_999));
        assert!(g.try_acquire(31_000));
        // A scheduled fetch also counts.
        g.record(100_000);
        assert!(!g.try_acquire(110_000));
        assert!(g.try_acquire(130_000));
        // A clock that went backwards does not lock refetches out.
        assert!(g.try_acquire(5_000));
    }

    fn pem(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../wsgate/tests/data")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The public JWK of a test key, as jsonwebtoken writes it.
    fn jwk(alg: Algorithm, kid: &str) -> Value {
        use jsonwebtoken::EncodingKey;
        let ek = match alg.family() {
            AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&pem("rsa.pem")),
            AlgorithmFamily::Ec if alg == Algorithm::ES384 => {
                EncodingKey::from_ec_pem(&pem("ec384.pem"))
            }
            AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&pem("ec256.pem")),
            _ => EncodingKey::from_ed_pem(&pem("ed25519.pem")),
        }
        .expect("key");
        let mut v =
            serde_json::to_value(Jwk::from_encoding_key(&ek, alg).expect("jwk")).expect("json");
        v["kid"] = json!(kid);
        v
    }

    fn set(keys: Vec<Value>) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    #[test]
    fn algorithms_come_from_config_or_the_key() {
        let doc = set(vec![
            jwk(Algorithm::RS256, "r"),
            jwk(Algorithm::ES256, "e"),
            jwk(Algorithm::EdDSA, "d"),
        ]);
        let p = parse_set(&doc, None, None).expect("set");
        let got: Vec<_> = p.keys.iter().map(|k| (k.kid.clone(), k.alg)).collect();
        assert_eq!(
            got,
            vec![
                (Some("r".into()), Algorithm::RS256),
                (Some("e".into()), Algorithm::ES256),
                (Some("d".into()), Algorithm::EdDSA)
            ]
        );
        // Pinned: keys that do not fit are skipped, with a reason.
        let p = parse_set(&doc, Some(Algorithm::RS256), None).expect("set");
        assert_eq!(p.keys.len(), 1);
        assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
        // RSA without alg: only when configured.
        let mut bare = jwk(Algorithm::RS256, "r");
        bare.as_object_mut().expect("obj").remove("alg");
        let doc = set(vec![bare]);
        assert!(parse_set(&doc, None, None).expect("set").keys.is_empty());
        let p = parse_set(&doc, Some(Algorithm::PS256), None).expect("set");
        assert_eq!(p.keys[0].alg, Algorithm::PS256);
        // EC curve decides, whatever the JWK claims.
        let mut lying = jwk(Algorithm::ES256, "e");
        lying["alg"] = json!("ES384");
        assert!(parse_set(&set(vec![lying]), None, None)
            .expect("set")
            .keys
            .is_empty());
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let mut enc = jwk(Algorithm::RS256, "enc");
        enc["use"] = json!("enc");
        enc["alg"] = json!("RSA-OAEP");
        let oct = json!({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256", "kid": "h"});
        let weird = json!({"kty": "XYZ", "kid": "w"});
        let mut ops = jwk(Algorithm::ES256, "o");
        ops["key_ops"] = json!(["sign"]);
        let doc = set(vec![enc, oct, weird, ops, jwk(Algorithm::ES256, "ok")]);
        let p = parse_set(&doc, None, None).expect("set");
        assert_eq!(p.keys.len(), 1);
        assert_eq!(p.keys[0].kid.as_deref(), Some("ok"));
        assert_eq!(p.skipped.len(), 4, "{:?}", p.skipped);
        assert!(p.skipped.iter().all(|s| !s.contains("c2VjcmV0")));
        assert!(parse_set(b"{}", None, None).is_err());
        assert!(parse_set(b"nope", None, None).is_err());
        let only = parse_set(&doc, None, Some("ok")).expect("set");
        assert_eq!((only.keys.len(), only.skipped.len()), (1, 0));
    }

    /// `n` of tests/data/rsa1024.pub.pem, base64url.
    const N_1024: &str = "1Ye2-Kq0yJRlpQBXig2oLwJkbbOJIUV1ybYxHTwRuXr_RNkIfUGHfNzTMS7Ysn-y82cnD3a8Iw0e__v0_sEe8VpXM_fxoKgsyr4-wuGCxL5K7tFYYheIPlLAWsC2114t60XvdgoY_i5xWIpm8BY1GpNd6bUbV-cZ4UizDcdBuTk";

    /// Issue 28: a 1024-bit RSA key was loaded without a word, and every
    /// token under it then failed `bad_signature`.
    #[test]
    fn rsa_keys_outside_2048_to_8192_bits_are_skipped() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let rsa = |kid: &str, n: String| json!({"kty": "RSA", "alg": "RS256", "kid": kid, "n": n, "e": "AQAB"});
        // Built moduli: the top bit set, so exactly `bits` long.
        let modulus = |bits: usize| {
            let mut b = vec![0xabu8; bits / 8];
            b[0] |= 0x80;
            URL_SAFE_NO_PAD.encode(b)
        };
        let doc = set(vec![
            rsa("weak", N_1024.into()),
            rsa("2040", modulus(2040)),
            rsa("huge", modulus(8200)),
            // A leading zero byte is not a bit.
            rsa(
                "padded",
                URL_SAFE_NO_PAD.encode([&[0u8][..], &[0x80; 128]].concat()),
            ),
            jwk(Algorithm::RS256, "good"),
        ]);
        let p = parse_set(&doc, None, None).expect("set");
        let kids: Vec<_> = p.keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("good")], "{:?}", p.skipped);
        for (kid, bits) in [
            ("weak", 1024),
            ("2040", 2040),
            ("huge", 8200),
            ("padded", 1024),
        ] {
            assert!(
                p.skipped.iter().any(|s| s.contains(&format!(
                    "(kid {kid:?}): RSA key of {bits} bits: 2048 to 8192 are required"
                ))),
                "{kid}: {:?}",
                p.skipped
            );
        }
        // Pinned by configuration (Entra's keys carry no alg): the same.
        let mut bare = rsa("weak", N_1024.into());
        bare.as_object_mut().expect("obj").remove("alg");
        let p = parse_set(&set(vec![bare]), Some(Algorithm::PS256), None).expect("set");
        assert!(
            p.keys.is_empty() && p.skipped[0].contains("1024 bits"),
            "{:?}",
            p.skipped
        );
    }

    /// Issue 28: two keys with one kid made tokens of both valid.
    #[test]
    fn keys_sharing_a_kid_and_alg_are_all_skipped() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let mut other_rsa = jwk(Algorithm::RS256, "k");
        // Another modulus (only parsing is needed here).
        let mut n = URL_SAFE_NO_PAD
            .decode(other_rsa["n"].as_str().expect("n"))
            .expect("b64");
        n[10] ^= 1;
        other_rsa["n"] = json!(URL_SAFE_NO_PAD.encode(n));
        let doc = set(vec![
            jwk(Algorithm::RS256, "k"),
            other_rsa,
            // The same kid for an EC key: RFC 7517 4.5's "different kty".
            jwk(Algorithm::ES256, "k"),
            // The same key twice is one key.
            jwk(Algorithm::EdDSA, "d"),
            jwk(Algorithm::EdDSA, "d"),
            jwk(Algorithm::ES256, "e"),
        ]);
        let p = parse_set(&doc, None, None).expect("set");
        let got: Vec<_> = p
            .keys
            .iter()
            .map(|k| (k.kid.clone().unwrap_or_default(), k.alg))
            .collect();
        assert_eq!(
            got,
            [
                ("k".to_string(), Algorithm::ES256),
                ("d".to_string(), Algorithm::EdDSA),
                ("e".to_string(), Algorithm::ES256)
            ],
            "{:?}",
            p.skipped
        );
        assert_eq!(p.skipped.len(), 3, "{:?}", p.skipped);
        for i in [0, 1] {
            assert!(
                p.skipped[i].starts_with(&format!(
                    "key {i} (kid \"k\"): kid \"k\" also names 1 other RS256 key(s)"
                )),
                "{:?}",
                p.skipped
            );
        }
        assert_eq!(
            p.skipped[2],
            "key 4 (kid \"d\"): the same key as key 3 (kid \"d\")"
        );
        // Pinned to one kid, the pair is still refused: not two keys for one.
        let p = parse_set(&doc, Some(Algorithm::RS256), Some("k")).expect("set");
        assert!(p.keys.is_empty(), "{:?}", p.keys);
        // Keys without a kid are tried in turn, as before.
        let mut a = jwk(Algorithm::ES256, "x");
        let mut b = jwk(Algorithm::RS256, "x");
        a.as_object_mut().expect("obj").remove("kid");
        b.as_object_mut().expect("obj").remove("kid");
        assert_eq!(
            parse_set(&set(vec![a, b]), None, None)
                .expect("set")
                .keys
                .len(),
            2
        );
    }

    #[test]
    fn huge_sets_are_bounded() {
        let many: Vec<Value> = (0..200).map(|i| json!({"kty": "XYZ", "kid": i})).collect();
        let p = parse_set(&set(many), None, None).expect("set");
        assert_eq!(p.skipped.len(), MAX_KEYS + 1);
        assert!(p.skipped[MAX_KEYS].starts_with("136 more entries ignored"));
    }

    #[test]
    fn parsed_keys_verify_tokens() {
        use crate::verify::{ClaimRules, Verifier};
        use jsonwebtoken::{EncodingKey, Header};
        let p = parse_set(&set(vec![jwk(Algorithm::EdDSA, "d")]), None, None).expect("set");
        let v = Verifier::new(p.keys, ClaimRules::default());
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("d".into());
        let t = jsonwebtoken::encode(
            &h,
            &json!({"sub": "a", "exp": 2_000_000_000}),
            &EncodingKey::from_ed_pem(&pem("ed25519.pem")).expect("ed"),
        )
        .expect("sign");
        assert!(v.verify(&t, 1_800_000_000_000).is_ok());
    }
}
