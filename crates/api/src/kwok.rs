//! `karpenter.kwok.sh/v1alpha1` KWOKNodeClass: the NodeClass of the simulated (kwok) provider.

// kube-derive takes one `printcolumn(...)` per column, each repeating `type_ = ...`;
// clippy reads those as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::{self, AddRules, msg};
use crate::v1::Condition;

/// API group of the kwok provider.
pub const KWOK_GROUP: &str = "karpenter.kwok.sh";

/// Settings of simulated nodes.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "karpenter.kwok.sh",
    version = "v1alpha1",
    kind = "KWOKNodeClass",
    plural = "kwoknodeclasses",
    singular = "kwoknodeclass",
    category = "karpenter",
    status = "KWOKNodeClassStatus",
    derive = "PartialEq",
    derive = "Default",
    cel,
    doc = "KWOKNodeClass configures the simulated nodes of the kwok provider.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KWOKNodeClassSpec {
    /// How long a simulated node takes to register after its NodeClaim launches (e.g. "10s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.nodeRegistrationDelay",
        rules::DURATION_PATTERN,
        msg::DURATION,
    )]))]
    pub node_registration_delay: Option<String>,
}

/// Observed state of a KWOKNodeClass.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KWOKNodeClassStatus {
    /// `Ready` and friends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
