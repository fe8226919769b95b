//! End to end against the real Cluster API controllers (hack/capi/up beside the local control
//! plane). Pending pods → NodeClaims → Machines our provider creates from the cheapest fitting
//! MachineDeployment → CAPD (in-memory) provisions them and CAPI copies their providerIDs →
//! the Nodes register → the pods run. Then: scale to zero leaves nothing behind,
//! consolidation moves to a cheaper shape once one is available, and a controller killed
//! right after creating Machines adopts them when it comes back.
//!
//! The tests run one at a time (see `common::env`), each in its own namespace with its own
//! workload Cluster, MachineDeployments and NodePool, against one CAPI installation.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, ensure};
use karpenter_api::labels::{INSTANCE_TYPE_LABEL, ZONE_LABEL};
use karpenter_api::v1::ConsolidationPolicy;
use karpenter_clusterapi::machine::{PROVIDER_ID_LABEL, provider_id};
use karpenter_clusterapi::shape::{
    CPU_ANNOTATION, LABELS_ANNOTATION, MAX_PODS_ANNOTATION, MAX_SIZE_ANNOTATION, MEMORY_ANNOTATION,
    PRICE_ANNOTATION,
};
use karpenter_providers::CloudProvider;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use common::{CapiEnv, TIMEOUT, create_machine_template, disruption, options};

/// `capacity.cluster-autoscaler.kubernetes.io/labels` of an instance type in a zone.
fn labels(instance_type: &str, zone: &str) -> String {
    format!("{INSTANCE_TYPE_LABEL}={instance_type},{ZONE_LABEL}={zone}")
}

/// Runs `scenario` on `env`, then cleans up whatever the outcome (checks fail with errors,
/// not panics, so a NodePool is never left behind to launch for later runs).
macro_rules! run {
    ($env:ident, $scenario:expr) => {{
        let outcome = $scenario.await;
        let cleaned = $env.cleanup().await;
        outcome.and(cleaned)
    }};
}

/// Cheapest shape across two zones, a zone requirement, a MachineDeployment at its max size
/// skipped with an Event, unreadable ones reported with Events while the rest works, a
/// relaunch adopting the Machine, and scale to zero leaving nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheapest_shape_across_zones_then_scale_to_zero() -> Result<()> {
    let Some(mut env) =
        CapiEnv::start(disruption(ConsolidationPolicy::WhenEmpty, "5s"), "1s").await?
    else {
        return Ok(());
    };
    let c2 = [
        (CPU_ANNOTATION, "2"),
        (MEMORY_ANNOTATION, "4Gi"),
        (MAX_PODS_ANNOTATION, "20"),
    ];
    // capi-c2 in two zones: zone-b is cheaper but holds one node at most.
    let c2_a = labels("capi-c2", "zone-a");
    let c2_b = labels("capi-c2", "zone-b");
    let mut a = c2.to_vec();
    a.extend([
        (LABELS_ANNOTATION, c2_a.as_str()),
        (PRICE_ANNOTATION, "0.12"),
    ]);
    env.machine_deployment("w1-c2-a", &a).await?;
    let mut b = c2.to_vec();
    b.extend([
        (LABELS_ANNOTATION, c2_b.as_str()),
        (PRICE_ANNOTATION, "0.10"),
        (MAX_SIZE_ANNOTATION, "1"),
    ]);
    env.machine_deployment("w1-c2-b", &b).await?;
    // Bigger and dearer: no 1.5-cpu pod should get it.
    let c8_a = labels("capi-c8", "zone-a");
    env.machine_deployment(
        "w1-c8-a",
        &[
            (CPU_ANNOTATION, "8"),
            (MEMORY_ANNOTATION, "16Gi"),
            (LABELS_ANNOTATION, &c8_a),
            (PRICE_ANNOTATION, "0.40"),
        ],
    )
    .await?;
    // Unreadable, and the cheapest if they were offered: left out, each with an Event.
    let broken = labels("capi-broken", "zone-a");
    env.machine_deployment(
        "w1-broken",
        &[
            (CPU_ANNOTATION, "lots"),
            (MEMORY_ANNOTATION, "4Gi"),
            (LABELS_ANNOTATION, &broken),
            (PRICE_ANNOTATION, "0.01"),
        ],
    )
    .await?;
    let no_memory = labels("capi-no-memory", "zone-b");
    env.machine_deployment(
        "w1-no-memory",
        &[
            (CPU_ANNOTATION, "2"),
            (LABELS_ANNOTATION, &no_memory),
            (PRICE_ANNOTATION, "0.01"),
        ],
    )
    .await?;
    env.start_controller(options(true)).await?;
    run!(env, zones_scenario(&env))
}

