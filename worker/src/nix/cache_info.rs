//! `nix-cache-info`: the cache's store dir, mass-query hint, priority, and whatever
//! further lines the server adds (the binary cache index writes its `Index*` lines here).

use std::fmt;

use thiserror::Error;

use super::preview;
use super::store_path::STORE_DIR;

/// Largest `nix-cache-info` accepted.
pub const MAX_CACHE_INFO_LEN: usize = 64 * 1024;

/// Why a `nix-cache-info` could not be parsed or extended.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CacheInfoError {
    #[error("nix-cache-info is {len} bytes; at most {MAX_CACHE_INFO_LEN} are accepted")]
    TooLarge { len: usize },
    #[error("nix-cache-info line {line}: {text:?} is not `Key: value`")]
    MalformedLine { line: usize, text: String },
    #[error("nix-cache-info line {line}: {key} appears a second time")]
    Duplicate { key: String, line: usize },
    #[error("nix-cache-info line {line}: {key} {value:?} is invalid")]
    BadValue {
        key: &'static str,
        line: usize,
        value: String,
    },
    #[error(
        "nix-cache-info key {0:?} is empty, reserved or has `:`, whitespace or control characters"
    )]
    BadKey(String),
    #[error("nix-cache-info value {0:?} has a newline or control character")]
    BadExtraValue(String),
}

/// The contents of `nix-cache-info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    /// Store directory the cache's paths live in.
    pub store_dir: String,
    /// Whether clients may query many paths at once.
    pub want_mass_query: bool,
    /// Substituter priority (lower wins; cache.nixos.org is 40).
    pub priority: Option<u32>,
    /// Other lines, kept in order.
    extra: Vec<(String, String)>,
}

const KNOWN: [&str; 3] = ["StoreDir", "WantMassQuery", "Priority"];

impl Default for CacheInfo {
    /// What Larder serves: `/nix/store`, mass query on, priority 30.
    fn default() -> Self {
        Self {
            store_dir: STORE_DIR.to_owned(),
            want_mass_query: true,
            priority: Some(30),
            extra: Vec::new(),
        }
    }
}

