//! One disruption round's planner input, from a state snapshot. Pure.
//!
//! The cluster as the provisioner sees it ([`crate::provisioning::problem::build`]: nodes with
//! their bound pods, in-flight NodeClaims, DaemonSets, NodePools) plus the facts the planner
//! needs, through the same conversion `karpenter simulate` uses
//! ([`karpenter_api::solver_input::disruption`]). A node's facts come from its NodeClaim:
//! creation time, `status.lastPodEventTime`, the `Initialized` condition, and drift.
//!
//! - Pending pods that some node could take make the round wait ([`Skip::Pending`]): the
//!   planner assumes they already have a place, and consolidating while the provisioner still
//!   looks for one would race it. Pods nothing can take are left out instead.
//! - Nodes on their way out (tainted `karpenter.sh/disrupted`, deleting, NodeClaim deleting,
//!   or part of a command in flight) are kept as disrupting nodes: they count against budgets
//!   and receive nothing.
//! - In-flight NodeClaims without a Node are uninitialized nodes: never candidates, never
//!   destinations.
//! - The nodes of static NodePools (`spec.replicas`) are not the planner's: it sees them as
//!   unmanaged nodes that take pods (the static loop keeps their number and replaces them).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use crate::state::StoredPod as Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use karpenter_api::labels::{CAPACITY_TYPE_LABEL, NODE_POOL_LABEL};
use karpenter_api::solver_input::disruption::{self as shared, NodeFacts, secs};
use karpenter_api::solver_input::{self as input};
use karpenter_api::v1::nodeclaim::CONDITION_INITIALIZED;
use karpenter_api::v1::{NodeClaim, find_condition};
use karpenter_providers::{NodeGroupFloor, RepairPolicy};
use karpenter_solver::disruption::{
    DisruptionProblem, DoNotDisrupt, Drift, NodeGroup, NodeState, PodState, Unhealthy,
};
use karpenter_solver::{InstanceType, PodView};

use crate::node::repair::health;
use crate::pods::{is_daemon_set_pod, is_terminal};
use crate::provisioning::problem as round;
use crate::state::{Snapshot, StoredPod};

/// Why a round does not plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Pods are waiting for capacity (how many).
    Pending(usize),
}

/// The planner input, and how to act on its answer.
#[derive(Debug, Default)]
pub struct Input {
    /// What the planner reads.
    pub problem: DisruptionProblem,
    /// Node name → NodeClaim name, for every managed node with a NodeClaim.
    pub claims: BTreeMap<String, String>,
    /// Conversion warnings (invalid annotations), for the log.
    pub warnings: Vec<String>,
}

fn condition_true(claim: &NodeClaim, type_: &str) -> bool {
    claim
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, type_))
        .is_some_and(|c| c.is_true())
}

/// The pods bound to nodes that are leaving, converted on demand (most rounds have none).
struct LeavingPods<'a> {
    snapshot: &'a Snapshot,
    by_node: Option<HashMap<&'a str, Vec<&'a Pod>>>,
    namespaces: Option<input::NamespaceIndex>,
}

impl<'a> LeavingPods<'a> {
    fn new(snapshot: &'a Snapshot) -> Self {
        Self {
            snapshot,
            by_node: None,
            namespaces: None,
        }
    }

    /// The still running, evictable pods of `node` (DaemonSet pods leave with it).
    fn take(&mut self, node: &str) -> Vec<PodView> {
        let snapshot = self.snapshot;
        let by_node = self.by_node.get_or_insert_with(|| {
            let mut m: HashMap<&str, Vec<&Pod>> = HashMap::new();
            for p in &snapshot.pods {
                if let Some(n) = p.bound_node()
                    && !is_terminal(p)
                    && p.metadata.deletion_timestamp.is_none()
                {
                    m.entry(n).or_default().push(p.as_ref());
                }
            }
            m
        });
        let Some(pods) = by_node.remove(node) else {
            return Vec::new();
        };
        let namespaces = self
            .namespaces
            .get_or_insert_with(|| round::namespace_index(snapshot));
        let ctx = input::PodContext { namespaces };
        pods.into_iter()
            .filter(|p| !is_daemon_set_pod(p))
            .filter_map(|p| input::pod_view(p, &ctx, &mut Vec::new()).ok())
            .collect()
    }
}

