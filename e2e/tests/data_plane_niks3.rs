// Needs `larder serve` from the data-plane work in progress; enabled with the feature.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

//! The unchanged niks3 client pushes to a Larder worker; the real Nix substitutes from it.
//!
//! Runs on both backends: PostgreSQL + Garage, and the embedded SQLite + folder default.

use larder_e2e::larder::{Backend, Worker};
use larder_e2e::nix::{Nix, PathSpec};
use larder_e2e::process::run;

fn closure_specs() -> Vec<PathSpec> {
    vec![
        PathSpec::new("leaf", 4096, &[]),
        PathSpec::new("big", 12 * 1024 * 1024, &[0]), // above the 10 MiB multipart threshold
        PathSpec::new("root", 1000, &[0, 1]),
    ]
}

fn niks3_push(worker: &Worker, paths: &[String]) -> String {
    let token_file = worker.data_dir.join("niks3-token");
    std::fs::write(&token_file, &worker.token).unwrap();
    let mut cmd = larder_e2e::niks3::client_command(&worker.url, &token_file);
    // niks3 runs `nix path-info`: give it the tests' Nix configuration.
    cmd.env("NIX_CONF_DIR", Nix::shared().conf_dir())
        .env("NIX_REMOTE", "local");
    run("niks3 push", cmd.arg("push").args(paths))
}

/// Every stored object with its size and modification time: a re-upload changes it.
/// The worker's own binary cache index journal segments are left out: it publishes them
/// by itself, whenever pushes have changed the cache.
fn stored_objects(worker: &Worker) -> Vec<(String, u64, String)> {
    let mut found = stored_files(worker);
    found.retain(|(key, _, _)| !key.contains("nix-cache-index/"));
    found
}

fn stored_files(worker: &Worker) -> Vec<(String, u64, String)> {
    match &worker.backend {
        Backend::Embedded => {
            let mut found = Vec::new();
            let mut dirs = vec![worker.data_dir.join("objects")];
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let entry = entry.unwrap();
                    let meta = entry.metadata().unwrap();
                    if meta.is_dir() {
                        dirs.push(entry.path());
                    } else {
                        let modified = format!("{:?}", meta.modified().unwrap());
                        found.push((entry.path().display().to_string(), meta.len(), modified));
                    }
                }
            }
            found.sort();
            found
        }
        Backend::Postgres { bucket, .. } => {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let mut found: Vec<(String, u64, String)> = bucket
                    .list()
                    .await
                    .iter()
                    .map(|o| {
                        (
                            o.key().unwrap_or_default().to_string(),
                            o.size().unwrap_or_default() as u64,
                            format!("{:?}", o.last_modified()),
                        )
                    })
                    .collect();
                found.sort();
                found
            })
        }
    }
}

fn scenario(test: &str, backend: Backend) {
    let nix = Nix::shared();
    let paths = nix.build_closure(test, &closure_specs());
    let worker = Worker::start(test, backend, &[]);
    niks3_push(&worker, &[paths[2].clone()]);
    worker.substitute_and_compare(test, &paths);

    let before = stored_objects(&worker);
    assert!(
        before.len() >= 9,
        "3 paths need narinfo, NAR and listing each: {before:?}"
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    niks3_push(&worker, &[paths[2].clone()]);
    assert_eq!(
        stored_objects(&worker),
        before,
        "a second push uploaded again"
    );
}

#[test]
fn niks3_client_pushes_and_nix_substitutes_on_postgres_and_garage() {
    let backend = Backend::Postgres {
        database: larder_e2e::postgres::database("niks3-pg"),
        bucket: larder_e2e::garage::bucket("niks3-pg"),
    };
    scenario("niks3-pg", backend);
}

#[test]
fn niks3_client_pushes_and_nix_substitutes_on_the_embedded_default() {
    scenario("niks3-embedded", Backend::Embedded);
}

/// `larder push` against niks3-server itself: it has no file declarations, so the push
/// uploads through the session's URLs (unchecked by the storage, as niks3's client does).
#[test]
fn larder_push_works_against_niks3_server() {
    use larder_e2e::niks3::{Niks3Server, S3Bucket};
    let test = "larder-to-niks3";
    let nix = Nix::shared();
    let paths = nix.build_closure(test, &closure_specs());
    let bucket = larder_e2e::garage::bucket(test);
    let server = Niks3Server::start(
        &larder_e2e::postgres::database(test),
        &S3Bucket {
            endpoint: bucket.endpoint.clone(),
            region: bucket.region.clone(),
            bucket: bucket.name.clone(),
            access_key: bucket.access_key.clone(),
            secret_key: bucket.secret_key.clone(),
        },
        None,
    );
    let push = || {
        let mut cmd = std::process::Command::new(larder_e2e::larder::larder_bin());
        cmd.args(["push", "--json", "--quiet", "--server", server.url()])
            .arg("--token-file")
            .arg(server.token_file())
            .arg(&paths[2])
            .env("NIX_CONF_DIR", nix.conf_dir())
            .env("NIX_REMOTE", "local");
        let out = run("larder push to niks3-server", &mut cmd);
        let summary: serde_json::Value =
            serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap();
        summary
    };
    let first = push();
    assert_eq!(first["paths_total"], 3, "{first}");
    assert_eq!(first["paths_uploaded"], 3, "{first}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let keys = runtime.block_on(bucket.keys());
    for path in &paths {
        let base = path.trim_start_matches("/nix/store/");
        let narinfo = format!("{}.narinfo", &base[..32]);
        assert!(keys.contains(&narinfo), "{narinfo} not in {keys:?}");
    }
    let second = push();
    assert_eq!(second["objects_uploaded"], 0, "{second}");
}
