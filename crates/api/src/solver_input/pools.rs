//! NodePools → the solver's [`NodePoolView`]. A legacy Provisioner is converted to the NodePool
//! it becomes first ([`crate::v1alpha5`]) and then works exactly as that NodePool.

use karpenter_solver::{
    NodePoolView, NodeSelectorRequirement, Operator, Resources, Taint, TaintEffect,
};

use super::{At, ConvertError, ConvertWarning, describe, parse_resources};
use crate::v1::{self, NodePool};

/// Converts a NodePool; `usage` is what its existing nodes already use ([`super::pool_usage`]).
///
/// The typed NodePool has passed its schema (or [`crate::validation`]), so only the limits'
/// quantities can still be wrong. `minValues` is not modelled by the solver: each requirement
/// carrying one is named in a warning and otherwise ignored.
pub fn node_pool_view(
    np: &NodePool,
    usage: Resources,
    warnings: &mut Vec<ConvertWarning>,
) -> Result<NodePoolView, ConvertError> {
    let object = describe("NodePool", None, np.metadata.name.as_deref());
    let at = At {
        object: &object,
        spec: "",
    };
    let spec = &np.spec;
    let template = &spec.template.spec;
    for (i, r) in template.requirements.iter().enumerate() {
        if r.min_values.is_some() {
            warnings.push(at.warning(
                format!("spec.template.spec.requirements[{i}].minValues"),
                "minValues is not modelled; ignored",
            ));
        }
    }
    let limits = if spec.limits.is_empty() {
        None
    } else {
        Some(parse_resources(&object, "spec.limits", &spec.limits)?)
    };
    Ok(NodePoolView {
        name: np.metadata.name.clone().unwrap_or_default(),
        weight: spec.weight.unwrap_or(0),
        requirements: template.requirements.iter().map(requirement).collect(),
        labels: spec.template.metadata.labels.clone(),
        taints: template.taints.iter().map(template_taint).collect(),
        startup_taints: template.startup_taints.iter().map(template_taint).collect(),
        limits,
        usage,
        instance_types: None,
    })
}

/// A NodePool (or NodeClaim) requirement as the solver's requirement; `minValues` is dropped.
pub fn requirement(r: &v1::NodeSelectorRequirementWithMinValues) -> NodeSelectorRequirement {
    let operator = match r.operator {
        v1::Operator::In => Operator::In,
        v1::Operator::NotIn => Operator::NotIn,
        v1::Operator::Exists => Operator::Exists,
        v1::Operator::DoesNotExist => Operator::DoesNotExist,
        v1::Operator::Gt => Operator::Gt,
        v1::Operator::Lt => Operator::Lt,
        v1::Operator::Gte => Operator::Gte,
        v1::Operator::Lte => Operator::Lte,
    };
    NodeSelectorRequirement {
        key: r.key.clone(),
        operator,
        values: r.values.clone(),
    }
}

/// A NodePool (or NodeClaim) template taint as the solver's taint.
pub fn template_taint(t: &v1::Taint) -> Taint {
    let effect = match t.effect {
        v1::TaintEffect::NoSchedule => TaintEffect::NoSchedule,
        v1::TaintEffect::PreferNoSchedule => TaintEffect::PreferNoSchedule,
        v1::TaintEffect::NoExecute => TaintEffect::NoExecute,
    };
    Taint {
        key: t.key.clone(),
        value: t.value.clone().unwrap_or_default(),
        effect,
    }
}
