//! Index files in the object store: how each is stored and served (type, caching), and
//! reading one back with a size cap.

use bytes::Bytes;
use futures::TryStreamExt;
use thiserror::Error;

use super::paths::IndexFile;
use crate::storage::{Conditions, PutBody, PutOptions, Storage, StorageError};

/// Largest index file read back whole (a Bloom filter of ~100M paths at 1 %).
pub const MAX_FILE: usize = 256 << 20;

/// Why an index file could not be read or written.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("{key}: {source}")]
    Storage {
        key: String,
        #[source]
        source: StorageError,
    },
    #[error("{key} is larger than {limit} bytes")]
    TooLarge { key: String, limit: usize },
    #[error("{key}: the store refused to delete it: {message}")]
    Delete { key: String, message: String },
}

/// `Cache-Control` of a file: immutable ones forever, the rest briefly (the manifest for
/// at most 60 s, journal segments and the Bloom filter, which grow, for 5 s).
pub fn cache_control(file: &IndexFile) -> &'static str {
    match file {
        IndexFile::Shard { .. } | IndexFile::Delta { .. } | IndexFile::Checksums { .. } => {
            "public, max-age=31536000, immutable"
        }
        IndexFile::Manifest => "public, max-age=60",
        IndexFile::Journal { .. } | IndexFile::Bloom => "public, max-age=5",
    }
}

/// `Content-Type` of a file.
pub fn content_type(file: &IndexFile) -> &'static str {
    match file {
        IndexFile::Manifest | IndexFile::Checksums { .. } => "application/json",
        IndexFile::Journal { .. } => "text/plain; charset=utf-8",
        IndexFile::Shard { .. } | IndexFile::Delta { .. } => "application/zstd",
        IndexFile::Bloom => "application/octet-stream",
    }
}

/// Stores a file with its type and caching headers.
pub async fn put(storage: &Storage, file: &IndexFile, bytes: Vec<u8>) -> Result<(), FileError> {
    let key = file.key();
    let options = PutOptions {
        content_type: Some(content_type(file).to_owned()),
        cache_control: Some(cache_control(file).to_owned()),
        ..PutOptions::default()
    };
    storage
        .put(&key, PutBody::Bytes(Bytes::from(bytes)), &options)
        .await
        .map_err(|source| FileError::Storage { key, source })?;
    Ok(())
}

/// Reads a whole file, `None` when it does not exist; more than `limit` bytes is an error.
pub async fn get(
    storage: &Storage,
    file: &IndexFile,
    limit: usize,
) -> Result<Option<Vec<u8>>, FileError> {
    let key = file.key();
    let object = match storage.get(&key, None, &Conditions::default()).await {
        Ok(object) => object,
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(source) => return Err(FileError::Storage { key, source }),
    };
    if object.size > limit as u64 {
        return Err(FileError::TooLarge { key, limit });
    }
    let mut out = Vec::with_capacity(object.size as usize);
    let mut body = object.body;
    while let Some(chunk) = body.try_next().await.map_err(|source| FileError::Storage {
        key: key.clone(),
        source,
    })? {
        if out.len() + chunk.len() > limit {
            return Err(FileError::TooLarge { key, limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

/// Deletes files; keys the store could not delete are errors.
pub async fn delete(storage: &Storage, keys: &[String]) -> Result<(), FileError> {
    let failed = storage
        .delete_many(keys)
        .await
        .map_err(|source| FileError::Storage {
            key: keys.first().cloned().unwrap_or_default(),
            source,
        })?;
    match failed.into_iter().next() {
        None => Ok(()),
        Some(f) => Err(FileError::Delete {
            key: f.key,
            message: f.message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hash::Prefix;

    #[test]
    fn immutable_files_cache_forever_and_the_rest_briefly() {
        let p = Prefix::parse("b6").unwrap_or_else(|_| unreachable!());
        let forever = "public, max-age=31536000, immutable";
        for f in [
            IndexFile::Shard {
                epoch: 1,
                prefix: p,
            },
            IndexFile::Delta {
                from: 1,
                to: 2,
                prefix: p,
            },
            IndexFile::Checksums { epoch: 1 },
        ] {
            assert_eq!(cache_control(&f), forever);
        }
        assert_eq!(cache_control(&IndexFile::Manifest), "public, max-age=60");
        assert_eq!(
            cache_control(&IndexFile::Journal { segment: 300 }),
            "public, max-age=5"
        );
        assert_eq!(cache_control(&IndexFile::Bloom), "public, max-age=5");
    }
}
