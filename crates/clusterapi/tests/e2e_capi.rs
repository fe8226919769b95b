//! End to end against the real Cluster API controllers (hack/capi/up beside the local control
//! plane): a pending pod → a NodeClaim → a Machine our provider creates from the cheapest
//! fitting MachineDeployment → CAPD (in-memory) provisions it and CAPI copies its providerID →
//! the Node registers → the pod runs; deleting the NodeClaim deletes the Machine and what CAPI
//! hangs off it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use karpenter_api::labels::{INSTANCE_TYPE_LABEL, NODE_POOL_LABEL};
use karpenter_api::v1::{
    NodeClaim, NodeClaimTemplate, NodeClaimTemplateSpec, NodeClassReference, NodePool,
    NodePoolSpec, TemplateMetadata,
};
use karpenter_clusterapi::ClusterApiProvider;
use karpenter_clusterapi::machine::{MACHINE_DEPLOYMENT_LABEL, provider_id};
use karpenter_clusterapi::provider::{machine_deployment_resource, machine_resource};
use karpenter_clusterapi::shape::{
    CPU_ANNOTATION, LABELS_ANNOTATION, MAX_PODS_ANNOTATION, MAX_SIZE_ANNOTATION, MEMORY_ANNOTATION,
    PRICE_ANNOTATION,
};
use karpenter_controller::{Clients, Metrics, Options};
use karpenter_providers::CloudProvider;
use karpenter_testkit::{TestCluster, unique_name, workloads};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use common::{
    VmStandIn, create_machine_deployment, create_machine_template, create_workload_cluster,
    dev_resource, ensure_capi,
};

/// Generous: CAPI reconciles on a loaded 2-core machine; a deadline only bounds a failure.
const TIMEOUT: Duration = Duration::from_secs(180);
const POOL_LABEL: &str = "e2e.example.com/pool";

fn node_pool(name: &str) -> NodePool {
    NodePool::new(
        name,
        NodePoolSpec {
            template: NodeClaimTemplate {
                metadata: TemplateMetadata {
                    labels: BTreeMap::from([(POOL_LABEL.to_string(), name.to_string())]),
                    annotations: BTreeMap::new(),
                },
                spec: NodeClaimTemplateSpec {
                    // The provider reads MachineDeployments, not a NodeClass; the reference is
                    // required by the NodePool schema and names the kind upstream's CAPI
                    // provider uses.
                    node_class_ref: NodeClassReference {
                        group: "karpenter.cluster.x-k8s.io".into(),
                        kind: "ClusterAPINodeClass".into(),
                        name: "default".into(),
                    },
                    expire_after: "Never".into(),
                    ..NodeClaimTemplateSpec::default()
                },
            },
            disruption: Default::default(),
            limits: BTreeMap::new(),
            weight: None,
        },
    )
}

