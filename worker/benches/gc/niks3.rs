//! niks3's run: the real niks3-server, its GC started over HTTP and followed through
//! its status endpoint, against its own database and the stub S3.

use std::time::{Duration, Instant};

use larder_e2e::niks3::{Niks3Server, S3Bucket};
use tokio::sync::watch;

use crate::cluster::{cancel_backends, database_size, db_name, Cluster};
use crate::dataset::{Dataset, OLDER_THAN_HOURS};
use crate::{load, load_only, probe, secs, stub_s3, Run};

/// niks3-server's pid, found by the listen address only it was given.
fn niks3_pid(server: &Niks3Server) -> u32 {
    let addr = server.url().trim_start_matches("http://");
    let flag = format!("--http-addr={addr}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).any(|arg| arg == flag.as_bytes()) {
            return pid;
        }
    }
    panic!("no process listens with {flag}");
}

pub async fn bench_niks3(
    pg: &Cluster,
    ds: &Dataset,
    stub: &stub_s3::StubS3,
    timeout: Duration,
) -> Run {
    let admin_url = pg.admin_url.clone();
    let url = pg.database("gc_bench_niks3").await;
    let name = db_name(&url);
    let bucket = S3Bucket {
        endpoint: stub.url.clone(),
        region: "us-east-1".into(),
        bucket: "bench".into(),
        access_key: "bench".into(),
        secret_key: "bench-secret".into(),
    };
    // It migrates its schema before it listens.
    let server = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || Niks3Server::start(&url, &bucket, None))
            .await
            .unwrap()
    };
    let started = Instant::now();
    let loaded = load::niks3(&url, ds).await;
    println!(
        "niks3: loaded {loaded:?} in {}; database {}",
        secs(started.elapsed()),
        database_size(&admin_url, &name).await
    );

    if load_only() {
        drop(server);
        pg.finish(&name).await;
        return Run::default();
    }
    let pid = niks3_pid(&server);
    let token = std::fs::read_to_string(server.token_file()).unwrap();
    let token = token.trim();
    let http = reqwest::Client::new();
    let mut run = Run {
        load_before: probe::load_average(),
        ..Run::default()
    };
    let temp_before = probe::temp_usage(&admin_url, &name).await;
    let calls_before = stub.counters.snapshot();
    probe::reset_peak(pid);
    let (stop, stopped) = watch::channel(false);
    let sampler = tokio::spawn(probe::sample(admin_url.clone(), pid, name.clone(), stopped));
    let started = Instant::now();
    let response = http
        .delete(format!(
            "{}/api/closures?older-than={OLDER_THAN_HOURS}h&force=true",
            server.url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        202,
        "{:?}",
        response.text().await
    );
    let (mut orphans, mut marked, mut vacuum) = (None, None, None);
    let status = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status: serde_json::Value = http
            .get(format!("{}/api/gc/status", server.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let now = started.elapsed();
        match status["phase"].as_str() {
            Some("cleanup_orphan_objects") => {
                orphans.get_or_insert(now);
            }
            Some("vacuum_tables") => {
                vacuum.get_or_insert(now);
            }
            _ => {}
        }
        if status["stats"]["objects_marked_for_deletion"].as_u64() > Some(0) {
            marked.get_or_insert(now);
        }
        if status["state"] != "running" {
            break status;
        }
        if now > timeout {
            run.timed_out = true;
            break status;
        }
    };
    let end = started.elapsed();
    let _ = stop.send(true);
    run.peaks = sampler.await.unwrap();
    println!("niks3: status {status}");
    if run.timed_out {
        cancel_backends(&admin_url, &name).await;
    } else {
        assert_eq!(status["state"], "succeeded", "niks3 GC failed: {status}");
        let orphans = orphans.unwrap_or_default();
        let marked = marked.unwrap_or(orphans);
        let vacuum = vacuum.unwrap_or(end);
        run.niks3_before_mark = Some(orphans);
        run.mark = marked - orphans;
        run.sweep = vacuum - marked;
        run.vacuum = Some(end - vacuum);
        run.total = vacuum;
        let stats = &status["stats"];
        run.roots_expired = stats["old_closures_deleted"].as_u64().unwrap_or(0);
        run.marked = stats["objects_marked_for_deletion"].as_u64().unwrap_or(0);
        run.deleted = stats["objects_deleted_after_grace_period"]
            .as_u64()
            .unwrap_or(0);
    }
    if run.timed_out {
        run.total = end;
    }
    let temp_after = probe::temp_usage(&admin_url, &name).await;
    run.temp = (temp_after.0 - temp_before.0, temp_after.1 - temp_before.1);
    let calls_after = stub.counters.snapshot();
    run.bucket_calls = (
        calls_after.0 - calls_before.0,
        calls_after.1 - calls_before.1,
    );
    println!("niks3: {run:?}");
    drop(server);
    pg.finish(&name).await;
    run
}
