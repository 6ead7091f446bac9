//! Dumps a filesystem path as a NAR, byte-identical to `nix-store --dump`.
//!
//! This is the I/O edge of the NAR writer: it walks the tree (never following symlinks)
//! and streams each file through in fixed-size chunks, so memory stays flat.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::nix::nar::{NarError, NarWriter};

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
}

/// Writes the NAR of `path` to `out` and returns `out`.
pub fn dump_path<W: Write>(path: &Path, out: W) -> Result<W, DumpError> {
    let nar_err = |p: &Path| {
        let path = p.to_path_buf();
        move |source| DumpError::Nar { path, source }
    };
    let mut w = NarWriter::new(out).map_err(nar_err(path))?;
    let mut buf = vec![0u8; CHUNK];
    dump_node(path, &mut w, &mut buf)?;
    w.finish().map_err(nar_err(path))
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> DumpError + '_ {
    move |source| DumpError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn dump_node<W: Write>(path: &Path, w: &mut NarWriter<W>, buf: &mut [u8]) -> Result<(), DumpError> {
    let nar = |source| DumpError::Nar {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(read_err(path))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(path).map_err(read_err(path))?;
        w.symlink(target.as_os_str().as_bytes()).map_err(nar)
    } else if ft.is_file() {
        // Nix marks a file executable when its owner may execute it.
        let executable = meta.permissions().mode() & 0o100 != 0;
        dump_file(path, executable, meta.len(), w, buf)
    } else if ft.is_dir() {
        let mut names: Vec<Vec<u8>> = fs::read_dir(path)
            .map_err(read_err(path))?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(read_err(path))?;
        // NAR entries are in byte order of their names, as Nix's std::map keeps them.
        names.sort_unstable();
        w.start_directory().map_err(nar)?;
        for name in names {
            w.entry(&name).map_err(nar)?;
            dump_node(&path.join(std::ffi::OsStr::from_bytes(&name)), w, buf)?;
        }
        w.end_directory().map_err(nar)
    } else {
        Err(DumpError::Unsupported {
            path: path.to_path_buf(),
        })
    }
}

fn dump_file<W: Write>(
    path: &Path,
    executable: bool,
    size: u64,
    w: &mut NarWriter<W>,
    buf: &mut [u8],
) -> Result<(), DumpError> {
    let nar = |source| DumpError::Nar {
        path: path.to_path_buf(),
        source,
    };
    let changed = || DumpError::Changed {
        path: path.to_path_buf(),
        expected: size,
    };
    let mut file = File::open(path).map_err(read_err(path))?;
    w.regular(executable, size).map_err(nar)?;
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(changed()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(path)(e)),
        };
        w.contents(&buf[..n]).map_err(nar)?;
        left -= n as u64;
    }
    // A file that grew since it was listed would yield a NAR that lies about it.
    match file.read(&mut buf[..1]) {
        Ok(0) => Ok(()),
        Ok(_) => Err(changed()),
        Err(e) => Err(read_err(path)(e)),
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
