//! `karpenter.sh/v1alpha1` NodeOverlay: changes the price of matching offerings (`price`,
//! `priceAdjustment`) and adds extended resources to matching instance types (`capacity`), as
//! the scheduler sees them. Upstream's alpha API, field for field.

// kube-derive takes one `printcolumn(...)` per column, each repeating `type_ = ...`;
// clippy reads those as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::{self, AddRules, Keys, Rule, rule};
use crate::v1::common::{MAX_KEY_LENGTH, MAX_REQUIREMENTS, MAX_VALUE_LENGTH};
use crate::v1::{Condition, Operator};

/// Condition type: every other condition is true.
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the overlay is valid and conflicts with no other overlay of equal weight.
pub const CONDITION_VALIDATION_SUCCEEDED: &str = "ValidationSucceeded";

/// Annotation on NodeClaims whose instance-type options include a type with an overlaid price
/// (upstream's `PriceOverlayAppliedAnnotationKey`).
pub const PRICE_OVERLAY_APPLIED_ANNOTATION: &str = "karpenter.sh/price-overlay-applied";
/// Annotation on NodeClaims whose options include a type with overlaid capacity.
pub const CAPACITY_OVERLAY_APPLIED_ANNOTATION: &str = "karpenter.sh/capacity-overlay-applied";
/// An absolute price: a non-negative decimal (upstream `^\d+(\.\d+)?$`).
pub const PRICE_PATTERN: &str = "^[0-9]+([.][0-9]+)?$";
/// A price adjustment: a signed amount (`+0.1`, `-0.05`), a positive percentage (`+5%`) or a
/// negative one no lower than -100% (`-10%`, `-100%`), as upstream's pattern.
pub const PRICE_ADJUSTMENT_PATTERN: &str =
    "^(([+-][0-9]*[.]?[0-9]+)|([+][0-9]*[.]?[0-9]+%)|(-[0-9]{1,2}([.][0-9]+)?%)|(-100%))$";
/// Resources an overlay's `capacity` may not set: the provider knows them better.
pub const RESTRICTED_CAPACITY: [&str; 4] = ["cpu", "memory", "ephemeral-storage", "pods"];
/// Highest `spec.weight`.
pub const MAX_WEIGHT: i32 = 10_000;

pub(crate) const P_REQUIREMENTS: &str = "spec.requirements";

/// Message tails of the NodeOverlay rules (after `field: `), shared by CEL and in-code
/// validation.
pub mod msg {
    /// Price pattern.
    pub const PRICE: &str = "must be a non-negative decimal number, e.g. \"0.25\"";
    /// Price adjustment pattern.
    pub const PRICE_ADJUSTMENT: &str = "must be a signed amount (e.g. \"+0.1\", \"-0.05\") or a signed percentage (e.g. \"+5%\", \"-10%\"; no lower than \"-100%\")";
    /// Both price fields set.
    pub const PRICE_EXCLUSIVE: &str = "'price' and 'priceAdjustment' are mutually exclusive";
    /// Restricted capacity.
    pub const CAPACITY: &str =
        "must only add extended resources; cpu, memory, ephemeral-storage and pods are restricted";
    /// Weight range.
    pub const WEIGHT: &str = "must be between 1 and 10000";
    /// `NotIn` without values.
    pub const NOT_IN_NEEDS_VALUE: &str = "'NotIn' requires at least one value";
}

fn spec_rules() -> Vec<Rule> {
    vec![rule(
        "!has(self.price) || !has(self.priceAdjustment)",
        "spec",
        msg::PRICE_EXCLUSIVE,
    )]
}

fn requirement_rules() -> Vec<Rule> {
    let item = format!("{P_REQUIREMENTS}[]");
    // Upstream's key rules: no hostname, no karpenter.sh keys but the capacity type and the
    // NodePool (the same as NodeClaim requirement keys).
    let mut out = rules::key_rules(&format!("{item}.key"), ".key", Keys::NodeClaim);
    out.extend([
        rule(
            "self.all(x, x.operator != 'In' || (has(x.values) && size(x.values) > 0))",
            &format!("{item}.values"),
            rules::msg::IN_NEEDS_VALUE,
        ),
        rule(
            "self.all(x, x.operator != 'NotIn' || (has(x.values) && size(x.values) > 0))",
            &format!("{item}.values"),
            msg::NOT_IN_NEEDS_VALUE,
        ),
        rule(
            "self.all(x, !(x.operator in ['Exists', 'DoesNotExist']) || !has(x.values) || size(x.values) == 0)",
            &format!("{item}.values"),
            rules::msg::EXISTS_NO_VALUES,
        ),
        rule(
            format!(
                "self.all(x, !(x.operator in ['Gt', 'Lt', 'Gte', 'Lte']) || (has(x.values) && size(x.values) == 1 && x.values[0].matches('{}')))",
                rules::NON_NEGATIVE_INTEGER_PATTERN
            ),
            &format!("{item}.values"),
            rules::msg::NUMERIC_SINGLE_VALUE,
        ),
        rule(
            "self.all(x, x.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist', 'Gt', 'Lt', 'Gte', 'Lte'])",
            &format!("{item}.operator"),
            rules::msg::OPERATOR,
        ),
    ]);
    out
}