async fn zones_scenario(env: &CapiEnv) -> Result<()> {
    // 1. No zone asked: the cheapest offering of the cheapest fitting type, in zone-b.
    env.deploy("web", 1, "1500m", None).await?;
    let [web_node] = <[String; 1]>::try_from(env.wait_running("web", 1).await?)
        .map_err(|v| anyhow::anyhow!("nodes {v:?}"))?;
    let md = env.origin(&web_node).await?;
    ensure!(
        md == "w1-c2-b",
        "a 1.5-cpu pod should get capi-c2 in zone-b (0.10 < 0.12 in zone-a); got {md}"
    );
    let machine = env.machines().get(&web_node).await?;
    // CAPI makes the Cluster the owner of a standalone Machine; no MachineSet may own (and
    // scale away) a NodeClaim's Machine.
    ensure!(
        machine
            .owner_references()
            .iter()
            .all(|o| o.kind != "MachineSet" && o.kind != "MachineDeployment"),
        "Machine owned by a MachineSet: {:?}",
        machine.owner_references()
    );
    let pid = provider_id(&machine).unwrap_or_default();
    ensure!(
        pid.starts_with("in-memory://"),
        "providerID not CAPD's: {pid}"
    );
    let dev = env.dev_machines().get(&web_node).await?;
    ensure!(
        dev.owner_references()
            .iter()
            .any(|o| o.kind == "Machine" && o.name == web_node),
        "the DevMachine clone should belong to its Machine: {:?}",
        dev.owner_references()
    );
    let claim = env.claims().get(&web_node).await?;
    let claim_pid = claim.status.as_ref().and_then(|s| s.provider_id.clone());
    ensure!(
        claim_pid.as_deref() == Some(pid.as_str()),
        "NodeClaim providerID {claim_pid:?}, Machine's {pid}"
    );
    let (it, zone) = (
        claim.labels().get(INSTANCE_TYPE_LABEL).cloned(),
        claim.labels().get(ZONE_LABEL).cloned(),
    );
    ensure!(
        it.as_deref() == Some("capi-c2") && zone.as_deref() == Some("zone-b"),
        "NodeClaim labels: instance type {it:?}, zone {zone:?}"
    );

    // 2. zone-a asked: the cheapest fitting offering there.
    env.deploy("web-a", 1, "1500m", Some("zone-a")).await?;
    let nodes = env.wait_running("web-a", 1).await?;
    let md = env.origin(&nodes[0]).await?;
    ensure!(
        md == "w1-c2-a",
        "a 1.5-cpu pod in zone-a should get capi-c2 there (0.12 < capi-c8's 0.40); got {md}"
    );

    // 3. No zone asked again, but zone-b is at its max size (1): skipped, with an Event saying
    // so, for the next cheapest offering.
    env.deploy("web-more", 1, "1500m", None).await?;
    let nodes = env.wait_running("web-more", 1).await?;
    let md = env.origin(&nodes[0]).await?;
    ensure!(
        md == "w1-c2-a",
        "w1-c2-b is at its max size: the next cheapest is w1-c2-a; got {md}"
    );
    let note = env.wait_md_event("w1-c2-b", "MaxSizeReached").await?;
    ensure!(
        note.contains("max size (1 of 1") && note.contains(MAX_SIZE_ANNOTATION),
        "MaxSizeReached note: {note}"
    );
    let machines = env.machines_match_claims().await?;
    ensure!(machines.len() == 3, "3 pods of 1.5 cpu need 3 c2 Machines");

    // 4. The unreadable MachineDeployments have Events naming the annotation at fault, and
    // nothing was launched from them (above: every Machine is a c2's).
    let note = env
        .wait_md_event("w1-broken", "InvalidCapacityAnnotations")
        .await?;
    ensure!(
        note.contains(CPU_ANNOTATION) && note.contains("lots"),
        "{note}"
    );
    let note = env
        .wait_md_event("w1-no-memory", "InvalidCapacityAnnotations")
        .await?;
    ensure!(note.contains(MEMORY_ANNOTATION), "{note}");

    // A retried launch (a controller that crashed after creating the Machine) adopts it.
    let again = env.provider().create(&claim).await?;
    let again_pid = again.status.as_ref().and_then(|s| s.provider_id.clone());
    ensure!(
        again_pid.as_deref() == Some(pid.as_str()),
        "relaunch got {again_pid:?}"
    );
    let after = env.machines_match_claims().await?;
    ensure!(
        after.len() == 3,
        "{} Machines after a relaunch",
        after.len()
    );

    // Lookups by providerID: from the provider's watch of our Machines. The label the launch
    // put on the Machine serves lookups on the API server (after a watch miss); a Machine
    // found without it (launched by an older version) is labelled again.
    let provider = env.provider();
    let labelled = |m: &kube::api::DynamicObject| m.labels().contains_key(PROVIDER_ID_LABEL);
    ensure!(
        labelled(&env.machines().get(&web_node).await?),
        "a launched Machine carries {PROVIDER_ID_LABEL}"
    );
    let found = provider.get(&pid).await?;
    ensure!(
        found.name_any() == web_node,
        "get({pid}) found {}",
        found.name_any()
    );
    env.machines()
        .patch(
            &web_node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {PROVIDER_ID_LABEL: null}}})),
        )
        .await?;
    // A provider whose watch starts after the change sees the Machine without the label.
    ensure!(env.provider().get(&pid).await?.name_any() == web_node);
    ensure!(
        labelled(&env.machines().get(&web_node).await?),
        "the lookup labels the Machine again"
    );
    let missing = provider.get("in-memory://no-such-machine").await;
    ensure!(
        matches!(missing, Err(ref e) if e.is_not_found()),
        "an unknown providerID is NotFound: {missing:?}"
    );

    // 5. Scale to zero: emptiness deletes every NodeClaim; their Machines, DevMachines and
    // Nodes go, and no MachineDeployment was scaled.
    for d in ["web", "web-a", "web-more"] {
        env.deployments()
            .delete(d, &DeleteParams::background())
            .await?;
    }
    let names: BTreeSet<String> = machines.keys().cloned().collect();
    env.cluster
        .wait_for(
            TIMEOUT,
            "every NodeClaim, Machine, DevMachine and Node gone",
            || async {
                let left = (
                    env.pool_claims().await?.len(),
                    env.machines()
                        .list(&ListParams::default())
                        .await?
                        .items
                        .len(),
                    env.dev_machines()
                        .list(&ListParams::default())
                        .await?
                        .items
                        .len(),
                    env.nodes_named(&names).await?.len(),
                );
                Ok::<_, anyhow::Error>((left == (0, 0, 0, 0)).then_some(()))
            },
        )
        .await?;
    for md in env
        .machine_deployments()
        .list(&ListParams::default())
        .await?
        .items
    {
        let replicas = md.data.pointer("/spec/replicas").and_then(|v| v.as_i64());
        ensure!(
            replicas == Some(0),
            "MachineDeployment {} has replicas {replicas:?}",
            md.name_any()
        );
    }
    Ok(())
}

