//! The solver's input and output model: plain structs built from Kubernetes objects by the
//! conversion layer, and the [`Plan`] it gets back. Everything is owned, ordered and
//! deterministic; nothing here knows about the Kubernetes API.

use std::collections::BTreeMap;

use crate::instance_type::InstanceType;
use crate::requirements::{NodeSelectorRequirement, NodeSelectorTerm};
use crate::resources::Resources;
use crate::selector::LabelSelector;
use crate::taints::{Taint, Toleration};

/// Label map (ordered for determinism).
pub type Labels = BTreeMap<String, String>;

/// A NodePool as the solver sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePoolView {
    /// Name.
    pub name: String,
    /// Higher weights are tried first; ties by name (ascending).
    pub weight: i32,
    /// `spec.template.spec.requirements`.
    pub requirements: Vec<NodeSelectorRequirement>,
    /// `spec.template.metadata.labels`: every node carries them.
    pub labels: Labels,
    /// `spec.template.spec.taints`: pods must tolerate them.
    pub taints: Vec<Taint>,
    /// `startupTaints`: temporary, so pods need not tolerate them (reported on the claim only).
    pub startup_taints: Vec<Taint>,
    /// `spec.limits` over node *capacity* (`nodes` counts NodeClaims). `None` = unlimited.
    pub limits: Option<Resources>,
    /// Capacity already used by this NodePool's existing nodes (counted against `limits`).
    pub usage: Resources,
    /// Restricts the catalog to these instance-type names (`None` = whole catalog). Lets a
    /// provider return per-NodePool lists.
    pub instance_types: Option<Vec<String>>,
}

/// `whenUnsatisfiable` of a topology spread constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum WhenUnsatisfiable {
    /// Hard.
    #[default]
    DoNotSchedule,
    /// A preference, relaxed when it cannot be met.
    ScheduleAnyway,
}

/// A `topologySpreadConstraint`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TopologySpreadConstraint {
    /// Allowed difference between the fullest and the emptiest eligible domain (≥ 1).
    pub max_skew: i32,
    /// Node label defining domains (zone, hostname, capacity type, any key).
    pub topology_key: String,
    /// Hard or soft.
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// Which pods count; `None` counts nothing (no spreading).
    pub label_selector: Option<LabelSelector>,
    /// If fewer eligible domains exist, the global minimum is taken as 0.
    pub min_domains: Option<i32>,
    /// Keys whose values (from this pod's labels) are added to the selector.
    pub match_label_keys: Vec<String>,
    /// `nodeAffinityPolicy: Ignore` counts domains the pod's node affinity excludes too.
    pub ignore_node_affinity: bool,
}

/// A pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PodAffinityTerm {
    /// Which pods; `None` selects nothing.
    pub label_selector: Option<LabelSelector>,
    /// Namespaces to look in; empty = the pod's own namespace.
    pub namespaces: Vec<String>,
    /// `namespaceSelector: {}` (all namespaces). Non-empty namespace selectors must be resolved
    /// to `namespaces` by the conversion layer.
    pub all_namespaces: bool,
    /// Domain key (hostname, zone, ...).
    pub topology_key: String,
}

/// A weighted (preferred) pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WeightedPodAffinityTerm {
    /// 1..100; heavier terms are kept longest.
    pub weight: i32,
    /// The term.
    pub term: PodAffinityTerm,
}

/// A weighted (preferred) node-affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WeightedNodeSelectorTerm {
    /// 1..100; heavier terms are kept longest.
    pub weight: i32,
    /// The term.
    pub term: NodeSelectorTerm,
}

/// A host port the pod binds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct HostPort {
    /// Port number.
    pub port: u16,
    /// `TCP` (default), `UDP`, `SCTP`.
    pub protocol: String,
    /// Host IP; empty or `0.0.0.0` conflicts with every IP.
    pub host_ip: String,
}

impl HostPort {
    /// A TCP port on all addresses.
    pub fn tcp(port: u16) -> Self {
        Self {
            port,
            protocol: "TCP".to_string(),
            host_ip: String::new(),
        }
    }

    /// Whether two bindings collide on one node.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0";
        let proto = |p: &str| {
            if p.is_empty() {
                "TCP".to_string()
            } else {
                p.to_ascii_uppercase()
            }
        };
        self.port == other.port
            && proto(&self.protocol) == proto(&other.protocol)
            && (wildcard(&self.host_ip)
                || wildcard(&other.host_ip)
                || self.host_ip == other.host_ip)
    }
}

