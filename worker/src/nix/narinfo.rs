//! `.narinfo` files: parse what any cache wrote, render exactly the way Nix does.

use std::fmt::{self, Write as _};

use thiserror::Error;

use super::compression::{Compression, CompressionError};
use super::hash::{HashError, NixHash};
use super::preview;
use super::signature::{self, PublicKey, SecretKey, Signature, SignatureError};
use super::store_path::{StorePath, StorePathError};

/// Largest narinfo accepted; a path with thousands of references stays far below.
pub const MAX_NARINFO_LEN: usize = 1024 * 1024;

/// Why a narinfo could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NarInfoError {
    #[error("narinfo is {len} bytes; at most {MAX_NARINFO_LEN} are accepted")]
    TooLarge { len: usize },
    #[error("narinfo is not UTF-8")]
    NotUtf8,
    #[error("narinfo line {line}: {text:?} is not `Key: value`")]
    MalformedLine { line: usize, text: String },
    #[error("narinfo has no {0} field")]
    Missing(&'static str),
    #[error("narinfo line {line}: {field} appears a second time")]
    Duplicate { field: &'static str, line: usize },
    #[error("narinfo line {line}: {field} is empty")]
    Empty { field: &'static str, line: usize },
    #[error("narinfo line {line}: {field} {value:?} is not a decimal number")]
    BadNumber {
        field: &'static str,
        line: usize,
        value: String,
    },
    #[error("narinfo line {line}: {field}: {source}")]
    BadPath {
        field: &'static str,
        line: usize,
        source: StorePathError,
    },
    #[error("narinfo line {line}: {field}: {source}")]
    BadHash {
        field: &'static str,
        line: usize,
        source: HashError,
    },
    #[error("narinfo line {line}: {source}")]
    BadCompression {
        line: usize,
        source: CompressionError,
    },
    #[error("narinfo line {line}: Sig: {source}")]
    BadSig { line: usize, source: SignatureError },
    #[error("narinfo line {line}: CA {value:?} is not `text:…` or `fixed:…`")]
    BadCa { line: usize, value: String },
}

/// What a cache says about one store path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// The store path described.
    pub store_path: StorePath,
    /// Where the NAR lives, relative to the cache root (`nar/<hash>.nar.zst`).
    pub url: String,
    /// How the NAR at `url` is compressed; Nix assumes bzip2 when the field is absent.
    pub compression: Compression,
    /// SHA-256 of the compressed file, when known.
    pub file_hash: Option<NixHash>,
    /// Size of the compressed file, when known.
    pub file_size: Option<u64>,
    /// SHA-256 of the uncompressed NAR.
    pub nar_hash: NixHash,
    /// Size of the uncompressed NAR.
    pub nar_size: u64,
    /// Store paths this one refers to (kept sorted and unique).
    pub references: Vec<StorePath>,
    /// The derivation that built it, if known.
    pub deriver: Option<StorePath>,
    /// Signatures, one per signing key.
    pub signatures: Vec<Signature>,
    /// Content address (`fixed:…`, `text:…`), for content-addressed paths.
    pub ca: Option<String>,
}

/// Fields Larder knows; anything else is skipped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    StorePath,
    Url,
    Compression,
    FileHash,
    FileSize,
    NarHash,
    NarSize,
    References,
    Deriver,
    Ca,
}

impl Field {
    const ALL: [(Field, &'static str); 10] = [
        (Field::StorePath, "StorePath"),
        (Field::Url, "URL"),
        (Field::Compression, "Compression"),
        (Field::FileHash, "FileHash"),
        (Field::FileSize, "FileSize"),
        (Field::NarHash, "NarHash"),
        (Field::NarSize, "NarSize"),
        (Field::References, "References"),
        (Field::Deriver, "Deriver"),
        (Field::Ca, "CA"),
    ];
}

impl NarInfo {
    /// Parses narinfo bytes, checking the size cap and UTF-8 first.
    pub fn parse_bytes(input: &[u8]) -> Result<Self, NarInfoError> {
        if input.len() > MAX_NARINFO_LEN {
            return Err(NarInfoError::TooLarge { len: input.len() });
        }
        Self::parse(std::str::from_utf8(input).map_err(|_| NarInfoError::NotUtf8)?)
    }

