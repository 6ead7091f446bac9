// Needs `larder serve` from the data-plane work in progress; enabled with the feature.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

//! Garbage collection on both backends: expired roots go, young roots keep their whole
//! closure (shared dependencies included), a dry run changes nothing, and the real Nix
//! still substitutes every live closure afterwards.

use larder_e2e::larder::{larder_bin, Backend, Worker};
use larder_e2e::nix::{Nix, PathSpec};
use larder_e2e::process::run;

fn push(worker: &Worker, path: &str) {
    let token_file = worker.data_dir.join("niks3-token");
    std::fs::write(&token_file, &worker.token).unwrap();
    let mut cmd = larder_e2e::niks3::client_command(&worker.url, &token_file);
    cmd.env("NIX_CONF_DIR", Nix::shared().conf_dir())
        .env("NIX_REMOTE", "local");
    run("niks3 push", cmd.arg("push").arg(path));
}

fn gc(worker: &Worker, flags: &[&str]) -> serde_json::Value {
    let mut cmd = std::process::Command::new(larder_bin());
    cmd.arg("gc")
        .args(flags)
        .arg("--json")
        .arg("--data-dir")
        .arg(&worker.data_dir);
    if let Backend::Postgres { database, bucket } = &worker.backend {
        cmd.args(["--database", database, "--s3-bucket", &bucket.name])
            .args([
                "--s3-endpoint",
                &bucket.endpoint,
                "--s3-region",
                &bucket.region,
                "--s3-path-style",
            ])
            .args(["--s3-access-key-id", &bucket.access_key])
            .args(["--s3-secret-access-key", &bucket.secret_key]);
    }
    let out = run("larder gc", &mut cmd);
    serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap()
}

fn narinfo_status(worker: &Worker, path: &str) -> u16 {
    let hash = &path["/nix/store/".len().."/nix/store/".len() + 32];
    let url = format!("{}/{hash}.narinfo", worker.url);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async { reqwest::get(url).await.unwrap().status().as_u16() })
}

fn substitute(worker: &Worker, test: &str, path: &str) {
    let nix = Nix::shared();
    let store = nix.fresh_store(test);
    run(
        "nix copy --from the worker",
        nix.command("nix")
            .args(["copy", "--from", &worker.url, "--to"])
            .arg(&store)
            .args(["--option", "trusted-public-keys", &worker.public_key])
            .arg(path),
    );
}

fn scenario(test: &str, backend: Backend) {
    let nix = Nix::shared();
    // old: shared <- old-root; young: shared <- young-root
    let old = nix.build_closure(
        &format!("{test}-old"),
        &[
            PathSpec::new("shared", 2000, &[]),
            PathSpec::new("old-root", 3000, &[0]),
        ],
    );
    let worker = Worker::start(test, backend, &[]);
    push(&worker, &old[1]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let young = nix.build_closure(
        &format!("{test}-young"),
        &[PathSpec::new("young-root", 1000, &[])],
    );
    // The young closure also reaches `shared`: built separately, pushed as a root of its own.
    push(&worker, &young[0]);
    push(&worker, &old[0]);

    let dry = gc(
        &worker,
        &["--older-than", "2s", "--grace", "0s", "--dry-run"],
    );
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["roots_expired"], 1, "{dry}");
    assert!(dry["objects_marked"].as_u64().unwrap() >= 2, "{dry}");
    assert_eq!(
        narinfo_status(&worker, &old[1]),
        200,
        "dry run deleted something"
    );

    let real = gc(&worker, &["--older-than", "2s", "--grace", "0s"]);
    assert_eq!(real["roots_expired"], 1, "{real}");
    assert!(real["objects_deleted"].as_u64().unwrap() >= 2, "{real}");
    assert_eq!(
        narinfo_status(&worker, &old[1]),
        404,
        "expired root survived: {real}"
    );
    // `shared` was pushed again as a root of its own 3 s later: it stays, whole.
    assert_eq!(narinfo_status(&worker, &old[0]), 200);
    assert_eq!(narinfo_status(&worker, &young[0]), 200);
    substitute(&worker, &format!("{test}-after"), &old[0]);
    substitute(&worker, &format!("{test}-after-young"), &young[0]);

    // A run with nothing to do deletes nothing.
    let again = gc(&worker, &["--older-than", "2s", "--grace", "0s"]);
    assert_eq!(again["objects_deleted"], 0, "{again}");
}

#[test]
fn gc_on_postgres_and_garage() {
    let backend = Backend::Postgres {
        database: larder_e2e::postgres::database("gc-pg"),
        bucket: larder_e2e::garage::bucket("gc-pg"),
    };
    scenario("gc-pg", backend);
}

#[test]
fn gc_on_the_embedded_default() {
    scenario("gc-embedded", Backend::Embedded);
}
