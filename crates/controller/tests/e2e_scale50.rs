//! e2e: a Deployment scaled to 50 pods goes from Pending to all Running on new kwok nodes, and
//! the nodes (how many, which instance types) are what the solver predicts for the same pods,
//! NodePool and catalog: what `karpenter simulate` would print. The time from creating the
//! Deployment to all pods Running is printed (not asserted: it depends on the machine).

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, Result};
use common::Env;
use k8s_openapi::api::apps::v1::Deployment;
use karpenter_api::labels::INSTANCE_TYPE_LABEL;
use karpenter_api::solver_input::{self as input, NamespaceIndex, PodContext};
use karpenter_api::v1::NodePool;
use karpenter_controller::provisioning::solve_options;
use karpenter_solver::{Problem, solve};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const REPLICAS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_pods_run_on_the_predicted_nodes() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    let started = Instant::now();
    Api::<Deployment>::namespaced(env.client.clone(), env.ns())
        .create(
            &PostParams::default(),
            &env.deployment("fifty", REPLICAS as i32, "700m"),
        )
        .await?;
    env.wait_running("fifty", REPLICAS).await?;
    let elapsed = started.elapsed();
    let nodes = env.nodes().await?;
    println!(
        "{REPLICAS} pods Pending -> all Running in {:.1} s on {} kwok nodes",
        elapsed.as_secs_f64(),
        nodes.len()
    );

    // The prediction: the same pods, all pending, on this NodePool with the kwok catalog and
    // no existing nodes, solved the way the provisioner solves.
    let namespaces = NamespaceIndex::new();
    let ctx = PodContext {
        namespaces: &namespaces,
    };
    let mut pods = Vec::new();
    for mut p in env.app_pods("fifty").await? {
        if let Some(s) = p.spec.as_mut() {
            s.node_name = None;
        }
        pods.push(input::pod_view(&p, &ctx, &mut Vec::new())?);
    }
    let pool = Api::<NodePool>::all(env.client.clone())
        .get(&env.pool)
        .await?;
    let problem = Problem {
        instance_types: karpenter_providers::kwok::catalog(),
        node_pools: vec![input::node_pool_view(
            &pool,
            Default::default(),
            &mut Vec::new(),
        )?],
        pods,
        ..Problem::default()
    };
    let plan = solve(&problem, &solve_options())?;
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);

    let mut predicted: BTreeMap<String, usize> = BTreeMap::new();
    for c in &plan.node_claims {
        *predicted.entry(c.instance_type.clone()).or_default() += 1;
    }
    let mut actual: BTreeMap<String, usize> = BTreeMap::new();
    for n in &nodes {
        let it = n
            .labels()
            .get(INSTANCE_TYPE_LABEL)
            .with_context(|| format!("node {} has no instance type", n.name_any()))?;
        *actual.entry(it.clone()).or_default() += 1;
    }
    println!("instance types: predicted {predicted:?}, launched {actual:?}");
    assert_eq!(
        actual, predicted,
        "launched nodes differ from the solver's plan"
    );
    Ok(())
}