    /// Parses narinfo text. Unknown keys are ignored; known ones may appear only once
    /// (except `Sig`); `StorePath`, `URL`, `NarHash` and `NarSize` are required.
    pub fn parse(input: &str) -> Result<Self, NarInfoError> {
        if input.len() > MAX_NARINFO_LEN {
            return Err(NarInfoError::TooLarge { len: input.len() });
        }
        let mut seen: Vec<Field> = Vec::new();
        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = Vec::new();
        let mut deriver = None;
        let mut signatures = Vec::new();
        let mut ca = None;

        for (i, text) in input.lines().enumerate() {
            let line = i + 1;
            if text.is_empty() {
                continue;
            }
            let (key, value) = text
                .split_once(':')
                .ok_or_else(|| NarInfoError::MalformedLine {
                    line,
                    text: preview(text),
                })?;
            // Nix writes `Key: value`; tolerate a missing space (`References:` when empty).
            let value = value.strip_prefix(' ').unwrap_or(value);
            if key == "Sig" {
                let sig = Signature::parse(value)
                    .map_err(|source| NarInfoError::BadSig { line, source })?;
                signatures.push(sig);
                continue;
            }
            let Some(&(field, name)) = Field::ALL.iter().find(|(_, n)| *n == key) else {
                continue;
            };
            if seen.contains(&field) {
                return Err(NarInfoError::Duplicate { field: name, line });
            }
            seen.push(field);
            if value.is_empty() && field != Field::References {
                return Err(NarInfoError::Empty { field: name, line });
            }
            let path = |v: &str| {
                StorePath::parse(v).map_err(|source| NarInfoError::BadPath {
                    field: name,
                    line,
                    source,
                })
            };
            let hash = |v: &str| {
                NixHash::parse(v).map_err(|source| NarInfoError::BadHash {
                    field: name,
                    line,
                    source,
                })
            };
            let number = |v: &str| {
                // u64::from_str accepts a leading `+`; Nix's numbers never have one.
                v.bytes()
                    .all(|c| c.is_ascii_digit())
                    .then(|| v.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| NarInfoError::BadNumber {
                        field: name,
                        line,
                        value: preview(v),
                    })
            };
            match field {
                Field::StorePath => store_path = Some(path(value)?),
                Field::Url => url = Some(value.to_owned()),
                Field::Compression => {
                    compression = Some(
                        value
                            .parse::<Compression>()
                            .map_err(|source| NarInfoError::BadCompression { line, source })?,
                    )
                }
                Field::FileHash => file_hash = Some(hash(value)?),
                Field::FileSize => file_size = Some(number(value)?),
                Field::NarHash => nar_hash = Some(hash(value)?),
                Field::NarSize => nar_size = Some(number(value)?),
                Field::References => {
                    for basename in value.split_ascii_whitespace() {
                        references.push(StorePath::from_basename(basename).map_err(|source| {
                            NarInfoError::BadPath {
                                field: name,
                                line,
                                source,
                            }
                        })?);
                    }
                }
                Field::Deriver => {
                    // Nix writes `Deriver: unknown-deriver` when it has none.
                    if value != "unknown-deriver" {
                        deriver = Some(StorePath::from_basename(value).map_err(|source| {
                            NarInfoError::BadPath {
                                field: name,
                                line,
                                source,
                            }
                        })?)
                    }
                }
                Field::Ca => {
                    if !(value.starts_with("text:") || value.starts_with("fixed:")) {
                        return Err(NarInfoError::BadCa {
                            line,
                            value: preview(value),
                        });
                    }
                    ca = Some(value.to_owned());
                }
            }
        }
        references.sort();
        references.dedup();
        Ok(Self {
            store_path: store_path.ok_or(NarInfoError::Missing("StorePath"))?,
            url: url.ok_or(NarInfoError::Missing("URL"))?,
            compression: compression.unwrap_or(Compression::Bzip2),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or(NarInfoError::Missing("NarHash"))?,
            nar_size: nar_size.ok_or(NarInfoError::Missing("NarSize"))?,
            references,
            deriver,
            signatures,
            ca,
        })
    }

    /// Renders the narinfo byte for byte as Nix writes it, fields in the wire order.
    pub fn render(&self) -> String {
        self.to_string()
    }

    /// The text the path's signatures cover.
    pub fn fingerprint(&self) -> String {
        signature::fingerprint(
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Adds (or replaces) this key's signature.
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(&self.fingerprint());
        self.signatures.retain(|s| s.key_name() != key.name());
        self.signatures.push(sig);
    }

    /// Whether any signature verifies with any of `keys`.
    pub fn is_signed_by_any(&self, keys: &[PublicKey]) -> bool {
        let fp = self.fingerprint();
        self.signatures
            .iter()
            .any(|sig| keys.iter().any(|k| k.verify(&fp, sig)))
    }
}

impl fmt::Display for NarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}", self.store_path)?;
        writeln!(f, "URL: {}", self.url)?;
        writeln!(f, "Compression: {}", self.compression)?;
        if let Some(h) = &self.file_hash {
            writeln!(f, "FileHash: {h}")?;
        }
        if let Some(n) = self.file_size {
            writeln!(f, "FileSize: {n}")?;
        }
        writeln!(f, "NarHash: {}", self.nar_hash)?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        // Sorted here too, so a hand-built NarInfo renders canonically. Nix always writes
        // the line, with a trailing space when empty.
        let mut refs: Vec<&str> = self.references.iter().map(StorePath::basename).collect();
        refs.sort_unstable();
        refs.dedup();
        writeln!(f, "References: {}", refs.join(" "))?;
        if let Some(d) = &self.deriver {
            writeln!(f, "Deriver: {}", d.basename())?;
        }
        for sig in &self.signatures {
            writeln!(f, "Sig: {sig}")?;
        }
        if let Some(ca) = &self.ca {
            f.write_str("CA: ")?;
            f.write_str(ca)?;
            f.write_char('\n')?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "narinfo_tests.rs"]
mod tests;
