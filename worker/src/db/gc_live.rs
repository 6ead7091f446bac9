//! The live set of a GC mark: everything reachable from a root pushed since the cutoff,
//! a pin or a pending session, left in the table `gc_live` (see [`build`]). Why this is
//! safe against concurrent pushes: docs/gc.md, rule 3.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use sqlx::{AnyConnection, Row};

use super::gc::{table_pages, PageRange};
use super::gc_tables::WorkTables;
use super::{trusted_sql, Backend, DbError, QueryContext};

/// The roots of the walk: live closures, pins and every object of a pending session.
/// Roots older than the cutoff are already deleted in a real run; a dry run keeps them,
/// so the cutoff appears here too.
const ROOTS: &str = "SELECT key FROM closures WHERE updated_at >= $1 \
                     UNION SELECT narinfo_key FROM pins UNION SELECT key FROM pending_objects";

/// Fills `gc_live`. On PostgreSQL it holds the 64-bit hashes of live keys
/// (`hashtextextended(key, 0)`, column `h`), in an unlogged or temporary table as
/// `tables` says; on SQLite a temporary table of the mark's connection holds the keys
/// themselves (`key`).
pub(crate) async fn build(
    conns: &mut [&mut AnyConnection],
    backend: Backend,
    tables: WorkTables,
    root_cutoff: i64,
) -> Result<(), DbError> {
    match backend {
        Backend::Postgres => build_hashed(conns, tables, root_cutoff).await,
        Backend::Sqlite => build_by_level(conns[0], root_cutoff).await,
    }
}

/// A hasher for keys that are already uniform 64-bit hashes: it passes them through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_i64` is used; anything else is folded in byte by byte.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_i64(&mut self, n: i64) {
        self.0 = n as u64;
    }
}

type HashedSet = HashSet<i64, BuildHasherDefault<PassThrough>>;

/// Hashes per statement when the live set goes back to the database.
const UPLOAD_CHUNK: usize = 100_000;

/// PostgreSQL: walks the reference graph in this process, over 64-bit hashes of the
/// keys, and writes the hashes of the live set to `gc_live (h)`.
///
/// Every reference is read once as a pair of hashes ([`read_edges`]: ranges of `refs`
/// on every connection of `conns`); the walk is then a breadth-first search over the
/// pairs sorted by their source. At a million store paths that is 9.7 million pairs, 155 MB in this process
/// for the length of the walk, against five to six scans or index walks of `refs` (and
/// a temporary table of text keys) when each level of the walk was a statement.
///
/// Walking hashes instead of keys is conservative: keys that share a hash become one
/// node with the references of both, so every object a live root reaches by keys is
/// reached by hashes too; a collision can only keep an unreachable object (well under one
/// chance in a million per run at three million objects), never lose a live one.
async fn build_hashed(
    conns: &mut [&mut AnyConnection],
    tables: WorkTables,
    root_cutoff: i64,
) -> Result<(), DbError> {
    let started = std::time::Instant::now();
    let mut edges = read_edges(conns, READ_PAGES).await?;
    tracing::debug!(
        references = edges.len(),
        ms = ms_since(started),
        "gc mark: read the references"
    );
    let conn = &mut *conns[0];
    edges.sort_unstable();
    tracing::debug!(ms = ms_since(started), "gc mark: sorted the references");

    let roots: Vec<i64> = sqlx::query(trusted_sql(format!(
        "SELECT DISTINCT hashtextextended(key, 0) FROM ({ROOTS}) roots"
    )))
    .bind(root_cutoff)
    .fetch_all(&mut *conn)
    .await
    .context("collect roots, pins and pending objects")?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()
    .context("decode roots")?;

    let live = walk(&edges, roots);
    drop(edges);
    tracing::debug!(
        live = live.len(),
        ms = ms_since(started),
        "gc mark: walked the live set"
    );

    // Unlogged, not temporary, so that every connection of the marking `UPDATE` reads
    // it (see `gc_tables`).
    for sql in [
        "DROP TABLE IF EXISTS gc_live",
        "CREATE UNLOGGED TABLE gc_live (h BIGINT NOT NULL) WITH (autovacuum_enabled = false)",
    ]
    .into_iter()
    .filter_map(|sql| tables.adapt(sql))
    {
        sqlx::query(trusted_sql(sql.into_owned()))
            .execute(&mut *conn)
            .await
            .context("create the live set table")?;
    }
    let live: Vec<i64> = live.into_iter().collect();
    for chunk in live.chunks(UPLOAD_CHUNK) {
        let list = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        sqlx::query(
            "INSERT INTO gc_live (h) \
             SELECT CAST(unnest(string_to_array($1, ',')) AS BIGINT)",
        )
        .bind(list)
        .execute(&mut *conn)
        .await
        .context("write the live set")?;
    }
    // The table gets no automatic statistics; the anti-join needs them.
    sqlx::query("ANALYZE gc_live")
        .execute(&mut *conn)
        .await
        .context("analyze the live set")?;
    tracing::debug!(ms = ms_since(started), "gc mark: wrote the live set");
    Ok(())
}

