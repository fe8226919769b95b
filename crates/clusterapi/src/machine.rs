//! Pure: the objects a launch creates (a Machine named after the NodeClaim, and its
//! infrastructure machine and bootstrap config cloned from the MachineDeployment's templates),
//! and the NodeClaim views of Machines. No I/O, so all of it is unit-tested on plain objects.
//!
//! The Machine has no owner and none of the MachineDeployment's selector labels, so no
//! MachineSet adopts or scales it: its lifetime is the NodeClaim's. Its clones are owned by it,
//! so deleting the Machine deletes them (CAPI's Machine controller does the same on its own).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use karpenter_api::labels::{
    CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL, ZONE_LABEL,
};
use karpenter_api::v1::{NodeClaim, NodeClaimStatus};
use karpenter_providers::kwok::launch::resource_list;
use kube::ResourceExt;
use kube::api::{DynamicObject, ObjectMeta};
use serde_json::{Value, json};

use crate::shape::Shape;

/// CAPI's API group and the version we speak.
pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
/// The CAPI API version of Machines and MachineDeployments we read and write.
pub const CAPI_VERSION: &str = "v1beta2";
/// CAPI: the cluster a Machine belongs to.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// CAPI: set on a clone to the template it came from.
pub const CLONED_FROM_NAME_ANNOTATION: &str = "cluster.x-k8s.io/cloned-from-name";
/// CAPI: set on a clone to the template's `Kind.group`.
pub const CLONED_FROM_GROUP_KIND_ANNOTATION: &str = "cluster.x-k8s.io/cloned-from-groupkind";
/// Ours: on every Machine this provider launched, the name of its MachineDeployment (same
/// namespace). `list` finds our Machines by it; Machines without it are never touched.
pub const MACHINE_DEPLOYMENT_LABEL: &str = "clusterapi.karpenter.sh/machine-deployment";
/// Ours: the MachineDeployment's Machine template (infrastructure and bootstrap references,
/// Kubernetes version) when the Machine was made; a different one now means drift.
pub const TEMPLATE_ANNOTATION: &str = "clusterapi.karpenter.sh/machine-template";
/// Ours: set once the infrastructure machine and bootstrap config exist. Writing it also
/// wakes CAPI's Machine controller, which otherwise waits 30 s before looking for them again.
pub const CLONED_ANNOTATION: &str = "clusterapi.karpenter.sh/templates-cloned";

/// Ours: on our Machines once they have a providerID, [`provider_id_hash`] of it, so a lookup by
/// providerID is a label-selected list (the API server filters) rather than a scan of every
/// Machine. Label values cannot hold a providerID itself (`/`, `:`, up to any length).
pub const PROVIDER_ID_LABEL: &str = "clusterapi.karpenter.sh/provider-id-hash";

/// The [`PROVIDER_ID_LABEL`] value of a providerID: FNV-1a (64-bit) in hex. Lookups compare
/// the providerID itself too, so a collision only costs a longer list.
pub fn provider_id_hash(provider_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in provider_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Whether the Machine carries the right [`PROVIDER_ID_LABEL`] for its providerID (`None`
/// before it has one).
pub fn provider_id_labelled(machine: &DynamicObject) -> Option<bool> {
    let pid = provider_id(machine)?;
    Some(machine.labels().get(PROVIDER_ID_LABEL) == Some(&provider_id_hash(&pid)))
}

/// Labels CAPI's MachineDeployment and MachineSet controllers select their Machines by: never
/// copied onto ours, so none of them adopts (and scales away) a NodeClaim's Machine.
const OWNER_LABELS: [&str; 3] = [
    "cluster.x-k8s.io/deployment-name",
    "cluster.x-k8s.io/set-name",
    "machine-template-hash",
];

/// What is wrong with a MachineDeployment's Machine template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("MachineDeployment {machine_deployment}: {reason}")]
pub struct TemplateError {
    /// `namespace/name`.
    pub machine_deployment: String,
    /// What is missing or malformed.
    pub reason: String,
}

/// A reference from a Machine template to a template object (`infrastructureRef`, or
/// `bootstrap.configRef`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    /// API group.
    pub api_group: String,
    /// Kind of the template (e.g. `DevMachineTemplate`).
    pub kind: String,
    /// Name (same namespace as the MachineDeployment).
    pub name: String,
}

impl TemplateRef {
    /// The kind a clone has: the template's kind without its `Template` suffix (CAPI's naming
    /// contract: `FooMachineTemplate` stamps out `FooMachine`).
    pub fn cloned_kind(&self) -> String {
        self.kind
            .strip_suffix("Template")
            .unwrap_or(&self.kind)
            .to_string()
    }
}

fn template_ref(md: &DynamicObject, pointer: &str) -> Result<Option<TemplateRef>, TemplateError> {
    let Some(r) = md.data.pointer(pointer) else {
        return Ok(None);
    };
    let field = |f: &str| {
        r.get(f)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| TemplateError {
                machine_deployment: md_key(md),
                reason: format!(
                    "{}.{f} is missing",
                    pointer.trim_start_matches('/').replace('/', ".")
                ),
            })
    };
    Ok(Some(TemplateRef {
        api_group: field("apiGroup")?,
        kind: field("kind")?,
        name: field("name")?,
    }))
}

