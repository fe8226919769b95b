//! e2e: changing a NodePool's template labels drifts its NodeClaims (they carry the hash of
//! the template they were made from): each is marked `Drifted` and replaced by a NodeClaim of
//! the new template, and the pods move over and keep running. With disruption off
//! (`--disable-disruption`), the NodePool is still stamped and the claims still marked
//! `Drifted`, and nothing is replaced.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use common::{Env, claim_condition, disruption_options, node_disrupting, test_options};
use k8s_openapi::api::apps::v1::Deployment;
use karpenter_api::labels::NODE_POOL_HASH_ANNOTATION;
use karpenter_api::v1::NodePool;
use karpenter_controller::metrics::PodsDisrupted;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const LABEL: &str = "e2e.example.com/revision";
const DEADLINE: Duration = Duration::from_secs(180);

/// Each test's controller acts on the whole cluster: run side by side, the one with disruption
/// on would replace the other test's drifted nodes, which that test asserts nobody touches.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changed_template_labels_replace_the_nodes() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(env) = Env::start_with(disruption_options(Duration::from_secs(1))).await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments
        .create(
            &PostParams::default(),
            &env.deployment("steady", 3, "1500m"),
        )
        .await?;
    env.wait_running("steady", 3).await?;
    let old: BTreeSet<String> = env
        .node_claims()
        .await?
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert!(!old.is_empty());
    for c in env.node_claims().await? {
        assert!(
            c.annotations().contains_key(NODE_POOL_HASH_ANNOTATION),
            "{} carries no NodePool hash",
            c.name_any()
        );
    }

    let pools: Api<NodePool> = Api::all(env.client.clone());
    pools
        .patch(
            &env.pool,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"template": {"metadata": {"labels": {LABEL: "2"}}}}})),
        )
        .await?;
    // The old claims are marked Drifted on the way (seen unless they go within one poll).
    let seen_drifted = env
        .cluster
        .wait_for(
            DEADLINE,
            "a NodeClaim marked Drifted or already replaced",
            || async {
                let claims = env.node_claims().await?;
                let drifted = claims.iter().any(|c| claim_condition(c, "Drifted"));
                let replaced = !claims.iter().any(|c| old.contains(&c.name_any()));
                Ok::<_, anyhow::Error>((drifted || replaced).then_some(drifted))
            },
        )
        .await?;
    env.cluster
        .wait_for(
            DEADLINE,
            "every node replaced by one with the new label, pods running",
            || async {
                let claims = env.node_claims().await?;
                let nodes = env.nodes().await?;
                let old_left = claims.iter().any(|c| old.contains(&c.name_any()));
                let relabelled = !nodes.is_empty()
                    && nodes.iter().all(|n| {
                        n.labels().get(LABEL).map(String::as_str) == Some("2")
                            && !node_disrupting(n)
                    });
                let pods = env.app_pods("steady").await?;
                let running = pods.len() == 3 && pods.iter().all(common::pod_running);
                Ok::<_, anyhow::Error>((!old_left && relabelled && running).then_some(()))
            },
        )
        .await?;
    println!("drifted condition observed: {seen_drifted}");
    // Each of the 3 pods was on an old node when its NodeClaim was removed: at least 3 pod
    // disruptions, at most 3 per old node (a pod may land on another old node first).
    let initiated = env
        .controller
        .context
        .metrics
        .pods_disruption_initiated
        .get_or_create(&PodsDisrupted {
            reason: "drifted".into(),
            nodepool: env.pool.clone(),
            capacity_type: "on-demand".into(),
            consolidation_policy: String::new(),
            termination_mode: "graceful".into(),
        })
        .get();
    println!("karpenter_pods_disruption_initiated_total{{reason=\"drifted\"}}: {initiated}");
    assert!(
        (3..=3 * old.len() as u64).contains(&initiated),
        "{initiated} pod disruptions for 3 pods on {} drifted nodes",
        old.len()
    );
    // The NodePool carries the hash of its current template.
    let pool = pools.get(&env.pool).await?;
    assert!(pool.annotations().contains_key(NODE_POOL_HASH_ANNOTATION));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_disruption_off_drift_is_marked_but_nothing_is_replaced() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    // test_options: disruption off, leader loops (and so drift) on.
    let Some(env) = Env::start_with(test_options()).await? else {
        return Ok(());
    };
    let result = marked_only(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn marked_only(env: &Env) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments
        .create(&PostParams::default(), &env.deployment("kept", 2, "1500m"))
        .await?;
    env.wait_running("kept", 2).await?;
    let pools: Api<NodePool> = Api::all(env.client.clone());
    env.cluster
        .wait_for(DEADLINE, "the NodePool stamped with its hash", || async {
            let pool = pools.get(&env.pool).await?;
            Ok::<_, anyhow::Error>(
                pool.annotations()
                    .contains_key(NODE_POOL_HASH_ANNOTATION)
                    .then_some(()),
            )
        })
        .await?;
    let old: BTreeSet<String> = env
        .node_claims()
        .await?
        .iter()
        .map(|c| c.name_any())
        .collect();
    pools
        .patch(
            &env.pool,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"template": {"metadata": {"labels": {LABEL: "2"}}}}})),
        )
        .await?;
    env.cluster
        .wait_for(DEADLINE, "every NodeClaim marked Drifted", || async {
            let claims = env.node_claims().await?;
            let all = !claims.is_empty() && claims.iter().all(|c| claim_condition(c, "Drifted"));
            Ok::<_, anyhow::Error>(all.then_some(()))
        })
        .await?;
    // Marked, not acted on: the same claims, no node in disruption.
    let now: BTreeSet<String> = env
        .node_claims()
        .await?
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(now, old);
    assert!(!env.nodes().await?.iter().any(node_disrupting));
    Ok(())
}
