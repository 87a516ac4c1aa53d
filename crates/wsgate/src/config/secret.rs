//! Secret bytes that never print and compare in constant time.

use rand::RngCore;
use std::fmt;
use std::path::PathBuf;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Where a secret came from; shown by `wsgate check` instead of the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Read from this environment variable.
    Env(String),
    /// Read from this file.
    File(PathBuf),
    /// Generated at startup (dev mode, per-process ticket secret).
    Generated,
    /// Handed to [`Secret::new`] by code.
    Provided,
}

/// Secret bytes: `Debug` and `Display` print `[redacted]`, equality is
/// constant-time, and the bytes are zeroed when dropped.
#[derive(Clone)]
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    source: SecretSource,
}

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self::with_source(bytes, SecretSource::Provided)
    }

    /// `len` bytes from rand's OS-seeded CSPRNG.
    pub fn random(len: usize) -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        rand::rng().fill_bytes(&mut bytes);
        Secret {
            bytes,
            source: SecretSource::Generated,
        }
    }

    pub(crate) fn with_source(bytes: Vec<u8>, source: SecretSource) -> Self {
        Secret {
            bytes: Zeroizing::new(bytes),
            source,
        }
    }

    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn source(&self) -> &SecretSource {
        &self.source
    }
}

impl PartialEq for Secret {
    /// Compares the bytes only (not where they came from), in constant time.
    fn eq(&self, other: &Self) -> bool {
        self.bytes.as_slice().ct_eq(other.bytes.as_slice()).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}
