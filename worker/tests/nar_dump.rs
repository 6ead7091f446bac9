//! The push client's NAR dumper against real Nix: same bytes as `nix-store --dump`,
//! and the NAR reader's listing, like the one the dumper makes as it walks, equals
//! `nix nar ls --json -R`.

// Helpers below are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use larder_worker::nix::listing::ListingBuilder;
use larder_worker::nix::nar::NarReader;
use larder_worker::nix::Listing;
use larder_worker::push::dump::{dump_path, dump_path_listed};

/// Runs a Nix tool; a missing Nix fails the test rather than skipping it.
fn nix(program: &str, args: &[&str]) -> Vec<u8> {
    let out = match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => panic!(
            "`{program}` is not on PATH: install Nix (`apt-get install -y nix-bin`) to run this test"
        ),
        Err(e) => panic!("running {program}: {e}"),
    };
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn nix_dump(path: &Path) -> Vec<u8> {
    nix("nix-store", &["--dump", path.to_str().unwrap()])
}

/// `nix nar ls --json -R <nar> /`, as a JSON value.
fn nix_listing(nar: &[u8]) -> serde_json::Value {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), nar).unwrap();
    let out = nix(
        "nix",
        &[
            "--extra-experimental-features",
            "nix-command",
            "nar",
            "ls",
            "--json",
            "-R",
            file.path().to_str().unwrap(),
            "/",
        ],
    );
    serde_json::from_slice(&out).unwrap()
}

fn write(path: &Path, data: &[u8], mode: u32) {
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with every kind of node and names whose byte order differs from a naive sort.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("share/doc/deep/er")).unwrap();
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    write(&root.join("bin/tool"), b"#!/bin/sh\necho hi\n", 0o755);
    // Group/other execute bits alone do not make a file executable for Nix.
    write(&root.join("bin/not-exec"), b"x", 0o644);
    write(&root.join("bin/user-exec-only"), b"y", 0o744);
    write(&root.join("empty"), b"", 0o644);
    write(&root.join("share/doc/deep/er/README"), &[b'r'; 4097], 0o444);
    // Over 64 KiB with a ragged end, to cross the dumper's chunk boundary.
    let big: Vec<u8> = (0..200_003u32).map(|i| (i * 31 % 251) as u8).collect();
    write(&root.join("share/big.bin"), &big, 0o644);
    for name in [
        "B",
        "a",
        "a.b",
        "a-b",
        "a_b",
        "Z",
        "ä",
        "z",
        "10",
        "9",
        "hm_..zlogout",
    ] {
        write(&root.join(name), name.as_bytes(), 0o644);
    }
    symlink("bin/tool", root.join("link-rel")).unwrap();
    symlink("/nix/store/does-not-exist", root.join("link-dangling")).unwrap();
    symlink("empty-dir", root.join("link-to-dir")).unwrap();
    write(&root.join("n".repeat(255)), b"long name", 0o644);
}

#[test]
fn dump_of_a_tree_is_byte_identical_to_nix_store_dump() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    build_tree(&root);

    let ours = dump_path(&root, Vec::new()).unwrap();
    let theirs = nix_dump(&root);
    assert_eq!(ours.len(), theirs.len(), "NAR sizes differ");
    assert!(ours == theirs, "NAR bytes differ from nix-store --dump");

    // The reader parses it back into the listing Nix makes of the same NAR.
    let listing = Listing::from_nar(ours.as_slice()).unwrap();
    let ours_json = serde_json::to_value(&listing.root).unwrap();
    assert_eq!(ours_json, nix_listing(&theirs));

    // The dumper's own listing, made during the walk, is the same, narOffsets included.
    let (again, walked) = dump_path_listed(&root, Vec::new(), ListingBuilder::default()).unwrap();
    assert!(again == ours);
    assert_eq!(walked, listing);
}

#[test]
fn single_file_symlink_and_empty_roots_match_too() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("file", 0o644, &b"hello\n"[..]),
        ("exe", 0o755, &b"#!/bin/sh\n"[..]),
        ("empty", 0o644, &b""[..]),
    ];
    for (name, mode, data) in cases {
        let p = dir.path().join(name);
        write(&p, data, mode);
        let (nar, walked) = dump_path_listed(&p, Vec::new(), ListingBuilder::default()).unwrap();
        assert_eq!(nar, nix_dump(&p), "{name}");
        assert_eq!(walked, Listing::from_nar(nar.as_slice()).unwrap(), "{name}");
    }
    let link = dir.path().join("link");
    symlink("file", &link).unwrap();
    assert_eq!(dump_path(&link, Vec::new()).unwrap(), nix_dump(&link));
    let empty_dir = dir.path().join("empty-dir");
    fs::create_dir(&empty_dir).unwrap();
    let nar = dump_path(&empty_dir, Vec::new()).unwrap();
    assert_eq!(nar, nix_dump(&empty_dir));
    // And every one of them reads back cleanly.
    let mut r = NarReader::new(nar.as_slice());
    while r.next().unwrap().is_some() {}
}
