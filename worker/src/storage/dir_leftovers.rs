//! What killed uploads leave in the local directory: `.tmp-*` files of writes that
//! never reached their rename, and `.multipart/{id}/` folders of uploads that were never
//! completed or aborted (a worker killed between creating one and recording it in its
//! session). Nothing else refers to them, so nothing else would ever remove them; the
//! collector does, once they are older than the failed-upload grace (the directory's
//! counterpart of an S3 lifecycle rule for incomplete multipart uploads).
//!
//! Age is the modification time, which every write to a temporary file or part moves
//! on; a session whose upload could still write there started after the cutoff (older
//! sessions are abandoned by the same collection), so its files are younger.

use std::path::Path;
use std::time::SystemTime;

use super::dir::DirStore;
use super::dir_meta::TEMP_PREFIX;
use super::dir_multipart::MULTIPART_DIR;
use super::{Result, StorageError};

impl DirStore {
    /// Removes temporary files and multipart upload folders last modified before
    /// `cutoff`; returns how many went.
    pub async fn remove_stale_uploads(&self, cutoff: SystemTime) -> Result<u64> {
        let root = self.root().to_path_buf();
        tokio::task::spawn_blocking(move || remove_stale(&root, cutoff))
            .await
            .map_err(|e| StorageError::other("remove_stale_uploads", "", e))?
            .map_err(|e| StorageError::other("remove_stale_uploads", "", e))
    }
}

fn remove_stale(root: &Path, cutoff: SystemTime) -> std::io::Result<u64> {
    let mut removed = remove_stale_temp_files(root, cutoff)?;
    let uploads = match std::fs::read_dir(root.join(MULTIPART_DIR)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for upload in uploads {
        let upload = upload?.path();
        if newest_change(&upload)?.is_some_and(|t| t < cutoff) {
            removed += gone(std::fs::remove_dir_all(&upload))?;
        }
    }
    Ok(removed)
}

/// Temporary files older than `cutoff` in `dir` and the object folders below it.
fn remove_stale_temp_files(dir: &Path, cutoff: SystemTime) -> std::io::Result<u64> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) {
            let modified = match entry.metadata() {
                Ok(meta) => meta.modified()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if modified < cutoff {
                removed += gone(std::fs::remove_file(entry.path()))?;
            }
        } else if !name.starts_with('.') && entry.file_type()?.is_dir() {
            removed += remove_stale_temp_files(&entry.path(), cutoff)?;
        }
    }
    Ok(removed)
}

/// The latest modification time of `dir` and its entries (`None` if it is gone).
fn newest_change(dir: &Path) -> std::io::Result<Option<SystemTime>> {
    let mut newest = match std::fs::metadata(dir) {
        Ok(meta) => meta.modified()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    for entry in std::fs::read_dir(dir)? {
        match entry.and_then(|e| e.metadata()) {
            Ok(meta) => newest = newest.max(meta.modified()?),
            // Completed or aborted meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(newest))
}

/// 1 when a removal happened, 0 when someone else removed it first.
fn gone(result: std::io::Result<()>) -> std::io::Result<u64> {
    match result {
        Ok(()) => Ok(1),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use std::time::Duration;

    use super::*;

    fn age(path: &Path, by: Duration) {
        std::fs::File::open(path)
            .unwrap()
            .set_modified(SystemTime::now() - by)
            .unwrap();
    }

    #[tokio::test]
    async fn old_temporary_files_and_upload_folders_go_young_ones_and_objects_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path(), "http://127.0.0.1:1")
            .await
            .unwrap();
        let root = dir.path();
        let hour = Duration::from_secs(3600);
        std::fs::create_dir_all(root.join("nar")).unwrap();
        for file in [
            ".tmp-old",
            "nar/.tmp-old",
            ".tmp-young",
            "nar/x.nar.zst",
            "a.narinfo",
        ] {
            std::fs::write(root.join(file), b"bytes").unwrap();
        }
        for file in [".tmp-old", "nar/.tmp-old", "nar/x.nar.zst", "a.narinfo"] {
            age(&root.join(file), 2 * hour);
        }
        let old = store.create_multipart("nar/y.nar.zst").await.unwrap();
        let busy = store.create_multipart("nar/z.nar.zst").await.unwrap();
        let young = store.create_multipart("nar/w.nar.zst").await.unwrap();
        let uploads = root.join(".multipart");
        for id in [&old, &busy] {
            age(&uploads.join(id).join("key"), 2 * hour);
            age(&uploads.join(id), 2 * hour);
        }
        // An old upload still receiving a part is not stale.
        std::fs::write(uploads.join(&busy).join(".tmp-part"), b"part").unwrap();

        let removed = store
            .remove_stale_uploads(SystemTime::now() - hour)
            .await
            .unwrap();
        assert_eq!(removed, 3);
        for gone in [".tmp-old", "nar/.tmp-old"] {
            assert!(!root.join(gone).exists(), "{gone}");
        }
        assert!(!uploads.join(&old).exists());
        for kept in [".tmp-young", "nar/x.nar.zst", "a.narinfo", ".upload-secret"] {
            assert!(root.join(kept).exists(), "{kept}");
        }
        assert!(uploads.join(&busy).exists() && uploads.join(&young).exists());
    }

    #[tokio::test]
    async fn an_empty_store_has_nothing_to_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path(), "http://127.0.0.1:1")
            .await
            .unwrap();
        assert_eq!(
            store.remove_stale_uploads(SystemTime::now()).await.unwrap(),
            0
        );
    }
}
