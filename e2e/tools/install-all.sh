#!/usr/bin/env bash
# Installs every component the tests run, once, and exports where each one is.
# Source it (`. e2e/tools/install-all.sh`) to get the LARDER_* variables.
# Debian packages come from apt; everything else is built once per pinned version
# under $LARDER_CACHE (~/.cache/larder), so a warm run only checks that it is there.
set -euo pipefail
tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$tools/versions.sh"
mkdir -p "$LARDER_CACHE"

step() { # step NAME COMMAND...: runs a step and says how long it took
  local name=$1 start=$SECONDS; shift
  "$@" || { echo "install-all: $name failed; see the output above" >&2; return 1; }
  echo "install-all: $name ready in $((SECONDS - start))s" >&2
}

apt_packages() {
  local missing=()
  command -v nix-store >/dev/null || missing+=(nix-bin)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v runuser >/dev/null || missing+=(util-linux)
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "install-all: apt-get install ${missing[*]}" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
}

step "Debian packages (postgresql, nix-bin)" apt_packages
# The test Nix store lives at /nix; Debian's package leaves creating it to first use.
mkdir -p /nix/store 2>/dev/null || true

pg_bin() {
  LARDER_PG_BIN="$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")"
  export LARDER_PG_BIN
}
step "postgresql server" pg_bin

garage() { LARDER_GARAGE="$("$tools/install-garage.sh")"; export LARDER_GARAGE; }
step "garage $GARAGE_VERSION" garage

export PATH="$PATH:/usr/local/go/bin"
kubernetes() {
  local out; out="$("$tools/install-kubernetes.sh")"
  LARDER_ETCD="$(sed -n 1p <<<"$out")"
  LARDER_KUBE_APISERVER="$(sed -n 2p <<<"$out")"
  LARDER_KUBE_CONTROLLER_MANAGER="$(sed -n 3p <<<"$out")"
  export LARDER_ETCD LARDER_KUBE_APISERVER LARDER_KUBE_CONTROLLER_MANAGER
}
step "kubernetes $KUBERNETES_VERSION (etcd $ETCD_VERSION)" kubernetes

niks3() {
  local out; out="$("$tools/install-niks3.sh")"
  LARDER_NIKS3="$(sed -n 1p <<<"$out")"
  LARDER_NIKS3_SERVER="$(sed -n 2p <<<"$out")"
  export LARDER_NIKS3 LARDER_NIKS3_SERVER
}
step "niks3 $NIKS3_VERSION" niks3

helm() { LARDER_HELM="$("$tools/install-helm.sh")"; export LARDER_HELM; }
step "helm $HELM_VERSION" helm
