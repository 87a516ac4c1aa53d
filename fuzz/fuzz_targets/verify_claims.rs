//! Verification past the signature: the input is `header \0 claims`, both
//! base64url-encoded and signed HS256 with the verifier's secret, so the
//! header checks and the claim rules see attacker-shaped JSON.
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

static VERIFIER: OnceLock<wsgate_core::verify::Verifier> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(header), Some(claims)) = (parts.next(), parts.next()) else {
        return;
    };
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let Ok(sig) = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &EncodingKey::from_secret(common::SECRET),
        Algorithm::HS256,
    ) else {
        return;
    };
    let token = format!("{msg}.{sig}");
    let v = VERIFIER.get_or_init(common::verifier);
    if let Ok(ok) = v.verify(&token, common::NOW_MS) {
        // What passed really satisfies the rules.
        assert!(!ok.sub.is_empty());
        assert!(ok.exp_ms + 5_000 > common::NOW_MS);
        assert_eq!(ok.claims.get("iss").and_then(|i| i.as_str()), Some("https://idp.test"));
    }
});
