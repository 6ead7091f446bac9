//! The index manifest, and its `Index*` lines in `nix-cache-info` (JSON: `manifest_json`).

use std::collections::HashMap;

use thiserror::Error;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::hash::Depth;
use super::journal::MAX_RETENTION;

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

pub(crate) fn bad(key: &'static str, value: impl ToString, reason: &'static str) -> ManifestError {
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
        if self.journal_retention_count > MAX_RETENTION {
            return Err(bad(
                "IndexJournalRetentionCount",
                self.journal_retention_count,
                "is above 4096",
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

    pub(crate) fn created_at_string(&self) -> String {
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
    fn rejects_bad_cache_info() {
        let cases = [
            ("IndexVersion: 1", "IndexVersion: 2"),
            ("IndexFormat: hlssi", "IndexFormat: bloom"),
            ("IndexShardingDepth: 2", "IndexShardingDepth: 5"),
            ("IndexShardingDepth: 2", "IndexShardingDepth: -1"),
            ("IndexEncodingParameter: 137", "IndexEncodingParameter: 151"),
            ("IndexEpochCurrent: 42", "IndexEpochCurrent: 0"),
            (
                "IndexJournalRetentionCount: 12",
                "IndexJournalRetentionCount: 4097",
            ),
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
}
