#!/usr/bin/env bash
# The one test command (README quick start; .ci/run calls exactly this).
# Installs what is missing, then runs formatting, lints and every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/karpenter-rs/target}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Property tests draw from a fixed seed so a CI run is reproducible; set another seed (or
# unset it with PROPTEST_RNG_SEED=) locally to explore. Failures found are kept in
# *.proptest-regressions files next to the tests and replayed first.
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED-20261125}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

# The AWS provider's SDK half (aws-sdk-ec2: minutes to compile) is a non-default feature so
# everyday workspace builds skip it; the one test command lints and tests it (`karpenter/aws`
# turns on karpenter-aws/sdk and `karpenter controller --cloud-provider aws`).
AWS_FEATURES=(--features karpenter/aws)

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets "${AWS_FEATURES[@]}" -- -D warnings
# The default build (the quick start's `cargo build -p karpenter`) has no AWS SDK and its own
# `--cloud-provider aws` error path: lint it too, so it cannot rot unseen.
cargo clippy -p karpenter --all-targets -- -D warnings

# Tests against a real API server (crates/testkit) use one local control plane for the whole
# run: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok, built from pinned Go
# modules (cold build: several minutes, then cached). Under CI=true failing to start it fails
# the run; elsewhere those tests print SKIPPED and the rest still run.
step "control plane (hack/control-plane/up)"
./hack/install-deps.sh
cp_dir="$(mktemp -d /tmp/karpenter-cp.XXXXXX)"
cleanup_control_plane() {
  ./hack/capi/down "$cp_dir" || true # Cluster API's managers first (they run against the plane)
  ./hack/control-plane/down "$cp_dir" || true
  rmdir "$cp_dir" 2>/dev/null || true # left empty if `up` failed before using it
}
trap cleanup_control_plane EXIT
if kubeconfig="$(KARPENTER_CP_DIR="$cp_dir" ./hack/control-plane/up)"; then
  export KARPENTER_TEST_KUBECONFIG="$kubeconfig" KARPENTER_CP_DIR="$cp_dir"
elif [[ "${CI:-}" =~ ^(true|TRUE|True|1)$ ]]; then
  echo "control plane failed to start; CI=true requires it" >&2
  exit 1
else
  echo "WARNING: control plane failed to start; tests that need it will be SKIPPED" >&2
  export KARPENTER_TEST_NO_START=1 # don't let every test binary retry the same failure
fi

# The Cluster API provider's e2e test (crates/clusterapi/tests) runs against the real CAPI core
# manager and CAPD (its in-memory backend as the infrastructure provider), built from Go modules
# (hack/capi/build; cold ~10-15 min on 2 cores, then cached) and started beside the plane.
# Under CI=true failing to start them fails the run; elsewhere that test prints SKIPPED.
step "Cluster API (hack/capi/up)"
if [[ -z "${KARPENTER_TEST_NO_START:-}" ]] && capi_dir="$(./hack/capi/up "$cp_dir" | tail -1)"; then
  export KARPENTER_TEST_CAPI="$capi_dir"
elif [[ "${CI:-}" =~ ^(true|TRUE|True|1)$ ]]; then
  echo "Cluster API failed to start; CI=true requires it" >&2
  exit 1
else
  echo "WARNING: Cluster API failed to start; its tests will be SKIPPED" >&2
  export KARPENTER_TEST_CAPI_NO_START=1
fi

# The AWS provider's tests (crates/aws/tests) talk to one moto server (PyPI moto[server], in the
# venv hack/aws creates) on 127.0.0.1. Under CI=true failing to start it fails the run;
# elsewhere those tests print SKIPPED.
step "moto (hack/aws/moto up)"
moto_dir="$(mktemp -d /tmp/karpenter-moto.XXXXXX)"
cleanup_moto() {
  ./hack/aws/moto down "$moto_dir" || true
  rm -rf "$moto_dir"
}
trap 'cleanup_moto; cleanup_control_plane' EXIT
if moto_url="$(./hack/aws/moto up "$moto_dir")"; then
  export KARPENTER_TEST_MOTO_URL="$moto_url"
elif [[ "${CI:-}" =~ ^(true|TRUE|True|1)$ ]]; then
  echo "moto failed to start; CI=true requires it" >&2
  exit 1
else
  echo "WARNING: moto failed to start; AWS provider tests will be SKIPPED" >&2
  export KARPENTER_TEST_MOTO_NO_START=1
fi

# helm for the chart test (crates/controller/tests/e2e_chart.rs): built from Go modules like the
# control plane (hack/helm/build; cold ~2 min, then cached). CI=true requires it.
step "helm (hack/helm/build)"
if helm_bin="$(./hack/helm/build)"; then
  export HELM="$helm_bin"
elif [[ "${CI:-}" =~ ^(true|TRUE|True|1)$ ]]; then
  echo "building helm failed; CI=true requires it" >&2
  exit 1
else
  echo "WARNING: building helm failed; the chart test will be SKIPPED" >&2
fi

# Upstream Karpenter's published Go module (hack/upstream/module: pinned in hack/upstream/go.mod,
# fetched into the Go module cache), whose CRDs and kwok catalog the take-over test
# (crates/controller/tests/e2e_takeover.rs) reads. CI=true requires it.
step "upstream Karpenter module (hack/upstream/module)"
if upstream_dir="$(./hack/upstream/module | tail -1)" && [[ -n "$upstream_dir" ]]; then
  export KARPENTER_UPSTREAM_MODULE="$upstream_dir"
elif [[ "${CI:-}" =~ ^(true|TRUE|True|1)$ ]]; then
  echo "fetching upstream Karpenter's module failed; CI=true requires it" >&2
  exit 1
else
  echo "WARNING: no upstream Karpenter module; the take-over test will be SKIPPED" >&2
fi

# Compile everything first: the container image (below) packs the `karpenter` binary this
# builds (the debug one, same features: nothing is compiled twice).
step "cargo test --no-run"
cargo test --workspace "${AWS_FEATURES[@]}" --no-run

# The container image (hack/image/check): built from that binary with crane (built from Go
# modules, cold ~15 s), pushed to a local registry on 127.0.0.1, pulled back by digest, its
# config checked, and its binary run from the unpacked root filesystem in its own root:
# version, simulate, and the controller against the plane until /readyz answers. The chart
# test then `helm install`s it (KARPENTER_TEST_IMAGE). Missing prerequisites (not root, no
# plane, no Go) print SKIPPED, or fail the run under CI=true; a failed check always fails it.
step "container image (hack/image/check)"
image_rc=0
image_ref="$(./hack/image/check --binary "$CARGO_TARGET_DIR/debug/karpenter" | tail -1)" || image_rc=$?
if [[ $image_rc -eq 0 ]]; then
  export KARPENTER_TEST_IMAGE="$image_ref"
elif [[ $image_rc -eq 3 && ! "${CI:-}" =~ ^(true|TRUE|True|1)$ ]]; then
  echo "WARNING: container image check SKIPPED (see above); the chart install test will skip" >&2
else
  echo "container image check failed (exit $image_rc)" >&2
  exit 1
fi

step "cargo test"
cargo test --workspace "${AWS_FEATURES[@]}" --no-fail-fast -- --test-threads=2