fn pod_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_pod_gets_a_machine_and_deleting_the_claim_deletes_it() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("karpenter_controller=info,karpenter_clusterapi=info")
        .with_test_writer()
        .try_init();
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    // Blocking: the first `hack/capi/up` may build the managers.
    let for_capi = cluster.clone();
    let Some(_capi) = tokio::task::spawn_blocking(move || ensure_capi(&for_capi)).await? else {
        return Ok(());
    };
    cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let client = cluster.client();
    let ns = cluster.namespace().await?;
    let ns_name = ns.name().to_string();
    let pool = unique_name("capi");

    create_workload_cluster(&client, cluster.kubeconfig_path(), &ns_name, "w1").await?;
    create_machine_template(&client, &ns_name, "dev", "1s").await?;
    let zone = format!("{INSTANCE_TYPE_LABEL}=capi-c2,topology.kubernetes.io/zone=zone-a");
    create_machine_deployment(
        &client,
        &ns_name,
        "w1",
        "w1-c2-a",
        "dev",
        &[
            (CPU_ANNOTATION, "2"),
            (MEMORY_ANNOTATION, "4Gi"),
            (MAX_PODS_ANNOTATION, "20"),
            (LABELS_ANNOTATION, &zone),
            (PRICE_ANNOTATION, "0.10"),
        ],
    )
    .await?;
    // Bigger and dearer: a 1-cpu pod must not get it.
    create_machine_deployment(
        &client,
        &ns_name,
        "w1",
        "w1-c8-a",
        "dev",
        &[
            (CPU_ANNOTATION, "8"),
            (MEMORY_ANNOTATION, "16Gi"),
            (
                LABELS_ANNOTATION,
                "node.kubernetes.io/instance-type=capi-c8,topology.kubernetes.io/zone=zone-a",
            ),
            (PRICE_ANNOTATION, "0.40"),
        ],
    )
    .await?;
    // Unreadable: left out with an error; the others keep working.
    create_machine_deployment(
        &client,
        &ns_name,
        "w1",
        "w1-broken",
        "dev",
        &[
            (CPU_ANNOTATION, "lots"),
            (MEMORY_ANNOTATION, "4Gi"),
            (LABELS_ANNOTATION, "topology.kubernetes.io/zone=zone-a"),
            (PRICE_ANNOTATION, "0.01"),
        ],
    )
    .await?;
    let _vms = VmStandIn::start(client.clone(), &ns_name);

    Api::<NodePool>::all(client.clone())
        .create(&PostParams::default(), &node_pool(&pool))
        .await
        .context("creating the NodePool")?;
    let config = cluster.config().await?;
    let clients = Clients::new(&config)?;
    // Only this test's namespace: MachineDeployments other tests left behind are not ours.
    let provider = Arc::new(ClusterApiProvider::new(
        clients.client.clone(),
        Some(ns_name.clone()),
    ));
    let (metrics, _registry) = Metrics::new();
    let mut controller = karpenter_controller::start(
        clients,
        provider,
        Arc::new(metrics),
        Options {
            disruption: false,
            gc_interval: Duration::from_secs(2),
            ..Options::default()
        },
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns_name);
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let by_pool = ListParams::default().labels(&format!("{NODE_POOL_LABEL}={pool}"));
    // Checks fail with errors, not panics, so the clean-up below always runs: a NodePool left
    // behind would keep launching for its pending pods in later runs.
    let outcome = scenario(&cluster, &ns_name, &pool, &deployments, &claims, &by_pool).await;

    let _ = deployments.delete("web", &DeleteParams::background()).await;
    for c in claims.list(&by_pool).await?.items {
        let _ = claims
            .delete(&c.name_any(), &DeleteParams::background())
            .await;
    }
    let cleaned = cluster
        .wait_for(TIMEOUT, "this pool's NodeClaims gone", || async {
            Ok::<_, kube::Error>(claims.list(&by_pool).await?.items.is_empty().then_some(()))
        })
        .await;
    let _ = Api::<NodePool>::all(client.clone())
        .delete(&pool, &DeleteParams::background())
        .await;
    controller.stop();
    ns.cleanup().await?;
    outcome?;
    cleaned?;
    Ok(())
}