/// How many pending pods the provisioner could still place (on existing or new nodes). Pods no
/// NodePool can serve (too big, no matching NodePool, ...) do not count: waiting for them
/// would stop disruption for as long as they exist.
pub fn placeable_pending(problem: &karpenter_solver::Problem) -> usize {
    if problem.pods.is_empty() {
        return 0;
    }
    let opts = karpenter_solver::Options {
        optimise: false,
        lower_bound: false,
        ..karpenter_solver::Options::default()
    };
    match karpenter_solver::solve(problem, &opts) {
        Ok(plan) => problem.pods.len().saturating_sub(plan.unschedulable.len()),
        // A problem the solver rejects is not one we can reason about: be careful and wait.
        Err(_) => problem.pods.len(),
    }
}

/// Node repair through the planner: marks each managed node whose conditions match one of
/// `policies` as unhealthy, due when the policy's toleration ends (the same matching as the
/// legacy loop, [`crate::node::repair::health::unhealthy`]).
pub fn mark_unhealthy(input: &mut Input, snapshot: &Snapshot, policies: &[RepairPolicy]) {
    if policies.is_empty() {
        return;
    }
    let by_name: HashMap<&str, &k8s_openapi::api::core::v1::Node> = snapshot
        .nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.as_ref())))
        .collect();
    for ns in &mut input.problem.nodes {
        let Some(node) = by_name.get(ns.name.as_str()) else {
            continue;
        };
        ns.unhealthy = health::unhealthy(node, policies).map(|u| Unhealthy {
            condition: u.condition,
            due: u.repair_at.map(|t| t.as_second()),
        });
    }
}

