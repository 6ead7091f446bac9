//! Files holding secrets (tokens, signing keys) that a command line names.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why a secret file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot read {what}: {source}")]
pub struct SecretFileError {
    path: String,
    what: &'static str,
    #[source]
    source: std::io::Error,
}

/// Mode bits that let users other than the owner and its group read or replace a file.
const OTHERS: u32 = 0o006;

/// Reads `path` (`what` names it in messages, e.g. "the token file"), trimmed of
/// surrounding whitespace. A regular file that other users may read or write is read
/// anyway, with a warning: refusing would stop a cache whose secret was mounted with a
/// lax mode, and the secret is already exposed by then.
pub fn read(path: &Path, what: &'static str) -> Result<String, SecretFileError> {
    let fail = |source| SecretFileError {
        path: path.display().to_string(),
        what,
        source,
    };
    let text = std::fs::read_to_string(path).map_err(fail)?;
    let text = text.trim();
    // An empty file holds no secret to expose; its caller says what is wrong with it.
    if let Some(mode) = exposed_mode(path).filter(|_| !text.is_empty()) {
        tracing::warn!(
            "{} is readable or writable by every user (mode {mode:04o}): anyone on this \
             machine can use {what}; `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(text.to_string())
}

/// The mode of a regular file other users may read or write (devices such as
/// /dev/null, an empty token file, are not secrets).
fn exposed_mode(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o7777;
    (meta.is_file() && mode & OTHERS != 0).then_some(mode)
}

/// Creates `path` holding `contents`, readable by its owner only, whole or not at all:
/// written to `temp` (a name beside it), synced, then linked to its name, so a process
/// killed midway leaves no empty secret that would stop every later start. Fails with
/// `AlreadyExists` when `path` exists: a link, unlike a rename, never replaces a file.
pub fn create_whole(path: &Path, temp: &str, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_file_name(temp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    written?;
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Removes `path` when it holds only whitespace, which only a process killed between
/// creating and writing it could leave (before [`create_whole`]) and which holds no
/// secret anyone used, so that it is made again. An absent, unreadable or non-empty file
/// is left for its reader to judge.
pub fn remove_if_blank(path: &Path) -> std::io::Result<()> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_trimmed_and_tells_what_failed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  secret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read(&file, "the token file").unwrap(), "secret");
        assert_eq!(exposed_mode(&file), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposed_mode(&file), Some(0o644));
        assert_eq!(exposed_mode(Path::new("/dev/null")), None);
        let e = read(&dir.path().join("missing"), "the token file").unwrap_err();
        let e = e.to_string();
        assert!(e.contains("missing: cannot read the token file: "), "{e}");
    }
}
