//! Removing what no client reads any more: epochs retired longer than the grace period
//! (their shards, deltas and checksums), and journal segments older than every kept
//! epoch's snapshot.

use futures::TryStreamExt;

use super::BuildError;
use crate::db::index_epochs::{self, EpochRow};
use crate::db::{journal, Db};
use crate::index::files;
use crate::index::paths::{IndexFile, ROOT};
use crate::storage::Storage;

/// What a cleanup removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// Epochs whose files are gone.
    pub epochs: u64,
    /// Files deleted (shards, deltas, checksums, journal segments).
    pub files: u64,
}

/// Epochs retired at or before `cutoff` (Unix ms).
pub fn expired(epochs: &[EpochRow], cutoff: i64) -> Vec<i64> {
    epochs
        .iter()
        .filter(|e| e.retired_at.is_some_and(|r| r <= cutoff))
        .map(|e| e.epoch)
        .collect()
}

/// The oldest journal segment a kept epoch needs (`None` when no epoch is kept).
pub fn journal_floor(kept: &[EpochRow]) -> Option<i64> {
    kept.iter().map(|e| e.journal_floor).min()
}

/// Whether an index file belongs to one of `epochs`.
fn belongs(file: &IndexFile, epochs: &[i64]) -> bool {
    let has = |e: u64| i64::try_from(e).is_ok_and(|e| epochs.contains(&e));
    match *file {
        IndexFile::Shard { epoch, .. } | IndexFile::Checksums { epoch } => has(epoch),
        IndexFile::Delta { from, to, .. } => has(from) || has(to),
        _ => false,
    }
}

async fn keys_under(storage: &Storage, prefix: &str) -> Result<Vec<String>, BuildError> {
    storage
        .list(prefix)
        .map_ok(|o| o.key)
        .try_collect()
        .await
        .map_err(BuildError::Storage)
}

/// Removes epochs retired at or before `cutoff` and the journal older than every kept one.
pub async fn run(db: &Db, storage: &Storage, cutoff: i64) -> Result<Removed, BuildError> {
    let epochs = index_epochs::all(db).await?;
    let gone = expired(&epochs, cutoff);
    let mut removed = Removed::default();
    if !gone.is_empty() {
        let mut doomed = Vec::new();
        for folder in ["shards", "deltas"] {
            for key in keys_under(storage, &format!("{ROOT}/{folder}/")).await? {
                if IndexFile::parse_request(&key).is_ok_and(|f| belongs(&f, &gone)) {
                    doomed.push(key);
                }
            }
        }
        files::delete(storage, &doomed).await?;
        removed.files += doomed.len() as u64;
        for &e in &gone {
            index_epochs::delete(db, e).await?;
        }
        removed.epochs = gone.len() as u64;
    }
    let kept: Vec<EpochRow> = epochs
        .into_iter()
        .filter(|e| !gone.contains(&e.epoch))
        .collect();
    if let Some(floor) = journal_floor(&kept) {
        let mut doomed = Vec::new();
        for key in keys_under(storage, &format!("{ROOT}/journal/")).await? {
            if let Ok(IndexFile::Journal { segment }) = IndexFile::parse_request(&key) {
                if i64::try_from(segment).is_ok_and(|s| s < floor) {
                    doomed.push(key);
                }
            }
        }
        files::delete(storage, &doomed).await?;
        removed.files += doomed.len() as u64;
        journal::delete_before(db, floor).await?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hash::Prefix;

    fn row(epoch: i64, floor: i64, retired_at: Option<i64>) -> EpochRow {
        EpochRow {
            epoch,
            depth: 1,
            item_count: 0,
            encoding_parameter: 0,
            journal_floor: floor,
            deltas_from: None,
            started_at: 0,
            published_at: Some(0),
            retired_at,
        }
    }

    #[test]
    fn only_epochs_past_grace_go() {
        let rows = [
            row(1, 100, Some(10)),
            row(2, 200, Some(20)),
            row(3, 300, None),
        ];
        assert_eq!(expired(&rows, 9), Vec::<i64>::new());
        assert_eq!(expired(&rows, 10), vec![1]);
        assert_eq!(expired(&rows, 99), vec![1, 2]);
        assert_eq!(journal_floor(&rows[1..]), Some(200));
        assert_eq!(journal_floor(&[]), None);
    }

    #[test]
    fn files_belong_to_their_epochs() {
        let p = Prefix::parse("b").unwrap_or_else(|_| unreachable!());
        let gone = [2];
        assert!(belongs(
            &IndexFile::Shard {
                epoch: 2,
                prefix: p
            },
            &gone
        ));
        assert!(!belongs(
            &IndexFile::Shard {
                epoch: 1,
                prefix: p
            },
            &gone
        ));
        assert!(belongs(&IndexFile::Checksums { epoch: 2 }, &gone));
        for (from, to, want) in [(1, 2, true), (2, 3, true), (1, 3, false)] {
            let delta = IndexFile::Delta {
                from,
                to,
                prefix: p,
            };
            assert_eq!(belongs(&delta, &gone), want, "{from}-{to}");
        }
        assert!(!belongs(&IndexFile::Manifest, &gone));
        assert!(!belongs(&IndexFile::Journal { segment: 1 }, &gone));
    }
}
