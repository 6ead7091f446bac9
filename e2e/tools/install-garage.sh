#!/usr/bin/env bash
# Builds Garage (the S3 server the tests use) from crates.io once per pinned version.
# Only the features a single-node test server needs: a smaller, faster build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.sh"
root="$LARDER_CACHE/garage-$GARAGE_VERSION"
if [ -x "$root/bin/garage" ]; then echo "$root/bin/garage"; exit 0; fi
echo "installing garage $GARAGE_VERSION into $root (first run only, ~15 min on 2 cores)" >&2
cargo install --locked --quiet --root "$root.tmp" garage --version "$GARAGE_VERSION" \
  --no-default-features --features bundled-libs,sqlite >&2
rm -rf "$root" && mv "$root.tmp" "$root"
echo "$root/bin/garage"
