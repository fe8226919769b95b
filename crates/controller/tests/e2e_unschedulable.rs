//! e2e: a pod no NodePool can serve (1000 cpu) gets a `FailedScheduling` event from karpenter
//! naming the reason, the controller keeps serving other pods, and disruption does not wait for
//! it (it waits only for pending pods the provisioner may still place).

mod common;

use std::time::Duration;

use anyhow::{Context as _, Result};
use common::{Env, TIMEOUT, disruption_options, pod_running};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

/// Each test's controller acts on the whole cluster (both would provision the other's pods, and
/// the one with disruption on could act on the other's nodes): one test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unservable_pod_gets_an_event_and_others_still_run() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// Waits for karpenter's `FailedScheduling` event on pod `name` and returns its note.
async fn failed_scheduling_note(env: &Env, name: &str) -> Result<String> {
    let events: Api<Event> = Api::namespaced(env.client.clone(), env.ns());
    let note = env
        .cluster
        .wait_for(
            TIMEOUT,
            &format!("a karpenter FailedScheduling event on pod {name}"),
            || async {
                let list = events.list(&ListParams::default()).await?;
                Ok::<_, kube::Error>(list.items.into_iter().find_map(|e| {
                    let about = e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
                    let ours = e.reporting_controller.as_deref() == Some("karpenter");
                    (about && ours && e.reason.as_deref() == Some("FailedScheduling"))
                        .then(|| e.note.unwrap_or_default())
                }))
            },
        )
        .await?;
    Ok(note)
}

async fn body(env: &Env) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    pods.create(&PostParams::default(), &env.pod("huge", "1000"))
        .await?;
    let note = failed_scheduling_note(env, "huge").await?;
    assert!(
        note.contains("cpu"),
        "the reason names the resource: {note}"
    );

    // The controller goes on: a servable pod created afterwards runs.
    pods.create(&PostParams::default(), &env.pod("small", "500m"))
        .await?;
    env.cluster
        .wait_for(TIMEOUT, "pod small Running", || async {
            let p = pods.get("small").await?;
            Ok::<_, kube::Error>(pod_running(&p).then_some(()))
        })
        .await?;
    let huge = pods.get("huge").await?;
    assert!(
        huge.spec.and_then(|s| s.node_name).is_none(),
        "nothing can hold 1000 cpu"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unservable_pod_does_not_hold_up_disruption() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(env) = Env::start_with(disruption_options(Duration::from_secs(1))).await? else {
        return Ok(());
    };
    let result = emptiness_goes_on(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// A node emptied while an unservable pod is pending is still removed (the NodePool's default
/// disruption: `WhenEmptyOrUnderutilized`, `consolidateAfter: 0s`).
async fn emptiness_goes_on(env: &Env) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    pods.create(&PostParams::default(), &env.pod("huge", "1000"))
        .await?;
    failed_scheduling_note(env, "huge").await?;
    pods.create(&PostParams::default(), &env.pod("small", "500m"))
        .await?;
    let node = env
        .cluster
        .wait_for(TIMEOUT, "pod small Running", || async {
            let p = pods.get("small").await?;
            Ok::<_, kube::Error>(
                pod_running(&p)
                    .then(|| p.spec.and_then(|s| s.node_name))
                    .flatten(),
            )
        })
        .await?;
    pods.delete("small", &DeleteParams::default()).await?;
    let nodes: Api<Node> = Api::all(env.client.clone());
    env.cluster
        .wait_for(TIMEOUT, "the emptied node removed", || async {
            Ok::<_, kube::Error>(nodes.get_opt(&node).await?.is_none().then_some(()))
        })
        .await
        .with_context(|| format!("node {node} stayed while pod huge was pending"))?;
    let huge = pods.get("huge").await?;
    assert!(
        huge.spec.and_then(|s| s.node_name).is_none(),
        "still pending: nothing can hold 1000 cpu"
    );
    Ok(())
}
