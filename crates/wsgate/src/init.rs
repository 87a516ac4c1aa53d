//! `wsgate init DIR`: a commented production configuration and freshly
//! generated secrets, such that `wsgate check --config DIR/wsgate.toml`
//! passes. The Debian package's postinst runs it on /etc/wsgate too, so an
//! existing file is never overwritten: it is kept and reported.

use rand::RngCore;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The production configuration, also installed as /etc/wsgate/wsgate.toml.
pub const CONFIG_TEMPLATE: &str = include_str!("../packaging/wsgate.toml");

/// The secret files the template names, each 32 random bytes written as
/// 64 hex digits (the `_file` readers strip one trailing newline).
pub const SECRET_FILES: [&str; 3] = ["jwt.key", "ticket.key", "admin.token"];

const SECRET_BYTES: usize = 32;

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Created(PathBuf),
    Kept(PathBuf),
}

/// Writes the config (mode 0644) and the secrets (mode 0600) into `dir`,
/// creating it if needed; files that already exist are kept as they are.
pub fn init(dir: &Path) -> io::Result<Vec<Written>> {
    fs::create_dir_all(dir)?;
    let mut done = Vec::with_capacity(1 + SECRET_FILES.len());
    done.push(create(
        &dir.join("wsgate.toml"),
        0o644,
        CONFIG_TEMPLATE.as_bytes(),
    )?);
    for name in SECRET_FILES {
        let mut raw = Zeroizing::new([0u8; SECRET_BYTES]);
        rand::rng().fill_bytes(raw.as_mut());
        let mut text = Zeroizing::new(String::with_capacity(2 * SECRET_BYTES + 1));
        for b in raw.iter() {
            // Infallible: writing to a String.
            let _ = write!(text, "{b:02x}");
        }
        text.push('\n');
        done.push(create(&dir.join(name), 0o600, text.as_bytes())?);
    }
    Ok(done)
}

/// `create_new` with the final mode from the start: a secret is never
/// readable by others, not even between open and chmod.
fn create(path: &Path, mode: u32, contents: &[u8]) -> io::Result<Written> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Ok(Written::Kept(path.to_path_buf()))
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    // A half-written secret must not be "kept" by the next run.
    if let Err(e) = file.write_all(contents).and_then(|()| file.sync_all()) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(Written::Created(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_config_and_private_secrets_then_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let first = init(dir.path()).unwrap();
        assert!(first.iter().all(|w| matches!(w, Written::Created(_))));
        for name in SECRET_FILES {
            let p = dir.path().join(name);
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
            let text = fs::read_to_string(&p).unwrap();
            assert_eq!(text.trim_end().len(), 2 * SECRET_BYTES);
        }
        let before = fs::read(dir.path().join("jwt.key")).unwrap();
        let second = init(dir.path()).unwrap();
        assert!(second.iter().all(|w| matches!(w, Written::Kept(_))));
        assert_eq!(fs::read(dir.path().join("jwt.key")).unwrap(), before);
    }

    #[test]
    fn secrets_differ_between_runs() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        init(a.path()).unwrap();
        init(b.path()).unwrap();
        for name in SECRET_FILES {
            assert_ne!(
                fs::read(a.path().join(name)).unwrap(),
                fs::read(b.path().join(name)).unwrap()
            );
        }
    }
}
