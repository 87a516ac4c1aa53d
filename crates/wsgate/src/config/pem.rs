//! Key and certificate files: PEM public keys checked against the key's
//! algorithm (family, RSA size, EC curve), PEM files of the right kind,
//! and JWK set files.

use super::build::Builder;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use std::path::Path;
use wsgate_core::verify::alg_name;

impl Builder<'_> {
    /// A readable file holding a PEM block whose BEGIN line ends with `marker`.
    pub(super) fn check_pem_file(&mut self, key: &str, path: &Path, marker: &str, what: &str) {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let found = text
                    .lines()
                    .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(marker));
                if !found {
                    self.problem(format!("{key}: {} holds no PEM {what}", path.display()));
                }
            }
            Err(e) => self.problem(format!("{key}: cannot read {}: {e}", path.display())),
        }
    }
}

/// A JWK set file: JSON with a non-empty `keys` array.
pub(super) fn check_jwks_file(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("is not JSON: {e}"))?;
    match doc.get("keys").and_then(serde_json::Value::as_array) {
        Some(keys) if !keys.is_empty() => Ok(()),
        Some(_) => Err("holds an empty \"keys\" array".into()),
        None => Err("is not a JWK set (no \"keys\" array)".into()),
    }
}

/// The label of the first PEM block (`PUBLIC KEY`, `PRIVATE KEY`, ...).
fn pem_label(pem: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(pem).ok()?;
    text.lines().find_map(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|r| r.strip_suffix("-----"))
            .map(str::to_owned)
    })
}

/// Parses a PEM public key for `alg`'s family, checking the EC curve.
pub(super) fn public_key_from_pem(alg: Algorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    let name = alg_name(alg);
    let label = pem_label(pem).ok_or("not a PEM file (no -----BEGIN line)")?;
    if label.contains("PRIVATE KEY") {
        return Err(
            "is a private key; configure the public key (openssl pkey -in KEY -pubout)".into(),
        );
    }
    if label != "PUBLIC KEY" && label != "RSA PUBLIC KEY" {
        return Err(format!(
            "holds a {label:?} PEM block; expected a public key (-----BEGIN PUBLIC KEY-----)"
        ));
    }
    match alg.family() {
        AlgorithmFamily::Hmac => Err(format!("{name} uses a shared secret, not a public key")),
        AlgorithmFamily::Rsa => {
            let key = DecodingKey::from_rsa_pem(pem)
                .map_err(|_| format!("is not an RSA public key, which {name} needs"))?;
            // Loaded, it would refuse every token `bad_signature`.
            use wsgate_core::verify::{rsa_bits, RSA_BITS};
            match rsa_bits(&key) {
                Some(bits) if RSA_BITS.contains(&bits) => Ok(key),
                bits => Err(format!(
                    "is a {}-bit RSA key: {name} needs {} to {} bits (RFC 7518 3.3)",
                    bits.unwrap_or(0),
                    RSA_BITS.start(),
                    RSA_BITS.end()
                )),
            }
        }
        AlgorithmFamily::Ec => {
            let key = DecodingKey::from_ec_pem(pem)
                .map_err(|_| format!("is not an EC public key, which {name} needs"))?;
            // The curve is fixed by the alg: P-256 for ES256, P-384 for ES384.
            // A SEC1 point is 1 + 2*32 (or 1 + 32 compressed) bytes on P-256.
            let point_len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
            let curve = match point_len {
                65 | 33 => "P-256",
                97 | 49 => "P-384",
                _ => "an unsupported curve",
            };
            let want = if alg == Algorithm::ES384 {
                "P-384"
            } else {
                "P-256"
            };
            if curve != want {
                return Err(format!("is a key on {curve}, but {name} needs {want}"));
            }
            Ok(key)
        }
        AlgorithmFamily::Ed => {
            let key = DecodingKey::from_ed_pem(pem)
                .map_err(|_| format!("is not an Ed25519 public key, which {name} needs"))?;
            if key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0) != 32 {
                return Err("is not an Ed25519 public key".into());
            }
            Ok(key)
        }
    }
}
