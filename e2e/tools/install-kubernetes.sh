#!/usr/bin/env bash
# Builds the Kubernetes control plane the operator tests run against (etcd,
# kube-apiserver, kube-controller-manager) from the Go module proxy, once per
# pinned version, the way envtest provides binaries for Go operators.
#
# The Go modules in tools/k8s and tools/etcd exist because `go install` refuses
# both upstream commands: their go.mod files replace sibling modules with local
# paths. Ours require the published releases instead (see the go.mod comments).
#
# Prints the three binary paths on stdout (etcd, kube-apiserver,
# kube-controller-manager), progress on stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.sh"

k8s_root="$LARDER_CACHE/kubernetes-$KUBERNETES_VERSION"
etcd_root="$LARDER_CACHE/etcd-$ETCD_VERSION"

command -v go >/dev/null || {
  echo "install-kubernetes: no 'go' on PATH (Go >= 1.26 needed; try PATH=\$PATH:/usr/local/go/bin)" >&2
  exit 1
}
# Never fetch a toolchain; the build cache is ours so rebuilds after a version
# bump reuse most compiled packages. CGO off: static binaries, no C compiler.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
export GOCACHE="$LARDER_CACHE/go-build"

if [ ! -x "$etcd_root/bin/etcd" ]; then
  echo "building etcd $ETCD_VERSION into $etcd_root (first run only, ~2 min on 2 cores)" >&2
  grep -q "go.etcd.io/etcd/server/v3 v$ETCD_VERSION\$" "$here/etcd/go.mod" || {
    echo "install-kubernetes: $here/etcd/go.mod does not require etcd v$ETCD_VERSION;" \
      "update its require line and run 'go mod tidy'" >&2
    exit 1
  }
  rm -rf "$etcd_root.tmp" && mkdir -p "$etcd_root.tmp/bin"
  (cd "$here/etcd" && go build -ldflags="-s -w" -o "$etcd_root.tmp/bin/etcd" .) >&2
  rm -rf "$etcd_root" && mv "$etcd_root.tmp" "$etcd_root"
fi

if [ ! -x "$k8s_root/bin/kube-apiserver" ] || [ ! -x "$k8s_root/bin/kube-controller-manager" ]; then
  echo "building kube-apiserver and kube-controller-manager $KUBERNETES_VERSION into $k8s_root" \
    "(first run only, ~10 min on 2 cores)" >&2
  grep -q "k8s.io/kubernetes v$KUBERNETES_VERSION\$" "$here/k8s/go.mod" || {
    echo "install-kubernetes: $here/k8s/go.mod does not require k8s.io/kubernetes v$KUBERNETES_VERSION;" \
      "update its require and replace lines (v0.${KUBERNETES_VERSION#1.}) and run 'go mod tidy'" >&2
    exit 1
  }
  # The version the binaries report (/version, skew checks) is set at link time upstream too.
  v="k8s.io/component-base/version"
  minor="${KUBERNETES_VERSION#1.}" && minor="${minor%%.*}"
  ldflags="-s -w -X $v.gitVersion=v$KUBERNETES_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor"
  ldflags="$ldflags -X $v.gitTreeState=clean"
  rm -rf "$k8s_root.tmp" && mkdir -p "$k8s_root.tmp/bin"
  (cd "$here/k8s" && go build -ldflags="$ldflags" -o "$k8s_root.tmp/bin/" \
    ./kube-apiserver ./kube-controller-manager) >&2
  rm -rf "$k8s_root" && mv "$k8s_root.tmp" "$k8s_root"
fi

echo "$etcd_root/bin/etcd"
echo "$k8s_root/bin/kube-apiserver"
echo "$k8s_root/bin/kube-controller-manager"
