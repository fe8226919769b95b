//! Karpenter documents → the solver's [`NodePoolView`]s. The api crate types and validates each
//! document (its errors name the object and the field); legacy Provisioners are converted by it
//! and then work exactly as the NodePool they become.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_api::read::{KarpenterObject, object_from_value};
use karpenter_api::v1::{self, NodePool};
use karpenter_solver::{NodePoolView, NodeSelectorRequirement, Operator, Taint, TaintEffect};

use super::convert::{ConvertError, parse_resources};
use super::manifests::{KarpenterDocument, Origin};

/// A NodePool and where it was written.
pub struct PoolInput {
    /// Where the NodePool (or the Provisioner it was converted from) is.
    pub origin: Origin,
    /// The solver's view; `usage` is filled in from the existing nodes later.
    pub view: NodePoolView,
}

/// Reads every NodePool and Provisioner; NodeClasses are accepted and not needed offline;
/// other Karpenter kinds are skipped with a warning. Two NodePools with one name are an error
/// (a Provisioner and the NodePool converted from it would otherwise double the capacity).
pub fn node_pools(
    docs: &[KarpenterDocument],
    warnings: &mut Vec<String>,
) -> Result<Vec<PoolInput>, ConvertError> {
    let mut out: Vec<PoolInput> = Vec::new();
    for doc in docs {
        let object = object_from_value(doc.value.clone()).map_err(|e| ConvertError::Object {
            source_doc: doc.source.clone(),
            message: e.to_string(),
        })?;
        let origin = Origin {
            source: doc.source.clone(),
            object: format!("{} {}", doc.kind, object.as_ref().map_or("", |o| o.name())),
            spec_path: String::new(),
            prefix: String::new(),
        };
        let (pool, limits_path) = match object {
            Some(KarpenterObject::NodePool(np)) => (*np, "spec.limits"),
            Some(KarpenterObject::Provisioner(p)) => {
                let converted = p.convert().map_err(|e| ConvertError::Object {
                    source_doc: doc.source.clone(),
                    message: e.to_string(),
                })?;
                (converted.node_pool, "spec.limits.resources")
            }
            Some(KarpenterObject::EC2NodeClass(_) | KarpenterObject::KWOKNodeClass(_)) => continue,
            Some(KarpenterObject::NodeClaim(_)) | None => {
                warnings.push(format!(
                    "warning: {}: skipping {} ({}): not a kind simulate reads",
                    doc.source, origin.object, doc.api_version
                ));
                continue;
            }
        };
        if let Some(first) = out
            .iter()
            .find(|p| Some(&p.view.name) == pool.metadata.name.as_ref())
        {
            return Err(ConvertError::Object {
                source_doc: doc.source.clone(),
                message: format!(
                    "{}: a NodePool named {:?} is already defined by {} ({}); NodePool names must be unique (a Provisioner counts as the NodePool it converts to)",
                    origin.object, first.view.name, first.origin.source, first.origin.object
                ),
            });
        }
        let view = pool_view(&origin, &pool, limits_path, warnings)?;
        out.push(PoolInput { origin, view });
    }
    Ok(out)
}

fn pool_view(
    origin: &Origin,
    np: &NodePool,
    limits_path: &str,
    warnings: &mut Vec<String>,
) -> Result<NodePoolView, ConvertError> {
    let spec = &np.spec;
    let template = &spec.template.spec;
    for (i, r) in template.requirements.iter().enumerate() {
        if r.min_values.is_some() {
            warnings.push(format!(
                "warning: {origin}: spec.template.spec.requirements[{i}].minValues is not modelled by simulate; ignored"
            ));
        }
    }
    Ok(NodePoolView {
        name: np.metadata.name.clone().unwrap_or_default(),
        weight: spec.weight.unwrap_or(0),
        requirements: template.requirements.iter().map(requirement).collect(),
        labels: spec.template.metadata.labels.clone(),
        taints: template.taints.iter().map(taint).collect(),
        startup_taints: template.startup_taints.iter().map(taint).collect(),
        limits: limits(origin, limits_path, &spec.limits)?,
        usage: Default::default(),
        instance_types: None,
    })
}

fn limits(
    origin: &Origin,
    path: &str,
    limits: &BTreeMap<String, Quantity>,
) -> Result<Option<karpenter_solver::Resources>, ConvertError> {
    if limits.is_empty() {
        return Ok(None);
    }
    parse_resources(origin, path, limits).map(Some)
}

fn requirement(r: &v1::NodeSelectorRequirementWithMinValues) -> NodeSelectorRequirement {
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

fn taint(t: &v1::Taint) -> Taint {
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
