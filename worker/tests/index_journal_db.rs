//! The index journal in the database, on SQLite and on a real PostgreSQL: commits record
//! `+` for the narinfos they add, sweeps `-` for those they delete, in their own
//! transactions; the publisher's assignment keeps each hash's changes in order.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use larder_worker::db::journal::{self, JournalRow};
use larder_worker::db::pending;
use larder_worker::db::{gc, Db};

mod index_support;

use index_support::{nar, narinfo, postgres, push, sqlite};

const A: &str = "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi";
const B: &str = "00000000000000000000000000000001";

/// Assigns every waiting row to `segment` as a publisher would, returning them.
async fn publish(db: &Db, segment: i64) -> Vec<JournalRow> {
    let mut tx = journal::begin_locked(db, false).await.unwrap().unwrap();
    let rows = journal::assign(&mut tx, segment, 1000).await.unwrap();
    tx.commit().await.unwrap();
    rows
}

fn row(op: &str, hash: &str) -> JournalRow {
    JournalRow {
        op: op.into(),
        hash: hash.into(),
    }
}

async fn scenario(db: Db) {
    let nar_a = nar('1');
    let a = narinfo(A, std::slice::from_ref(&nar_a.key));
    // A session that is never committed journals nothing.
    pending::start(&db, &a.key, &[a.clone(), nar_a.clone()], 1)
        .await
        .unwrap();
    assert_eq!(publish(&db, 300).await, vec![]);
    pending::delete_started_before(&db, 2, 3).await.unwrap();

    push(&db, &[a.clone(), nar_a.clone()], 2).await;
    assert_eq!(publish(&db, 300).await, vec![row("+", A)]);
    // Pushing it again adds nothing: it was present, so the index has it already.
    push(&db, &[a.clone(), nar_a.clone()], 3).await;
    assert_eq!(publish(&db, 300).await, vec![]);

    // B arrives; then GC collects A (its root expired) and its NAR.
    let b = narinfo(B, &[]);
    push(&db, std::slice::from_ref(&b), 4).await;
    assert_eq!(gc::expire_roots(&db, 4, false).await.unwrap(), 1);
    let epoch = gc::next_epoch(&db).await.unwrap();
    let (marked, _) = gc::mark(&db, epoch, 4, 5, false).await.unwrap();
    assert_eq!(marked, 2);
    let mut sweeper = gc::start_sweep(&db, 5).await.unwrap();
    let batch = sweeper.next_batch(100).await.unwrap().unwrap();
    let doomed: Vec<String> = batch.doomed.iter().map(|d| d.key.clone()).collect();
    batch.commit(&doomed).await.unwrap();

    // A re-push after the deletion comes after it, even in the same segment.
    push(&db, &[a.clone(), nar_a.clone()], 6).await;
    assert_eq!(
        publish(&db, 600).await,
        vec![row("+", B), row("-", A), row("+", A)]
    );
    let mut tx = journal::begin_locked(&db, true).await.unwrap().unwrap();
    assert_eq!(
        journal::segment_rows(&mut tx, 600).await.unwrap(),
        vec![row("+", B), row("-", A), row("+", A)]
    );
    assert_eq!(
        journal::segment_rows(&mut tx, 300).await.unwrap(),
        vec![row("+", A)]
    );
    let mut added = journal::added_since(&mut tx, 600).await.unwrap();
    added.sort();
    assert_eq!(added, vec![B.to_string(), A.to_string()]);
    tx.commit().await.unwrap();

    // Rows of segments no client reads any more can go.
    assert_eq!(journal::delete_before(&db, 600).await.unwrap(), 1);
    assert_eq!(publish(&db, 900).await, vec![]);
}

#[tokio::test]
async fn journal_rows_on_sqlite() {
    let (_dir, db) = sqlite().await;
    scenario(db).await;
}

#[tokio::test]
async fn journal_rows_on_postgres() {
    scenario(postgres("journal-rows").await).await;
}

#[tokio::test]
async fn the_journal_lock_is_exclusive_on_postgres() {
    let db = postgres("journal-lock").await;
    let held = journal::begin_locked(&db, false).await.unwrap();
    assert!(held.is_some());
    assert!(journal::begin_locked(&db, false).await.unwrap().is_none());
    // Rolled back explicitly: dropping a transaction only queues the rollback, so the
    // lock could still be held when the next attempt comes (a flaky failure).
    held.unwrap().rollback().await.unwrap();
    assert!(journal::begin_locked(&db, false).await.unwrap().is_some());
}

#[tokio::test]
async fn writer_state_round_trips() {
    let (_dir, db) = sqlite().await;
    let mut tx = journal::begin_locked(&db, true).await.unwrap().unwrap();
    assert_eq!(
        journal::writer_state(&mut tx).await.unwrap(),
        journal::WriterState::default()
    );
    let state = journal::WriterState {
        writer_segment: 300,
        manifest_segment: 600,
        manifest_at: 601,
    };
    journal::set_writer_state(&mut tx, &state).await.unwrap();
    assert_eq!(journal::writer_state(&mut tx).await.unwrap(), state);
    tx.commit().await.unwrap();
}
