//! e2e: the controller is stopped in the middle of a scale-up (its tasks aborted as a crash
//! would, between or during NodeClaim creation and launch) and a new one is started. The
//! result is exactly the nodes needed: one per pod (required hostname anti-affinity makes the
//! count exact), no duplicate NodeClaims for the same pods, no Node or instance without a
//! NodeClaim, no NodeClaim without a Node.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, Result};
use common::{Env, TIMEOUT, start_controller, test_options};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Affinity, PodAffinityTerm, PodAntiAffinity};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use karpenter_api::labels::HOSTNAME_LABEL;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const REPLICAS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_mid_scale_up_ends_with_exactly_the_nodes_needed() -> Result<()> {
    let Some(mut env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&mut env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &mut Env) -> Result<()> {
    let mut deployment = env.deployment("restart", REPLICAS as i32, "500m");
    let spec = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .context("template spec")?;
    spec.affinity = Some(Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "app".to_string(),
                        "restart".to_string(),
                    )])),
                    ..LabelSelector::default()
                }),
                topology_key: HOSTNAME_LABEL.into(),
                ..PodAffinityTerm::default()
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    });
    Api::<Deployment>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &deployment)
        .await?;

    // Crash as soon as the first NodeClaim exists: creation and launches are in flight.
    let first = env
        .cluster
        .wait_for(TIMEOUT, "a first NodeClaim", || async {
            let n = env.node_claims().await?.len();
            Ok::<_, anyhow::Error>((n > 0).then_some(n))
        })
        .await?;
    env.controller.stop();
    let running = env
        .app_pods("restart")
        .await?
        .iter()
        .filter(|p| common::pod_running(p))
        .count();
    println!("stopped with {first} NodeClaim(s) and {running} pod(s) Running");

    env.controller = start_controller(&env.cluster, test_options()).await?;
    env.wait_running("restart", REPLICAS).await?;

    let claims = env.node_claims().await?;
    let nodes = env.nodes().await?;
    let instances = env.instances().await?;
    assert_eq!(
        claims.len(),
        REPLICAS,
        "one NodeClaim per pod, no duplicates"
    );
    assert_eq!(nodes.len(), REPLICAS, "one Node per pod");
    assert_eq!(instances.len(), REPLICAS, "one instance per pod");
    let claimed: BTreeSet<String> = claims
        .iter()
        .filter_map(|c| c.status.as_ref().and_then(|s| s.provider_id.clone()))
        .collect();
    for n in &nodes {
        let pid = n
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default();
        assert!(
            claimed.contains(&pid),
            "node {} ({pid}) has no NodeClaim",
            n.name_any()
        );
    }
    Ok(())
}
