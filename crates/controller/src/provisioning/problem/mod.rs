//! One provisioning round's solver input, from a state snapshot. Pure.
//!
//! Objects are converted by the shared [`karpenter_api::solver_input`] (the same code
//! `karpenter simulate` uses), so the controller sees topology spread, pod (anti-)affinity and
//! DaemonSet overhead exactly as the simulator predicts them. This module adds what only a
//! live cluster has:
//! - capacity on its way: in-flight NodeClaims without a Node become existing nodes (with the
//!   labels they will have and the smallest allocatable they may get), so a slow launch is
//!   never launched twice;
//! - nominations: pending pods the previous round sent to capacity that is still coming stay
//!   on it (as if bound) instead of being solved again;
//! - nodes on their way out (deleting, disrupted, or whose NodeClaim is deleting) offer no room;
//! - a starting node is judged without its startup and ephemeral taints (they go away on
//!   their own);
//! - NodePool usage against limits counts NodeClaims, which includes launches in flight;
//! - a pending pod's claimed volumes pin it to their zones ([`input::volume_requirements`]);
//!   a pod whose claim cannot be judged yet (missing, unbound with `Immediate` binding) is
//!   reported invalid for this round rather than placed where its volume may not follow.

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use karpenter_api::labels::{
    DISRUPTED_TAINT_KEY, HOSTNAME_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL,
    UNREGISTERED_TAINT_KEY,
};
use karpenter_api::solver_input::{
    self as input, BoundPod, ConvertWarning, NODES, NamespaceIndex, Parts, PodContext, VolumeIndex,
};
use karpenter_api::v1::nodeclaim::CONDITION_INITIALIZED;
use karpenter_api::v1::{NodeClaim, find_condition};
use karpenter_solver::instance_type::pool_of_copy;
use karpenter_solver::overlay::merge_catalogs;
use karpenter_solver::{
    DaemonSetView, ExistingNode, InstanceType, NodePoolView, PodView, Problem, Requirements,
    Resources,
};

use crate::pods::{awaits_capacity, is_terminal, pod_key};
use crate::state::{Snapshot, StoredPod as Pod};

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
    /// Fields the solver does not model, dropped from the conversion (for the log).
    pub warnings: Vec<ConvertWarning>,
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

/// Lookups a round needs more than once, built once.
struct Lookups<'s> {
    claims_by_name: HashMap<&'s str, &'s NodeClaim>,
    nodes_by_name: HashMap<&'s str, &'s Node>,
    claim_by_provider_id: HashMap<&'s str, &'s NodeClaim>,
    node_provider_ids: HashSet<&'s str>,
}

impl<'s> Lookups<'s> {
    fn new(snapshot: &'s Snapshot) -> Self {
        let node_pid = |n: &'s Arc<Node>| n.spec.as_ref()?.provider_id.as_deref();
        Self {
            claims_by_name: snapshot
                .node_claims
                .iter()
                .filter_map(|c| c.metadata.name.as_deref().map(|n| (n, c.as_ref())))
                .collect(),
            nodes_by_name: snapshot
                .nodes
                .iter()
                .filter_map(|n| n.metadata.name.as_deref().map(|name| (name, n.as_ref())))
                .collect(),
            claim_by_provider_id: snapshot
                .node_claims
                .iter()
                .filter_map(|c| provider_id_of(c).map(|p| (p, c.as_ref())))
                .collect(),
            node_provider_ids: snapshot.nodes.iter().filter_map(node_pid).collect(),
        }
    }
}

