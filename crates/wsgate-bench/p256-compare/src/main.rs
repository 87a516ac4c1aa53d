//! Times one ES256 signature verification with each maintained P-256
//! implementation, interleaved round by round so that a noisy host moves
//! them all alike, next to one HMAC-SHA256 of the same message for scale.
//! Run pinned to one core:
//! `taskset -c 0 cargo run --release --manifest-path crates/wsgate-bench/p256-compare/Cargo.toml`
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Instant;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, ParsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};

/// A JWS signing input of the size the load generator mints.
const MESSAGE: &[u8] = b"eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1c2VyLTAwMDAxMjM0IiwiaXNzIjoiaHR0cHM6Ly9pZHAuZXhhbXBsZS5jb20iLCJhdWQiOiJ3c2dhdGUiLCJleHAiOjE3NjQ4NjQwMDAsImlhdCI6MTc2NDg2MDQwMCwianRpIjoiMDAwMDAwMDAxMjM0In0";

type Verify<'a> = Box<dyn Fn(&[u8], &[u8]) -> bool + 'a>;

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);

    // Keys and signatures are made here, from no outside input: a failure
    // is a broken build of a crate, and the benchmark stops on it.
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("keygen");
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).expect("key");
    let point = pair.public_key().as_ref().to_vec(); // X9.62 uncompressed
    let signature = pair.sign(&rng, MESSAGE).expect("sign").as_ref().to_vec();
    let mut forged = signature.clone();
    forged[40] ^= 1;

    // Each verifier holds its key parsed once, as the gateway does.
    let awslc = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).expect("aws-lc key");
    let ring_key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        point.clone(),
    );
    let grav = graviola::signing::ecdsa::VerifyingKey::<graviola::signing::ecdsa::P256>::from_x962_uncompressed(&point)
        .expect("graviola key");
    let rc = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).expect("p256 key");
    let hmac_key = aws_lc_rs::hmac::Key::new(
        aws_lc_rs::hmac::HMAC_SHA256,
        b"0123456789abcdef0123456789abcdef",
    );

    let impls: Vec<(&str, Verify)> = vec![
        (
            "aws-lc-rs (the gateway's)",
            Box::new(|m, s| awslc.verify_sig(m, s).is_ok()),
        ),
        ("ring", Box::new(|m, s| ring_key.verify(m, s).is_ok())),
        (
            "graviola",
            Box::new(|m, s| grav.verify::<graviola::hashing::Sha256>(&[m], s).is_ok()),
        ),
        (
            "p256 (RustCrypto)",
            Box::new(|m, s| {
                use p256::ecdsa::signature::Verifier;
                p256::ecdsa::Signature::from_slice(s).is_ok_and(|sig| rc.verify(m, &sig).is_ok())
            }),
        ),
    ];
    // Every timing below is of a real verification: each accepts the
    // signature and refuses the forged one.
    for (name, verify) in &impls {
        assert!(
            verify(MESSAGE, &signature),
            "{name} refuses a valid signature"
        );
        assert!(
            !verify(MESSAGE, &forged),
            "{name} accepts a forged signature"
        );
    }

    let mut per_round: Vec<Vec<f64>> = vec![Vec::new(); impls.len() + 1];
    for _ in 0..rounds {
        for (i, (_, verify)) in impls.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(verify(black_box(MESSAGE), black_box(&signature)));
            }
            per_round[i].push(start.elapsed().as_secs_f64() * 1e6 / iters as f64);
        }
        let start = Instant::now();
        for _ in 0..iters * 10 {
            black_box(aws_lc_rs::hmac::sign(&hmac_key, black_box(MESSAGE)));
        }
        per_round[impls.len()].push(start.elapsed().as_secs_f64() * 1e6 / (iters * 10) as f64);
    }

    println!("{rounds} rounds × {iters} verifications, interleaved; µs per verification");
    println!("| verifier | median | min / max | × aws-lc-rs (median of per-round ratios) |");
    println!("|---|---|---|---|");
    let names: Vec<&str> = impls
        .iter()
        .map(|(n, _)| *n)
        .chain(["HMAC-SHA256 (HS256's primitive)"])
        .collect();
    for (i, name) in names.iter().enumerate() {
        let mut v = per_round[i].clone();
        let mut ratios: Vec<f64> = v
            .iter()
            .zip(&per_round[0])
            .map(|(x, base)| x / base)
            .collect();
        v.sort_by(f64::total_cmp);
        ratios.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.1} | {:.1} / {:.1} | {:.2} |",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1],
            ratios[ratios.len() / 2]
        );
    }
}
