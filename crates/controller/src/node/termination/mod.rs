//! Node termination: the `karpenter.sh/termination` finalizer on Nodes. When a Node is
//! deleted: delete its NodeClaim, taint it `karpenter.sh/disrupted:NoSchedule`, evict its pods
//! through the Eviction API (PDBs are honoured: a 429 is retried with backoff), then delete
//! the instance and remove the finalizer. Every step is re-derived from the cluster state (the
//! node's pods from its node → pods index; the API is asked once, to confirm the node is
//! drained before its instance goes), so a restart at any point resumes the drain.

pub mod logic;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::{NODE_POOL_LABEL, TERMINATION_FINALIZER};
use karpenter_api::v1::NodeClaim;
use kube::api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, Result, is_routine, is_status};
use crate::metrics::{Code, Pool};
use crate::nodeclaim::deadline;
use crate::nodeclaim::lifecycle::logic::has_finalizer;
use crate::state::StoredPod;

/// When each draining node's placement-constrained pods were last evicted
/// ([`logic::CONSTRAINED_HEAD_START`]). This process's memory only: after a restart a node's
/// other pods go without the head start, as they did before it existed.
#[derive(Debug, Default)]
pub struct HeadStarts(Mutex<HashMap<String, Instant>>);

impl HeadStarts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // Single inserts and reads: a panic while holding the lock left consistent data.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `node`'s constrained pods were evicted now.
    pub fn started(&self, node: &str) {
        let now = Instant::now();
        let mut starts = self.lock();
        // Nodes long drained (or gone some other way) are forgotten here.
        starts.retain(|_, t| now.duration_since(*t) < Duration::from_secs(60));
        starts.insert(node.to_string(), now);
    }

    /// How much longer `node`'s other pods are held back, if at all.
    pub fn left(&self, node: &str) -> Option<Duration> {
        let started = *self.lock().get(node)?;
        logic::CONSTRAINED_HEAD_START
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
    }
}

