//! Harness that starts the real components Larder's end-to-end tests run against.
//!
//! Each component runs once per test binary, on loopback, in a temporary directory,
//! and dies with the test process. Each test gets its own slice of it: a database,
//! a bucket and key, a namespace, store paths salted with the test's name.
//!
//! Binaries come from `e2e/tools/install-*.sh`, which `e2e/run-tests.sh` runs and
//! exports as `LARDER_*` variables. A component that cannot start panics with a
//! message naming it and saying why: a missing component never skips a test.

// A harness step that fails has nothing to recover: it panics with context, which
// fails the test that asked for it with a message naming the component.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod cpu;
pub mod garage;
pub mod k8s;
pub mod larder;
pub mod metrics;
pub mod niks3;
pub mod nix;
pub mod postgres;
pub mod process;
pub mod raw_http;
pub mod tools;
