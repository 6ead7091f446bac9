//! Turns one store path into the bytes to upload, in a single streaming pass:
//! filesystem → NAR (hashed: NarHash, NarSize) → zstd (hashed: FileHash, FileSize) → spool,
//! listing the tree as the walk goes. Also fetches the build log.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use indicatif::ProgressBar;

use crate::nix::hash::HashingWriter;
use crate::nix::listing::ListingBuilder;
use crate::nix::{Listing, NixHash, ObjectKey, StorePath};

use super::closure::PathInfo;
use super::dump::dump_path_listed;
use super::objects::{FileDigest, PathObjects};
use super::spool::{compressed_bound, MemoryBudget, Spool, Stored};
use super::PushError;

/// How to compress.
#[derive(Debug, Clone, Copy)]
pub struct CompressOptions {
    /// zstd level (1…19; 3 is zstd's default).
    pub level: i32,
    /// zstd worker threads per big NAR (0: compress on the calling thread).
    pub workers: u32,
}

/// NARs smaller than this are compressed on the calling thread: zstd's workers take jobs
/// of several MiB, so for smaller inputs they only add copies and thread start-up, and
/// `--jobs` paths are compressed side by side anyway.
const MULTITHREAD_FROM: u64 = 32 << 20;

impl CompressOptions {
    /// The settings for a NAR of `nar_size` bytes.
    pub fn for_nar(self, nar_size: u64) -> Self {
        if nar_size < MULTITHREAD_FROM {
            Self { workers: 0, ..self }
        } else {
            self
        }
    }
}

/// A path ready to upload: its objects' digests and their bytes.
#[derive(Debug)]
pub struct PreparedPath {
    /// Keys, digests and references.
    pub objects: PathObjects,
    /// The compressed NAR.
    pub nar: Stored,
    /// The compressed listing.
    pub listing: Bytes,
    /// The compressed build log.
    pub log: Option<Bytes>,
}

/// What the NAR pass yields.
#[derive(Debug)]
pub struct NarPass {
    /// NarHash as computed from the filesystem.
    pub nar_hash: NixHash,
    /// NarSize as computed.
    pub nar_size: u64,
    /// Digest of the compressed bytes.
    pub file: FileDigest,
    /// The compressed bytes.
    pub stored: Stored,
    /// The listing (names that are not UTF-8 listed with U+FFFD).
    pub listing: Listing,
}

/// Dumps, hashes, compresses and lists `path` (blocking; run it on a blocking thread).
pub fn nar_pass(
    path: &Path,
    spool: Spool,
    compress: CompressOptions,
    progress: &ProgressBar,
) -> Result<NarPass, PushError> {
    let shown = path.display().to_string();
    let fail = |step: &'static str, message: String| PushError::Prepare {
        path: shown.clone(),
        step,
        message,
    };
    let file_hasher = HashingWriter::new(spool);
    let mut encoder = zstd::stream::write::Encoder::new(file_hasher, compress.level)
        .map_err(|e| fail("start zstd", e.to_string()))?;
    if compress.workers > 0 {
        encoder
            .multithread(compress.workers)
            .map_err(|e| fail("start zstd workers", e.to_string()))?;
    }
    let sink = HashingWriter::new(Progress {
        inner: encoder,
        progress,
    });
    // Lossy: names that are not UTF-8 are listed with U+FFFD (the push declared a listing
    // for every path before reading any).
    let (sink, listing) = dump_path_listed(path, sink, ListingBuilder::lossy())
        .map_err(|e| fail("read the store path", e.to_string()))?;
    let (counted, nar_hash, nar_size) = sink.finish();
    let file_hasher = counted
        .inner
        .finish()
        .map_err(|e| fail("compress", e.to_string()))?;
    let (spool, file_hash, file_size) = file_hasher.finish();
    let stored = spool.finish().map_err(|e| fail("spool", e.to_string()))?;
    Ok(NarPass {
        nar_hash,
        nar_size,
        file: FileDigest {
            hash: file_hash,
            size: file_size,
        },
        stored,
        listing,
    })
}

