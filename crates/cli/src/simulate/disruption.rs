//! `simulate` shows disruption: the Karpenter-managed Nodes of the input (label
//! `karpenter.sh/nodepool`) with their pods → the solver's disruption planner → the
//! `disruptions` array of the report (design.md §6).
//!
//! What a Node tells: NodePool, instance type, capacity type and zone from its labels (the
//! price is that offering's in the catalog), creation time from `metadata.creationTimestamp`,
//! `karpenter.sh/do-not-disrupt` from its annotations; it is initialized unless its `Ready`
//! condition says otherwise, and already disrupting when it is being deleted or carries the
//! `karpenter.sh/disrupted` taint. It is drifted when its labels no longer satisfy its
//! NodePool's requirements or its instance type is not in the catalog.
//!
//! **Time.** The planner needs "now" (consolidateAfter, expireAfter, do-not-disrupt
//! durations, budget windows). So that the output depends on the input only, `now` is the
//! newest `metadata.creationTimestamp` in the input (Nodes, Pods, DaemonSets, PDBs, NodePools),
//! or the Unix epoch when there is none; an object without a timestamp is taken as created at
//! `now`. A pod's last event on a node is the newest creation time of the pods running there.
//!
//! The nodes of static NodePools (`spec.replicas`) are left to the planner as unmanaged nodes:
//! they take pods and are never disrupted ([`super::statics`]).
//!
//! Pending pods that the provisioning plan puts on existing nodes are bound there first, so a
//! disruption never counts on room the plan already gave away; the plan's new NodeClaims are
//! not part of the cluster yet and are neither candidates nor destinations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use karpenter_api::read::{KarpenterObject, object_from_value};
use karpenter_api::solver_input::disruption::{self as shared, NodeFacts, secs};
use karpenter_api::v1;
use karpenter_solver::Plan;
use karpenter_solver::disruption::{
    self as planner, DisruptionOptions, DisruptionPlan, DisruptionProblem, Drift, PodState,
};
use karpenter_solver::labels::{INSTANCE_TYPE, NODEPOOL};

use super::convert::Converted;
use super::manifests::Manifests;

/// The newest `metadata.creationTimestamp` of the input, or 0 (the Unix epoch).
pub fn reference_now(m: &Manifests) -> i64 {
    let metas = m
        .nodes
        .iter()
        .map(|n| &n.object.metadata)
        .chain(m.pods.iter().map(|p| &p.object.metadata))
        .chain(m.daemon_sets.iter().map(|d| &d.object.metadata))
        .chain(m.pdbs.iter().map(|d| &d.object.metadata));
    let pools = node_pools(m);
    metas
        .chain(pools.iter().map(|p| &p.metadata))
        .filter_map(|md| secs(md.creation_timestamp.as_ref()))
        .max()
        .unwrap_or(0)
}

/// NodePools (and Provisioners, converted) of the input; invalid ones were reported by the
/// provisioning conversion already and are skipped here.
fn node_pools(m: &Manifests) -> Vec<v1::NodePool> {
    m.karpenter
        .iter()
        .filter_map(|doc| match object_from_value(doc.value.clone()).ok()?? {
            KarpenterObject::NodePool(np) => Some(*np),
            KarpenterObject::Provisioner(p) => p.convert().ok().map(|c| c.node_pool),
            _ => None,
        })
        .collect()
}

