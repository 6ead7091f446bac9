//! The answer a client gives for one hash part, from the manifest, journal and shards.

use std::collections::HashMap;

use ruint::aliases::U160;

use super::compress::{decompress, DEFAULT_MAX_DECOMPRESSED};
use super::hash::Prefix;
use super::journal::{latest_ops, parse_segment, segments_to_read, Change, Op};
use super::manifest::Manifest;
use super::reader::Shard;

/// What the index says about a store path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Certainly not in the cache: skip the narinfo request.
    Absent,
    /// Added recently (journal `+`): fetch the narinfo; one 404 is transient.
    ProbablyPresent,
    /// In the current shard.
    Present,
    /// The index cannot answer (fetch error, corrupt file): ask for the narinfo.
    Unknown,
}

/// What the journal says about a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalView {
    /// Some segment could not be fetched or parsed.
    Unusable,
    /// The newest matching line.
    Says(Op),
    /// No line mentions the hash.
    Silent,
}

/// What the shard says about a hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardView {
    /// Missing in both epochs, unreadable, or corrupt.
    Unusable,
    /// Whether the shard holds the hash.
    Contains(bool),
}

/// The decision itself; the shard is consulted unless the journal says `-` (or cannot
/// be read). A `+` the current shard confirms is `Present`: the journal keeps lines older
/// than the shards' snapshot (clients with the previous manifest need them), and a path
/// both lines agree on is as certain as a shard alone.
pub fn decide(journal: JournalView, shard: impl FnOnce() -> ShardView) -> Answer {
    match journal {
        JournalView::Unusable => Answer::Unknown,
        JournalView::Says(Op::Remove) => Answer::Absent,
        JournalView::Says(Op::Add) => match shard() {
            ShardView::Contains(true) => Answer::Present,
            ShardView::Contains(false) | ShardView::Unusable => Answer::ProbablyPresent,
        },
        JournalView::Silent => match shard() {
            ShardView::Unusable => Answer::Unknown,
            ShardView::Contains(true) => Answer::Present,
            ShardView::Contains(false) => Answer::Absent,
        },
    }
}

/// Where a client gets index files from; `Ok(None)` means 404.
pub trait IndexFetch {
    /// Transport error.
    type Error;
    /// The text of journal segment `id`.
    fn journal_segment(&mut self, id: u64) -> Result<Option<Vec<u8>>, Self::Error>;
    /// The zstd-compressed shard of `prefix` in `epoch`.
    fn shard(&mut self, epoch: u64, prefix: Prefix) -> Result<Option<Vec<u8>>, Self::Error>;
}

/// Answers many questions against one manifest, fetching each file at most once.
#[derive(Debug)]
pub struct Querier<F> {
    manifest: Manifest,
    fetch: F,
    max_decompressed: usize,
    journal: Option<Option<HashMap<U160, Op>>>,
    shards: HashMap<Prefix, Option<Shard>>,
}

impl<F: IndexFetch> Querier<F> {
    /// A querier for a manifest already fetched and validated.
    pub fn new(manifest: Manifest, fetch: F) -> Self {
        Querier {
            manifest,
            fetch,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
            journal: None,
            shards: HashMap::new(),
        }
    }

    /// Caps the decompressed size of a shard (default 256 MiB).
    pub fn with_max_decompressed(mut self, limit: usize) -> Self {
        self.max_decompressed = limit;
        self
    }

    /// The answer for one hash part given as H.
    pub fn query(&mut self, hash: U160) -> Answer {
        let journal = match self.journal_ops() {
            None => JournalView::Unusable,
            Some(ops) => ops
                .get(&hash)
                .map_or(JournalView::Silent, |&op| JournalView::Says(op)),
        };
        decide(journal, || self.shard_view(hash))
    }

    fn journal_ops(&mut self) -> Option<&HashMap<U160, Op>> {
        if self.journal.is_none() {
            self.journal = Some(self.load_journal());
        }
        self.journal.as_ref().and_then(|j| j.as_ref())
    }

    /// Every retained segment, newest first; a 404 segment is empty, anything else fails.
    fn load_journal(&mut self) -> Option<HashMap<U160, Op>> {
        let m = &self.manifest;
        let ids = segments_to_read(
            m.journal_current_segment,
            m.journal_segment_duration_seconds,
            m.journal_retention_count,
        );
        let mut segments: Vec<Vec<Change>> = Vec::with_capacity(ids.len());
        for id in ids {
            match self.fetch.journal_segment(id) {
                Ok(None) => {}
                Ok(Some(bytes)) => {
                    let text = std::str::from_utf8(&bytes).ok()?;
                    segments.push(parse_segment(text).ok()?);
                }
                Err(_) => return None,
            }
        }
        Some(latest_ops(segments.iter().map(|s| s.as_slice())))
    }