/// Consolidation: the only available shape is dear; once a cheaper one becomes available, the
/// node is replaced by a cheaper one and the dear Machine goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consolidation_replaces_a_dear_shape_with_a_cheaper_one() -> Result<()> {
    let Some(mut env) = CapiEnv::start(
        disruption(ConsolidationPolicy::WhenEmptyOrUnderutilized, "2s"),
        "1s",
    )
    .await?
    else {
        return Ok(());
    };
    let c2 = labels("capi-c2", "zone-a");
    env.machine_deployment(
        "w1-c2-a",
        &[
            (CPU_ANNOTATION, "2"),
            (MEMORY_ANNOTATION, "4Gi"),
            (LABELS_ANNOTATION, &c2),
            (PRICE_ANNOTATION, "0.10"),
            // Full for now.
            (MAX_SIZE_ANNOTATION, "0"),
        ],
    )
    .await?;
    let c8 = labels("capi-c8", "zone-a");
    env.machine_deployment(
        "w1-c8-a",
        &[
            (CPU_ANNOTATION, "8"),
            (MEMORY_ANNOTATION, "16Gi"),
            (LABELS_ANNOTATION, &c8),
            (PRICE_ANNOTATION, "0.40"),
        ],
    )
    .await?;
    env.start_controller(options(true)).await?;
    run!(env, consolidation_scenario(&env))
}

