//! Prometheus metrics, with upstream's names, types and labels (`karpenter_*`). Counters get
//! `_total` from the encoder, so they are registered without it.
//!
//! - [`cluster`]: the gauges computed from the cluster state on a tick (nodes, NodePools, cost,
//!   cluster state, pod startup);
//! - [`cloudprovider`]: the decorator timing every cloud provider call;
//! - [`summary`]: upstream's one summary (`karpenter_pods_startup_duration_seconds`), which the
//!   Prometheus client crate does not have.

pub mod cloudprovider;
pub mod cluster;
pub mod labels;
#[cfg(test)]
mod names;
pub mod summary;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use labels::{MethodLabels, NodeLabels, ProviderError, ResourcePool};
use summary::Summary;

/// `{reason, nodepool}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonPool {
    /// Why.
    pub reason: String,
    /// NodePool.
    pub nodepool: String,
}

/// `{nodepool}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct Pool {
    /// NodePool.
    pub nodepool: String,
}

/// `{condition, nodepool, capacity_type, image_id}` of a node repair.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnhealthyDisrupted {
    /// The repair policy's condition type, snake case (`ready`).
    pub condition: String,
    /// NodePool.
    pub nodepool: String,
    /// Capacity type of the node.
    pub capacity_type: String,
    /// The NodeClaim's image.
    pub image_id: String,
}

/// `{phase}` (a basic `karpenter_pods_state`: pods per phase rather than one series per pod).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodState {
    /// Pod phase, or `Unschedulable` for pods waiting on capacity.
    pub phase: String,
}

/// `{code}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    /// HTTP status of the eviction request.
    pub code: String,
}

/// `{decision, reason, consolidation_type}` of a voluntary disruption.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Decision {
    /// `delete` or `replace`.
    pub decision: String,
    /// `empty`, `underutilized`, `drifted`, `expired` or `unhealthy`.
    pub reason: String,
    /// `single` or `multi` for consolidation, empty otherwise.
    pub consolidation_type: String,
}

/// `{consolidation_type}` of a failed validation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsolidationType {
    /// `single` or `multi` for consolidation, empty for emptiness.
    pub consolidation_type: String,
}

/// `{reason, nodepool, capacity_type, consolidation_policy, termination_mode}` of the pods
/// whose disruption a removed NodeClaim started (upstream's labels).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PodsDisrupted {
    /// `empty`, `underutilized`, `drifted`, `expired`.
    pub reason: String,
    /// The NodeClaim's NodePool.
    pub nodepool: String,
    /// The NodeClaim's capacity type.
    pub capacity_type: String,
    /// `when_empty`, `when_empty_or_underutilized` or `balanced` for consolidation reasons
    /// (`empty`, `underutilized`); empty for drift and expiry, as upstream.
    pub consolidation_policy: String,
    /// `graceful` (no `terminationGracePeriod`), `forceful` (zero) or `eventual`.
    pub termination_mode: String,
}

/// `{decision, nodepool, policy}` of a scored consolidation move (`approved` / `rejected`;
/// the NodePool's `consolidationPolicy` as written, e.g. `Balanced`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Move {
    /// `approved` or `rejected`.
    pub decision: String,
    /// NodePool.
    pub nodepool: String,
    /// The NodePool's consolidation policy.
    pub policy: String,
}

