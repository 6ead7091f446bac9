//! A GC run lock whose holder is killed (SIGKILL: no release, no destructor) is free for
//! the next run at once, on SQLite and on PostgreSQL: "a crashed run is safe to rerun".
//!
//! The holder is this test binary run again as a child (`LARDER_HOLD_LOCK_URL` set): it
//! takes the lock, says so on stdout and waits to be killed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use larder_worker::db::Db;
use larder_worker::gc::lock::RunLock;

const HOLD: &str = "LARDER_HOLD_LOCK_URL";
/// What the holder prints once it holds the lock (after libtest's `test holder ... `).
const HELD: &str = "run lock held";

/// In the child: take the lock and wait. In the test: nothing.
#[tokio::test]
async fn holder() {
    let Ok(url) = std::env::var(HOLD) else {
        return;
    };
    let db = Db::connect(&url).await.unwrap();
    let _lock = RunLock::acquire(&db)
        .await
        .unwrap()
        .expect("the lock is free");
    println!("{HELD}");
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
}

async fn killed_holder_frees_the_lock(url: String) {
    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "holder", "--nocapture", "--test-threads", "1"])
        .env(HOLD, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.contains(HELD))),
        "the holder never took the lock"
    );
    assert!(
        RunLock::acquire(&db).await.unwrap().is_none(),
        "the lock is exclusive while its holder lives"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // PostgreSQL notices the closed connection a moment after the kill.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(lock) = RunLock::acquire(&db).await.unwrap() {
            lock.release().await.unwrap();
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock of a killed run is still held: no run can follow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_lock_of_a_killed_run_is_free_on_sqlite() {
    let dir = larder_e2e::process::temp_dir("gc-lock-crash");
    killed_holder_frees_the_lock(format!("sqlite://{}", dir.join("larder.db").display())).await;
}

#[tokio::test]
async fn the_lock_of_a_killed_run_is_free_on_postgres() {
    let url = tokio::task::spawn_blocking(|| larder_e2e::postgres::database("gc-lock-crash"))
        .await
        .unwrap();
    killed_holder_frees_the_lock(url).await;
}