/// Runs the termination controller over Nodes Karpenter manages, driven by the cluster
/// state's Node watch (no watch of its own).
pub async fn run(ctx: Arc<Context>) {
    let state = ctx.state.clone();
    let managed = state.node_changes().filter(|n| {
        let managed = n.labels().contains_key(NODE_POOL_LABEL);
        async move { managed }
    });
    Controller::for_shared_stream(managed, state.nodes.clone())
        // kube runs reconciles outside this task: name the controller for the provider metrics.
        .run(
            |c, ctx| {
                crate::metrics::cloudprovider::with_controller(
                    "node.termination",
                    reconcile(c, ctx),
                )
            },
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// Retries with per-Node exponential backoff (1 s … 1 min).
fn error_policy(node: Arc<Node>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.failed(&backoff_key(&node));
    if is_routine(error) {
        tracing::debug!(Node = %node.name_any(), error = %error, "node termination raced an update");
    } else {
        tracing::warn!(Node = %node.name_any(), error = %error, retry_in = ?delay, "node termination failed");
    }
    Action::requeue(delay)
}

fn backoff_key(node: &Node) -> String {
    format!("Node/{}", node.name_any())
}

/// Reconciles one Node.
pub async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action> {
    let action = step(&node, &ctx).await?;
    ctx.backoff.succeeded(&backoff_key(&node));
    Ok(action)
}

async fn step(node: &Node, ctx: &Context) -> Result<Action> {
    if node.metadata.deletion_timestamp.is_none()
        || !has_finalizer(node.metadata.finalizers.as_ref())
    {
        return Ok(Action::await_change());
    }
    let name = node.name_any();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let pid = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.clone())
        .unwrap_or_default();
    let claim = ctx.state.node_claim_for_provider_id(&pid);

    // The NodeClaim goes too (its finalizer waits for this Node to be gone).
    if let Some(c) = &claim
        && c.metadata.deletion_timestamp.is_none()
    {
        match Api::<NodeClaim>::all(ctx.client.clone())
            .delete(&c.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }

    if let Some(patch) = logic::disrupted_taint_patch(node) {
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        ctx.event(
            &node.object_ref(&()),
            EventType::Normal,
            "Disrupted",
            "Terminate",
            "tainted for termination; draining".into(),
        )
        .await;
    }

    let deadline = claim.as_deref().and_then(deadline::deadline);
    let pods = ctx.state.pods_on_node(&name);
    let held = ctx.drain_head_starts.left(&name);
    let mut plan = logic::drain(
        pods.iter().map(AsRef::as_ref),
        deadline,
        Timestamp::now(),
        held.is_some(),
    );
    if plan.remaining == 0 {
        // The state may not have seen a pod bound a moment ago: ask the API once before the
        // instance goes.
        let listed = Api::<Pod>::all(ctx.client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
            .await?;
        let listed: Vec<StoredPod> = listed.items.into_iter().map(StoredPod::from).collect();
        plan = logic::drain(&listed, deadline, Timestamp::now(), held.is_some());
    }
    if plan.remaining > 0 {
        delete_overdue(ctx, node, &plan.delete).await?;
        let blocked = evict(ctx, node, &plan.evict).await?;
        if plan.constrained {
            ctx.drain_head_starts.started(&name);
        }
        // Blocked evictions retry with the error policy's cadence (PDBs change slowly); the
        // rest of the pods go once the constrained ones' head start is over; otherwise check
        // back soon for the evicted pods to be gone.
        let wait = if blocked {
            Duration::from_secs(5)
        } else if plan.constrained {
            logic::CONSTRAINED_HEAD_START
        } else if let Some(left) = held {
            left
        } else {
            Duration::from_secs(1)
        };
        return Ok(Action::requeue(wait));
    }
    release(ctx, node, claim.as_deref(), &pid).await
}

/// Evicts the pods (`namespace/name`) through the Eviction API; true when an eviction was
/// refused for now (a PodDisruptionBudget, or a terminating namespace).
async fn evict(ctx: &Context, node: &Node, pods: &[String]) -> Result<bool> {
    let mut blocked = false;
    for key in pods {
        let Some((ns, pod)) = key.split_once('/') else {
            continue;
        };
        let result = Api::<Pod>::namespaced(ctx.eviction_client.clone(), ns)
            .evict(pod, &EvictParams::default())
            .await;
        let code = match &result {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(_) => 0,
        };
        ctx.metrics
            .eviction_requests
            .get_or_create(&Code {
                code: code.to_string(),
            })
            .inc();
        match result {
            // Gone already, or already being deleted: nothing to do.
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            // Refused because the pod's namespace is terminating: the namespace
            // controller is deleting the pod anyway; keep waiting for it.
            Err(e) if is_status(&e, 403) => blocked = true,
            // A PodDisruptionBudget forbids it right now.
            Err(e) if is_status(&e, 429) => {
                blocked = true;
                ctx.event(
                    &node.object_ref(&()),
                    EventType::Warning,
                    "FailedDraining",
                    "Drain",
                    format!("evicting pod {key}: {e}"),
                )
                .await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(blocked)
}

/// The drained node's last steps: delete its instance (until the provider says it is gone),
/// then remove the finalizer.
async fn release(
    ctx: &Context,
    node: &Node,
    claim: Option<&NodeClaim>,
    pid: &str,
) -> Result<Action> {
    let name = node.name_any();
    // No NodeClaim (an orphan): describe the instance by the Node's providerID.
    let instance = claim
        .cloned()
        .unwrap_or_else(|| NodeClaim::for_instance(&name, Some(pid.to_string())));
    match ctx.provider.delete(&instance).await {
        Ok(()) => return Ok(Action::requeue(Duration::from_secs(2))),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let mut finalizers: Vec<String> = node.finalizers().to_vec();
    finalizers.retain(|f| f != TERMINATION_FINALIZER);
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": node.resource_version()}});
    Api::<Node>::all(ctx.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics
        .nodes_terminated
        .get_or_create(&Pool {
            nodepool: node
                .labels()
                .get(NODE_POOL_LABEL)
                .cloned()
                .unwrap_or_default(),
        })
        .inc();
    tracing::info!(Node = %name, "terminated node");
    Ok(Action::await_change())
}

/// Deletes pods whose eviction would outlive the NodeClaim's termination deadline, each with
/// the grace period it has left (the eviction API and PodDisruptionBudgets are bypassed: the
/// NodeClaim's `terminationGracePeriod` is the cluster operator's upper bound on a drain).
async fn delete_overdue(ctx: &Context, node: &Node, pods: &[(String, i64)]) -> Result<()> {
    for (key, grace) in pods {
        let Some((ns, pod)) = key.split_once('/') else {
            continue;
        };
        let params = DeleteParams {
            grace_period_seconds: u32::try_from(*grace).ok(),
            ..DeleteParams::default()
        };
        match Api::<Pod>::namespaced(ctx.client.clone(), ns)
            .delete(pod, &params)
            .await
        {
            Ok(_) => {
                tracing::info!(Node = %node.name_any(), Pod = %key, grace_seconds = grace, "deleted pod at the termination deadline");
                ctx.event(
                    &node.object_ref(&()),
                    EventType::Warning,
                    "TerminationGracePeriodExpiring",
                    "Drain",
                    format!("deleting pod {key}: the NodeClaim's terminationGracePeriod ends in {grace}s"),
                )
                .await;
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A node's other pods are held back from the moment its constrained pods were evicted
    /// (never longer than the head start), other nodes' are not.
    #[test]
    fn head_start_holds_only_the_node_it_was_recorded_for() {
        let starts = HeadStarts::default();
        assert_eq!(starts.left("n1"), None);
        starts.started("n1");
        let left = starts.left("n1");
        assert!(
            left.is_some_and(|d| d <= logic::CONSTRAINED_HEAD_START),
            "{left:?}"
        );
        assert_eq!(starts.left("n2"), None);
    }

    /// A head start over is no hold, and entries a minute old are dropped on the next record.
    #[test]
    fn an_old_head_start_holds_nothing_and_is_forgotten() {
        let starts = HeadStarts::default();
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(120))
            .unwrap();
        starts.lock().insert("old".into(), long_ago);
        assert_eq!(starts.left("old"), None);
        starts.started("new");
        assert!(!starts.lock().contains_key("old"));
        assert!(starts.lock().contains_key("new"));
    }
}
