//! Secret bytes that never print and compare in constant time, and how
//! `<key>_env` / `<key>_file` settings are resolved to them.

use super::build::{Builder, EnvLookup};
use rand::RngCore;
use serde::{Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};
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

/// Secret bytes: `Debug`, `Display` and `Serialize` give `[redacted]`,
/// equality is constant-time, and the bytes are zeroed when dropped.
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

impl Serialize for Secret {
    /// What `wsgate check` shows in place of the value.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.source {
            SecretSource::Generated => s.serialize_str("[redacted] (generated at startup)"),
            _ => s.serialize_str("[redacted]"),
        }
    }
}

impl Builder<'_> {
    /// Reads a secret file, trimming one trailing newline.
    fn read_secret_file(&mut self, key: &str, path: &Path) -> Option<Secret> {
        match std::fs::read(path) {
            Ok(mut bytes) => {
                if bytes.ends_with(b"\r\n") {
                    bytes.truncate(bytes.len() - 2);
                } else if bytes.ends_with(b"\n") {
                    bytes.truncate(bytes.len() - 1);
                }
                if bytes.is_empty() {
                    self.problem(format!("{key}: {} is empty", path.display()));
                    return None;
                }
                Some(Secret::with_source(
                    bytes,
                    SecretSource::File(path.to_path_buf()),
                ))
            }
            Err(e) => {
                self.problem(format!("{key}: cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// Resolves `<at>_env` / `<at>_file`. Returns the secret and the name of
    /// the variable consulted. An unset variable is a problem only when
    /// `required`; the caller decides what a missing optional secret means.
    pub(super) fn resolve_secret(
        &mut self,
        at: &str,
        env: Option<String>,
        file: Option<PathBuf>,
        default_env: Option<&str>,
        required: bool,
    ) -> (Option<Secret>, Option<String>) {
        let via = self.via(&format!("{at}_env"));
        match (env, file) {
            (Some(_), Some(_)) => {
                self.problem(format!(
                    "{at}_env and {at}_file are both set; give only one{via}"
                ));
                (None, None)
            }
            (None, Some(file)) => {
                let path = self.path(&file);
                (self.read_secret_file(&format!("{at}_file"), &path), None)
            }
            (env, None) => {
                let Some(name) = env.or_else(|| default_env.map(String::from)) else {
                    return (None, None);
                };
                if name.is_empty() {
                    self.problem(format!("{at}_env: must name an environment variable{via}"));
                    return (None, None);
                }
                match self.env(&name) {
                    EnvLookup::Set(v) => (
                        Some(Secret::with_source(
                            v.as_bytes().to_vec(),
                            SecretSource::Env(name.clone()),
                        )),
                        Some(name),
                    ),
                    miss => {
                        if required {
                            let how = match miss {
                                EnvLookup::Empty => "is empty",
                                _ => "is not set",
                            };
                            self.problem(format!(
                                "{at}_env: environment variable {name} {how}{via}"
                            ));
                        }
                        (None, Some(name))
                    }
                }
            }
        }
    }
}
