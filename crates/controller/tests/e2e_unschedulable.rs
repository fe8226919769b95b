//! e2e: a pod no NodePool can serve (1000 cpu) gets a `FailedScheduling` event from karpenter
//! naming the reason, and the controller keeps serving other pods.

mod common;

use anyhow::Result;
use common::{Env, TIMEOUT, pod_running};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unservable_pod_gets_an_event_and_others_still_run() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    pods.create(&PostParams::default(), &env.pod("huge", "1000"))
        .await?;
    let events: Api<Event> = Api::namespaced(env.client.clone(), env.ns());
    let note = env
        .cluster
        .wait_for(
            TIMEOUT,
            "a karpenter FailedScheduling event on pod huge",
            || async {
                let list = events.list(&ListParams::default()).await?;
                Ok::<_, kube::Error>(list.items.into_iter().find_map(|e| {
                    let about_huge =
                        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("huge");
                    let ours = e.reporting_controller.as_deref() == Some("karpenter");
                    (about_huge && ours && e.reason.as_deref() == Some("FailedScheduling"))
                        .then(|| e.note.unwrap_or_default())
                }))
            },
        )
        .await?;
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
