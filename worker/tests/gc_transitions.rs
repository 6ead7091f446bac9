//! Each state transition of the GC protocol (docs/gc.md), one test each, on the embedded
//! SQLite database and on PostgreSQL (whose mark and sweep run other SQL: a walk over
//! key hashes, rows found by location), both with a local folder as the bucket. The
//! interleavings PostgreSQL allows are covered by gc_stress.rs on the real server.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::Duration;

use larder_worker::db::pending::{self, ClosureObject};
use larder_worker::db::pins::{self, PinOutcome};
use larder_worker::db::{self, Db};
use larder_worker::gc::lock::RunLock;
use larder_worker::gc::{self, GcOptions};
use larder_worker::storage::{DirStore, PutBody, PutOptions, Storage};
use sqlx::Row;

const ROOT: &str = "00000000000000000000000000000000.narinfo";
const DEP: &str = "11111111111111111111111111111111.narinfo";
const OTHER: &str = "22222222222222222222222222222222.narinfo";

struct Fixture {
    db: Db,
    url: String,
    storage: Storage,
    _dir: tempfile::TempDir,
}

/// A fresh cache: on SQLite without `pg_test`, else in a PostgreSQL database named
/// after it.
async fn fixture(pg_test: Option<&'static str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = match pg_test {
        Some(test) => tokio::task::spawn_blocking(move || larder_e2e::postgres::database(test))
            .await
            .unwrap(),
        None => format!("sqlite://{}", dir.path().join("larder.db").display()),
    };
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let store = DirStore::open(dir.path().join("objects"), "http://127.0.0.1:1")
        .await
        .unwrap();
    Fixture {
        db,
        url,
        storage: Storage::Dir(store),
        _dir: dir,
    }
}

fn object(key: &str, refs: &[&str]) -> ClosureObject {
    ClosureObject {
        key: key.to_string(),
        kind: 0,
        refs: refs.iter().map(|r| r.to_string()).collect(),
        nar_size: None,
        file_size: Some(4),
        file_hash: None,
    }
}

impl Fixture {
    async fn put(&self, key: &str) {
        let body = PutBody::Bytes(bytes::Bytes::from_static(b"data"));
        self.storage
            .put(key, body, &PutOptions::default())
            .await
            .unwrap();
    }

    /// Starts a session, uploads what it is asked for, returns (id, needs_upload).
    async fn start(&self, root: &str, objects: &[ClosureObject], at: i64) -> (i64, Vec<String>) {
        let started = pending::start(&self.db, root, objects, at).await.unwrap();
        for key in &started.needs_upload {
            self.put(key).await;
        }
        (started.id, started.needs_upload)
    }

    /// Pushes and commits a closure at time `at`.
    async fn push(&self, root: &str, objects: &[ClosureObject], at: i64) {
        let (id, _) = self.start(root, objects, at).await;
        assert!(pending::complete(&self.db, id, at).await.unwrap().is_some());
    }

    async fn row(&self, key: &str) -> Option<(i64, Option<i64>)> {
        sqlx::query("SELECT touched_epoch, marked_epoch FROM objects WHERE key = $1")
            .bind(key)
            .fetch_optional(self.db.pool())
            .await
            .unwrap()
            .map(|r| (r.get(0), r.get(1)))
    }

    async fn in_bucket(&self, key: &str) -> bool {
        self.storage.head(key).await.unwrap().is_some()
    }

    /// Expire roots pushed before `cutoff` and mark, as a run's first half would;
    /// returns the epoch and how many objects were marked.
    async fn mark(&self, cutoff: i64, now: i64) -> (i64, u64) {
        db::gc::expire_roots(&self.db, cutoff, false).await.unwrap();
        let epoch = db::gc::next_epoch(&self.db).await.unwrap();
        let (marked, _) = db::gc::mark(&self.db, epoch, cutoff, now, false)
            .await
            .unwrap();
        (epoch, marked)
    }

    async fn sweep(&self, cutoff: i64) -> u64 {
        let mut summary = gc::GcSummary::default();
        gc::sweep(&self.db, &self.storage, cutoff, &mut summary)
            .await
            .unwrap();
        summary.objects_deleted
    }
}

/// Runs the test body `$name(Fixture)` once on SQLite and once on PostgreSQL.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::fixture(None).await).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(super::fixture(Some(stringify!($name))).await).await
            }
        }
    };
}

