//! One provisioning round's solver input, from a state snapshot. Pure.
//!
//! Capacity that exists or is on its way counts before anything is bought: Nodes with their
//! bound pods, and in-flight NodeClaims (no Node yet) with the pods nominated to them. Pending
//! pods already nominated to capacity that is still coming are not solved again; that is what
//! keeps a slow launch from being launched twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use karpenter_api::labels::{
    DISRUPTED_TAINT_KEY, HOSTNAME_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL,
    UNREGISTERED_TAINT_KEY,
};
use karpenter_api::v1::nodeclaim::CONDITION_INITIALIZED;
use karpenter_api::v1::{NodeClaim, find_condition};
use karpenter_solver::{ExistingNode, InstanceType, Problem, Resources};

use super::input;
use super::pending::{is_provisionable, is_terminal, pod_key};
use crate::state::Snapshot;

/// Taints that are expected to go away on their own while a node starts (upstream
/// `KnownEphemeralTaints`); an uninitialized node is judged without them.
pub const EPHEMERAL_TAINTS: [&str; 4] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.cloudprovider.kubernetes.io/uninitialized",
    UNREGISTERED_TAINT_KEY,
];

/// A pending pod's assignment to capacity that is on its way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nomination {
    /// NodeClaim (or Node) name.
    pub target: String,
    /// When it was made.
    pub at: Instant,
}

/// The solver input plus what the provisioner needs to act on the plan.
#[derive(Debug, Default)]
pub struct Round {
    /// Solver input.
    pub problem: Problem,
    /// Pending pods by `namespace/name`.
    pub pending: BTreeMap<String, Arc<Pod>>,
    /// Pending pods that could not be converted, with why (they get an event).
    pub invalid: Vec<(Arc<Pod>, String)>,
    /// Existing-node name → NodeClaim name, for in-flight capacity (pods placed there are
    /// nominated to that NodeClaim).
    pub in_flight: BTreeMap<String, String>,
}

fn is_initialized(claim: &NodeClaim) -> bool {
    claim
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, CONDITION_INITIALIZED))
        .is_some_and(|c| c.is_true())
}

fn provider_id_of(claim: &NodeClaim) -> Option<&str> {
    claim.status.as_ref().and_then(|s| s.provider_id.as_deref())
}

/// Whether a nomination still holds: its target exists and is not going away, and either is
/// still starting or was nominated less than `window` ago.
fn nomination_holds(
    n: &Nomination,
    claims: &HashMap<&str, &NodeClaim>,
    nodes: &HashMap<&str, &Node>,
    now: Instant,
    window: Duration,
) -> bool {
    let fresh = now.saturating_duration_since(n.at) < window;
    match claims.get(n.target.as_str()) {
        Some(c) => c.metadata.deletion_timestamp.is_none() && (fresh || !is_initialized(c)),
        None => fresh && nodes.contains_key(n.target.as_str()),
    }
}

