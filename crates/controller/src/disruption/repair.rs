//! Node repair as a disruption method (upstream v1.15; the planner's `repair` decides): the
//! events of unhealthy nodes it does not repair, and what a repair command does beyond any
//! other command — the NodeClaim's termination deadline is stamped to now just before it is
//! deleted (the drain does not wait for PDBs, do-not-disrupt pods or `terminationGracePeriod`:
//! repair policies here are forceful, as the legacy loop), and
//! `karpenter_nodeclaims_unhealthy_disrupted_total` counts it by condition.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::{
    CAPACITY_TYPE_LABEL, NODE_POOL_LABEL, TERMINATION_TIMESTAMP_ANNOTATION,
};
use karpenter_api::v1::NodeClaim;
use karpenter_solver::disruption::{DO_NOT_REPAIR, RepairBlock, RepairBlocked};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::error::{Result, is_status};
use crate::metrics::UnhealthyDisrupted;
use crate::node::repair::{BLOCKED_EVENT, health};

/// The event and its note for an unhealthy node the plan did not repair: `DisruptionBlocked`
/// (do-not-repair, pods without a place) or `NodeRepairBlocked` (the 20% cap), as upstream.
pub fn blocked_event(b: &RepairBlocked) -> (&'static str, String) {
    match &b.why {
        RepairBlock::DoNotRepair => (
            "DisruptionBlocked",
            format!("repair is blocked through the \"{DO_NOT_REPAIR}\" annotation"),
        ),
        RepairBlock::TooManyUnhealthy { unhealthy, nodes } => (
            BLOCKED_EVENT,
            format!(
                "more than {}% of nodes in nodepool \"{}\" are unhealthy ({unhealthy} of {nodes})",
                health::ALLOWED_UNHEALTHY_PERCENT,
                b.node_pool
            ),
        ),
        RepairBlock::Unschedulable(pods) => (
            "DisruptionBlocked",
            format!(
                "repair would leave pods without a place: {}",
                pods.join("; ")
            ),
        ),
    }
}

/// Publishes the events of `blocked` whose note changed since the last round (`memory`: node →
/// note); `NodeRepairBlocked` also on the NodePool.
pub async fn report_blocked(
    ctx: &Context,
    blocked: &[RepairBlocked],
    memory: &mut BTreeMap<String, String>,
) {
    let mut seen = BTreeMap::new();
    for b in blocked {
        let (reason, note) = blocked_event(b);
        let changed = memory.get(&b.node) != Some(&note);
        seen.insert(b.node.clone(), note.clone());
        if !changed {
            continue;
        }
        tracing::info!(Node = %b.node, NodePool = %b.node_pool, why = %note, "node repair blocked");
        if let Some(n) = ctx.state.nodes.get(&ObjectRef::new(&b.node)) {
            ctx.event(
                &n.object_ref(&()),
                EventType::Warning,
                reason,
                "Repair",
                note.clone(),
            )
            .await;
        }
        if reason == BLOCKED_EVENT
            && let Some(np) = ctx.state.node_pools.get(&ObjectRef::new(&b.node_pool))
        {
            ctx.event(
                &np.object_ref(&()),
                EventType::Warning,
                reason,
                "Repair",
                format!("{note} (node {})", b.node),
            )
            .await;
        }
    }
    *memory = seen;
}

/// Before a repair deletes `claim`: its termination deadline becomes now (an earlier one is
/// kept), and the condition it is repaired for is counted.
pub async fn before_delete(ctx: &Context, claim: &str) -> Result<()> {
    let now = Timestamp::now();
    let stored = ctx.state.node_claim(claim);
    let earlier = stored
        .as_ref()
        .and_then(|c| {
            c.annotations()
                .get(TERMINATION_TIMESTAMP_ANNOTATION)
                .cloned()
        })
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|t| t <= now);
    if !earlier {
        let patch = json!({"metadata": {"annotations": {TERMINATION_TIMESTAMP_ANNOTATION: now.to_string()}}});
        match Api::<NodeClaim>::all(ctx.client.clone())
            .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(c) = stored {
        count_condition(ctx, &c);
    }
    Ok(())
}

/// `karpenter_nodeclaims_unhealthy_disrupted_total`: by the condition the Node shows now (one
/// that recovered meanwhile is not counted: it is no longer unhealthy).
fn count_condition(ctx: &Context, claim: &NodeClaim) {
    let Some(node) = claim
        .status
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .and_then(|n| ctx.state.node(n))
    else {
        return;
    };
    let Some(u) = health::unhealthy(&node, &ctx.provider.repair_policies()) else {
        return;
    };
    let label = |k: &str| claim.labels().get(k).cloned().unwrap_or_default();
    ctx.metrics
        .nodeclaims_unhealthy_disrupted
        .get_or_create(&UnhealthyDisrupted {
            condition: health::snake_case(&u.condition),
            nodepool: label(NODE_POOL_LABEL),
            capacity_type: label(CAPACITY_TYPE_LABEL),
            image_id: claim
                .status
                .as_ref()
                .and_then(|s| s.image_id.clone())
                .unwrap_or_default(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(why: RepairBlock) -> RepairBlocked {
        RepairBlocked {
            node: "n1".into(),
            node_pool: "np".into(),
            why,
        }
    }

    #[test]
    fn events_follow_upstream_reasons() {
        let (reason, note) = blocked_event(&blocked(RepairBlock::DoNotRepair));
        assert_eq!(reason, "DisruptionBlocked");
        assert_eq!(
            note,
            "repair is blocked through the \"karpenter.sh/do-not-repair\" annotation"
        );
        let (reason, note) = blocked_event(&blocked(RepairBlock::TooManyUnhealthy {
            unhealthy: 2,
            nodes: 3,
        }));
        assert_eq!(reason, "NodeRepairBlocked");
        assert_eq!(
            note,
            "more than 20% of nodes in nodepool \"np\" are unhealthy (2 of 3)"
        );
        let (reason, note) = blocked_event(&blocked(RepairBlock::Unschedulable(vec![
            "ns/a: no fit".into(),
        ])));
        assert_eq!(reason, "DisruptionBlocked");
        assert!(note.ends_with("ns/a: no fit"), "{note}");
    }
}
