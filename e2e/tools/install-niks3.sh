#!/usr/bin/env bash
# Installs the niks3 client and server (the outside client Larder must keep
# serving, and the server the benchmarks compare against) from the Go module
# proxy, once per pinned version. Prints the niks3 and niks3-server paths.
#
# Built from tools/niks3/go.mod (tool directives) rather than `go install
# ...@version`, which asks the proxy for the module's version list and is refused.
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
grep -q "github.com/Mic92/niks3 v$NIKS3_VERSION " "$here/niks3/go.mod" || {
  echo "install-niks3: $here/niks3/go.mod does not require niks3 v$NIKS3_VERSION;" \
    "update its require line and run 'go mod tidy'" >&2
  exit 1
}
echo "installing niks3 $NIKS3_VERSION into $root (first run only, ~2 min on 2 cores)" >&2
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
export GOCACHE="$LARDER_CACHE/go-build"
rm -rf "$root.tmp" && mkdir -p "$root.tmp/bin"
(cd "$here/niks3" && go build -ldflags="-s -w" -o "$root.tmp/bin/" \
  github.com/Mic92/niks3/cmd/niks3 github.com/Mic92/niks3/cmd/niks3-server) >&2
rm -rf "$root" && mv "$root.tmp" "$root"
echo "$root/bin/niks3"
echo "$root/bin/niks3-server"
