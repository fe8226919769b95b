//! e2e (feature gate `ReservedCapacity`, on by default): the kwok provider with a capacity
//! reservation of 2 `c-1x-amd64-linux` in `test-zone-a`. Pending pods get reserved nodes first
//! and the overflow falls back to on-demand; NodeClaims already on the reservation count
//! against it; deleting a reserved node frees its slot.
//!
//! Expected outcomes by hand from the kwok catalog (crates/providers/src/kwok/catalog.rs): each
//! pod requests 500m and a 1-vCPU type has 900m allocatable, so every pod needs a node of its
//! own; c-1x-amd64-linux is the cheapest on-demand type (0.025 + 0.001·2.147 = 0.02715), and its
//! reserved offering costs that divided by 10⁷, so the reservation is used while it has room.

mod common;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use common::{Env, TIMEOUT, test_options};
use k8s_openapi::api::core::v1::Pod;
use karpenter_api::labels::{CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, ZONE_LABEL};
use karpenter_api::v1::NodeClaim;
use karpenter_providers::kwok::launch::RESERVATION_ID_LABEL;
use karpenter_providers::kwok::{KwokReservation, add_reservations, catalog};
use karpenter_testkit::unique_name;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};

const TYPE: &str = "c-1x-amd64-linux";
const ZONE: &str = "test-zone-a";

/// Each test's controller acts on the whole cluster: side by side, one would plan the other's
/// pods with its own catalog and gate.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The kwok catalog with reservation `id` of 2 [`TYPE`] in [`ZONE`].
fn catalog_with(id: &str) -> Result<Vec<karpenter_solver::InstanceType>> {
    let mut its = catalog();
    add_reservations(
        &mut its,
        &[KwokReservation {
            id: id.to_string(),
            instance_type: TYPE.into(),
            zone: ZONE.into(),
            count: 2,
        }],
    )
    .map_err(anyhow::Error::msg)?;
    Ok(its)
}

/// The test pool, allowing on-demand and reserved capacity.
fn allow_reserved(np: &mut karpenter_api::v1::NodePool) {
    for r in &mut np.spec.template.spec.requirements {
        if r.key == CAPACITY_TYPE_LABEL {
            r.values = vec!["on-demand".into(), "reserved".into()];
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserved_nodes_first_then_on_demand_and_a_deleted_node_frees_its_slot() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let id = unique_name("cr");
    let Some(env) =
        Env::start_with_catalog(test_options(), catalog_with(&id)?, allow_reserved).await?
    else {
        return Ok(());
    };
    let result = body(&env, &id).await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// `ReservedCapacity=false`: the reservation is ignored, the pod gets an on-demand node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_gate_off_reservations_are_not_used() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let id = unique_name("cr");
    let options = karpenter_controller::Options {
        reserved_capacity: false,
        ..test_options()
    };
    let Some(env) = Env::start_with_catalog(options, catalog_with(&id)?, allow_reserved).await?
    else {
        return Ok(());
    };
    let result = async {
        create_pods(&env, &["p0"]).await?;
        wait_kinds(&env, &id, 0, 1).await?;
        env.wait_running("p0", 1).await
    }
    .await;
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// (capacity type, reservation ID or "") of the pool's Nodes, counted.
async fn node_kinds(env: &Env) -> Result<BTreeMap<(String, String), usize>> {
    let mut kinds = BTreeMap::new();
    for n in env.nodes().await? {
        let l = n.labels();
        let ct = l
            .get(CAPACITY_TYPE_LABEL)
            .with_context(|| format!("node {} has no capacity type", n.name_any()))?;
        let id = l.get(RESERVATION_ID_LABEL).cloned().unwrap_or_default();
        if ct == "reserved" {
            // A reserved node is the reservation's type, in its zone.
            anyhow::ensure!(
                l.get(INSTANCE_TYPE_LABEL).map(String::as_str) == Some(TYPE)
                    && l.get(ZONE_LABEL).map(String::as_str) == Some(ZONE),
                "reserved node {} is not a {TYPE} in {ZONE}: {l:?}",
                n.name_any()
            );
        }
        *kinds.entry((ct.clone(), id)).or_default() += 1;
    }
    Ok(kinds)
}

/// Waits until the pool has `reserved` nodes on reservation `id` and `on_demand` others.
async fn wait_kinds(env: &Env, id: &str, reserved: usize, on_demand: usize) -> Result<()> {
    let mut want = BTreeMap::new();
    if reserved > 0 {
        want.insert(("reserved".to_string(), id.to_string()), reserved);
    }
    if on_demand > 0 {
        want.insert(("on-demand".to_string(), String::new()), on_demand);
    }
    let last = std::sync::Mutex::new(BTreeMap::new());
    let waited = env
        .cluster
        .wait_for(TIMEOUT, format!("nodes {want:?}"), || async {
            let kinds = node_kinds(env).await?;
            let done = kinds == want;
            if let Ok(mut l) = last.lock() {
                *l = kinds;
            }
            Ok::<_, anyhow::Error>(done.then_some(()))
        })
        .await;
    waited.with_context(|| format!("last seen: {:?}", last.lock().map(|l| l.clone())))
}

async fn create_pods(env: &Env, names: &[&str]) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    for name in names {
        pods.create(&PostParams::default(), &env.pod(name, "500m"))
            .await
            .with_context(|| format!("creating pod {name}"))?;
    }
    Ok(())
}

async fn body(env: &Env, id: &str) -> Result<()> {
    // Three pods, two slots: two reserved nodes and one on-demand.
    create_pods(env, &["p0", "p1", "p2"]).await?;
    wait_kinds(env, id, 2, 1).await?;
    for p in ["p0", "p1", "p2"] {
        env.wait_running(p, 1).await?;
    }
    // The claims on the reservation are pinned to it.
    let claims = env.node_claims().await?;
    let on_reservation: Vec<&NodeClaim> = claims
        .iter()
        .filter(|c| {
            c.spec
                .requirements
                .iter()
                .any(|r| r.key == RESERVATION_ID_LABEL && r.values == [id.to_string()])
        })
        .collect();
    anyhow::ensure!(
        on_reservation.len() == 2,
        "{} claims pinned to {id}",
        on_reservation.len()
    );

    // The two nodes on it fill the reservation: the next pod goes on demand.
    create_pods(env, &["p3"]).await?;
    wait_kinds(env, id, 2, 2).await?;

    // Deleting a reserved node frees its slot (its bare pod is evicted and gone) ...
    let victim = on_reservation[0].name_any();
    Api::<NodeClaim>::all(env.client.clone())
        .delete(&victim, &DeleteParams::background())
        .await?;
    wait_kinds(env, id, 1, 2).await?;
    // ... and the next pending pod takes it.
    create_pods(env, &["p4"]).await?;
    wait_kinds(env, id, 2, 2).await?;
    env.wait_running("p4", 1).await
}