fn closure() -> Vec<ClosureObject> {
    vec![object(ROOT, &[DEP]), object(DEP, &[])]
}

on_both!(commit_makes_objects_references_and_a_root_stamped_with_the_epoch);
async fn commit_makes_objects_references_and_a_root_stamped_with_the_epoch(f: Fixture) {
    f.push(ROOT, &closure(), 1000).await;
    assert_eq!(f.row(ROOT).await, Some((1, None)));
    assert_eq!(f.row(DEP).await, Some((1, None)));
    let roots: i64 = sqlx::query("SELECT COUNT(*) FROM closures WHERE key = $1")
        .bind(ROOT)
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(roots, 1);
}

on_both!(mark_takes_only_what_no_live_root_pin_or_session_reaches);
async fn mark_takes_only_what_no_live_root_pin_or_session_reaches(f: Fixture) {
    f.push(ROOT, &closure(), 1000).await;
    f.push(OTHER, &[object(OTHER, &[DEP])], 5000).await;
    let (epoch, _) = f.mark(2000, 6000).await;
    assert_eq!(
        f.row(ROOT).await,
        Some((1, Some(epoch))),
        "expired root is marked"
    );
    assert_eq!(
        f.row(DEP).await.unwrap().1,
        None,
        "shared dependency is kept"
    );
    assert_eq!(f.row(OTHER).await.unwrap().1, None, "young root is kept");
}

on_both!(objects_touched_in_the_current_epoch_are_not_marked);
async fn objects_touched_in_the_current_epoch_are_not_marked(f: Fixture) {
    f.push(ROOT, &closure(), 1000).await;
    let epoch = db::gc::next_epoch(&f.db).await.unwrap();
    // A push in the new epoch relies on DEP without committing yet.
    let (_id, needs) = f
        .start(OTHER, &[object(OTHER, &[DEP]), object(DEP, &[])], 3000)
        .await;
    assert_eq!(needs, vec![OTHER.to_string()]);
    db::gc::expire_roots(&f.db, 2000, false).await.unwrap();
    db::gc::mark(&f.db, epoch, 2000, 4000, false).await.unwrap();
    assert_eq!(f.row(DEP).await, Some((epoch, None)));
    assert_eq!(f.row(ROOT).await.unwrap().1, Some(epoch));
}

on_both!(a_push_distrusts_a_marked_object_and_leaves_its_mark);
async fn a_push_distrusts_a_marked_object_and_leaves_its_mark(f: Fixture) {
    f.push(ROOT, &closure(), 1000).await;
    let (epoch, _) = f.mark(2000, 3000).await;
    let (id, needs) = f.start(ROOT, &closure(), 4000).await;
    assert_eq!(needs, vec![ROOT.to_string(), DEP.to_string()]);
    assert_eq!(
        f.row(DEP).await,
        Some((1, Some(epoch))),
        "mark cleared too early"
    );
    // The session shields them from the sweep while it is pending…
    assert_eq!(f.sweep(i64::MAX).await, 0);
    assert!(f.in_bucket(DEP).await);
    // …and the commit, with the bytes verified, clears the marks.
    assert!(pending::complete(&f.db, id, 5000).await.unwrap().is_some());
    assert_eq!(f.row(DEP).await.unwrap().1, None);
}

on_both!(sweep_deletes_marked_objects_past_grace_bytes_and_rows);
async fn sweep_deletes_marked_objects_past_grace_bytes_and_rows(f: Fixture) {
    f.push(ROOT, &closure(), 1000).await;
    f.mark(2000, 3000).await;
    assert_eq!(f.sweep(2999).await, 0, "within the grace period");
    assert!(f.in_bucket(ROOT).await);
    assert_eq!(f.sweep(3000).await, 2);
    assert!(!f.in_bucket(ROOT).await && !f.in_bucket(DEP).await);
    assert_eq!(f.row(ROOT).await, None);
    let refs: i64 = sqlx::query("SELECT COUNT(*) FROM refs")
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(refs, 0);
}

