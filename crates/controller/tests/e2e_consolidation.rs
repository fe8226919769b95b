//! e2e: a Deployment of 50 pods scaled down to 5: the disruption loop removes the nodes left
//! empty and consolidates the underused ones, ending on fewer, cheaper nodes, while the
//! Deployment keeps its 5 pods (evicted pods are rescheduled on the way), and a pod that can
//! never be placed does not hold it up. The time from the scale-down to the consolidated fleet
//! is printed.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{Env, disruption_options, fleet, node_disrupting, pod_running};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const BEFORE: i32 = 50;
const AFTER: i32 = 5;
/// 5 pods of 700m fit on one 4-cpu node; allow one more for the order consolidation finds.
const PACKED: usize = 2;
const DEADLINE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_down_consolidates_to_a_cheaper_fleet() -> Result<()> {
    let Some(env) = Env::start_with(disruption_options(Duration::from_secs(2))).await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    // Nodes of at most 4 cpu: 50 pods of 700m need about ten of them, and the 5 pods left
    // after the scale-down are spread over several nodes (the ReplicaSet removes pods from
    // the fullest nodes first), so only consolidation, not emptiness, can pack them.
    env.limit_instance_cpu(5).await?;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments
        .create(
            &PostParams::default(),
            &env.deployment("shrink", BEFORE, "700m"),
        )
        .await?;
    env.wait_running("shrink", BEFORE as usize).await?;
    // A pod no node of the pool can ever take (1000 cpu) stays pending throughout: it must
    // not hold consolidation up.
    Api::<Pod>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &env.pod("impossible", "1000"))
        .await?;
    let (nodes_before, price_before) = fleet(env).await?;
    assert!(nodes_before > 1, "50 pods should need several nodes");
    println!("before: {nodes_before} nodes, {price_before:.4}/h");

    let started = Instant::now();
    deployments
        .patch(
            "shrink",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": AFTER}})),
        )
        .await?;
    let (nodes_after, price_after) = env
        .cluster
        .wait_for(
            DEADLINE,
            "a smaller, cheaper fleet with 5 ready pods and nothing in flight",
            || async {
                let (n, price) = fleet(env).await?;
                let nodes = env.nodes().await?;
                let settled =
                    !nodes.iter().any(node_disrupting) && env.node_claims().await?.len() == n;
                let d = deployments.get("shrink").await?;
                let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
                let pods = env.app_pods("shrink").await?;
                let all_running = pods.iter().all(pod_running);
                let done = n <= PACKED
                    && n < nodes_before
                    && price < price_before
                    && settled
                    && ready == AFTER
                    && pods.len() == AFTER as usize
                    && all_running;
                Ok::<_, anyhow::Error>(done.then_some((n, price)))
            },
        )
        .await?;
    println!(
        "after {:.1} s: {nodes_after} nodes, {price_after:.4}/h",
        started.elapsed().as_secs_f64()
    );
    assert!(nodes_after <= PACKED && price_after < price_before);
    Ok(())
}
