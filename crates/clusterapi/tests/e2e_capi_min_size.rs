//! Cluster Autoscaler's min size on the real Cluster API: emptiness never deletes a Machine
//! of a MachineDeployment at its minimum size, while an empty node of another
//! MachineDeployment goes. Same set-up as `e2e_capi` (see `common`); run the two binaries one
//! after the other (cargo does), never concurrently.

mod common;

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use karpenter_api::labels::{INSTANCE_TYPE_LABEL, ZONE_LABEL};
use karpenter_api::v1::ConsolidationPolicy;
use karpenter_clusterapi::shape::{
    CPU_ANNOTATION, LABELS_ANNOTATION, MEMORY_ANNOTATION, MIN_SIZE_ANNOTATION, PRICE_ANNOTATION,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use common::{CapiEnv, TIMEOUT, disruption, options};

/// An empty node of `keep` (min size 1, its only node) stays; the empty node of `other` (no
/// min size) is removed. The "stays" is read once the other node is gone; then, with the
/// annotation removed, the kept node goes too (the minimum was what held it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emptiness_keeps_a_machine_deployment_at_its_min_size() -> Result<()> {
    let Some(mut env) =
        CapiEnv::start(disruption(ConsolidationPolicy::WhenEmpty, "2s"), "1s").await?
    else {
        return Ok(());
    };
    let keep = format!("{INSTANCE_TYPE_LABEL}=capi-c2,{ZONE_LABEL}=zone-a");
    env.machine_deployment(
        "w1-keep",
        &[
            (CPU_ANNOTATION, "2"),
            (MEMORY_ANNOTATION, "4Gi"),
            (LABELS_ANNOTATION, &keep),
            (PRICE_ANNOTATION, "0.10"),
            (MIN_SIZE_ANNOTATION, "1"),
        ],
    )
    .await?;
    let other = format!("{INSTANCE_TYPE_LABEL}=capi-c4,{ZONE_LABEL}=zone-b");
    env.machine_deployment(
        "w1-other",
        &[
            (CPU_ANNOTATION, "4"),
            (MEMORY_ANNOTATION, "8Gi"),
            (LABELS_ANNOTATION, &other),
            (PRICE_ANNOTATION, "0.20"),
        ],
    )
    .await?;
    env.start_controller(options(true)).await?;
    let outcome = scenario(&env).await;
    let cleaned = env.cleanup().await;
    outcome.and(cleaned)
}

async fn scenario(env: &CapiEnv) -> Result<()> {
    // One pod per zone: each zone has one MachineDeployment, so one node each.
    env.deploy("in-a", 1, "1", Some("zone-a")).await?;
    env.deploy("in-b", 1, "1", Some("zone-b")).await?;
    let [kept] = <[String; 1]>::try_from(env.wait_running("in-a", 1).await?)
        .map_err(|n| anyhow::anyhow!("one node for in-a, got {n:?}"))?;
    let [gone] = <[String; 1]>::try_from(env.wait_running("in-b", 1).await?)
        .map_err(|n| anyhow::anyhow!("one node for in-b, got {n:?}"))?;
    ensure!(env.origin(&kept).await? == "w1-keep", "in-a on {kept}");
    ensure!(env.origin(&gone).await? == "w1-other", "in-b on {gone}");

    // Both nodes empty.
    let deployments: Api<Deployment> = env.deployments();
    for d in ["in-a", "in-b"] {
        deployments.delete(d, &DeleteParams::default()).await?;
    }
    // The positive signal: the other node's Machine and NodeClaim are gone (without the
    // minimum, one emptiness command takes both nodes, so the kept one would be deleting).
    env.cluster
        .wait_for(
            TIMEOUT,
            format!("Machine and NodeClaim {gone} gone"),
            || async {
                let machines = env.machines().list(&ListParams::default()).await?.items;
                let claims = env.pool_claims().await?;
                let left = machines.iter().any(|m| m.name_any() == gone)
                    || claims.iter().any(|c| c.name_any() == gone);
                Ok::<_, anyhow::Error>((!left).then_some(()))
            },
        )
        .await?;

    // The kept node's Machine and NodeClaim are still there, not deleting; the other's are gone.
    let machines = env.machines().list(&ListParams::default()).await?.items;
    let names: Vec<String> = machines.iter().map(|m| m.name_any()).collect();
    ensure!(names == [kept.clone()], "Machines left: {names:?}");
    ensure!(
        machines
            .iter()
            .all(|m| m.metadata.deletion_timestamp.is_none()),
        "Machine {kept} is being deleted"
    );
    let claims = env.pool_claims().await?;
    let claim_names: Vec<String> = claims.iter().map(|c| c.name_any()).collect();
    ensure!(claim_names == [kept.clone()], "NodeClaims: {claim_names:?}");
    ensure!(
        claims
            .iter()
            .all(|c| c.metadata.deletion_timestamp.is_none()),
        "NodeClaim {kept} is being deleted"
    );

    // Only the minimum held it: without the annotation, the empty node goes too.
    env.machine_deployments()
        .patch(
            "w1-keep",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {MIN_SIZE_ANNOTATION: null}}})),
        )
        .await?;
    env.cluster
        .wait_for(
            TIMEOUT,
            format!("Machine {kept} gone once the minimum is lifted"),
            || async {
                let machines = env.machines().list(&ListParams::default()).await?.items;
                Ok::<_, anyhow::Error>(machines.is_empty().then_some(()))
            },
        )
        .await?;
    Ok(())
}