/// Pods nominated to capacity that still holds, by target (NodeClaim or Node name).
type Nominated = HashMap<String, Vec<(Arc<Pod>, PodView)>>;

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
    let namespaces = namespace_index(snapshot);
    let ctx = PodContext {
        namespaces: &namespaces,
    };
    let lookups = Lookups::new(snapshot);
    let instance_types = union_of(catalogs);
    let holds = |n: &Nomination| {
        nomination_holds(
            n,
            &lookups.claims_by_name,
            &lookups.nodes_by_name,
            now,
            window,
        )
    };
    let (mut pending, mut nominated) = pending_pods(snapshot, &ctx, nominations, holds, &mut round);
    let bound = bound_pods(snapshot, &ctx);
    let mut nodes = existing_nodes(snapshot, &lookups, &mut nominated, &mut round);
    nodes.extend(in_flight_nodes(
        snapshot,
        &lookups,
        &instance_types,
        &mut nominated,
        &mut round,
    ));
    // A target that is in no node of the round (its Node could not be converted) holds
    // nothing: its pods are solved again.
    for (pod, view) in nominated.into_values().flatten() {
        round.pending.insert(pod_key(&pod), pod);
        pending.push(view);
    }
    let (node_pools, min_values) = node_pools(snapshot, catalogs, &mut round.warnings);
    let daemon_sets = daemon_sets(snapshot, &ctx, &mut round.warnings);

    // Bound pods of nodes left out (leaving, or not converted) are simply not counted.
    round.problem = input::problem(Parts {
        instance_types,
        node_pools,
        pending,
        nodes,
        bound,
        daemon_sets,
        min_values,
    })
    .problem;
    round
}

/// Instance types: the union of the NodePools' lists (each pool is restricted to its own); a
/// type NodePools see differently (per-NodePool NodeOverlays) is listed once per NodePool.
fn union_of(catalogs: &BTreeMap<String, Vec<InstanceType>>) -> Vec<InstanceType> {
    merge_catalogs(catalogs)
}

/// Pending pods, converted; those nominated to capacity that still holds are set aside by
/// target (they ride on it as if bound) instead of being solved again. Pods that cannot be
/// converted go to `round.invalid`.
fn pending_pods(
    snapshot: &Snapshot,
    ctx: &PodContext<'_>,
    nominations: &HashMap<String, Nomination>,
    holds: impl Fn(&Nomination) -> bool,
    round: &mut Round,
) -> (Vec<PodView>, Nominated) {
    let volumes = VolumeIndex::new(
        snapshot.volume_claims.iter().map(AsRef::as_ref),
        snapshot.volumes.iter().map(AsRef::as_ref),
        snapshot.storage_classes.iter().map(AsRef::as_ref),
    );
    let mut pending = Vec::new();
    let mut nominated: Nominated = HashMap::new();
    for p in snapshot.pods.iter().filter(|p| awaits_capacity(p)) {
        // Only pending pods need them: a bound pod's node already satisfies its volumes.
        let converted = input::pod_view(p, ctx, &mut round.warnings).and_then(|mut view| {
            view.volume_requirements = input::volume_requirements(p, &volumes)?;
            Ok(view)
        });
        let view = match converted {
            Ok(view) => view,
            Err(e) => {
                round.invalid.push((p.clone(), e.to_string()));
                continue;
            }
        };
        let uid = p.metadata.uid.as_deref().unwrap_or_default();
        match nominations.get(uid) {
            Some(n) if holds(n) => {
                nominated
                    .entry(n.target.clone())
                    .or_default()
                    .push((p.clone(), view));
            }
            _ => {
                round.pending.insert(pod_key(p), p.clone());
                pending.push(view);
            }
        }
    }
    (pending, nominated)
}

/// Pods bound to a node (finished ones hold nothing); `input::problem` puts them on it.
fn bound_pods(snapshot: &Snapshot, ctx: &PodContext<'_>) -> Vec<BoundPod> {
    let mut bound = Vec::new();
    for p in &snapshot.pods {
        let Some(node) = p.bound_node() else {
            continue;
        };
        if is_terminal(p) {
            continue;
        }
        // The API validated these pods; one that still fails conversion is left out of the
        // node's load rather than stopping the round.
        if let Ok(pod) = input::pod_view(p, ctx, &mut Vec::new()) {
            bound.push(BoundPod {
                node: node.to_string(),
                pod,
                daemon_set: input::daemon_set_owner(p),
            });
        }
    }
    bound
}

