//! Static NodePools (`spec.replicas`): the scale subresource of the generated CRD, `replicas`'
//! bounds, and the transition rule, which needs the old object and so cannot be one of the
//! single-document manifests of `tests/invalid/`.

mod common;

use common::validate_with_crd_cel;
use karpenter_api::all_crds;
use karpenter_api::read::object_from_value;
use serde_json::{Value, json};

fn pool(extra: Value) -> Value {
    let mut np = json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": "np"},
        "spec": {
            "template": {"spec": {
                "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"},
                "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]
            }}
        }
    });
    if let (Some(spec), Value::Object(extra)) = (np["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    np
}

fn node_pool_crd_version() -> Value {
    let crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "NodePool")
        .expect("NodePool CRD");
    serde_json::to_value(&crd.spec.versions[0]).expect("json")
}

#[test]
fn the_crd_serves_the_scale_subresource_on_replicas_and_status_nodes() {
    let v = node_pool_crd_version();
    // Upstream's `+kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.nodes`.
    assert_eq!(
        v["subresources"]["scale"],
        json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.nodes"})
    );
    assert_eq!(v["subresources"]["status"], json!({}));
    let replicas = &v["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"];
    assert_eq!(replicas["type"], "integer");
    assert_eq!(replicas["format"], "int64");
    assert_eq!(replicas["minimum"], json!(0.0));
}

#[test]
fn a_static_pool_with_node_limits_is_valid_and_a_dynamic_one_keeps_its_rules() {
    let ok = pool(json!({"replicas": 3, "limits": {"nodes": "5"}}));
    validate_with_crd_cel(&ok).expect("CEL accepts replicas with limits.nodes");
    object_from_value(ok).expect("code accepts replicas with limits.nodes");
    let zero = pool(json!({"replicas": 0}));
    validate_with_crd_cel(&zero).expect("CEL accepts replicas 0");
    object_from_value(zero).expect("code accepts replicas 0");
    // Without replicas, weight and cpu limits stay allowed.
    let dynamic = pool(json!({"weight": 10, "limits": {"cpu": "100", "nodes": "5"}}));
    validate_with_crd_cel(&dynamic).expect("CEL accepts a dynamic pool");
    object_from_value(dynamic).expect("code accepts a dynamic pool");
}

#[test]
fn negative_replicas_are_refused_by_code() {
    let err = object_from_value(pool(json!({"replicas": -1})))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("spec.replicas: must be at least 0"), "{err}");
}

#[test]
fn a_pool_cannot_change_between_static_and_dynamic() {
    let stat = pool(json!({"replicas": 3}));
    let dynamic = pool(json!({}));
    let transition =
        "spec: cannot change between static (replicas set) and dynamic (replicas unset)";
    let check = |new: &Value, old: &Value| {
        let crd = all_crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "NodePool")
            .expect("NodePool CRD");
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("schema"),
        )
        .expect("json");
        kube::core::cel::Validator::new().validate(&schema, new, Some(old))
    };
    for (new, old) in [(&stat, &dynamic), (&dynamic, &stat)] {
        let errs = check(new, old).expect_err("a transition is refused");
        assert!(
            errs.iter().any(|e| e.message.contains(transition)),
            "{errs}"
        );
    }
    // Scaling is not a transition.
    check(&pool(json!({"replicas": 5})), &stat).expect("static to static");
    check(&dynamic, &dynamic).expect("dynamic to dynamic");
}
