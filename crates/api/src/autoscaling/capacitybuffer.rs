//! `autoscaling.x-k8s.io/v1beta1` CapacityBuffer, field for field as upstream (which copies it
//! from Cluster Autoscaler): spec `podTemplateRef` | `scalableRef`, `replicas`, `percentage`,
//! `limits`, `provisioningStrategy`; status `podTemplateRef`, `replicas`,
//! `podTemplateGeneration`, `conditions`, `provisioningStrategy`.

// kube-derive takes one `printcolumn(...)` per column, each repeating `type_ = ...`;
// clippy reads those as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::{AddRules, Rule, rule};
use crate::v1::Condition;
use crate::validation::{Collector, ValidationErrors};

/// The only provisioning strategy: the buffer actively scales the cluster up with placeholder
/// pods. Buffers with another strategy are left to whichever autoscaler implements it.
pub const ACTIVE_PROVISIONING_STRATEGY: &str = "buffer.x-k8s.io/active-capacity";
/// Condition type: the buffer's pod template and size were resolved.
pub const CONDITION_READY_FOR_PROVISIONING: &str = "ReadyForProvisioning";
/// Condition the provisioner writes: whether the buffer's virtual pods fit on existing
/// capacity (`True`, `FitsExistingCapacity`) or needed new capacity (`False`,
/// `RequiresNewCapacity`; `NotReadyForProvisioning` and `BufferEmpty` when there are none).
pub const CONDITION_PROVISIONING: &str = "Provisioning";
/// Annotation (value `"true"`) on virtual pods built from a buffer (upstream's key).
pub const FAKE_POD_ANNOTATION: &str = "karpenter.sh/capacity-buffer-fake-pod";
/// Annotation on virtual pods: the name of their buffer.
pub const BUFFER_NAME_ANNOTATION: &str = "karpenter.sh/capacity-buffer-name";
/// Annotation on virtual pods: the namespace of their buffer.
pub const BUFFER_NAMESPACE_ANNOTATION: &str = "karpenter.sh/capacity-buffer-namespace";

/// Message tails of the CapacityBuffer rules (after `spec: `), shared by CEL and in-code
/// validation; upstream's wording.
pub mod msg {
    /// `podTemplateRef` without a size.
    pub const TEMPLATE_NEEDS_SIZE: &str =
        "If podTemplateRef is set, replicas or limits must also be set";
    /// Both references.
    pub const ONE_REF: &str = "You must define either PodTemplateRef or ScalableRef, but not both";
    /// Negative `replicas` / `percentage`.
    pub const NON_NEGATIVE: &str = "must be greater than or equal to 0";
}

fn spec_rules() -> Vec<Rule> {
    vec![
        rule(
            "!has(self.podTemplateRef) || has(self.replicas) || has(self.limits)",
            "spec",
            msg::TEMPLATE_NEEDS_SIZE,
        ),
        rule(
            "!(has(self.podTemplateRef) && has(self.scalableRef))",
            "spec",
            msg::ONE_REF,
        ),
    ]
}

/// Desired spare capacity: a number of chunks shaped like a PodTemplate (or the pod template
/// of a scalable workload).
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "autoscaling.x-k8s.io",
    version = "v1beta1",
    kind = "CapacityBuffer",
    plural = "capacitybuffers",
    singular = "capacitybuffer",
    shortname = "cb",
    category = "autoscaling",
    namespaced,
    status = "CapacityBufferStatus",
    derive = "PartialEq",
    cel,
    doc = "CapacityBuffer is the configuration that an autoscaler can use to provision buffer capacity within a cluster: placeholder pods that make the autoscaler launch nodes ahead of demand (alpha, feature gate CapacityBuffer).",
    printcolumn(
        name = "Strategy",
        type_ = "string",
        json_path = ".spec.provisioningStrategy"
    ),
    printcolumn(
        name = "PodTemplate",
        type_ = "string",
        json_path = ".status.podTemplateRef.name"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(
        name = "ConditionsType",
        type_ = "string",
        json_path = ".status.conditions[*].type"
    ),
    printcolumn(
        name = "ConditionsStatus",
        type_ = "string",
        json_path = ".status.conditions[*].status"
    ),
    printcolumn(
        name = "ConditionsReason",
        type_ = "string",
        json_path = ".status.conditions[*].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = AddRules(spec_rules()))]
pub struct CapacityBufferSpec {
    /// How the buffer is used; `buffer.x-k8s.io/active-capacity` (the default) makes the
    /// autoscaler provision room for placeholder pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = ACTIVE_PROVISIONING_STRATEGY))]
    pub provisioning_strategy: Option<String>,
    /// A PodTemplate in the buffer's namespace that shapes one chunk of the buffer. Exactly
    /// one of `podTemplateRef` and `scalableRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_ref: Option<LocalObjectRef>,
    /// A workload with a scale subresource (Deployment, ReplicaSet, StatefulSet) whose pod
    /// template shapes one chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalable_ref: Option<ScalableRef>,
    /// Desired number of chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Desired chunks as a percentage of the `scalableRef`'s replicas, rounded up, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub percentage: Option<i32>,
    /// Resource totals the chunks may not exceed; alone, as many chunks as fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub limits: Option<BTreeMap<String, Quantity>>,
}

/// A reference to an object in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
pub struct LocalObjectRef {
    /// Name of the referent.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A reference to an object with a scale subresource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScalableRef {
    /// API group of the referent; empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// Kind of the referent.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// Name of the referent.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// Observed state of a CapacityBuffer.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CapacityBufferStatus {
    /// The PodTemplate the buffer was resolved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_ref: Option<LocalObjectRef>,
    /// Chunks currently provisioned for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// `metadata.generation` of the PodTemplate the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_generation: Option<i64>,
    /// `ReadyForProvisioning` and, from the provisioner, `Provisioning`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub conditions: Vec<Condition>,
    /// The strategy the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_strategy: Option<String>,
}

impl CapacityBuffer {
    /// The effective strategy (the CRD's default when unset).
    pub fn provisioning_strategy(&self) -> &str {
        self.spec
            .provisioning_strategy
            .as_deref()
            .unwrap_or(ACTIVE_PROVISIONING_STRATEGY)
    }
}

/// Validates a CapacityBuffer with the rules its CRD enforces.
pub fn validate_capacity_buffer(b: &CapacityBuffer) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    let spec = &b.spec;
    if spec.pod_template_ref.is_some() && spec.replicas.is_none() && spec.limits.is_none() {
        c.push("spec", msg::TEMPLATE_NEEDS_SIZE);
    }
    if spec.pod_template_ref.is_some() && spec.scalable_ref.is_some() {
        c.push("spec", msg::ONE_REF);
    }
    if let Some(r) = spec.replicas
        && r < 0
    {
        c.push("spec.replicas", format!("{} (got {r})", msg::NON_NEGATIVE));
    }
    if let Some(p) = spec.percentage
        && p < 0
    {
        c.push(
            "spec.percentage",
            format!("{} (got {p})", msg::NON_NEGATIVE),
        );
    }
    for (field, name) in [
        (
            "spec.podTemplateRef.name",
            spec.pod_template_ref.as_ref().map(|r| &r.name),
        ),
        (
            "spec.scalableRef.name",
            spec.scalable_ref.as_ref().map(|r| &r.name),
        ),
        (
            "spec.scalableRef.kind",
            spec.scalable_ref.as_ref().map(|r| &r.kind),
        ),
    ] {
        if name.is_some_and(String::is_empty) {
            c.push(field, "must not be empty");
        }
    }
    c.finish("CapacityBuffer", b.metadata.name.as_deref().unwrap_or(""))
}
