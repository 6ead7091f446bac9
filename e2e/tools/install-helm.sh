#!/usr/bin/env bash
# Installs Helm (renders charts/larder in the chart tests) from the Go module proxy,
# once per pinned version. Prints the helm binary's path.
#
# `go install module@version` works here: Helm's go.mod has no replace directives.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.sh"
root="$LARDER_CACHE/helm-$HELM_VERSION"
if [ -x "$root/bin/helm" ]; then
  echo "$root/bin/helm"
  exit 0
fi
command -v go >/dev/null || {
  echo "install-helm: no 'go' on PATH (Go >= 1.24 needed; try PATH=\$PATH:/usr/local/go/bin)" >&2
  exit 1
}
echo "installing helm $HELM_VERSION into $root (first run only, ~5 min on 2 cores)" >&2
# Never fetch a toolchain; share the build cache with the other Go tools (client-go).
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
export GOCACHE="$LARDER_CACHE/go-build"
rm -rf "$root.tmp" && mkdir -p "$root.tmp/bin"
# Helm's release build sets its version and the Kubernetes version `helm template`
# assumes (else v1.20, which charts needing newer APIs refuse) at link time, the latter
# from the client-go it requires; so does this build.
mod="$(go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
minor="$(sed -n 's/^\s*k8s.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "$mod")"
[ -n "$minor" ] || { echo "install-helm: no k8s.io/client-go in $mod" >&2; exit 1; }
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
for pkg in pkg/chartutil pkg/lint/rules; do
  ldflags="$ldflags -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$minor"
done
GOBIN="$root.tmp/bin" go install -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >&2
rm -rf "$root" && mv "$root.tmp" "$root"
echo "$root/bin/helm"
