//! Karpenter documents → the solver's [`NodePoolView`]s. The api crate types and validates each
//! document (its errors name the object and the field) and converts it
//! ([`solver_input::node_pool_view`]); legacy Provisioners are converted to NodePools by it
//! and then work exactly as the NodePool they become.

use std::collections::BTreeMap;

use karpenter_api::read::{KarpenterObject, object_from_value};
use karpenter_api::solver_input;
use karpenter_api::v1::NodePool;
use karpenter_solver::{NodePoolView, Resources};

use super::convert::{ConvertError, field};
use super::manifests::{KarpenterDocument, Origin};

/// NodePool name → requirement key → `minValues` (the solver's `Problem::min_values`).
pub type MinValues = BTreeMap<String, BTreeMap<String, i32>>;

/// A NodePool and where it was written.
struct PoolInput {
    /// Where the NodePool (or the Provisioner it was converted from) is.
    origin: Origin,
    /// The solver's view.
    view: NodePoolView,
    /// Its requirements' `minValues` per key.
    min_values: BTreeMap<String, i32>,
}

/// Reads every NodePool and Provisioner, taking each one's usage out of `usage` (NodePool name →
/// what its existing nodes use); NodeClasses are accepted and not needed offline; other
/// Karpenter kinds are skipped with a warning. Two NodePools with one name are an error (a
/// Provisioner and the NodePool converted from it would otherwise double the capacity).
/// Returns the views and the NodePools' `minValues`. Static NodePools (`spec.replicas`) get no
/// view (pending pods never launch them) and go to `statics` instead ([`super::statics`]).
pub fn node_pools(
    docs: &[KarpenterDocument],
    usage: &mut BTreeMap<String, Resources>,
    statics: &mut Vec<NodePool>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<NodePoolView>, MinValues), ConvertError> {
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
            Some(
                KarpenterObject::EC2NodeClass(_)
                | KarpenterObject::KWOKNodeClass(_)
                | KarpenterObject::NodeOverlay(_)
                | KarpenterObject::CapacityBuffer(_),
            ) => continue,
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
        let static_twin = statics
            .iter()
            .find(|p| p.metadata.name == pool.metadata.name);
        if pool.spec.is_static() || static_twin.is_some() {
            if let Some(first) = static_twin {
                return Err(ConvertError::Object {
                    source_doc: doc.source.clone(),
                    message: format!(
                        "{}: a NodePool named {:?} is already defined; NodePool names must be unique",
                        origin.object,
                        first.metadata.name.as_deref().unwrap_or_default()
                    ),
                });
            }
            statics.push(pool);
            continue;
        }
        let pool_usage = pool
            .metadata
            .name
            .as_ref()
            .and_then(|n| usage.remove(n))
            .unwrap_or_default();
        let mut notes = Vec::new();
        let view = solver_input::node_pool_view(&pool, pool_usage, &mut notes)
            .map_err(|e| field(&origin, document_path(&e.path, limits_path), e.message))?;
        warnings.extend(notes.iter().map(|w| {
            format!(
                "warning: {origin}: {}: {}",
                document_path(&w.path, limits_path),
                w.message
            )
        }));
        let min_values = solver_input::min_values(&pool);
        out.push(PoolInput {
            origin,
            view,
            min_values,
        });
    }
    let min_values = out
        .iter()
        .filter(|p| !p.min_values.is_empty())
        .map(|p| (p.view.name.clone(), p.min_values.clone()))
        .collect();
    Ok((out.into_iter().map(|p| p.view).collect(), min_values))
}

/// Where a NodePool field path is in the document: a Provisioner's limits are at
/// `spec.limits.resources` where the NodePool it becomes has `spec.limits`; its other fields
/// have no one-to-one place, so the NodePool path is kept (the object is named as a Provisioner).
fn document_path(path: &str, limits_path: &str) -> String {
    match path.strip_prefix("spec.limits") {
        Some(rest) if rest.is_empty() || rest.starts_with('.') => format!("{limits_path}{rest}"),
        _ => path.to_owned(),
    }
}
