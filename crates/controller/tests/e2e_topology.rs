//! e2e: a Deployment with a zone topology spread (maxSkew 1, DoNotSchedule) ends up spread
//! across zones. kube-scheduler only counts zones that have nodes, so without karpenter
//! choosing a zone per NodeClaim (from the shared conversion of the pod's constraints) every
//! pod could land in one zone.

mod common;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use common::Env;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use karpenter_api::labels::ZONE_LABEL;
use karpenter_providers::kwok::catalog::ZONES;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const REPLICAS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zone_spread_deployment_lands_in_every_zone() -> Result<()> {
    let Some(env) = Env::start().await? else {
        return Ok(());
    };
    let result = body(&env).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

async fn body(env: &Env) -> Result<()> {
    let mut deployment = env.deployment("spread", REPLICAS as i32, "500m");
    let spec = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .context("template spec")?;
    spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: ZONE_LABEL.into(),
        when_unsatisfiable: "DoNotSchedule".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("app".to_string(), "spread".to_string())])),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }]);
    Api::<Deployment>::namespaced(env.client.clone(), env.ns())
        .create(&PostParams::default(), &deployment)
        .await?;
    env.wait_running("spread", REPLICAS).await?;

    let zone_of: BTreeMap<String, String> = env
        .nodes()
        .await?
        .into_iter()
        .map(|n| {
            let zone = n.labels().get(ZONE_LABEL).cloned().unwrap_or_default();
            (n.name_any(), zone)
        })
        .collect();
    let mut per_zone: BTreeMap<String, usize> = ZONES.iter().map(|z| (z.to_string(), 0)).collect();
    for p in env.app_pods("spread").await? {
        let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
        let zone = zone_of
            .get(&node)
            .with_context(|| format!("pod on {node}, not one of our nodes"))?;
        *per_zone.entry(zone.clone()).or_default() += 1;
    }
    let max = per_zone.values().max().copied().unwrap_or_default();
    let min = per_zone.values().min().copied().unwrap_or_default();
    assert!(
        max - min <= 1,
        "zone skew above 1 over {} zones: {per_zone:?}",
        ZONES.len()
    );
    assert_eq!(per_zone.values().sum::<usize>(), REPLICAS);
    Ok(())
}
