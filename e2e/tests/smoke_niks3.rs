//! The niks3 client and server binaries run (their real use comes in the
//! compatibility tests and the benchmarks).
#![allow(clippy::unwrap_used)]

use std::process::Command;

use larder_e2e::niks3;

fn help(mut cmd: Command) -> String {
    let output = cmd.arg("--help").output().unwrap();
    assert!(output.status.success(), "{cmd:?}: {output:?}");
    // Go's flag package and niks3's own usage both print help on stderr.
    let text = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    text
}

#[test]
fn niks3_client_help_lists_push() {
    let text = help(Command::new(niks3::client_binary()));
    assert!(text.contains("push"), "{text}");
}

#[test]
fn niks3_server_help_lists_its_database_and_s3_flags() {
    let text = help(Command::new(niks3::server_binary()));
    for flag in [
        "-db",
        "-s3-endpoint",
        "-s3-bucket",
        "-api-token-path",
        "-http-addr",
    ] {
        assert!(text.contains(flag), "{flag} missing from:\n{text}");
    }
}
