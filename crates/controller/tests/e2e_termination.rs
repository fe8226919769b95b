//! e2e: deleting a NodeClaim drains its Node (the pod is evicted), deletes the Node, and
//! removes the finalizers of both.

mod common;

use anyhow::Result;
use common::{Env, TIMEOUT, pod_running};
use k8s_openapi::api::core::v1::{Node, Pod};
use karpenter_api::v1::NodeClaim;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_nodeclaim_drains_and_removes_its_node() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    pods.create(&PostParams::default(), &env.pod("app", "1"))
        .await?;
    let node_name = env
        .cluster
        .wait_for(TIMEOUT, "pod app Running", || async {
            let p = pods.get("app").await?;
            Ok::<_, kube::Error>(
                pod_running(&p)
                    .then(|| p.spec.and_then(|s| s.node_name))
                    .flatten(),
            )
        })
        .await?;
    let claims = env.node_claims().await?;
    let claim = claims
        .iter()
        .find(|c| {
            c.status.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name.as_str())
        })
        .ok_or_else(|| anyhow::anyhow!("no NodeClaim for node {node_name}"))?;
    let claim_name = claim.name_any();

    Api::<NodeClaim>::all(env.client.clone())
        .delete(&claim_name, &DeleteParams::background())
        .await?;

    let nodes: Api<Node> = Api::all(env.client.clone());
    let claims_api: Api<NodeClaim> = Api::all(env.client.clone());
    env.cluster
        .wait_for(TIMEOUT, "node and nodeclaim gone", || async {
            let node = nodes.get_opt(&node_name).await?;
            let claim = claims_api.get_opt(&claim_name).await?;
            Ok::<_, kube::Error>((node.is_none() && claim.is_none()).then_some(()))
        })
        .await?;
    // The bare pod was evicted with its node (no controller recreates it).
    env.cluster
        .wait_for(TIMEOUT, "pod app gone", || async {
            let p = pods.get_opt("app").await?;
            Ok::<_, kube::Error>(p.is_none().then_some(()))
        })
        .await?;
    Ok(())
}
