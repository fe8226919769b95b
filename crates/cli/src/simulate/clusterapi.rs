//! `--catalog clusterapi`: the input's Cluster API MachineDeployments are the catalog, read and
//! shaped by the Cluster API provider's own code ([`karpenter_clusterapi::catalog`]), so the plan
//! is the one the controller would make from them. As in the controller, each NodePool sees the
//! instance types of the MachineDeployments whose taints it declares, and the problem's catalog
//! is the union of the NodePools' catalogs in NodePool-name order.
//!
//! What simulate cannot know offline: Machines already launched from a MachineDeployment (only
//! its `spec.replicas` counts towards its max size here), and that the controller launches one
//! NodeClaim at a time (a plan may put more NodeClaims on a MachineDeployment than its max size
//! leaves room for; the controller then launches the rest from the next cheapest offering).

use std::collections::{BTreeMap, HashMap, HashSet};

use karpenter_api::v1;
use karpenter_clusterapi::catalog;
use karpenter_clusterapi::scale::node_claim_name;
use karpenter_clusterapi::shape::MEMBER_LABEL;
use karpenter_solver::disruption::NodeGroup;
use karpenter_solver::{InstanceType, Problem, TaintEffect};
use kube::ResourceExt;
use kube::api::DynamicObject;

use super::manifests::Sourced;

/// The `--catalog` value that selects this.
pub const CATALOG: &str = "clusterapi";

/// Why the MachineDeployments of the input give no catalog.
#[derive(Debug, thiserror::Error)]
pub enum ClusterApiCatalogError {
    /// No MachineDeployment opts in.
    #[error(
        "--catalog clusterapi: the input has no MachineDeployment (cluster.x-k8s.io) labelled {MEMBER_LABEL}"
    )]
    NoMachineDeployments,
    /// Some opt in, but none can be offered.
    #[error("--catalog clusterapi: no MachineDeployment can be offered: {0}")]
    NoneOffered(String),
}

fn solver_to_v1(t: &karpenter_solver::Taint) -> v1::Taint {
    v1::Taint {
        key: t.key.clone(),
        value: (!t.value.is_empty()).then(|| t.value.clone()),
        effect: match t.effect {
            TaintEffect::NoSchedule => v1::TaintEffect::NoSchedule,
            TaintEffect::PreferNoSchedule => v1::TaintEffect::PreferNoSchedule,
            TaintEffect::NoExecute => v1::TaintEffect::NoExecute,
        },
    }
}

/// Sets `problem`'s catalog, and each NodePool's instance types, from the MachineDeployments;
/// those that cannot be offered, or are unavailable, are warnings naming their document. Their
/// size is `spec.replicas` plus the input's Machines of ours (as the provider counts them), so
/// one at its max size offers nothing.
pub fn apply(
    problem: &mut Problem,
    machine_deployments: &[Sourced<DynamicObject>],
    machines: &[Sourced<DynamicObject>],
    warnings: &mut Vec<String>,
) -> Result<(), ClusterApiCatalogError> {
    let mut origins = BTreeMap::new();
    for md in machine_deployments {
        let key = format!(
            "{}/{}",
            md.object.namespace().unwrap_or_else(|| "default".into()),
            md.object.name_any()
        );
        if md.object.labels().contains_key(MEMBER_LABEL) {
            origins.insert(key, md.origin.to_string());
        } else {
            warnings.push(format!(
                "warning: {}: skipping: not labelled {MEMBER_LABEL}, so not offered",
                md.origin
            ));
        }
    }
    if origins.is_empty() {
        return Err(ClusterApiCatalogError::NoMachineDeployments);
    }
    let objects = namespaced(machine_deployments);
    let (shapes, errors) = catalog::shapes(&objects);
    let live_machines = catalog::machine_counts(&namespaced(machines));
    let all = catalog::build(shapes.clone(), &live_machines);
    let located = |key: &str| origins.get(key).cloned().unwrap_or_else(|| key.to_string());
    let mut problems = Vec::new();
    for e in errors.iter().chain(&all.errors) {
        let key = match e {
            karpenter_clusterapi::ShapeError::Annotation {
                machine_deployment, ..
            }
            | karpenter_clusterapi::ShapeError::Invalid {
                machine_deployment, ..
            } => machine_deployment,
        };
        warnings.push(format!("warning: {}: {e}; not offered", located(key)));
        problems.push(e.to_string());
    }
    for u in &all.unavailable {
        warnings.push(format!("warning: {}: {u}", located(&u.machine_deployment)));
    }

    let mut order: Vec<usize> = (0..problem.node_pools.len()).collect();
    order.sort_by(|a, b| {
        problem.node_pools[*a]
            .name
            .cmp(&problem.node_pools[*b].name)
    });
    let mut union: Vec<InstanceType> = Vec::new();
    let mut seen = HashSet::new();
    for i in order {
        let pool = &mut problem.node_pools[i];
        let taints: Vec<v1::Taint> = pool
            .taints
            .iter()
            .chain(&pool.startup_taints)
            .map(solver_to_v1)
            .collect();
        let its = catalog::for_pool(&shapes, &taints, &live_machines).instance_types;
        pool.instance_types = Some(its.iter().map(|it| it.name.clone()).collect());
        for it in its {
            if seen.insert(it.name.clone()) {
                union.push(it);
            }
        }
    }
    if shapes.is_empty() {
        return Err(ClusterApiCatalogError::NoneOffered(problems.join("; ")));
    }
    problem.instance_types = union;
    Ok(())
}

/// The node groups with a minimum size (Cluster Autoscaler's min-size annotation) of the
/// input's MachineDeployments, by node: the planner keeps each at its minimum, as the
/// controller does (same [`catalog::floors`]). A group's nodes are its Machines'
/// `status.nodeRef.name`; Machines that have no node yet count toward its size all the same.
pub fn node_groups(
    machine_deployments: &[Sourced<DynamicObject>],
    machines: &[Sourced<DynamicObject>],
) -> Vec<NodeGroup> {
    let (shapes, _) = catalog::shapes(&namespaced(machine_deployments));
    let machines = namespaced(machines);
    let node_of: HashMap<String, String> = machines
        .iter()
        .filter_map(|m| {
            let node = m.data.pointer("/status/nodeRef/name")?.as_str()?;
            Some((node_claim_name(m), node.to_owned()))
        })
        .collect();
    catalog::floors(&shapes, &machines)
        .into_iter()
        .map(|f| NodeGroup {
            name: f.group,
            nodes: f
                .node_claims
                .iter()
                .filter_map(|c| node_of.get(c).cloned())
                .collect(),
            removable: f.removable,
        })
        .collect()
}

/// The objects, in `default` when they name no namespace (as `kubectl apply` would put them).
fn namespaced(objects: &[Sourced<DynamicObject>]) -> Vec<DynamicObject> {
    objects
        .iter()
        .map(|o| {
            let mut o = o.object.clone();
            o.metadata.namespace.get_or_insert_with(|| "default".into());
            o
        })
        .collect()
}
