# shellcheck shell=bash
# Shared by build, up and down (sourced, not executed).
# The binary directory is keyed by the Kubernetes release and a hash of every go.mod/go.sum here,
# so changing a pin builds into a new directory and an unchanged checkout reuses the old one.

CP_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CP_CACHE="${KARPENTER_CACHE:-$HOME/.cache/karpenter-rs}/control-plane"
cp_log() { printf '[control-plane] %s\n' "$*" >&2; }

CP_BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# The pinned k8s.io/kubernetes release (e.g. v1.34.12), from a `require` line or block.
cp_k8s_version() {
  local v
  v="$(awk '{ for (i = 1; i < NF; i++) if ($i == "k8s.io/kubernetes" && $(i + 1) ~ /^v1\./) { print $(i + 1); exit } }' "$CP_SRC/go.mod")"
  if [[ -z "$v" ]]; then
    cp_log "cannot find the k8s.io/kubernetes version in $CP_SRC/go.mod"
    return 1
  fi
  echo "$v"
}

cp_bin_dir() {
  local hash version
  version="$(cp_k8s_version)" || return 1
  hash="$(cat "$CP_SRC/go.mod" "$CP_SRC/go.sum" "$CP_SRC/kwok/go.mod" "$CP_SRC/kwok/go.sum" |
    sha256sum | cut -c1-12)"
  printf '%s/%s-%s/bin\n' "$CP_CACHE" "$version" "$hash"
}

cp_have_binaries() {
  local dir="$1" b
  for b in "${CP_BINARIES[@]}"; do
    [[ -x "$dir/$b" ]] || return 1
  done
}

# Prints the last <lines> lines of every component log of a plane (for failure reports).
cp_tail_logs() { # <state dir> [lines]
  local f
  for f in "$1"/logs/*.log; do
    [[ -f "$f" ]] || continue
    printf '\n----- %s (last %s lines) -----\n' "$f" "${2:-50}"
    tail -n "${2:-50}" "$f"
  done
}
