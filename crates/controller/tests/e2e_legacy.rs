//! e2e: a legacy `karpenter.sh/v1alpha5` Provisioner (no NodePool for it) is served as a
//! NodePool: its pending pods get nodes whose NodeClaims it owns, and with
//! `ttlSecondsAfterEmpty: 30` the nodes go about 30 s (+ the 15 s validation) after their pods
//! leave — not before.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use common::{Env, POOL_LABEL, TIMEOUT, disruption_options};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use karpenter_api::labels::{NODE_POOL_LABEL, PROVISIONER_NAME_LABEL};
use karpenter_api::v1::{NodeClaim, NodeSelectorRequirementWithMinValues, Operator};
use karpenter_api::v1alpha5::{ProviderRef, Provisioner, ProvisionerSpec};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The Provisioner's `ttlSecondsAfterEmpty`.
const TTL: i64 = 30;
/// The disruption loop's validation period (upstream's).
const VALIDATION: Duration = Duration::from_secs(15);

fn provisioner(name: &str, class: &str) -> Provisioner {
    let req = |key: &str, v: &str| NodeSelectorRequirementWithMinValues {
        key: key.into(),
        operator: Operator::In,
        values: vec![v.into()],
        min_values: None,
    };
    Provisioner::new(
        name,
        ProvisionerSpec {
            labels: BTreeMap::from([(POOL_LABEL.to_string(), name.to_string())]),
            requirements: vec![
                req("karpenter.sh/capacity-type", "on-demand"),
                req("kubernetes.io/arch", "amd64"),
            ],
            provider_ref: Some(ProviderRef {
                api_version: Some("karpenter.kwok.sh/v1alpha1".into()),
                kind: Some("KWOKNodeClass".into()),
                name: class.into(),
            }),
            ttl_seconds_after_empty: Some(TTL),
            ..ProvisionerSpec::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provisioner_gets_nodes_and_its_empty_nodes_go_after_the_ttl() -> Result<()> {
    // Upstream's validation period: an empty node goes once it has been empty for the TTL and
    // the command has been confirmed 15 s later.
    let Some(env) = Env::start_with(disruption_options(VALIDATION)).await? else {
        return Ok(());
    };
    let legacy = format!("{}-legacy", env.pool);
    let result = body(&env, &legacy).await;
    let cleaned = cleanup_legacy(&env, &legacy).await;
    let env_cleaned = env.cleanup().await;
    result.and(cleaned).and(env_cleaned)
}

async fn body(env: &Env, legacy: &str) -> Result<()> {
    let provisioners: Api<Provisioner> = Api::all(env.client.clone());
    let created = provisioners
        .create(&PostParams::default(), &provisioner(legacy, &env.class))
        .await
        .context("creating the Provisioner")?;
    let uid = created.uid().context("the Provisioner has no uid")?;

    // Two pods that only the Provisioner's nodes can take.
    let mut deployment = env.deployment("legacy", 2, "1");
    if let Some(spec) = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    {
        spec.node_selector = Some(BTreeMap::from([(POOL_LABEL.to_string(), legacy.into())]));
    }
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), env.ns());
    deployments
        .create(&PostParams::default(), &deployment)
        .await?;
    env.wait_running("legacy", 2).await?;

    let claims = legacy_claims(env, legacy).await?;
    ensure!(
        !claims.is_empty(),
        "no NodeClaim labelled for the Provisioner"
    );
    for c in &claims {
        let owner = c
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .context("NodeClaim without an owner")?;
        ensure!(
            (owner.kind.as_str(), owner.uid.as_str()) == ("Provisioner", uid.as_str()),
            "NodeClaim {} is owned by {} {}, not the Provisioner",
            c.name_any(),
            owner.kind,
            owner.name
        );
    }
    let nodes = legacy_nodes(env, legacy).await?;
    ensure!(
        nodes
            .iter()
            .all(|n| n.labels().get(PROVISIONER_NAME_LABEL) == Some(&legacy.to_string())),
        "nodes lack the {PROVISIONER_NAME_LABEL} label"
    );

    // Empty the nodes; they must stay for the TTL, then go.
    deployments
        .patch(
            "legacy",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await?;
    env.cluster
        .wait_for(TIMEOUT, "the legacy pods to be gone", || async {
            Ok::<_, anyhow::Error>(env.app_pods("legacy").await?.is_empty().then_some(()))
        })
        .await?;
    let emptied = Instant::now();
    env.cluster
        .wait_for(
            TIMEOUT + Duration::from_secs(TTL as u64),
            "the empty legacy nodes to be removed",
            || async {
                let left = legacy_nodes(env, legacy).await?.len()
                    + legacy_claims(env, legacy).await?.len();
                Ok::<_, anyhow::Error>((left == 0).then_some(()))
            },
        )
        .await?;
    let waited = emptied.elapsed();
    // The pods were gone before `emptied`, so the nodes had been empty at least `waited`;
    // 5 s of slack covers the time between the last pod leaving and this test noticing.
    ensure!(
        waited >= Duration::from_secs(TTL as u64 - 5),
        "empty nodes were removed after {waited:?}, before ttlSecondsAfterEmpty ({TTL} s)"
    );
    eprintln!("empty legacy nodes removed {waited:?} after their pods left (ttl {TTL} s)");
    Ok(())
}

async fn legacy_claims(env: &Env, legacy: &str) -> Result<Vec<NodeClaim>> {
    Ok(Api::<NodeClaim>::all(env.client.clone())
        .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={legacy}")))
        .await?
        .items)
}

async fn legacy_nodes(env: &Env, legacy: &str) -> Result<Vec<Node>> {
    Ok(Api::<Node>::all(env.client.clone())
        .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={legacy}")))
        .await?
        .items)
}

/// Deletes what the legacy half made while the controller still runs (it owns finalizers).
async fn cleanup_legacy(env: &Env, legacy: &str) -> Result<()> {
    let claims: Api<NodeClaim> = Api::all(env.client.clone());
    for c in legacy_claims(env, legacy).await? {
        let _ = claims
            .delete(&c.name_any(), &DeleteParams::background())
            .await;
    }
    env.cluster
        .wait_for(
            TIMEOUT,
            "the legacy NodeClaims and Nodes to be gone",
            || async {
                let left = legacy_claims(env, legacy).await?.len()
                    + legacy_nodes(env, legacy).await?.len();
                Ok::<_, anyhow::Error>((left == 0).then_some(()))
            },
        )
        .await?;
    let _ = Api::<Provisioner>::all(env.client.clone())
        .delete(legacy, &DeleteParams::background())
        .await;
    Ok(())
}
