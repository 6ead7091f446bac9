#!/usr/bin/env bash
# Installs the niks3 client and server (the outside client Larder must keep
# serving, and the server the benchmarks compare against) from the Go module
# proxy, once per pinned version. Prints the niks3 and niks3-server paths.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/versions.sh"
root="$LARDER_CACHE/niks3-$NIKS3_VERSION"
if [ -x "$root/bin/niks3" ] && [ -x "$root/bin/niks3-server" ]; then
  echo "$root/bin/niks3"
  echo "$root/bin/niks3-server"
  exit 0
fi
command -v go >/dev/null || {
  echo "install-niks3: no 'go' on PATH (Go >= 1.25 needed; try PATH=\$PATH:/usr/local/go/bin)" >&2
  exit 1
}
echo "installing niks3 $NIKS3_VERSION into $root (first run only, ~2 min on 2 cores)" >&2
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
export GOCACHE="$LARDER_CACHE/go-build"
rm -rf "$root.tmp" && mkdir -p "$root.tmp/bin"
GOBIN="$root.tmp/bin" go install -ldflags="-s -w" \
  "github.com/Mic92/niks3/cmd/niks3@v$NIKS3_VERSION" \
  "github.com/Mic92/niks3/cmd/niks3-server@v$NIKS3_VERSION" >&2
rm -rf "$root" && mv "$root.tmp" "$root"
echo "$root/bin/niks3"
echo "$root/bin/niks3-server"