on_both!(a_new_root_over_a_marked_object_saves_it);
async fn a_new_root_over_a_marked_object_saves_it(f: Fixture) {
    f.push(ROOT, &closure(), 1000).await;
    f.mark(2000, 3000).await;
    f.push(OTHER, &[object(OTHER, &[DEP]), object(DEP, &[])], 3500)
        .await;
    assert_eq!(
        f.sweep(i64::MAX).await,
        1,
        "only the expired root's own object goes"
    );
    assert!(f.in_bucket(DEP).await);
    assert_eq!(f.row(DEP).await.unwrap().1, None);
}

on_both!(pins_keep_old_roots_and_refuse_closures_being_collected);
async fn pins_keep_old_roots_and_refuse_closures_being_collected(f: Fixture) {
    f.push(ROOT, &closure(), 1000).await;
    let missing = "33333333333333333333333333333333.narinfo";
    assert_eq!(
        pins::create(&f.db, "none", "/nix/store/x", missing, 1500)
            .await
            .unwrap(),
        PinOutcome::NotPushed
    );
    assert_eq!(
        pins::create(&f.db, "keep", "/nix/store/x", ROOT, 1500)
            .await
            .unwrap(),
        PinOutcome::Pinned
    );
    assert_eq!(db::gc::expire_roots(&f.db, 2000, false).await.unwrap(), 0);
    f.mark(2000, 3000).await;
    assert_eq!(f.row(DEP).await.unwrap().1, None, "pinned closure marked");
    assert!(pins::delete(&f.db, "keep").await.unwrap());
    f.mark(2000, 3000).await;
    assert!(matches!(
        pins::create(&f.db, "late", "/nix/store/x", ROOT, 3500).await.unwrap(),
        PinOutcome::Incomplete(keys) if keys.len() == 2
    ));
}

on_both!(abandoned_sessions_go_and_their_uploads_are_swept);
async fn abandoned_sessions_go_and_their_uploads_are_swept(f: Fixture) {
    f.push(DEP, &[object(DEP, &[])], 1000).await;
    let (_id, needs) = f.start(ROOT, &closure(), 1000).await;
    assert_eq!(needs, vec![ROOT.to_string()]);
    let young = f.start(OTHER, &[object(OTHER, &[])], 9000).await;
    let (sessions, _) = pending::delete_started_before(&f.db, 5000, 9500)
        .await
        .unwrap();
    assert_eq!(sessions, 1);
    assert!(
        f.row(ROOT).await.unwrap().1.is_some(),
        "upload recorded for the sweep"
    );
    assert_eq!(
        f.row(DEP).await.unwrap().1,
        None,
        "committed objects untouched"
    );
    assert_eq!(
        f.row(OTHER).await,
        None,
        "the young session's upload untouched"
    );
    assert_eq!(f.sweep(9500).await, 1);
    assert!(!f.in_bucket(ROOT).await && f.in_bucket(DEP).await);
    assert!(pending::complete(&f.db, young.0, 9600)
        .await
        .unwrap()
        .is_some());
}

on_both!(runs_are_exclusive_and_a_dry_run_changes_nothing);
async fn runs_are_exclusive_and_a_dry_run_changes_nothing(f: Fixture) {
    f.push(ROOT, &closure(), 1000).await;
    let held = RunLock::acquire(&f.db).await.unwrap().unwrap();
    let options = GcOptions {
        older_than: Duration::ZERO,
        failed_uploads_older_than: Duration::from_secs(3600),
        grace: Duration::ZERO,
        dry_run: true,
    };
    assert!(matches!(
        gc::run(&f.db, &f.storage, &options).await,
        Err(gc::GcError::Busy)
    ));
    held.release().await.unwrap();
    let dry = gc::run(&f.db, &f.storage, &options).await.unwrap();
    assert_eq!((dry.roots_expired, dry.objects_marked), (1, 2));
    assert_eq!(f.row(ROOT).await, Some((1, None)));
    let real = gc::run(
        &f.db,
        &f.storage,
        &GcOptions {
            dry_run: false,
            ..options
        },
    )
    .await
    .unwrap();
    assert_eq!((real.roots_expired, real.objects_deleted), (1, 2));
    let stats = db::gc_stats::read(&f.db).await.unwrap();
    assert_eq!((stats.runs_succeeded, stats.objects_deleted), (1, 2));
}

