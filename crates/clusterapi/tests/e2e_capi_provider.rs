//! The Cluster API provider driven directly (no controller) on the real Cluster API: ten
//! scale-mode launches from five providers racing on one MachineDeployment (conditioned
//! patches, conflicts retried, max size kept exactly), and catalog and min-size reads served by
//! the provider's watches rather than API Lists (counted by the API server's own request
//! metrics). Same set-up as `e2e_capi` (see `common`); never run concurrently with the other
//! CAPI binaries (cargo runs them one by one).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, ensure};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_api::labels::{INSTANCE_TYPE_LABEL, NODE_POOL_LABEL, ZONE_LABEL};
use karpenter_api::v1::{
    ConsolidationPolicy, NodeClaim, NodeClaimSpec, NodePool, ResourceRequirements,
};
use karpenter_clusterapi::shape::{
    CPU_ANNOTATION, LABELS_ANNOTATION, LAUNCH_MODE_ANNOTATION, MAX_SIZE_ANNOTATION,
    MEMORY_ANNOTATION, PRICE_ANNOTATION,
};
use karpenter_providers::{CloudProvider, CloudProviderError};
use kube::api::ListParams;

use common::{CapiEnv, TIMEOUT, api_requests, create_machine_template, disruption, md_state};

const MD: &str = "w1-c2-a";

/// 409 answers to PATCHes of one MachineDeployment.
async fn md_patch_conflicts(env: &CapiEnv) -> Result<u64> {
    api_requests(
        &env.client,
        &[
            "code=\"409\"",
            "resource=\"machinedeployments\"",
            "scope=\"resource\"",
            "verb=\"PATCH\"",
        ],
    )
    .await
}

/// LIST requests of namespaced `resource`s of `cluster.x-k8s.io`. CAPI's own controllers
/// watch cluster-wide, so the namespaced ones are the provider's and this test's.
async fn namespaced_lists(env: &CapiEnv, resource: &str) -> Result<u64> {
    let resource = format!("resource=\"{resource}\"");
    api_requests(
        &env.client,
        &[
            "group=\"cluster.x-k8s.io\"",
            &resource,
            "scope=\"namespace\"",
            "verb=\"LIST\"",
        ],
    )
    .await
}

/// A NodeClaim of the test's NodePool asking for one cpu (never written to the API server: the
/// provider only reads what it is given).
fn claim(env: &CapiEnv, name: &str) -> NodeClaim {
    let mut c = NodeClaim::new(
        name,
        NodeClaimSpec {
            taints: vec![],
            startup_taints: vec![],
            requirements: vec![],
            resources: ResourceRequirements {
                requests: BTreeMap::from([("cpu".to_string(), Quantity("1".into()))]),
            },
            node_class_ref: Default::default(),
            termination_grace_period: None,
            expire_after: "Never".into(),
        },
    );
    c.metadata.labels = Some(BTreeMap::from([(
        NODE_POOL_LABEL.to_string(),
        env.pool.clone(),
    )]));
    c
}

