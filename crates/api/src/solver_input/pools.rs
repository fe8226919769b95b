//! NodePools → the solver's [`NodePoolView`]. A legacy Provisioner is converted to the NodePool
//! it becomes first ([`crate::v1alpha5`]) and then works exactly as that NodePool.

use std::collections::BTreeMap;

use karpenter_solver::{
    NodePoolView, NodeSelectorRequirement, Operator, Resources, Taint, TaintEffect,
};

use super::{ConvertError, ConvertWarning, describe, parse_resources};
use crate::v1::{self, NodePool};

/// Converts a NodePool; `usage` is what its existing nodes already use ([`super::pool_usage`]).
///
/// The typed NodePool has passed its schema (or [`crate::validation`]), so only the limits'
/// quantities can still be wrong. Requirements' `minValues` are not part of the view: they go
/// to [`karpenter_solver::Problem::min_values`] ([`min_values`], [`super::Parts::min_values`]).
/// Nothing here warns at present; `warnings` stays so callers need not change when it does.
pub fn node_pool_view(
    np: &NodePool,
    usage: Resources,
    _warnings: &mut Vec<ConvertWarning>,
) -> Result<NodePoolView, ConvertError> {
    let object = describe("NodePool", None, np.metadata.name.as_deref());
    let spec = &np.spec;
    let template = &spec.template.spec;
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

/// The NodePool's `minValues` per requirement key (the largest when a key is repeated, as
/// requirements on one key intersect and upstream keeps the maximum), for
/// [`karpenter_solver::Problem::min_values`].
pub fn min_values(np: &NodePool) -> BTreeMap<String, i32> {
    let mut out: BTreeMap<String, i32> = BTreeMap::new();
    for r in &np.spec.template.spec.requirements {
        if let Some(n) = r.min_values {
            let e = out.entry(r.key.clone()).or_insert(n);
            *e = (*e).max(n);
        }
    }
    out
}

/// A NodeClaim's requirements in the solver's algebra: what providers check offerings against.
pub fn claim_requirements(
    claim: &crate::v1::NodeClaim,
) -> Result<karpenter_solver::Requirements, karpenter_solver::SolveError> {
    let selectors: Vec<NodeSelectorRequirement> =
        claim.spec.requirements.iter().map(requirement).collect();
    karpenter_solver::Requirements::from_selectors(&selectors)
}

/// A NodePool (or NodeClaim) requirement as the solver's requirement; `minValues` is carried
/// separately ([`min_values`]).
pub fn requirement(r: &v1::NodeSelectorRequirementWithMinValues) -> NodeSelectorRequirement {
    selector(&r.key, r.operator, &r.values)
}

/// A NodeOverlay requirement as the solver's requirement.
pub(crate) fn requirement_of(r: &crate::v1alpha1::OverlayRequirement) -> NodeSelectorRequirement {
    selector(&r.key, r.operator, &r.values)
}

fn selector(key: &str, operator: v1::Operator, values: &[String]) -> NodeSelectorRequirement {
    let operator = match operator {
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
        key: key.to_owned(),
        operator,
        values: values.to_vec(),
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
