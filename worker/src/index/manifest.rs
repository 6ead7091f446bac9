//! The index manifest, as `Index*` lines of `nix-cache-info` and as `manifest.json`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::hash::{Depth, HASH_BITS};
use crate::nix::base32::ALPHABET;

/// The only index version.
pub const VERSION: u64 = 1;
/// The only index format.
pub const FORMAT: &str = "hlssi";
/// The only compression for shards and deltas.
pub const COMPRESSION: &str = "zstd";
/// The encoding type named in manifest.json.
pub const ENCODING: &str = "golomb-rice";

/// Why a manifest is not valid.
#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("index version {0} is not supported (only 1)")]
    Version(String),
    #[error("index format {0:?} is not hlssi")]
    Format(String),
    #[error("nix-cache-info lacks {0}")]
    Missing(&'static str),
    #[error("nix-cache-info has {0} twice")]
    Duplicate(String),
    #[error("{key}: {value:?} is not valid: {reason}")]
    Value {
        key: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("manifest JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Everything a client needs to read the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// When this manifest was generated (rendered in UTC).
    pub created_at: OffsetDateTime,
    /// Items across all shards of the current epoch (informational).
    pub item_count: u64,
    /// Sharding depth.
    pub depth: Depth,
    /// k of the largest shard (informational: each shard carries its own).
    pub encoding_parameter: u8,
    /// Absolute URL of the journal folder, ending in `/`.
    pub journal_base: String,
    /// Absolute URL of the shards folder, ending in `/`.
    pub shards_base: String,
    /// Absolute URL of the deltas folder, ending in `/`.
    pub deltas_base: String,
    /// Id of the segment being written.
    pub journal_current_segment: u64,
    /// How many older segments a client reads besides the current one.
    pub journal_retention_count: u64,
    /// Seconds between segment ids (Larder's addition).
    pub journal_segment_duration_seconds: u64,
    /// Current epoch (≥ 1).
    pub epoch_current: u64,
    /// Previous epoch (0 = none).
    pub epoch_previous: u64,
    /// Whether deltas are published.
    pub deltas_enabled: bool,
    /// Oldest epoch deltas start from.
    pub deltas_oldest_base: u64,
}

fn bad(key: &'static str, value: impl ToString, reason: &'static str) -> ManifestError {
    ManifestError::Value {
        key,
        value: value.to_string().chars().take(200).collect(),
        reason,
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), ManifestError> {
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok || !url.ends_with('/') || url.chars().any(|c| c.is_whitespace()) {
        return Err(bad(key, url, "must be an absolute http(s) URL ending in /"));
    }
    Ok(())
}

impl Manifest {
    /// Checks the relations between fields that the types do not.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_url("IndexJournalBase", &self.journal_base)?;
        check_url("IndexShardsBase", &self.shards_base)?;
        check_url("IndexDeltasBase", &self.deltas_base)?;
        if self.epoch_current == 0 {
            return Err(bad("IndexEpochCurrent", 0, "epochs start at 1"));
        }
        if self.epoch_previous >= self.epoch_current {
            return Err(bad(
                "IndexEpochPrevious",
                self.epoch_previous,
                "must be below the current epoch",
            ));
        }
        if self.deltas_oldest_base > self.epoch_current {
            return Err(bad(
                "IndexDeltasOldestBase",
                self.deltas_oldest_base,
                "is after the current epoch",
            ));
        }
        let d = self.journal_segment_duration_seconds;
        if d == 0 {
            return Err(bad("IndexJournalSegmentDurationSeconds", 0, "must be ≥ 1"));
        }
        if !self.journal_current_segment.is_multiple_of(d) {
            return Err(bad(
                "IndexJournalCurrentSegment",
                self.journal_current_segment,
                "is not a multiple of the segment duration",
            ));
        }
        if self.encoding_parameter as u32 > self.depth.suffix_bits() {
            return Err(bad(
                "IndexEncodingParameter",
                self.encoding_parameter,
                "is larger than the suffix bits",
            ));
        }
        Ok(())
    }

    fn created_at_string(&self) -> String {
        // Formatting a valid UTC date as RFC 3339 fails only for years past 9999.
        self.created_at
            .to_offset(UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default()
    }

    /// The `Index*` lines for `nix-cache-info`, each ending in a newline.
    pub fn to_cache_info(&self) -> String {
        let fields: [(&str, String); 17] = [
            ("IndexVersion", VERSION.to_string()),
            ("IndexFormat", FORMAT.to_owned()),
            ("IndexCreatedAt", self.created_at_string()),
            ("IndexItemCount", self.item_count.to_string()),
            ("IndexShardingDepth", self.depth.to_string()),
            (
                "IndexEncodingParameter",
                self.encoding_parameter.to_string(),
            ),
            ("IndexJournalBase", self.journal_base.clone()),
            ("IndexShardsBase", self.shards_base.clone()),
            ("IndexDeltasBase", self.deltas_base.clone()),
            (
                "IndexJournalCurrentSegment",
                self.journal_current_segment.to_string(),
            ),
            (
                "IndexJournalRetentionCount",
                self.journal_retention_count.to_string(),
            ),
            (
                "IndexJournalSegmentDurationSeconds",
                self.journal_segment_duration_seconds.to_string(),
            ),
            ("IndexEpochCurrent", self.epoch_current.to_string()),
            ("IndexEpochPrevious", self.epoch_previous.to_string()),
            ("IndexDeltasEnabled", self.deltas_enabled.to_string()),
            ("IndexDeltasOldestBase", self.deltas_oldest_base.to_string()),
            ("IndexDeltasCompression", COMPRESSION.to_owned()),
        ];
        let mut out = String::new();
        for (k, v) in &fields {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(v);
            out.push('\n');
        }
        out
    }

    /// Reads the `Index*` keys of a `nix-cache-info` file (other keys are ignored, as Nix does).
    pub fn from_cache_info(text: &str) -> Result<Self, ManifestError> {
        let mut keys: HashMap<&str, &str> = HashMap::new();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let k = k.trim();
            if !k.starts_with("Index") {
                continue;
            }
            if keys.insert(k, v.trim()).is_some() {
                return Err(ManifestError::Duplicate(k.chars().take(64).collect()));
            }
        }
        let get = |k: &'static str| keys.get(k).copied().ok_or(ManifestError::Missing(k));
        let num = |k: &'static str| -> Result<u64, ManifestError> {
            let v = get(k)?;
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(k, v, "is not a decimal number"));
            }
            v.parse().map_err(|_| bad(k, v, "is too large"))
        };
        let version = get("IndexVersion")?;
        if version != "1" {
            return Err(ManifestError::Version(version.chars().take(32).collect()));
        }
        let format = get("IndexFormat")?;
        if format != FORMAT {
            return Err(ManifestError::Format(format.chars().take(32).collect()));
        }
        let compression = get("IndexDeltasCompression")?;
        if compression != COMPRESSION {
            return Err(bad("IndexDeltasCompression", compression, "must be zstd"));
        }
        let enabled = get("IndexDeltasEnabled")?;
        let deltas_enabled = match enabled {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(bad("IndexDeltasEnabled", enabled, "must be true or false")),
        };
        let created = get("IndexCreatedAt")?;
        let depth = num("IndexShardingDepth")?;
        let k = num("IndexEncodingParameter")?;
        let m = Manifest {
            created_at: OffsetDateTime::parse(created, &Rfc3339)
                .map_err(|_| bad("IndexCreatedAt", created, "is not an RFC 3339 time"))?,
            item_count: num("IndexItemCount")?,
            depth: Depth::new(depth).map_err(|_| bad("IndexShardingDepth", depth, "not 0..=4"))?,
            encoding_parameter: u8::try_from(k)
                .map_err(|_| bad("IndexEncodingParameter", k, "is above 160"))?,
            journal_base: get("IndexJournalBase")?.to_owned(),
            shards_base: get("IndexShardsBase")?.to_owned(),
            deltas_base: get("IndexDeltasBase")?.to_owned(),
            journal_current_segment: num("IndexJournalCurrentSegment")?,
            journal_retention_count: num("IndexJournalRetentionCount")?,
            journal_segment_duration_seconds: num("IndexJournalSegmentDurationSeconds")?,
            epoch_current: num("IndexEpochCurrent")?,
            epoch_previous: num("IndexEpochPrevious")?,
            deltas_enabled,
            deltas_oldest_base: num("IndexDeltasOldestBase")?,
        };
        m.validate()?;
        Ok(m)
    }

    /// `manifest.json` in the RFC's shape.
    pub fn to_json(&self) -> String {
        let j = Json {
            version: VERSION,
            format: FORMAT.to_owned(),
            created_at: self.created_at_string(),
            item_count: self.item_count,
            sharding: Sharding {
                depth: self.depth.get() as u64,
                alphabet: String::from_utf8_lossy(ALPHABET).into_owned(),
            },
            encoding: Encoding {
                kind: ENCODING.to_owned(),
                parameter: self.encoding_parameter as u64,
                hash_bits: HASH_BITS as u64,
                prefix_bits: self.depth.prefix_bits() as u64,
            },
            urls: Urls {
                journal_base: self.journal_base.clone(),
                shards_base: self.shards_base.clone(),
                deltas_base: self.deltas_base.clone(),
            },
            journal: Journal {
                current_segment: self.journal_current_segment,
                segment_duration_seconds: self.journal_segment_duration_seconds,
                retention_count: self.journal_retention_count,
            },
            epoch: Epoch {
                current: self.epoch_current,
                previous: self.epoch_previous,
            },
            deltas: Deltas {
                enabled: self.deltas_enabled,
                oldest_base: self.deltas_oldest_base,
                compression: COMPRESSION.to_owned(),
            },
        };
        // Plain strings, numbers and booleans always serialise.
        serde_json::to_string_pretty(&j).unwrap_or_default()
    }

    /// Parses and checks `manifest.json`.
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        let j: Json = serde_json::from_str(text)?;
        if j.version != VERSION {
            return Err(ManifestError::Version(j.version.to_string()));
        }
        if j.format != FORMAT {
            return Err(ManifestError::Format(j.format.chars().take(32).collect()));
        }
        let depth = Depth::new(j.sharding.depth)
            .map_err(|_| bad("sharding.depth", j.sharding.depth, "not 0..=4"))?;
        if j.sharding.alphabet.as_bytes() != ALPHABET {
            return Err(bad(
                "sharding.alphabet",
                &j.sharding.alphabet,
                "not nix-base32",
            ));
        }
        let e = &j.encoding;
        if e.kind != ENCODING {
            return Err(bad("encoding.type", &e.kind, "must be golomb-rice"));
        }
        if e.hash_bits != HASH_BITS as u64 {
            return Err(bad("encoding.hash_bits", e.hash_bits, "must be 160"));
        }
        if e.prefix_bits != depth.prefix_bits() as u64 {
            return Err(bad(
                "encoding.prefix_bits",
                e.prefix_bits,
                "must be 5·depth",
            ));
        }
        if j.deltas.compression != COMPRESSION {
            return Err(bad(
                "deltas.compression",
                &j.deltas.compression,
                "must be zstd",
            ));
        }
        let m = Manifest {
            created_at: OffsetDateTime::parse(&j.created_at, &Rfc3339)
                .map_err(|_| bad("created_at", &j.created_at, "is not an RFC 3339 time"))?,
            item_count: j.item_count,
            depth,
            encoding_parameter: u8::try_from(e.parameter)
                .map_err(|_| bad("encoding.parameter", e.parameter, "is above 160"))?,
            journal_base: j.urls.journal_base,
            shards_base: j.urls.shards_base,
            deltas_base: j.urls.deltas_base,
            journal_current_segment: j.journal.current_segment,
            journal_retention_count: j.journal.retention_count,
            journal_segment_duration_seconds: j.journal.segment_duration_seconds,
            epoch_current: j.epoch.current,
            epoch_previous: j.epoch.previous,
            deltas_enabled: j.deltas.enabled,
            deltas_oldest_base: j.deltas.oldest_base,
        };
        m.validate()?;
        Ok(m)
    }
}

