//! Scale mode (`clusterapi.karpenter.sh/launch-mode: scale`) on the real Cluster API: the
//! MachineDeployment owns the Machines. Pending pods → its `spec.replicas` grows by one per
//! NodeClaim → CAPI's MachineSet creates the Machines → each NodeClaim takes one → CAPD gives
//! them providerIDs → the Nodes register → the pods run. A controller killed right after a
//! scale-up takes the Machine when it comes back without scaling again; emptiness marks exactly
//! the emptied nodes' Machines `cluster.x-k8s.io/delete-machine` and lowers the replicas, so
//! the MachineSet deletes those and keeps the busy one; a Machine that never gets a providerID
//! is given back (marked, replica released) after the launch timeout and the pod runs
//! elsewhere. Same set-up as `e2e_capi` (see `common`); never run concurrently with the other
//! CAPI binaries (cargo runs them one by one).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, ensure};
use futures::StreamExt;
use karpenter_api::labels::{INSTANCE_TYPE_LABEL, ZONE_LABEL};
use karpenter_api::v1::ConsolidationPolicy;
use karpenter_clusterapi::machine::provider_id;
use karpenter_clusterapi::scale::{
    CLAIMS_ANNOTATION, DELETE_MACHINE_ANNOTATION, Ledger, claim_of, replicas,
};
use karpenter_clusterapi::shape::{
    CPU_ANNOTATION, LABELS_ANNOTATION, LAUNCH_MODE_ANNOTATION, MAX_PODS_ANNOTATION,
    MEMORY_ANNOTATION, PRICE_ANNOTATION,
};
use kube::ResourceExt;
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;

use common::{CapiEnv, TIMEOUT, create_machine_template, disruption, md_state, options};

