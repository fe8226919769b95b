//! e2e: a Deployment scaled to 0, then its NodeClaims deleted: every node is drained and
//! removed, and no Node, NodeClaim or kwok instance of the pool is left behind.

mod common;

use anyhow::Result;
use common::{Env, TIMEOUT};
use k8s_openapi::api::apps::v1::Deployment;
use karpenter_api::v1::NodeClaim;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_to_zero_then_delete_claims_leaves_nothing() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    // 3 cpu each: more than one node's worth, so several nodes are drained.
    deployments
        .create(&PostParams::default(), &env.deployment("down", 6, "3"))
        .await?;
    env.wait_running("down", 6).await?;
    let claims = env.node_claims().await?;
    assert!(!claims.is_empty());
    assert_eq!(env.nodes().await?.len(), claims.len());
    assert_eq!(env.instances().await?.len(), claims.len());

    deployments
        .patch(
            "down",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 0}})),
        )
        .await?;
    env.cluster
        .wait_for(TIMEOUT, "every pod of down gone", || async {
            Ok::<_, anyhow::Error>(env.app_pods("down").await?.is_empty().then_some(()))
        })
        .await?;

    let api: Api<NodeClaim> = Api::all(env.client.clone());
    for c in &claims {
        api.delete(&c.name_any(), &DeleteParams::background())
            .await?;
    }
    env.cluster
        .wait_for(
            TIMEOUT,
            "no Node, NodeClaim or kwok instance of the pool",
            || async {
                let left = env.node_claims().await?.len()
                    + env.nodes().await?.len()
                    + env.instances().await?.len();
                Ok::<_, anyhow::Error>((left == 0).then_some(()))
            },
        )
        .await?;
    // Nothing was provisioned again behind our back: no pods wanted capacity.
    assert!(env.node_claims().await?.is_empty());
    Ok(())
}
