//! e2e: a NodeClaim the provisioner created counts as capacity in flight at once, even when the
//! NodeClaim watch lags. The controller sees the cluster through a proxy that holds back every
//! NodeClaim watch event by [`LAG`]; its pending pod is looked at again while its NodeClaim is
//! still missing from the watch (the periodic resync runs every 10 s, and the test touches the
//! pod as well), and still exactly one NodeClaim is launched for it.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::{Env, TIMEOUT, pod_running, test_options};
use k8s_openapi::api::core::v1::Pod;
use karpenter_controller::metrics::ReasonPool;
use karpenter_testkit::proxy::Lag;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// Longer than the provisioner's resync interval (10 s) plus a batch window, so at least one
/// round runs between the create and its watch event.
const LAG: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_nodeclaim_watch_does_not_launch_twice() -> Result<()> {
    let lag = Lag {
        path_prefix: "/apis/karpenter.sh/v1/nodeclaims".into(),
        delay: LAG,
    };
    let Some(env) = Env::start_lagging(test_options(), lag).await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    pods.create(&PostParams::default(), &env.pod("solo", "1"))
        .await?;
    let first = env
        .cluster
        .wait_for(TIMEOUT, "a NodeClaim for the pod", || async {
            let claims = env.node_claims().await?;
            Ok::<_, anyhow::Error>(claims.first().map(|c| c.name_any()))
        })
        .await?;
    // A change to the pending pod wakes the provisioner at once (besides its resync), while
    // the controller's NodeClaim watch has not shown the claim yet.
    pods.patch(
        "solo",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await?;
    env.cluster
        .wait_for(TIMEOUT, "pod solo Running", || async {
            let p = pods.get("solo").await?;
            Ok::<_, kube::Error>(pod_running(&p).then_some(()))
        })
        .await?;

    let claims: Vec<String> = env
        .node_claims()
        .await?
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(claims, vec![first], "one launch for one pod");
    let created = env
        .controller
        .context
        .metrics
        .nodeclaims_created
        .get_or_create(&ReasonPool {
            reason: "provisioning".into(),
            nodepool: env.pool.clone(),
        })
        .get();
    assert_eq!(created, 1, "the provisioner created exactly one NodeClaim");
    Ok(())
}
