//! The report's `utilization` (an addition to design.md §6: the documented fields are
//! unchanged): what each node's pods request of its allocatable cpu and memory, before the plan
//! and after it.
//!
//! - **before**: the input's existing nodes with the pods bound to them (DaemonSet pods
//!   included: they take room too).
//! - **after**: the same nodes with the pending pods the plan puts there, plus the plan's new
//!   NodeClaims (their requests include DaemonSet overhead, allocatable is the chosen instance
//!   type's); then each disruption command in order: its nodes go, the pods they had move to
//!   the existing nodes the planner chose, and its replacements come.
//!
//! Amounts are integers in the solver's units (millicores, bytes), so the figures are exact
//! and a reader computes any percentage from them.

use std::collections::BTreeMap;

use karpenter_solver::disruption::DisruptionPlan;
use karpenter_solver::instance_type::find_for_pool;
use karpenter_solver::labels::{INSTANCE_TYPE, NODEPOOL};
use karpenter_solver::{InstanceType, Plan, PlannedNodeClaim, Problem, Resources};
use serde::Serialize;

/// Before and after the plan.
#[derive(Serialize, Debug, Clone, PartialEq, Default)]
pub struct Utilization {
    /// Existing nodes as the input has them.
    pub before: Vec<NodeUtilization>,
    /// Existing nodes that remain, new NodeClaims and disruption replacements.
    pub after: Vec<NodeUtilization>,
}

/// What kind of node a row is.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum NodeKind {
    /// A Node of the input.
    Existing,
    /// A NodeClaim of the plan (`nodeClaims`).
    New,
    /// A NodeClaim a disruption command launches (`disruptions[].replacements`).
    Replacement,
}

/// One node's requests against its allocatable.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeUtilization {
    /// Node or NodeClaim name.
    pub name: String,
    /// Existing node, new NodeClaim or replacement.
    pub kind: NodeKind,
    /// NodePool (`karpenter.sh/nodepool` of an existing node; `null` when it has none).
    pub node_pool: Option<String>,
    /// Instance type (`node.kubernetes.io/instance-type` of an existing node; `null` when it
    /// has none).
    pub instance_type: Option<String>,
    /// Pods on it: an existing node's bound pods (DaemonSet pods too); a NodeClaim's pods
    /// placed there (its DaemonSet overhead counts in the requests, not here).
    pub pods: usize,
    /// Σ cpu requests, millicores.
    pub cpu_requested_millis: i64,
    /// Allocatable cpu, millicores.
    pub cpu_allocatable_millis: i64,
    /// Σ memory requests, bytes.
    pub memory_requested_bytes: i64,
    /// Allocatable memory, bytes.
    pub memory_allocatable_bytes: i64,
}

impl NodeUtilization {
    fn new(name: &str, kind: NodeKind, requests: &Resources, allocatable: &Resources) -> Self {
        NodeUtilization {
            name: name.to_owned(),
            kind,
            node_pool: None,
            instance_type: None,
            pods: 0,
            cpu_requested_millis: requests.get("cpu"),
            cpu_allocatable_millis: allocatable.get("cpu"),
            memory_requested_bytes: requests.get("memory"),
            memory_allocatable_bytes: allocatable.get("memory"),
        }
    }

    fn claim(c: &PlannedNodeClaim, kind: NodeKind, catalog: &[InstanceType]) -> Self {
        let allocatable = find_for_pool(catalog, &c.node_pool, &c.instance_type)
            .map(InstanceType::allocatable)
            .unwrap_or_default();
        NodeUtilization {
            node_pool: Some(c.node_pool.clone()),
            instance_type: Some(c.instance_type.clone()),
            pods: c.pods.len(),
            ..Self::new(&c.name, kind, &c.requests, &allocatable)
        }
    }

    fn add(&mut self, requests: &Resources) {
        self.pods += 1;
        self.cpu_requested_millis += requests.get("cpu");
        self.memory_requested_bytes += requests.get("memory");
    }
}

