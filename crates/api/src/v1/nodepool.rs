//! `karpenter.sh/v1` NodePool: a template for NodeClaims plus disruption settings, limits and
//! a weight.

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
use crate::rules::{self, AddRules, Keys, msg};

/// Default `expireAfter` of nodes (30 days).
pub const DEFAULT_EXPIRE_AFTER: &str = "720h";
/// Default `consolidateAfter`.
pub const DEFAULT_CONSOLIDATE_AFTER: &str = "0s";
/// Default budget `nodes`.
pub const DEFAULT_BUDGET_NODES: &str = "10%";
/// Most budgets on one NodePool.
pub const MAX_BUDGETS: u32 = 50;

const P_LABELS: &str = "spec.template.metadata.labels";
const P_REQUIREMENTS: &str = "spec.template.spec.requirements";
const P_TAINTS: &str = "spec.template.spec.taints";
const P_STARTUP_TAINTS: &str = "spec.template.spec.startupTaints";

/// Desired state of a NodePool.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[kube(
    group = "karpenter.sh",
    version = "v1",
    kind = "NodePool",
    plural = "nodepools",
    singular = "nodepool",
    category = "karpenter",
    status = "NodePoolStatus",
    derive = "PartialEq",
    cel,
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.nodes"
    ),
    doc = "NodePool is the Schema for the NodePools API: a template for the nodes Karpenter launches, with limits and disruption settings.",
    printcolumn(
        name = "NodeClass",
        type_ = "string",
        json_path = ".spec.template.spec.nodeClassRef.name"
    ),
    printcolumn(
        name = "Nodes",
        type_ = "string",
        json_path = ".status.resources.nodes"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".spec.weight",
        priority = 1
    ),
    printcolumn(
        name = "CPU",
        type_ = "string",
        json_path = ".status.resources.cpu",
        priority = 1
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".status.resources.memory",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = AddRules(rules::static_rules("spec")))]
pub struct NodePoolSpec {
    /// Template of the NodeClaims this NodePool launches.
    pub template: NodeClaimTemplate,
    /// How and when nodes of this NodePool may be disrupted.
    #[serde(default)]
    pub disruption: Disruption,
    /// Upper bounds on the resources of all nodes of this NodePool (`cpu`, `memory`, `nodes`,
    /// extended resources). Integers are accepted (`cpu: 1000`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub limits: BTreeMap<String, Quantity>,
    /// Priority among NodePools, 1..100; higher is tried first. Unset means 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = AddRules(vec![rules::weight("spec.weight")]))]
    pub weight: Option<i32>,
    /// A static NodePool: keep exactly this many nodes, whatever the pods need (upstream's
    /// alpha `replicas`, acted on with the `StaticCapacity` feature gate). Only `limits.nodes`
    /// and no `weight` with it; a NodePool cannot change between static and dynamic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i64>,
}

impl NodePoolSpec {
    /// Whether this is a static NodePool (`replicas` set).
    pub fn is_static(&self) -> bool {
        self.replicas.is_some()
    }
}

/// What every NodeClaim of a NodePool starts from.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplate {
    /// Labels and annotations put on the NodeClaim and its Node.
    #[serde(default)]
    pub metadata: TemplateMetadata,
    /// The NodeClaim spec.
    pub spec: NodeClaimTemplateSpec,
}

/// Metadata copied onto NodeClaims and Nodes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Node labels. Restricted domains are rejected (see [`crate::labels::node_pool_restriction`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::label_map")]
    #[schemars(transform = AddRules(rules::label_rules(P_LABELS)))]
    pub labels: BTreeMap<String, String>,
    /// Node annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub annotations: BTreeMap<String, String>,
}

/// The spec part of a NodePool's template.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimTemplateSpec {
    /// Taints on every node; pods must tolerate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TAINTS))]
    #[schemars(transform = AddRules(rules::taint_rules(P_TAINTS)))]
    pub taints: Vec<Taint>,
    /// Taints a DaemonSet is expected to remove; ignored when scheduling.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_TAINTS))]
    #[schemars(transform = AddRules(rules::taint_rules(P_STARTUP_TAINTS)))]
    pub startup_taints: Vec<Taint>,
    /// Constraints on the nodes' labels (instance type, zone, capacity type, ...).
    #[schemars(length(max = MAX_REQUIREMENTS))]
    #[schemars(transform = AddRules(rules::requirement_rules(P_REQUIREMENTS, Keys::NodePool)))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// The provider-specific NodeClass.
    pub node_class_ref: NodeClassReference,
    /// How long a draining node may take before it is forcibly deleted; unset waits forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.template.spec.terminationGracePeriod",
        rules::DURATION_PATTERN,
        msg::DURATION,
    )]))]
    pub termination_grace_period: Option<String>,
    /// Lifetime of a node before it is replaced, or `Never`.
    #[serde(default = "default_expire_after")]
    #[schemars(length(max = 32))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.template.spec.expireAfter",
        rules::NILLABLE_DURATION_PATTERN,
        msg::NILLABLE_DURATION,
    )]))]
    pub expire_after: String,
}

