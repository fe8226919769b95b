//! In-code validation of NodeOverlays: the rules of their CRD (see [`super::nodeoverlay`]) for
//! overlays that never reach an apiserver (`karpenter simulate`).

use super::nodeoverlay::{
    self, NodeOverlay, P_REQUIREMENTS, PRICE_ADJUSTMENT_PATTERN, PRICE_PATTERN,
    RESTRICTED_CAPACITY, msg,
};
use crate::labels;
use crate::rules::{self, NON_NEGATIVE_INTEGER_PATTERN};
use crate::v1::Operator;
use crate::validation::{Collector, ValidationErrors, matches};

/// Validates a NodeOverlay with the rules its CRD enforces.
pub fn validate_node_overlay(o: &NodeOverlay) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    let spec = &o.spec;
    for (i, r) in spec.requirements.iter().enumerate() {
        if let Some(restriction) = labels::node_claim_restriction(&r.key) {
            c.push(format!("{P_REQUIREMENTS}[{i}].key"), restriction.reason());
        }
        let path = format!("{P_REQUIREMENTS}[{i}].values");
        match r.operator {
            Operator::In if r.values.is_empty() => c.push(path, rules::msg::IN_NEEDS_VALUE),
            Operator::NotIn if r.values.is_empty() => c.push(path, msg::NOT_IN_NEEDS_VALUE),
            Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                c.push(path, rules::msg::EXISTS_NO_VALUES)
            }
            Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte
                if r.values.len() != 1 || !matches(NON_NEGATIVE_INTEGER_PATTERN, &r.values[0]) =>
            {
                c.push(path, rules::msg::NUMERIC_SINGLE_VALUE)
            }
            _ => {}
        }
    }
    if spec.price.is_some() && spec.price_adjustment.is_some() {
        c.push("spec", msg::PRICE_EXCLUSIVE);
    }
    if let Some(p) = &spec.price
        && !matches(PRICE_PATTERN, p)
    {
        c.push("spec.price", format!("{} (got {p:?})", msg::PRICE));
    }
    if let Some(p) = &spec.price_adjustment
        && !matches(PRICE_ADJUSTMENT_PATTERN, p)
    {
        c.push(
            "spec.priceAdjustment",
            format!("{} (got {p:?})", msg::PRICE_ADJUSTMENT),
        );
    }
    for name in spec.capacity.keys() {
        if RESTRICTED_CAPACITY.contains(&name.as_str()) {
            c.push(format!("spec.capacity[{name}]"), msg::CAPACITY);
        }
    }
    if let Some(w) = spec.weight
        && !nodeoverlay::weight_in_range(w)
    {
        c.push("spec.weight", format!("{} (got {w})", msg::WEIGHT));
    }
    c.finish("NodeOverlay", o.metadata.name.as_deref().unwrap_or(""))
}
