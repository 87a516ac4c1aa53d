//! Where authenticated traffic goes: `echo` and the channel `hub` are built
//! in; `upstream` arrives with its own module.

pub mod hub;

use crate::app::App;
use crate::config::BackendKind;

/// Application subprotocols the configured backend accepts.
pub fn accepted_protocols(_app: &App) -> &'static [String] {
    // Echo and the hub accept none; the upstream backend will answer with its own.
    &[]
}

/// Whether this build can run the configured backend.
pub fn check_supported(kind: BackendKind) -> Result<(), String> {
    match kind {
        BackendKind::Echo | BackendKind::Hub => Ok(()),
        BackendKind::Upstream => {
            Err("backend.kind = \"upstream\" is not available in this build yet; use \"hub\" or \"echo\"".into())
        }
    }
}