/// Builds the round at `now` (Unix seconds). `drift` maps NodeClaim name → drift;
/// `in_flight` names nodes of commands being carried out; the nodes of a group in `floors`
/// with nothing left to remove are blocked for scale-down.
#[allow(clippy::too_many_arguments)]
pub fn build(
    snapshot: &Snapshot,
    catalogs: &BTreeMap<String, Vec<InstanceType>>,
    pdbs: &[PodDisruptionBudget],
    drift: &BTreeMap<String, Drift>,
    in_flight: &BTreeSet<String>,
    floors: &[NodeGroupFloor],
    now: i64,
    window: std::time::Duration,
) -> Result<Input, Skip> {
    let r = round::build(snapshot, catalogs, &HashMap::new(), Instant::now(), window);
    let placeable = placeable_pending(&r.problem);
    if placeable > 0 {
        return Err(Skip::Pending(placeable));
    }
    let mut problem = r.problem;
    // What is left pending has no place anywhere: it waits either way and must not hold up
    // disruption for the whole cluster (nor be counted as a pod the candidates must fit).
    problem.pods.clear();
    let mut out = Input::default();
    let claim_by_pid: HashMap<&str, &NodeClaim> = snapshot
        .node_claims
        .iter()
        .filter_map(|c| {
            let pid = c.status.as_ref()?.provider_id.as_deref()?;
            Some((pid, c.as_ref()))
        })
        .collect();

    let static_pools: HashSet<&str> = snapshot
        .node_pools
        .iter()
        .filter(|p| p.spec.is_static())
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let mut leaving = LeavingPods::new(snapshot);
    // Managed nodes: the ones the round kept, plus the ones leaving (as disrupting).
    let mut names: BTreeSet<String> = problem
        .existing_nodes
        .iter()
        .map(|n| n.name.clone())
        .collect();
    let catalog = shared::NodeCatalog::new(&problem.instance_types);
    let mut nodes = Vec::new();
    for node in &snapshot.nodes {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        let labels = node.metadata.labels.clone().unwrap_or_default();
        if !labels.contains_key(NODE_POOL_LABEL) {
            continue;
        }
        let pid = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
        let Some(claim) = pid.and_then(|p| claim_by_pid.get(p).copied()) else {
            // Not ours to disrupt (no NodeClaim); it still takes pods if the round kept it.
            continue;
        };
        if !names.contains(&name) {
            // Leaving: the round left it out. Keep it, with the pods still to be evicted from
            // it, so it counts against budgets and the planner keeps room for those pods; it
            // never places pods on a disrupting node.
            match input::existing_node(node, leaving.take(&name)) {
                Ok(n) => {
                    names.insert(name.clone());
                    problem.existing_nodes.push(n);
                }
                Err(_) => continue,
            }
        }
        let claim_name = claim.metadata.name.clone().unwrap_or_default();
        let facts = NodeFacts {
            created: secs(claim.metadata.creation_timestamp.as_ref()).unwrap_or(now),
            last_pod_event: secs(
                claim
                    .status
                    .as_ref()
                    .and_then(|s| s.last_pod_event_time.as_ref()),
            ),
            initialized: condition_true(claim, CONDITION_INITIALIZED),
            drifted: drift.get(&claim_name).cloned(),
            disrupting: claim.metadata.deletion_timestamp.is_some()
                || in_flight.contains(&name)
                || super::command::record_of(claim).is_some(),
        };
        // A static NodePool's nodes are never emptiness, consolidation or drift candidates
        // (its loop replaces drifted and expired ones, `crate::static_nodepool`): left
        // unmanaged, they still take pods. Leaving ones stay, as disrupting nodes take none.
        if !facts.disrupting
            && labels
                .get(NODE_POOL_LABEL)
                .is_some_and(|p| static_pools.contains(p.as_str()))
        {
            continue;
        }
        nodes.push(shared::node_state(node, facts, &catalog, &mut out.warnings));
        out.claims.insert(name, claim_name);
    }

    let node_groups = node_groups(&out.claims, floors);

    // In-flight NodeClaims (the round made them nodes named after the claim): uninitialized.
    let managed: HashSet<String> = nodes.iter().map(|n: &NodeState| n.name.clone()).collect();
    let node_pids: HashSet<&str> = snapshot
        .nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.provider_id.as_deref())
        .collect();
    for claim in &snapshot.node_claims {
        let Some(name) = claim.metadata.name.as_deref() else {
            continue;
        };
        if !names.contains(name) || managed.contains(name) {
            continue;
        }
        let has_node = claim
            .status
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .is_some_and(|p| node_pids.contains(p));
        if has_node {
            continue;
        }
        let l = claim.metadata.labels.clone().unwrap_or_default();
        nodes.push(NodeState {
            name: name.to_string(),
            node_pool: l.get(NODE_POOL_LABEL).cloned().unwrap_or_default(),
            instance_type: String::new(),
            zone: String::new(),
            capacity_type: l.get(CAPACITY_TYPE_LABEL).cloned().unwrap_or_default(),
            price: None,
            created: secs(claim.metadata.creation_timestamp.as_ref()).unwrap_or(now),
            last_pod_event: None,
            initialized: false,
            disrupting: claim.metadata.deletion_timestamp.is_some(),
            drifted: None,
            do_not_disrupt: DoNotDisrupt::No,
            scale_down_blocked: None,
            unhealthy: None,
            do_not_repair: false,
        });
    }

    let objects: HashMap<String, &StoredPod> = snapshot
        .pods
        .iter()
        .map(|p| (crate::pods::pod_key(p), p.as_ref()))
        .collect();
    let mut pods = Vec::new();
    for n in &problem.existing_nodes {
        for p in &n.pods {
            let key = p.key();
            match objects.get(&key) {
                Some(object) => pods.push(shared::pod_state(object, key, now, &mut out.warnings)),
                // A DaemonSet pod the conversion added (the node would run it).
                None => pods.push(PodState {
                    key,
                    daemon_set: true,
                    created: now,
                    ..PodState::default()
                }),
            }
        }
    }
    let pdbs = pdbs
        .iter()
        .map(|b| shared::pdb(b, problem.existing_nodes.iter().flat_map(|n| &n.pods)))
        .collect();
    let policies = snapshot
        .node_pools
        .iter()
        .map(|p| shared::pool_policy(p))
        .collect();
    out.problem = DisruptionProblem {
        problem,
        nodes,
        pods,
        policies,
        pdbs,
        node_groups,
    };
    Ok(out)
}