fn capacity_rules() -> Vec<Rule> {
    vec![rule(
        "self.all(x, !(x in ['cpu', 'memory', 'ephemeral-storage', 'pods']))",
        "spec.capacity",
        msg::CAPACITY,
    )]
}

/// Which offerings and instance types an overlay changes, and how.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "karpenter.sh",
    version = "v1alpha1",
    kind = "NodeOverlay",
    plural = "nodeoverlays",
    singular = "nodeoverlay",
    shortname = "overlays",
    category = "karpenter",
    status = "NodeOverlayStatus",
    derive = "PartialEq",
    cel,
    doc = "NodeOverlay changes the price of matching offerings and adds extended resources to matching instance types in Karpenter's scheduling simulation (alpha, feature gate NodeOverlay).",
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
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = AddRules(spec_rules()))]
pub struct NodeOverlaySpec {
    /// Which instance types and offerings the overlay applies to (ANDed), over the instance
    /// type's labels, `node.kubernetes.io/instance-type`, `topology.kubernetes.io/zone` and
    /// `karpenter.sh/capacity-type`. Empty matches every offering.
    #[schemars(length(max = MAX_REQUIREMENTS))]
    #[schemars(transform = AddRules(requirement_rules()))]
    pub requirements: Vec<OverlayRequirement>,
    /// A change of the price of matching offerings: a signed amount (`"+0.1"`, `"-0.05"`) or a
    /// signed percentage (`"-10%"`, `"+5%"`). Prices never go below 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(transform = AddRules(vec![rules::matches(
        "spec.priceAdjustment",
        PRICE_ADJUSTMENT_PATTERN,
        msg::PRICE_ADJUSTMENT,
    )]))]
    pub price_adjustment: Option<String>,
    /// The price of matching offerings, replacing the provider's (e.g. `"0.25"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[schemars(transform = AddRules(vec![rules::matches("spec.price", PRICE_PATTERN, msg::PRICE)]))]
    pub price: Option<String>,
    /// Extended resources added to matching instance types (e.g. `hugepages-2Mi`,
    /// `smarter-devices/fuse`); cpu, memory, ephemeral-storage and pods are restricted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::schema::resource_list")]
    #[schemars(transform = AddRules(capacity_rules()))]
    pub capacity: BTreeMap<String, Quantity>,
    /// Precedence, 1..10000; higher wins. Overlays of equal weight that change the same
    /// offering's price or the same resource conflict. Unset means 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = AddRules(vec![rule(
        "self >= 1 && self <= 10000",
        "spec.weight",
        msg::WEIGHT,
    )]))]
    pub weight: Option<i32>,
}

/// A node selector requirement (upstream's NodeOverlay requirement: no `minValues`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OverlayRequirement {
    /// Label key the requirement applies to.
    #[schemars(length(max = MAX_KEY_LENGTH))]
    pub key: String,
    /// How the label value relates to `values`.
    pub operator: Operator,
    /// Values; empty for `Exists` / `DoesNotExist`, one integer for `Gt`/`Lt`/`Gte`/`Lte`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(max = MAX_VALUE_LENGTH)))]
    pub values: Vec<String>,
}

/// Observed state of a NodeOverlay.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeOverlayStatus {
    /// `ValidationSucceeded` (False with reason `Conflict` or `RuntimeValidation`) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub conditions: Vec<Condition>,
}

impl NodeOverlay {
    /// `spec.weight`, 0 when unset.
    pub fn weight(&self) -> i32 {
        self.spec.weight.unwrap_or(0)
    }
}

/// The weight range, for the in-code validation.
pub(crate) fn weight_in_range(w: i32) -> bool {
    (1..=MAX_WEIGHT).contains(&w)
}
