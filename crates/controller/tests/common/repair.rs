//! Node repair helpers (`e2e_repair`, `e2e_repair_disruption`). kwok keeps its Nodes `Ready`
//! (its stages flip a patched `Ready=False` straight back), so the tests use upstream's
//! simulated fault instead: the Node condition `KWOKUnhealthy=True` (kwok's heartbeat keeps
//! extra conditions), which the kwok provider tolerates for 30 s.

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use karpenter_api::v1::NodeClaim;
use karpenter_controller::metrics::UnhealthyDisrupted;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

use super::Env;

/// When a condition set by the test turned.
pub enum Since {
    /// Now: a `True` condition is within its 30 s toleration.
    Now,
    /// An hour ago: a `True` condition is past its toleration.
    HourAgo,
}

/// Sets `KWOKUnhealthy=True` on the Node, turned at `since`.
pub async fn set_unhealthy(env: &Env, node: &str, since: Since) -> Result<()> {
    set_condition(env, node, "True", since).await
}

/// Sets `KWOKUnhealthy=False` on the Node.
pub async fn set_healthy(env: &Env, node: &str) -> Result<()> {
    set_condition(env, node, "False", Since::Now).await
}

async fn set_condition(env: &Env, node: &str, status: &str, since: Since) -> Result<()> {
    let now = Timestamp::now();
    let since = match since {
        Since::Now => now,
        Since::HourAgo => now.checked_sub(SignedDuration::from_hours(1))?,
    };
    let patch = json!({"status": {"conditions": [{
        "type": "KWOKUnhealthy",
        "status": status,
        "reason": "E2E",
        "message": "set by an e2e test",
        "lastHeartbeatTime": now.to_string(),
        "lastTransitionTime": since.to_string(),
    }]}});
    Api::<Node>::all(env.client.clone())
        .patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    Ok(())
}

/// The node a pod of `app` is bound to.
pub async fn node_of(env: &Env, app: &str) -> Result<String> {
    env.app_pods(app)
        .await?
        .into_iter()
        .find_map(|p| p.spec.and_then(|s| s.node_name))
        .with_context(|| format!("no pod of {app} is bound"))
}

/// The NodeClaim of a Node (kwok names the Node after its NodeClaim; checked by providerID).
pub async fn claim_of(env: &Env, node: &str) -> Result<NodeClaim> {
    let n = Api::<Node>::all(env.client.clone()).get(node).await?;
    let pid = n
        .spec
        .and_then(|s| s.provider_id)
        .context("no providerID")?;
    env.node_claims()
        .await?
        .into_iter()
        .find(|c| c.status.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(pid.as_str()))
        .with_context(|| format!("no NodeClaim for node {node}"))
}

/// Whether the NodeClaim is gone or being deleted.
pub async fn claim_going(env: &Env, name: &str) -> Result<bool> {
    Ok(Api::<NodeClaim>::all(env.client.clone())
        .get_opt(name)
        .await?
        .is_none_or(|c| c.metadata.deletion_timestamp.is_some()))
}

/// `karpenter_nodeclaims_unhealthy_disrupted_total` of the Env's pool for `condition`.
pub fn repaired(env: &Env, condition: &str) -> u64 {
    env.controller
        .context
        .metrics
        .nodeclaims_unhealthy_disrupted
        .get_or_create(&UnhealthyDisrupted {
            condition: condition.into(),
            nodepool: env.pool.clone(),
            capacity_type: "on-demand".into(),
            image_id: String::new(),
        })
        .get()
}

/// Waits for a `NodeRepairBlocked` Event on the test's NodePool; its note.
pub async fn repair_blocked_note(env: &Env, deadline: std::time::Duration) -> Result<String> {
    let events: Api<Event> = Api::all(env.client.clone());
    env.cluster
        .wait_for(deadline, "NodeRepairBlocked on the NodePool", || async {
            let list = events.list(&ListParams::default()).await?;
            let note = list.items.into_iter().find_map(|e| {
                let on_pool = e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("NodePool") && r.name.as_deref() == Some(&env.pool)
                });
                (e.reason.as_deref() == Some("NodeRepairBlocked") && on_pool)
                    .then(|| e.note.unwrap_or_default())
            });
            Ok::<_, anyhow::Error>(note)
        })
        .await
        .context("no NodeRepairBlocked Event on the NodePool")
}
