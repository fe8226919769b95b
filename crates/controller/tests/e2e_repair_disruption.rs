//! e2e: node repair as a disruption method (gate `NodeRepair`, no `--legacy-node-repair`:
//! upstream v1.15's default), on the simulated fault `KWOKUnhealthy=True` written as turned an
//! hour ago (past the kwok provider's 30 s toleration; see `common::repair`). The NodePool does
//! no emptiness or consolidation (`consolidateAfter: Never`), so only repair acts, and its
//! nodes hold at most 4 cpu, so each 3-cpu pod has a node of its own.
//!
//! - Budget: with `{nodes: "0", reasons: [Unhealthy]}` the unhealthy node `a` is kept while the
//!   loop plans round after round; with `"1"` a replacement is launched for its pod first
//!   (`karpenter_nodeclaims_created_total{reason="unhealthy"}`), then its NodeClaim is deleted
//!   and the pod runs on another node; the decision and disruption metrics count it with reason
//!   `unhealthy`.
//! - do-not-repair: node `b`, unhealthy and annotated `karpenter.sh/do-not-repair: "true"`,
//!   gets a `DisruptionBlocked` event naming the annotation and is kept round after round.
//! - The 20% cap: then `a`'s new node turns unhealthy too, 2 of the NodePool's 2 nodes
//!   (2 > ceil(20% × 2) = 1): `NodeRepairBlocked` on the NodePool, and it is kept.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::repair::{
    Since, claim_going, claim_of, node_of, repair_blocked_note, repaired, set_unhealthy,
};
use common::{Env, disruption_options, pod_running};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use karpenter_api::v1::NodePool;
use karpenter_controller::Options;
use karpenter_controller::metrics::{Decision, ReasonPool};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(180);
/// Planning rounds a kept node must outlast (the loop plans every second).
const ROUNDS: u64 = 5;

fn options() -> Options {
    Options {
        node_repair: true,
        ..disruption_options(Duration::from_secs(1))
    }
}

/// One test, the cases in turn: every controller manages every NodePool.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unhealthy_nodes_are_repaired_within_budget_unless_vetoed() -> Result<()> {
    let Some(env) = Env::start_with(options()).await? else {
        return Ok(());
    };
    let result = async {
        setup(&env).await?;
        within_budget(&env).await?;
        vetoed(&env).await?;
        capped(&env).await
    }
    .await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn set_repair_budget(env: &Env, nodes: &str) -> Result<()> {
    Api::<NodePool>::all(env.client.clone())
        .patch(
            &env.pool,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"disruption": {
                "consolidateAfter": "Never",
                "budgets": [{"nodes": nodes, "reasons": ["Unhealthy"]}],
            }}})),
        )
        .await?;
    Ok(())
}

async fn setup(env: &Env) -> Result<()> {
    set_repair_budget(env, "0").await?;
    env.limit_instance_cpu(5).await?;
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    for app in ["a", "b"] {
        deployments
            .create(&PostParams::default(), &env.deployment(app, 1, "3"))
            .await?;
    }
    env.wait_running("a", 1).await?;
    env.wait_running("b", 1).await?;
    Ok(())
}

/// Waits until the loop has planned `ROUNDS` more rounds.
async fn rounds_pass(env: &Env) -> Result<()> {
    let target = env.disruption_rounds() + ROUNDS;
    env.cluster
        .wait_for(DEADLINE, format!("{ROUNDS} disruption rounds"), || async {
            Ok::<_, anyhow::Error>((env.disruption_rounds() >= target).then_some(()))
        })
        .await?;
    Ok(())
}

fn unhealthy_pool(env: &Env) -> ReasonPool {
    ReasonPool {
        reason: "unhealthy".into(),
        nodepool: env.pool.clone(),
    }
}

