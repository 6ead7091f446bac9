//! One collector at a time across every worker sharing a database.

use crate::db::lease::{Lease, LockName};
use crate::db::{Db, DbError};

/// The run lock: advisory lock id "larderru" (distinct from the push/epoch lock), or on
/// SQLite the file `larder.db.gc_lease.lock`.
const RUN_LOCK: LockName = LockName {
    id: 0x6c61_7264_6572_7275, // "larderru"
    lease: "gc_lease",
    lease_ms: 6 * 3600 * 1000,
};

/// A held run lock; call [`RunLock::release`] when done. A run killed while holding it
/// frees it at once (the connection or the lock file closes with the process).
#[derive(Debug)]
pub struct RunLock(Lease);

impl RunLock {
    /// Takes the lock, or `None` when another run holds it.
    pub async fn acquire(db: &Db) -> Result<Option<RunLock>, DbError> {
        Ok(Lease::acquire(db, RUN_LOCK).await?.map(RunLock))
    }

    /// Gives the lock back.
    pub async fn release(self) -> Result<(), DbError> {
        self.0.release().await
    }
}