/// Ten launches at once from five providers (five controllers, as far as the API server can
/// tell: no lock is shared) on one scale-mode MachineDeployment of max size 8: their conditioned
/// patches conflict and are retried from fresh reads, and exactly 8 scale it up (replicas 8,
/// eight ledger entries), the other 2 fail as insufficient capacity. Launching them all again
/// scales nothing more; deleting them gives every replica back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_launches_scale_exactly_and_stop_at_max_size() -> Result<()> {
    let Some(env) =
        CapiEnv::start(disruption(ConsolidationPolicy::WhenEmpty, "Never"), "1s").await?
    else {
        return Ok(());
    };
    let outcome = async {
        // VMs that never boot: Machines come and go without Nodes.
        create_machine_template(&env.client, env.ns(), "slow", "1h").await?;
        let labels = format!("{INSTANCE_TYPE_LABEL}=capi-c2,{ZONE_LABEL}=zone-a");
        env.machine_deployment_of(
            MD,
            "slow",
            &[
                (CPU_ANNOTATION, "2"),
                (MEMORY_ANNOTATION, "4Gi"),
                (LABELS_ANNOTATION, &labels),
                (PRICE_ANNOTATION, "0.10"),
                (LAUNCH_MODE_ANNOTATION, "scale"),
                (MAX_SIZE_ANNOTATION, "8"),
            ],
        )
        .await?;
        let providers: Vec<_> = (0..5).map(|_| env.provider()).collect();
        let claims: Vec<NodeClaim> = (0..10).map(|i| claim(&env, &format!("race-{i}"))).collect();
        let launch_all = || {
            futures::future::join_all(
                claims
                    .iter()
                    .enumerate()
                    .map(|(i, c)| providers[i % providers.len()].create(c)),
            )
        };
        // A launch that kept conflicting (the provider gives up after a few attempts) is
        // retried, as the controller requeues it: at most 5 rounds.
        let conflicted = |r: &Result<NodeClaim, CloudProviderError>| {
            matches!(r, Err(CloudProviderError::Transient(m)) if m.contains("kept changing"))
        };
        let conflicts_before = md_patch_conflicts(&env).await?;
        let mut first = launch_all().await;
        for _ in 0..5 {
            if !first.iter().any(conflicted) {
                break;
            }
            let again = futures::future::join_all(
                claims
                    .iter()
                    .enumerate()
                    .zip(&first)
                    .filter(|(_, r)| conflicted(r))
                    .map(|((i, c), _)| {
                        let provider = &providers[i % providers.len()];
                        async move { (i, provider.create(c).await) }
                    }),
            )
            .await;
            for (i, r) in again {
                first[i] = r;
            }
        }
        let full: Vec<&str> = first
            .iter()
            .zip(&claims)
            .filter(|(r, _)| matches!(r, Err(CloudProviderError::InsufficientCapacity(_))))
            .map(|(_, c)| c.metadata.name.as_deref().unwrap_or_default())
            .collect();
        let other: Vec<String> = first
            .iter()
            .filter_map(|r| match r {
                Err(CloudProviderError::Transient(m)) if m.contains("waiting") => None,
                Err(CloudProviderError::InsufficientCapacity(_)) => None,
                Err(e) => Some(e.to_string()),
                Ok(_) => Some("launched (no VM boots here)".into()),
            })
            .collect();
        ensure!(other.is_empty(), "unexpected outcomes: {other:?}");
        ensure!(
            full.len() == 2,
            "2 of 10 launches should find the MachineDeployment at its max size (8); got {full:?}"
        );
        let (replicas, ledger) = md_state(&env, MD).await?;
        let recorded: BTreeSet<&str> = ledger.0.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = claims
            .iter()
            .filter_map(|c| c.metadata.name.as_deref())
            .filter(|n| !full.contains(n))
            .collect();
        ensure!(
            replicas == 8 && recorded == expected,
            "replicas {replicas} (8 expected), ledger {recorded:?} (expected {expected:?})"
        );
        // Retried launches (the controller's requeues) scale nothing more.
        launch_all().await;
        let (replicas, ledger) = md_state(&env, MD).await?;
        ensure!(
            replicas == 8 && ledger.0.len() == 8,
            "after relaunching: replicas {replicas}, ledger {:?}",
            ledger.0.keys()
        );
        // Ten writers on one object at once: some conditioned patches lost the race and were
        // retried (else this test did not test that).
        let conflicts = md_patch_conflicts(&env).await? - conflicts_before;
        eprintln!("409 Conflicts the API server answered on MachineDeployment patches: {conflicts}");
        ensure!(
            conflicts > 0,
            "no conditioned patch conflicted: the launches did not race"
        );

        // Delete them all (from several providers at once): every replica given back, and the
        // MachineSet left with no Machine.
        let deleted = futures::future::join_all(
            claims
                .iter()
                .enumerate()
                .map(|(i, c)| providers[(i + 1) % providers.len()].delete(c)),
        )
        .await;
        let bad: Vec<String> = deleted
            .iter()
            .filter_map(|r| {
                r.as_ref()
                    .err()
                    .filter(|e| !e.is_not_found())
                    .map(ToString::to_string)
            })
            .collect();
        ensure!(bad.is_empty(), "deletes failed: {bad:?}");
        env.cluster
            .wait_for(TIMEOUT, "replicas 0, empty ledger, no Machine", || async {
                let (replicas, ledger) = md_state(&env, MD).await?;
                let machines = env.machines().list(&ListParams::default()).await?.items;
                Ok::<_, anyhow::Error>(
                    (replicas == 0 && ledger.0.is_empty() && machines.is_empty()).then_some(()),
                )
            })
            .await?;
        Ok(())
    }
    .await;
    let cleaned = env.cleanup().await;
    outcome.and(cleaned)
}

/// Twenty provisioning rounds' catalog reads and twenty disruption rounds' min-size reads cost
/// one List of MachineDeployments and one of Machines (the watches' first), not forty of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_floors_read_the_watches() -> Result<()> {
    let Some(env) =
        CapiEnv::start(disruption(ConsolidationPolicy::WhenEmpty, "Never"), "1s").await?
    else {
        return Ok(());
    };
    let outcome = async {
        let labels = format!("{INSTANCE_TYPE_LABEL}=capi-c2,{ZONE_LABEL}=zone-a");
        env.machine_deployment(
            MD,
            &[
                (CPU_ANNOTATION, "2"),
                (MEMORY_ANNOTATION, "4Gi"),
                (LABELS_ANNOTATION, &labels),
                (PRICE_ANNOTATION, "0.10"),
            ],
        )
        .await?;
        let pool = kube::Api::<NodePool>::all(env.client.clone())
            .get(&env.pool)
            .await?;
        let provider = env.provider();
        let (mds0, machines0) = (
            namespaced_lists(&env, "machinedeployments").await?,
            namespaced_lists(&env, "machines").await?,
        );
        for _ in 0..20 {
            let its = provider.instance_types(&pool).await?;
            ensure!(
                its.iter().map(|it| it.name.as_str()).collect::<Vec<_>>() == ["capi-c2"],
                "the one MachineDeployment's instance type"
            );
            provider.node_group_floors().await?;
        }
        let (mds1, machines1) = (
            namespaced_lists(&env, "machinedeployments").await?,
            namespaced_lists(&env, "machines").await?,
        );
        ensure!(
            (mds1 - mds0, machines1 - machines0) == (1, 1),
            "40 reads should list MachineDeployments and Machines once each (the watches' first list); listed {} and {} times",
            mds1 - mds0,
            machines1 - machines0
        );
        Ok(())
    }
    .await;
    let cleaned = env.cleanup().await;
    outcome.and(cleaned)
}