/// Every metric the controller exports.
#[derive(Debug)]
pub struct Metrics {
    /// `karpenter_nodeclaims_created_total{reason,nodepool}`.
    pub nodeclaims_created: Family<ReasonPool, Counter>,
    /// `karpenter_nodeclaims_terminated_total{nodepool}`.
    pub nodeclaims_terminated: Family<Pool, Counter>,
    /// `karpenter_nodeclaims_disrupted_total{reason,nodepool}` (launch failures, timeouts, GC).
    pub nodeclaims_disrupted: Family<ReasonPool, Counter>,
    /// `karpenter_nodeclaims_unhealthy_disrupted_total{condition,nodepool,capacity_type,image_id}`.
    pub nodeclaims_unhealthy_disrupted: Family<UnhealthyDisrupted, Counter>,
    /// `karpenter_nodes_created_total{nodepool}`.
    pub nodes_created: Family<Pool, Counter>,
    /// `karpenter_nodes_terminated_total{nodepool}`.
    pub nodes_terminated: Family<Pool, Counter>,
    /// `karpenter_pods_state{phase}`.
    pub pods_state: Family<PodState, Gauge>,
    /// `karpenter_pods_eviction_requests_total{code}`.
    pub eviction_requests: Family<Code, Counter>,
    /// `karpenter_provisioner_scheduling_duration_seconds`.
    pub scheduling_duration: Histogram,
    /// `karpenter_scheduler_unschedulable_pods_count`.
    pub unschedulable_pods: Gauge,
    /// `karpenter_voluntary_disruption_decisions_total{decision,reason,consolidation_type}`.
    pub disruption_decisions: Family<Decision, Counter>,
    /// `karpenter_voluntary_disruption_failed_validations_total{consolidation_type}`: commands
    /// that lost candidates (or all of them) in validation.
    pub disruption_failed_validations: Family<ConsolidationType, Counter>,
    /// `karpenter_pods_disruption_initiated_total`: per NodeClaim a disruption command
    /// removes, the pods that must move (not DaemonSet or mirror pods); divided by
    /// `karpenter_nodeclaims_disrupted_total` it is pods moved per node removed.
    pub pods_disruption_initiated: Family<PodsDisrupted, Counter>,
    /// `karpenter_consolidation_moves_total{decision,nodepool,policy}`: consolidation moves
    /// the planner scored (every NodePool policy), approved or rejected.
    pub consolidation_moves: Family<Move, Counter>,
    /// `karpenter_consolidation_score{decision,nodepool,policy}`: `Balanced` NodePools' scores
    /// of those moves.
    pub consolidation_score: Family<Move, Histogram>,
    /// `karpenter_voluntary_disruption_queue_failures_total`: commands rolled back.
    pub disruption_queue_failures: Counter,
    /// `karpenter_voluntary_disruption_decision_evaluation_duration_seconds`.
    pub disruption_evaluation_duration: Histogram,
    /// `karpenter_nodepools_allowed_disruptions{reason,nodepool}`.
    pub allowed_disruptions: Family<ReasonPool, Gauge>,
    /// `karpenter_nodeclaims_termination_duration_seconds{nodepool}`: NodeClaim deletion to
    /// finalizer removed.
    pub nodeclaims_termination_duration: Family<Pool, Histogram>,
    /// `karpenter_nodeclaims_instance_termination_duration_seconds{nodepool}`: NodeClaim
    /// deletion to the provider saying the instance is gone.
    pub nodeclaims_instance_termination_duration: Family<Pool, Histogram>,
    /// `karpenter_nodes_allocatable{node labels, resource_type}`.
    pub nodes_allocatable: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    /// `karpenter_nodes_total_pod_requests{…}`: every pod bound to the node (daemons included).
    pub nodes_total_pod_requests: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    /// `karpenter_nodes_total_daemon_requests{…}`: DaemonSet pods bound to the node.
    pub nodes_total_daemon_requests: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    /// `karpenter_nodes_system_overhead{…}`: capacity minus allocatable.
    pub nodes_system_overhead: Family<NodeLabels, Gauge<f64, AtomicU64>>,
    /// `karpenter_cluster_utilization_percent{resource_type}`: pod requests / allocatable.
    pub cluster_utilization: Family<ResourceType, Gauge<f64, AtomicU64>>,
    /// `karpenter_nodepools_usage{resource_type,nodepool}`.
    pub nodepools_usage: Family<ResourcePool, Gauge<f64, AtomicU64>>,
    /// `karpenter_nodepools_limit{resource_type,nodepool}`.
    pub nodepools_limit: Family<ResourcePool, Gauge<f64, AtomicU64>>,
    /// `karpenter_nodepools_cost_per_hour{nodepool}` (ours): the summed offering price of the
    /// NodePool's launched NodeClaims, in the catalog's currency per hour.
    pub nodepools_cost_per_hour: Family<Pool, Gauge<f64, AtomicU64>>,
    /// `karpenter_cluster_state_node_count`: Nodes and NodeClaims without a Node yet.
    pub cluster_state_node_count: Gauge,
    /// `karpenter_cluster_state_synced`: 1 while every kind reflects a complete list.
    pub cluster_state_synced: Gauge,
    /// `karpenter_pods_startup_duration_seconds` (summary): pod creation to Ready.
    pub pods_startup_duration: Summary,
    /// `karpenter_cloudprovider_duration_seconds{controller,method,provider}`.
    pub cloudprovider_duration: Family<MethodLabels, Histogram>,
    /// `karpenter_cloudprovider_errors_total{controller,method,provider,error}`.
    pub cloudprovider_errors: Family<ProviderError, Counter>,
}

/// `{resource_type}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ResourceType {
    /// Resource name, lower case, `-` as `_` (`cpu`, `memory`, `ephemeral_storage`).
    pub resource_type: String,
}

/// Upstream's duration buckets (seconds), from 5 ms to 10 min.
fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0,
        40.0, 50.0, 60.0, 90.0, 120.0, 150.0, 180.0, 240.0, 300.0, 450.0, 600.0,
    ]
    .into_iter()
}

