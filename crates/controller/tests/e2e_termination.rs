//! e2e: deleting a NodeClaim drains its Node, deletes the Node, and removes the finalizers of
//! both. The pod leaves by eviction, not by some other deletion: a watch on it, started before
//! the NodeClaim is deleted, sees the API server's `DisruptionTarget` condition with reason
//! `EvictionByEvictionAPI` (set only by the Eviction API), and the controller counts an
//! accepted eviction request.

mod common;

use anyhow::Result;
use common::{Env, TIMEOUT};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use karpenter_api::v1::NodeClaim;
use karpenter_controller::metrics::Code;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio::sync::watch;

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
    let node_name = env.running_on("app").await?;
    let claim_name = common::repair::claim_of(env, &node_name).await?.name_any();

    let (evicted_tx, evicted) = watch::channel(None::<bool>);
    let watching = tokio::spawn(watch_for_eviction(pods.clone(), evicted_tx));
    let mut seen = evicted.clone();
    tokio::time::timeout(TIMEOUT, seen.wait_for(Option::is_some))
        .await
        .map_err(|_| anyhow::anyhow!("the pod watch never started"))??;

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
    watching.abort();
    assert_eq!(
        *evicted.borrow(),
        Some(true),
        "the pod carried the Eviction API's DisruptionTarget condition"
    );
    let accepted = env
        .controller
        .context
        .metrics
        .eviction_requests
        .get_or_create(&Code { code: "200".into() })
        .get();
    assert!(accepted >= 1, "no accepted eviction request was counted");
    Ok(())
}

/// Follows pod `app`: `Some(false)` once the watch runs, `Some(true)` once a version of the pod
/// carries `DisruptionTarget` with reason `EvictionByEvictionAPI`.
async fn watch_for_eviction(pods: Api<Pod>, evicted: watch::Sender<Option<bool>>) {
    let mut stream = std::pin::pin!(watcher::watch_object(pods, "app"));
    while let Some(item) = stream.next().await {
        let by_eviction = item.ok().flatten().is_some_and(|p| {
            p.status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| {
                    c.type_ == "DisruptionTarget"
                        && c.status == "True"
                        && c.reason.as_deref() == Some("EvictionByEvictionAPI")
                })
        });
        evicted.send_if_modified(|e| {
            let next = Some(e.unwrap_or(false) || by_eviction);
            std::mem::replace(e, next) != next
        });
    }
}