/// Builds the round. `catalogs` maps NodePool name → its instance types (NodePools missing
/// from it are skipped); `nominations` maps pod UID → nomination.
pub fn build(
    snapshot: &Snapshot,
    catalogs: &BTreeMap<String, Vec<InstanceType>>,
    nominations: &HashMap<String, Nomination>,
    now: Instant,
    window: Duration,
) -> Round {
    let mut round = Round::default();
    let claims_by_name: HashMap<&str, &NodeClaim> = snapshot
        .node_claims
        .iter()
        .filter_map(|c| c.metadata.name.as_deref().map(|n| (n, c.as_ref())))
        .collect();
    let nodes_by_name: HashMap<&str, &Node> = snapshot
        .nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref().map(|name| (name, n.as_ref())))
        .collect();
    let claim_by_pid: HashMap<&str, &NodeClaim> = snapshot
        .node_claims
        .iter()
        .filter_map(|c| provider_id_of(c).map(|p| (p, c.as_ref())))
        .collect();

    // Instance types: the union of the NodePools' lists, each pool restricted to its own.
    let mut seen: BTreeMap<String, ()> = BTreeMap::new();
    for its in catalogs.values() {
        for it in its {
            if seen.insert(it.name.clone(), ()).is_none() {
                round.problem.instance_types.push(it.clone());
            }
        }
    }

    // Pending pods, and nominated ones per target.
    let mut nominated: HashMap<String, Vec<&Pod>> = HashMap::new();
    for p in snapshot.pods.iter().filter(|p| is_provisionable(p)) {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        if let Some(n) = nominations.get(&uid)
            && nomination_holds(n, &claims_by_name, &nodes_by_name, now, window)
        {
            nominated.entry(n.target.clone()).or_default().push(p);
            continue;
        }
        match input::pod(p) {
            Ok(view) => {
                round.pending.insert(pod_key(p), p.clone());
                round.problem.pods.push(view);
            }
            Err(reason) => round.invalid.push((p.clone(), reason)),
        }
    }
    let views =
        |pods: &[&Pod]| -> Vec<_> { pods.iter().filter_map(|p| input::pod(p).ok()).collect() };

    // Bound pods per node.
    let mut bound: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in &snapshot.pods {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref())
            && !is_terminal(p)
        {
            bound.entry(n).or_default().push(p);
        }
    }

    // Usage per NodePool, against limits: capacity of its NodeClaims (+ a `nodes` count).
    let mut usage: BTreeMap<String, Resources> = BTreeMap::new();
    for c in &snapshot.node_claims {
        let Some(pool) = c
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NODE_POOL_LABEL))
        else {
            continue;
        };
        let u = usage.entry(pool.clone()).or_default();
        if let Some(s) = &c.status
            && let Ok(cap) = input::resources(Some(&s.capacity))
        {
            u.add(&cap);
        }
        u.add_one("nodes", 1);
    }

    for node in &snapshot.nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let spec = node.spec.clone().unwrap_or_default();
        let taints = spec.taints.clone().unwrap_or_default();
        if node.metadata.deletion_timestamp.is_some()
            || spec.unschedulable == Some(true)
            || taints.iter().any(|t| t.key == DISRUPTED_TAINT_KEY)
        {
            continue;
        }
        let claim = spec
            .provider_id
            .as_deref()
            .and_then(|p| claim_by_pid.get(p).copied());
        if claim.is_some_and(|c| c.metadata.deletion_timestamp.is_some()) {
            continue;
        }
        let starting = claim.is_some_and(|c| !is_initialized(c));
        let startup: Vec<&str> = claim
            .map(|c| {
                c.spec
                    .startup_taints
                    .iter()
                    .map(|t| t.key.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let taints = taints
            .iter()
            .filter(|t| {
                !(starting
                    && (EPHEMERAL_TAINTS.contains(&t.key.as_str())
                        || startup.contains(&t.key.as_str())))
            })
            .filter_map(|t| input::node_taint(t).ok())
            .collect();
        let mut pods = views(bound.get(name).map(Vec::as_slice).unwrap_or_default());
        for target in [Some(name), claim.and_then(|c| c.metadata.name.as_deref())]
            .into_iter()
            .flatten()
        {
            if let Some(ps) = nominated.remove(target) {
                pods.extend(views(&ps));
            }
        }
        if let Some(c) = claim.and_then(|c| c.metadata.name.clone()) {
            round.in_flight.insert(name.to_string(), c);
        }
        round.problem.existing_nodes.push(ExistingNode {
            name: name.to_string(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints,
            allocatable: node
                .status
                .as_ref()
                .and_then(|s| input::resources(s.allocatable.as_ref()).ok())
                .unwrap_or_default(),
            pods,
        });
    }

    // In-flight NodeClaims without a Node yet.
    let node_pids: Vec<&str> = snapshot
        .nodes
        .iter()
        .filter_map(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()))
        .collect();
    for claim in &snapshot.node_claims {
        let Some(name) = claim.metadata.name.as_deref() else {
            continue;
        };
        if claim.metadata.deletion_timestamp.is_some()
            || provider_id_of(claim).is_some_and(|p| node_pids.contains(&p))
        {
            continue;
        }
        let mut labels = claim.metadata.labels.clone().unwrap_or_default();
        let reqs: Vec<_> = claim
            .spec
            .requirements
            .iter()
            .map(input::requirement)
            .collect();
        if let Ok(r) = karpenter_solver::Requirements::from_selectors(&reqs) {
            for (k, v) in r.single_values() {
                labels.entry(k).or_insert(v);
            }
        }
        labels.insert(HOSTNAME_LABEL.to_string(), name.to_string());
        let launched = claim
            .status
            .as_ref()
            .and_then(|s| input::resources(Some(&s.allocatable)).ok())
            .filter(|r| !r.is_zero());
        let allocatable =
            launched.unwrap_or_else(|| smallest_option(claim, &round.problem.instance_types));
        let pods = nominated
            .remove(name)
            .map(|ps| views(&ps))
            .unwrap_or_default();
        round.in_flight.insert(name.to_string(), name.to_string());
        round.problem.existing_nodes.push(ExistingNode {
            name: name.to_string(),
            labels,
            taints: claim
                .spec
                .taints
                .iter()
                .map(input::template_taint)
                .collect(),
            allocatable,
            pods,
        });
    }

    for pool in &snapshot.node_pools {
        let Some(name) = pool.metadata.name.as_deref() else {
            continue;
        };
        if pool.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(its) = catalogs.get(name) else {
            continue;
        };
        let names = Some(its.iter().map(|i| i.name.clone()).collect());
        if let Ok(view) = input::node_pool_view(pool, usage.remove(name).unwrap_or_default(), names)
        {
            round.problem.node_pools.push(view);
        }
    }
    round.problem.daemon_sets = snapshot
        .daemon_sets
        .iter()
        .filter_map(|d| input::daemon_set_view(d).ok())
        .collect();
    round
}

/// What an unlaunched NodeClaim will at least offer: the element-wise minimum allocatable over
/// the instance types it allows (every one of them fits its pods).
fn smallest_option(claim: &NodeClaim, catalog: &[InstanceType]) -> Resources {
    let allowed: Vec<&str> = claim
        .spec
        .requirements
        .iter()
        .filter(|r| r.key == INSTANCE_TYPE_LABEL)
        .flat_map(|r| r.values.iter().map(String::as_str))
        .collect();
    let mut out: Option<Resources> = None;
    for it in catalog
        .iter()
        .filter(|it| allowed.contains(&it.name.as_str()))
    {
        let a = it.allocatable();
        out = Some(match out {
            None => a,
            Some(cur) => {
                let mut m = Resources::new();
                for k in cur.0.keys().chain(a.0.keys()) {
                    m.set(k, cur.get(k).min(a.get(k)));
                }
                m
            }
        });
    }
    out.unwrap_or_default()
}