fn duration_family<L>() -> Family<L, Histogram>
where
    L: Clone + std::hash::Hash + Eq,
{
    Family::new_with_constructor(|| Histogram::new(duration_buckets()))
}

impl Metrics {
    /// The metrics and a registry exposing them under the `karpenter` prefix.
    pub fn new() -> (Self, Registry) {
        let m = Self {
            nodeclaims_created: Family::default(),
            nodeclaims_terminated: Family::default(),
            nodeclaims_disrupted: Family::default(),
            nodeclaims_unhealthy_disrupted: Family::default(),
            nodes_created: Family::default(),
            nodes_terminated: Family::default(),
            pods_state: Family::default(),
            eviction_requests: Family::default(),
            // 5 ms .. ~11 min, doubling (upstream's duration range).
            scheduling_duration: Histogram::new(exponential_buckets(0.005, 2.0, 18)),
            unschedulable_pods: Gauge::default(),
            disruption_decisions: Family::default(),
            disruption_failed_validations: Family::default(),
            pods_disruption_initiated: Family::default(),
            consolidation_moves: Family::default(),
            consolidation_score: Family::new_with_constructor(|| {
                // Upstream's buckets around the 0.5 threshold.
                Histogram::new([0.1, 0.25, 0.33, 0.5, 1.0, 2.0, 5.0, 10.0])
            }),
            disruption_queue_failures: Counter::default(),
            disruption_evaluation_duration: Histogram::new(exponential_buckets(0.005, 2.0, 18)),
            allowed_disruptions: Family::default(),
            nodeclaims_termination_duration: duration_family(),
            nodeclaims_instance_termination_duration: duration_family(),
            nodes_allocatable: Family::default(),
            nodes_total_pod_requests: Family::default(),
            nodes_total_daemon_requests: Family::default(),
            nodes_system_overhead: Family::default(),
            cluster_utilization: Family::default(),
            nodepools_usage: Family::default(),
            nodepools_limit: Family::default(),
            nodepools_cost_per_hour: Family::default(),
            cluster_state_node_count: Gauge::default(),
            cluster_state_synced: Gauge::default(),
            pods_startup_duration: Summary::new(
                "karpenter_pods_startup_duration_seconds",
                "The time from pod creation until the pod is running.",
            ),
            cloudprovider_duration: duration_family(),
            cloudprovider_errors: Family::default(),
        };
        let r = m.registry();
        (m, r)
    }

