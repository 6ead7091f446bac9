//! Larder's run: the real `larder gc` against its own database and the stub S3.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::cluster::{cancel_backends, database_size, db_name, Cluster};
use crate::dataset::{Dataset, OLDER_THAN_HOURS};
use crate::{load, load_only, now_ms, probe, secs, stub_s3, Run};

pub async fn bench_larder(
    pg: &Cluster,
    ds: &Dataset,
    stub: &stub_s3::StubS3,
    timeout: Duration,
) -> Run {
    let admin_url = pg.admin_url.clone();
    let url = pg.database("gc_bench_larder").await;
    let name = db_name(&url);
    let larder_bin = std::env::var("LARDER_BENCH_BIN")
        .or_else(|_| std::env::var("LARDER_BIN"))
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_larder").into());
    // The schema of the binary under test (which may be newer than this benchmark's
    // own copy of the worker library).
    let migrated = tokio::process::Command::new(&larder_bin)
        .args(["migrate", "--database", &url])
        .output()
        .await
        .unwrap();
    assert!(
        migrated.status.success(),
        "larder migrate failed: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let started = Instant::now();
    let loaded = load::larder(&url, ds, now_ms()).await;
    println!(
        "larder: loaded {loaded:?} in {}; database {}",
        secs(started.elapsed()),
        database_size(&admin_url, &name).await
    );

    if load_only() {
        pg.finish(&name).await;
        return Run::default();
    }
    let mut run = Run {
        load_before: probe::load_average(),
        ..Run::default()
    };
    let temp_before = probe::temp_usage(&admin_url, &name).await;
    let calls_before = stub.counters.snapshot();
    let mut cmd = tokio::process::Command::new(larder_bin);
    let older_than = format!("{OLDER_THAN_HOURS}h");
    cmd.args(["gc", "--older-than", &older_than, "--grace", "0s", "--json"])
        .args([
            "--database",
            &url,
            "--s3-bucket",
            "bench",
            "--s3-endpoint",
            &stub.url,
        ])
        .args(["--s3-region", "us-east-1", "--s3-path-style"])
        .args([
            "--s3-access-key-id",
            "bench",
            "--s3-secret-access-key",
            "bench",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LARDER_") {
            cmd.env_remove(name);
        }
    }
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    let (stop, stopped) = watch::channel(false);
    let sampler = tokio::spawn(probe::sample(admin_url.clone(), pid, name.clone(), stopped));
    let output = tokio::time::timeout(timeout, child.wait_with_output()).await;
    run.total = started.elapsed();
    let _ = stop.send(true);
    run.peaks = sampler.await.unwrap();
    match output {
        Err(_) => {
            run.timed_out = true;
            cancel_backends(&admin_url, &name).await;
        }
        Ok(output) => {
            let output = output.unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "larder gc failed ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            let summary: serde_json::Value =
                serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
            println!("larder: summary {summary}");
            let ms = |field: &str| summary[field].as_u64().map(Duration::from_millis);
            run.mark = ms("mark_ms").unwrap_or_default();
            run.sweep = ms("sweep_ms").unwrap_or_default();
            run.bucket = ms("bucket_ms");
            run.roots_expired = summary["roots_expired"].as_u64().unwrap_or(0);
            run.marked = summary["objects_marked"].as_u64().unwrap_or(0);
            run.deleted = summary["objects_deleted"].as_u64().unwrap_or(0);
        }
    }
    let temp_after = probe::temp_usage(&admin_url, &name).await;
    run.temp = (temp_after.0 - temp_before.0, temp_after.1 - temp_before.1);
    let calls_after = stub.counters.snapshot();
    run.bucket_calls = (
        calls_after.0 - calls_before.0,
        calls_after.1 - calls_before.1,
    );
    println!("larder: {run:?}");
    pg.finish(&name).await;
    run
}
