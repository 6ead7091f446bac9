//! The real Nix client builds salted closures that no other test shares.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use larder_e2e::nix::{Nix, PathSpec};

#[test]
fn builds_a_three_path_closure_and_lists_it() {
    let nix = Nix::shared();
    let specs = [
        PathSpec::new("leaf", 1000, &[]),
        PathSpec::new("middle", 2000, &[0]),
        PathSpec::new("root", 3000, &[0, 1]),
    ];
    let paths = nix.build_closure("smoke-nix", &specs);
    let info = nix.path_info(&[paths[2].clone()]);
    let listed: Vec<&str> = info
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{info}");
    for path in &paths {
        assert!(
            listed.contains(&path.as_str()),
            "{path} missing from {info}"
        );
    }
    let root = info
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["path"] == paths[2].as_str())
        .unwrap();
    let refs = root["references"].as_array().unwrap();
    assert_eq!(
        refs.len(),
        2,
        "root should reference leaf and middle: {root}"
    );

    // The same specs salted for another test are other store paths.
    let again = nix.build_closure("smoke-nix", &specs);
    assert_ne!(paths, again);
}
