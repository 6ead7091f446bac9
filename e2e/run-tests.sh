#!/usr/bin/env bash
# Runs every check and test of Larder, installing whatever is missing first.
# This is the command README.md gives and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

. e2e/tools/install-all.sh
# Compiled dependencies live outside the clone, like the other third-party builds,
# so a fresh clone (CI) does not rebuild aws-sdk-s3 and kube from scratch every time.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$LARDER_CACHE/target}"

echo "run-tests: formatting and lints" >&2
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "run-tests: generated files match their generators" >&2
e2e/check-generated.sh

echo "run-tests: tests" >&2
# The e2e tests run the real `larder` and `larder-operator` binaries: build them first.
cargo build --locked --bin larder --bin larder-operator
cargo test --workspace --locked --no-fail-fast

echo "run-tests: done in $((SECONDS - start))s" >&2
