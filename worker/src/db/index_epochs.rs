//! Epochs of the binary cache index: what each build wrote, which are published, which
//! have retired, and the narinfo hashes a build reads.

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row, Transaction};

use super::{trusted_sql, Backend, Db, DbError, QueryContext};

/// Advisory lock id of `larder index build` (one build at a time across replicas).
pub const BUILD_LOCK_ID: i64 = 0x6c61_7264_6572_6978; // "larderix"

/// One epoch as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRow {
    /// The epoch number (≥ 1).
    pub epoch: i64,
    /// Sharding depth of its shards.
    pub depth: i64,
    /// Items across its shards.
    pub item_count: i64,
    /// k of its largest shard.
    pub encoding_parameter: i64,
    /// The journal writer's segment before the build read its snapshot: every change the
    /// shards miss is in this segment or a later one.
    pub journal_floor: i64,
    /// The epoch its deltas start from, when it has deltas.
    pub deltas_from: Option<i64>,
    /// When its build started (Unix ms).
    pub started_at: i64,
    /// When the manifest switched to it (Unix ms); `None` while building or if abandoned.
    pub published_at: Option<i64>,
    /// Since when it is neither current nor previous (Unix ms).
    pub retired_at: Option<i64>,
}

const COLUMNS: &str = "epoch, depth, item_count, encoding_parameter, journal_floor, \
                       deltas_from, started_at, published_at, retired_at";

fn decode(row: &AnyRow) -> Result<EpochRow, sqlx::Error> {
    Ok(EpochRow {
        epoch: row.try_get(0)?,
        depth: row.try_get(1)?,
        item_count: row.try_get(2)?,
        encoding_parameter: row.try_get(3)?,
        journal_floor: row.try_get(4)?,
        deltas_from: row.try_get(5)?,
        started_at: row.try_get(6)?,
        published_at: row.try_get(7)?,
        retired_at: row.try_get(8)?,
    })
}

async fn select<'c, E>(e: E, filter: &str, binds: &[i64]) -> Result<Vec<EpochRow>, DbError>
where
    E: Executor<'c, Database = Any>,
{
    let mut query = sqlx::query(trusted_sql(format!(
        "SELECT {COLUMNS} FROM index_epochs {filter}"
    )));
    for b in binds {
        query = query.bind(*b);
    }
    query
        .fetch_all(e)
        .await
        .context("read index epochs")?
        .iter()
        .map(decode)
        .collect::<Result<_, _>>()
        .context("decode index epochs")
}

/// The current epoch and the previous one, as the manifest names them.
pub async fn published<'c, E>(e: E) -> Result<(Option<EpochRow>, Option<EpochRow>), DbError>
where
    E: Executor<'c, Database = Any>,
{
    let mut rows = select(
        e,
        "WHERE published_at IS NOT NULL ORDER BY epoch DESC LIMIT 2",
        &[],
    )
    .await?
    .into_iter();
    Ok((rows.next(), rows.next()))
}

/// Every recorded epoch, oldest first.
pub async fn all(db: &Db) -> Result<Vec<EpochRow>, DbError> {
    select(db.pool(), "ORDER BY epoch", &[]).await
}

/// Records a build starting; the epoch number must be new.
pub async fn insert(db: &Db, row: &EpochRow) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO index_epochs (epoch, depth, item_count, encoding_parameter, \
         journal_floor, deltas_from, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(row.epoch)
    .bind(row.depth)
    .bind(row.item_count)
    .bind(row.encoding_parameter)
    .bind(row.journal_floor)
    .bind(row.deltas_from)
    .bind(row.started_at)
    .execute(db.pool())
    .await
    .context("record an index build")?;
    Ok(())
}

/// Records what a finished build wrote.
pub async fn finish(db: &Db, row: &EpochRow) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE index_epochs SET item_count = $2, encoding_parameter = $3, deltas_from = $4 \
         WHERE epoch = $1",
    )
    .bind(row.epoch)
    .bind(row.item_count)
    .bind(row.encoding_parameter)
    .bind(row.deltas_from)
    .execute(db.pool())
    .await
    .context("record a finished index build")?;
    Ok(())
}

