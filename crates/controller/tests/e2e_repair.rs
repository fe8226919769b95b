//! e2e: the legacy node repair loop (gate `NodeRepair` with `--legacy-node-repair`; repair as
//! a disruption method is `e2e_repair_disruption`), on the simulated fault `KWOKUnhealthy=True`
//! (see `common::repair`). The condition is written with a `lastTransitionTime` an
//! hour ago, so the toleration is already over and no test waits for it.
//!
//! - One unhealthy Node of one (1 ≤ ceil(20% × 1) = 1): its NodeClaim is deleted, and its pod
//!   runs again on a new Node.
//! - Then two unhealthy Nodes of three (2 > ceil(20% × 3) = 1): neither is repaired and
//!   `NodeRepairBlocked` is published on the NodePool; once one recovers (1 of 3), the other is
//!   repaired.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::repair::{
    Since, claim_going, claim_of, node_of, repair_blocked_note, repaired, set_healthy,
    set_unhealthy,
};
use common::{Env, pod_running, test_options};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use karpenter_controller::Options;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const DEADLINE: Duration = Duration::from_secs(120);

fn repair_options() -> Options {
    Options {
        node_repair: true,
        legacy_node_repair: true,
        repair_poll_period: Duration::from_secs(1),
        // Short, so the blocked Node is looked at again soon after the other recovers.
        repair_blocked_retry: Duration::from_secs(2),
        ..test_options()
    }
}

/// One test, the two cases in turn: every controller manages every NodePool, so two tests
/// running at once in this binary would repair each other's nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unhealthy_nodes_are_replaced_unless_too_many() -> Result<()> {
    let Some(env) = Env::start_with(repair_options()).await? else {
        return Ok(());
    };
    let result = async {
        replaced(&env).await?;
        blocked(&env).await
    }
    .await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn replaced(env: &Env) -> Result<()> {
    // A Deployment, so the pod comes back after its node is drained.
    Api::<Deployment>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &env.deployment("one", 1, "500m"))
        .await?;
    env.wait_running("one", 1).await?;
    let node = node_of(env, "one").await?;
    let claim = claim_of(env, &node).await?.name_any();
    set_unhealthy(env, &node, Since::HourAgo).await?;
    env.cluster
        .wait_for(DEADLINE, "the pod running on a new node", || async {
            let going = claim_going(env, &claim).await?;
            let pods = env.app_pods("one").await?;
            let moved = pods.len() == 1
                && pods.iter().all(pod_running)
                && node_of(env, "one").await.ok().is_some_and(|n| n != node);
            Ok::<_, anyhow::Error>((going && moved).then_some(()))
        })
        .await?;
    assert_eq!(repaired(env, "kwok_unhealthy"), 1);
    Ok(())
}

/// After [`replaced`]: the pool has one healthy node (the replacement), and gets two more.
async fn blocked(env: &Env) -> Result<()> {
    // Nodes of at most 4 cpu: two pods of 3 cpu need two new ones.
    env.limit_instance_cpu(5).await?;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    for app in ["a", "b"] {
        pods.create(&PostParams::default(), &env.pod(app, "3"))
            .await?;
    }
    env.wait_running("a", 1).await?;
    env.wait_running("b", 1).await?;
    let (node_a, node_b) = (node_of(env, "a").await?, node_of(env, "b").await?);
    assert_ne!(node_a, node_b);
    let (claim_a, claim_b) = (
        claim_of(env, &node_a).await?.name_any(),
        claim_of(env, &node_b).await?.name_any(),
    );
    // b first, and only just: it counts as unhealthy but is not due for 30 s, so no pass can
    // see a due while b still looks healthy (that would be 1 of 2, and a would be repaired).
    set_unhealthy(env, &node_b, Since::Now).await?;
    set_unhealthy(env, &node_a, Since::HourAgo).await?;

    let note = repair_blocked_note(env, DEADLINE).await?;
    assert!(note.contains("20%"), "{note}");
    // Blocked means not repaired: both NodeClaims are still there, and nothing was counted.
    assert!(!claim_going(env, &claim_a).await?);
    assert!(!claim_going(env, &claim_b).await?);
    assert_eq!(repaired(env, "kwok_unhealthy"), 1, "only the first case's");

    // b recovers: 1 unhealthy of 3 is within 20% (rounded up), so a is repaired.
    set_healthy(env, &node_b).await?;
    env.cluster
        .wait_for(DEADLINE, "node a repaired", || async {
            Ok::<_, anyhow::Error>(claim_going(env, &claim_a).await?.then_some(()))
        })
        .await?;
    assert!(!claim_going(env, &claim_b).await?, "b recovered: kept");
    assert_eq!(repaired(env, "kwok_unhealthy"), 2);
    Ok(())
}
