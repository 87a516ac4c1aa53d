//! Token parsing and verification (wsgate-core verify.rs) on raw input:
//! structure, base64url, header JSON, key choice, signature.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[path = "common.rs"]
mod common;

static VERIFIER: OnceLock<wsgate_core::verify::Verifier> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let v = VERIFIER.get_or_init(common::verifier);
    // Random bytes never carry a valid signature by our keys.
    assert!(v.verify(token, common::NOW_MS).is_err());
});
