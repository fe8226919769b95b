//! e2e: static NodePools (`spec.replicas`, gate `StaticCapacity`), one test in steps (every
//! controller manages every NodePool, so two tests at once in this binary would see each
//! other's nodes):
//!
//! 1. A static pool with replicas 3 gets 3 nodes, with no pod asking for them, and
//!    `status.nodes` 3.
//! 2. Its nodes are empty, yet not consolidated: an empty node of the dynamic pool is removed
//!    by the same disruption loop meanwhile (so the loop did run), the static ones stay.
//! 3. A deleted NodeClaim is replaced: 3 again, without the deleted one.
//! 4. A change of the template drifts its 3 nodes: each is replaced new-first, within the
//!    pool's budget (10% of 3 → 1 at a time): never fewer than 3 ready nodes, never more than
//!    4 NodeClaims.
//! 5. `kubectl scale nodepool NAME --replicas=5` gives 5; `--replicas=1` gives 1 (the scale
//!    subresource, so also `status.nodes`).
//! 6. Pending pods never make it grow: two pods of 600m select the static pool; its one node
//!    (the cheapest kwok type, `c-1x`: 900m allocatable) runs one, the other stays pending
//!    (karpenter reports it unschedulable) and the pool keeps 1 NodeClaim.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use common::{Env, POOL_LABEL, TIMEOUT, disruption_options, node_pool, node_ready, pod_running};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::v1::{NodeClaim, NodePool};
use karpenter_controller::Options;
use karpenter_testkit::unique_name;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

fn static_options() -> Options {
    Options {
        static_capacity: true,
        static_poll_period: Duration::from_secs(1),
        ..disruption_options(Duration::from_secs(1))
    }
}

/// The static pool: the e2e pool's template (its own [`POOL_LABEL`] value), `replicas`.
fn static_pool(name: &str, class: &str, replicas: i64) -> NodePool {
    let mut np = node_pool(name, class);
    np.spec.replicas = Some(replicas);
    np
}

/// The pool's NodeClaims: (not deleting, all).
async fn claims(env: &Env, pool: &str) -> Result<(Vec<NodeClaim>, usize)> {
    let all = Api::<NodeClaim>::all(env.client.clone())
        .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={pool}")))
        .await?
        .items;
    let n = all.len();
    let live = all
        .into_iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .collect();
    Ok((live, n))
}

async fn ready_nodes(env: &Env, pool: &str) -> Result<usize> {
    Ok(Api::<Node>::all(env.client.clone())
        .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={pool}")))
        .await?
        .items
        .iter()
        .filter(|n| node_ready(n) && n.metadata.deletion_timestamp.is_none())
        .count())
}

async fn status_nodes(env: &Env, pool: &str) -> Result<Option<i64>> {
    Ok(Api::<NodePool>::all(env.client.clone())
        .get(pool)
        .await?
        .status
        .and_then(|s| s.nodes))
}

/// Waits until the pool has exactly `n` NodeClaims (none deleting), `n` ready Nodes and
/// `status.nodes == n`; returns the NodeClaims' names.
async fn wait_size(env: &Env, pool: &str, n: usize) -> Result<BTreeSet<String>> {
    let names = env
        .cluster
        .wait_for(
            TIMEOUT,
            format!("static pool {pool} at {n} nodes"),
            || async {
                let (live, all) = claims(env, pool).await?;
                let ready = ready_nodes(env, pool).await?;
                let status = status_nodes(env, pool).await?;
                let done = live.len() == n && all == n && ready == n && status == Some(n as i64);
                Ok::<_, anyhow::Error>(done.then(|| live.iter().map(|c| c.name_any()).collect()))
            },
        )
        .await?;
    Ok(names)
}

fn kubectl_scale(env: &Env, pool: &str, replicas: u32) -> Result<()> {
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env.cluster.kubeconfig_path())
        .args(["scale", "nodepool", pool, &format!("--replicas={replicas}")])
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl scale failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn static_pools_keep_their_replicas() -> Result<()> {
    let Some(env) = Env::start_with(static_options()).await? else {
        return Ok(());
    };
    let pool = unique_name("e2e-static");
    let result = steps(&env, &pool).await;
    let cleaned = cleanup_static(&env, &pool).await;
    let cleaned = cleaned.and(env.cleanup().await);
    result.and(cleaned)
}

