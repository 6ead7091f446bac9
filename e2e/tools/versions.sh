# Pinned versions of every third-party component the tests run. Sourced by the
# install scripts; bump here and the cache key (the directory name) changes with it.
GARAGE_VERSION=2.5.0
KUBERNETES_VERSION=1.34.4
ETCD_VERSION=3.5.35
NIKS3_VERSION=1.7.0
HELM_VERSION=3.19.0
LARDER_CACHE="${LARDER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/larder}"