fn default_expire_after() -> String {
    DEFAULT_EXPIRE_AFTER.to_owned()
}

/// Which nodes consolidation may act on.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConsolidationPolicy {
    /// Only empty nodes (no non-DaemonSet pods).
    WhenEmpty,
    /// Empty nodes and nodes whose pods fit elsewhere or on a cheaper replacement.
    #[default]
    WhenEmptyOrUnderutilized,
    /// Like `WhenEmptyOrUnderutilized`, but a consolidation must save enough for the pods it
    /// moves: its share of the NodePool's cost over its share of the NodePool's disruption cost
    /// is at least 1/2 (upstream's `BalancedK = 2`). Empty nodes are removed as usual.
    Balanced,
}

/// Disruption settings of a NodePool.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    /// How long a node must be consolidatable before it is consolidated, or `Never`.
    #[serde(default = "default_consolidate_after")]
    #[schemars(length(max = 32))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.disruption.consolidateAfter",
        rules::NILLABLE_DURATION_PATTERN,
        msg::NILLABLE_DURATION,
    )]))]
    pub consolidate_after: String,
    /// Which nodes are candidates for consolidation.
    #[serde(default)]
    #[schemars(transform = AddRules(vec![rules::rule(
        "self in ['WhenEmpty', 'WhenEmptyOrUnderutilized', 'Balanced']",
        "spec.disruption.consolidationPolicy",
        msg::CONSOLIDATION_POLICY,
    )]))]
    pub consolidation_policy: ConsolidationPolicy,
    /// Limits on how many nodes may be disrupted at once; the most restrictive active budget
    /// wins.
    #[serde(default = "default_budgets")]
    #[schemars(length(max = MAX_BUDGETS))]
    #[schemars(transform = AddRules(vec![rules::rule(
        "self.all(x, has(x.schedule) == has(x.duration))",
        "spec.disruption.budgets[]",
        msg::SCHEDULE_WITH_DURATION,
    )]))]
    pub budgets: Vec<Budget>,
}

fn default_consolidate_after() -> String {
    DEFAULT_CONSOLIDATE_AFTER.to_owned()
}

fn default_budgets() -> Vec<Budget> {
    vec![Budget::default()]
}

impl Default for Disruption {
    fn default() -> Self {
        Self {
            consolidate_after: default_consolidate_after(),
            consolidation_policy: ConsolidationPolicy::default(),
            budgets: default_budgets(),
        }
    }
}

/// Why a node is disrupted, for budgets that apply to some reasons only.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DisruptionReason {
    /// Consolidation of an underutilized node.
    Underutilized,
    /// Removal of an empty node.
    Empty,
    /// Replacement of a drifted node.
    Drifted,
    /// Repair of a node whose conditions match the cloud provider's repair policies (node
    /// repair as a disruption method, upstream v1.15).
    Unhealthy,
}

/// A disruption budget: at most `nodes` nodes disrupted at once, optionally only during a
/// cron window and for some reasons.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Reasons the budget applies to; all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50))]
    #[schemars(transform = AddRules(vec![rules::rule(
        "self.all(x, x in ['Underutilized', 'Empty', 'Drifted', 'Unhealthy'])",
        "spec.disruption.budgets[].reasons",
        msg::BUDGET_REASONS,
    )]))]
    pub reasons: Option<Vec<DisruptionReason>>,
    /// A percentage of the NodePool's nodes (rounded up) or an absolute count.
    #[serde(default = "default_budget_nodes")]
    #[schemars(length(max = 16))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.disruption.budgets[].nodes",
        rules::BUDGET_NODES_PATTERN,
        msg::BUDGET_NODES,
    )]))]
    pub nodes: String,
    /// Cron schedule (UTC) at which the budget becomes active; requires `duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.disruption.budgets[].schedule",
        rules::SCHEDULE_PATTERN,
        msg::SCHEDULE,
    )]))]
    pub schedule: Option<String>,
    /// How long the budget stays active after each scheduled start; requires `schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.disruption.budgets[].duration",
        rules::BUDGET_DURATION_PATTERN,
        msg::BUDGET_DURATION,
    )]))]
    pub duration: Option<String>,
}

fn default_budget_nodes() -> String {
    DEFAULT_BUDGET_NODES.to_owned()
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            reasons: None,
            nodes: default_budget_nodes(),
            schedule: None,
            duration: None,
        }
    }
}

/// Observed state of a NodePool.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// Resources of all nodes of the NodePool (including the `nodes` count).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub resources: BTreeMap<String, Quantity>,
    /// Number of nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<i64>,
    /// Generation of the NodeClass last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_class_observed_generation: Option<i64>,
    /// `Ready`, `ValidationSucceeded`, `NodeClassReady`, `NodeRegistrationHealthy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