/// The Nodes that offer room, with the pods nominated to them (or to their NodeClaim); a
/// starting node is judged without its startup and ephemeral taints.
fn existing_nodes(
    snapshot: &Snapshot,
    lookups: &Lookups<'_>,
    nominated: &mut Nominated,
    round: &mut Round,
) -> Vec<ExistingNode> {
    let mut nodes = Vec::new();
    for node in &snapshot.nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let claim = node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(|p| lookups.claim_by_provider_id.get(p).copied());
        if leaving(node, claim) {
            continue;
        }
        let mut pods = Vec::new();
        for target in [Some(name), claim.and_then(|c| c.metadata.name.as_deref())]
            .into_iter()
            .flatten()
        {
            let held = nominated.remove(target).unwrap_or_default();
            pods.extend(held.into_iter().map(|(_, v)| v));
        }
        let mut existing = match input::existing_node(node, pods) {
            Ok(n) => n,
            Err(e) => {
                // Typically a Node whose status the kubelet has not written yet.
                tracing::debug!(error = %e, "node left out of the round");
                continue;
            }
        };
        if let Some(c) = claim.filter(|c| !is_initialized(c)) {
            let startup: HashSet<&str> = c
                .spec
                .startup_taints
                .iter()
                .map(|t| t.key.as_str())
                .collect();
            existing.taints.retain(|t| {
                !EPHEMERAL_TAINTS.contains(&t.key.as_str()) && !startup.contains(t.key.as_str())
            });
        }
        if let Some(c) = claim.and_then(|c| c.metadata.name.clone()) {
            round.in_flight.insert(existing.name.clone(), c);
        }
        nodes.push(existing);
    }
    nodes
}

/// In-flight NodeClaims without a Node yet, as the nodes they will become.
fn in_flight_nodes(
    snapshot: &Snapshot,
    lookups: &Lookups<'_>,
    instance_types: &[InstanceType],
    nominated: &mut Nominated,
    round: &mut Round,
) -> Vec<ExistingNode> {
    let mut nodes = Vec::new();
    for claim in &snapshot.node_claims {
        let Some(name) = claim.metadata.name.as_deref() else {
            continue;
        };
        if claim.metadata.deletion_timestamp.is_some()
            || provider_id_of(claim).is_some_and(|p| lookups.node_provider_ids.contains(p))
        {
            continue;
        }
        let held = nominated.remove(name).unwrap_or_default();
        let pods = held.into_iter().map(|(_, v)| v).collect();
        round.in_flight.insert(name.to_string(), name.to_string());
        nodes.push(in_flight_node(claim, name, instance_types, pods));
    }
    nodes
}

/// The NodePools that can launch for pods (not deleting, not static, with instance types), with
/// their usage, and
/// their `minValues` by name.
fn node_pools(
    snapshot: &Snapshot,
    catalogs: &BTreeMap<String, Vec<InstanceType>>,
    warnings: &mut Vec<ConvertWarning>,
) -> (Vec<NodePoolView>, BTreeMap<String, BTreeMap<String, i32>>) {
    let mut usage = claim_usage(&snapshot.node_claims);
    let mut views = Vec::new();
    let mut min_values = BTreeMap::new();
    for pool in &snapshot.node_pools {
        let Some(name) = pool.metadata.name.as_deref() else {
            continue;
        };
        let Some(its) = catalogs.get(name) else {
            continue;
        };
        // A static NodePool launches only to keep its replicas (`crate::static_nodepool`),
        // never for pods, whatever the gate (upstream leaves them out of the scheduler too);
        // its nodes stay capacity like any other.
        if pool.metadata.deletion_timestamp.is_some() || pool.spec.is_static() {
            continue;
        }
        let pool_usage = usage.remove(name).unwrap_or_default();
        match input::node_pool_view(pool, pool_usage, warnings) {
            Ok(mut view) => {
                view.instance_types = Some(its.iter().map(|i| i.name.clone()).collect());
                let pool_min_values = input::min_values(pool);
                if !pool_min_values.is_empty() {
                    min_values.insert(name.to_owned(), pool_min_values);
                }
                views.push(view);
            }
            Err(e) => tracing::warn!(error = %e, "NodePool left out of the round"),
        }
    }
    (views, min_values)
}

/// DaemonSets whose pods every new node they tolerate will run.
fn daemon_sets(
    snapshot: &Snapshot,
    ctx: &PodContext<'_>,
    warnings: &mut Vec<ConvertWarning>,
) -> Vec<DaemonSetView> {
    let mut out = Vec::new();
    for ds in &snapshot.daemon_sets {
        match input::daemon_set_view(ds, ctx, warnings) {
            Ok(view) => out.push(view),
            Err(e) => tracing::debug!(error = %e, "DaemonSet left out of the round"),
        }
    }
    out
}

