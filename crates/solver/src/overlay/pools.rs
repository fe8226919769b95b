//! NodeOverlays per NodePool (upstream `getOverlaidOfferings`): for each NodePool, an instance
//! type's nodes carry `karpenter.sh/nodepool=<pool>` and the NodePool's template labels, so an
//! overlay requiring those changes the type only in that NodePool's catalog. The NodePools'
//! catalogs are then merged into the solver's one list: a type every NodePool sees alike is
//! listed once, a type they see differently once per NodePool, each copy reserved to its
//! NodePool by the label `karpenter.sh/nodepool` (which the NodePool's own requirement
//! `karpenter.sh/nodepool In [<pool>]` admits and every other NodePool's rejects, and which
//! the node gets anyway). Overlays that name neither key take the shared-catalog path, as
//! before: no copies, no extra work.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Evaluation, Overlay, Scope, apply_overlays, apply_scoped};
use crate::instance_type::{InstanceType, pool_of_copy};
use crate::labels::NODEPOOL;
use crate::model::Problem;

/// NodePool name → its template labels.
pub type PoolLabels = BTreeMap<String, BTreeMap<String, String>>;

/// Whether an overlay's requirements name `karpenter.sh/nodepool` or a NodePool template
/// label key (only those overlays can differ between NodePools).
fn scoped_by_pool(overlays: &[Overlay], pool_labels: &PoolLabels) -> bool {
    overlays.iter().any(|o| {
        o.requirements
            .0
            .keys()
            .any(|k| k == NODEPOOL || pool_labels.values().any(|l| l.contains_key(k)))
    })
}

/// The labels nodes of `pool` carry besides their instance type's.
fn scope_labels(pool: &str, pool_labels: &PoolLabels) -> BTreeMap<String, String> {
    let mut labels = pool_labels.get(pool).cloned().unwrap_or_default();
    labels.insert(NODEPOOL.to_owned(), pool.to_owned());
    labels
}

/// Applies `overlays` to each NodePool's catalog (NodePool name → instance types;
/// `pool_labels`: NodePool name → template labels).
///
/// When an overlay names `karpenter.sh/nodepool` or a template label key, overlays are judged
/// per NodePool as upstream: an overlay conflicting in any NodePool is left out of all. Else
/// conflicts are judged once over the union of the catalogs (an instance type several
/// NodePools list counted once), which gives the same result without the per-NodePool work.
pub fn apply_overlays_per_pool(
    catalogs: &mut BTreeMap<String, Vec<InstanceType>>,
    pool_labels: &PoolLabels,
    overlays: &[Overlay],
) -> Evaluation {
    if scoped_by_pool(overlays, pool_labels) {
        let mut scopes: Vec<Scope<'_>> = catalogs
            .iter_mut()
            .map(|(pool, catalog)| Scope {
                labels: scope_labels(pool, pool_labels),
                catalog,
            })
            .collect();
        return apply_scoped(&mut scopes, overlays);
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut union: Vec<InstanceType> = catalogs
        .values()
        .flatten()
        .filter(|it| seen.insert(it.name.as_str()))
        .cloned()
        .collect();
    let evaluation = apply_overlays(&mut union, overlays);
    let accepted: Vec<Overlay> = overlays
        .iter()
        .filter(|o| !evaluation.conflicts.contains_key(&o.name))
        .cloned()
        .collect();
    for catalog in catalogs.values_mut() {
        apply_overlays(catalog, &accepted);
    }
    evaluation
}

/// The solver's one catalog from the NodePools' (NodePool name → instance types), in order of
/// first appearance: an instance type every NodePool listing it sees alike once, as it is; one
/// they see differently (overlays per NodePool, or providers listing it differently per
/// NodePool) once per NodePool, labelled `karpenter.sh/nodepool=<pool>` so that only that
/// NodePool uses it. Look entries up with [`crate::instance_type::find_for_pool`] or
/// [`crate::instance_type::CatalogIndex`].
pub fn merge_catalogs(catalogs: &BTreeMap<String, Vec<InstanceType>>) -> Vec<InstanceType> {
    let mut order: Vec<&str> = Vec::new();
    let mut copies: HashMap<&str, Vec<(&str, &InstanceType)>> = HashMap::new();
    for (pool, catalog) in catalogs {
        for it in catalog {
            let c = copies.entry(it.name.as_str()).or_default();
            if c.is_empty() {
                order.push(it.name.as_str());
            }
            // A NodePool listing a name twice keeps its first, as a name lookup would.
            if !c.iter().any(|(p, _)| p == pool) {
                c.push((pool.as_str(), it));
            }
        }
    }
    let mut out = Vec::with_capacity(order.len());
    for name in order {
        let c = &copies[name];
        let (_, first) = c[0];
        if c.iter().all(|(_, it)| *it == first) && pool_of_copy(first).is_none() {
            out.push(first.clone());
            continue;
        }
        for (pool, it) in c {
            let mut it = (*it).clone();
            it.labels.insert(NODEPOOL.to_owned(), (*pool).to_owned());
            out.push(it);
        }
    }
    out
}

/// Applies `overlays` to `problem`'s catalog, as [`apply_overlays_per_pool`] would to each
/// NodePool's (the instance types its `instance_types` names, or all) followed by
/// [`merge_catalogs`]. Overlays naming neither `karpenter.sh/nodepool` nor a NodePool label
/// key change the shared catalog in place, exactly as [`apply_overlays`]. Instance types no
/// NodePool may use are then left as they were.
pub fn apply_overlays_to_problem(problem: &mut Problem, overlays: &[Overlay]) -> Evaluation {
    let pool_labels: PoolLabels = problem
        .node_pools
        .iter()
        .map(|np| (np.name.clone(), np.labels.clone()))
        .collect();
    if !scoped_by_pool(overlays, &pool_labels) {
        return apply_overlays(&mut problem.instance_types, overlays);
    }
    let mut catalogs: BTreeMap<String, Vec<InstanceType>> = problem
        .node_pools
        .iter()
        .map(|np| {
            // A set: each NodePool's list is checked against every type of the catalog.
            let names: Option<HashSet<&str>> = np
                .instance_types
                .as_ref()
                .map(|names| names.iter().map(String::as_str).collect());
            let allowed = |it: &&InstanceType| {
                names
                    .as_ref()
                    .is_none_or(|names| names.contains(it.name.as_str()))
            };
            let catalog = problem.instance_types.iter().filter(allowed).cloned();
            (np.name.clone(), catalog.collect())
        })
        .collect();
    let evaluation = apply_overlays_per_pool(&mut catalogs, &pool_labels, overlays);
    let mut merged = merge_catalogs(&catalogs);
    // Keep the input's order (ties between equal offerings go by position).
    let position: HashMap<&str, usize> = problem
        .instance_types
        .iter()
        .enumerate()
        .rev()
        .map(|(i, it)| (it.name.as_str(), i))
        .collect();
    let listed: HashSet<&str> = merged.iter().map(|it| it.name.as_str()).collect();
    let unused = problem
        .instance_types
        .iter()
        .filter(|it| !listed.contains(it.name.as_str()))
        .cloned()
        .collect::<Vec<_>>();
    merged.extend(unused);
    merged.sort_by_key(|it| {
        position
            .get(it.name.as_str())
            .copied()
            .unwrap_or(usize::MAX)
    });
    problem.instance_types = merged;
    evaluation
}
