//! CRD generation: the manifests `karpenter crds` prints and the chart ships.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::autoscaling::CapacityBuffer;
use crate::ec2::EC2NodeClass;
use crate::kwok::KWOKNodeClass;
use crate::v1::{NodeClaim, NodePool};
use crate::v1alpha1::NodeOverlay;
use crate::v1alpha5::Provisioner;

/// Every CRD karpenter-rs serves, in a fixed order: NodePool, NodeClaim, KWOKNodeClass,
/// EC2NodeClass, Provisioner (v1alpha5, so clusters that still hold Provisioners can store
/// them), NodeOverlay (v1alpha1), CapacityBuffer (`autoscaling.x-k8s.io/v1beta1`, namespaced).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        NodePool::crd(),
        NodeClaim::crd(),
        KWOKNodeClass::crd(),
        EC2NodeClass::crd(),
        Provisioner::crd(),
        NodeOverlay::crd(),
        CapacityBuffer::crd(),
    ];
    for crd in &mut crds {
        let spec_optional = crd.spec.names.kind == "KWOKNodeClass";
        for v in &mut crd.spec.versions {
            if let Some(schema) = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                restore_int_or_string(schema);
                if spec_optional {
                    optional_spec(schema);
                }
            }
        }
    }
    crds
}

/// The canonical file name of a CRD in `charts/karpenter/crds/`: `<group>_<plural>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as YAML (with a leading `---`).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    Ok(format!("---\n{}", serde_saphyr::to_string(crd)?))
}

/// All CRDs as one deterministic multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str(&crd_yaml(&crd)?);
    }
    Ok(out)
}

/// Upstream's KWOKNodeClass may be created without `spec` (none of its fields is required).
/// kube-derive always requires it; instead the API server defaults a missing one to `{}`, on
/// write and on read from storage, so typed clients always see a spec.
fn optional_spec(root: &mut JSONSchemaProps) {
    if let Some(required) = root.required.as_mut() {
        required.retain(|r| r != "spec");
        if required.is_empty() {
            root.required = None;
        }
    }
    if let Some(spec) = root.properties.as_mut().and_then(|p| p.get_mut("spec")) {
        spec.default = Some(
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                serde_json::json!({}),
            ),
        );
    }
}

/// kube's structural rewrite strips `type` from `anyOf` branches; upstream (and `kubectl
/// explain`) expect int-or-string fields as `anyOf: [{type: integer}, {type: string}]`.
fn restore_int_or_string(s: &mut JSONSchemaProps) {
    if s.x_kubernetes_int_or_string == Some(true) {
        let branch = |t: &str| JSONSchemaProps {
            type_: Some(t.to_owned()),
            ..JSONSchemaProps::default()
        };
        s.any_of = Some(vec![branch("integer"), branch("string")]);
        // Int-or-string values may be omitted, never null.
        s.nullable = None;
    }
    for p in s.properties.iter_mut().flat_map(|p| p.values_mut()) {
        restore_int_or_string(p);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = s.items.as_mut() {
        restore_int_or_string(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(ap)) = s.additional_properties.as_mut() {
        restore_int_or_string(ap);
    }
}
