//! Dumps a filesystem path as a NAR, byte-identical to `nix-store --dump`.
//!
//! This is the I/O edge of the NAR writer: it walks the tree (never following symlinks)
//! and streams each file through in fixed-size chunks, so memory stays flat. The same walk
//! lists the tree (`.ls`), so a push never parses the NAR it has just written.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::nix::listing::{Listing, ListingBuilder, ListingError};
use crate::nix::nar::{NarError, NarEvent, NarWriter};

/// Size of the buffer file contents are read through.
const CHUNK: usize = 64 * 1024;

/// Why a path could not be dumped.
#[derive(Debug, Error)]
pub enum DumpError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is a socket, FIFO or device, which a NAR cannot hold")]
    Unsupported { path: PathBuf },
    #[error("{path} changed size while being dumped ({expected} bytes when listed)")]
    Changed { path: PathBuf, expected: u64 },
    #[error("writing the NAR of {path}: {source}")]
    Nar { path: PathBuf, source: NarError },
    #[error("listing {path}: {source}")]
    Listing { path: PathBuf, source: ListingError },
}

/// Writes the NAR of `path` to `out` and returns `out`.
pub fn dump_path<W: Write>(path: &Path, out: W) -> Result<W, DumpError> {
    dump_path_listed(path, out, ListingBuilder::default()).map(|(out, _)| out)
}

/// Writes the NAR of `path` to `out` and lists it with `listing` on the way; returns `out`
/// and the listing (narOffsets included).
pub fn dump_path_listed<W: Write>(
    path: &Path,
    out: W,
    listing: ListingBuilder,
) -> Result<(W, Listing), DumpError> {
    let mut walk = Walk {
        nar: NarWriter::new(out).map_err(nar_err(path))?,
        listing,
        buf: vec![0u8; CHUNK],
    };
    walk.node(path, None)?;
    let Walk { nar, listing, .. } = walk;
    let listing = listing.finish().map_err(listing_err(path))?;
    Ok((nar.finish().map_err(nar_err(path))?, listing))
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> DumpError + '_ {
    move |source| DumpError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// One dump in progress: the NAR being written, the listing being built, a read buffer.
struct Walk<W> {
    nar: NarWriter<W>,
    listing: ListingBuilder,
    buf: Vec<u8>,
}

impl<W: Write> Walk<W> {
    /// Dumps the node at `path`, which is entry `name` of its directory (`None`: the root).
    fn node(&mut self, path: &Path, name: Option<Vec<u8>>) -> Result<(), DumpError> {
        let meta = fs::symlink_metadata(path).map_err(read_err(path))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(read_err(path))?;
            let target = target.into_os_string().into_vec();
            self.nar.symlink(&target).map_err(nar_err(path))?;
            self.list(path, NarEvent::Symlink { name, target })
        } else if ft.is_file() {
            // Nix marks a file executable when its owner may execute it.
            let executable = meta.permissions().mode() & 0o100 != 0;
            self.file(path, name, executable, meta.len())
        } else if ft.is_dir() {
            let mut names: Vec<Vec<u8>> = fs::read_dir(path)
                .map_err(read_err(path))?
                .map(|e| e.map(|e| e.file_name().into_vec()))
                .collect::<Result<_, _>>()
                .map_err(read_err(path))?;
            // NAR entries are in byte order of their names, as Nix's std::map keeps them.
            names.sort_unstable();
            self.nar.start_directory().map_err(nar_err(path))?;
            self.list(path, NarEvent::Directory { name })?;
            for name in names {
                self.nar.entry(&name).map_err(nar_err(path))?;
                let child = path.join(std::ffi::OsStr::from_bytes(&name));
                self.node(&child, Some(name))?;
            }
            self.nar.end_directory().map_err(nar_err(path))?;
            self.list(path, NarEvent::EndDirectory)
        } else {
            Err(DumpError::Unsupported {
                path: path.to_path_buf(),
            })
        }
    }

    fn file(
        &mut self,
        path: &Path,
        name: Option<Vec<u8>>,
        executable: bool,
        size: u64,
    ) -> Result<(), DumpError> {
        let changed = || DumpError::Changed {
            path: path.to_path_buf(),
            expected: size,
        };
        let mut file = File::open(path).map_err(read_err(path))?;
        let nar_offset = self.nar.regular(executable, size).map_err(nar_err(path))?;
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left).map_or(self.buf.len(), |l| l.min(self.buf.len()));
            let n = match file.read(&mut self.buf[..want]) {
                Ok(0) => return Err(changed()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(path)(e)),
            };
            self.nar.contents(&self.buf[..n]).map_err(nar_err(path))?;
            left -= n as u64;
        }
        // A file that grew since it was listed would yield a NAR that lies about it.
        match file.read(&mut self.buf[..1]) {
            Ok(0) => {}
            Ok(_) => return Err(changed()),
            Err(e) => return Err(read_err(path)(e)),
        }
        self.list(
            path,
            NarEvent::Regular {
                name,
                executable,
                size,
                nar_offset,
            },
        )
    }

    fn list(&mut self, path: &Path, event: NarEvent) -> Result<(), DumpError> {
        self.listing.push(event).map_err(listing_err(path))
    }
}

fn listing_err(path: &Path) -> impl FnOnce(ListingError) -> DumpError + '_ {
    move |source| DumpError::Listing {
        path: path.to_path_buf(),
        source,
    }
}

fn nar_err(path: &Path) -> impl FnOnce(NarError) -> DumpError + '_ {
    move |source| DumpError::Nar {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::nar::{NarEvent, NarReader};

    #[test]
    fn dumps_a_tree_the_reader_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("b"), vec![7u8; CHUNK * 2 + 5]).unwrap();
        fs::write(root.join("a"), b"").unwrap();
        std::os::unix::fs::symlink("b", root.join("c")).unwrap();
        let nar = dump_path(&root, Vec::new()).unwrap();
        let mut r = NarReader::new(nar.as_slice());
        let mut names = Vec::new();
        while let Some(ev) = r.next().unwrap() {
            match ev {
                NarEvent::Regular { name, size, .. } => names.push((name.unwrap(), size)),
                NarEvent::Symlink { name, .. } => names.push((name.unwrap(), 0)),
                _ => {}
            }
        }
        assert_eq!(
            names,
            [
                (b"a".to_vec(), 0),
                (b"b".to_vec(), CHUNK as u64 * 2 + 5),
                (b"c".to_vec(), 0)
            ]
        );
    }

    #[test]
    fn reports_missing_paths_and_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = dump_path(&missing, Vec::new()).unwrap_err();
        assert!(matches!(e, DumpError::Read { .. }));
        assert!(e.to_string().contains("nope"), "{e}");
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(matches!(
            dump_path(&sock, Vec::new()),
            Err(DumpError::Unsupported { .. })
        ));
    }
}