async fn steps(env: &Env, pool: &str) -> Result<()> {
    let pools: Api<NodePool> = Api::all(env.client.clone());
    pools
        .create(&PostParams::default(), &static_pool(pool, &env.class, 3))
        .await?;
    // 1. Three nodes, no pods.
    let first = wait_size(env, pool, 3).await?;

    // 2. An empty dynamic node goes; the empty static ones stay.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    pods.create(&PostParams::default(), &env.pod("dyn", "500m"))
        .await?;
    env.wait_running("dyn", 1).await?;
    pods.delete("dyn", &DeleteParams::default()).await?;
    env.cluster
        .wait_for(TIMEOUT, "the empty dynamic node to be removed", || async {
            let left = env.node_claims().await?.len();
            Ok::<_, anyhow::Error>((left == 0).then_some(()))
        })
        .await?;
    let (live, all) = claims(env, pool).await?;
    let names: BTreeSet<String> = live.iter().map(|c| c.name_any()).collect();
    assert_eq!(
        (names, all),
        (first.clone(), 3),
        "the static nodes were not touched"
    );

    // 3. A deleted NodeClaim is replaced.
    let victim = first.iter().next().cloned().context("a NodeClaim")?;
    Api::<NodeClaim>::all(env.client.clone())
        .delete(&victim, &DeleteParams::default())
        .await?;
    let replaced = wait_size(env, pool, 3).await?;
    assert!(!replaced.contains(&victim), "{victim} was replaced");
    assert_eq!(replaced.intersection(&first).count(), 2);

    // 4. A template change drifts all three: replaced one at a time (budget 10% of 3 → 1),
    //    each new node up before its old one goes.
    drifted(env, pool, &replaced).await?;

    // 5. The scale subresource, through kubectl.
    kubectl_scale(env, pool, 5)?;
    wait_size(env, pool, 5).await?;
    kubectl_scale(env, pool, 1)?;
    wait_size(env, pool, 1).await?;

    // 6. Pending pods do not grow it.
    let spec = karpenter_testkit::workloads::pod_spec("600m", POOL_LABEL, pool);
    for name in ["over-0", "over-1"] {
        let mut p = env.pod(name, "600m");
        p.spec = Some(spec.clone());
        pods.create(&PostParams::default(), &p).await?;
    }
    let events: Api<Event> = Api::namespaced(env.client.clone(), env.ns());
    let pending = env
        .cluster
        .wait_for(
            TIMEOUT,
            "one pod running on the static node, karpenter telling the other it cannot be served",
            || async {
                let list = pods.list(&ListParams::default()).await?.items;
                let over: Vec<&Pod> = list
                    .iter()
                    .filter(|p| p.name_any().starts_with("over-"))
                    .collect();
                let running = over.iter().filter(|p| pod_running(p)).count();
                let Some(waiting) = over.iter().find(|p| !pod_running(p)) else {
                    return Ok::<_, anyhow::Error>(None);
                };
                let told = events
                    .list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .any(|e| {
                        e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(waiting.name_any().as_str())
                            && e.reporting_controller.as_deref() == Some("karpenter")
                            && e.reason.as_deref() == Some("FailedScheduling")
                    });
                Ok((running == 1 && told).then(|| waiting.name_any()))
            },
        )
        .await?;
    // The static loop looks every second: over the next seconds it must keep to one.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < until {
        let (live, all) = claims(env, pool).await?;
        assert_eq!(
            (live.len(), all),
            (1, 1),
            "pending pod {pending} grew the pool"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Step 4: drifts the pool's nodes `old` by a new template label and waits until all are
/// replaced, checking on every look that the replacement is new-first and within budget.
async fn drifted(env: &Env, pool: &str, old: &BTreeSet<String>) -> Result<()> {
    let patch =
        json!({"spec": {"template": {"metadata": {"labels": {"e2e.example.com/version": "2"}}}}});
    Api::<NodePool>::all(env.client.clone())
        .patch(pool, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    // A look that breaks the rule is kept (an error in the check would only be retried).
    let broken = std::sync::Mutex::new(None::<String>);
    env.cluster
        .wait_for(
            TIMEOUT,
            "the drifted static nodes to be replaced",
            || async {
                let (live, all) = claims(env, pool).await?;
                let ready = ready_nodes(env, pool).await?;
                if all > 4 || ready < 3 {
                    let seen = format!("{all} NodeClaims and {ready} ready nodes while replacing");
                    broken
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(seen);
                }
                let fresh = live.iter().filter(|c| !old.contains(&c.name_any())).count();
                let relabelled = live.iter().all(|c| {
                    c.labels()
                        .get("e2e.example.com/version")
                        .map(String::as_str)
                        == Some("2")
                });
                Ok::<_, anyhow::Error>((fresh == 3 && all == 3 && relabelled).then_some(()))
            },
        )
        .await?;
    if let Some(seen) = broken.into_inner().unwrap_or_else(|e| e.into_inner()) {
        bail!("drift replacement was not new-first within budget: {seen}");
    }
    wait_size(env, pool, 3).await?;
    Ok(())
}

/// Deletes the static pool (its loop stops at once), then its NodeClaims, and waits for them.
async fn cleanup_static(env: &Env, pool: &str) -> Result<()> {
    let _ = Api::<NodePool>::all(env.client.clone())
        .delete(pool, &DeleteParams::background())
        .await;
    let api: Api<NodeClaim> = Api::all(env.client.clone());
    for c in claims(env, pool).await?.0 {
        let _ = api.delete(&c.name_any(), &DeleteParams::background()).await;
    }
    env.cluster
        .wait_for(
            TIMEOUT,
            "the static pool's NodeClaims to be gone",
            || async {
                let (_, all) = claims(env, pool).await?;
                Ok::<_, anyhow::Error>((all == 0).then_some(()))
            },
        )
        .await?;
    Ok(())
}
