//! Node repair (upstream feature gate `NodeRepair`, off by default): a Node whose condition
//! matches one of the cloud provider's repair policies for longer than the policy's toleration
//! is replaced forcefully: its NodeClaim is stamped with a termination deadline of now (the
//! drain does not wait for PodDisruptionBudgets or `terminationGracePeriod`) and deleted; the
//! normal termination flow drains it, and provisioning launches capacity for the pods as they
//! go pending. A NodePool with more than 20% of its Nodes unhealthy (the cluster, for a
//! NodeClaim without a NodePool) is not repaired: `NodeRepairBlocked` Events on the Node and
//! the NodePool, and the Node is looked at again after `repair_blocked_retry` (5 min).
//!
//! The loop reads the cluster state (Nodes, NodeClaims, NodePools) on every tick; it writes
//! the API only to repair or to publish Events. Decisions are [`health::decide`], pure.

pub mod health;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::{
    CAPACITY_TYPE_LABEL, NODE_POOL_LABEL, TERMINATION_TIMESTAMP_ANNOTATION,
};
use karpenter_api::v1::NodeClaim;
use karpenter_providers::RepairPolicy;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::context::Context;
use crate::error::{Result, is_status};
use crate::metrics::{ReasonPool, UnhealthyDisrupted};
use health::{Scope, Unhealthy, Verdict};

/// `karpenter_nodeclaims_disrupted_total{reason}` of a repair (upstream `unhealthy`).
pub const REASON: &str = "unhealthy";
/// The Event reason of a repair held back by the 20% rule.
pub const BLOCKED_EVENT: &str = "NodeRepairBlocked";

/// Runs node repair until dropped (only when the gate is on and the provider has policies).
pub async fn run(ctx: Arc<Context>) {
    let policies = ctx.provider.repair_policies();
    if policies.is_empty() {
        tracing::info!(
            provider = ctx.provider.name(),
            "node repair is enabled, but the cloud provider defines no repair policies"
        );
        return;
    }
    if ctx.state.wait_until_ready().await.is_err() {
        return;
    }
    let mut seen = Seen::default();
    let mut tick = tokio::time::interval(ctx.options.repair_poll_period);
    loop {
        tick.tick().await;
        // Counting unhealthy Nodes on a partial list could let a repair through the 20% rule.
        if ctx.state.wait_until_synced().await.is_err() {
            return;
        }
        pass(&ctx, &policies, &mut seen, Timestamp::now()).await;
    }
}

/// What earlier passes did, so a pass does not repeat it.
#[derive(Default)]
struct Seen {
    /// Nodes held back by the 20% rule, and when to look at them again.
    blocked: HashMap<String, Instant>,
    /// NodeClaims deleted by repair, until the state shows them deleting or gone (a watch
    /// lagging by a tick would otherwise have them deleted and counted twice).
    repaired: HashSet<String>,
}

/// One look at every managed Node at `now`.
async fn pass(ctx: &Context, policies: &[RepairPolicy], seen: &mut Seen, now: Timestamp) {
    let nodes = ctx.state.nodes.state();
    let retry_at = Instant::now();
    seen.blocked
        .retain(|name, until| *until > retry_at && ctx.state.node(name).is_some());
    seen.repaired.retain(|claim| {
        ctx.state
            .node_claim(claim)
            .is_some_and(|c| c.metadata.deletion_timestamp.is_none())
    });
    let census = health::Census::new(&nodes, policies);
    for node in &nodes {
        let name = node.name_any();
        if seen.blocked.contains_key(&name) {
            continue;
        }
        // Only Nodes of a NodeClaim Karpenter manages; one already going away is left alone.
        let Some(claim) = ctx.state.node_claim_for_node(&name) else {
            continue;
        };
        if claim.metadata.deletion_timestamp.is_some()
            || node.metadata.deletion_timestamp.is_some()
            || seen.repaired.contains(&claim.name_any())
        {
            continue;
        }
        let pool = claim.labels().get(NODE_POOL_LABEL).map(String::as_str);
        match health::decide(node, pool, &census, policies, now) {
            Verdict::Healthy | Verdict::Tolerated(_) => {}
            Verdict::Repair(u) => match repair(ctx, node, &claim, &u, now).await {
                Ok(()) => {
                    seen.repaired.insert(claim.name_any());
                }
                Err(e) => {
                    tracing::warn!(Node = %name, NodeClaim = %claim.name_any(), error = %e, "repairing an unhealthy node failed");
                }
            },
            Verdict::Blocked {
                unhealthy,
                scope,
                unhealthy_nodes,
                nodes: total,
            } => {
                tracing::info!(
                    Node = %name,
                    condition = %unhealthy.condition,
                    status = %unhealthy.status,
                    unhealthy_nodes,
                    nodes = total,
                    "node repair blocked: too many unhealthy nodes"
                );
                publish_blocked(ctx, node, &scope).await;
                seen.blocked
                    .insert(name, retry_at + ctx.options.repair_blocked_retry);
            }
        }
    }
}

/// Stamps the termination deadline (now: no grace period, no PDBs) and deletes the NodeClaim.
async fn repair(
    ctx: &Context,
    node: &Node,
    claim: &NodeClaim,
    u: &Unhealthy,
    now: Timestamp,
) -> Result<()> {
    let name = claim.name_any();
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    let patch =
        json!({"metadata": {"annotations": {TERMINATION_TIMESTAMP_ANNOTATION: now.to_string()}}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(
        Node = %node.name_any(),
        NodeClaim = %name,
        condition = %u.condition,
        status = %u.status,
        "deleting unhealthy node"
    );
    let labels = node.labels();
    let pool = labels.get(NODE_POOL_LABEL).cloned().unwrap_or_default();
    ctx.metrics
        .nodeclaims_disrupted
        .get_or_create(&ReasonPool {
            reason: REASON.into(),
            nodepool: pool.clone(),
        })
        .inc();
    ctx.metrics
        .nodeclaims_unhealthy_disrupted
        .get_or_create(&UnhealthyDisrupted {
            condition: health::snake_case(&u.condition),
            nodepool: pool,
            capacity_type: labels.get(CAPACITY_TYPE_LABEL).cloned().unwrap_or_default(),
            image_id: claim
                .status
                .as_ref()
                .and_then(|s| s.image_id.clone())
                .unwrap_or_default(),
        })
        .inc();
    Ok(())
}

/// `NodeRepairBlocked` on the Node and, when it has one, on its NodePool.
async fn publish_blocked(ctx: &Context, node: &Node, scope: &Scope) {
    let note = match scope {
        Scope::NodePool(_) => format!(
            "more than {}% of the nodes of the nodepool are unhealthy",
            health::ALLOWED_UNHEALTHY_PERCENT
        ),
        Scope::Cluster => format!(
            "more than {}% of the nodes of the cluster are unhealthy",
            health::ALLOWED_UNHEALTHY_PERCENT
        ),
    };
    ctx.event(
        &node.object_ref(&()),
        EventType::Warning,
        BLOCKED_EVENT,
        "Repair",
        note.clone(),
    )
    .await;
    if let Scope::NodePool(pool) = scope
        && let Some(np) = ctx.state.node_pools.get(&ObjectRef::new(pool))
    {
        ctx.event(
            &np.object_ref(&()),
            EventType::Warning,
            BLOCKED_EVENT,
            "Repair",
            format!("{note} (node {})", node.name_any()),
        )
        .await;
    }
}