/// A pod to place (or, inside [`ExistingNode::pods`], one already running).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels (selectors of spread/affinity terms match them).
    pub labels: Labels,
    /// Effective requests (see [`crate::effective_pod_requests`]). A `pods` entry is added by
    /// the solver if missing: every pod takes one slot.
    pub requests: Resources,
    /// `spec.nodeSelector`.
    pub node_selector: Labels,
    /// Required node-affinity terms, ORed (empty = none).
    pub required_node_affinity: Vec<NodeSelectorTerm>,
    /// Preferred node-affinity terms.
    pub preferred_node_affinity: Vec<WeightedNodeSelectorTerm>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Topology spread constraints.
    pub topology_spread: Vec<TopologySpreadConstraint>,
    /// Required pod affinity.
    pub pod_affinity: Vec<PodAffinityTerm>,
    /// Preferred pod affinity.
    pub preferred_pod_affinity: Vec<WeightedPodAffinityTerm>,
    /// Required pod anti-affinity.
    pub pod_anti_affinity: Vec<PodAffinityTerm>,
    /// Preferred pod anti-affinity.
    pub preferred_pod_anti_affinity: Vec<WeightedPodAffinityTerm>,
    /// Host ports.
    pub host_ports: Vec<HostPort>,
    /// Zonal requirements of the pod's bound volumes (e.g. `zone In [a]`).
    pub volume_requirements: Vec<NodeSelectorRequirement>,
}

impl PodView {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A node that already exists (or an in-flight NodeClaim), used before anything is bought.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ExistingNode {
    /// Node name (also its hostname domain).
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Taints (all effects, including PreferNoSchedule, must be tolerated, as upstream).
    pub taints: Vec<Taint>,
    /// `status.allocatable`.
    pub allocatable: Resources,
    /// Pods bound to it: they use its resources, ports, and count for topology.
    pub pods: Vec<PodView>,
}

/// A DaemonSet: its pod template is overhead on every new node whose labels and taints it accepts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DaemonSetView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The pod template (requests, node selector/affinity, tolerations, host ports).
    pub pod: PodView,
}

/// Tuning knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Improve the greedy packing (re-pack, merge claims). Off = upstream-like greedy only.
    pub optimise: bool,
    /// Cap on `instance_type_options` per claim (upstream tests: 60).
    pub max_instance_type_options: usize,
    /// Compute the LP lower bound (otherwise only the trivial bound).
    pub lower_bound: bool,
    /// Treat preferences as absent (upstream `PREFERENCE_POLICY=Ignore`).
    pub ignore_preferences: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            optimise: true,
            max_instance_type_options: 60,
            lower_bound: true,
            ignore_preferences: false,
        }
    }
}

/// Everything the solver needs for one provisioning round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Problem {
    /// The instance-type catalog (shared by every NodePool unless restricted).
    pub instance_types: Vec<InstanceType>,
    /// NodePools.
    pub node_pools: Vec<NodePoolView>,
    /// Pending pods.
    pub pods: Vec<PodView>,
    /// Existing nodes and in-flight NodeClaims.
    pub existing_nodes: Vec<ExistingNode>,
    /// DaemonSets.
    pub daemon_sets: Vec<DaemonSetView>,
    /// `minValues` of NodePool requirements: NodePool name → label key → the fewest distinct
    /// values of that key a NodeClaim's instance-type options must keep (upstream
    /// `SatisfiesMinValues`, policy Strict). It lives here rather than on [`NodePoolView`] or
    /// [`NodeSelectorRequirement`] so that callers building those with struct literals are
    /// unaffected; pools without an entry have no minimum.
    pub min_values: BTreeMap<String, BTreeMap<String, i32>>,
}

/// A NodeClaim the plan launches.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedNodeClaim {
    /// Deterministic name `<nodepool>-<n>`.
    pub name: String,
    /// NodePool.
    pub node_pool: String,
    /// Chosen instance type (cheapest available offering whose allocatable fits).
    pub instance_type: String,
    /// Chosen offering's zone.
    pub zone: String,
    /// Chosen offering's capacity type.
    pub capacity_type: String,
    /// The capacity reservation the chosen offering launches into (capacity type `reserved`):
    /// the claim is pinned to it, and its `instance_type_options` are the reservation's types.
    pub reservation_id: Option<String>,
    /// Chosen offering's price per hour.
    pub price: f64,
    /// Every instance type that could host these pods, cheapest first, capped.
    pub instance_type_options: Vec<String>,
    /// Labels the Node will carry.
    pub labels: Labels,
    /// The NodePool's taints.
    pub taints: Vec<Taint>,
    /// Pods (`namespace/name`), in placement order.
    pub pods: Vec<String>,
    /// Total requests: pods + DaemonSet overhead.
    pub requests: Resources,
}

/// Pods placed on one existing node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingPlacement {
    /// Node name.
    pub node: String,
    /// Pods (`namespace/name`).
    pub pods: Vec<String>,
}

/// A pod no plan placement could be found for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// `namespace/name`.
    pub pod: String,
    /// What ruled it out, per NodePool, in words a user can act on.
    pub reason: String,
}

/// The solver's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// New NodeClaims, in creation order.
    pub node_claims: Vec<PlannedNodeClaim>,
    /// Existing nodes that received pods (sorted by node name).
    pub existing_nodes: Vec<ExistingPlacement>,
    /// Pods that cannot be placed.
    pub unschedulable: Vec<Unschedulable>,
    /// Σ chosen offering prices.
    pub total_price: f64,
    /// A proven lower bound on the price of any fleet hosting the pods this plan placed on new
    /// capacity (LP relaxation, or a trivial bound when the LP is off or fails).
    pub lower_bound: f64,
}