#[derive(Serialize, Deserialize)]
struct Json {
    version: u64,
    format: String,
    created_at: String,
    item_count: u64,
    sharding: Sharding,
    encoding: Encoding,
    urls: Urls,
    journal: Journal,
    epoch: Epoch,
    deltas: Deltas,
}

#[derive(Serialize, Deserialize)]
struct Sharding {
    depth: u64,
    alphabet: String,
}

#[derive(Serialize, Deserialize)]
struct Encoding {
    #[serde(rename = "type")]
    kind: String,
    parameter: u64,
    hash_bits: u64,
    prefix_bits: u64,
}

#[derive(Serialize, Deserialize)]
struct Urls {
    journal_base: String,
    shards_base: String,
    deltas_base: String,
}

#[derive(Serialize, Deserialize)]
struct Journal {
    current_segment: u64,
    segment_duration_seconds: u64,
    retention_count: u64,
}

#[derive(Serialize, Deserialize)]
struct Epoch {
    current: u64,
    previous: u64,
}

#[derive(Serialize, Deserialize)]
struct Deltas {
    enabled: bool,
    oldest_base: u64,
    compression: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            created_at: OffsetDateTime::parse("2026-01-13T12:00:00Z", &Rfc3339).unwrap(),
            item_count: 1_200_000,
            depth: Depth::new(2).unwrap(),
            encoding_parameter: 137,
            journal_base: "https://cache.example.com/nix-cache-index/journal/".into(),
            shards_base: "https://cache.example.com/nix-cache-index/shards/".into(),
            deltas_base: "https://cache.example.com/nix-cache-index/deltas/".into(),
            journal_current_segment: 1_705_147_200,
            journal_retention_count: 12,
            journal_segment_duration_seconds: 300,
            epoch_current: 42,
            epoch_previous: 41,
            deltas_enabled: true,
            deltas_oldest_base: 35,
        }
    }

    const CACHE_INFO: &str = "\
IndexVersion: 1
IndexFormat: hlssi
IndexCreatedAt: 2026-01-13T12:00:00Z
IndexItemCount: 1200000
IndexShardingDepth: 2
IndexEncodingParameter: 137
IndexJournalBase: https://cache.example.com/nix-cache-index/journal/
IndexShardsBase: https://cache.example.com/nix-cache-index/shards/
IndexDeltasBase: https://cache.example.com/nix-cache-index/deltas/
IndexJournalCurrentSegment: 1705147200
IndexJournalRetentionCount: 12
IndexJournalSegmentDurationSeconds: 300
IndexEpochCurrent: 42
IndexEpochPrevious: 41
IndexDeltasEnabled: true
IndexDeltasOldestBase: 35
IndexDeltasCompression: zstd
";

    #[test]
    fn renders_cache_info_lines() {
        assert_eq!(sample().to_cache_info(), CACHE_INFO);
        let full = format!("StoreDir: /nix/store\nWantMassQuery: 1\n{CACHE_INFO}Priority: 40\n");
        assert_eq!(Manifest::from_cache_info(&full).unwrap(), sample());
    }

    #[test]
    fn renders_rfc_json_shape() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["format"], "hlssi");
        assert_eq!(v["created_at"], "2026-01-13T12:00:00Z");
        assert_eq!(v["item_count"], 1_200_000);
        assert_eq!(v["sharding"]["depth"], 2);
        assert_eq!(
            v["sharding"]["alphabet"],
            "0123456789abcdfghijklmnpqrsvwxyz"
        );
        assert_eq!(v["encoding"]["type"], "golomb-rice");
        assert_eq!(v["encoding"]["parameter"], 137);
        assert_eq!(v["encoding"]["hash_bits"], 160);
        assert_eq!(v["encoding"]["prefix_bits"], 10);
        assert_eq!(
            v["urls"]["shards_base"],
            "https://cache.example.com/nix-cache-index/shards/"
        );
        assert_eq!(v["journal"]["current_segment"], 1_705_147_200u64);
        assert_eq!(v["journal"]["segment_duration_seconds"], 300);
        assert_eq!(v["journal"]["retention_count"], 12);
        assert_eq!(v["epoch"]["current"], 42);
        assert_eq!(v["epoch"]["previous"], 41);
        assert_eq!(v["deltas"]["enabled"], true);
        assert_eq!(v["deltas"]["oldest_base"], 35);
        assert_eq!(v["deltas"]["compression"], "zstd");
        assert_eq!(Manifest::from_json(&sample().to_json()).unwrap(), sample());
    }

    #[test]
    fn rejects_bad_cache_info() {
        let cases = [
            ("IndexVersion: 1", "IndexVersion: 2"),
            ("IndexFormat: hlssi", "IndexFormat: bloom"),
            ("IndexShardingDepth: 2", "IndexShardingDepth: 5"),
            ("IndexShardingDepth: 2", "IndexShardingDepth: -1"),
            ("IndexEncodingParameter: 137", "IndexEncodingParameter: 151"),
            ("IndexEpochCurrent: 42", "IndexEpochCurrent: 0"),
            ("IndexEpochPrevious: 41", "IndexEpochPrevious: 42"),
            (
                "IndexItemCount: 1200000",
                "IndexItemCount: 99999999999999999999999",
            ),
            (
                "IndexCreatedAt: 2026-01-13T12:00:00Z",
                "IndexCreatedAt: yesterday",
            ),
            ("IndexDeltasEnabled: true", "IndexDeltasEnabled: yes"),
            ("IndexDeltasCompression: zstd", "IndexDeltasCompression: xz"),
            ("deltas/\n", "deltas\n"),
            (
                "https://cache.example.com/nix-cache-index/shards/",
                "/shards/",
            ),
            (
                "IndexJournalCurrentSegment: 1705147200",
                "IndexJournalCurrentSegment: 1705147201",
            ),
            ("IndexJournalSegmentDurationSeconds: 300\n", ""),
            (
                "IndexJournalRetentionCount: 12",
                "IndexJournalRetentionCount: 12\nIndexJournalRetentionCount: 13",
            ),
        ];
        for (from, to) in cases {
            let text = CACHE_INFO.replace(from, to);
            assert_ne!(text, CACHE_INFO, "{from}");
            assert!(Manifest::from_cache_info(&text).is_err(), "{to}");
        }
        assert!(matches!(
            Manifest::from_cache_info("StoreDir: /nix/store\n"),
            Err(ManifestError::Missing("IndexVersion"))
        ));
    }

    #[test]
    fn rejects_bad_json() {
        let good = sample().to_json();
        let cases = [
            ("\"version\": 1", "\"version\": 2"),
            ("\"hlssi\"", "\"HLSSI\""),
            ("\"golomb-rice\"", "\"golomb\""),
            ("\"hash_bits\": 160", "\"hash_bits\": 128"),
            ("\"prefix_bits\": 10", "\"prefix_bits\": 5"),
            ("\"zstd\"", "\"gzip\""),
            ("\"depth\": 2", "\"depth\": 9"),
            ("\"current\": 42", "\"current\": 0"),
            (
                "0123456789abcdfghijklmnpqrsvwxyz",
                "0123456789abcdefghijklmnopqrstuv",
            ),
        ];
        for (from, to) in cases {
            let text = good.replace(from, to);
            assert_ne!(text, good, "{from}");
            assert!(Manifest::from_json(&text).is_err(), "{to}");
        }
        assert!(Manifest::from_json("{}").is_err());
        assert!(Manifest::from_json("").is_err());
    }
}
