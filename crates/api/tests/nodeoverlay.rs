//! NodeOverlay manifests: upstream's documented examples are accepted unchanged; bad ones are
//! rejected with the field named.
//!
//! The examples are written after the shapes on karpenter.sh's "NodeOverlays" concept page and
//! upstream's design doc (designs/node-overlay.md, v1.15.0); the page itself could not be
//! fetched here, so these are equivalents, not byte copies.

mod common;

use common::validate_with_crd_cel;
use karpenter_api::{KarpenterObject, parse_karpenter_objects};

const UPSTREAM_EXAMPLES: &str = r#"
apiVersion: karpenter.sh/v1alpha1
kind: NodeOverlay
metadata:
  name: example-overlay
spec:
  weight: 10
  requirements:
    - key: node.kubernetes.io/instance-type
      operator: In
      values: ["m5.large", "m5.xlarge"]
    - key: karpenter.sh/capacity-type
      operator: In
      values: ["spot"]
    - key: karpenter.k8s.aws/instance-memory
      operator: Gt
      values: ["2048"]
  priceAdjustment: "-10%"
  capacity:
    smarter-devices/fuse: 1
---
apiVersion: karpenter.sh/v1alpha1
kind: NodeOverlay
metadata:
  name: price-override
spec:
  requirements:
    - key: karpenter.sh/capacity-type
      operator: In
      values: ["on-demand"]
  price: "5.00"
---
apiVersion: karpenter.sh/v1alpha1
kind: NodeOverlay
metadata:
  name: price-adjustment
spec:
  requirements:
    - key: karpenter.sh/capacity-type
      operator: In
      values: ["on-demand"]
  priceAdjustment: "+5.00"
---
apiVersion: karpenter.sh/v1alpha1
kind: NodeOverlay
metadata:
  name: extended-resource
spec:
  requirements:
  - key: node.kubernetes.io/instance-type
    operator: In
    values: ["m5.large", "m5.2xlarge", "m5.4xlarge", "m5.8xlarge", "m5.12xlarge"]
  capacity:
    smarter-devices/fuse: 1
---
apiVersion: karpenter.sh/v1alpha1
kind: NodeOverlay
metadata:
  name: hugepage-overlay
spec:
  requirements:
  - key: karpenter.k8s.aws/instance-category
    operator: In
    values: ["c", "m", "r"]
  capacity:
    hugepages-2Mi: 100Mi
    hugepages-1Gi: 2Gi
---
apiVersion: karpenter.sh/v1alpha1
kind: NodeOverlay
metadata:
  name: everything-cheaper
spec:
  requirements: []
  priceAdjustment: "-0.05"
---
apiVersion: karpenter.sh/v1alpha1
kind: NodeOverlay
metadata:
  name: one-pool
spec:
  requirements:
  - {key: karpenter.sh/nodepool, operator: In, values: [default]}
  priceAdjustment: "+1%"
"#;

#[test]
fn upstream_examples_are_accepted() {
    let docs = parse_karpenter_objects(UPSTREAM_EXAMPLES).expect("valid overlays");
    assert_eq!(docs.len(), 7);
    let names: Vec<&str> = docs
        .iter()
        .map(|d| match &d.object {
            Some(o @ KarpenterObject::NodeOverlay(_)) => o.name(),
            other => panic!("not a NodeOverlay: {other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "example-overlay",
            "price-override",
            "price-adjustment",
            "extended-resource",
            "hugepage-overlay",
            "everything-cheaper",
            "one-pool"
        ]
    );
    // The CRD's CEL rules accept them too.
    for d in &docs {
        if let Err(e) = validate_with_crd_cel(&d.value) {
            panic!("CEL rejects document {}: {e}", d.index);
        }
    }
    let Some(KarpenterObject::NodeOverlay(first)) = &docs[0].object else {
        unreachable!()
    };
    assert_eq!(first.weight(), 10);
    assert_eq!(first.spec.price_adjustment.as_deref(), Some("-10%"));
    assert_eq!(first.spec.capacity["smarter-devices/fuse"].0, "1");
}

fn error_of(spec: &str) -> String {
    let yaml = format!(
        "apiVersion: karpenter.sh/v1alpha1\nkind: NodeOverlay\nmetadata:\n  name: bad\nspec:\n{spec}"
    );
    match parse_karpenter_objects(&yaml) {
        Ok(d) => panic!("accepted: {spec}\n{d:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_overlays_name_the_field() {
    let cases = [
        (
            "  requirements: []\n  price: \"1\"\n  priceAdjustment: \"+1\"\n",
            "NodeOverlay \"bad\": spec: 'price' and 'priceAdjustment' are mutually exclusive",
        ),
        (
            "  requirements: []\n  price: \"-1\"\n",
            "spec.price: must be",
        ),
        (
            "  requirements: []\n  priceAdjustment: \"10%\"\n",
            "spec.priceAdjustment: must be",
        ),
        (
            "  requirements: []\n  priceAdjustment: \"-150%\"\n",
            "spec.priceAdjustment: must be",
        ),
        (
            "  requirements: []\n  capacity:\n    memory: 1Gi\n",
            "spec.capacity[memory]: must only add extended resources",
        ),
        (
            "  requirements: []\n  weight: 0\n",
            "spec.weight: must be between 1 and 10000",
        ),
        (
            "  requirements: []\n  weight: 10001\n",
            "spec.weight: must be between 1 and 10000",
        ),
        (
            "  requirements:\n  - key: a\n    operator: NotIn\n",
            "spec.requirements[0].values: 'NotIn' requires at least one value",
        ),
        (
            "  requirements:\n  - key: a\n    operator: Gt\n    values: [\"x\"]\n",
            "spec.requirements[0].values: 'Gt', 'Lt', 'Gte' and 'Lte'",
        ),
        (
            "  requirements:\n  - key: a\n    operator: Near\n",
            "spec.requirements[0].operator",
        ),
        ("  price: \"1\"\n", "requirements"),
        (
            "  requirements:\n  - key: kubernetes.io/hostname\n    operator: Exists\n",
            "spec.requirements[0].key: label \"kubernetes.io/hostname\" is restricted",
        ),
        (
            "  requirements:\n  - key: karpenter.sh/other\n    operator: Exists\n",
            "spec.requirements[0].key: label domain \"karpenter.sh\" is restricted",
        ),
    ];
    for (spec, want) in cases {
        let e = error_of(spec);
        assert!(e.contains(want), "{spec}: want {want:?} in {e:?}");
    }
}
