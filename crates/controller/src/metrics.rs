//! Prometheus metrics, with upstream's names (`karpenter_*`). Counters get `_total` from the
//! encoder, so they are registered without it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `{reason, nodepool}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonPool {
    /// Why.
    pub reason: String,
    /// NodePool.
    pub nodepool: String,
}

/// `{nodepool}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Pool {
    /// NodePool.
    pub nodepool: String,
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
    /// `empty`, `underutilized`, `drifted` or `expired`.
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

/// `{decision, nodepool, policy}` of pods moved by consolidation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Moves {
    /// `delete` or `replace`.
    pub decision: String,
    /// NodePool of the command's first node.
    pub nodepool: String,
    /// `WhenEmpty` or `WhenEmptyOrUnderutilized`.
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
    /// `karpenter_consolidation_moves_total{decision,nodepool,policy}`: pods rescheduled by
    /// emptiness and consolidation commands.
    pub consolidation_moves: Family<Moves, Counter>,
    /// `karpenter_voluntary_disruption_queue_failures_total`: commands rolled back.
    pub disruption_queue_failures: Counter,
    /// `karpenter_voluntary_disruption_decision_evaluation_duration_seconds`.
    pub disruption_evaluation_duration: Histogram,
    /// `karpenter_nodepools_allowed_disruptions{reason,nodepool}`.
    pub allowed_disruptions: Family<ReasonPool, Gauge>,
}

impl Metrics {
    /// The metrics and a registry exposing them under the `karpenter` prefix.
    pub fn new() -> (Self, Registry) {
        let m = Self {
            nodeclaims_created: Family::default(),
            nodeclaims_terminated: Family::default(),
            nodeclaims_disrupted: Family::default(),
            nodes_created: Family::default(),
            nodes_terminated: Family::default(),
            pods_state: Family::default(),
            eviction_requests: Family::default(),
            // 5 ms .. ~11 min, doubling (upstream's duration range).
            scheduling_duration: Histogram::new(exponential_buckets(0.005, 2.0, 18)),
            unschedulable_pods: Gauge::default(),
            disruption_decisions: Family::default(),
            disruption_failed_validations: Family::default(),
            consolidation_moves: Family::default(),
            disruption_queue_failures: Counter::default(),
            disruption_evaluation_duration: Histogram::new(exponential_buckets(0.005, 2.0, 18)),
            allowed_disruptions: Family::default(),
        };
        let mut r = Registry::with_prefix("karpenter");
        r.register(
            "nodeclaims_created",
            "NodeClaims created, by reason and NodePool",
            m.nodeclaims_created.clone(),
        );
        r.register(
            "nodeclaims_terminated",
            "NodeClaims whose instance was terminated",
            m.nodeclaims_terminated.clone(),
        );
        r.register(
            "nodeclaims_disrupted",
            "NodeClaims deleted by the controller, by reason",
            m.nodeclaims_disrupted.clone(),
        );
        r.register("nodes_created", "Nodes registered", m.nodes_created.clone());
        r.register(
            "nodes_terminated",
            "Nodes terminated",
            m.nodes_terminated.clone(),
        );
        r.register("pods_state", "Pods by phase", m.pods_state.clone());
        r.register(
            "pods_eviction_requests",
            "Eviction requests, by response code",
            m.eviction_requests.clone(),
        );
        r.register(
            "provisioner_scheduling_duration_seconds",
            "Time of one provisioning solve",
            m.scheduling_duration.clone(),
        );
        r.register(
            "scheduler_unschedulable_pods_count",
            "Pods the last solve could not place",
            m.unschedulable_pods.clone(),
        );
        r.register(
            "voluntary_disruption_decisions",
            "Disruption commands started, by decision, reason and consolidation type",
            m.disruption_decisions.clone(),
        );
        r.register(
            "voluntary_disruption_failed_validations",
            "Disruption commands that lost candidates in validation, by consolidation type",
            m.disruption_failed_validations.clone(),
        );
        r.register(
            "consolidation_moves",
            "Pods rescheduled by emptiness and consolidation commands",
            m.consolidation_moves.clone(),
        );
        r.register(
            "voluntary_disruption_queue_failures",
            "Disruption commands rolled back (replacements failed or timed out)",
            m.disruption_queue_failures.clone(),
        );
        r.register(
            "voluntary_disruption_decision_evaluation_duration_seconds",
            "Time of one disruption planning call",
            m.disruption_evaluation_duration.clone(),
        );
        r.register(
            "nodepools_allowed_disruptions",
            "Nodes a NodePool may still disrupt, by reason",
            m.allowed_disruptions.clone(),
        );
        (m, r)
    }
}

/// Encodes the registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
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
        let text = encode(&r).unwrap();
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