async fn consolidation_scenario(env: &CapiEnv) -> Result<()> {
    env.deploy("web", 1, "1", None).await?;
    let nodes = env.wait_running("web", 1).await?;
    let dear = nodes[0].clone();
    let md = env.origin(&dear).await?;
    ensure!(md == "w1-c8-a", "only w1-c8-a has room; got {md}");

    // Room on the cheap shape: 0.10 < 0.40 for the same pod.
    env.machine_deployments()
        .patch(
            "w1-c2-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {MAX_SIZE_ANNOTATION: null}}})),
        )
        .await?;
    env.cluster
        .wait_for(
            TIMEOUT,
            "the pod running on another node, the only Machine and NodeClaim left its",
            || async {
                let pods = env.app_pods("web").await?;
                let [pod] = pods.as_slice() else {
                    return Ok::<_, anyhow::Error>(None);
                };
                let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                    return Ok(None);
                };
                if !common::pod_running(pod) || node == dear {
                    return Ok(None);
                }
                let machines = env.machines().list(&ListParams::default()).await?.items;
                let names: Vec<String> = machines.iter().map(|m| m.name_any()).collect();
                let claims: Vec<String> = env
                    .pool_claims()
                    .await?
                    .iter()
                    .map(|c| c.name_any())
                    .collect();
                Ok((names == [node.clone()] && claims == names).then_some(node))
            },
        )
        .await?;
    let machines = env.machines_match_claims().await?;
    let [(name, _)] = machines.iter().collect::<Vec<_>>()[..] else {
        anyhow::bail!("one Machine expected, got {:?}", machines.keys());
    };
    let md = env.origin(name).await?;
    ensure!(
        md == "w1-c2-a",
        "replacement from {md}, not the cheaper w1-c2-a"
    );
    Ok(())
}

/// Concurrent launches respect a max size; a controller killed right after creating Machines
/// (before their VMs boot) adopts them when it restarts: the same Machines (same uid) end up
/// running the pods, one per NodeClaim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_controller_adopts_machines_without_duplicates() -> Result<()> {
    // VMs boot in 8 s: the controller dies long before any Machine has a providerID.
    let Some(mut env) =
        CapiEnv::start(disruption(ConsolidationPolicy::WhenEmpty, "Never"), "8s").await?
    else {
        return Ok(());
    };
    // The cheaper zone holds two nodes at most: the three concurrent launches must count each
    // other's Machines.
    let c2_a = labels("capi-c2", "zone-a");
    env.machine_deployment(
        "w1-c2-a",
        &[
            (CPU_ANNOTATION, "2"),
            (MEMORY_ANNOTATION, "4Gi"),
            (LABELS_ANNOTATION, &c2_a),
            (PRICE_ANNOTATION, "0.10"),
            (MAX_SIZE_ANNOTATION, "2"),
        ],
    )
    .await?;
    let c2_b = labels("capi-c2", "zone-b");
    env.machine_deployment(
        "w1-c2-b",
        &[
            (CPU_ANNOTATION, "2"),
            (MEMORY_ANNOTATION, "4Gi"),
            (LABELS_ANNOTATION, &c2_b),
            (PRICE_ANNOTATION, "0.12"),
        ],
    )
    .await?;
    env.start_controller(options(false)).await?;
    let outcome = restart_scenario(&mut env).await;
    let cleaned = env.cleanup().await;
    outcome.and(cleaned)
}

async fn restart_scenario(env: &mut CapiEnv) -> Result<()> {
    // 3 pods of 1.5 cpu: one 2-cpu node each.
    env.deploy("web", 3, "1500m", None).await?;
    let before = env
        .cluster
        .wait_for(TIMEOUT, "3 Machines created", || async {
            let machines = env.machines().list(&ListParams::default()).await?.items;
            Ok::<_, anyhow::Error>((machines.len() == 3).then_some(machines))
        })
        .await?;
    env.stop_controller();
    let uids: BTreeMap<String, Option<String>> =
        before.iter().map(|m| (m.name_any(), m.uid())).collect();
    let mut per_md: BTreeMap<String, usize> = BTreeMap::new();
    for m in &before {
        let md = m
            .labels()
            .get(karpenter_clusterapi::machine::MACHINE_DEPLOYMENT_LABEL)
            .cloned()
            .unwrap_or_default();
        *per_md.entry(md).or_default() += 1;
    }
    ensure!(
        per_md == BTreeMap::from([("w1-c2-a".to_string(), 2), ("w1-c2-b".to_string(), 1)]),
        "3 launches at once: 2 on w1-c2-a (its max size), the third on w1-c2-b; got {per_md:?}"
    );
    let launched: Vec<String> = env
        .pool_claims()
        .await?
        .iter()
        .filter(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.provider_id.as_ref())
                .is_some()
        })
        .map(|c| c.name_any())
        .collect();
    ensure!(
        launched.is_empty(),
        "the controller was to die before any launch completed; launched: {launched:?}"
    );

    env.start_controller(options(false)).await?;
    env.wait_running("web", 3).await?;
    let machines = env.machines_match_claims().await?;
    let after: BTreeMap<String, Option<String>> =
        machines.iter().map(|(n, m)| (n.clone(), m.uid())).collect();
    ensure!(
        after == uids,
        "the restarted controller should adopt the Machines it created (same names and uids): before {uids:?}, after {after:?}"
    );
    for claim in env.pool_claims().await? {
        let claim_pid = claim.status.as_ref().and_then(|s| s.provider_id.clone());
        let machine_pid = machines.get(&claim.name_any()).and_then(provider_id);
        ensure!(
            claim_pid.is_some() && claim_pid == machine_pid,
            "NodeClaim {} has providerID {claim_pid:?}, its Machine {machine_pid:?}",
            claim.name_any()
        );
    }
    Ok(())
}

