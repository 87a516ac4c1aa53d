//! Config parsing (crates/wsgate config.rs): `Config::load` on any TOML
//! text, with no environment. Secrets come from `_env` (absent here) or
//! `_file`; the file is written to a private temporary folder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("wsgate-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    });
    let path = dir.join("wsgate.toml");
    std::fs::write(&path, text).expect("write config");
    if let Ok(cfg) = wsgate::config::Config::load(&path, &[]) {
        // A loaded config can always be shown, redacted.
        let _ = cfg.redacted();
    }
});