    /// A registry exposing these metrics under the `karpenter` prefix (the families are
    /// shared: what the loops record shows in every registry made here).
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("karpenter");
        r.register(
            "nodeclaims_created",
            "NodeClaims created, by reason and NodePool",
            self.nodeclaims_created.clone(),
        );
        r.register(
            "nodeclaims_terminated",
            "NodeClaims whose instance was terminated",
            self.nodeclaims_terminated.clone(),
        );
        r.register(
            "nodeclaims_disrupted",
            "NodeClaims deleted by the controller, by reason",
            self.nodeclaims_disrupted.clone(),
        );
        r.register(
            "nodeclaims_unhealthy_disrupted",
            "NodeClaims deleted by node repair, by condition",
            self.nodeclaims_unhealthy_disrupted.clone(),
        );
        r.register(
            "nodes_created",
            "Nodes registered",
            self.nodes_created.clone(),
        );
        r.register(
            "nodes_terminated",
            "Nodes terminated",
            self.nodes_terminated.clone(),
        );
        r.register("pods_state", "Pods by phase", self.pods_state.clone());
        r.register(
            "pods_eviction_requests",
            "Eviction requests, by response code",
            self.eviction_requests.clone(),
        );
        r.register(
            "provisioner_scheduling_duration_seconds",
            "Time of one provisioning solve",
            self.scheduling_duration.clone(),
        );
        r.register(
            "scheduler_unschedulable_pods_count",
            "Pods the last solve could not place",
            self.unschedulable_pods.clone(),
        );
        r.register(
            "voluntary_disruption_decisions",
            "Disruption commands started, by decision, reason and consolidation type",
            self.disruption_decisions.clone(),
        );
        r.register(
            "voluntary_disruption_failed_validations",
            "Disruption commands that lost candidates in validation, by consolidation type",
            self.disruption_failed_validations.clone(),
        );
        r.register(
            "pods_disruption_initiated",
            "Pods whose disruption Karpenter initiated, by the reschedulable pods of each disrupted NodeClaim",
            self.pods_disruption_initiated.clone(),
        );
        r.register(
            "consolidation_moves",
            "Consolidation moves scored, by decision, NodePool and policy",
            self.consolidation_moves.clone(),
        );
        r.register(
            "consolidation_score",
            "Balanced consolidation scores of moves, by decision, NodePool and policy",
            self.consolidation_score.clone(),
        );
        r.register(
            "voluntary_disruption_queue_failures",
            "Disruption commands rolled back (replacements failed or timed out)",
            self.disruption_queue_failures.clone(),
        );
        r.register(
            "voluntary_disruption_decision_evaluation_duration_seconds",
            "Time of one disruption planning call",
            self.disruption_evaluation_duration.clone(),
        );
        r.register(
            "nodepools_allowed_disruptions",
            "Nodes a NodePool may still disrupt, by reason",
            self.allowed_disruptions.clone(),
        );
        self.register_state(&mut r);
        r
    }

    /// Registers the metrics issue 14 added: node, NodePool and cluster-state gauges, cost,
    /// termination durations and the cloud provider decorator's.
    fn register_state(&self, r: &mut Registry) {
        r.register(
            "nodeclaims_termination_duration_seconds",
            "Duration of NodeClaim termination in seconds.",
            self.nodeclaims_termination_duration.clone(),
        );
        r.register(
            "nodeclaims_instance_termination_duration_seconds",
            "Duration of CloudProvider Instance termination in seconds.",
            self.nodeclaims_instance_termination_duration.clone(),
        );
        r.register(
            "nodes_allocatable",
            "Node allocatable are the resources allocatable by nodes.",
            self.nodes_allocatable.clone(),
        );
        r.register(
            "nodes_total_pod_requests",
            "Node total pod requests are the resources requested by pods bound to nodes, including the DaemonSet pods.",
            self.nodes_total_pod_requests.clone(),
        );
        r.register(
            "nodes_total_daemon_requests",
            "Node total daemon requests are the resource requested by DaemonSet pods bound to nodes.",
            self.nodes_total_daemon_requests.clone(),
        );
        r.register(
            "nodes_system_overhead",
            "Node system daemon overhead: capacity minus allocatable.",
            self.nodes_system_overhead.clone(),
        );
        r.register(
            "cluster_utilization_percent",
            "Utilization of allocatable resources by pod requests",
            self.cluster_utilization.clone(),
        );
        r.register(
            "nodepools_usage",
            "The amount of resources that have been provisioned for a nodepool. Labeled by nodepool name and resource type.",
            self.nodepools_usage.clone(),
        );
        r.register(
            "nodepools_limit",
            "Limits specified on the nodepool that restrict the quantity of resources provisioned. Labeled by nodepool name and resource type.",
            self.nodepools_limit.clone(),
        );
        r.register(
            "nodepools_cost_per_hour",
            "Summed offering price per hour of the NodePool's launched NodeClaims.",
            self.nodepools_cost_per_hour.clone(),
        );
        r.register(
            "cluster_state_node_count",
            "Current count of nodes in cluster state",
            self.cluster_state_node_count.clone(),
        );
        r.register(
            "cluster_state_synced",
            "Returns 1 if cluster state is synced and 0 otherwise.",
            self.cluster_state_synced.clone(),
        );
        r.register(
            "cloudprovider_duration_seconds",
            "Duration of cloud provider method calls. Labeled by the controller, method name and provider.",
            self.cloudprovider_duration.clone(),
        );
        r.register(
            "cloudprovider_errors",
            "Total number of errors returned from CloudProvider calls.",
            self.cloudprovider_errors.clone(),
        );
    }
}

/// Encodes the registry in the Prometheus text format, with the summaries `metrics` holds
/// outside it (the client crate has no summary type) spliced in before the closing `# EOF`.
pub fn encode(registry: &Registry, metrics: Option<&Metrics>) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    if let Some(m) = metrics {
        let eof = out.rfind("# EOF").unwrap_or(out.len());
        let mut summaries = String::new();
        m.pods_startup_duration.encode(&mut summaries)?;
        out.insert_str(eof, &summaries);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names() {
        let (m, r) = Metrics::new();
        m.nodeclaims_created
            .get_or_create(&ReasonPool {
                reason: "provisioning".into(),
                nodepool: "default".into(),
            })
            .inc();
        m.nodes_created
            .get_or_create(&Pool {
                nodepool: "default".into(),
            })
            .inc();
        m.scheduling_duration.observe(0.1);
        m.pods_state
            .get_or_create(&PodState {
                phase: "Running".into(),
            })
            .set(3);
        let text = encode(&r, Some(&m)).unwrap();
        assert!(
            text.contains(
                "karpenter_nodeclaims_created_total{reason=\"provisioning\",nodepool=\"default\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("karpenter_nodes_created_total{nodepool=\"default\"} 1"));
        assert!(text.contains("karpenter_provisioner_scheduling_duration_seconds_count 1"));
        assert!(
            text.contains("karpenter_pods_state{phase=\"Running\"} 3"),
            "{text}"
        );
    }
}