/// Where a path's build log comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSource {
    /// A file in the local log folder, plain or bzip2-compressed.
    File {
        /// `drvs/<xx>/<rest>`.
        plain: PathBuf,
        /// The same with `.bz2`.
        bz2: PathBuf,
    },
    /// Read already, from `nix-store --read-log` (a store without a local log folder).
    Text(Bytes),
}

/// Size of a bzip2 stream of nothing.
const EMPTY_BZIP2: u64 = 14;

/// Finds the build log of `drv` without reading it when the store keeps logs in a local
/// folder; otherwise asks `nix-store --read-log` (one process per path).
pub async fn locate_log(nix_store: &Path, drv: &StorePath) -> Result<Option<LogSource>, String> {
    let dir = log_dir();
    if dir.join("drvs").is_dir() {
        let [plain, bz2] = log_files(&dir, drv);
        // A build that printed nothing leaves an empty file, or an empty bzip2 stream,
        // which is 14 bytes (any content makes it longer): no log.
        let longer =
            |p: &Path, than| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > than);
        let found = tokio::task::spawn_blocking(move || {
            (longer(&plain, 0) || longer(&bz2, EMPTY_BZIP2))
                .then_some(LogSource::File { plain, bz2 })
        })
        .await
        .map_err(|e| format!("looking for the log: {e}"))?;
        return Ok(found);
    }
    Ok(read_log_with(nix_store, drv)
        .await?
        .map(|t| LogSource::Text(Bytes::from(t))))
}

/// Prepares one path: the NAR pass, checked against what Nix recorded, plus the
/// compressed listing and build log (from `log`, found when the path was declared).
pub async fn prepare_path(
    info: PathInfo,
    log: Option<LogSource>,
    budget: Arc<MemoryBudget>,
    compress: CompressOptions,
    progress: ProgressBar,
) -> Result<PreparedPath, PushError> {
    let path = PathBuf::from(info.path.to_absolute());
    let shown = info.path.to_string();
    let fail = |step: &'static str, message: String| PushError::Prepare {
        path: shown.clone(),
        step,
        message,
    };
    let spool = Spool::new(&budget, compressed_bound(info.nar_size))
        .map_err(|e| fail("create a temporary file", e.to_string()))?;
    let nar_compress = compress.for_nar(info.nar_size);
    let pass = tokio::task::spawn_blocking(move || nar_pass(&path, spool, nar_compress, &progress))
        .await
        .map_err(|e| fail("hash and compress", e.to_string()))??;
    if (pass.nar_hash, pass.nar_size) != (info.nar_hash, info.nar_size) {
        return Err(fail(
            "check the NAR",
            format!(
                "the store holds a NAR of {} bytes with {}, but Nix recorded {} bytes with {} \
                 (was the path modified? `nix-store --verify-path` tells)",
                pass.nar_size, pass.nar_hash, info.nar_size, info.nar_hash
            ),
        ));
    }
    let json = pass
        .listing
        .to_json()
        .map_err(|e| fail("render the listing", e.to_string()))?;
    let listing = compress_bytes(json.as_bytes(), compress.level)
        .map_err(|e| fail("compress the listing", e.to_string()))?;
    let log = match (&info.deriver, log) {
        (Some(drv), Some(source)) => {
            let key =
                ObjectKey::build_log(drv).map_err(|e| fail("name the build log", e.to_string()))?;
            let text = read_source(source)
                .await
                .map_err(|e| fail("read the build log", e))?;
            let compressed = compress_bytes(&text, compress.level)
                .map_err(|e| fail("compress the build log", e.to_string()))?;
            Some((key, compressed))
        }
        _ => None,
    };
    let objects = PathObjects {
        nar: pass.file,
        listing: FileDigest::of(&listing),
        log: log.as_ref().map(|(k, b)| (k.clone(), FileDigest::of(b))),
        info,
    };
    Ok(PreparedPath {
        objects,
        nar: pass.stored,
        listing,
        log: log.map(|(_, b)| b),
    })
}

