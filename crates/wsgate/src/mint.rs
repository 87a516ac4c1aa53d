//! Minting tokens: `wsgate token` and dev-mode logins.

use crate::error::{Error, Result};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};
use wsgate_core::verify::parse_alg;

/// Loads a private key PEM for `alg` (RS*/PS* RSA, ES* EC, EdDSA Ed25519).
pub fn encoding_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<EncodingKey> {
    let r = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(pem),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
        _ => return Err(Error::config("HS algorithms take a secret, not a key file")),
    };
    r.map_err(|e| {
        let context = format!("cannot load private key for {alg:?}");
        Error::config_because(context, e)
    })
}

/// Parses `--alg`.
pub fn alg(s: &str) -> Result<Algorithm> {
    parse_alg(s).ok_or_else(|| Error::config(format!("unsupported algorithm {s:?}")))
}

/// Minimum HMAC secret size for an HS algorithm (RFC 7518 3.2).
pub fn min_secret_len(alg: Algorithm) -> usize {
    match alg {
        Algorithm::HS384 => 48,
        Algorithm::HS512 => 64,
        _ => 32,
    }
}

/// Parses `--claim k=v`: v as JSON when it is JSON (`roles=["a"]`, `n=3`), else a string.
pub fn claim_arg(s: &str) -> Result<(String, Value)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::config(format!("--claim expects key=value, got {s:?}")))?;
    if k.is_empty() {
        return Err(Error::config("--claim key is empty"));
    }
    let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
    Ok((k.to_owned(), v))
}

/// Signs `claims`.
pub fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    claims: &Map<String, Value>,
    key: &EncodingKey,
) -> Result<String> {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key)
        .map_err(|e| Error::config_because("cannot sign token", e))
}

/// A random URL-safe string with `bytes` bytes of entropy (ids, CSRF values).
pub fn random_id(bytes: usize) -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_args() {
        assert_eq!(
            claim_arg("a=b").expect("ok"),
            ("a".into(), Value::String("b".into()))
        );
        assert_eq!(claim_arg("n=3").expect("ok").1, Value::from(3));
        assert_eq!(
            claim_arg(r#"roles=["x","y"]"#).expect("ok").1,
            serde_json::json!(["x", "y"])
        );
        assert!(claim_arg("novalue").is_err());
        assert!(claim_arg("=v").is_err());
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_id(16), random_id(16));
        assert_eq!(random_id(16).len(), 22);
    }
}
