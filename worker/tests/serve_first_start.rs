//! `larder serve` killed during its first start, between creating its generated signing
//! key, push token or upload secret and writing them, left empty files that stopped every
//! later start until someone deleted them. An empty generated file holds nothing anyone
//! used: the next start makes a new one and serves.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::process::Command;
use std::time::Duration;

use larder_e2e::process::{free_port, temp_dir, Service};

#[test]
fn empty_generated_files_of_a_killed_first_start_are_made_again() {
    let data = temp_dir("serve-first-start");
    std::fs::create_dir_all(data.join("objects")).unwrap();
    for file in ["signing-key", "push-token", "objects/.upload-secret"] {
        std::fs::write(data.join(file), "").unwrap();
    }
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_larder"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LARDER_") {
            cmd.env_remove(name);
        }
    }
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&data);
    let mut serve = Service::start("larder serve", cmd, &data.join("serve.log"));
    serve.wait_for_port(port, Duration::from_secs(60));
    let key = std::fs::read_to_string(data.join("signing-key")).unwrap();
    assert!(key.starts_with("larder-local-1:"), "{key:?}");
    let token = std::fs::read_to_string(data.join("push-token")).unwrap();
    assert_eq!(token.trim().len(), 48, "{token:?}");
    serve.kill();
    let leftovers: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
