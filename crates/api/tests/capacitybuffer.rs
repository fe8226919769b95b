//! CapacityBuffer manifests: upstream's examples (`examples/capacitybuffers/`) pass the CRD's
//! CEL rules and the in-code validation and round-trip through the types without losing a
//! field; a buffer without a reference is still valid (upstream reports it in its status).

mod common;

use common::{documents, repo_root, validate_with_crd_cel};
use karpenter_api::autoscaling::CapacityBuffer;
use karpenter_api::read::{KarpenterObject, object_from_value};
use serde_json::Value;

#[test]
fn upstream_examples_are_accepted_and_round_trip() {
    let path = repo_root().join("examples/capacitybuffers/upstream-examples.yaml");
    let mut buffers = Vec::new();
    for doc in documents(&path) {
        if doc["kind"] == "PodTemplate" {
            continue;
        }
        validate_with_crd_cel(&doc).expect("CEL accepts the example");
        let Ok(Some(KarpenterObject::CapacityBuffer(b))) = object_from_value(doc.clone()) else {
            panic!("not read as a valid CapacityBuffer: {doc}");
        };
        let back = serde_json::to_value(&*b).expect("serialize");
        // Everything the example says comes back (the type adds nothing but `status: null`
        // skipping, so equality after dropping absent fields is exact).
        let mut back_obj = back.clone();
        if let Some(o) = back_obj.as_object_mut() {
            o.remove("status");
        }
        assert_eq!(
            back_obj,
            doc,
            "{} does not round-trip",
            b.metadata.name.as_deref().unwrap_or("")
        );
        buffers.push(b.metadata.name.clone().unwrap_or_default());
    }
    assert_eq!(
        buffers,
        [
            "web-app-buffer",
            "api-service-buffer",
            "batch-job-capacity",
            "worker-buffer"
        ]
    );
}

#[test]
fn the_strategy_defaults_to_active_capacity() {
    let b: CapacityBuffer = serde_json::from_value(serde_json::json!({
        "apiVersion": "autoscaling.x-k8s.io/v1beta1",
        "kind": "CapacityBuffer",
        "metadata": {"name": "b", "namespace": "default"},
        "spec": {"podTemplateRef": {"name": "t"}, "replicas": 2}
    }))
    .expect("decode");
    assert_eq!(b.provisioning_strategy(), "buffer.x-k8s.io/active-capacity");
}

#[test]
fn negative_replicas_are_rejected_in_code() {
    let doc: Value = serde_json::json!({
        "apiVersion": "autoscaling.x-k8s.io/v1beta1",
        "kind": "CapacityBuffer",
        "metadata": {"name": "bad", "namespace": "default"},
        "spec": {"podTemplateRef": {"name": "t"}, "replicas": -1}
    });
    let err = object_from_value(doc).expect_err("negative replicas");
    assert!(err.to_string().contains("spec.replicas"), "{err}");
}
