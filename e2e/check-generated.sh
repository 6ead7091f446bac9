#!/usr/bin/env bash
# Fails when a committed generated file differs from what its generator prints now.
# Run after sourcing e2e/tools/install-all.sh (LARDER_HELM, KUBERNETES_VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f crds/larder.yaml ]; then
  cargo run -q --locked -p larder-operator -- crdgen | diff -u crds/larder.yaml - \
    || { echo "crds/larder.yaml is stale: run 'cargo run -p larder-operator -- crdgen > crds/larder.yaml'" >&2; exit 1; }
fi
# Helm installs CRDs from the chart's crds/ folder verbatim: it must be crdgen's output too.
cmp crds/larder.yaml charts/larder/crds/larder.yaml \
  || { echo "charts/larder/crds/larder.yaml differs: run 'cp crds/larder.yaml charts/larder/crds/'" >&2; exit 1; }
# The plain manifests are the chart's rendering.
deploy/render.sh | diff -u deploy/larder.yaml - \
  || { echo "deploy/larder.yaml is stale: run 'deploy/render.sh > deploy/larder.yaml'" >&2; exit 1; }