impl CacheInfo {
    /// Parses the file; absent fields take Nix's defaults (`/nix/store`, no mass query,
    /// no priority), unknown keys are kept.
    pub fn parse(input: &str) -> Result<Self, CacheInfoError> {
        if input.len() > MAX_CACHE_INFO_LEN {
            return Err(CacheInfoError::TooLarge { len: input.len() });
        }
        let mut info = Self {
            store_dir: STORE_DIR.to_owned(),
            want_mass_query: false,
            priority: None,
            extra: Vec::new(),
        };
        let mut seen: Vec<&str> = Vec::new();
        for (i, text) in input.lines().enumerate() {
            let line = i + 1;
            if text.trim().is_empty() {
                continue;
            }
            let (key, value) =
                text.split_once(':')
                    .ok_or_else(|| CacheInfoError::MalformedLine {
                        line,
                        text: preview(text),
                    })?;
            let value = value.trim();
            if seen.contains(&key) {
                return Err(CacheInfoError::Duplicate {
                    key: preview(key),
                    line,
                });
            }
            seen.push(key);
            let bad = |key| CacheInfoError::BadValue {
                key,
                line,
                value: preview(value),
            };
            match key {
                "StoreDir" => {
                    if !value.starts_with('/') {
                        return Err(bad("StoreDir"));
                    }
                    info.store_dir = value.to_owned();
                }
                "WantMassQuery" => {
                    info.want_mass_query = match value {
                        "1" => true,
                        "0" => false,
                        _ => return Err(bad("WantMassQuery")),
                    }
                }
                "Priority" => {
                    let ok = value.bytes().all(|c| c.is_ascii_digit());
                    info.priority = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|_| ok)
                            .ok_or_else(|| bad("Priority"))?,
                    );
                }
                _ => info.extra.push((key.to_owned(), value.to_owned())),
            }
        }
        Ok(info)
    }

    /// The value of an extra line.
    pub fn extra(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every extra line, in order.
    pub fn extras(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets an extra line (replacing one with the same key, else appending).
    pub fn set_extra(&mut self, key: &str, value: &str) -> Result<(), CacheInfoError> {
        let key_ok = !key.is_empty()
            && !KNOWN.contains(&key)
            && !key
                .chars()
                .any(|c| c == ':' || c.is_whitespace() || c.is_control());
        if !key_ok {
            return Err(CacheInfoError::BadKey(preview(key)));
        }
        if value.chars().any(char::is_control) || value.trim() != value {
            return Err(CacheInfoError::BadExtraValue(preview(value)));
        }
        match self.extra.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.extra.push((key.to_owned(), value.to_owned())),
        }
        Ok(())
    }

    /// Removes an extra line, returning its value.
    pub fn remove_extra(&mut self, key: &str) -> Option<String> {
        let i = self.extra.iter().position(|(k, _)| k == key)?;
        Some(self.extra.remove(i).1)
    }

    /// Renders the file.
    pub fn render(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for CacheInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StoreDir: {}", self.store_dir)?;
        writeln!(f, "WantMassQuery: {}", u8::from(self.want_mass_query))?;
        if let Some(p) = self.priority {
            writeln!(f, "Priority: {p}")?;
        }
        for (k, v) in &self.extra {
            writeln!(f, "{k}: {v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn default_is_what_the_wire_doc_gives() {
        assert_eq!(
            CacheInfo::default().render(),
            "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n"
        );
    }

    #[test]
    fn parses_nix_copy_output_and_round_trips_extras() {
        // `nix copy --to file://…` writes only the store dir.
        let info = CacheInfo::parse("StoreDir: /nix/store\n").unwrap();
        assert_eq!(info.store_dir, "/nix/store");
        assert!(!info.want_mass_query);
        assert_eq!(info.priority, None);

        let text = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\nIndexVersion: 1\nIndexShards: 256\n";
        let mut info = CacheInfo::parse(text).unwrap();
        assert_eq!(info.render(), text);
        assert_eq!(info.extra("IndexShards"), Some("256"));
        info.set_extra("IndexShards", "512").unwrap();
        info.set_extra("IndexRoot", "nix-cache-index/v1").unwrap();
        assert_eq!(
            info.extras().collect::<Vec<_>>(),
            [
                ("IndexVersion", "1"),
                ("IndexShards", "512"),
                ("IndexRoot", "nix-cache-index/v1")
            ]
        );
        assert_eq!(info.remove_extra("IndexVersion").as_deref(), Some("1"));
        assert_eq!(info.remove_extra("IndexVersion"), None);
        assert_eq!(CacheInfo::parse(&info.render()).unwrap(), info);
    }

    #[test]
    fn rejects_bad_input() {
        use CacheInfoError::*;
        assert!(matches!(
            CacheInfo::parse("oops"),
            Err(MalformedLine { line: 1, .. })
        ));
        assert!(matches!(
            CacheInfo::parse("Priority: 1\nPriority: 2\n"),
            Err(Duplicate { line: 2, .. })
        ));
        for bad in [
            "Priority: -1",
            "Priority: x",
            "Priority: +3",
            "WantMassQuery: yes",
            "StoreDir: nix",
        ] {
            assert!(
                matches!(CacheInfo::parse(bad), Err(BadValue { .. })),
                "{bad}"
            );
        }
        let big = "X: y\n".repeat(MAX_CACHE_INFO_LEN);
        assert!(matches!(CacheInfo::parse(&big), Err(TooLarge { .. })));
        let mut info = CacheInfo::default();
        for key in ["", "Priority", "a:b", "a b", "a\nb"] {
            assert!(
                matches!(info.set_extra(key, "v"), Err(BadKey(_))),
                "{key:?}"
            );
        }
        assert!(matches!(
            info.set_extra("K", "a\nPriority: 1"),
            Err(BadExtraValue(_))
        ));
        assert!(matches!(
            info.set_extra("K", " padded"),
            Err(BadExtraValue(_))
        ));
    }

    proptest! {
        #[test]
        fn never_panics(text in "[ -~\n]{0,200}") {
            if let Ok(info) = CacheInfo::parse(&text) {
                prop_assert_eq!(CacheInfo::parse(&info.render()).unwrap(), info);
            }
        }
    }
}
