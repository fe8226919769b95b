//! Static NodePools (`spec.replicas`) in `simulate`. Their nodes in the input are fixed
//! capacity: pending pods may land on them, and they are never emptiness, consolidation or
//! drift candidates ([`super::disruption`]). Pending pods never launch them. A static pool
//! with fewer nodes in the input than `replicas` gets the missing ones in the plan, as the
//! controller's static loop would launch them: planned from the template alone (cheapest type,
//! room for the DaemonSets), within `limits.nodes`, without pods. Pending pods are planned
//! without them, as in a cluster where they are not up yet; so the plan may launch for pods
//! what the missing static nodes would later also offer. A pool with more nodes than
//! `replicas` gets a note (the static loop would remove the surplus).

use karpenter_api::solver_input::{NODES, static_node_claim};
use karpenter_api::v1::NodePool;
use karpenter_solver::labels::NODEPOOL;
use karpenter_solver::quantity::parse_for_resource;
use karpenter_solver::static_pool::{StaticClaim, StaticPool, decide};
use karpenter_solver::{Plan, Problem};

/// Adds each static pool's missing NodeClaims to `plan` (their price to its price and to its
/// lower bound: every plan pays for them); notes what cannot be launched or is surplus.
pub fn complete(statics: &[NodePool], problem: &Problem, plan: &mut Plan, notes: &mut Vec<String>) {
    for pool in statics {
        let name = pool.metadata.name.clone().unwrap_or_default();
        let nodes = problem
            .existing_nodes
            .iter()
            .filter(|n| n.labels.get(NODEPOOL) == Some(&name))
            .map(|n| StaticClaim {
                name: n.name.clone(),
                launched: true,
                initialized: true,
                ..StaticClaim::default()
            })
            .collect::<Vec<_>>();
        let settings = StaticPool {
            replicas: pool.spec.replicas.unwrap_or(0).max(0).unsigned_abs(),
            node_limit: pool
                .spec
                .limits
                .get(NODES)
                .and_then(|q| parse_for_resource(NODES, &q.0).ok())
                .map(|n| n.max(0).unsigned_abs()),
            drift_budget: 0,
        };
        let decision = decide(&settings, &nodes);
        if !decision.delete.is_empty() {
            notes.push(format!(
                "note: static NodePool {name} has {} nodes for {} replicas: {} would be removed",
                nodes.len(),
                settings.replicas,
                decision.delete.len()
            ));
        }
        let missing = settings.replicas.saturating_sub(nodes.len() as u64);
        if missing > decision.create {
            notes.push(format!(
                "note: static NodePool {name}: limits.nodes leaves room for {} of the {missing} missing nodes",
                decision.create
            ));
        }
        if decision.create == 0 {
            continue;
        }
        let claim = match static_node_claim(
            pool,
            problem.instance_types.clone(),
            problem.daemon_sets.clone(),
            60,
        ) {
            Ok(c) => c,
            Err(reason) => {
                notes.push(format!(
                    "note: static NodePool {name}: cannot launch: {reason}"
                ));
                continue;
            }
        };
        for _ in 0..decision.create {
            let mut c = claim.clone();
            c.name = format!("{name}-{}", plan.node_claims.len() + 1);
            plan.total_price += c.price;
            plan.lower_bound += c.price;
            plan.node_claims.push(c);
        }
    }
}
