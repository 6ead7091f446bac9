//! Memory and PostgreSQL-side measurements taken while a collector runs.

use std::time::Duration;

use sqlx::{Connection, PgConnection, Row};
use tokio::sync::watch;

/// A field of `/proc/<pid>/status` in kB (`VmHWM`, `VmRSS`, `RssAnon`).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resets a process's peak RSS (`VmHWM`) to its current RSS.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The highest values seen while sampling.
#[derive(Debug, Default, Clone, Copy)]
pub struct Peaks {
    /// Peak RSS of the collector process (its `VmHWM`), kB.
    pub process_hwm_kb: u64,
    /// Largest private memory (`RssAnon`) of one PostgreSQL backend serving the
    /// collector's database, kB: work_mem hash tables, sorts, the recursive CTE's table.
    pub backend_anon_kb: u64,
    /// Largest `VmHWM` of one such backend, kB; it includes the shared buffers it touched.
    pub backend_hwm_kb: u64,
}

/// Samples `pid` and the backends of database `database` every 100 ms until `stop`.
pub async fn sample(
    admin_url: String,
    pid: u32,
    database: String,
    mut stop: watch::Receiver<bool>,
) -> Peaks {
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    let mut peaks = Peaks::default();
    loop {
        if let Some(kb) = status_kb(pid, "VmHWM") {
            peaks.process_hwm_kb = peaks.process_hwm_kb.max(kb);
        }
        let backends = sqlx::query("SELECT pid FROM pg_stat_activity WHERE datname = $1")
            .bind(&database)
            .fetch_all(&mut admin)
            .await
            .unwrap_or_default();
        for row in backends {
            let backend = row.get::<i32, _>(0) as u32;
            if let Some(kb) = status_kb(backend, "RssAnon") {
                peaks.backend_anon_kb = peaks.backend_anon_kb.max(kb);
            }
            if let Some(kb) = status_kb(backend, "VmHWM") {
                peaks.backend_hwm_kb = peaks.backend_hwm_kb.max(kb);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => break,
        }
    }
    peaks
}

/// Temporary files PostgreSQL wrote for database `name` so far: (files, bytes).
pub async fn temp_usage(admin_url: &str, name: &str) -> (i64, i64) {
    let mut admin = PgConnection::connect(admin_url).await.unwrap();
    // Statistics reach the shared view when a backend reports them, at most a second
    // after its transaction.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let row = sqlx::query("SELECT temp_files, temp_bytes FROM pg_stat_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The machine's load averages, as `uptime` prints them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