/// The text of a log found when the path was declared; gone since is an error, as the
/// push has promised the worker that object.
async fn read_source(source: LogSource) -> Result<Bytes, String> {
    match source {
        LogSource::Text(text) => Ok(text),
        LogSource::File { plain, bz2 } => {
            let shown = plain.display().to_string();
            let gone = !plain.exists() && !bz2.exists();
            let text = tokio::task::spawn_blocking(move || read_log_file(&plain, &bz2, MAX_LOG))
                .await
                .map_err(|e| format!("reading the log: {e}"))??;
            match text {
                Some(text) => Ok(Bytes::from(text)),
                // Declared already: an empty log is still a log.
                None if !gone => Ok(Bytes::new()),
                None => Err(format!("{shown} was removed during the push")),
            }
        }
    }
}

/// zstd-compresses bytes held in memory (listings, logs, narinfos).
pub fn compress_bytes(data: &[u8], level: i32) -> io::Result<Bytes> {
    zstd::stream::encode_all(data, level).map(Bytes::from)
}

/// Where Nix keeps build logs of a local store (`NIX_LOG_DIR`, else `/nix/var/log/nix`).
fn log_dir() -> PathBuf {
    std::env::var_os("NIX_LOG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/nix/var/log/nix"))
}

/// The files a local store may hold `drv`'s log in: `drvs/<2 chars>/<rest>[.bz2]`.
pub fn log_files(log_dir: &Path, drv: &StorePath) -> [PathBuf; 2] {
    let base = drv.basename();
    let (head, tail) = base.split_at(2);
    let plain = log_dir.join("drvs").join(head).join(tail);
    let bz2 = plain.with_file_name(format!("{tail}.bz2"));
    [plain, bz2]
}

/// Largest build log uploaded; a bigger one is skipped with a warning (logs are a courtesy,
/// and the whole log is held in memory to compress it).
const MAX_LOG: u64 = 256 * 1024 * 1024;

/// The build log of `drv` as `nix-store --read-log` gives it, `None` when the store has
/// none: for stores without a local log folder (remote or daemon-only), where
/// [`locate_log`] cannot look for the file itself. One process per path costs tens of
/// milliseconds, which is why the folder is preferred.
async fn read_log_with(nix_store: &Path, drv: &StorePath) -> Result<Option<Vec<u8>>, String> {
    let out = tokio::process::Command::new(nix_store)
        // Substituters would be asked for every path without a local log: slow and pointless.
        .args(["--option", "substituters", "", "--read-log"])
        .arg(drv.to_absolute())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", nix_store.display()))?;
    if out.status.success() {
        return Ok((!out.stdout.is_empty()).then_some(out.stdout));
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("is not available") {
        Ok(None)
    } else {
        Err(format!(
            "{} --read-log: {}",
            nix_store.display(),
            stderr.trim()
        ))
    }
}

/// A log as Nix stores it: `plain` if it exists, else `bz2` decompressed (Nix's default,
/// `compress-build-log`); `None` when neither exists or the log is empty.
fn read_log_file(plain: &Path, bz2: &Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    let open = |path: &Path| match std::fs::File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot open {}: {e}", path.display())),
    };
    let (reader, path): (Box<dyn Read>, &Path) = match open(plain)? {
        Some(file) => (Box::new(file), plain),
        None => match open(bz2)? {
            Some(file) => (
                Box::new(bzip2::read::MultiBzDecoder::new(io::BufReader::new(file))),
                bz2,
            ),
            None => return Ok(None),
        },
    };
    let mut text = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > limit {
        return Err(format!("{} holds more than {limit} bytes", path.display()));
    }
    Ok((!text.is_empty()).then_some(text))
}

/// Passes bytes on to `inner`, counting them on the progress bar.
struct Progress<'a, W> {
    inner: W,
    progress: &'a ProgressBar,
}

