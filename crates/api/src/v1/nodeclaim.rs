//! `karpenter.sh/v1` NodeClaim: one node Karpenter launched or is launching.

// kube-derive takes one `printcolumn(...)` per column, each repeating `type_ = ...`;
// clippy reads those as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, MAX_REQUIREMENTS, MAX_TAINTS, NodeClassReference,
    NodeSelectorRequirementWithMinValues, Taint,
};
use super::nodepool::DEFAULT_EXPIRE_AFTER;
use crate::rules::{self, AddRules, Keys, msg};

/// Condition: the instance was created by the provider.
pub const CONDITION_LAUNCHED: &str = "Launched";
/// Condition: the Node object joined the cluster.
pub const CONDITION_REGISTERED: &str = "Registered";
/// Condition: the Node is ready and its startup taints are gone.
pub const CONDITION_INITIALIZED: &str = "Initialized";
/// Condition: Launched, Registered and Initialized.
pub const CONDITION_READY: &str = "Ready";
/// Condition: the NodeClaim no longer matches its NodePool/NodeClass.
pub const CONDITION_DRIFTED: &str = "Drifted";
/// Condition: consolidation may consider the NodeClaim.
pub const CONDITION_CONSOLIDATABLE: &str = "Consolidatable";
/// Condition: the NodeClaim is being disrupted (reason says why).
pub const CONDITION_DISRUPTION_REASON: &str = "DisruptionReason";
/// Condition: the node was drained.
pub const CONDITION_DRAINED: &str = "Drained";
/// Condition: the node's volumes were detached.
pub const CONDITION_VOLUMES_DETACHED: &str = "VolumesDetached";
/// Condition: the instance is being terminated.
pub const CONDITION_INSTANCE_TERMINATING: &str = "InstanceTerminating";

/// Desired state of a NodeClaim. The whole spec is immutable once created.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "karpenter.sh",
    version = "v1",
    kind = "NodeClaim",
    plural = "nodeclaims",
    singular = "nodeclaim",
    category = "karpenter",
    status = "NodeClaimStatus",
    derive = "PartialEq",
    cel,
    validation = Rule::new("self.spec == oldSelf.spec").message("spec: is immutable"),
    doc = "NodeClaim is the Schema for the NodeClaims API: one node Karpenter launched or is launching.",
    printcolumn(name = "Type", type_ = "string", json_path = ".metadata.labels.node\\.kubernetes\\.io/instance-type"),
    printcolumn(name = "Capacity", type_ = "string", json_path = ".metadata.labels.karpenter\\.sh/capacity-type"),
    printcolumn(name = "Zone", type_ = "string", json_path = ".metadata.labels.topology\\.kubernetes\\.io/zone"),
    printcolumn(name = "Node", type_ = "string", json_path = ".status.nodeName"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "ProviderID", type_ = "string", json_path = ".status.providerID", priority = 1),
    printcolumn(name = "NodePool", type_ = "string", json_path = ".metadata.labels.karpenter\\.sh/nodepool", priority = 1)
)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimSpec {
    /// Taints on the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TAINTS))]
    #[schemars(transform = AddRules(rules::taint_rules("spec.taints")))]
    pub taints: Vec<Taint>,
    /// Taints a DaemonSet is expected to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TAINTS))]
    #[schemars(transform = AddRules(rules::taint_rules("spec.startupTaints")))]
    pub startup_taints: Vec<Taint>,
    /// Constraints the launched instance must satisfy.
    #[schemars(length(max = MAX_REQUIREMENTS))]
    #[schemars(transform = AddRules(rules::requirement_rules("spec.requirements", Keys::NodeClaim)))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// Resources the node must offer (pod requests plus DaemonSet overhead).
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,
    /// The provider-specific NodeClass.
    pub node_class_ref: NodeClassReference,
    /// How long draining may take before the node is forcibly deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.terminationGracePeriod",
        rules::DURATION_PATTERN,
        msg::DURATION,
    )]))]
    pub termination_grace_period: Option<String>,
    /// Lifetime of the node, or `Never`.
    #[serde(default = "default_expire_after")]
    #[schemars(length(max = 32))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.expireAfter",
        rules::NILLABLE_DURATION_PATTERN,
        msg::NILLABLE_DURATION,
    )]))]
    pub expire_after: String,
}

fn default_expire_after() -> String {
    DEFAULT_EXPIRE_AFTER.to_owned()
}

/// Resource requests of a NodeClaim.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    /// Minimum resources the instance must provide.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub requests: BTreeMap<String, Quantity>,
}

impl NodeClaim {
    /// A NodeClaim that only describes a cloud instance: empty spec that never expires, and
    /// `status.providerID`. Providers return such views from `get`/`list`, and termination
    /// hands one to `delete` for an instance whose NodeClaim is gone.
    pub fn for_instance(name: &str, provider_id: Option<String>) -> NodeClaim {
        let spec = NodeClaimSpec {
            taints: Vec::new(),
            startup_taints: Vec::new(),
            requirements: Vec::new(),
            resources: ResourceRequirements::default(),
            node_class_ref: Default::default(),
            termination_grace_period: None,
            expire_after: "Never".to_owned(),
        };
        let mut claim = NodeClaim::new(name, spec);
        claim.status = Some(NodeClaimStatus {
            provider_id,
            ..NodeClaimStatus::default()
        });
        claim
    }
}

impl ResourceRequirements {
    /// Whether no requests are set.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }
}

/// Observed state of a NodeClaim.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimStatus {
    /// Name of the Node object backing this NodeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Provider ID of the instance.
    #[serde(
        default,
        rename = "providerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Image the instance was launched from.
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Capacity of the instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub capacity: BTreeMap<String, Quantity>,
    /// Allocatable resources of the instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub allocatable: BTreeMap<String, Quantity>,
    /// Lifecycle and disruption conditions (`Launched`, `Registered`, `Initialized`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Last time a pod was scheduled to or removed from the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pod_event_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}