on_both!(a_sweep_in_small_batches_deletes_each_candidate_once_and_keeps_the_live);
async fn a_sweep_in_small_batches_deletes_each_candidate_once_and_keeps_the_live(f: Fixture) {
    // 300 dead closures of two objects each and one live one: the tables span several
    // pages, so on PostgreSQL each lane marks and gathers its own range of them, and
    // batches of 7 spread the 600 candidates over both sweep lanes.
    let dead: Vec<(String, String)> = (0..300)
        .map(|i| (format!("{i:032}.narinfo"), format!("nar/{i:052}.nar.zst")))
        .collect();
    for (narinfo, nar) in &dead {
        f.push(narinfo, &[object(narinfo, &[nar]), object(nar, &[])], 1000)
            .await;
    }
    f.push(OTHER, &[object(OTHER, &[DEP]), object(DEP, &[])], 5000)
        .await;
    if f.db.backend() == db::Backend::Postgres {
        for table in ["objects", "refs"] {
            let pages: i64 =
                sqlx::query("SELECT CAST(pg_relation_size(CAST($1 AS regclass)) / 8192 AS BIGINT)")
                    .bind(table)
                    .fetch_one(f.db.pool())
                    .await
                    .unwrap()
                    .get(0);
            assert!(pages >= 4, "{table} spans {pages} pages");
        }
    }
    assert_eq!(f.mark(2000, 6000).await.1, 600);
    let mut summary = gc::GcSummary::default();
    gc::sweep_in_batches(&f.db, &f.storage, 6000, 7, &mut summary)
        .await
        .unwrap();
    assert_eq!(
        (summary.objects_deleted, summary.bytes_deleted),
        (600, 2400)
    );
    assert_eq!(summary.failures, 0);
    for (narinfo, nar) in &dead {
        assert_eq!(f.row(narinfo).await, None);
        assert!(!f.in_bucket(nar).await);
    }
    for key in [OTHER, DEP] {
        assert!(f.row(key).await.is_some() && f.in_bucket(key).await);
    }
    let refs: i64 = sqlx::query("SELECT COUNT(*) FROM refs")
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(refs, 1, "only the live closure's reference is left");
    // The sweep's shared tables are gone with it.
    assert_eq!(f.sweep(6000).await, 0);
    if f.db.backend() == db::Backend::Postgres {
        let left: i64 = sqlx::query(
            "SELECT COUNT(*) FROM pg_class WHERE relname IN ('gc_sweep', 'gc_sweep_refs')",
        )
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .get(0);
        assert_eq!(left, 0);
    }
}

/// A database user who may not create tables in the schema (PostgreSQL 15's default
/// for anyone but the database's owner) still collects: on one connection, with
/// temporary work tables. The same run with unlogged tables would fail with
/// "permission denied for schema public".
#[tokio::test]
async fn a_user_without_create_on_the_schema_collects_on_one_connection() {
    let f = fixture(Some("gc_without_create")).await;
    for i in 0..50 {
        let (narinfo, nar) = (format!("{i:032}.narinfo"), format!("nar/{i:052}.nar.zst"));
        f.push(
            &narinfo,
            &[object(&narinfo, &[&nar]), object(&nar, &[])],
            1000,
        )
        .await;
    }
    f.push(OTHER, &[object(OTHER, &[DEP]), object(DEP, &[])], now_ms())
        .await;
    let role = format!("gc_runtime_{}", std::process::id());
    for sql in [
        format!("CREATE ROLE {role} LOGIN"),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_string(),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(f.db.pool())
            .await
            .unwrap();
    }
    let url = f
        .url
        .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    let restricted = Db::connect(&url).await.unwrap();
    let may_create: bool = sqlx::query("SELECT has_schema_privilege(current_schema(), 'CREATE')")
        .fetch_one(restricted.pool())
        .await
        .unwrap()
        .get(0);
    assert!(!may_create);
    let options = GcOptions {
        older_than: Duration::from_secs(3600),
        failed_uploads_older_than: Duration::from_secs(3600),
        grace: Duration::ZERO,
        dry_run: false,
    };
    let summary = gc::run(&restricted, &f.storage, &options).await.unwrap();
    assert_eq!((summary.roots_expired, summary.objects_deleted), (50, 100));
    assert!(f.row(OTHER).await.is_some() && f.in_bucket(DEP).await);
    assert_eq!(f.row(&format!("{:032}.narinfo", 7)).await, None);
    restricted.pool().close().await;
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(f.db.pool())
            .await
            .unwrap();
    }
}

fn now_ms() -> i64 {
    db::now_ms()
}