impl<W: Write> Write for Progress<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::write(root.join("big"), vec![b'x'; 3 << 20]).unwrap();
        fs::write(root.join("small"), b"hello\n").unwrap();
        std::os::unix::fs::symlink("small", root.join("link")).unwrap();
        // An empty file's narOffset is where its (no) contents start, not after its ")".
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/empty"), b"").unwrap();
        fs::write(root.join("sub/zz"), b"after the empty one").unwrap();
        dir
    }

    #[test]
    fn one_pass_yields_hashes_compressed_bytes_and_listing() {
        let dir = tree();
        let root = dir.path().join("root");
        let nar = super::super::dump::dump_path(&root, Vec::new()).unwrap();
        for (workers, budget) in [(0, 1 << 30), (2, 0)] {
            let budget = MemoryBudget::new(budget);
            let spool = Spool::new(&budget, compressed_bound(nar.len() as u64)).unwrap();
            let bar = ProgressBar::hidden();
            let pass = nar_pass(&root, spool, CompressOptions { level: 3, workers }, &bar).unwrap();
            assert_eq!(pass.nar_hash, NixHash::of(&nar));
            assert_eq!(pass.nar_size, nar.len() as u64);
            assert_eq!(bar.position(), nar.len() as u64);
            let compressed = pass.stored.read_range(0, pass.stored.len()).unwrap();
            assert_eq!(pass.file, FileDigest::of(&compressed));
            assert!(
                pass.file.size < pass.nar_size / 10,
                "zstd compressed the zeros"
            );
            assert_eq!(zstd::stream::decode_all(&compressed[..]).unwrap(), nar);
            assert_eq!(pass.listing, Listing::from_nar(nar.as_slice()).unwrap());
        }
    }

    #[test]
    fn a_missing_path_is_named_in_the_error() {
        let budget = MemoryBudget::new(1 << 20);
        let spool = Spool::new(&budget, 10).unwrap();
        let e = nar_pass(
            Path::new("/nonexistent/larder-push"),
            spool,
            CompressOptions {
                level: 3,
                workers: 0,
            },
            &ProgressBar::hidden(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/nonexistent/larder-push") && e.contains("read the store path"),
            "{e}"
        );
    }

    #[test]
    fn logs_are_read_plain_or_bz2_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, bz2) = (dir.path().join("a.drv"), dir.path().join("a.drv.bz2"));
        assert_eq!(read_log_file(&plain, &bz2, 1 << 20).unwrap(), None);

        let compress = |data: &[u8]| {
            let mut encoder =
                bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        // Nix writes an (empty) compressed log even for a builder that prints nothing.
        fs::write(&bz2, compress(b"")).unwrap();
        assert_eq!(read_log_file(&plain, &bz2, 1 << 20).unwrap(), None);
        fs::write(&bz2, compress(b"building\nok\n")).unwrap();
        assert_eq!(
            read_log_file(&plain, &bz2, 1 << 20).unwrap().as_deref(),
            Some(&b"building\nok\n"[..])
        );
        // The plain file wins, as in Nix.
        fs::write(&plain, b"plain\n").unwrap();
        assert_eq!(
            read_log_file(&plain, &bz2, 1 << 20).unwrap().as_deref(),
            Some(&b"plain\n"[..])
        );
        let e = read_log_file(&plain, &bz2, 3).unwrap_err();
        assert!(e.contains("more than 3 bytes"), "{e}");
        fs::remove_file(&plain).unwrap();
        fs::write(&bz2, b"not bzip2").unwrap();
        assert!(read_log_file(&plain, &bz2, 1 << 20).is_err());
    }

    #[test]
    fn log_files_follow_nix_layout() {
        let drv = StorePath::from_basename("9ka51kwxri4djfxbqxmfq3szya0qscc2-a.drv").unwrap();
        let [plain, bz2] = log_files(Path::new("/nix/var/log/nix"), &drv);
        assert_eq!(
            plain,
            Path::new("/nix/var/log/nix/drvs/9k/a51kwxri4djfxbqxmfq3szya0qscc2-a.drv")
        );
        assert_eq!(
            bz2,
            Path::new("/nix/var/log/nix/drvs/9k/a51kwxri4djfxbqxmfq3szya0qscc2-a.drv.bz2")
        );
    }
}
