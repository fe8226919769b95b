//! e2e: a disruption command survives a controller restart.
//!
//! Adding a startup taint to the NodePool's template drifts its one node; the drift command
//! taints the node `karpenter.sh/disrupted`, records itself on the NodeClaim and creates a
//! replacement, whose Node then carries the startup taint and cannot initialize until the test
//! removes it. That holds the command in flight deterministically (no racing timers) while
//! the controller is stopped as a crash would stop it, and a new controller is started:
//!
//! - resumed: once the test lifts the startup taint, the new controller finishes the recorded
//!   command: the recorded replacement (not a second one) takes the pods, the old NodeClaim and
//!   Node go, and no node is left tainted;
//! - rolled back: the replacement NodeClaim is deleted (and the template change undone) while
//!   no controller runs; the new controller rolls the command back: the old node stays, its
//!   taint and the record are removed, and the replacement is cleaned up.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use common::{Env, TIMEOUT, claim_condition, disruption_options, node_disrupting, pod_running};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use karpenter_api::labels::DISRUPTED_TAINT_KEY;
use karpenter_api::v1::nodeclaim::{CONDITION_INITIALIZED, CONDITION_REGISTERED};
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_controller::Options;
use karpenter_controller::disruption::command::{COMMAND_ANNOTATION, Record, record_of};
use karpenter_controller::metrics::ReasonPool;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The startup taint that holds the replacement uninitialized until the test lifts it.
const HOLD: &str = "e2e.example.com/hold";
const APP: &str = "held";
const REPLICAS: usize = 2;
/// Drift, a launch and a drain on a loaded control plane: generous, it only bounds a failure.
const DEADLINE: Duration = Duration::from_secs(180);

fn options() -> Options {
    disruption_options(Duration::from_secs(1))
}

/// Both cases, one after the other: two controllers in one process would both act on every
/// pool (no leader election in tests), so the cases cannot run as concurrent tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disruption_commands_survive_a_controller_restart() -> Result<()> {
    // Both cases run even when the first fails, so one run reports both.
    let mut failed = Vec::new();
    for case in [Case::Resumed, Case::RolledBack] {
        let Some(mut env) = Env::start_with(options()).await? else {
            return Ok(());
        };
        let result = match case {
            Case::Resumed => resumed(&mut env).await,
            Case::RolledBack => rolled_back(&mut env).await,
        };
        let cleaned = env.cleanup().await;
        if let Err(e) = result.and(cleaned) {
            eprintln!("case {case:?} failed: {e:#}");
            failed.push(format!("{case:?}: {e:#}"));
        }
    }
    ensure!(failed.is_empty(), "failed cases: {failed:?}");
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Case {
    Resumed,
    RolledBack,
}

/// The command caught in flight, with the controller stopped.
struct Caught {
    old_claim: String,
    old_node: String,
    record: Record,
}

fn has_taint(n: &Node, key: &str) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == key))
}

/// Runs the app on one node, drifts it by adding [`HOLD`] as a startup taint, waits until the
/// drift command has recorded its replacement, and stops the controller.
async fn catch_in_flight(env: &mut Env) -> Result<Caught> {
    Api::<Deployment>::namespaced(env.client.clone(), env.ns())
        .create(
            &PostParams::default(),
            &env.deployment(APP, REPLICAS as i32, "250m"),
        )
        .await?;
    env.wait_running(APP, REPLICAS).await?;
    let claims = env.node_claims().await?;
    let nodes = env.nodes().await?;
    // One batch of two small pods makes one node; anything else would make the drift
    // commands (and this test) depend on budgets.
    ensure!(
        claims.len() == 1 && nodes.len() == 1,
        "expected one NodeClaim and one Node, found {} and {}",
        claims.len(),
        nodes.len()
    );
    let old_claim = claims[0].name_any();
    let old_node = nodes[0].name_any();

    set_hold(env, true).await?;
    let claims_api: Api<NodeClaim> = Api::all(env.client.clone());
    let record = env
        .cluster
        .wait_for(
            DEADLINE,
            "the drift command recording its replacement",
            || async {
                let c = claims_api.get(&old_claim).await?;
                let r = record_of(&c).filter(|r| {
                    r.expected_replacements > 0 && r.replacements.len() == r.expected_replacements
                });
                Ok::<_, anyhow::Error>(r)
            },
        )
        .await?;
    env.controller.stop();

    // What the crash left: the old node tainted and in use, the replacement uninitialized
    // (its Node, if any, carries the startup taint).
    let node = Api::<Node>::all(env.client.clone()).get(&old_node).await?;
    ensure!(
        has_taint(&node, DISRUPTED_TAINT_KEY),
        "the old node is not tainted"
    );
    ensure!(
        record.reason == "drifted",
        "unexpected command {}",
        record.reason
    );
    for r in &record.replacements {
        let c = claims_api.get(r).await?;
        ensure!(
            !claim_condition(&c, CONDITION_INITIALIZED),
            "replacement {r} initialized despite the startup taint"
        );
    }
    println!(
        "stopped mid-command {} (replacements {:?})",
        record.id, record.replacements
    );
    Ok(Caught {
        old_claim,
        old_node,
        record,
    })
}

