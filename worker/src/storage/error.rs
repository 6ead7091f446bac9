//! The one error type of the storage layer, shared by both backends.

use std::fmt::Display;
use std::time::Duration;

/// What went wrong talking to the object store, with the operation and key it concerned.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The object (or multipart upload) does not exist.
    #[error("{op} {key:?}: not found")]
    NotFound {
        /// Operation, e.g. `get`.
        op: &'static str,
        /// Object key (or upload id) it concerned.
        key: String,
    },
    /// A conditional request's precondition did not hold (HTTP 412).
    #[error("{op} {key:?}: precondition failed")]
    PreconditionFailed {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
    },
    /// `If-None-Match`/`If-Modified-Since` matched: the caller's copy is current (HTTP 304).
    #[error("{op} {key:?}: not modified")]
    NotModified {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
    },
    /// The store asks us to slow down (S3 `SlowDown`, 503); answer 429 with `Retry-After`.
    #[error("{op} {key:?}: storage is throttling; retry after {}s", retry_after.as_secs())]
    Throttled {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// How long the caller should wait before retrying.
        retry_after: Duration,
    },
    /// The requested byte range lies outside the object (HTTP 416).
    #[error("{op} {key:?}: range not satisfiable")]
    InvalidRange {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// The object's size, when known (for `Content-Range: bytes */size`).
        size: Option<u64>,
    },
    /// The bytes received do not have the SHA-256 (or part ETag) they were declared with.
    #[error("{op} {key:?}: checksum mismatch")]
    ChecksumMismatch {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
    },
    /// The caller passed something unusable: a bad key, part number or expiry.
    #[error("{op} {key:?}: invalid input: {reason}")]
    InvalidInput {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
    /// A local-directory upload URL was forged, tampered with or has expired (HTTP 403).
    #[error("{op} {key:?}: upload URL rejected: {reason}")]
    Forbidden {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Anything else: network, permissions, I/O; `message` carries the cause chain.
    #[error("{op} {key:?}: {message}")]
    Other {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// The underlying error, with its causes.
        message: String,
    },
}

/// Shorthand for results of the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    /// An [`StorageError::Other`] from any displayable cause.
    pub fn other(op: &'static str, key: impl Into<String>, cause: impl Display) -> Self {
        StorageError::Other {
            op,
            key: key.into(),
            message: cause.to_string(),
        }
    }

    /// An [`StorageError::InvalidInput`].
    pub fn invalid(op: &'static str, key: impl Into<String>, reason: impl Into<String>) -> Self {
        StorageError::InvalidInput {
            op,
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// A [`StorageError::NotFound`].
    pub fn not_found(op: &'static str, key: impl Into<String>) -> Self {
        StorageError::NotFound {
            op,
            key: key.into(),
        }
    }

    /// True for [`StorageError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }

    /// The HTTP status a server should answer with when this error ends a request.
    pub fn http_status(&self) -> u16 {
        match self {
            StorageError::NotFound { .. } => 404,
            StorageError::PreconditionFailed { .. } => 412,
            StorageError::NotModified { .. } => 304,
            StorageError::Throttled { .. } => 429,
            StorageError::InvalidRange { .. } => 416,
            StorageError::ChecksumMismatch { .. } | StorageError::InvalidInput { .. } => 400,
            StorageError::Forbidden { .. } => 403,
            StorageError::Other { .. } => 500,
        }
    }
}

/// Wraps an I/O error as [`StorageError::Other`], keeping `NotFound` distinguishable.
pub(crate) fn io_error(op: &'static str, key: &str, err: std::io::Error) -> StorageError {
    if err.kind() == std::io::ErrorKind::NotFound {
        StorageError::not_found(op, key)
    } else {
        StorageError::other(op, key, err)
    }
}