async fn within_budget(env: &Env) -> Result<()> {
    let node = node_of(env, "a").await?;
    let claim = claim_of(env, &node).await?.name_any();
    let nodes_before: Vec<String> = env.nodes().await?.iter().map(|n| n.name_any()).collect();
    assert_eq!(nodes_before.len(), 2, "{nodes_before:?}");
    // 1 unhealthy of 2 nodes is within the 20% cap (ceil(0.4) = 1): only the budget holds it.
    set_unhealthy(env, &node, Since::HourAgo).await?;
    rounds_pass(env).await?;
    assert!(!claim_going(env, &claim).await?, "budget 0: kept");
    assert_eq!(repaired(env, "kwok_unhealthy"), 0);

    set_repair_budget(env, "1").await?;
    env.cluster
        .wait_for(DEADLINE, "pod a running on another node", || async {
            let going = claim_going(env, &claim).await?;
            let pods = env.app_pods("a").await?;
            let moved = pods.len() == 1
                && pods.iter().all(pod_running)
                && node_of(env, "a").await.ok().is_some_and(|n| n != node);
            Ok::<_, anyhow::Error>((going && moved).then_some(()))
        })
        .await?;
    let to = node_of(env, "a").await?;
    assert!(!nodes_before.contains(&to), "a new node, not b's: {to}");
    let m = &env.controller.context.metrics;
    // Replacement first: the command launched it (reason unhealthy), one.
    assert_eq!(
        m.nodeclaims_created
            .get_or_create(&unhealthy_pool(env))
            .get(),
        1
    );
    assert_eq!(
        m.nodeclaims_disrupted
            .get_or_create(&unhealthy_pool(env))
            .get(),
        1
    );
    let decisions = m
        .disruption_decisions
        .get_or_create(&Decision {
            decision: "replace".into(),
            reason: "unhealthy".into(),
            consolidation_type: String::new(),
        })
        .get();
    assert_eq!(decisions, 1);
    assert_eq!(repaired(env, "kwok_unhealthy"), 1);
    Ok(())
}

async fn vetoed(env: &Env) -> Result<()> {
    let node = node_of(env, "b").await?;
    let claim = claim_of(env, &node).await?.name_any();
    Api::<Node>::all(env.client.clone())
        .patch(
            &node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {
                "karpenter.sh/do-not-repair": "true"
            }}})),
        )
        .await?;
    set_unhealthy(env, &node, Since::HourAgo).await?;
    let events: Api<Event> = Api::all(env.client.clone());
    let note = env
        .cluster
        .wait_for(DEADLINE, "DisruptionBlocked on node b", || async {
            let list = events.list(&ListParams::default()).await?;
            let note = list.items.into_iter().find_map(|e| {
                let on_node = e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("Node") && r.name.as_deref() == Some(&node)
                });
                (e.reason.as_deref() == Some("DisruptionBlocked") && on_node)
                    .then(|| e.note.unwrap_or_default())
                    .filter(|n| n.contains("repair"))
            });
            Ok::<_, anyhow::Error>(note)
        })
        .await?;
    assert!(note.contains("karpenter.sh/do-not-repair"), "{note}");
    rounds_pass(env).await?;
    assert!(!claim_going(env, &claim).await?, "do-not-repair: kept");
    assert_eq!(repaired(env, "kwok_unhealthy"), 1, "only a's");
    Ok(())
}

async fn capped(env: &Env) -> Result<()> {
    let node = node_of(env, "a").await?;
    let claim = claim_of(env, &node).await?.name_any();
    // a's first node gone: the NodePool is a's new node and b.
    env.cluster
        .wait_for(DEADLINE, "2 nodes in the NodePool", || async {
            Ok::<_, anyhow::Error>((env.nodes().await?.len() == 2).then_some(()))
        })
        .await?;
    set_unhealthy(env, &node, Since::HourAgo).await?;
    let note = repair_blocked_note(env, DEADLINE).await?;
    assert!(note.contains("20%") && note.contains("(2 of 2)"), "{note}");
    rounds_pass(env).await?;
    assert!(!claim_going(env, &claim).await?, "over the cap: kept");
    assert_eq!(repaired(env, "kwok_unhealthy"), 1, "only the first");
    Ok(())
}
