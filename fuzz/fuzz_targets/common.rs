//! Shared by the verifier targets: the test keys of the gateway crate.
use jsonwebtoken::{Algorithm, DecodingKey};
use wsgate_core::verify::{ClaimRules, Verifier, VerifyKey};

pub const SECRET: &[u8] = b"fuzz-secret-0123456789abcdef-0123456789";
/// 2027-01-15: a fixed clock keeps runs reproducible.
pub const NOW_MS: i64 = 1_800_000_000_000;

pub fn verifier() -> Verifier {
    let key = |kid: &str, alg, key| VerifyKey {
        kid: Some(kid.to_string()),
        alg,
        key,
    };
    Verifier::new(
        vec![
            VerifyKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(SECRET),
            },
            key(
                "es",
                Algorithm::ES256,
                DecodingKey::from_ec_pem(include_bytes!(
                    "../../crates/wsgate/tests/data/ec256.pub.pem"
                ))
                .expect("ec key"),
            ),
            key(
                "rs",
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(include_bytes!(
                    "../../crates/wsgate/tests/data/rsa.pub.pem"
                ))
                .expect("rsa key"),
            ),
            key(
                "ed",
                Algorithm::EdDSA,
                DecodingKey::from_ed_pem(include_bytes!(
                    "../../crates/wsgate/tests/data/ed25519.pub.pem"
                ))
                .expect("ed key"),
            ),
        ],
        ClaimRules {
            issuer: Some("https://idp.test".into()),
            audience: vec!["api".into()],
            leeway_ms: 5_000,
            max_lifetime_ms: Some(7 * 86_400_000),
            forbidden_audience: Some("wsgate-ticket".into()),
        },
    )
}
