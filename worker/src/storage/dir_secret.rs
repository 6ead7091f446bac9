//! The local directory's upload URL secret (`.upload-secret`, hex): read, or made on
//! first start. It appears whole or not at all: written to a temporary file, synced,
//! then linked to its name, so a process killed midway leaves no empty secret that would
//! stop every later start. An empty one (which a kill between creating and writing it
//! left before) signed nothing, and is replaced. (Two processes both finding it empty
//! at the same moment could each replace it; the loser's URLs would then be refused and
//! their pushes retried: only after such a kill, never in normal starts.)

use std::path::Path;

use super::dir_meta::{random_hex, TEMP_PREFIX};

/// The secret at `path`, made when absent or empty.
pub(crate) async fn load_or_create_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::secret_file::remove_if_blank(path)?;
    match tokio::fs::read_to_string(path).await {
        Ok(text) => parse(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path).await,
        Err(e) => Err(e),
    }
}

fn parse(path: &Path, text: &str) -> std::io::Result<Vec<u8>> {
    match hex::decode(text.trim()) {
        Ok(secret) if secret.len() >= 32 => Ok(secret),
        _ => Err(std::io::Error::other(format!(
            "{} is not a hex secret",
            path.display()
        ))),
    }
}

/// Writes a new secret beside `path` and links it there; when another process linked
/// one first, reads theirs.
async fn create(path: &Path) -> std::io::Result<Vec<u8>> {
    let secret = random_hex(32);
    let temp = format!("{TEMP_PREFIX}{}", random_hex(12));
    match crate::secret_file::create_whole(path, &temp, secret.as_bytes()) {
        Ok(()) => hex::decode(&secret).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // The other process linked it only once it was whole.
            let text = tokio::fs::read_to_string(path).await?;
            parse(path, &text)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    #[tokio::test]
    async fn processes_starting_at_once_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".upload-secret");
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { load_or_create_secret(&path).await.unwrap() })
            })
            .collect();
        let mut secrets = Vec::new();
        for attempt in attempts {
            secrets.push(attempt.await.unwrap());
        }
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(secrets[0].len(), 32);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [".upload-secret"]);
    }

    #[tokio::test]
    async fn a_secret_that_is_not_hex_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".upload-secret");
        std::fs::write(&path, "not hex").unwrap();
        assert!(load_or_create_secret(&path).await.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not hex");
    }
}
