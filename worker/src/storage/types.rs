//! Requests and answers of the storage interface, the same for every backend.

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;

use super::range::ContentRange;
use super::StorageError;

/// A stream of object bytes; errors carry the operation and key.
pub type ByteStream = BoxStream<'static, Result<Bytes, StorageError>>;

/// What to store: bytes in memory, or a stream of known length.
pub enum PutBody {
    /// The whole object in memory (small objects: narinfos, index files).
    Bytes(Bytes),
    /// A stream that yields exactly `length` bytes.
    Stream {
        /// The bytes.
        stream: ByteStream,
        /// Their total length (S3 needs it up front).
        length: u64,
    },
}

impl fmt::Debug for PutBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutBody::Bytes(b) => write!(f, "PutBody::Bytes({} bytes)", b.len()),
            PutBody::Stream { length, .. } => write!(f, "PutBody::Stream({length} bytes)"),
        }
    }
}

impl From<Bytes> for PutBody {
    fn from(bytes: Bytes) -> Self {
        PutBody::Bytes(bytes)
    }
}

impl From<Vec<u8>> for PutBody {
    fn from(bytes: Vec<u8>) -> Self {
        PutBody::Bytes(bytes.into())
    }
}

impl From<&'static [u8]> for PutBody {
    fn from(bytes: &'static [u8]) -> Self {
        PutBody::Bytes(Bytes::from_static(bytes))
    }
}

/// Headers stored with an object, and an optional checksum the store must verify.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// `Content-Type` to store.
    pub content_type: Option<String>,
    /// `Content-Encoding` to store (e.g. `zstd` for niks3 narinfos).
    pub content_encoding: Option<String>,
    /// `Cache-Control` to store.
    pub cache_control: Option<String>,
    /// SHA-256 the bytes must have; the store refuses others and keeps nothing.
    pub checksum_sha256: Option<[u8; 32]>,
}

/// Conditional GET headers (RFC 9110 §13); a match yields [`StorageError::NotModified`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Raw `If-None-Match` value: `*` or a list of (possibly weak) entity tags.
    pub if_none_match: Option<String>,
    /// `If-Modified-Since`; ignored when `if_none_match` is set, as RFC 9110 says.
    pub if_modified_since: Option<SystemTime>,
}

/// An object being read: its bytes as a stream, and its metadata.
pub struct GetObject {
    /// The requested bytes (the range, or the whole object).
    pub body: ByteStream,
    /// Number of bytes `body` yields.
    pub size: u64,
    /// Size of the whole object.
    pub total_size: u64,
    /// The range served, when a range was requested (answer 206 with `Content-Range`).
    pub content_range: Option<ContentRange>,
    /// Entity tag, quoted as in HTTP.
    pub etag: Option<String>,
    /// Last modification time.
    pub last_modified: Option<SystemTime>,
    /// Stored `Content-Type`.
    pub content_type: Option<String>,
    /// Stored `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// Stored `Cache-Control`.
    pub cache_control: Option<String>,
}

impl fmt::Debug for GetObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetObject")
            .field("size", &self.size)
            .field("total_size", &self.total_size)
            .field("content_range", &self.content_range)
            .field("etag", &self.etag)
            .field("last_modified", &self.last_modified)
            .field("content_type", &self.content_type)
            .field("content_encoding", &self.content_encoding)
            .field("cache_control", &self.cache_control)
            .finish_non_exhaustive()
    }
}

/// What `head` knows about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// Entity tag, quoted as in HTTP.
    pub etag: Option<String>,
    /// Last modification time.
    pub last_modified: Option<SystemTime>,
    /// Stored `Content-Type`.
    pub content_type: Option<String>,
    /// Stored `Content-Encoding`.
    pub content_encoding: Option<String>,
}

/// One object found by `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// Key, relative to the store (its prefix removed).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A key `delete_many` could not delete, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFailure {
    /// The key.
    pub key: String,
    /// The store's reason.
    pub message: String,
}

/// What a presigned single-object PUT fixes besides the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutPresign {
    /// SHA-256 of the bytes to upload; the store then refuses any other bytes.
    pub checksum_sha256: Option<[u8; 32]>,
    /// `Content-Type` the uploader must send.
    pub content_type: Option<String>,
    /// `Content-Encoding` the uploader must send.
    pub content_encoding: Option<String>,
}

/// A request someone else may send without credentials until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedRequest {
    /// HTTP method, e.g. `PUT`.
    pub method: String,
    /// Full URL, signature included.
    pub url: String,
    /// Headers the sender must include verbatim (signed ones among them).
    pub headers: Vec<(String, String)>,
}

/// One uploaded part of a multipart upload, as passed to `complete_multipart`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    /// Part number, 1..=10000.
    pub part_number: u32,
    /// The ETag the store answered the part's PUT with.
    pub etag: String,
}

/// Largest part number S3 (and the local directory) accepts.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// Most keys one S3 `DeleteObjects` call may carry.
pub const DELETE_BATCH: usize = 1000;
