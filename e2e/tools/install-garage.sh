#!/usr/bin/env bash
# Builds Garage (the S3 server the tests use) from crates.io once per pinned version.
# Only the features a single-node test server needs: a smaller, faster build. LMDB is
# Garage's default metadata engine (what a deployment runs; the harness uses it), SQLite
# stays for comparison (LARDER_GARAGE_DB_ENGINE=sqlite). The folder name says which
# features it was built with, so an older SQLite-only build is not reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.sh"
root="$LARDER_CACHE/garage-$GARAGE_VERSION-lmdb"
if [ -x "$root/bin/garage" ]; then echo "$root/bin/garage"; exit 0; fi
echo "installing garage $GARAGE_VERSION into $root (first run only, ~15 min on 2 cores)" >&2
cargo install --locked --quiet --root "$root.tmp" garage --version "$GARAGE_VERSION" \
  --no-default-features --features bundled-libs,sqlite,lmdb >&2
rm -rf "$root" && mv "$root.tmp" "$root"
echo "$root/bin/garage"