/// A Machine whose infrastructure sets no providerID in time (its VM "boots" in an hour): after
/// the launch timeout its offering is unavailable, the NodeClaim and its Machine are deleted,
/// and the pod runs on the next cheapest offering. No Machine is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_stuck_without_provider_id_is_replaced_elsewhere() -> Result<()> {
    let Some(mut env) =
        CapiEnv::start(disruption(ConsolidationPolicy::WhenEmpty, "Never"), "1s").await?
    else {
        return Ok(());
    };
    let started = async {
        create_machine_template(&env.client, env.ns(), "stuck", "1h").await?;
        let c2_a = labels("capi-c2", "zone-a");
        env.machine_deployment_of(
            "w1-c2-a-stuck",
            "stuck",
            &[
                (CPU_ANNOTATION, "2"),
                (MEMORY_ANNOTATION, "4Gi"),
                (LABELS_ANNOTATION, &c2_a),
                (PRICE_ANNOTATION, "0.08"),
            ],
        )
        .await?;
        let c2_b = labels("capi-c2", "zone-b");
        env.machine_deployment(
            "w1-c2-b",
            &[
                (CPU_ANNOTATION, "2"),
                (MEMORY_ANNOTATION, "4Gi"),
                (LABELS_ANNOTATION, &c2_b),
                (PRICE_ANNOTATION, "0.10"),
            ],
        )
        .await
    }
    .await;
    env.launch_timeout = Some(std::time::Duration::from_secs(5));
    let outcome = match started {
        Ok(()) => match env.start_controller(options(false)).await {
            Ok(()) => stuck_scenario(&env).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let cleaned = env.cleanup().await;
    outcome.and(cleaned)
}

async fn stuck_scenario(env: &CapiEnv) -> Result<()> {
    env.deploy("web", 1, "1500m", None).await?;
    // First the cheapest offering: a Machine of the stuck MachineDeployment.
    let stuck = env
        .cluster
        .wait_for(TIMEOUT, "a Machine of w1-c2-a-stuck", || async {
            let machines = env.machines().list(&ListParams::default()).await?.items;
            Ok::<_, anyhow::Error>(machines.into_iter().find_map(|m| {
                (m.labels()
                    .get(karpenter_clusterapi::machine::MACHINE_DEPLOYMENT_LABEL)
                    .map(String::as_str)
                    == Some("w1-c2-a-stuck"))
                .then(|| m.name_any())
            }))
        })
        .await?;
    let nodes = env.wait_running("web", 1).await?;
    let md = env.origin(&nodes[0]).await?;
    ensure!(
        md == "w1-c2-b",
        "after w1-c2-a-stuck timed out, the next cheapest is w1-c2-b; got {md}"
    );
    env.cluster
        .wait_for(
            TIMEOUT,
            "the stuck Machine and its NodeClaim gone",
            || async {
                let machine = env.machines().get_opt(&stuck).await?;
                let claim = env.claims().get_opt(&stuck).await?;
                Ok::<_, anyhow::Error>((machine.is_none() && claim.is_none()).then_some(()))
            },
        )
        .await?;
    let machines = env.machines_match_claims().await?;
    ensure!(
        machines.len() == 1,
        "one Machine left: {:?}",
        machines.keys()
    );
    Ok(())
}