/// The disruption problem of the input, or `None` when it has no Karpenter-managed Node.
pub fn problem(
    m: &Manifests,
    converted: &Converted,
    plan: &Plan,
    now: i64,
    warnings: &mut Vec<String>,
) -> Option<DisruptionProblem> {
    let managed: Vec<&k8s::Node> = m
        .nodes
        .iter()
        .map(|n| &n.object)
        .filter(|n| labels(&n.metadata).contains_key(NODEPOOL))
        .collect();
    if managed.is_empty() {
        return None;
    }
    let mut problem = converted.problem.clone();
    // Bind the plan's placements on existing nodes: that room is taken.
    let pending: BTreeMap<String, _> = problem.pods.drain(..).map(|p| (p.key(), p)).collect();
    for placement in &plan.existing_nodes {
        if let Some(node) = problem
            .existing_nodes
            .iter_mut()
            .find(|n| n.name == placement.node)
        {
            node.pods.extend(
                placement
                    .pods
                    .iter()
                    .filter_map(|k| pending.get(k).cloned()),
            );
        }
    }

    let objects: BTreeMap<String, &k8s::Pod> = m
        .pods
        .iter()
        .map(|p| {
            let md = &p.object.metadata;
            let key = format!(
                "{}/{}",
                md.namespace.as_deref().unwrap_or("default"),
                md.name.as_deref().unwrap_or_default()
            );
            (key, &*p.object)
        })
        .collect();
    let mut pods = Vec::new();
    let mut last_event: BTreeMap<&str, i64> = BTreeMap::new();
    for node in &problem.existing_nodes {
        for p in &node.pods {
            let key = p.key();
            let Some(object) = objects.get(&key) else {
                // Not in the input: a DaemonSet pod the conversion added to the node.
                pods.push(PodState {
                    key,
                    daemon_set: true,
                    created: now,
                    ..Default::default()
                });
                continue;
            };
            let md = &object.metadata;
            if let Some(created) = secs(md.creation_timestamp.as_ref()) {
                let e = last_event.entry(node.name.as_str()).or_insert(created);
                *e = (*e).max(created);
            }
            pods.push(shared::pod_state(object, key, now, warnings));
        }
    }

    let pools = node_pools(m);
    let catalog = shared::NodeCatalog::new(&problem.instance_types);
    let mut nodes = Vec::new();
    for n in managed {
        let md = &n.metadata;
        let name = md.name.clone().unwrap_or_default();
        let l = labels(md);
        // A static NodePool's nodes are fixed capacity: never candidates, still destinations.
        let pool_name = l.get(NODEPOOL).map(String::as_str);
        if pools
            .iter()
            .any(|p| p.spec.is_static() && p.metadata.name.as_deref() == pool_name)
        {
            continue;
        }
        let created = secs(md.creation_timestamp.as_ref()).unwrap_or(now);
        let it = l.get(INSTANCE_TYPE).map(String::as_str).unwrap_or_default();
        let drifted = if !catalog.lists(it) {
            Some("InstanceTypeNotFound".to_owned())
        } else {
            let pool = l.get(NODEPOOL).map(String::as_str).unwrap_or_default();
            pools
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(pool))
                .and_then(|p| shared::requirements_drifted(p, l))
        };
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_none_or(|c| c.status == "True");
        let facts = NodeFacts {
            created,
            last_pod_event: last_event.get(name.as_str()).copied(),
            initialized: ready,
            drifted: drifted.map(|reason| Drift {
                reason,
                since: created,
            }),
            disrupting: false,
        };
        nodes.push(shared::node_state(n, facts, &catalog, warnings));
    }

    let pdbs = m
        .pdbs
        .iter()
        .map(|b| {
            shared::pdb(
                &b.object,
                problem.existing_nodes.iter().flat_map(|n| &n.pods),
            )
        })
        .collect();

    Some(DisruptionProblem {
        problem,
        nodes,
        pods,
        policies: pools.iter().map(shared::pool_policy).collect(),
        pdbs,
        node_groups: Vec::new(),
    })
}

fn labels(md: &meta::ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    md.labels.as_ref().unwrap_or(&EMPTY)
}

/// Plans disruption for the input at `now`.
pub fn plan(dp: &DisruptionProblem, now: i64) -> Result<DisruptionPlan, planner::DisruptionError> {
    planner::plan(
        dp,
        &DisruptionOptions {
            now,
            ..DisruptionOptions::default()
        },
    )
}