/// Utilisation before and after `plan` (and `disruption`, when there is one).
pub fn utilization(
    problem: &Problem,
    plan: &Plan,
    disruption: Option<&DisruptionPlan>,
) -> Utilization {
    // Requests of every pod that can move: pending pods, and pods of nodes a command removes.
    let mut requests: BTreeMap<String, &Resources> = problem
        .pods
        .iter()
        .map(|p| (p.key(), &p.requests))
        .collect();
    let mut before = Vec::with_capacity(problem.existing_nodes.len());
    for n in &problem.existing_nodes {
        let mut u = NodeUtilization::new(
            &n.name,
            NodeKind::Existing,
            &Resources::new(),
            &n.allocatable,
        );
        u.node_pool = n.labels.get(NODEPOOL).cloned();
        u.instance_type = n.labels.get(INSTANCE_TYPE).cloned();
        for p in &n.pods {
            u.add(&p.requests);
            requests.insert(p.key(), &p.requests);
        }
        before.push(u);
    }

    let mut after = before.clone();
    let place = |after: &mut Vec<NodeUtilization>, node: &str, pods: &[String]| {
        if let Some(u) = after.iter_mut().find(|u| u.name == node) {
            for key in pods {
                if let Some(r) = requests.get(key) {
                    u.add(r);
                }
            }
        }
    };
    for placement in &plan.existing_nodes {
        place(&mut after, &placement.node, &placement.pods);
    }
    let catalog = &problem.instance_types;
    after.extend(
        plan.node_claims
            .iter()
            .map(|c| NodeUtilization::claim(c, NodeKind::New, catalog)),
    );
    for command in disruption.iter().flat_map(|d| &d.commands) {
        after.retain(|u| u.kind != NodeKind::Existing || !command.nodes.contains(&u.name));
        for placement in &command.placements {
            place(&mut after, &placement.node, &placement.pods);
        }
        after.extend(
            command
                .replacements
                .iter()
                .map(|c| NodeUtilization::claim(c, NodeKind::Replacement, catalog)),
        );
    }
    Utilization { before, after }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpenter_solver::disruption::{Command, Reason};
    use karpenter_solver::{ExistingNode, ExistingPlacement, PodView};

    fn pod(name: &str, cpu: i64, memory: i64) -> PodView {
        PodView {
            namespace: "default".into(),
            name: name.into(),
            requests: Resources::from_pairs([("cpu", cpu), ("memory", memory)]),
            ..PodView::default()
        }
    }

    fn node(name: &str, pods: Vec<PodView>) -> ExistingNode {
        ExistingNode {
            name: name.into(),
            allocatable: Resources::from_pairs([("cpu", 4000), ("memory", 8 << 30)]),
            pods,
            ..ExistingNode::default()
        }
    }

    #[test]
    fn pods_move_with_the_plan_and_the_disruption_commands() {
        let problem = Problem {
            pods: vec![pod("p", 500, 1 << 30)],
            existing_nodes: vec![
                node("a", vec![pod("a1", 1000, 1 << 30)]),
                node("b", vec![pod("b1", 250, 0)]),
            ],
            ..Problem::default()
        };
        let plan = Plan {
            node_claims: vec![],
            existing_nodes: vec![ExistingPlacement {
                node: "a".into(),
                pods: vec!["default/p".into()],
            }],
            unschedulable: vec![],
            total_price: 0.0,
            lower_bound: 0.0,
        };
        let disruption = DisruptionPlan {
            commands: vec![Command {
                reason: Reason::Underutilized,
                nodes: vec!["b".into()],
                replacements: vec![],
                placements: vec![ExistingPlacement {
                    node: "a".into(),
                    pods: vec!["default/b1".into()],
                }],
                unschedulable: vec![],
                savings_per_hour: 0.1,
            }],
            allowed: vec![],
            blocked: vec![],
            repair_blocked: vec![],
            moves: vec![],
            notes: vec![],
        };
        let u = utilization(&problem, &plan, Some(&disruption));
        let cpu = |v: &[NodeUtilization]| {
            v.iter()
                .map(|n| (n.name.clone(), n.cpu_requested_millis, n.pods))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cpu(&u.before),
            [("a".into(), 1000, 1), ("b".into(), 250, 1)]
        );
        assert_eq!(cpu(&u.after), [("a".into(), 1750, 3)]);
        assert_eq!(u.after[0].memory_requested_bytes, 2 << 30);
        assert_eq!(u.after[0].cpu_allocatable_millis, 4000);
    }
}
