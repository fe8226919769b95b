#!/usr/bin/env bash
# Installs the system packages the tests need, calling apt only when something is missing.
# (The control-plane binaries themselves are built from Go modules: hack/control-plane/build.)
set -euo pipefail

# command -> Debian package providing it
declare -A need=(
  [openssl]=openssl   # control-plane certificates
  [curl]=curl         # control-plane readiness probes
  [ss]=iproute2       # free-port checks
  [flock]=util-linux  # serialises concurrent control-plane builds
  [unshare]=util-linux # hack/image/check runs the image's binary in its own root
  [jq]=jq             # hack/image/check reads the image config
  [objcopy]=binutils  # hack/image/build strips debug sections; readelf finds the loader
  [chromium]=chromium # the HTML report's browser test (crates/cli/tests/simulate_html.rs)
)
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
# The CA bundle the image ships (hack/image/build).
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "install-deps: installing ${missing[*]}" >&2
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-deps: Go (>= 1.26) is required to build the control plane; it is not in" \
    "Debian bookworm at that version, so install it with the machine's toolchain" >&2
  exit 1
fi