/// Adds or removes [`HOLD`] in the NodePool template's startup taints (either drifts the
/// pool's nodes made under the other).
async fn set_hold(env: &Env, on: bool) -> Result<()> {
    let taints = if on {
        json!([{"key": HOLD, "effect": "NoSchedule"}])
    } else {
        serde_json::Value::Null
    };
    Api::<NodePool>::all(env.client.clone())
        .patch(
            &env.pool,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"template": {"spec": {"startupTaints": taints}}}})),
        )
        .await?;
    Ok(())
}

/// Waits until the current controller has planned once: each round resumes recorded commands
/// before it plans, so from then on the command is in its hands.
async fn planned_once(env: &Env) -> Result<()> {
    let metrics = env.controller.context.metrics.clone();
    env.cluster
        .wait_for(
            TIMEOUT,
            "the new controller's first disruption plan",
            || {
                // Set from the plan's budgets, so only after a first plan.
                let key = ReasonPool {
                    reason: "drifted".into(),
                    nodepool: env.pool.clone(),
                };
                let planned = metrics.allowed_disruptions.get(&key).is_some();
                async move { Ok::<_, anyhow::Error>(planned.then_some(())) }
            },
        )
        .await?;
    Ok(())
}

/// The Node of a NodeClaim, once registered.
async fn registered_node(env: &Env, claim: &str) -> Result<String> {
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    let pid = env
        .cluster
        .wait_for(TIMEOUT, format!("{claim} registered"), || async {
            let c = claims.get(claim).await?;
            let pid = c.status.as_ref().and_then(|s| s.provider_id.clone());
            Ok::<_, anyhow::Error>(pid.filter(|_| claim_condition(&c, CONDITION_REGISTERED)))
        })
        .await?;
    let nodes = env.nodes().await?;
    nodes
        .iter()
        .find(|n| n.spec.as_ref().and_then(|s| s.provider_id.as_deref()) == Some(&pid))
        .map(|n| n.name_any())
        .with_context(|| format!("no Node with provider id {pid}"))
}