async fn scenario(
    cluster: &TestCluster,
    ns_name: &str,
    pool: &str,
    deployments: &Api<Deployment>,
    claims: &Api<NodeClaim>,
    by_pool: &ListParams,
) -> Result<()> {
    let client = cluster.client();
    deployments
        .create(
            &PostParams::default(),
            &workloads::deployment("web", 1, workloads::pod_spec("1", POOL_LABEL, pool)),
        )
        .await?;
    let machines: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns_name, &machine_resource());
    let claim = cluster
        .wait_for(
            TIMEOUT,
            "one NodeClaim with a Machine that has a providerID",
            || async {
                let list = claims.list(by_pool).await?.items;
                let [claim] = list.as_slice() else {
                    return Ok::<_, anyhow::Error>(None);
                };
                let Some(m) = machines.get_opt(&claim.name_any()).await? else {
                    return Ok(None);
                };
                Ok(provider_id(&m).map(|_| claim.clone()))
            },
        )
        .await?;
    let name = claim.name_any();
    let machine = machines.get(&name).await?;
    let md = machine.labels().get(MACHINE_DEPLOYMENT_LABEL).cloned();
    ensure!(
        md.as_deref() == Some("w1-c2-a"),
        "a 1-cpu pod should get the cheapest MachineDeployment that fits, w1-c2-a; got {md:?}"
    );
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
    let dev_machines: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns_name,
        &dev_resource("DevMachine", "devmachines"),
    );
    let dev = dev_machines.get(&name).await?;
    ensure!(
        dev.owner_references()
            .iter()
            .any(|o| o.kind == "Machine" && o.name == name),
        "the DevMachine clone should belong to its Machine: {:?}",
        dev.owner_references()
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns_name);
    cluster
        .wait_for(TIMEOUT, "the pod Running on the Machine's Node", || async {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await?
                .items;
            let on_node = list.iter().any(|p| {
                pod_running(p)
                    && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
            });
            Ok::<_, anyhow::Error>(on_node.then_some(()))
        })
        .await?;
    let launched = claims.get(&name).await?;
    let launched_pid = launched.status.as_ref().and_then(|s| s.provider_id.clone());
    ensure!(
        launched_pid.as_deref() == Some(pid.as_str()),
        "NodeClaim providerID {launched_pid:?}, Machine's {pid}"
    );
    let it = launched.labels().get(INSTANCE_TYPE_LABEL).cloned();
    ensure!(
        it.as_deref() == Some("capi-c2"),
        "instance type label {it:?}"
    );
    let ours = machines.list(by_pool).await?.items.len();
    ensure!(ours == 1, "{ours} Machines for one NodeClaim");

    // A retried launch (a controller that crashed after creating the Machine) adopts it.
    let provider = ClusterApiProvider::new(client.clone(), Some(ns_name.to_string()));
    let again = provider.create(&claim).await?;
    let again_pid = again.status.as_ref().and_then(|s| s.provider_id.clone());
    ensure!(
        again_pid.as_deref() == Some(pid.as_str()),
        "relaunch got {again_pid:?}"
    );
    let ours = machines.list(by_pool).await?.items.len();
    ensure!(ours == 1, "{ours} Machines after a relaunch");

    // At its max size, a MachineDeployment's offering is unavailable.
    let mds: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns_name, &machine_deployment_resource());
    mds.patch(
        "w1-c2-a",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"metadata": {"annotations": {MAX_SIZE_ANNOTATION: "1"}}})),
    )
    .await?;
    let pool_object = Api::<NodePool>::all(client.clone()).get(pool).await?;
    let its = provider.instance_types(&pool_object).await?;
    let available = |name: &str| {
        its.iter()
            .find(|i| i.name == name)
            .map(|i| i.offerings.iter().any(|o| o.available))
    };
    ensure!(
        available("capi-c2") == Some(false) && available("capi-c8") == Some(true),
        "c2 at max size should be unavailable, c8 available: {:?}",
        its.iter()
            .map(|i| (&i.name, &i.offerings))
            .collect::<Vec<_>>()
    );
    ensure!(
        available("w1-broken").is_none(),
        "an unreadable MachineDeployment is not offered"
    );

    // Scale to zero and delete the claim: the Machine, its DevMachine and the Node go.
    deployments
        .delete("web", &DeleteParams::background())
        .await?;
    claims.delete(&name, &DeleteParams::background()).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    cluster
        .wait_for(
            TIMEOUT,
            "Machine, DevMachine, NodeClaim and Node gone",
            || async {
                let left = [
                    machines.get_opt(&name).await?.is_some(),
                    dev_machines.get_opt(&name).await?.is_some(),
                    claims.get_opt(&name).await?.is_some(),
                    nodes.get_opt(&name).await?.is_some(),
                ];
                Ok::<_, anyhow::Error>((!left.iter().any(|l| *l)).then_some(()))
            },
        )
        .await?;
    Ok(())
}
