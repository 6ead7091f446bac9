//! `.ls` listings: the JSON tree of a NAR (`{"version":1,"root":{…}}`) that
//! `nix store ls` and the read path use to find a file without fetching the NAR.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::nar::{NarError, NarEvent, NarReader};

/// Why a listing could not be built or parsed.
#[derive(Debug, Error)]
pub enum ListingError {
    #[error("listing from NAR: {0}")]
    Nar(#[from] NarError),
    #[error("NAR {what} {bytes:?} is not UTF-8, which a JSON listing needs")]
    NotUtf8 { what: &'static str, bytes: String },
    #[error("listing events out of order: {0}")]
    Unbalanced(&'static str),
    #[error("listing JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("listing version {0} is not 1")]
    Version(u32),
}

/// A listing file: the version (always 1) and the root node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Format version; 1.
    pub version: u32,
    /// The store path's top node.
    pub root: ListingNode,
}

/// One node; field names and order as Nix writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ListingNode {
    /// A regular file.
    Regular {
        size: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        executable: bool,
        /// Where the contents start in the uncompressed NAR.
        #[serde(rename = "narOffset", default, skip_serializing_if = "Option::is_none")]
        nar_offset: Option<u64>,
    },
    /// A symlink.
    Symlink { target: String },
    /// A directory; entries in byte order of their names.
    Directory {
        entries: BTreeMap<String, ListingNode>,
    },
}

impl Listing {
    /// Reads a whole NAR and lists it.
    pub fn from_nar<R: Read>(nar: R) -> Result<Self, ListingError> {
        Self::from_nar_with(nar, ListingBuilder::default())
    }

    /// Like [`Listing::from_nar`], but names and symlink targets that are not UTF-8 are
    /// listed with U+FFFD in place of the bad bytes (see [`ListingBuilder::lossy`]).
    pub fn from_nar_lossy<R: Read>(nar: R) -> Result<Self, ListingError> {
        Self::from_nar_with(nar, ListingBuilder::lossy())
    }

    fn from_nar_with<R: Read>(nar: R, mut builder: ListingBuilder) -> Result<Self, ListingError> {
        let mut reader = NarReader::new(nar);
        while let Some(ev) = reader.next()? {
            builder.push(ev)?;
        }
        builder.finish()
    }

    /// Parses listing JSON.
    pub fn parse(json: &[u8]) -> Result<Self, ListingError> {
        let listing: Self = serde_json::from_slice(json)?;
        if listing.version != 1 {
            return Err(ListingError::Version(listing.version));
        }
        Ok(listing)
    }

    /// Renders the compact JSON Nix writes.
    pub fn to_json(&self) -> Result<String, ListingError> {
        Ok(serde_json::to_string(self)?)
    }
}

/// Builds a listing from NAR events as they stream past (e.g. while the NAR is uploaded).
#[derive(Debug, Default)]
pub struct ListingBuilder {
    /// Open directories: the entry name each has in its parent, and its entries so far.
    stack: Vec<(Option<String>, BTreeMap<String, ListingNode>)>,
    root: Option<ListingNode>,
    /// Replace bytes that are not UTF-8 instead of failing.
    lossy: bool,
}

impl ListingBuilder {
    /// A builder that lists names that are not UTF-8 with U+FFFD in place of the bad
    /// bytes rather than failing: a push declares every path's listing before reading
    /// it, and a listing is for browsing, never for checking contents.
    pub fn lossy() -> Self {
        Self {
            lossy: true,
            ..Self::default()
        }
    }

    fn text(&self, what: &'static str, bytes: Vec<u8>) -> Result<String, ListingError> {
        if self.lossy {
            return Ok(String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()));
        }
        utf8(what, bytes)
    }

    /// Takes the next event from a [`NarReader`].
    pub fn push(&mut self, event: NarEvent) -> Result<(), ListingError> {
        match event {
            NarEvent::Regular {
                name,
                executable,
                size,
                nar_offset,
            } => self.place(
                name,
                ListingNode::Regular {
                    size,
                    executable,
                    nar_offset: Some(nar_offset),
                },
            ),
            NarEvent::Symlink { name, target } => {
                let target = self.text("symlink target", target)?;
                self.place(name, ListingNode::Symlink { target })
            }
            NarEvent::Directory { name } => {
                if self.root.is_some() {
                    return Err(ListingError::Unbalanced("a node after the root ended"));
                }
                let name = name.map(|n| self.text("entry name", n)).transpose()?;
                self.stack.push((name, BTreeMap::new()));
                Ok(())
            }
            NarEvent::EndDirectory => {
                let (name, entries) = self
                    .stack
                    .pop()
                    .ok_or(ListingError::Unbalanced("end of a directory never opened"))?;
                self.place_utf8(name, ListingNode::Directory { entries })
            }
        }
    }

    /// The finished listing, once the root node has ended.
    pub fn finish(self) -> Result<Listing, ListingError> {
        match (self.root, self.stack.is_empty()) {
            (Some(root), true) => Ok(Listing { version: 1, root }),
            _ => Err(ListingError::Unbalanced("the NAR has not ended")),
        }
    }

    fn place(&mut self, name: Option<Vec<u8>>, node: ListingNode) -> Result<(), ListingError> {
        let name = name.map(|n| self.text("entry name", n)).transpose()?;
        self.place_utf8(name, node)
    }

