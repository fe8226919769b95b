// Pins the upstream Karpenter release whose CRDs and object shapes the take-over test
// (crates/controller/tests/e2e_takeover.rs) installs; hack/upstream/module fetches it into the Go
// module cache (checked against go.sum) and prints its directory. Nothing of it is copied here.
// Upgrade: change the version below, then `GOFLAGS=-mod=mod go mod download sigs.k8s.io/karpenter`
// and put the two go.sum lines `go mod download -json sigs.k8s.io/karpenter` prints (Sum, GoModSum).

module karpenter-rs/hack/upstream

go 1.25.0

require sigs.k8s.io/karpenter v1.15.0
