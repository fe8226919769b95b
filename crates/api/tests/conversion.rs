//! Provisioner (v1alpha5) → NodePool (+ EC2NodeClass) conversion.

mod common;

use common::{documents, repo_root};
use karpenter_api::labels::{KUBELET_COMPATIBILITY_ANNOTATION, PROVIDER_COMPATIBILITY_ANNOTATION};
use karpenter_api::v1::{ConsolidationPolicy, Operator};
use karpenter_api::v1alpha5::Provisioner;
use serde_json::{Value, json};

fn legacy(i: usize) -> Provisioner {
    let docs = documents(&repo_root().join("examples/legacy/provisioner.yaml"));
    serde_json::from_value(docs[i].clone()).expect("Provisioner")
}

#[test]
fn inline_provider_becomes_nodepool_and_ec2nodeclass() {
    let out = legacy(0).convert().expect("converts");
    let np = &out.node_pool;
    assert_eq!(np.metadata.name.as_deref(), Some("default"));
    let t = &np.spec.template;
    assert_eq!(
        t.metadata.labels.get("node-type").map(String::as_str),
        Some("worker")
    );
    assert_eq!(t.spec.requirements.len(), 2);
    assert_eq!(t.spec.requirements[0].key, "karpenter.sh/capacity-type");
    assert_eq!(t.spec.requirements[0].operator, Operator::In);
    assert_eq!(t.spec.requirements[0].values, ["spot"]);
    assert_eq!(
        t.spec.requirements[1].values,
        ["m5.large", "m5.xlarge", "m5.2xlarge", "c5.xlarge"]
    );
    // Integer `cpu: 1000` survives as the quantity "1000".
    assert_eq!(
        np.spec.limits.get("cpu").map(|q| q.0.as_str()),
        Some("1000")
    );
    // ttlSecondsAfterEmpty: 30 → WhenEmpty after 30s.
    assert_eq!(
        np.spec.disruption.consolidation_policy,
        ConsolidationPolicy::WhenEmpty
    );
    assert_eq!(np.spec.disruption.consolidate_after, "30s");
    // Unset ttlSecondsUntilExpired meant "never expire".
    assert_eq!(t.spec.expire_after, "Never");
    assert_eq!(t.spec.node_class_ref.group, "karpenter.k8s.aws");
    assert_eq!(t.spec.node_class_ref.kind, "EC2NodeClass");
    assert_eq!(t.spec.node_class_ref.name, "default");
    let raw: Value = serde_json::from_str(
        np.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROVIDER_COMPATIBILITY_ANNOTATION))
            .expect("raw provider kept"),
    )
    .expect("json");
    assert_eq!(raw["instanceProfile"], "KarpenterNodeInstanceProfile-demo");

    let nc = out.node_class.expect("EC2NodeClass from inline provider");
    assert_eq!(nc.metadata.name.as_deref(), Some("default"));
    let s = serde_json::to_value(&nc.spec).expect("json");
    assert_eq!(
        s["subnetSelectorTerms"],
        json!([{"tags": {"kubernetes.io/cluster/demo": "*"}}])
    );
    assert_eq!(
        s["securityGroupSelectorTerms"],
        json!([{"tags": {"aws:eks:cluster-name": "demo"}}])
    );
    assert_eq!(s["instanceProfile"], "KarpenterNodeInstanceProfile-demo");
    assert_eq!(s.get("role"), None);
    assert_eq!(s["amiSelectorTerms"], json!([{"alias": "al2@latest"}]));
    // Both outputs pass the v1 CRDs' CEL rules.
    let np_value = serde_json::to_value(&out.node_pool).expect("json");
    common::validate_with_crd_cel(&np_value).expect("NodePool passes CEL");
    common::validate_with_crd_cel(&serde_json::to_value(&nc).expect("json"))
        .expect("EC2NodeClass passes CEL");
}

#[test]
fn provider_ref_consolidation_expiry_and_kubelet() {
    let out = legacy(1).convert().expect("converts");
    assert!(out.node_class.is_none());
    let np = out.node_pool;
    let t = &np.spec.template.spec;
    assert_eq!(t.node_class_ref.group, "karpenter.k8s.aws");
    assert_eq!(t.node_class_ref.kind, "EC2NodeClass");
    assert_eq!(t.node_class_ref.name, "batch");
    assert_eq!(
        np.spec.disruption.consolidation_policy,
        ConsolidationPolicy::WhenEmptyOrUnderutilized
    );
    assert_eq!(np.spec.disruption.consolidate_after, "0s");
    assert_eq!(t.expire_after, "2592000s");
    assert_eq!(np.spec.weight, Some(10));
    assert_eq!(t.taints.len(), 1);
    assert_eq!(t.startup_taints.len(), 1);
    assert_eq!(
        np.spec
            .template
            .metadata
            .annotations
            .get("example.com/cost-center")
            .map(String::as_str),
        Some("batch")
    );
    let kubelet: Value = serde_json::from_str(
        np.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(KUBELET_COMPATIBILITY_ANNOTATION))
            .expect("kubelet annotation"),
    )
    .expect("json");
    assert_eq!(kubelet["maxPods"], 58);
    assert_eq!(kubelet["containerRuntime"], "containerd");
}

