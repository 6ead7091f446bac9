//! The push client against a real `larder serve`, then the real Nix substitutes what it
//! pushed with signatures required. Runs on the embedded default (SQLite + folder, uploads
//! through the worker's signed URLs) and on PostgreSQL + Garage (presigned S3 PUTs that
//! carry `x-amz-checksum-sha256`, multipart for the big path).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::path::PathBuf;

use larder_e2e::larder::{Backend, Worker};
use larder_e2e::nix::{Nix, PathSpec};
use larder_worker::nix::{NarInfo, NixHash};
use larder_worker::push::{push, PushOptions, PushSummary};

fn closure_specs() -> Vec<PathSpec> {
    vec![
        PathSpec::new("leaf", 4096, &[]),
        PathSpec::new("big", 23 * 1024 * 1024, &[0]), // multipart: 3 parts of 10 MiB
        PathSpec::new("root", 1000, &[0, 1]),
    ]
}

fn push_to(worker: &Worker, paths: &[&str]) -> PushSummary {
    let mut options = PushOptions::new(
        worker.url.clone(),
        paths.iter().map(PathBuf::from).collect(),
    );
    options.token = Some(worker.token.clone());
    // A small budget sends the big NAR through a temporary file.
    options.memory_budget = 1024 * 1024;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // `nix path-info` must see the tests' Nix configuration.
    std::env::set_var("NIX_CONF_DIR", Nix::shared().conf_dir());
    std::env::set_var("NIX_REMOTE", "local");
    runtime
        .block_on(push(options))
        .unwrap_or_else(|e| panic!("push failed: {e}\nworker log:\n{}", worker.log()))
}

fn get(worker: &Worker, path: &str) -> Vec<u8> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let response = reqwest::get(format!("{}/{path}", worker.url))
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.bytes().await.unwrap().to_vec()
    })
}

fn scenario(test: &str, backend: Backend) {
    let nix = Nix::shared();
    let paths = nix.build_closure(test, &closure_specs());
    let worker = Worker::start(test, backend, &[]);

    // A `./result`-style symlink resolves to its store path.
    let link = worker.data_dir.join("result");
    std::os::unix::fs::symlink(&paths[2], &link).unwrap();
    let first = push_to(&worker, &[link.to_str().unwrap()]);
    assert_eq!(first.paths_total, 3, "{first:?}");
    assert_eq!(first.paths_uploaded, 3, "{first:?}");
    // narinfo, NAR and listing per path (the test builders print nothing: no logs).
    assert_eq!(first.objects_uploaded, 9, "{first:?}");
    assert!(first.bytes_uploaded > 23 * 1024 * 1024, "{first:?}");

    worker.substitute_and_compare(test, &paths);

    // The narinfo carries FileHash/FileSize of the NAR file the cache serves.
    let hash_part = &paths[1]["/nix/store/".len()..][..32];
    let info = NarInfo::parse_bytes(&get(&worker, &format!("{hash_part}.narinfo"))).unwrap();
    let nar = get(&worker, &info.url);
    assert_eq!(info.file_size, Some(nar.len() as u64));
    assert_eq!(info.file_hash, Some(NixHash::of(&nar)));
    assert!(info.url.ends_with(".nar.zst"), "{}", info.url);
    assert_eq!(
        zstd::stream::decode_all(&nar[..]).unwrap().len() as u64,
        info.nar_size
    );

    // Everything is cached now: nothing goes up.
    let second = push_to(&worker, &[paths[2].as_str(), paths[0].as_str()]);
    assert_eq!(
        (
            second.paths_total,
            second.paths_uploaded,
            second.objects_uploaded,
            second.bytes_uploaded
        ),
        (3, 0, 0, 0),
        "{second:?}"
    );
}

#[test]
fn push_client_uploads_and_nix_substitutes_on_the_embedded_default() {
    scenario("push-embedded", Backend::Embedded);
}

#[test]
fn push_client_uploads_and_nix_substitutes_on_postgres_and_garage() {
    let backend = Backend::Postgres {
        database: larder_e2e::postgres::database("push-pg"),
        bucket: larder_e2e::garage::bucket("push-pg"),
    };
    scenario("push-pg", backend);
}
