//! Decisions of the index's writers, without I/O: when the journal moves to a new
//! segment, how many segments the manifest keeps, and the manifest itself.
//!
//! Why the writer lags the manifest: a client may hold a manifest up to its max-age
//! (60 s) and reads only segments at or below the one it names. So the writer keeps
//! appending to the segment before the new one until every cached manifest names the new
//! one; clients with the new manifest read that segment too (it is one below current).

use thiserror::Error;
use time::OffsetDateTime;

use super::hash::Depth;
use super::journal::MAX_RETENTION;
use super::manifest::Manifest;
use super::paths::ROOT;
use crate::db::index_epochs::EpochRow;
use crate::db::journal::WriterState;

/// How the journal is cut into segments and how long clients cache the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalTiming {
    /// Seconds between segment ids.
    pub segment_seconds: u64,
    /// Fewest older segments a manifest tells clients to read.
    pub min_retention: u64,
    /// Seconds after a manifest names a new segment before the writer moves to it: the
    /// manifest's max-age plus a margin.
    pub lag_seconds: u64,
}

/// Max-age of the manifest and `nix-cache-info` (the format allows at most 60 s).
pub const MANIFEST_MAX_AGE: u64 = 60;

impl Default for JournalTiming {
    /// Five-minute segments, at least an hour kept, the writer 65 s behind the manifest.
    fn default() -> Self {
        JournalTiming {
            segment_seconds: 300,
            min_retention: 12,
            lag_seconds: MANIFEST_MAX_AGE + 5,
        }
    }
}

/// Why no manifest can be written.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "the journal since epoch {epoch}'s snapshot needs {needed} segments, more than a \
         client reads ({MAX_RETENTION}); run `larder index build`"
    )]
    Stale { epoch: i64, needed: u64 },
    #[error("epoch {epoch} has {what} {value}, which the format cannot hold")]
    Epoch {
        epoch: i64,
        what: &'static str,
        value: i64,
    },
    #[error("public URL {0:?} is not an absolute http(s) URL")]
    Url(String),
}

/// The id of the segment holding Unix second `now`.
pub fn wall_segment(now: i64, timing: &JournalTiming) -> i64 {
    let d = timing.segment_seconds.max(1) as i64;
    now - now.rem_euclid(d)
}

/// Where the writer and the manifest should be at Unix second `now`.
pub fn advance(state: WriterState, now: i64, timing: &JournalTiming) -> WriterState {
    let mut next = state;
    // The writer moves to the segment the manifest names once every cached manifest names
    // it; checked before the manifest moves on, so a pause of every worker does not leave
    // the writer further behind.
    let lagged = now - state.manifest_at >= timing.lag_seconds as i64;
    if next.writer_segment < next.manifest_segment && lagged {
        next.writer_segment = next.manifest_segment;
    }
    let wall = wall_segment(now, timing);
    if next.manifest_segment < wall {
        next.manifest_segment = wall;
        next.manifest_at = now;
    }
    // The very first segment: no manifest ever named an older one.
    if state.writer_segment == 0 {
        next.writer_segment = next.manifest_segment;
    }
    next
}

/// Older segments a client must read from `current` back to `floor`, at least `min`;
/// `None` when that is more than any client reads.
pub fn retention(current: i64, floor: i64, timing: &JournalTiming) -> Option<u64> {
    let d = timing.segment_seconds.max(1);
    let span = u64::try_from(current.saturating_sub(floor)).unwrap_or(0);
    let needed = span.div_ceil(d).max(timing.min_retention);
    (needed <= MAX_RETENTION).then_some(needed)
}

/// The folder URL of index files under the cache's public URL.
pub fn base_url(public_url: &str, folder: &str) -> Result<String, PlanError> {
    let root = public_url.trim_end_matches('/');
    if !(root.starts_with("http://") || root.starts_with("https://"))
        || root.chars().any(char::is_whitespace)
    {
        return Err(PlanError::Url(public_url.chars().take(200).collect()));
    }
    Ok(format!("{root}/{ROOT}/{folder}/"))
}

fn unsigned(epoch: i64, what: &'static str, value: i64) -> Result<u64, PlanError> {
    u64::try_from(value).map_err(|_| PlanError::Epoch { epoch, what, value })
}

