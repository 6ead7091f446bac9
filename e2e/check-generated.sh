#!/usr/bin/env bash
# Fails when a committed generated file differs from what its generator prints now.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f crds/larder.yaml ]; then
  cargo run -q --locked -p larder-operator -- crdgen | diff -u crds/larder.yaml - \
    || { echo "crds/larder.yaml is stale: run 'cargo run -p larder-operator -- crdgen > crds/larder.yaml'" >&2; exit 1; }
fi