    fn place_utf8(&mut self, name: Option<String>, node: ListingNode) -> Result<(), ListingError> {
        if self.root.is_some() {
            return Err(ListingError::Unbalanced("a node after the root ended"));
        }
        match (self.stack.last_mut(), name) {
            (None, None) => {
                self.root = Some(node);
                Ok(())
            }
            (Some((_, entries)), Some(name)) => {
                entries.insert(name, node);
                Ok(())
            }
            (None, Some(_)) => Err(ListingError::Unbalanced(
                "a named entry outside a directory",
            )),
            (Some(_), None) => Err(ListingError::Unbalanced(
                "an unnamed node inside a directory",
            )),
        }
    }
}

fn utf8(what: &'static str, bytes: Vec<u8>) -> Result<String, ListingError> {
    String::from_utf8(bytes).map_err(|e| ListingError::NotUtf8 {
        what,
        bytes: super::preview(&String::from_utf8_lossy(e.as_bytes())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::nar::NarWriter;

    fn sample_nar() -> Vec<u8> {
        // The tree `nix nar ls --json -R` was run on (Nix 2.8): a, e/, empty, l -> a, x.
        let mut w = NarWriter::new(Vec::new()).unwrap();
        w.start_directory().unwrap();
        w.entry(b"a").unwrap();
        w.regular(false, 2).unwrap();
        w.contents(b"hi").unwrap();
        w.entry(b"e").unwrap();
        w.start_directory().unwrap();
        w.end_directory().unwrap();
        w.entry(b"empty").unwrap();
        w.regular(false, 0).unwrap();
        w.entry(b"l").unwrap();
        w.symlink(b"a").unwrap();
        w.entry(b"x").unwrap();
        w.regular(true, 10).unwrap();
        w.contents(b"#!/bin/sh\n").unwrap();
        w.end_directory().unwrap();
        w.finish().unwrap()
    }

    const NIX_LS: &str = r##"{"type":"directory","entries":{"a":{"type":"regular","size":2,"narOffset":232},"e":{"type":"directory","entries":{}},"empty":{"type":"regular","size":0,"narOffset":592},"l":{"type":"symlink","target":"a"},"x":{"type":"regular","size":10,"executable":true,"narOffset":1000}}}"##;

    #[test]
    fn matches_nix_nar_ls_byte_for_byte() {
        let listing = Listing::from_nar(sample_nar().as_slice()).unwrap();
        let json = listing.to_json().unwrap();
        assert_eq!(json, format!("{{\"version\":1,\"root\":{NIX_LS}}}"));
        assert_eq!(Listing::parse(json.as_bytes()).unwrap(), listing);
    }

    #[test]
    fn lists_a_single_file_like_nix_copy_does() {
        // `nix copy --to file://…?write-nar-listing=true` wrote this for a 107-byte file.
        let nix = r#"{"version":1,"root":{"type":"regular","size":107,"narOffset":96}}"#;
        let mut w = NarWriter::new(Vec::new()).unwrap();
        w.regular(false, 107).unwrap();
        w.contents(&[b'x'; 107]).unwrap();
        let listing = Listing::from_nar(w.finish().unwrap().as_slice()).unwrap();
        assert_eq!(listing.to_json().unwrap(), nix);
    }

    #[test]
    fn rejects_what_json_cannot_hold_and_bad_input() {
        let mut w = NarWriter::new(Vec::new()).unwrap();
        w.start_directory().unwrap();
        w.entry(b"\xff").unwrap();
        w.symlink(b"a").unwrap();
        w.end_directory().unwrap();
        let nar = w.finish().unwrap();
        assert!(matches!(
            Listing::from_nar(nar.as_slice()),
            Err(ListingError::NotUtf8 {
                what: "entry name",
                ..
            })
        ));
        // A push lists it anyway, the bad byte replaced.
        let lossy = Listing::from_nar_lossy(nar.as_slice()).unwrap();
        let expected = r#"{"version":1,"root":{"type":"directory","entries":{"?":{"type":"symlink","target":"a"}}}}"#;
        assert_eq!(lossy.to_json().unwrap(), expected.replace('?', "\u{fffd}"));
        assert!(matches!(
            Listing::from_nar(&b"x"[..]),
            Err(ListingError::Nar(_))
        ));
        assert!(matches!(
            Listing::parse(br#"{"version":2,"root":{"type":"symlink","target":"a"}}"#),
            Err(ListingError::Version(2))
        ));
        assert!(matches!(Listing::parse(b"{"), Err(ListingError::Json(_))));
    }

    #[test]
    fn builder_rejects_unbalanced_events() {
        let mut b = ListingBuilder::default();
        assert!(b.push(NarEvent::EndDirectory).is_err());
        let mut b = ListingBuilder::default();
        b.push(NarEvent::Directory { name: None }).unwrap();
        assert!(matches!(b.finish(), Err(ListingError::Unbalanced(_))));
        let mut b = ListingBuilder::default();
        b.push(NarEvent::Symlink {
            name: None,
            target: b"a".to_vec(),
        })
        .unwrap();
        assert!(b
            .push(NarEvent::Symlink {
                name: None,
                target: b"a".to_vec()
            })
            .is_err());
    }
}
