//! Converted pieces → one [`Problem`]: pods bound to a node go onto that node, and each node
//! gets the daemon pods it would run but that are not among its pods.

use std::collections::{BTreeMap, HashMap, HashSet};

use karpenter_solver::{DaemonSetView, ExistingNode, InstanceType, NodePoolView, PodView, Problem};

use super::nodes::runs_on;
use super::pods::PodObject;

/// A converted pod that is bound to a node (`spec.nodeName`).
#[derive(Clone, Debug)]
pub struct BoundPod {
    /// The node's name.
    pub node: String,
    /// The pod.
    pub pod: PodView,
    /// The name of the DaemonSet that owns the pod, if one does ([`daemon_set_owner`]): that
    /// DaemonSet's pod on this node is then already accounted for.
    pub daemon_set: Option<String>,
}

/// Everything [`problem`] puts together, each piece already converted.
#[derive(Clone, Debug, Default)]
pub struct Parts {
    /// The instance types new nodes may be.
    pub instance_types: Vec<InstanceType>,
    /// NodePools, with their usage ([`super::node_pool_view`]).
    pub node_pools: Vec<NodePoolView>,
    /// Pods waiting for a node.
    pub pending: Vec<PodView>,
    /// Existing nodes ([`super::existing_node`]); their pods are kept, bound pods are added.
    pub nodes: Vec<ExistingNode>,
    /// Pods bound to a node.
    pub bound: Vec<BoundPod>,
    /// DaemonSets: overhead on every new node, and a pod on every existing one that accepts it.
    pub daemon_sets: Vec<DaemonSetView>,
    /// NodePool name → requirement key → `minValues` ([`super::min_values`]).
    pub min_values: BTreeMap<String, BTreeMap<String, i32>>,
}

/// The assembled problem, and what could not be placed in it.
#[derive(Clone, Debug)]
pub struct Assembled {
    /// The solver's input.
    pub problem: Problem,
    /// Bound pods whose node is not among the nodes, in input order: the caller decides
    /// whether that is worth a warning (a file that lists a pod but not its node) or normal
    /// (a watch cache that has not seen the node yet).
    pub unplaced: Vec<BoundPod>,
}

/// Puts converted pieces together.
///
/// A DaemonSet runs one pod on every node that accepts it ([`runs_on`]). Unless a bound pod
/// owned by that DaemonSet is on the node, the DaemonSet's pod is added (named
/// `<daemonset>-<node>`) so the node's free room is right even when the input does not list
/// daemon pods.
pub fn problem(parts: Parts) -> Assembled {
    let Parts {
        instance_types,
        node_pools,
        pending,
        mut nodes,
        bound,
        daemon_sets,
        min_values,
    } = parts;
    let mut unplaced = Vec::new();
    // Lookups by name and set membership: at 10 000 pods on 1 000 nodes a scan per pod is
    // ten million comparisons per round.
    let mut index: HashMap<String, usize> = HashMap::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        // A repeated name keeps its first node, as a scan would.
        index.entry(n.name.clone()).or_insert(i);
    }
    // (node index, "namespace/daemonset") of the daemon pods the input already has.
    let mut running: HashSet<(usize, String)> = HashSet::new();
    for b in bound {
        let Some(&i) = index.get(&b.node) else {
            unplaced.push(b);
            continue;
        };
        if let Some(ds) = &b.daemon_set {
            running.insert((i, format!("{}/{ds}", b.pod.namespace)));
        }
        nodes[i].pods.push(b.pod);
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        for ds in &daemon_sets {
            let key = format!("{}/{}", ds.namespace, ds.name);
            if running.contains(&(i, key)) || !runs_on(&ds.pod, node) {
                continue;
            }
            let mut pod = ds.pod.clone();
            pod.name = format!("{}-{}", ds.name, node.name);
            node.pods.push(pod);
        }
    }
    Assembled {
        problem: Problem {
            instance_types,
            node_pools,
            pods: pending,
            existing_nodes: nodes,
            daemon_sets,
            min_values,
        },
        unplaced,
    }
}

/// The name of the DaemonSet that owns `pod` (its owner reference of kind `DaemonSet`).
pub fn daemon_set_owner(pod: &(impl PodObject + ?Sized)) -> Option<String> {
    pod.metadata()
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.kind == "DaemonSet")
        .map(|o| o.name.clone())
}
