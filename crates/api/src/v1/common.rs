//! Types shared by NodePool and NodeClaim: requirements, taints, the NodeClass reference and
//! status conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rules::{self, AddRules};

/// Longest label key (253-character prefix + `/` + 63-character name), as upstream bounds it.
pub const MAX_KEY_LENGTH: u32 = 316;
/// Longest label value.
pub const MAX_VALUE_LENGTH: u32 = 63;
/// Most values in one requirement (a NodeClaim may list hundreds of instance types).
pub const MAX_REQUIREMENT_VALUES: u32 = 1000;
/// Most requirements in a template.
pub const MAX_REQUIREMENTS: u32 = 100;
/// Most taints in a template.
pub const MAX_TAINTS: u32 = 100;

/// Operator of a node selector requirement. `Gte`/`Lte` are Karpenter extensions.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// The label value is one of `values`.
    In,
    /// The label value is none of `values` (or the label is absent).
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label value, as an integer, is greater than the single value.
    Gt,
    /// The label value, as an integer, is less than the single value.
    Lt,
    /// The label value, as an integer, is greater than or equal to the single value.
    Gte,
    /// The label value, as an integer, is less than or equal to the single value.
    Lte,
}

/// A node selector requirement with an optional minimum number of distinct values the
/// scheduler must keep available (`minValues`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorRequirementWithMinValues {
    /// Label key the requirement applies to.
    #[schemars(length(max = MAX_KEY_LENGTH))]
    pub key: String,
    /// How the label value relates to `values`.
    pub operator: Operator,
    /// Values; empty for `Exists` / `DoesNotExist`, one integer for `Gt`/`Lt`/`Gte`/`Lte`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_REQUIREMENT_VALUES), inner(length(max = MAX_VALUE_LENGTH)))]
    pub values: Vec<String>,
    /// Minimum number of distinct values (e.g. instance types) the scheduler must keep, 1..50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_values: Option<i32>,
}

/// Effect of a taint.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    /// New pods that don't tolerate the taint are not scheduled.
    NoSchedule,
    /// The scheduler tries to avoid the node.
    PreferNoSchedule,
    /// Running pods that don't tolerate the taint are evicted.
    NoExecute,
}

/// A taint applied to nodes launched from a template.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    /// Taint key.
    #[schemars(length(max = MAX_KEY_LENGTH))]
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_VALUE_LENGTH))]
    pub value: Option<String>,
    /// Taint effect.
    pub effect: TaintEffect,
}

/// Reference to the provider-specific NodeClass (e.g. `EC2NodeClass`, `KWOKNodeClass`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeClassReference {
    /// API group of the NodeClass, e.g. `karpenter.k8s.aws`.
    #[schemars(length(max = 253))]
    #[schemars(transform = AddRules(vec![
        rules::not_empty("nodeClassRef.group"),
        rules::matches("nodeClassRef.group", "^[^/]*$", rules::msg::NO_SLASH),
        rules::immutable("nodeClassRef.group"),
    ]))]
    pub group: String,
    /// Kind of the NodeClass, e.g. `EC2NodeClass`.
    #[schemars(length(max = 63))]
    #[schemars(transform = AddRules(vec![
        rules::not_empty("nodeClassRef.kind"),
        rules::immutable("nodeClassRef.kind"),
    ]))]
    pub kind: String,
    /// Name of the NodeClass object.
    #[schemars(length(max = 253))]
    #[schemars(transform = AddRules(vec![rules::not_empty("nodeClassRef.name")]))]
    pub name: String,
}

/// A status condition (the `metav1.Condition` shape).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`, `Launched`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason for the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// The `.metadata.generation` the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// Whether the condition's status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Parses a Karpenter duration (`1h30m`, `45s`); `None` when it is not one.
///
/// Only the units the CRD patterns allow (h, m, s) are accepted, so what parses here is
/// exactly what the apiserver admits.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !digits.is_empty() {
        return None;
    }
    Some(std::time::Duration::from_secs(total))
}

/// Parses a duration that may be `Never`: `Ok(None)` for `Never`, `Ok(Some(d))` for a
/// duration, `Err(())` otherwise.
#[allow(clippy::result_unit_err)]
pub fn parse_nillable_duration(s: &str) -> Result<Option<std::time::Duration>, ()> {
    if s == "Never" {
        return Ok(None);
    }
    parse_duration(s).map(Some).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(
            parse_duration("720h"),
            Some(Duration::from_secs(720 * 3600))
        );
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_nillable_duration("Never"), Ok(None));
        assert_eq!(parse_nillable_duration("bad"), Err(()));
    }
}
