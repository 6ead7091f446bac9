//! JSON bodies of the niks3 upload API, as the niks3 client sends and expects them.
//!
//! Larder adds optional fields only (`file_hash`, `file_size`, `headers`): Go's JSON
//! decoder ignores fields it does not know, so niks3 clients are unaffected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nix::ObjectType;

/// `POST /api/pending_closures`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingClosureRequest {
    /// The closure root's narinfo key.
    pub closure: String,
    /// Every object of the closure.
    pub objects: Vec<ObjectRequest>,
    /// niks3's request to check the bucket rather than trust the database; Larder never
    /// trusts a GC-marked row, so this only makes present objects cost a HEAD each.
    #[serde(default)]
    pub verify_s3: bool,
}

/// One object of a closure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectRequest {
    /// Object key (`<hash>.narinfo`, `nar/<hash>.nar.zst`, …).
    pub key: String,
    /// What kind of object it is.
    #[serde(rename = "type")]
    pub kind: ObjectType,
    /// Keys this object references.
    #[serde(default)]
    pub refs: Vec<String>,
    /// Uncompressed NAR size (NARs only); decides single PUT or multipart.
    #[serde(default)]
    pub nar_size: Option<u64>,
    /// Larder: `sha256:…` of the bytes to be stored; the storage will reject others.
    #[serde(default)]
    pub file_hash: Option<String>,
    /// Larder: size of the bytes to be stored.
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// Answer to `POST /api/pending_closures`: only what the cache lacks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingClosureResponse {
    /// Session id (a decimal string).
    pub id: String,
    /// RFC 3339 start time.
    pub started_at: String,
    /// Objects to upload, by key; a key not listed is present.
    pub pending_objects: BTreeMap<String, PendingObject>,
}

/// How to upload one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingObject {
    /// Object kind, echoed.
    #[serde(rename = "type")]
    pub kind: ObjectType,
    /// Presigned PUT URL for a single-request upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presigned_url: Option<String>,
    /// Multipart upload for large NARs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multipart_info: Option<MultipartInfo>,
    /// Larder: headers the PUT must carry (the signed `x-amz-checksum-sha256`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// A multipart upload and its first part URLs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MultipartInfo {
    /// Storage's upload id.
    pub upload_id: String,
    /// Presigned URLs for parts 1, 2, ….
    pub part_urls: Vec<String>,
}

/// `POST /api/multipart/request-parts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestPartsRequest {
    /// The NAR's key.
    pub object_key: String,
    /// Storage's upload id.
    pub upload_id: String,
    /// First part number wanted (1-based).
    pub start_part_number: i64,
    /// How many part URLs (1…1000).
    pub num_parts: i64,
}

/// Answer to `request-parts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestPartsResponse {
    /// Presigned URLs for the parts asked for, in order.
    pub part_urls: Vec<String>,
    /// Number of the first one.
    pub start_part_number: i64,
}

/// `POST /api/multipart/complete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteMultipartRequest {
    /// The NAR's key.
    pub object_key: String,
    /// Storage's upload id.
    pub upload_id: String,
    /// Every uploaded part with the ETag storage returned for it.
    pub parts: Vec<CompletedPart>,
}

/// One uploaded part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletedPart {
    /// 1-based part number.
    pub part_number: i64,
    /// ETag storage returned for the part's PUT.
    pub etag: String,
}

/// `POST /api/pending_closures/{id}/sign`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignRequest {
    /// Narinfo fields by narinfo key.
    pub narinfos: BTreeMap<String, NarinfoFields>,
}

/// What the worker needs of a narinfo to sign it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NarinfoFields {
    /// Absolute store path.
    pub store_path: String,
    /// NAR URL (unused for the fingerprint; kept for parity with niks3).
    #[serde(default)]
    pub url: Option<String>,
    /// Compression (unused for the fingerprint).
    #[serde(default)]
    pub compression: Option<String>,
    /// `sha256:…` of the NAR.
    pub nar_hash: String,
    /// NAR size in bytes.
    pub nar_size: u64,
    /// Absolute store paths referenced.
    #[serde(default)]
    pub references: Vec<String>,
}

/// Answer to `sign`: signatures by narinfo key, one per configured key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignResponse {
    /// `name:base64` signatures.
    pub signatures: BTreeMap<String, Vec<String>>,
}

/// `GET /api/cache-config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheConfig {
    /// URL Nix substitutes from.
    pub substituter_url: String,
    /// `name:base64` public keys to trust.
    pub public_keys: Vec<String>,
    /// Larder: API version, for clients to detect skew.
    pub api_version: u32,
    /// Larder: optional features this worker has.
    pub features: Vec<String>,
}

/// The `cache-config` feature of servers that take `POST …/files`.
pub const DECLARE_FILES: &str = "declare_files";

/// Larder: `POST /api/pending_closures/{id}/files`, the stored hash and size of objects
/// the session waits for, declared once the client has compressed them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeclareFilesRequest {
    /// Declarations by object key.
    pub files: BTreeMap<String, FileInfo>,
}

/// The bytes a client will store as one object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileInfo {
    /// `sha256:…` of the bytes; the storage will reject others.
    pub file_hash: String,
    /// Number of bytes.
    pub file_size: u64,
}

/// Answer to `files`: a presigned PUT bound to the declared hash for each object that
/// is uploaded in one request. Multipart objects are recorded but not listed: their
/// upload goes on with the parts the session handed out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeclareFilesResponse {
    /// How to upload each single-request object, by key.
    pub pending_objects: BTreeMap<String, PendingObject>,
}