/// Milliseconds since `t`, for the collector's step timings.
pub(crate) fn ms_since(t: std::time::Instant) -> u128 {
    t.elapsed().as_millis()
}

/// Everything reachable from `roots` over `edges` (pairs sorted by source),
/// breadth first. Each level's frontier is sorted, so its lookups move forward through
/// the edges (a galloping search from the previous one) instead of each searching all
/// of them from the start.
fn walk(edges: &[(i64, i64)], roots: Vec<i64>) -> HashedSet {
    let mut live = HashedSet::default();
    let mut frontier: Vec<i64> = roots.into_iter().filter(|&h| live.insert(h)).collect();
    while !frontier.is_empty() {
        frontier.sort_unstable();
        let mut next = Vec::new();
        let mut at = 0;
        for h in frontier {
            at = seek(edges, at, h);
            while let Some(&(from, to)) = edges.get(at) {
                if from != h {
                    break;
                }
                if live.insert(to) {
                    next.push(to);
                }
                at += 1;
            }
        }
        frontier = next;
    }
    live
}

/// The first position at or after `at` whose source is not below `h`, in `edges`
/// sorted by source: steps of doubling length from `at`, then a binary search in the
/// last step.
fn seek(edges: &[(i64, i64)], at: usize, h: i64) -> usize {
    let (mut lo, mut step) = (at, 1);
    while lo + step < edges.len() && edges[lo + step].0 < h {
        lo += step;
        step *= 2;
    }
    let hi = (lo + step).min(edges.len());
    lo + edges
        .get(lo..hi)
        .map_or(0, |s| s.partition_point(|e| e.0 < h))
}

/// Pages of `refs` per statement of [`read_edges`]: about 80,000 references, 1.3 MB
/// of hashes.
const READ_PAGES: i64 = 1024;