fn md_key(md: &DynamicObject) -> String {
    format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any())
}

/// The infrastructure machine template a MachineDeployment's Machines are made from.
pub fn infrastructure_template(md: &DynamicObject) -> Result<TemplateRef, TemplateError> {
    template_ref(md, "/spec/template/spec/infrastructureRef")?.ok_or_else(|| TemplateError {
        machine_deployment: md_key(md),
        reason: "spec.template.spec.infrastructureRef is missing".into(),
    })
}

/// The bootstrap config template, when the Machine template has one (a template with only
/// `bootstrap.dataSecretName` needs no bootstrap provider).
pub fn bootstrap_template(md: &DynamicObject) -> Result<Option<TemplateRef>, TemplateError> {
    template_ref(md, "/spec/template/spec/bootstrap/configRef")
}

/// What a Machine launched from this MachineDeployment depends on: infrastructure and
/// bootstrap references and Kubernetes version (CAPI treats template objects as immutable, so
/// a change is a change of reference). Compact JSON with sorted keys: stable across calls.
pub fn template_fingerprint(md: &DynamicObject) -> String {
    let spec = md.data.pointer("/spec/template/spec");
    let get = |k: &str| spec.and_then(|s| s.get(k)).cloned().unwrap_or(Value::Null);
    json!({
        "infrastructureRef": get("infrastructureRef"),
        "bootstrap": get("bootstrap"),
        "version": get("version"),
    })
    .to_string()
}

/// Why a Machine no longer matches its MachineDeployment (`None` when it does).
pub fn drift_reason(machine: &DynamicObject, md: &DynamicObject) -> Option<String> {
    let recorded = machine.annotations().get(TEMPLATE_ANNOTATION)?;
    let now = template_fingerprint(md);
    if *recorded == now {
        return None;
    }
    let (Ok(old), Ok(new)) = (
        serde_json::from_str::<Value>(recorded),
        serde_json::from_str::<Value>(&now),
    ) else {
        return Some(format!(
            "MachineDeployment {} changed its Machine template",
            md_key(md)
        ));
    };
    let changed: Vec<&str> = ["infrastructureRef", "bootstrap", "version"]
        .into_iter()
        .filter(|k| old.get(k) != new.get(k))
        .collect();
    Some(format!(
        "MachineDeployment {} changed its Machine template ({})",
        md_key(md),
        changed.join(", ")
    ))
}

