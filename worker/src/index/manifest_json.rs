//! `nix-cache-index/manifest.json`: the manifest in the RFC's JSON shape.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::hash::{Depth, HASH_BITS};
use super::manifest::{bad, Manifest, ManifestError, COMPRESSION, ENCODING, FORMAT, VERSION};
use crate::nix::base32::ALPHABET;

impl Manifest {
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
mod tests {
    use super::*;
    use crate::index::manifest::tests::sample;

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
