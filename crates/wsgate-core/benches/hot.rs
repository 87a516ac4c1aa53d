//! The gateway's hot pure functions, per call: credential extraction from
//! a request head, token verification per algorithm (signature + claims),
//! and the reason mapping used on every refusal.
//!
//!   cargo bench -p wsgate-core --bench hot
//!
//! Test keys come from crates/wsgate/tests/data (never used in production).

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use std::hint::black_box;
use std::path::Path;
use wsgate_core::credential::{self, ExtractPolicy, Transport};
use wsgate_core::verify::{ClaimRules, Verifier, VerifyKey};
use wsgate_core::Reason;

fn pem(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../wsgate/tests/data")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const NOW_S: i64 = 1_800_000_000;

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let claims = serde_json::json!({
        "sub": "bench-user", "iat": NOW_S - 10, "exp": NOW_S + 3600,
        "jti": "j-0123456789", "sid": "s-1", "roles": ["user"]
    });
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("sign")
}

fn verifier(alg: Algorithm, key: DecodingKey) -> Verifier {
    Verifier::new(
        vec![VerifyKey {
            kid: None,
            alg,
            key,
        }],
        ClaimRules {
            issuer: None,
            audience: vec![],
            leeway_ms: 5_000,
            max_lifetime_ms: None,
            forbidden_audience: None,
        },
    )
}

fn bench_verify(c: &mut Criterion) {
    let secret = b"bench-secret-0123456789abcdef-0123456789";
    let cases: Vec<(&str, Algorithm, EncodingKey, DecodingKey)> = vec![
        (
            "HS256",
            Algorithm::HS256,
            EncodingKey::from_secret(secret),
            DecodingKey::from_secret(secret),
        ),
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&pem("rsa.pem")).expect("rsa"),
            DecodingKey::from_rsa_pem(&pem("rsa.pub.pem")).expect("rsa pub"),
        ),
        (
            "PS256",
            Algorithm::PS256,
            EncodingKey::from_rsa_pem(&pem("rsa.pem")).expect("rsa"),
            DecodingKey::from_rsa_pem(&pem("rsa.pub.pem")).expect("rsa pub"),
        ),
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&pem("ec256.pem")).expect("ec256"),
            DecodingKey::from_ec_pem(&pem("ec256.pub.pem")).expect("ec256 pub"),
        ),
        (
            "ES384",
            Algorithm::ES384,
            EncodingKey::from_ec_pem(&pem("ec384.pem")).expect("ec384"),
            DecodingKey::from_ec_pem(&pem("ec384.pub.pem")).expect("ec384 pub"),
        ),
        (
            "EdDSA",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&pem("ed25519.pem")).expect("ed"),
            DecodingKey::from_ed_pem(&pem("ed25519.pub.pem")).expect("ed pub"),
        ),
    ];
    let now_ms = NOW_S * 1000;
    let mut g = c.benchmark_group("verify");
    for (name, alg, enc, dec) in cases {
        let t = token(alg, &enc);
        let v = verifier(alg, dec);
        assert!(v.verify(&t, now_ms).is_ok(), "{name} verifies");
        g.bench_function(name, |b| b.iter(|| v.verify(black_box(&t), now_ms)));
        // A forged signature: the cost of a rejection. One character inside
        // the signature changes (the last one may carry padding bits, where
        // a change is a base64 error rather than a forgery).
        let at = t.rfind('.').expect("three parts") + 8;
        let forged = if &t[at..=at] == "A" { "B" } else { "A" };
        let bad = format!("{}{forged}{}", &t[..at], &t[at + 1..]);
        assert_eq!(v.verify(&bad, now_ms).err(), Some(Reason::BadSignature));
        g.bench_function(format!("{name}/bad_signature"), |b| {
            b.iter(|| v.verify(black_box(&bad), now_ms))
        });
    }
    // The P-256 primitive alone (aws-lc, the key parsed once, a message of
    // a token's length): what an ES256 verification cannot go below.
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .expect("p256 key");
    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
    )
    .expect("p256 pair");
    let msg = vec![b'e'; 300];
    let sig = pair.sign(&rng, &msg).expect("p256 signature");
    let public = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref(),
    )
    .expect("p256 public");
    assert!(public.verify_sig(&msg, sig.as_ref()).is_ok());
    g.bench_function("ES256/primitive_only", |b| {
        b.iter(|| public.verify_sig(black_box(&msg), black_box(sig.as_ref())))
    });
    g.finish();
}

fn bench_extract(c: &mut Criterion) {
    let policy = ExtractPolicy {
        transports: vec![
            Transport::Bearer,
            Transport::Subprotocol,
            Transport::Ticket,
            Transport::Cookie,
        ],
        cookie_name: "session".into(),
        ticket_param: "ticket".into(),
        query_param: "token".into(),
        subprotocol: "jwt".into(),
        max_token_bytes: 8192,
    };
    let tok = token(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"bench-secret-0123456789abcdef-0123456789"),
    );
    let base = |h: &mut HeaderMap| {
        for (k, v) in [
            ("host", "127.0.0.1:8080"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("origin", "https://app.example"),
            ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
    };
    let mut bearer = HeaderMap::new();
    base(&mut bearer);
    bearer.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {tok}")).expect("header"),
    );
    let mut sub = HeaderMap::new();
    base(&mut sub);
    sub.insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(&format!("jwt, {tok}")).expect("header"),
    );
    let mut cookie = HeaderMap::new();
    base(&mut cookie);
    cookie.insert(
        "cookie",
        HeaderValue::from_str(&format!("theme=dark; session={tok}; lang=en")).expect("header"),
    );
    let ticket_q = format!("room=1&ticket={tok}");
    let mut none = HeaderMap::new();
    base(&mut none);
    let mut g = c.benchmark_group("extract");
    g.bench_function("bearer", |b| {
        b.iter(|| credential::extract(&policy, black_box(&bearer), None).map(|c| c.is_some()))
    });
    g.bench_function("subprotocol", |b| {
        b.iter(|| credential::extract(&policy, black_box(&sub), None).map(|c| c.is_some()))
    });
    g.bench_function("cookie", |b| {
        b.iter(|| credential::extract(&policy, black_box(&cookie), None).map(|c| c.is_some()))
    });
    g.bench_function("ticket", |b| {
        b.iter(|| {
            credential::extract(&policy, black_box(&none), Some(black_box(&ticket_q)))
                .map(|c| c.is_some())
        })
    });
    g.bench_function("none", |b| {
        b.iter(|| credential::extract(&policy, black_box(&none), None).map(|c| c.is_some()))
    });
    g.finish();
}

fn bench_reason(c: &mut Criterion) {
    c.bench_function("reason/map_all", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for r in black_box(Reason::ALL) {
                acc = acc
                    .wrapping_add(u32::from(r.status().as_u16()))
                    .wrapping_add(u32::from(r.close_code()))
                    .wrapping_add(r.code().len() as u32);
            }
            acc
        })
    });
}

criterion_group!(benches, bench_verify, bench_extract, bench_reason);
criterion_main!(benches);
