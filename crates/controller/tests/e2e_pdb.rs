//! e2e: a PodDisruptionBudget with maxUnavailable 0 blocks the drain of a deleted NodeClaim's
//! node (karpenter reports `FailedDraining` and keeps the node, its pod still running); once
//! the budget is relaxed the eviction goes through and the drain completes. With a
//! `terminationGracePeriod` on the NodePool, the blocked drain ends at that deadline instead.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, Result};
use common::{Env, TIMEOUT, pod_running};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use karpenter_api::labels::DISRUPTED_TAINT_KEY;
use karpenter_api::v1::{NodeClaim, NodePool};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn termination_grace_period_ends_a_blocked_drain() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = grace_body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn grace_body(env: &Env) -> Result<()> {
    // NodeClaims copy the grace period from the NodePool when they are created.
    Api::<NodePool>::all(env.client.clone())
        .patch(
            &env.pool,
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"template": {"spec": {"terminationGracePeriod": "4s"}}}}),
            ),
        )
        .await?;
    let deleted = Instant::now();
    let (_, node_name) = guarded_pod_on_deleted_claim(env).await?;
    let nodes: Api<Node> = Api::all(env.client.clone());
    env.cluster
        .wait_for(TIMEOUT, "the node gone despite the PDB", || async {
            Ok::<_, kube::Error>(nodes.get_opt(&node_name).await?.is_none().then_some(()))
        })
        .await?;
    println!("drain ended after {:.1} s", deleted.elapsed().as_secs_f64());
    // The PDB was never relaxed: only the deadline can have let the pod go.
    let pdb = Api::<PodDisruptionBudget>::namespaced(env.client.clone(), env.ns())
        .get("guard")
        .await?;
    assert_eq!(
        pdb.spec.and_then(|s| s.max_unavailable),
        Some(IntOrString::Int(0))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pdb_blocks_the_drain_until_relaxed() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// A PDB with maxUnavailable 0 over a one-pod Deployment; returns the pod's name and node
/// once it runs, after deleting that node's NodeClaim.
async fn guarded_pod_on_deleted_claim(env: &Env) -> Result<(String, String)> {
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), env.ns());
    pdbs.create(
        &PostParams::default(),
        &PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("guard".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(0)),
                selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "app".to_string(),
                        "guarded".to_string(),
                    )])),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: None,
        },
    )
    .await?;
    Api::<Deployment>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &env.deployment("guarded", 1, "1"))
        .await?;
    env.wait_running("guarded", 1).await?;
    let pod = env
        .app_pods("guarded")
        .await?
        .into_iter()
        .next()
        .context("the pod")?;
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .context("bound")?;
    let claim = env
        .node_claims()
        .await?
        .into_iter()
        .find(|c| c.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node_name))
        .context("the pod's NodeClaim")?;
    Api::<NodeClaim>::all(env.client.clone())
        .delete(&claim.name_any(), &DeleteParams::background())
        .await?;
    Ok((pod.name_any(), node_name))
}

async fn body(env: &Env) -> Result<()> {
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(env.client.clone(), env.ns());
    let (pod_name, node_name) = guarded_pod_on_deleted_claim(env).await?;

    // Blocked: karpenter says why, and the node and its pod stay.
    let events: Api<Event> = Api::all(env.client.clone());
    env.cluster
        .wait_for(TIMEOUT, "a FailedDraining event on the node", || async {
            let list = events.list(&ListParams::default()).await?;
            let found = list.items.iter().any(|e| {
                e.reason.as_deref() == Some("FailedDraining")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some(node_name.as_str())
            });
            Ok::<_, kube::Error>(found.then_some(()))
        })
        .await?;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let node = nodes.get(&node_name).await?;
    assert!(node.metadata.deletion_timestamp.is_some(), "being deleted");
    let tainted = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .iter()
        .any(|t| t.key == DISRUPTED_TAINT_KEY);
    assert!(tainted, "tainted for the drain");
    let still = env.app_pods("guarded").await?;
    assert!(
        still
            .iter()
            .any(|p| p.name_any() == pod_name && pod_running(p)),
        "the guarded pod was not evicted"
    );

    // Relaxed: the eviction goes through and the node goes away.
    pdbs.patch(
        "guard",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"maxUnavailable": 1}})),
    )
    .await?;
    env.cluster
        .wait_for(TIMEOUT, "the drained node gone", || async {
            Ok::<_, kube::Error>(nodes.get_opt(&node_name).await?.is_none().then_some(()))
        })
        .await?;
    // The Deployment's replacement pod got new capacity.
    env.wait_running("guarded", 1).await?;
    Ok(())
}
