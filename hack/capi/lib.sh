# shellcheck shell=bash
# Shared by build, up and down (sourced, not executed).
# The binary directory is keyed by the Cluster API release and a hash of go.mod/go.sum, so
# changing a pin builds into a new directory and an unchanged checkout reuses the old one.

CAPI_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CAPI_CACHE="${KARPENTER_CACHE:-$HOME/.cache/karpenter-rs}/capi"
capi_log() { printf '[capi] %s\n' "$*" >&2; }

CAPI_BINARIES=(capi-manager capd-manager)

# The pinned sigs.k8s.io/cluster-api release (e.g. v1.14.2), from its `require` line.
capi_version() {
  local v
  v="$(awk '$1 == "sigs.k8s.io/cluster-api" && $2 ~ /^v1\./ { print $2; exit }' "$CAPI_SRC/go.mod")"
  if [[ -z "$v" ]]; then
    capi_log "cannot find the sigs.k8s.io/cluster-api version in $CAPI_SRC/go.mod"
    return 1
  fi
  echo "$v"
}

# The module directories (in the Go module cache) holding CAPI's and CAPD's CRD manifests.
capi_module_dir() { # <module path>
  (cd "$CAPI_SRC" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go list -m -f '{{.Dir}}' "$1")
}

capi_bin_dir() {
  local hash version
  version="$(capi_version)" || return 1
  hash="$(cat "$CAPI_SRC/go.mod" "$CAPI_SRC/go.sum" | sha256sum | cut -c1-12)"
  printf '%s/%s-%s/bin\n' "$CAPI_CACHE" "$version" "$hash"
}

capi_have_binaries() {
  local dir="$1" b
  for b in "${CAPI_BINARIES[@]}"; do
    [[ -x "$dir/$b" ]] || return 1
  done
}