/// The manifest for `current` (with `previous` kept for clients that fall back to it)
/// and the journal at `state`.
pub fn manifest(
    current: &EpochRow,
    previous: Option<&EpochRow>,
    state: &WriterState,
    timing: &JournalTiming,
    public_url: &str,
    now: OffsetDateTime,
) -> Result<Manifest, PlanError> {
    let e = current.epoch;
    // A client that falls back to the previous epoch's shard needs the journal since
    // that epoch's snapshot too; and every client needs the segment being written, which
    // lags the manifest (far, after a pause of every worker).
    let floor = previous
        .map_or(current.journal_floor, |p| {
            p.journal_floor.min(current.journal_floor)
        })
        .min(state.writer_segment);
    let retention = retention(state.manifest_segment, floor, timing).ok_or(PlanError::Stale {
        epoch: e,
        needed: u64::try_from(state.manifest_segment - floor).unwrap_or(0)
            / timing.segment_seconds.max(1),
    })?;
    let previous_epoch = previous.map_or(0, |p| p.epoch);
    let deltas_enabled = previous.is_some() && current.deltas_from == Some(previous_epoch);
    let depth = Depth::new(unsigned(e, "depth", current.depth)?).map_err(|_| PlanError::Epoch {
        epoch: e,
        what: "depth",
        value: current.depth,
    })?;
    let k = u8::try_from(current.encoding_parameter).map_err(|_| PlanError::Epoch {
        epoch: e,
        what: "encoding parameter",
        value: current.encoding_parameter,
    })?;
    Ok(Manifest {
        created_at: now,
        item_count: unsigned(e, "item count", current.item_count)?,
        depth,
        encoding_parameter: k,
        journal_base: base_url(public_url, "journal")?,
        shards_base: base_url(public_url, "shards")?,
        deltas_base: base_url(public_url, "deltas")?,
        journal_current_segment: unsigned(e, "segment", state.manifest_segment)?,
        journal_retention_count: retention,
        journal_segment_duration_seconds: timing.segment_seconds,
        epoch_current: unsigned(e, "epoch", e)?,
        epoch_previous: unsigned(e, "previous epoch", previous_epoch)?,
        deltas_enabled,
        deltas_oldest_base: if deltas_enabled {
            unsigned(e, "previous epoch", previous_epoch)?
        } else {
            0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: JournalTiming = JournalTiming {
        segment_seconds: 300,
        min_retention: 12,
        lag_seconds: 65,
    };

    fn state(w: i64, m: i64, at: i64) -> WriterState {
        WriterState {
            writer_segment: w,
            manifest_segment: m,
            manifest_at: at,
        }
    }

    fn epoch(epoch: i64, floor: i64) -> EpochRow {
        EpochRow {
            epoch,
            depth: 1,
            item_count: 5000,
            encoding_parameter: 145,
            journal_floor: floor,
            deltas_from: Some(epoch - 1),
            started_at: 0,
            published_at: Some(1),
            retired_at: None,
        }
    }

    #[test]
    fn the_first_segment_starts_at_once() {
        assert_eq!(
            advance(state(0, 0, 0), 1_000_123, &T),
            state(999_900, 999_900, 1_000_123)
        );
    }

    #[test]
    fn the_writer_follows_the_manifest_after_the_lag() {
        let s = state(900, 900, 950);
        // Same segment: nothing moves.
        assert_eq!(advance(s, 1199, &T), s);
        // The manifest moves at the boundary; the writer stays on the old segment...
        let moved = advance(s, 1200, &T);
        assert_eq!(moved, state(900, 1200, 1200));
        assert_eq!(advance(moved, 1264, &T), moved);
        // ...until every cached manifest names the new one.
        assert_eq!(advance(moved, 1265, &T), state(1200, 1200, 1200));
        // A long pause skips segments; the writer never passes the manifest.
        let later = advance(state(1200, 1200, 1200), 5000, &T);
        assert_eq!(later, state(1200, 4800, 5000));
        assert_eq!(advance(later, 5065, &T).writer_segment, 4800);
        // A pause right after a switch: the writer catches up with the old manifest's
        // segment first, then lags the new one.
        assert_eq!(advance(moved, 5000, &T), state(1200, 4800, 5000));
    }

    #[test]
    fn retention_reaches_back_to_the_floor() {
        assert_eq!(retention(3000, 2900, &T), Some(12));
        assert_eq!(retention(30_000, 3000, &T), Some(90));
        assert_eq!(retention(30_000, 2999, &T), Some(91));
        assert_eq!(retention(3000, 3300, &T), Some(12));
        assert_eq!(retention(4096 * 300, 0, &T), Some(4096));
        assert_eq!(retention(4097 * 300, 0, &T), None);
    }

    #[test]
    fn manifest_names_both_epochs_and_covers_the_older_floor() {
        let now = OffsetDateTime::from_unix_timestamp(1_705_147_300).unwrap();
        let cur = epoch(7, 1_705_140_000);
        let prev = epoch(6, 1_705_100_000);
        let s = state(1_705_147_200, 1_705_147_200, 1_705_147_200);
        let m = manifest(&cur, Some(&prev), &s, &T, "https://c.example/", now).unwrap();
        m.validate().unwrap();
        assert_eq!((m.epoch_current, m.epoch_previous), (7, 6));
        assert!(m.deltas_enabled);
        assert_eq!(m.deltas_oldest_base, 6);
        assert_eq!(m.journal_current_segment, 1_705_147_200);
        // (1705147200 − 1705100000) / 300 = 157.3 → 158 segments back.
        assert_eq!(m.journal_retention_count, 158);
        assert_eq!(m.shards_base, "https://c.example/nix-cache-index/shards/");
        assert_eq!(m.depth.get(), 1);
        assert_eq!(m.encoding_parameter, 145);

        let first = manifest(&epoch(1, 1_705_147_200), None, &s, &T, "http://h:1", now).unwrap();
        // A writer far behind the manifest is still read.
        let behind = state(1_705_140_000, 1_705_147_200, 1_705_147_200);
        let m = manifest(&cur, None, &behind, &T, "https://c/", now).unwrap();
        assert_eq!(m.journal_retention_count, 24);
        assert_eq!((first.epoch_current, first.epoch_previous), (1, 0));
        assert!(!first.deltas_enabled);
        assert_eq!(first.deltas_oldest_base, 0);
        assert_eq!(first.journal_retention_count, 12);
        first.validate().unwrap();
    }

    #[test]
    fn a_stale_index_or_bad_url_has_no_manifest() {
        let now = OffsetDateTime::from_unix_timestamp(0).unwrap();
        let s = state(5000 * 300, 5000 * 300, 0);
        assert!(matches!(
            manifest(&epoch(2, 0), None, &s, &T, "https://c/", now),
            Err(PlanError::Stale { epoch: 2, .. })
        ));
        let s = state(300, 300, 0);
        for bad in ["c.example", "ftp://c/", "https://c d/"] {
            assert!(matches!(
                manifest(&epoch(2, 0), None, &s, &T, bad, now),
                Err(PlanError::Url(_))
            ));
        }
    }
}
