# shellcheck shell=bash
# Sourced by hack/aws/*: one Python venv for the AWS tooling (moto server, catalog generator),
# created on first use and reused after. Pinned so a catalog regenerated later, or a moto run in
# CI, sees exactly the data and behaviour the tests were written against.
#
#   KARPENTER_AWS_VENV   where the venv lives (default ~/.cache/karpenter-rs/venv)
#   PYTHON               interpreter used to create it (default python3)

MOTO_VERSION="5.2.5"
KARPENTER_AWS_VENV="${KARPENTER_AWS_VENV:-$HOME/.cache/karpenter-rs/venv}"

# ensure_venv: creates the venv and installs the pinned moto[server] unless it is already there.
# Idempotent: a venv with the right moto version is left alone (no network).
ensure_venv() {
  local py="$KARPENTER_AWS_VENV/bin/python"
  if [[ -x "$py" ]] && [[ "$("$py" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" == "$MOTO_VERSION" ]]; then
    return 0
  fi
  echo "hack/aws: creating venv $KARPENTER_AWS_VENV with moto[server]==$MOTO_VERSION" >&2
  "${PYTHON:-python3}" -m venv "$KARPENTER_AWS_VENV" >&2
  "$py" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
}
