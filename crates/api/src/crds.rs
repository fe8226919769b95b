//! CRD generation: the manifests `karpenter crds` prints and the chart ships.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::ec2::EC2NodeClass;
use crate::kwok::KWOKNodeClass;
use crate::v1::{NodeClaim, NodePool};
use crate::v1alpha5::Provisioner;

/// Every CRD karpenter-rs serves, in a fixed order: NodePool, NodeClaim, KWOKNodeClass,
/// EC2NodeClass, Provisioner (v1alpha5, so clusters that still hold Provisioners can store
/// them).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        NodePool::crd(),
        NodeClaim::crd(),
        KWOKNodeClass::crd(),
        EC2NodeClass::crd(),
        Provisioner::crd(),
    ];
    for crd in &mut crds {
        for v in &mut crd.spec.versions {
            if let Some(schema) = v
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                restore_int_or_string(schema);
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