/// The provider's node groups with a minimum size ([`NodeGroupFloor`], by NodeClaim) as the
/// planner's [`NodeGroup`]s (by node); the planner keeps them at their minimum.
fn node_groups(claims: &BTreeMap<String, String>, floors: &[NodeGroupFloor]) -> Vec<NodeGroup> {
    let node_of: HashMap<&str, &str> = claims
        .iter()
        .map(|(node, claim)| (claim.as_str(), node.as_str()))
        .collect();
    floors
        .iter()
        .map(|f| NodeGroup {
            name: f.group.clone(),
            nodes: f
                .node_claims
                .iter()
                .filter_map(|c| node_of.get(c.as_str()).map(|n| n.to_string()))
                .collect(),
            removable: f.removable,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::provisioning::problem::tests::{WINDOW, catalogs, claim, node, pool, quantities};

    /// A node whose `Ready=False` turned at t=1 000 s is due at 1 000 + 300 (the policy's
    /// toleration); `Ready=Unknown` matches no policy; a node without conditions is healthy.
    #[test]
    fn unhealthy_nodes_are_marked_due_after_their_toleration() {
        use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let with_ready = |name: &str, status: &str| {
            let mut n = node(name, &format!("kwok://{name}"));
            n.metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(NODE_POOL_LABEL.into(), "np".into());
            n.status.get_or_insert_with(NodeStatus::default).conditions =
                Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: status.into(),
                    last_transition_time: Some(Time(
                        k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap(),
                    )),
                    ..Default::default()
                }]);
            n
        };
        let snapshot = Snapshot {
            nodes: vec![
                Arc::new(with_ready("n-bad", "False")),
                Arc::new(with_ready("n-unknown", "Unknown")),
            ],
            node_claims: vec![
                Arc::new(claim("c-bad", Some("kwok://n-bad"), true)),
                Arc::new(claim("c-unknown", Some("kwok://n-unknown"), true)),
            ],
            node_pools: vec![Arc::new(pool())],
            ..Default::default()
        };
        let args = (&BTreeMap::new(), &BTreeSet::new());
        let mut input = build(
            &snapshot,
            &catalogs(),
            &[],
            args.0,
            args.1,
            &[],
            2_000,
            WINDOW,
        )
        .unwrap();
        let policy = RepairPolicy {
            condition_type: "Ready".into(),
            condition_status: "False".into(),
            toleration: std::time::Duration::from_secs(300),
        };
        mark_unhealthy(&mut input, &snapshot, &[policy]);
        let marks: BTreeMap<&str, Option<Unhealthy>> = input
            .problem
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.unhealthy.clone()))
            .collect();
        assert_eq!(
            marks,
            BTreeMap::from([
                (
                    "n-bad",
                    Some(Unhealthy {
                        condition: "Ready".into(),
                        due: Some(1_300)
                    })
                ),
                ("n-unknown", None),
            ])
        );
    }

    /// Two empty initialized nodes with their NodeClaims, one of the dynamic pool `np` and one
    /// of a static pool: only the dynamic one is the planner's (a candidate), the static one
    /// is a node it may put pods on.
    #[test]
    fn static_pool_nodes_are_capacity_but_never_the_planners() {
        let mut fixed = pool();
        fixed.metadata.name = Some("fixed".into());
        fixed.spec.limits = quantities(&[("nodes", "5")]);
        fixed.spec.replicas = Some(1);
        let mut n_static = node("n-static", "kwok://n-static");
        let mut c_static = claim("c-static", Some("kwok://n-static"), true);
        for labels in [
            n_static.metadata.labels.get_or_insert_with(BTreeMap::new),
            c_static.metadata.labels.get_or_insert_with(BTreeMap::new),
        ] {
            labels.insert(NODE_POOL_LABEL.into(), "fixed".into());
        }
        let mut n_dynamic = node("n-dynamic", "kwok://n-dynamic");
        n_dynamic
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(NODE_POOL_LABEL.into(), "np".into());
        let c_dynamic = claim("c-dynamic", Some("kwok://n-dynamic"), true);
        let snapshot = Snapshot {
            nodes: vec![Arc::new(n_static), Arc::new(n_dynamic)],
            node_claims: vec![Arc::new(c_static), Arc::new(c_dynamic)],
            node_pools: vec![Arc::new(pool()), Arc::new(fixed)],
            ..Default::default()
        };
        let mut cats = catalogs();
        cats.insert("fixed".into(), karpenter_providers::kwok::catalog());
        let input = build(
            &snapshot,
            &cats,
            &[],
            &BTreeMap::new(),
            &BTreeSet::new(),
            &[],
            1_000,
            WINDOW,
        )
        .unwrap();
        let managed: Vec<&str> = input
            .problem
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(managed, vec!["n-dynamic"]);
        let existing: BTreeSet<&str> = input
            .problem
            .problem
            .existing_nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(existing, BTreeSet::from(["n-dynamic", "n-static"]));
        assert_eq!(
            input.claims,
            BTreeMap::from([("n-dynamic".to_string(), "c-dynamic".to_string())])
        );
    }
}
