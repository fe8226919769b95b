//! NodeClaim lifecycle: finalizer → launch → registration → initialization, the registration
//! timeout, and the NodeClaim finalizer (delete the Node, wait for it, delete the instance).
//!
//! Every step reads the NodeClaim and Node as the API has them and writes its result back
//! before moving on, so a restart resumes at the step it stopped at.

pub mod logic;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use karpenter_api::labels::{
    INITIALIZED_LABEL, NODE_POOL_LABEL, TERMINATION_FINALIZER, TERMINATION_TIMESTAMP_ANNOTATION,
};
use karpenter_api::v1::NodeClaim;
use karpenter_api::v1::nodeclaim::{
    CONDITION_INITIALIZED, CONDITION_LAUNCHED, CONDITION_READY, CONDITION_REGISTERED,
};
use karpenter_providers::CloudProviderError;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, Result, is_routine, is_status};
use crate::metrics::{Pool, ReasonPool};
use crate::nodeclaim::deadline;
use logic::{
    Phase, has_finalizer, initialization_blocker, phase, registration_patch, set_condition,
};

/// Runs the lifecycle controller until the future is dropped. It is driven by the cluster
/// state's NodeClaim and Node watches (no watch of its own).
pub async fn run(ctx: Arc<Context>) {
    let state = ctx.state.clone();
    Controller::for_shared_stream(state.node_claim_changes(), state.node_claims.clone())
        // A Node appearing, turning Ready or losing a taint moves its NodeClaim on.
        .watches_shared_stream(state.node_changes(), move |node: Arc<Node>| {
            let pid = node.spec.as_ref().and_then(|s| s.provider_id.as_deref());
            pid.and_then(|pid| state.node_claim_for_provider_id(pid))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
        })
        // kube runs reconciles outside this task: name the controller for the provider metrics.
        .run(
            |c, ctx| {
                crate::metrics::cloudprovider::with_controller(
                    "nodeclaim.lifecycle",
                    reconcile(c, ctx),
                )
            },
            error_policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// Retries with per-NodeClaim exponential backoff (1 s … 1 min): a launch error other than
/// insufficient capacity, an API conflict, a provider outage.
fn error_policy(claim: Arc<NodeClaim>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff.failed(&backoff_key(&claim));
    if is_routine(error) {
        // Someone (kwok, the API server) changed the object since we read it.
        tracing::debug!(NodeClaim = %claim.name_any(), error = %error, "nodeclaim reconcile raced an update");
    } else {
        tracing::warn!(NodeClaim = %claim.name_any(), error = %error, retry_in = ?delay, "nodeclaim reconcile failed");
    }
    Action::requeue(delay)
}

fn backoff_key(claim: &NodeClaim) -> String {
    format!("NodeClaim/{}", claim.name_any())
}

/// Seconds from `t` to now (none for a missing time or one in the future).
fn seconds_since(t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<f64> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis();
    let elapsed = i64::try_from(ms).ok()? - t?.0.as_millisecond();
    (elapsed >= 0).then(|| elapsed as f64 / 1000.0)
}

fn pool_of(claim: &NodeClaim) -> String {
    claim
        .labels()
        .get(NODE_POOL_LABEL)
        .cloned()
        .unwrap_or_default()
}

/// Reconciles one NodeClaim; a success clears its backoff.
pub async fn reconcile(claim: Arc<NodeClaim>, ctx: Arc<Context>) -> Result<Action> {
    let deleting = claim.metadata.deletion_timestamp.is_some();
    if !deleting
        && ctx.superseded.is_stale(
            &claim.name_any(),
            claim.metadata.resource_version.as_deref(),
        )
    {
        // Our newer write is on its way; its watch event wakes this claim again.
        tracing::debug!(NodeClaim = %claim.name_any(), "stale read of a nodeclaim we wrote; waiting for the newer version");
        return Ok(Action::await_change());
    }
    let action = step(&claim, &ctx).await?;
    ctx.backoff.succeeded(&backoff_key(&claim));
    Ok(action)
}

async fn step(claim: &NodeClaim, ctx: &Context) -> Result<Action> {
    if claim.metadata.deletion_timestamp.is_some() {
        return finalize(claim, ctx).await;
    }
    match phase(claim) {
        Phase::NeedsFinalizer => {
            set_finalizers(ctx, claim, true).await?;
            Ok(Action::await_change())
        }
        Phase::Launch => launch(claim, ctx).await,
        Phase::Register => register(claim, ctx).await,
        Phase::Initialize => initialize(claim, ctx).await,
        Phase::Ready => Ok(Action::requeue(Duration::from_secs(300))),
    }
}

fn api(ctx: &Context) -> Api<NodeClaim> {
    Api::all(ctx.client.clone())
}

/// Adds or removes the termination finalizer (merge patch guarded by resourceVersion).
async fn set_finalizers(ctx: &Context, claim: &NodeClaim, present: bool) -> Result<()> {
    let mut finalizers: Vec<String> = claim.finalizers().to_vec();
    finalizers.retain(|f| f != TERMINATION_FINALIZER);
    if present {
        finalizers.push(TERMINATION_FINALIZER.to_string());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": claim.resource_version()}});
    api(ctx)
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Patches the status; returns the version the API stored.
async fn patch_status(
    ctx: &Context,
    claim: &NodeClaim,
    status: &karpenter_api::v1::NodeClaimStatus,
) -> Result<Option<String>> {
    let patch = json!({ "status": status });
    let written = api(ctx)
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(written.metadata.resource_version)
}

/// A step moved the claim on (read at its version, written at `written`): until the store
/// has the new version, reconciles of the old one wait ([`crate::nodeclaim::superseded`]).
fn moved_on(ctx: &Context, claim: &NodeClaim, read: Option<&str>, written: Option<&str>) {
    ctx.superseded.wrote(&claim.name_any(), read, written);
}

/// Writes the status that completes a step on the claim as read at version `read`.
async fn advance(
    ctx: &Context,
    claim: &NodeClaim,
    read: Option<&str>,
    status: &karpenter_api::v1::NodeClaimStatus,
) -> Result<()> {
    let written = patch_status(ctx, claim, status).await?;
    moved_on(ctx, claim, read, written.as_deref());
    Ok(())
}

/// Deletes the NodeClaim because it cannot become a node; its pods are solved again.
async fn give_up(
    ctx: &Context,
    claim: &NodeClaim,
    reason: &str,
    event_reason: &str,
    note: String,
) -> Result<Action> {
    tracing::info!(NodeClaim = %claim.name_any(), reason, note = %note, "deleting nodeclaim");
    ctx.event(
        &claim.object_ref(&()),
        EventType::Warning,
        event_reason,
        "Launch",
        note,
    )
    .await;
    ctx.metrics
        .nodeclaims_disrupted
        .get_or_create(&ReasonPool {
            reason: reason.to_string(),
            nodepool: pool_of(claim),
        })
        .inc();
    match api(ctx)
        .delete(&claim.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if is_status(&e, 404) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

async fn launch(claim: &NodeClaim, ctx: &Context) -> Result<Action> {
    let name = claim.name_any();
    match ctx.provider.create(claim).await {
        Ok(launched) => {
            // Labels (and the provider's annotations, e.g. a NodeClass hash for drift) first:
            // if we stop between the two writes, the retry's create adopts the same instance
            // and writes both again.
            let labels = launched.metadata.labels.clone().unwrap_or_default();
            let annotations = launched.metadata.annotations.clone().unwrap_or_default();
            let labelled = api(ctx)
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"metadata": {
                        "labels": labels,
                        "annotations": annotations,
                    }})),
                )
                .await?;
            let read = claim.metadata.resource_version.as_deref();
            let labelled = labelled.metadata.resource_version;
            moved_on(ctx, claim, read, labelled.as_deref());
            let mut status = launched.status.unwrap_or_default();
            set_condition(
                &mut status.conditions,
                CONDITION_LAUNCHED,
                "True",
                "Launched",
                "",
                Timestamp::now(),
            );
            advance(ctx, claim, labelled.as_deref(), &status).await?;
            tracing::info!(
                NodeClaim = %name,
                provider_id = status.provider_id.as_deref().unwrap_or_default(),
                "launched nodeclaim"
            );
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        Err(CloudProviderError::InsufficientCapacity(msg)) => {
            give_up(
                ctx,
                claim,
                "insufficient_capacity",
                "InsufficientCapacityError",
                msg,
            )
            .await
        }
        Err(CloudProviderError::NodeClassNotReady(msg)) => {
            give_up(ctx, claim, "nodeclass_not_ready", "NodeClassNotReady", msg).await
        }
        Err(e) => {
            let mut status = claim.status.clone().unwrap_or_default();
            if set_condition(
                &mut status.conditions,
                CONDITION_LAUNCHED,
                "Unknown",
                "LaunchFailed",
                &e.to_string(),
                Timestamp::now(),
            ) {
                patch_status(ctx, claim, &status).await?;
            }
            Err(e.into())
        }
    }
}

async fn register(claim: &NodeClaim, ctx: &Context) -> Result<Action> {
    let pid = claim
        .status
        .as_ref()
        .and_then(|s| s.provider_id.clone())
        .unwrap_or_default();
    let nodes = ctx.state.nodes_for_provider_id(&pid);
    let mut status = claim.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let node = match nodes.as_slice() {
        [] => {
            if logic::registration_timed_out(claim, now, ctx.options.registration_timeout) {
                // Delete the claim; its finalizer deletes the instance.
                return give_up(
                    ctx,
                    claim,
                    "registration_timeout",
                    "RegistrationTimeout",
                    format!("no node registered with providerID {pid} in time"),
                )
                .await;
            }
            if set_condition(
                &mut status.conditions,
                CONDITION_REGISTERED,
                "Unknown",
                "NodeNotFound",
                "",
                now,
            ) {
                patch_status(ctx, claim, &status).await?;
            }
            // The Node watch wakes us when it appears; this requeue only enforces the timeout.
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        [node] => node.clone(),
        _ => {
            if set_condition(
                &mut status.conditions,
                CONDITION_REGISTERED,
                "False",
                "MultipleNodesFound",
                &pid,
                now,
            ) {
                patch_status(ctx, claim, &status).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    };
    let node_name = node.name_any();
    let nodes_api = Api::<Node>::all(ctx.client.clone());
    // Patch from the API's copy: the store's may be a version behind (kwok updates status).
    let fresh = nodes_api.get(&node_name).await?;
    let patch = registration_patch(claim, &fresh);
    nodes_api
        .patch(&node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    status.node_name = Some(node_name.clone());
    set_condition(
        &mut status.conditions,
        CONDITION_REGISTERED,
        "True",
        "Registered",
        "",
        now,
    );
    advance(
        ctx,
        claim,
        claim.metadata.resource_version.as_deref(),
        &status,
    )
    .await?;
    ctx.metrics
        .nodes_created
        .get_or_create(&Pool {
            nodepool: pool_of(claim),
        })
        .inc();
    tracing::info!(NodeClaim = %claim.name_any(), Node = %node_name, "registered nodeclaim");
    Ok(Action::requeue(Duration::from_secs(10)))
}

async fn initialize(claim: &NodeClaim, ctx: &Context) -> Result<Action> {
    let pid = claim
        .status
        .as_ref()
        .and_then(|s| s.provider_id.clone())
        .unwrap_or_default();
    let Some(node) = ctx.state.nodes_for_provider_id(&pid).into_iter().next() else {
        // The Node vanished after registering; garbage collection deals with the claim.
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let mut status = claim.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if let Some((reason, message)) = initialization_blocker(claim, &node) {
        if set_condition(
            &mut status.conditions,
            CONDITION_INITIALIZED,
            "Unknown",
            reason,
            &message,
            now,
        ) {
            patch_status(ctx, claim, &status).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let patch = json!({"metadata": {"labels": {INITIALIZED_LABEL: "true"}}});
    Api::<Node>::all(ctx.client.clone())
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    set_condition(
        &mut status.conditions,
        CONDITION_INITIALIZED,
        "True",
        "Initialized",
        "",
        now,
    );
    set_condition(
        &mut status.conditions,
        CONDITION_READY,
        "True",
        "Ready",
        "",
        now,
    );
    advance(
        ctx,
        claim,
        claim.metadata.resource_version.as_deref(),
        &status,
    )
    .await?;
    tracing::info!(NodeClaim = %claim.name_any(), Node = %node.name_any(), "initialized nodeclaim");
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The NodeClaim finalizer: delete its Node(s) and wait until they are gone (the Node
/// finalizer drains them), then delete the instance until the provider says it is gone, then
/// let the NodeClaim go.
async fn finalize(claim: &NodeClaim, ctx: &Context) -> Result<Action> {
    if !has_finalizer(claim.metadata.finalizers.as_ref()) {
        return Ok(Action::await_change());
    }
    // Fix the drain's deadline first, once: later steps (and a restarted controller) read it.
    if let Some(at) = deadline::deadline_to_stamp(claim) {
        let patch = json!({"metadata": {"annotations": {TERMINATION_TIMESTAMP_ANNOTATION: at.to_string()}}});
        api(ctx)
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        ctx.event(
            &claim.object_ref(&()),
            EventType::Normal,
            "TerminationGracePeriodExpiring",
            "Terminate",
            format!("pods left on the node are deleted at {at}"),
        )
        .await;
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let pid = claim.status.as_ref().and_then(|s| s.provider_id.clone());
    if let Some(pid) = &pid {
        let nodes = ctx.state.nodes_for_provider_id(pid);
        // Gone once the state's Node watch says so: a lagging watch only makes this wait.
        for node in nodes
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
        {
            match Api::<Node>::all(ctx.client.clone())
                .delete(&node.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !nodes.is_empty() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    match ctx.provider.delete(claim).await {
        Ok(()) => Ok(Action::requeue(Duration::from_secs(2))),
        Err(e) if e.is_not_found() => {
            set_finalizers(ctx, claim, false).await?;
            ctx.superseded.forget(&claim.name_any());
            let pool = Pool {
                nodepool: pool_of(claim),
            };
            ctx.metrics.nodeclaims_terminated.get_or_create(&pool).inc();
            // The instance is known gone and the finalizer removed at the same moment here, so
            // both durations run from the deletion request to now.
            if let Some(secs) = seconds_since(claim.metadata.deletion_timestamp.as_ref()) {
                let m = &ctx.metrics;
                m.nodeclaims_termination_duration
                    .get_or_create(&pool)
                    .observe(secs);
                m.nodeclaims_instance_termination_duration
                    .get_or_create(&pool)
                    .observe(secs);
            }
            tracing::info!(NodeClaim = %claim.name_any(), "deleted nodeclaim");
            Ok(Action::await_change())
        }
        Err(e) => Err(e.into()),
    }
}
