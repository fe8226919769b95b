//! e2e: `consolidationPolicy: Balanced` declines a consolidation that saves too little for the
//! pods it moves, and the same cluster under `WhenEmptyOrUnderutilized` takes it.
//!
//! The pool is limited to nodes of at most 4 cpu. One pod of 3500m and 7 pods of 500m land on
//! two 4-cpu nodes: `X` with the big pod (400m left: no small pod fits) and `Y` with the 7 small
//! ones. Scaled down to 3, `Y` keeps 3 pods (1500m) and would fit on a 2-cpu node. kwok prices
//! are linear in the cpu count within a family (0.025/vCPU + 0.001/GB, memory proportional to
//! cpu), so the 2-cpu node costs half of `Y`: the move saves 1/4 of the pool's cost. It moves
//! 3 pods: `Y`'s disruption cost is 1 + 3 = 4 of the pool's 4 + (1 + 1) = 6, i.e. 2/3. Score
//! (1/4) / (2/3) = 0.375 < 0.5: Balanced declines; WhenEmptyOrUnderutilized replaces `Y`.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::{Env, disruption_options, fleet, node_disrupting, pod_running};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use karpenter_api::v1::NodePool;
use karpenter_controller::metrics::Move;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(180);
/// How many disruption rounds Balanced must leave the fleet alone after every pod is running:
/// a command planned in any of the first 10 would be past its 2 s validation pause (1 s poll)
/// and visible before the last.
const QUIET_ROUNDS: u64 = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balanced_declines_what_when_empty_or_underutilized_takes() -> Result<()> {
    // The start shape (two 4-cpu nodes) needs the big pod and the Deployment's pods in one
    // provisioning batch; the ReplicaSet's pods can come more than the default 1 s idle window
    // after the big pod on a loaded machine (a third node was launched once in CI).
    let options = karpenter_controller::Options {
        batch_idle: Duration::from_secs(3),
        ..disruption_options(Duration::from_secs(2))
    };
    let Some(env) = Env::start_with(options).await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

fn cpus(n: &Node) -> Option<&str> {
    n.metadata
        .labels
        .as_ref()?
        .get("karpenter.kwok.sh/instance-cpu")
        .map(String::as_str)
}

async fn set_policy(env: &Env, policy: &str) -> Result<()> {
    Api::<NodePool>::all(env.client.clone())
        .patch(
            &env.pool,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"disruption": {"consolidationPolicy": policy}}})),
        )
        .await?;
    Ok(())
}

async fn body(env: &Env) -> Result<()> {
    env.limit_instance_cpu(5).await?;
    set_policy(env, "Balanced").await?;
    Api::<Pod>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &env.pod("big", "3500m"))
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments
        .create(&PostParams::default(), &env.deployment("small", 7, "500m"))
        .await?;
    env.wait_running("big", 1).await?;
    env.wait_running("small", 7).await?;
    let nodes = env.nodes().await?;
    let shapes: Vec<Option<&str>> = nodes.iter().map(cpus).collect();
    assert_eq!(shapes, [Some("4"), Some("4")], "two 4-cpu nodes to start");

    deployments
        .patch(
            "small",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 3}})),
        )
        .await?;
    env.wait_running("small", 3).await?;
    let (n_before, price_before) = fleet(env).await?;

    // Balanced: the fleet stays as it is through QUIET_ROUNDS planning rounds.
    let first_round = env.disruption_rounds();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let nodes = env.nodes().await?;
        if nodes.len() != n_before || nodes.iter().any(node_disrupting) {
            bail!(
                "Balanced disrupted a node: {:?}",
                nodes
                    .iter()
                    .map(|n| (n.metadata.name.clone(), node_disrupting(n)))
                    .collect::<Vec<_>>()
            );
        }
        if env.node_claims().await?.len() != n_before {
            bail!("Balanced launched a replacement");
        }
        let rounds = env.disruption_rounds() - first_round;
        if rounds >= QUIET_ROUNDS {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {rounds} disruption rounds ran in {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The declined move was counted and scored at (1/4) / (2/3) = 0.375 (every observation is
    // that one move: nothing else can be consolidated here).
    let rejected = moves(env, "rejected", "Balanced");
    assert!(
        rejected.is_some_and(|n| n >= 1),
        "rejections counted: {rejected:?}"
    );
    let (count, sum) = scores(env, "rejected", "Balanced");
    assert!(count >= 1, "a rejected score observed");
    assert!(
        (sum / count as f64 - 0.375).abs() < 1e-9,
        "mean score {}",
        sum / count as f64
    );
    assert_eq!(scores(env, "approved", "Balanced").0, 0);

    // The same cluster under WhenEmptyOrUnderutilized: Y is replaced by a 2-cpu node.
    set_policy(env, "WhenEmptyOrUnderutilized").await?;
    let price_after = env
        .cluster
        .wait_for(DEADLINE, "Y replaced by a 2-cpu node", || async {
            let nodes = env.nodes().await?;
            let mut shapes: Vec<Option<&str>> = nodes.iter().map(cpus).collect();
            shapes.sort();
            let settled =
                !nodes.iter().any(node_disrupting) && env.node_claims().await?.len() == nodes.len();
            let pods = env.app_pods("small").await?;
            let running = pods.len() == 3 && pods.iter().all(pod_running);
            let (_, price) = fleet(env).await?;
            let done = shapes == [Some("2"), Some("4")] && settled && running;
            Ok::<_, anyhow::Error>(done.then_some(price))
        })
        .await?;
    assert!(price_after < price_before, "{price_after} < {price_before}");
    // Counted as an approved move of a policy that is not scored.
    let approved = moves(env, "approved", "WhenEmptyOrUnderutilized");
    assert!(
        approved.is_some_and(|n| n >= 1),
        "approval counted: {approved:?}"
    );
    assert_eq!(scores(env, "approved", "WhenEmptyOrUnderutilized").0, 0);
    Ok(())
}

fn move_labels(env: &Env, decision: &str, policy: &str) -> Move {
    Move {
        decision: decision.into(),
        nodepool: env.pool.clone(),
        policy: policy.into(),
    }
}

/// `karpenter_consolidation_moves_total` for the test's pool (`None`: never counted).
fn moves(env: &Env, decision: &str, policy: &str) -> Option<u64> {
    let m = &env.controller.context.metrics;
    m.consolidation_moves
        .get(&move_labels(env, decision, policy))
        .map(|c| c.get())
}

/// `karpenter_consolidation_score`'s count and sum for the test's pool.
fn scores(env: &Env, decision: &str, policy: &str) -> (u64, f64) {
    let m = &env.controller.context.metrics;
    m.consolidation_score
        .get(&move_labels(env, decision, policy))
        .map_or((0, 0.0), |h| (h.count(), h.sum()))
}