fn provisioner(spec: Value) -> Provisioner {
    serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Provisioner",
        "metadata": {"name": "p"},
        "spec": spec,
    }))
    .expect("Provisioner")
}

#[test]
fn neither_ttl_nor_consolidation_means_never_consolidate() {
    let np = provisioner(json!({"providerRef": {"name": "x"}}))
        .convert()
        .expect("ok")
        .node_pool;
    assert_eq!(np.spec.disruption.consolidate_after, "Never");
    assert_eq!(
        np.spec.disruption.consolidation_policy,
        ConsolidationPolicy::WhenEmptyOrUnderutilized
    );
}

#[test]
fn aws_ids_become_one_term_per_id_and_kubelet_moves_to_the_node_class() {
    let out = provisioner(json!({
        "provider": {
            "subnetSelector": {"aws-ids": "subnet-a, subnet-b"},
            "securityGroupSelector": {"aws-ids": "sg-1", "team": "a"},
            "instanceProfile": "profile",
            "amiFamily": "Bottlerocket",
            "tags": {"team": "a"},
            "someFutureField": {"kept": true}
        },
        "kubeletConfiguration": {"maxPods": 20, "containerRuntime": "containerd"},
        "providerRef": null
    }))
    .convert()
    .expect("ok");
    let nc = out.node_class.expect("node class");
    let s = serde_json::to_value(&nc.spec).expect("json");
    assert_eq!(
        s["subnetSelectorTerms"],
        json!([{"id": "subnet-a"}, {"id": "subnet-b"}])
    );
    assert_eq!(
        s["securityGroupSelectorTerms"],
        json!([{"tags": {"team": "a"}}, {"id": "sg-1"}])
    );
    assert_eq!(
        s["amiSelectorTerms"],
        json!([{"alias": "bottlerocket@latest"}])
    );
    assert_eq!(s["kubelet"], json!({"maxPods": 20}));
    assert_eq!(s["tags"], json!({"team": "a"}));
    let raw = out.node_pool.metadata.annotations.expect("annotations");
    assert!(raw[PROVIDER_COMPATIBILITY_ANNOTATION].contains("someFutureField"));
    assert!(!raw.contains_key(KUBELET_COMPATIBILITY_ANNOTATION));
}

#[test]
fn invalid_provisioners_are_rejected_with_paths() {
    let cases = [
        (
            json!({"providerRef": {"name": "x"}, "ttlSecondsAfterEmpty": 30, "consolidation": {"enabled": true}}),
            "spec.ttlSecondsAfterEmpty, spec.consolidation.enabled",
        ),
        (json!({}), "spec.provider, spec.providerRef"),
        (
            json!({"providerRef": {"name": "x"}, "ttlSecondsUntilExpired": -1}),
            "spec.ttlSecondsUntilExpired",
        ),
        (
            json!({"providerRef": {"name": "x"}, "labels": {"karpenter.sh/nodepool": "x"}}),
            "spec.labels[karpenter.sh/nodepool]",
        ),
        (
            json!({"providerRef": {"name": "x"}, "requirements": [{"key": "a", "operator": "In"}]}),
            "spec.requirements[0].values",
        ),
        (
            json!({"provider": {"securityGroupSelector": {"a": "b"}, "instanceProfile": "p"}}),
            "spec.provider.subnetSelector",
        ),
        (
            json!({"provider": {"subnetSelector": {"a": "b"}, "securityGroupSelector": {"a": "b"}}}),
            "spec.provider.instanceProfile",
        ),
        (
            json!({"provider": {"subnetSelector": {"a": "b"}, "securityGroupSelector": {"a": "b"}, "instanceProfile": "p", "launchTemplate": "lt"}}),
            "spec.provider.launchTemplate",
        ),
        (
            json!({"provider": {"subnetSelector": {"a": "b"}, "securityGroupSelector": {"a": "b"}, "instanceProfile": "p", "amiFamily": "Ubuntu"}}),
            "spec.provider.amiFamily",
        ),
        (
            json!({"provider": {"subnetSelector": {"a": "b"}, "securityGroupSelector": {"a": "b"}, "instanceProfile": "p", "metadataOptions": {"httpPutResponseHopLimit": "two"}}}),
            "spec.provider.metadataOptions.httpPutResponseHopLimit",
        ),
    ];
    for (spec, path) in cases {
        let err = provisioner(spec.clone())
            .convert()
            .expect_err(&spec.to_string());
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("Provisioner \"p\": {path}")),
            "{spec}: {msg}"
        );
    }
}
