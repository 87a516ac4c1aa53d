//! `[hub]`: who may subscribe and publish to which channels of the
//! built-in hub backend.

use super::build::Builder;
use super::de;
use serde::{Deserialize, Serialize};

/// `[hub]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    pub grants: Vec<Grant>,
}

/// One `[[hub.grants]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grant {
    /// No claim: the grant applies to every authenticated user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Matches when the claim equals it or (array) contains it.
    #[serde(
        deserialize_with = "de::grant_value",
        skip_serializing_if = "Option::is_none"
    )]
    pub value: Option<String>,
    pub subscribe: Vec<String>,
    pub publish: Vec<String>,
}

impl Builder<'_> {
    pub(super) fn check_hub(&mut self, h: &HubConfig) {
        for (i, g) in h.grants.iter().enumerate() {
            let at = format!("hub.grants[{i}]");
            match (&g.claim, &g.value) {
                (None, Some(_)) => self.problem(format!(
                    "{at}.value: given without claim; add claim = \"...\""
                )),
                (Some(c), _) if c.is_empty() => {
                    self.problem(format!("{at}.claim: must not be empty"))
                }
                (Some(c), None) => self.problem(format!(
                    "{at}.value: required with claim = {c:?} (the grant matches when the claim \
                     equals or contains it)"
                )),
                _ => {}
            }
            for (kind, pats) in [("subscribe", &g.subscribe), ("publish", &g.publish)] {
                for (j, p) in pats.iter().enumerate() {
                    if p.is_empty() || !p.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
                        self.problem(format!(
                            "{at}.{kind}[{j}]: {p:?} is not a channel pattern (1 or more printable \
                             ASCII characters)"
                        ));
                    }
                }
            }
        }
    }
}