/// Namespaces from the store, plus every pod's namespace (a namespace the store has not seen
/// yet but a pod lives in exists).
/// Namespaces by name with their labels, including namespaces only known from their pods.
pub(crate) fn namespace_index(snapshot: &Snapshot) -> NamespaceIndex {
    let mut index: NamespaceIndex = snapshot.namespaces.iter().map(|n| n.as_ref()).collect();
    for p in &snapshot.pods {
        index.ensure(p.metadata.namespace.as_deref().unwrap_or("default"));
    }
    index
}

/// Whether the node offers no room: being deleted, cordoned for disruption by us, or its
/// NodeClaim is going away.
fn leaving(node: &Node, claim: Option<&NodeClaim>) -> bool {
    let disrupted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == DISRUPTED_TAINT_KEY));
    node.metadata.deletion_timestamp.is_some()
        || disrupted
        || claim.is_some_and(|c| c.metadata.deletion_timestamp.is_some())
}

/// An in-flight NodeClaim as the node it will become: the labels its requirements pin, its
/// name as hostname, the allocatable it reported at launch or else the smallest its instance
/// types offer (every one of them fits the pods it was planned for), and the pods nominated to
/// it.
fn in_flight_node(
    claim: &NodeClaim,
    name: &str,
    catalog: &[InstanceType],
    pods: Vec<PodView>,
) -> ExistingNode {
    let mut labels = claim.metadata.labels.clone().unwrap_or_default();
    let reqs: Vec<_> = claim
        .spec
        .requirements
        .iter()
        .map(input::requirement)
        .collect();
    if let Ok(r) = Requirements::from_selectors(&reqs) {
        for (k, v) in r.single_values() {
            labels.entry(k).or_insert(v);
        }
    }
    labels.insert(HOSTNAME_LABEL.to_string(), name.to_string());
    let launched = claim
        .status
        .as_ref()
        .filter(|s| !s.allocatable.is_empty())
        .and_then(|s| input::parse_resources(name, "status.allocatable", &s.allocatable).ok())
        .filter(|r| !r.is_zero());
    ExistingNode {
        name: name.to_string(),
        labels,
        taints: claim
            .spec
            .taints
            .iter()
            .map(input::template_taint)
            .collect(),
        allocatable: launched.unwrap_or_else(|| smallest_option(claim, catalog)),
        pods,
    }
}

/// Usage per NodePool against its limits: the capacity of its NodeClaims (launched ones
/// report it) and a [`NODES`] count. Counting claims rather than Nodes includes launches in
/// flight, so two rounds cannot both spend the same headroom.
fn claim_usage(claims: &[Arc<NodeClaim>]) -> BTreeMap<String, Resources> {
    let mut usage: BTreeMap<String, Resources> = BTreeMap::new();
    for c in claims {
        let Some(pool) = c
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(NODE_POOL_LABEL))
        else {
            continue;
        };
        let u = usage.entry(pool.clone()).or_default();
        let name = c.metadata.name.as_deref().unwrap_or_default();
        if let Some(s) = &c.status
            && let Ok(cap) = input::parse_resources(name, "status.capacity", &s.capacity)
        {
            u.add(&cap);
        }
        u.add_one(NODES, 1);
    }
    usage
}

/// What an unlaunched NodeClaim will at least offer: the element-wise minimum allocatable over
/// the instance types it allows.
fn smallest_option(claim: &NodeClaim, catalog: &[InstanceType]) -> Resources {
    let allowed: HashSet<&str> = claim
        .spec
        .requirements
        .iter()
        .filter(|r| r.key == INSTANCE_TYPE_LABEL)
        .flat_map(|r| r.values.iter().map(String::as_str))
        .collect();
    let pool = claim
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(NODE_POOL_LABEL))
        .map(String::as_str);
    let mut out: Option<Resources> = None;
    // Copies of a type reserved to another NodePool (per-NodePool overlays) are not its.
    for it in catalog.iter().filter(|it| {
        allowed.contains(&it.name.as_str())
            && pool_of_copy(it).is_none_or(|p| pool.is_none_or(|pool| p == pool))
    }) {
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