    fn shard_view(&mut self, hash: U160) -> ShardView {
        let depth = self.manifest.depth;
        let (prefix, suffix) = depth.split(hash);
        if !self.shards.contains_key(&prefix) {
            let loaded = self.load_shard(prefix);
            self.shards.insert(prefix, loaded);
        }
        match self.shards.get(&prefix) {
            Some(Some(shard)) => match shard.contains(suffix) {
                Ok(found) => ShardView::Contains(found),
                Err(_) => ShardView::Unusable,
            },
            _ => ShardView::Unusable,
        }
    }

    /// The current epoch's shard, or the previous epoch's if the current one is a 404.
    fn load_shard(&mut self, prefix: Prefix) -> Option<Shard> {
        let m = &self.manifest;
        let (current, previous) = (m.epoch_current, m.epoch_previous);
        let bytes = match self.fetch.shard(current, prefix) {
            Ok(Some(b)) => b,
            Ok(None) if previous >= 1 => self.fetch.shard(previous, prefix).ok()??,
            _ => return None,
        };
        let raw = decompress(&bytes, self.max_decompressed).ok()?;
        let shard = Shard::parse(raw).ok()?;
        // A shard of another depth would answer for the wrong suffixes.
        (shard.header().suffix_bits as u32 == self.manifest.depth.suffix_bits()).then_some(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::compress::compress;
    use crate::index::hash::{parse_hash, Depth};
    use crate::index::journal::render_segment;
    use crate::index::manifest::tests::sample;
    use crate::index::shard::encode_shard;

    /// Files held in memory the way a bucket holds them; `None` as a value is a transport error.
    #[derive(Default)]
    struct Files {
        journal: HashMap<u64, Option<Vec<u8>>>,
        shards: HashMap<(u64, Prefix), Option<Vec<u8>>>,
        fetched: Vec<String>,
    }

    impl IndexFetch for Files {
        type Error = &'static str;
        fn journal_segment(&mut self, id: u64) -> Result<Option<Vec<u8>>, Self::Error> {
            self.fetched.push(format!("journal/{id}"));
            match self.journal.get(&id) {
                None => Ok(None),
                Some(None) => Err("connection reset"),
                Some(Some(b)) => Ok(Some(b.clone())),
            }
        }
        fn shard(&mut self, epoch: u64, prefix: Prefix) -> Result<Option<Vec<u8>>, Self::Error> {
            self.fetched.push(format!("shards/{epoch}/{prefix}"));
            match self.shards.get(&(epoch, prefix)) {
                None => Ok(None),
                Some(None) => Err("connection reset"),
                Some(Some(b)) => Ok(Some(b.clone())),
            }
        }
    }

    const IN_SHARD: &str = "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi";
    const NOT_IN_SHARD: &str = "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwj";
    const OTHER: &str = "b6000000000000000000000000000000";

    fn h(s: &str) -> U160 {
        parse_hash(s).unwrap()
    }

    fn shard_file(depth: Depth, hashes: &[&str]) -> Vec<u8> {
        let mut suffixes: Vec<U160> = hashes.iter().map(|s| depth.split(h(s)).1).collect();
        suffixes.sort();
        compress(&encode_shard(depth, &suffixes).unwrap()).unwrap()
    }

    fn setup() -> (Manifest, Files, Prefix) {
        let m = sample(); // depth 2, epoch 42 (previous 41), segment 1705147200 / 300 s, 12 kept
        let prefix = Prefix::parse("b6").unwrap();
        let mut files = Files::default();
        files
            .shards
            .insert((42, prefix), Some(shard_file(m.depth, &[IN_SHARD])));
        (m, files, prefix)
    }

    fn seg(lines: &[(Op, &str)]) -> Option<Vec<u8>> {
        let changes: Vec<Change> = lines
            .iter()
            .map(|&(op, s)| Change { op, hash: h(s) })
            .collect();
        Some(render_segment(&changes).into_bytes())
    }

    #[test]
    fn shard_answers_when_the_journal_is_silent() {
        let (m, files, _) = setup();
        let mut q = Querier::new(m, files);
        assert_eq!(q.query(h(IN_SHARD)), Answer::Present);
        assert_eq!(q.query(h(NOT_IN_SHARD)), Answer::Absent);
        // Each file fetched once: 13 segments (all 404 = empty) and one shard.
        assert_eq!(q.fetch.fetched.len(), 13 + 1);
    }

    #[test]
    fn journal_lines_override_the_shard() {
        let (m, mut files, _) = setup();
        let cur = m.journal_current_segment;
        files
            .journal
            .insert(cur - 600, seg(&[(Op::Add, OTHER), (Op::Remove, IN_SHARD)]));
        files
            .journal
            .insert(cur, seg(&[(Op::Remove, OTHER), (Op::Add, OTHER)]));
        let mut q = Querier::new(m, files);
        assert_eq!(q.query(h(IN_SHARD)), Answer::Absent);
        assert_eq!(q.query(h(OTHER)), Answer::ProbablyPresent);
        assert_eq!(q.query(h(NOT_IN_SHARD)), Answer::Absent);
    }

    #[test]
    fn segments_past_retention_are_not_read() {
        let (m, mut files, _) = setup();
        let too_old = m.journal_current_segment - 13 * 300;
        files
            .journal
            .insert(too_old, seg(&[(Op::Add, NOT_IN_SHARD)]));
        let mut q = Querier::new(m, files);
        assert_eq!(q.query(h(NOT_IN_SHARD)), Answer::Absent);
    }

    #[test]
    fn previous_epoch_serves_a_missing_current_shard() {
        let (m, mut files, prefix) = setup();
        let shard = files.shards.remove(&(42, prefix)).unwrap();
        files.shards.insert((41, prefix), shard);
        let mut q = Querier::new(m, files);
        assert_eq!(q.query(h(IN_SHARD)), Answer::Present);
        assert_eq!(q.query(h(NOT_IN_SHARD)), Answer::Absent);
    }

    #[test]
    fn never_absent_when_the_index_is_unusable() {
        let (m, files, prefix) = setup();
        let cur = m.journal_current_segment;
        let mut cases: Vec<(&str, Files)> = Vec::new();

        let mut f = Files {
            shards: files.shards.clone(),
            ..Files::default()
        };
        f.shards.remove(&(42, prefix));
        cases.push(("shard missing in both epochs", f));

        let mut f = Files::default();
        f.shards.insert((42, prefix), None);
        f.shards
            .insert((41, prefix), files.shards[&(42, prefix)].clone());
        cases.push(("transport error on the current shard", f));

        let mut f = Files {
            shards: files.shards.clone(),
            ..Files::default()
        };
        f.journal.insert(cur - 300, None);
        cases.push(("transport error on a segment", f));

        let mut f = Files {
            shards: files.shards.clone(),
            ..Files::default()
        };
        f.journal.insert(cur, Some(b"+not-a-hash\n".to_vec()));
        cases.push(("bad journal line", f));

        let mut f = Files::default();
        let mut raw = encode_shard(m.depth, &[m.depth.split(h(IN_SHARD)).1]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x80;
        f.shards.insert((42, prefix), Some(compress(&raw).unwrap()));
        cases.push(("checksum mismatch", f));

        let mut f = Files::default();
        f.shards.insert((42, prefix), Some(b"garbage".to_vec()));
        cases.push(("not zstd", f));

        let mut f = Files::default();
        f.shards.insert(
            (42, prefix),
            Some(shard_file(Depth::new(1).unwrap(), &[IN_SHARD])),
        );
        cases.push(("shard of another depth", f));

        let mut f = Files::default();
        f.shards
            .insert((42, prefix), Some(compress(&vec![0u8; 1 << 20]).unwrap()));
        cases.push(("bomb over the cap", f));

        for (name, files) in cases {
            let mut q = Querier::new(m.clone(), files).with_max_decompressed(1 << 16);
            assert_eq!(q.query(h(NOT_IN_SHARD)), Answer::Unknown, "{name}");
        }
    }

    #[test]
    fn decide_consults_the_shard_only_when_needed() {
        let no_shard = || -> ShardView { panic!("shard consulted") };
        assert_eq!(
            decide(JournalView::Says(Op::Remove), no_shard),
            Answer::Absent
        );
        assert_eq!(
            decide(JournalView::Says(Op::Add), || ShardView::Contains(false)),
            Answer::ProbablyPresent
        );
        assert_eq!(
            decide(JournalView::Says(Op::Add), || ShardView::Unusable),
            Answer::ProbablyPresent
        );
        assert_eq!(
            decide(JournalView::Says(Op::Add), || ShardView::Contains(true)),
            Answer::Present
        );
        assert_eq!(decide(JournalView::Unusable, no_shard), Answer::Unknown);
        assert_eq!(
            decide(JournalView::Silent, || ShardView::Unusable),
            Answer::Unknown
        );
    }
}
