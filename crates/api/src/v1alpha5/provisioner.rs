//! Legacy `karpenter.sh/v1alpha5` Provisioner (removed upstream in Nov 2023). It is served so
//! clusters that still store Provisioners can keep them, and converted to v1 on read
//! ([`crate::conversion`]).

// kube-derive takes one `printcolumn(...)` per column, each repeating `type_ = ...`;
// clippy reads those as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ec2::KubeletConfiguration;
use crate::rules::{self, AddRules, rule};
use crate::v1::{Condition, NodeSelectorRequirementWithMinValues, Taint};

/// Message tails of the legacy rules, shared with [`crate::validation`].
pub mod msg {
    /// TTLs must be non-negative.
    pub const TTL_NON_NEGATIVE: &str = "must be non-negative";
    /// ttlSecondsAfterEmpty vs consolidation.
    pub const TTL_XOR_CONSOLIDATION: &str =
        "'ttlSecondsAfterEmpty' and 'consolidation.enabled: true' are mutually exclusive";
    /// provider vs providerRef.
    pub const PROVIDER_XOR_REF: &str = "exactly one of 'provider' and 'providerRef' must be set";
}

/// Desired state of a legacy Provisioner.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "karpenter.sh",
    version = "v1alpha5",
    kind = "Provisioner",
    plural = "provisioners",
    singular = "provisioner",
    category = "karpenter",
    status = "ProvisionerStatus",
    derive = "PartialEq",
    derive = "Default",
    cel,
    deprecated = "karpenter.sh/v1alpha5 Provisioner is deprecated; karpenter-rs converts it to a karpenter.sh/v1 NodePool on read (see `karpenter convert`)",
    doc = "Provisioner is the legacy (v1alpha5) predecessor of NodePool.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = AddRules(vec![
    rule(
        "!(has(self.ttlSecondsAfterEmpty) && has(self.consolidation) && has(self.consolidation.enabled) && self.consolidation.enabled)",
        "spec.ttlSecondsAfterEmpty, spec.consolidation.enabled",
        msg::TTL_XOR_CONSOLIDATION,
    ),
    rule(
        "has(self.provider) != has(self.providerRef)",
        "spec.provider, spec.providerRef",
        msg::PROVIDER_XOR_REF,
    ),
]))]
pub struct ProvisionerSpec {
    /// Annotations put on nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::string_map")]
    pub annotations: BTreeMap<String, String>,
    /// Labels put on nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::label_map")]
    pub labels: BTreeMap<String, String>,
    /// Taints put on nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub taints: Vec<Taint>,
    /// Taints expected to be removed by a DaemonSet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub startup_taints: Vec<Taint>,
    /// Constraints on node labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// Kubelet settings (moved to the NodeClass in v1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet_configuration: Option<LegacyKubeletConfiguration>,
    /// Inline AWS provider settings, kept verbatim (`subnetSelector`, `securityGroupSelector`,
    /// `instanceProfile`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::raw_object")]
    pub provider: Option<serde_json::Map<String, serde_json::Value>>,
    /// Reference to a provider object (e.g. an `AWSNodeTemplate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<ProviderRef>,
    /// Seconds a node may stay empty before it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = AddRules(vec![rules::rule("self >= 0", "spec.ttlSecondsAfterEmpty", msg::TTL_NON_NEGATIVE)]))]
    pub ttl_seconds_after_empty: Option<i64>,
    /// Seconds after which a node expires; unset means never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = AddRules(vec![rules::rule("self >= 0", "spec.ttlSecondsUntilExpired", msg::TTL_NON_NEGATIVE)]))]
    pub ttl_seconds_until_expired: Option<i64>,
    /// Resource limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Priority, 1..100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = AddRules(vec![rules::weight("spec.weight")]))]
    pub weight: Option<i32>,
    /// Consolidation settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consolidation: Option<Consolidation>,
}

/// Legacy kubelet settings: the v1 set plus `containerRuntime` (dropped in v1).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LegacyKubeletConfiguration {
    /// Container runtime (`containerd`, `dockerd`); no v1 equivalent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_runtime: Option<String>,
    /// The settings v1 keeps on the NodeClass.
    #[serde(flatten)]
    pub kubelet: KubeletConfiguration,
}

/// Reference to a provider object.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProviderRef {
    /// API version, e.g. `karpenter.k8s.aws/v1alpha1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind, e.g. `AWSNodeTemplate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the provider object.
    pub name: String,
}

/// Legacy resource limits.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Upper bounds per resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub resources: BTreeMap<String, Quantity>,
}

/// Legacy consolidation switch.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Consolidation {
    /// Whether underutilized nodes are consolidated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Observed state of a legacy Provisioner.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionerStatus {
    /// Last time the Provisioner launched a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Conditions (`Active`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Resources of the Provisioner's nodes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    pub resources: BTreeMap<String, Quantity>,
}
