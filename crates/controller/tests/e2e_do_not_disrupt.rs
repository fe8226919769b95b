//! e2e: a pod annotated `karpenter.sh/do-not-disrupt: "true"` protects its node. Two nodes
//! are left underused; the unprotected one is removed, the protected one stays (the planner
//! reports it blocked) with its pod untouched; once the annotation is removed, consolidation
//! takes that node too. Uses upstream's 15 s validation period.

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result};
use common::{Env, disruption_options, node_disrupting, pod_running};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_do_not_disrupt_pod_protects_its_node() -> Result<()> {
    let Some(env) = Env::start_with(disruption_options(Duration::from_secs(15))).await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn node_of(env: &Env, app: &str) -> Result<String> {
    env.app_pods(app)
        .await?
        .into_iter()
        .find_map(|p| p.spec.and_then(|s| s.node_name))
        .with_context(|| format!("no pod of {app} is bound"))
}

async fn body(env: &Env) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    // Node A: a big pod, then the protected small one next to it.
    deployments
        .create(&PostParams::default(), &env.deployment("big-a", 1, "3"))
        .await?;
    env.wait_running("big-a", 1).await?;
    let a = node_of(env, "big-a").await?;
    let mut keep = env.pod("keep", "100m");
    keep.metadata.annotations = Some(
        [(
            "karpenter.sh/do-not-disrupt".to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    pods.create(&PostParams::default(), &keep).await?;
    env.wait_running("keep", 1).await?;
    assert_eq!(node_of(env, "keep").await?, a, "the only node with room");
    let keep_uid = pods.get("keep").await?.uid();
    // Node B: another big pod that does not fit on A, and a small unprotected pod.
    deployments
        .create(&PostParams::default(), &env.deployment("big-b", 1, "3"))
        .await?;
    env.wait_running("big-b", 1).await?;
    let b = node_of(env, "big-b").await?;
    assert_ne!(a, b);
    deployments
        .create(&PostParams::default(), &env.deployment("free", 1, "100m"))
        .await?;
    env.wait_running("free", 1).await?;

    // Both nodes are now far too big for what stays on them.
    for d in ["big-a", "big-b"] {
        deployments.delete(d, &DeleteParams::background()).await?;
    }
    env.cluster
        .wait_for(
            DEADLINE,
            "node B removed, the free pod running again",
            || async {
                let names: Vec<String> = env.nodes().await?.iter().map(|n| n.name_any()).collect();
                let free = env.app_pods("free").await?;
                let done = !names.contains(&b) && free.len() == 1 && free.iter().all(pod_running);
                Ok::<_, anyhow::Error>(done.then_some(()))
            },
        )
        .await?;
    let events: Api<Event> = Api::all(env.client.clone());
    let blocked = env
        .cluster
        .wait_for(
            DEADLINE,
            "node A reported blocked from disruption",
            || async {
                let list = events.list(&ListParams::default()).await?;
                let note = list.items.into_iter().find_map(|e| {
                    (e.reason.as_deref() == Some("DisruptionBlocked")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(a.as_str()))
                    .then(|| e.note.unwrap_or_default())
                });
                Ok::<_, anyhow::Error>(note)
            },
        )
        .await?;
    println!("node {a} blocked: {blocked}");
    assert!(blocked.contains("do-not-disrupt"), "{blocked}");
    let node_a = env
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.name_any() == a)
        .context("the protected node is gone")?;
    assert!(!node_disrupting(&node_a));
    let kept = pods.get("keep").await?;
    assert_eq!(kept.uid(), keep_uid);
    assert!(pod_running(&kept));

    // Without the annotation the same node is consolidated.
    pods.patch(
        "keep",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": null}}})),
    )
    .await?;
    env.cluster
        .wait_for(DEADLINE, "node A consolidated once unprotected", || async {
            let names: Vec<String> = env.nodes().await?.iter().map(|n| n.name_any()).collect();
            Ok::<_, anyhow::Error>((!names.contains(&a)).then_some(()))
        })
        .await?;
    Ok(())
}
