//! What the index tests share: a database on either engine, a store, and pushes made
//! straight through the database (the upload API adds nothing the index sees).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test uses a part

use larder_worker::db::pending::{self, ClosureObject};
use larder_worker::db::{gc, Db};
use larder_worker::index::hash::format_hash;
use larder_worker::storage::{Conditions, DirStore, Storage};
use ruint::aliases::U160;

/// A migrated SQLite database in a fresh folder (kept alive by the TempDir).
pub async fn sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!("sqlite://{}", dir.path().join("l.db").display()))
        .await
        .unwrap();
    db.migrate().await.unwrap();
    (dir, db)
}

/// A migrated database on the shared PostgreSQL test cluster.
pub async fn postgres(test: &str) -> Db {
    let url = larder_e2e::postgres::database(test);
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    db
}

/// A local-directory store in a fresh folder.
pub async fn dir_store() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let store = DirStore::open(dir.path().join("objects"), "http://unused")
        .await
        .unwrap();
    (dir, Storage::Dir(store))
}

/// The bytes of `key`, or `None` when absent.
pub async fn read(storage: &Storage, key: &str) -> Option<Vec<u8>> {
    use futures::TryStreamExt;
    let got = storage.get(key, None, &Conditions::default()).await.ok()?;
    let chunks: Vec<bytes::Bytes> = got.body.try_collect().await.unwrap();
    Some(chunks.concat())
}

/// A narinfo object referencing `refs`.
pub fn narinfo(hash: &str, refs: &[String]) -> ClosureObject {
    ClosureObject {
        key: format!("{hash}.narinfo"),
        kind: 0,
        refs: refs.to_vec(),
        nar_size: None,
        file_size: None,
        file_hash: None,
    }
}

/// A NAR object named by repeating `n`.
pub fn nar(n: char) -> ClosureObject {
    ClosureObject {
        key: format!("nar/{}.nar.zst", n.to_string().repeat(52)),
        kind: 1,
        refs: vec![],
        nar_size: Some(10),
        file_size: Some(5),
        file_hash: None,
    }
}

/// Starts and commits a session whose root is the first object.
pub async fn push(db: &Db, objects: &[ClosureObject], now: i64) {
    let root = objects[0].key.clone();
    let started = pending::start(db, &root, objects, now).await.unwrap();
    assert!(pending::complete(db, started.id, now)
        .await
        .unwrap()
        .is_some());
}

/// Pushes each hash as a closure of one narinfo.
pub async fn push_hashes(db: &Db, hashes: &[String], now: i64) {
    for h in hashes {
        push(db, &[narinfo(h, &[])], now).await;
    }
}

/// Runs GC as `larder gc --older-than` would with `cutoff` and no grace, at `now`.
pub async fn collect(db: &Db, cutoff: i64, now: i64) -> Vec<String> {
    gc::expire_roots(db, cutoff, false).await.unwrap();
    let epoch = gc::next_epoch(db).await.unwrap();
    gc::mark(db, epoch, cutoff, now, false).await.unwrap();
    let mut sweeper = gc::start_sweep(db, now).await.unwrap();
    let mut swept = Vec::new();
    while let Some(batch) = sweeper.next_batch(1000).await.unwrap() {
        let doomed: Vec<String> = batch.doomed.iter().map(|d| d.key.clone()).collect();
        batch.commit(&doomed).await.unwrap();
        swept.extend(doomed);
    }
    swept
}

/// `n` distinct pseudo-random hash parts from `seed`, sorted.
pub fn hashes(seed: u64, n: usize) -> Vec<String> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out: Vec<String> = (0..n)
        .map(|_| {
            format_hash(U160::from_limbs([
                rng.random(),
                rng.random(),
                rng.random::<u32>() as u64,
            ]))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Inserts committed narinfo rows directly, each a GC root that never expires in a test
/// (fast; no journal rows, like data from before the index existed).
pub async fn insert_narinfos(db: &Db, hashes: &[String]) {
    for chunk in hashes.chunks(200) {
        for (table, values) in [
            ("objects (key, kind, created_at, touched_at)", "0, 0, 0"),
            ("closures (key, created_at, updated_at)", "0, 4000000000000"),
        ] {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, {values})", i + 1))
                .collect();
            let sql = format!("INSERT INTO {table} VALUES {}", rows.join(", "));
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for h in chunk {
                q = q.bind(format!("{h}.narinfo"));
            }
            q.execute(db.pool()).await.unwrap();
        }
    }
}