async fn resumed(env: &mut Env) -> Result<()> {
    let caught = catch_in_flight(env).await?;
    let replacement = caught
        .record
        .replacements
        .first()
        .context("a replacement")?
        .clone();
    env.controller = common::start_controller(&env.cluster, options()).await?;
    planned_once(env).await?;

    // Registration puts the startup taint on the Node; lifting it earlier would not hold.
    let new_node = registered_node(env, &replacement).await?;
    // The resumed command waits for its replacement: nothing of the old node went yet.
    let claims_api: Api<NodeClaim> = Api::all(env.client.clone());
    let old = claims_api.get(&caught.old_claim).await?;
    ensure!(
        old.metadata.deletion_timestamp.is_none() && record_of(&old).is_some(),
        "the old NodeClaim went, or lost its record, before its replacement initialized"
    );
    let nodes_api: Api<Node> = Api::all(env.client.clone());
    env.cluster
        .wait_for(
            TIMEOUT,
            format!("{HOLD} lifted from {new_node}"),
            || async {
                let n = nodes_api.get(&new_node).await?;
                if !has_taint(&n, HOLD) {
                    return Ok::<_, anyhow::Error>(Some(()));
                }
                let kept: Vec<_> = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|t| t.key != HOLD)
                    .collect();
                // The resourceVersion makes a concurrent update a conflict, retried next poll.
                let patch = json!({
                    "metadata": {"resourceVersion": n.resource_version()},
                    "spec": {"taints": kept},
                });
                nodes_api
                    .patch(&new_node, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok(None)
            },
        )
        .await?;

    env.cluster
        .wait_for(
            DEADLINE,
            "the recorded replacement alone, untainted, running the pods",
            || async {
                let claims: BTreeSet<String> = env
                    .node_claims()
                    .await?
                    .iter()
                    .map(|c| c.name_any())
                    .collect();
                let nodes = env.nodes().await?;
                let pods = env.app_pods(APP).await?;
                let done = claims == BTreeSet::from([replacement.clone()])
                    && nodes.len() == 1
                    && nodes[0].name_any() == new_node
                    && !nodes.iter().any(node_disrupting)
                    && pods.len() == REPLICAS
                    && pods.iter().all(|p| {
                        pod_running(p)
                            && p.spec.as_ref().and_then(|s| s.node_name.as_deref())
                                == Some(new_node.as_str())
                    });
                Ok::<_, anyhow::Error>(done.then_some(()))
            },
        )
        .await?;
    ensure!(
        nodes_api.get_opt(&caught.old_node).await?.is_none(),
        "the old Node is still there"
    );
    let instances = env.instances().await?;
    ensure!(
        instances.len() == 1,
        "{} instances left, expected only the replacement's",
        instances.len()
    );
    ensure!(
        env.controller
            .context
            .metrics
            .disruption_queue_failures
            .get()
            == 0,
        "the new controller rolled a command back"
    );
    let kept = claims_api.get(&replacement).await?;
    ensure!(
        !kept.annotations().contains_key(COMMAND_ANNOTATION),
        "the replacement carries a command record"
    );
    Ok(())
}

async fn rolled_back(env: &mut Env) -> Result<()> {
    let caught = catch_in_flight(env).await?;
    let claims_api: Api<NodeClaim> = Api::all(env.client.clone());
    for r in &caught.record.replacements {
        // Its finalizer holds it until the next controller terminates it.
        claims_api.delete(r, &DeleteParams::background()).await?;
    }
    // Undo the drift, or the next controller would rightly start a new command at once.
    set_hold(env, false).await?;
    env.controller = common::start_controller(&env.cluster, options()).await?;
    planned_once(env).await?;

    let nodes_api: Api<Node> = Api::all(env.client.clone());
    env.cluster
        .wait_for(
            DEADLINE,
            "the command rolled back: old node kept, untainted, unrecorded, alone",
            || async {
                let claims = env.node_claims().await?;
                let nodes = env.nodes().await?;
                let pods = env.app_pods(APP).await?;
                let old_clean = claims.len() == 1
                    && claims[0].name_any() == caught.old_claim
                    && claims[0].metadata.deletion_timestamp.is_none()
                    && record_of(&claims[0]).is_none();
                let done = old_clean
                    && nodes.len() == 1
                    && nodes[0].name_any() == caught.old_node
                    && !node_disrupting(&nodes[0])
                    && pods.len() == REPLICAS
                    && pods.iter().all(pod_running);
                Ok::<_, anyhow::Error>(done.then_some(()))
            },
        )
        .await?;
    ensure!(
        env.controller
            .context
            .metrics
            .disruption_queue_failures
            .get()
            >= 1,
        "the new controller rolled nothing back"
    );
    ensure!(
        env.instances().await?.len() == 1,
        "an instance besides the old node's is left"
    );
    // The old claim's annotation is gone, not just unreadable.
    let old = claims_api.get(&caught.old_claim).await?;
    ensure!(!old.annotations().contains_key(COMMAND_ANNOTATION));
    let node = nodes_api.get(&caught.old_node).await?;
    ensure!(!has_taint(&node, DISRUPTED_TAINT_KEY));
    Ok(())
}
