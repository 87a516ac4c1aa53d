//! The effective configuration as `wsgate check` prints it: every config
//! type derives `Serialize`, a [`Secret`] serialises as `[redacted]`, and
//! the helpers here write what has no serde form of its own (where a
//! secret came from, display-only types, the store URL's password).

use super::{Config, Secret, SecretSource};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

pub(super) const REDACTED: &str = "[redacted]";

/// `Config::redacted`: TOML, sections in the documented order.
pub(super) fn render(c: &Config) -> String {
    let mut out = String::from(
        "# wsgate effective configuration; secret values are shown as \"[redacted]\"\n",
    );
    if c.dev_mode {
        out.push_str("# dev mode: generated keys, loopback only; not for production\n");
    }
    out.push('\n');
    match toml::to_string(c) {
        Ok(text) => out.push_str(&text),
        Err(e) => out.push_str(&format!("# the configuration could not be rendered: {e}\n")),
    }
    out
}

/// A secret setting as the file writes it: `<key>_env` or `<key>_file`
/// (where it came from) and `<key>` itself as `[redacted]`; flattened into
/// its section.
pub(super) struct SecretKeys<'a> {
    pub key: &'static str,
    pub secret: Option<&'a Secret>,
    /// The section shows `<key>_env` as a field of its own (it names the
    /// variable consulted even when it is unset).
    pub env_apart: bool,
    /// What an unset secret means, shown as `<key> = "(unset: ...)"`.
    pub unset: Option<&'static str>,
}

impl SecretKeys<'_> {
    pub(super) fn write<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        let Some(secret) = self.secret else {
            if let Some(note) = self.unset {
                m.serialize_entry(self.key, &format!("(unset: {note})"))?;
            }
            return Ok(());
        };
        match secret.source() {
            SecretSource::Env(name) if !self.env_apart => {
                m.serialize_entry(&format!("{}_env", self.key), name)?
            }
            SecretSource::File(path) => m.serialize_entry(&format!("{}_file", self.key), path)?,
            _ => {}
        }
        m.serialize_entry(self.key, secret)
    }
}

/// `serialize_with` of an optional secret field, flattened into its section.
pub(super) fn secret_field<S: Serializer>(
    s: S,
    key: &'static str,
    secret: &Option<Secret>,
    env_apart: bool,
    unset: Option<&'static str>,
) -> Result<S::Ok, S::Error> {
    let keys = SecretKeys {
        key,
        secret: secret.as_ref(),
        env_apart,
        unset,
    };
    keys.serialize(s)
}

impl Serialize for SecretKeys<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        self.write(&mut m)?;
        m.end()
    }
}

/// Items by their `Display` (transports, CIDRs, header names).
pub(super) fn display_list<T: std::fmt::Display, S: Serializer>(
    items: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

/// `false` is left out (keys shown only when switched on).
pub(super) fn is_false(b: &bool) -> bool {
    !*b
}

/// A store URL with its password replaced (see `urls::without_password`).
#[cfg(test)]
pub(super) fn store_url(url: &str) -> String {
    super::urls::without_password(url)
}
