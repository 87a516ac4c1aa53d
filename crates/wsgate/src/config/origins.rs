//! `[origins]`: the Origin allow-list.

use super::build::Builder;
use serde::{Deserialize, Serialize};
use wsgate_core::origin::OriginPolicy;

/// `[origins]`: the Origin allow-list.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginsConfig {
    pub allow: Vec<String>,
    pub allow_missing: bool,
}

impl OriginsConfig {
    /// The policy; the entries were validated at load, so this cannot fail
    /// for a loaded config (an invalid list yields a deny-all policy).
    pub fn policy(&self) -> OriginPolicy {
        OriginPolicy::new(&self.allow, self.allow_missing).unwrap_or_default()
    }
}

impl Builder<'_> {
    pub(super) fn check_origins(&mut self, o: &OriginsConfig) {
        if let Err(bad) = OriginPolicy::new(&o.allow, o.allow_missing) {
            for b in bad {
                let idx = o.allow.iter().position(|a| *a == b.0);
                let at = idx.map_or("origins.allow".into(), |i| format!("origins.allow[{i}]"));
                let via = self.via(&at);
                self.problem(format!("{at}: {b}{via}"));
            }
        }
    }
}
