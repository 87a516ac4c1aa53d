//! Where authenticated traffic goes. `echo` is built in; `hub` and
//! `upstream` arrive with their own modules.

use crate::app::App;
use crate::config::BackendKind;

/// Application subprotocols the configured backend accepts.
pub fn accepted_protocols(_app: &App) -> &'static [String] {
    // Echo accepts none; the upstream backend will answer with its own.
    &[]
}

/// Whether this build can run the configured backend.
pub fn check_supported(kind: BackendKind) -> Result<(), String> {
    match kind {
        BackendKind::Echo => Ok(()),
        BackendKind::Hub => {
            Err("backend.kind = \"hub\" is not available in this build yet; use \"echo\"".into())
        }
        BackendKind::Upstream => Err(
            "backend.kind = \"upstream\" is not available in this build yet; use \"echo\"".into(),
        ),
    }
}