/// Makes `epoch` current with `previous` before it; every other epoch (older ones and
/// unfinished builds) retires now.
pub async fn publish(
    tx: &mut Transaction<'static, Any>,
    epoch: i64,
    previous: i64,
    now: i64,
) -> Result<(), DbError> {
    sqlx::query("UPDATE index_epochs SET published_at = $2, retired_at = NULL WHERE epoch = $1")
        .bind(epoch)
        .bind(now)
        .execute(&mut **tx)
        .await
        .context("publish an index epoch")?;
    sqlx::query(
        "UPDATE index_epochs SET retired_at = $3 \
         WHERE retired_at IS NULL AND epoch <> $1 AND epoch <> $2",
    )
    .bind(epoch)
    .bind(previous)
    .bind(now)
    .execute(&mut **tx)
    .await
    .context("retire old index epochs")?;
    Ok(())
}

/// Marks unfinished builds (a crashed or failed run) as retired at `now`.
pub async fn retire_unfinished(db: &Db, now: i64) -> Result<u64, DbError> {
    let done = sqlx::query(
        "UPDATE index_epochs SET retired_at = $1 WHERE published_at IS NULL AND retired_at IS NULL",
    )
    .bind(now)
    .execute(db.pool())
    .await
    .context("retire unfinished index builds")?;
    Ok(done.rows_affected())
}

/// Forgets an epoch whose files are gone.
pub async fn delete(db: &Db, epoch: i64) -> Result<(), DbError> {
    sqlx::query("DELETE FROM index_epochs WHERE epoch = $1")
        .bind(epoch)
        .execute(db.pool())
        .await
        .context("forget an index epoch")?;
    Ok(())
}

/// Number of narinfos the cache holds.
pub async fn narinfo_count(db: &Db) -> Result<u64, DbError> {
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM objects WHERE kind = 0")
        .fetch_one(db.pool())
        .await
        .and_then(|r| r.try_get(0))
        .context("count narinfos")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// One page of narinfo hash parts in byte order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NarinfoPage {
    /// Narinfos on the page.
    pub count: u64,
    /// Their hash parts, concatenated (32 characters each).
    pub hashes: String,
    /// The last key on the page, where the next one starts.
    pub last_key: Option<String>,
}

/// Up to `limit` narinfo hash parts whose keys sort after `after` in byte order, as one
/// row: a row per narinfo would cost more to decode than everything else a build does.
/// PostgreSQL compares in the "C" collation (byte order, which is the numeric order of the
/// hashes) through the `objects_narinfo_keys` index, whatever the database's collation.
/// The aggregate takes the rows in the order the subquery returns them (an `ORDER BY`
/// inside it would sort every page again, spilling to disk at the default `work_mem`);
/// the build checks that order and fails on any hash not above the one before.
pub async fn narinfo_page(db: &Db, after: &str, limit: i64) -> Result<NarinfoPage, DbError> {
    let sql = match db.backend() {
        Backend::Postgres => {
            "SELECT COUNT(*), string_agg(substr(key, 1, 32), ''), \
             max(key COLLATE \"C\") FROM (SELECT key FROM objects WHERE kind = 0 \
             AND key COLLATE \"C\" > $1 ORDER BY key COLLATE \"C\" LIMIT $2) page"
        }
        Backend::Sqlite => {
            "SELECT COUNT(*), group_concat(h, ''), max(key) FROM (SELECT substr(key, 1, 32) \
             AS h, key FROM objects WHERE kind = 0 AND key > $1 ORDER BY key LIMIT $2)"
        }
    };
    let row = sqlx::query(sql)
        .bind(after)
        .bind(limit)
        .fetch_one(db.pool())
        .await
        .context("read a page of narinfo keys")?;
    let count: i64 = row.try_get(0).context("decode the page size")?;
    let hashes: Option<String> = row.try_get(1).context("decode the page")?;
    let last_key: Option<String> = row.try_get(2).context("decode the page end")?;
    Ok(NarinfoPage {
        count: u64::try_from(count).unwrap_or(0),
        hashes: hashes.unwrap_or_default(),
        last_key,
    })
}