/// Every reference as a pair of 64-bit key hashes, read by the connections of `conns`
/// at once, each taking the next range of `pages` pages of `refs` (a TID range scan)
/// until none is left. Each range comes back as one `bytea` of big-endian pairs,
/// so decoding costs this process next to nothing and the database hashes on as many
/// cores as there are connections.
///
/// The ranges are read in different snapshots, all taken after the epoch switch, which
/// rule 3 allows: references are never updated (so none moves to a range already
/// read), only deleted by the collector itself and added by pushes that stamp what
/// they rely on with the new epoch.
async fn read_edges(
    conns: &mut [&mut AnyConnection],
    pages: i64,
) -> Result<Vec<(i64, i64)>, DbError> {
    let pages = pages.max(1);
    // The planner's estimate sizes the array once (doubling would overshoot by up to
    // half); a wrong estimate only costs a reallocation.
    let estimate: f64 = sqlx::query(
        "SELECT CAST(GREATEST(reltuples, 0) AS DOUBLE PRECISION) FROM pg_class \
         WHERE oid = CAST('refs' AS regclass)",
    )
    .fetch_one(&mut *conns[0])
    .await
    .and_then(|r| r.try_get(0))
    .context("estimate the number of references")?;
    // The last range has no end, for references added past the table's end meanwhile.
    let ranges = table_pages(conns[0], "refs").await? / pages + 1;
    let next = AtomicI64::new(0);
    let edges = Mutex::new(Vec::with_capacity((estimate * 1.02) as usize + 1024));
    let lanes = conns.iter_mut().map(|conn| {
        let (next, edges) = (&next, &edges);
        async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ranges {
                    return Ok::<(), DbError>(());
                }
                let (from, to) = PageRange::bounds(i, pages, ranges);
                let sql = format!(
                    "SELECT string_agg(int8send(hashtextextended(from_key, 0)) \
                     || int8send(hashtextextended(to_key, 0)), ''::bytea) FROM refs WHERE {}",
                    PageRange::sql("refs", 1, to.is_some())
                );
                let query = PageRange::bind(sqlx::query(trusted_sql(sql)), &from, to.as_deref());
                let pairs: Option<Vec<u8>> = query
                    .fetch_one(&mut **conn)
                    .await
                    .and_then(|r| r.try_get(0))
                    .context("read references")?;
                let pairs = pairs.unwrap_or_default();
                if !pairs.len().is_multiple_of(16) {
                    return Err(DbError::Query {
                        context: "read references",
                        source: sqlx::Error::Protocol(format!(
                            "{} bytes of reference hashes, not a multiple of 16",
                            pairs.len()
                        )),
                    });
                }
                let mut edges = edges.lock().unwrap_or_else(|e| e.into_inner());
                edges.extend(pairs.chunks_exact(16).map(|pair| {
                    let (from, to) = pair.split_at(8);
                    (be_i64(from), be_i64(to))
                }));
            }
        }
    });
    futures::future::try_join_all(lanes).await?;
    Ok(edges.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// A big-endian 64-bit integer from 8 bytes (0 from any other length, which the
/// caller's chunking rules out).
fn be_i64(bytes: &[u8]) -> i64 {
    <[u8; 8]>::try_from(bytes).map_or(0, i64::from_be_bytes)
}

/// SQLite: one statement per level of the reference graph adds the keys the previous
/// level references that are not live yet; `depth` tells the levels apart. Each
/// statement reads its own snapshot, all taken after the epoch switch; references and
/// roots are only removed by the collector itself (one run at a time), so later
/// snapshots can only add keys.
async fn build_by_level(conn: &mut AnyConnection, root_cutoff: i64) -> Result<(), DbError> {
    for sql in [
        "DROP TABLE IF EXISTS gc_live",
        "CREATE TEMP TABLE gc_live (key TEXT PRIMARY KEY, depth BIGINT NOT NULL)",
        "CREATE INDEX gc_live_depth ON gc_live (depth)",
    ] {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .context("create the live set table")?;
    }
    sqlx::query(trusted_sql(format!(
        "INSERT INTO gc_live (key, depth) SELECT key, 0 FROM ({ROOTS}) roots"
    )))
    .bind(root_cutoff)
    .execute(&mut *conn)
    .await
    .context("collect roots, pins and pending objects")?;
    let mut depth: i64 = 0;
    loop {
        let added = sqlx::query(
            "INSERT INTO gc_live (key, depth) SELECT DISTINCT r.to_key, $2 \
             FROM gc_live l JOIN refs r ON r.from_key = l.key WHERE l.depth = $1 \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(depth)
        .bind(depth + 1)
        .execute(&mut *conn)
        .await
        .context("follow references")?
        .rows_affected();
        if added == 0 {
            break;
        }
        depth += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code

    use super::*;
    use crate::db::Db;

    /// The walk reaches exactly what a plain search of the same graph reaches: chains,
    /// cycles, shared dependencies, roots without edges, and sources absent from the
    /// edges, with keys spread over the whole range of 64-bit values.
    #[test]
    fn the_walk_reaches_what_a_plain_search_reaches() {
        let mut state: u64 = 7;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 1) as i64 - (1 << 62)
        };
        let nodes: Vec<i64> = (0..2000).map(|_| next()).collect();
        let mut edges = Vec::new();
        for (i, &from) in nodes.iter().enumerate().skip(1) {
            for k in 0..(i % 5) {
                let to = nodes[(i * 31 + k * 17) % nodes.len()];
                edges.push((from, to));
            }
        }
        edges.sort_unstable();
        edges.dedup();
        let roots = vec![nodes[7], nodes[5], nodes[1234], nodes[7], next()];
        let mut expected: HashSet<i64> = HashSet::new();
        let mut stack = roots.clone();
        while let Some(h) = stack.pop() {
            if expected.insert(h) {
                stack.extend(edges.iter().filter(|e| e.0 == h).map(|e| e.1));
            }
        }
        let live = walk(&edges, roots);
        assert!(expected.len() > 100, "a walk of {} nodes", expected.len());
        assert_eq!(live.into_iter().collect::<HashSet<_>>(), expected);
    }

    #[test]
    fn seek_finds_the_first_source_not_below() {
        let edges: Vec<(i64, i64)> = [1, 1, 3, 3, 3, 8, 9, 9, 20]
            .iter()
            .map(|&f| (f, 0))
            .collect();
        for at in 0..edges.len() {
            for h in 0..22 {
                let want = at + edges[at..].partition_point(|e| e.0 < h);
                assert_eq!(seek(&edges, at, h), want, "from {at} for {h}");
            }
        }
        assert_eq!(seek(&edges, edges.len(), 5), edges.len());
    }

    /// Reading in ranges of one or three pages, on two connections, returns exactly the
    /// references one plain statement returns: no range is skipped or read twice.
    #[tokio::test]
    async fn references_read_in_page_ranges_are_all_read_once() {
        let url = tokio::task::spawn_blocking(|| larder_e2e::postgres::database("read_edges"))
            .await
            .unwrap();
        let db = Db::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        // Long keys, so that 3000 references take dozens of pages.
        sqlx::query(
            "INSERT INTO refs (from_key, to_key) SELECT repeat(md5(i::text), 3), \
             repeat(md5((i * 7)::text), 3) FROM generate_series(1, 3000) i",
        )
        .execute(db.pool())
        .await
        .unwrap();
        let mut expected: Vec<(i64, i64)> = sqlx::query(
            "SELECT hashtextextended(from_key, 0), hashtextextended(to_key, 0) FROM refs",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        expected.sort_unstable();
        let mut a = db.pool().acquire().await.unwrap();
        let mut b = db.pool().acquire().await.unwrap();
        for pages in [1, 3, READ_PAGES] {
            let mut conns: Vec<&mut AnyConnection> = vec![&mut a, &mut b];
            let mut edges = read_edges(&mut conns, pages).await.unwrap();
            edges.sort_unstable();
            assert_eq!(edges, expected, "ranges of {pages} pages");
        }
        let pages = table_pages(&mut a, "refs").await.unwrap();
        assert!(pages > 10, "the table spans {pages} pages");
    }
}