/// The Machine for a NodeClaim: named after it, in the MachineDeployment's namespace, with the
/// MachineDeployment's Machine template (its infrastructure and bootstrap references pointing at
/// clones named after the NodeClaim), no owner and none of the selector labels.
pub fn build_machine(
    md: &DynamicObject,
    claim_name: &str,
    node_pool: &str,
) -> Result<DynamicObject, TemplateError> {
    let key = md_key(md);
    let err = |reason: &str| TemplateError {
        machine_deployment: key.clone(),
        reason: reason.to_string(),
    };
    let mut spec = md
        .data
        .pointer("/spec/template/spec")
        .cloned()
        .filter(Value::is_object)
        .ok_or_else(|| err("spec.template.spec is missing"))?;
    let cluster = md
        .data
        .pointer("/spec/clusterName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("spec.clusterName is missing"))?
        .to_string();
    let infra = infrastructure_template(md)?;
    let bootstrap = bootstrap_template(md)?;
    if bootstrap.is_none()
        && md
            .data
            .pointer("/spec/template/spec/bootstrap/dataSecretName")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(err(
            "spec.template.spec.bootstrap has neither configRef nor dataSecretName",
        ));
    }
    if let Some(obj) = spec.as_object_mut() {
        // Set by the infrastructure provider for this Machine, never copied.
        obj.remove("providerID");
        obj.insert("clusterName".into(), json!(cluster));
        obj.insert(
            "infrastructureRef".into(),
            json!({"apiGroup": infra.api_group, "kind": infra.cloned_kind(), "name": claim_name}),
        );
    }
    if let Some(b) = &bootstrap
        && let Some(config_ref) = spec.pointer_mut("/bootstrap/configRef")
    {
        *config_ref = json!({"apiGroup": b.api_group, "kind": b.cloned_kind(), "name": claim_name});
    }
    let mut labels = string_map(md.data.pointer("/spec/template/metadata/labels"));
    let selector = string_map(md.data.pointer("/spec/selector/matchLabels"));
    labels.retain(|k, _| !selector.contains_key(k) && !OWNER_LABELS.contains(&k.as_str()));
    labels.insert(CLUSTER_NAME_LABEL.into(), cluster);
    labels.insert(MACHINE_DEPLOYMENT_LABEL.into(), md.name_any());
    labels.insert(NODE_POOL_LABEL.into(), node_pool.to_string());
    let mut annotations = string_map(md.data.pointer("/spec/template/metadata/annotations"));
    annotations.insert(TEMPLATE_ANNOTATION.into(), template_fingerprint(md));
    Ok(DynamicObject {
        types: Some(kube::api::TypeMeta {
            api_version: format!("{CAPI_GROUP}/{CAPI_VERSION}"),
            kind: "Machine".into(),
        }),
        metadata: ObjectMeta {
            name: Some(claim_name.to_string()),
            namespace: md.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        data: json!({"spec": spec}),
    })
}

/// An infrastructure machine or bootstrap config cloned from `template` (a `…Template`
/// object): `spec.template.spec` and its metadata, named after the Machine and owned by it.
pub fn clone_template(
    template: &DynamicObject,
    template_ref: &TemplateRef,
    machine: &DynamicObject,
) -> Result<DynamicObject, TemplateError> {
    let key = format!(
        "{}/{} {}",
        template.namespace().unwrap_or_default(),
        template_ref.kind,
        template.name_any()
    );
    let spec = template
        .data
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let api_version = template
        .types
        .as_ref()
        .map(|t| t.api_version.clone())
        .ok_or_else(|| TemplateError {
            machine_deployment: key.clone(),
            reason: "template has no apiVersion".into(),
        })?;
    let uid = machine.uid().ok_or_else(|| TemplateError {
        machine_deployment: key,
        reason: "the Machine has no uid yet".into(),
    })?;
    let mut labels = string_map(template.data.pointer("/spec/template/metadata/labels"));
    if let Some(cluster) = machine.labels().get(CLUSTER_NAME_LABEL) {
        labels.insert(CLUSTER_NAME_LABEL.into(), cluster.clone());
    }
    let mut annotations = string_map(template.data.pointer("/spec/template/metadata/annotations"));
    annotations.insert(CLONED_FROM_NAME_ANNOTATION.into(), template.name_any());
    annotations.insert(
        CLONED_FROM_GROUP_KIND_ANNOTATION.into(),
        format!("{}.{}", template_ref.kind, template_ref.api_group),
    );
    Ok(DynamicObject {
        types: Some(kube::api::TypeMeta {
            api_version,
            kind: template_ref.cloned_kind(),
        }),
        metadata: ObjectMeta {
            name: machine.metadata.name.clone(),
            namespace: machine.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: format!("{CAPI_GROUP}/{CAPI_VERSION}"),
                kind: "Machine".into(),
                name: machine.name_any(),
                uid,
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        data: json!({"spec": spec}),
    })
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A Machine's providerID, once its infrastructure provider has set one.
pub fn provider_id(machine: &DynamicObject) -> Option<String> {
    machine
        .data
        .pointer("/spec/providerID")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// A Machine described as a NodeClaim, as `get`/`list` return it.
pub fn instance_view(machine: &DynamicObject) -> NodeClaim {
    // Named after the NodeClaim it serves: the Machine's own name in machine mode, the
    // NodeClaim that took it in scale mode.
    let name = crate::scale::node_claim_name(machine);
    let mut view = NodeClaim::for_instance(&name, provider_id(machine));
    view.metadata.labels = Some(machine.labels().clone());
    view.metadata.creation_timestamp = machine.metadata.creation_timestamp.clone();
    view.metadata.deletion_timestamp = machine.metadata.deletion_timestamp.clone();
    let node_name = machine
        .data
        .pointer("/status/nodeRef/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut status = view.status.take().unwrap_or_default();
    status.provider_id = provider_id(machine);
    status.node_name = node_name;
    view.status = Some(status);
    view
}

/// The NodeClaim as launched on `machine` of `shape`: the shape's labels (with instance type,
/// zone and capacity type) under the NodeClaim's own, providerID, capacity and allocatable.
pub fn launched(claim: &NodeClaim, shape: &Shape, machine: &DynamicObject) -> NodeClaim {
    let mut out = claim.clone();
    let mut labels = shape.labels.clone();
    labels.insert(INSTANCE_TYPE_LABEL.into(), shape.instance_type.clone());
    labels.insert(ZONE_LABEL.into(), shape.zone.clone());
    labels.insert(CAPACITY_TYPE_LABEL.into(), shape.capacity_type.clone());
    labels.extend(claim.metadata.labels.clone().unwrap_or_default());
    out.metadata.labels = Some(labels);
    let resources = resource_list(&shape.capacity);
    let status = NodeClaimStatus {
        provider_id: provider_id(machine),
        capacity: resources.clone(),
        allocatable: resources,
        ..claim.status.clone().unwrap_or_default()
    };
    out.status = Some(status);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn md(bootstrap: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "MachineDeployment",
            "metadata": {"name": "w1-c4-a", "namespace": "ns"},
            "spec": {
                "clusterName": "w1", "replicas": 0,
                "selector": {"matchLabels": {"pick": "me"}},
                "template": {
                    "metadata": {"labels": {"pick": "me", "cluster.x-k8s.io/deployment-name": "w1-c4-a",
                                            "node-role.kubernetes.io/worker": ""},
                                 "annotations": {"team": "a"}},
                    "spec": {"clusterName": "w1", "version": "v1.34.0", "failureDomain": "a",
                             "providerID": "must-not-be-copied",
                             "bootstrap": bootstrap,
                             "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                                   "kind": "DevMachineTemplate", "name": "c4"},
                             "deletion": {"nodeDrainTimeoutSeconds": 30}}
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn machine_is_named_after_the_claim_and_unowned() {
        let m = build_machine(
            &md(json!({"dataSecretName": "boot"})),
            "default-x1",
            "default",
        )
        .unwrap();
        assert_eq!(m.name_any(), "default-x1");
        assert_eq!(m.namespace().as_deref(), Some("ns"));
        assert!(m.metadata.owner_references.is_none());
        let labels = m.labels();
        assert!(
            !labels.contains_key("pick"),
            "selector labels would let a MachineSet adopt it"
        );
        assert!(!labels.contains_key("cluster.x-k8s.io/deployment-name"));
        assert_eq!(labels["node-role.kubernetes.io/worker"], "");
        assert_eq!(labels[CLUSTER_NAME_LABEL], "w1");
        assert_eq!(labels[MACHINE_DEPLOYMENT_LABEL], "w1-c4-a");
        assert_eq!(labels[NODE_POOL_LABEL], "default");
        assert_eq!(m.annotations()["team"], "a");
        let spec = &m.data["spec"];
        assert!(spec.get("providerID").is_none());
        assert_eq!(spec["infrastructureRef"]["kind"], "DevMachine");
        assert_eq!(spec["infrastructureRef"]["name"], "default-x1");
        assert_eq!(spec["bootstrap"]["dataSecretName"], "boot");
        assert_eq!(spec["failureDomain"], "a");
        assert_eq!(
            spec["deletion"]["nodeDrainTimeoutSeconds"], 30,
            "fields we do not model are kept"
        );
    }

    #[test]
    fn bootstrap_config_ref_points_at_the_clone() {
        let d = md(
            json!({"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io",
                                         "kind": "KubeadmConfigTemplate", "name": "workers"}}),
        );
        let m = build_machine(&d, "c1", "p").unwrap();
        assert_eq!(
            m.data["spec"]["bootstrap"]["configRef"]["kind"],
            "KubeadmConfig"
        );
        assert_eq!(m.data["spec"]["bootstrap"]["configRef"]["name"], "c1");
        assert_eq!(bootstrap_template(&d).unwrap().unwrap().name, "workers");
        let none = md(json!({}));
        let e = build_machine(&none, "c1", "p").unwrap_err();
        assert!(
            e.to_string().contains("ns/w1-c4-a") && e.to_string().contains("dataSecretName"),
            "{e}"
        );
        let broken = md(json!({"configRef": {"kind": "KubeadmConfigTemplate", "name": "w"}}));
        let e = build_machine(&broken, "c1", "p").unwrap_err();
        assert!(
            e.to_string().contains("configRef.apiGroup is missing"),
            "{e}"
        );
    }

    #[test]
    fn clone_copies_the_template_spec_and_is_owned_by_the_machine() {
        let d = md(json!({"dataSecretName": "boot"}));
        let mut m = build_machine(&d, "c1", "p").unwrap();
        let template: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevMachineTemplate",
            "metadata": {"name": "c4", "namespace": "ns"},
            "spec": {"template": {"metadata": {"labels": {"x": "y"}},
                                  "spec": {"backend": {"inMemory": {"vm": {}}}}}}
        }))
        .unwrap();
        let r = infrastructure_template(&d).unwrap();
        assert!(
            clone_template(&template, &r, &m).is_err(),
            "no uid before the Machine exists"
        );
        m.metadata.uid = Some("u-1".into());
        let c = clone_template(&template, &r, &m).unwrap();
        assert_eq!(c.types.as_ref().unwrap().kind, "DevMachine");
        assert_eq!(
            c.types.as_ref().unwrap().api_version,
            "infrastructure.cluster.x-k8s.io/v1beta2"
        );
        assert_eq!(c.name_any(), "c1");
        assert_eq!(c.data["spec"], json!({"backend": {"inMemory": {"vm": {}}}}));
        assert_eq!(c.labels()["x"], "y");
        assert_eq!(c.labels()[CLUSTER_NAME_LABEL], "w1");
        assert_eq!(c.annotations()[CLONED_FROM_NAME_ANNOTATION], "c4");
        assert_eq!(
            c.annotations()[CLONED_FROM_GROUP_KIND_ANNOTATION],
            "DevMachineTemplate.infrastructure.cluster.x-k8s.io"
        );
        let owner = &c.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Machine", "u-1")
        );
    }

    #[test]
    fn drift_names_what_changed() {
        let d = md(json!({"dataSecretName": "boot"}));
        let m = build_machine(&d, "c1", "p").unwrap();
        assert_eq!(drift_reason(&m, &d), None);
        let mut newer = d.clone();
        newer.data["spec"]["template"]["spec"]["version"] = json!("v1.35.0");
        let r = drift_reason(&m, &newer).unwrap();
        assert!(
            r.contains("version") && !r.contains("infrastructureRef"),
            "{r}"
        );
        let mut other = d.clone();
        other.data["spec"]["template"]["spec"]["infrastructureRef"]["name"] = json!("c4-v2");
        assert!(
            drift_reason(&m, &other)
                .unwrap()
                .contains("infrastructureRef")
        );
    }

    #[test]
    fn provider_id_hash_is_fnv1a_and_a_label_value() {
        // FNV-1a 64-bit test vectors (the FNV reference's "" and "a").
        assert_eq!(provider_id_hash(""), "cbf29ce484222325");
        assert_eq!(provider_id_hash("a"), "af63dc4c8601ec8c");
        let h = provider_id_hash("aws:///us-east-1a/i-0123456789abcdef0");
        assert!(h.len() <= 63 && h.chars().all(|c| c.is_ascii_hexdigit()));
        let d = md(json!({"dataSecretName": "boot"}));
        let mut m = build_machine(&d, "c1", "p").unwrap();
        assert_eq!(provider_id_labelled(&m), None);
        m.data["spec"]["providerID"] = json!("in-memory://c1");
        assert_eq!(provider_id_labelled(&m), Some(false));
        m.labels_mut()
            .insert(PROVIDER_ID_LABEL.into(), provider_id_hash("in-memory://c1"));
        assert_eq!(provider_id_labelled(&m), Some(true));
    }

    #[test]
    fn views_carry_provider_id_once_set() {
        let d = md(json!({"dataSecretName": "boot"}));
        let mut m = build_machine(&d, "c1", "p").unwrap();
        assert_eq!(provider_id(&m), None);
        assert_eq!(instance_view(&m).status.unwrap().provider_id, None);
        m.data["spec"]["providerID"] = json!("in-memory://c1");
        m.data["status"] = json!({"nodeRef": {"name": "c1"}});
        let v = instance_view(&m);
        assert_eq!(v.name_any(), "c1");
        let st = v.status.unwrap();
        assert_eq!(st.provider_id.as_deref(), Some("in-memory://c1"));
        assert_eq!(st.node_name.as_deref(), Some("c1"));
    }
}