const MD: &str = "w1-c2-a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_mode_grows_the_machine_deployment_and_releases_exactly_its_machines() -> Result<()> {
    let Some(mut env) =
        CapiEnv::start(disruption(ConsolidationPolicy::WhenEmpty, "2s"), "1s").await?
    else {
        return Ok(());
    };
    let labels = format!("{INSTANCE_TYPE_LABEL}=capi-c2,{ZONE_LABEL}=zone-a");
    let created = env
        .machine_deployment(
            MD,
            &[
                (CPU_ANNOTATION, "2"),
                (MEMORY_ANNOTATION, "4Gi"),
                (MAX_PODS_ANNOTATION, "20"),
                (LABELS_ANNOTATION, &labels),
                (PRICE_ANNOTATION, "0.10"),
                (LAUNCH_MODE_ANNOTATION, "scale"),
            ],
        )
        .await;
    let outcome = match created {
        Ok(()) => match env.start_controller(options(true)).await {
            Ok(()) => scenario(&mut env).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let cleaned = env.cleanup().await;
    outcome.and(cleaned)
}

/// Live Machines of the namespace by name.
async fn live_machines(env: &CapiEnv) -> Result<BTreeMap<String, DynamicObject>> {
    Ok(env
        .machines()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .map(|m| (m.name_any(), m))
        .collect())
}

/// Checks the steady state: `n` NodeClaims, `n` replicas, `n` live Machines all owned by a
/// MachineSet, each taken by a distinct NodeClaim with the same providerID, the ledger naming
/// exactly those NodeClaims and their Machines. Returns NodeClaim → Machine.
async fn check_steady(env: &CapiEnv, n: usize) -> Result<BTreeMap<String, String>> {
    let claims: BTreeMap<String, Option<String>> = env
        .pool_claims()
        .await?
        .into_iter()
        .map(|c| {
            let pid = c.status.as_ref().and_then(|s| s.provider_id.clone());
            (c.name_any(), pid)
        })
        .collect();
    ensure!(claims.len() == n, "{n} NodeClaims expected: {claims:?}");
    let (replicas, ledger) = md_state(env, MD).await?;
    ensure!(
        replicas == n as i64,
        "MachineDeployment replicas {replicas}, {n} expected (one per NodeClaim)"
    );
    let machines = live_machines(env).await?;
    ensure!(
        machines.len() == n,
        "{n} Machines expected: {:?}",
        machines.keys()
    );
    let mut taken = BTreeMap::new();
    for (name, m) in &machines {
        ensure!(
            m.owner_references().iter().any(|o| o.kind == "MachineSet"),
            "Machine {name} should belong to a MachineSet: {:?}",
            m.owner_references()
        );
        let claim = claim_of(m)
            .with_context(|| format!("Machine {name} was taken by no NodeClaim"))?
            .to_string();
        let pid = claims.get(&claim).cloned().flatten();
        ensure!(
            pid.is_some() && pid == provider_id(m),
            "NodeClaim {claim} has providerID {pid:?}, its Machine {name} {:?}",
            provider_id(m)
        );
        ensure!(
            taken.insert(claim.clone(), name.clone()).is_none(),
            "NodeClaim {claim} took two Machines"
        );
    }
    let recorded: BTreeMap<String, String> = ledger
        .0
        .iter()
        .map(|(c, e)| (c.clone(), e.machine.clone().unwrap_or_default()))
        .collect();
    ensure!(
        recorded == taken,
        "ledger {CLAIMS_ANNOTATION} {recorded:?} should name each NodeClaim's Machine {taken:?}"
    );
    Ok(taken)
}

/// Machines whose deletion started (by name), and whether they carried
/// [`DELETE_MACHINE_ANNOTATION`] at the first event that showed it. Stops when dropped.
struct Deletions {
    seen: Arc<Mutex<BTreeMap<String, bool>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Deletions {
    fn watch(env: &CapiEnv) -> Self {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let into = seen.clone();
        let machines = env.machines();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(machines, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let m = match event {
                    Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => m,
                    Ok(watcher::Event::Delete(m)) => m,
                    _ => continue,
                };
                if m.metadata.deletion_timestamp.is_none() {
                    continue;
                }
                let marked = m.annotations().contains_key(DELETE_MACHINE_ANNOTATION);
                if let Ok(mut seen) = into.lock() {
                    seen.entry(m.name_any()).or_insert(marked);
                }
            }
        });
        Self { seen, task }
    }

    fn seen(&self) -> BTreeMap<String, bool> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Deletions {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scenario(env: &mut CapiEnv) -> Result<()> {
    // 1. Two pods of 1.5 cpu: one 2-cpu node each, so the MachineDeployment grows 0 -> 2.
    env.deploy("web", 2, "1500m", None).await?;
    let web_nodes = env.wait_running("web", 2).await?;
    let taken = check_steady(env, 2).await?;
    // The stand-in names each Node after its Machine.
    let machines: BTreeSet<&String> = taken.values().collect();
    ensure!(
        web_nodes.iter().all(|n| machines.contains(n)),
        "pods on {web_nodes:?}, Machines {machines:?}"
    );

    // 2. One more pod; the controller dies as soon as the MachineDeployment is scaled up for it.
    env.deploy("more", 1, "1500m", None).await?;
    let scaled = env
        .cluster
        .wait_for(TIMEOUT, "replicas 3", || async {
            let (replicas, ledger) = md_state(env, MD).await?;
            Ok::<_, anyhow::Error>((replicas == 3).then_some(ledger))
        })
        .await?;
    env.stop_controller();
    let new_claim = scaled
        .0
        .keys()
        .find(|c| !taken.contains_key(*c))
        .cloned()
        .context("the ledger should hold the new NodeClaim")?;
    eprintln!(
        "controller stopped after the scale-up for {new_claim}; Machine taken before the stop: {:?}",
        scaled.0[&new_claim].machine
    );
    env.start_controller(options(true)).await?;
    env.wait_running("more", 1).await?;
    let taken = check_steady(env, 3).await?;
    ensure!(
        taken.contains_key(&new_claim),
        "the NodeClaim recorded before the crash ({new_claim}) should own a Machine: {taken:?}"
    );

    // 3. Emptiness: `web` down to one pod and `more` gone empty two nodes; exactly their
    // Machines go (marked for the MachineSet, which would otherwise pick any), the busy one
    // stays. A watch sees every Machine's deletion start, and whether it was marked then.
    let deletions = Deletions::watch(env);
    env.deployments()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await?;
    env.deployments()
        .delete("more", &DeleteParams::background())
        .await?;
    let busy = env
        .cluster
        .wait_for(TIMEOUT, "one web pod left", || async {
            let pods = env.app_pods("web").await?;
            let [pod] = pods.as_slice() else {
                return Ok::<_, anyhow::Error>(None);
            };
            Ok(pod.spec.as_ref().and_then(|s| s.node_name.clone()))
        })
        .await?;
    let live = env
        .cluster
        .wait_for(TIMEOUT, "only the busy node's Machine left", || async {
            let all = env.machines().list(&ListParams::default()).await?.items;
            let live: Vec<String> = all.iter().map(|m| m.name_any()).collect();
            let claims = env.pool_claims().await?.len();
            let (replicas, _) = md_state(env, MD).await?;
            Ok::<_, anyhow::Error>((all.len() == 1 && claims == 1 && replicas == 1).then_some(live))
        })
        .await?;
    ensure!(
        live == [busy.clone()],
        "the Machine of the busy node {busy} should stay; left: {live:?}"
    );
    let gone: BTreeSet<String> = taken.values().filter(|m| **m != busy).cloned().collect();
    let seen = deletions.seen();
    ensure!(
        seen.keys().cloned().collect::<BTreeSet<_>>() == gone,
        "exactly the emptied nodes' Machines {gone:?} should be deleted; saw {seen:?}"
    );
    ensure!(
        seen.values().all(|marked| *marked),
        "every deleted Machine should carry {DELETE_MACHINE_ANNOTATION} when its deletion starts: {seen:?}"
    );
    check_steady(env, 1).await?;

    // 4. Scale to zero: nothing left, the MachineDeployment back at 0 with an empty ledger.
    env.deployments()
        .delete("web", &DeleteParams::background())
        .await?;
    env.cluster
        .wait_for(TIMEOUT, "no NodeClaim, Machine or replica", || async {
            let machines = env.machines().list(&ListParams::default()).await?.items;
            let claims = env.pool_claims().await?.len();
            let (replicas, ledger) = md_state(env, MD).await?;
            Ok::<_, anyhow::Error>(
                (machines.is_empty() && claims == 0 && replicas == 0 && ledger.0.is_empty())
                    .then_some(()),
            )
        })
        .await?;
    Ok(())
}

/// Scale mode, a Machine its infrastructure never provisions (its VM "boots" in an hour): after
/// the launch timeout its offering is unavailable, the NodeClaim goes, its Machine is marked and
/// its replica given back (the MachineSet deletes it), and the pod runs on the next cheapest
/// offering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_mode_gives_a_stuck_machine_back() -> Result<()> {
    let Some(mut env) =
        CapiEnv::start(disruption(ConsolidationPolicy::WhenEmpty, "Never"), "1s").await?
    else {
        return Ok(());
    };
    env.launch_timeout = Some(std::time::Duration::from_secs(5));
    let started = async {
        create_machine_template(&env.client, env.ns(), "stuck", "1h").await?;
        let c2_a = format!("{INSTANCE_TYPE_LABEL}=capi-c2,{ZONE_LABEL}=zone-a");
        env.machine_deployment_of(
            "w1-stuck",
            "stuck",
            &[
                (CPU_ANNOTATION, "2"),
                (MEMORY_ANNOTATION, "4Gi"),
                (LABELS_ANNOTATION, &c2_a),
                (PRICE_ANNOTATION, "0.08"),
                (LAUNCH_MODE_ANNOTATION, "scale"),
            ],
        )
        .await?;
        let c2_b = format!("{INSTANCE_TYPE_LABEL}=capi-c2,{ZONE_LABEL}=zone-b");
        env.machine_deployment(
            "w1-c2-b",
            &[
                (CPU_ANNOTATION, "2"),
                (MEMORY_ANNOTATION, "4Gi"),
                (LABELS_ANNOTATION, &c2_b),
                (PRICE_ANNOTATION, "0.10"),
                (LAUNCH_MODE_ANNOTATION, "scale"),
            ],
        )
        .await
    }
    .await;
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
    // First the cheapest offering: w1-stuck scales up and its NodeClaim takes the Machine.
    let (stuck, claim) = env
        .cluster
        .wait_for(TIMEOUT, "a Machine of w1-stuck taken", || async {
            let machines = env.machines().list(&ListParams::default()).await?.items;
            Ok::<_, anyhow::Error>(machines.into_iter().find_map(|m| {
                let of_stuck = m
                    .labels()
                    .get(karpenter_clusterapi::scale::DEPLOYMENT_NAME_LABEL)
                    .map(String::as_str)
                    == Some("w1-stuck");
                let claim = claim_of(&m)?.to_string();
                of_stuck.then(|| (m.name_any(), claim))
            }))
        })
        .await?;
    let nodes = env.wait_running("web", 1).await?;
    let node_machine = env.machines().get(&nodes[0]).await?;
    let md = node_machine
        .labels()
        .get(karpenter_clusterapi::scale::DEPLOYMENT_NAME_LABEL)
        .cloned();
    ensure!(
        md.as_deref() == Some("w1-c2-b"),
        "after w1-stuck timed out, the next cheapest is w1-c2-b; got {md:?}"
    );
    env.cluster
        .wait_for(
            TIMEOUT,
            "the stuck Machine and NodeClaim gone, w1-stuck back at 0 replicas with an empty ledger",
            || async {
                let machine = env.machines().get_opt(&stuck).await?;
                let gone = env.claims().get_opt(&claim).await?.is_none();
                let w1 = env.machine_deployments().get("w1-stuck").await?;
                Ok::<_, anyhow::Error>(
                    (machine.is_none()
                        && gone
                        && replicas(&w1) == 0
                        && Ledger::read(&w1)?.0.is_empty())
                    .then_some(()),
                )
            },
        )
        .await?;
    let b = env.machine_deployments().get("w1-c2-b").await?;
    ensure!(
        replicas(&b) == 1 && Ledger::read(&b)?.0.len() == 1,
        "w1-c2-b scaled to 1 for the one NodeClaim left: replicas {}",
        replicas(&b)
    );
    Ok(())
}
