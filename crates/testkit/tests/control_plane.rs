//! Tests of the local control plane itself (hack/control-plane): authn/RBAC are enforced, kwok
//! makes annotated Nodes Ready, kube-scheduler binds Pods to them and kwok runs those Pods.
//! Each test skips (or fails under CI=true) when no control plane is available.

use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use karpenter_testkit::{TestCluster, unique_name};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::AuthInfo;
use kube::{Api, Client};

const WAIT: Duration = Duration::from_secs(60);
/// The annotation kwok is started with (`--manage-nodes-with-annotation-selector`).
const KWOK_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");
/// Keeps other tests' pods off the fake nodes this file creates.
const KWOK_TAINT_KEY: &str = "kwok.x-k8s.io/node";

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A Node that kwok manages, with a hostname label (a kubelet would set it) and a taint.
fn kwok_node(name: &str) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": { KWOK_ANNOTATION.0: KWOK_ANNOTATION.1 },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok"
            }
        },
        "spec": {
            "taints": [{ "key": KWOK_TAINT_KEY, "value": "fake", "effect": "NoSchedule" }]
        },
        "status": {
            "capacity": { "cpu": "4", "memory": "16Gi", "pods": "110" },
            "allocatable": { "cpu": "3800m", "memory": "15Gi", "pods": "110" }
        }
    }))?)
}

/// Creates a kwok Node and waits until kwok reports it Ready.
async fn ready_kwok_node(cluster: &TestCluster, name: &str) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(cluster.client());
    nodes
        .create(&PostParams::default(), &kwok_node(name)?)
        .await?;
    let node = cluster
        .wait_for(WAIT, format!("node {name} Ready"), || async {
            let node = nodes.get(name).await?;
            Ok::<_, kube::Error>(node_ready(&node).then_some(node))
        })
        .await?;
    Ok(node)
}

async fn delete_node(cluster: &TestCluster, name: &str) {
    // Best effort: the plane is thrown away after the run anyway.
    let _ = Api::<Node>::all(cluster.client())
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn admin_is_authorised_and_anonymous_is_not() -> anyhow::Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let names: Vec<String> = Api::<Namespace>::all(cluster.client())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for expected in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // Same server and CA, no client certificate: authenticated as system:anonymous, which
    // RBAC must refuse. Proves the authorizer is on, not just that the admin cert works.
    let mut config = cluster.config().await?;
    config.auth_info = AuthInfo::default();
    let anonymous = Client::try_from(config)?;
    match Api::<Namespace>::all(anonymous)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => ensure!(
            status.code == 401 || status.code == 403,
            "anonymous list got {status:?}"
        ),
        other => anyhow::bail!("anonymous list of namespaces must be refused, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn kwok_marks_an_annotated_node_ready() -> anyhow::Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let name = unique_name("kwok-node");
    let node = ready_kwok_node(&cluster, &name).await?;
    let status = node.status.context("node has no status")?;
    let allocatable = status.allocatable.context("no allocatable")?;
    // kwok keeps the capacity the node was created with (our stage's contract).
    ensure!(
        allocatable.get("cpu") == Some(&Quantity("3800m".into())),
        "allocatable {allocatable:?}"
    );
    ensure!(
        status
            .addresses
            .unwrap_or_default()
            .iter()
            .any(|a| a.type_ == "InternalIP"),
        "kwok should give the node an InternalIP"
    );
    delete_node(&cluster, &name).await;
    Ok(())
}

#[tokio::test]
async fn scheduler_binds_a_pod_to_a_kwok_node_and_kwok_runs_it() -> anyhow::Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let ns = cluster.namespace().await?;
    let node_name = unique_name("kwok-node");
    ready_kwok_node(&cluster, &node_name).await?;

    // spec.nodeName is left empty: kube-scheduler must pick the node through the selector and
    // the toleration.
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web" },
        "spec": {
            "nodeSelector": { "kubernetes.io/hostname": node_name },
            "tolerations": [{ "key": KWOK_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule" }],
            "containers": [{
                "name": "app",
                "image": "registry.invalid/app:1",
                "resources": { "requests": { "cpu": "500m", "memory": "256Mi" } }
            }]
        }
    }))?;
    let pods: Api<Pod> = ns.api();
    pods.create(&PostParams::default(), &pod).await?;

    let running = cluster
        .wait_for(WAIT, "pod web bound and Running", || async {
            let pod = pods.get("web").await?;
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            Ok::<_, kube::Error>((phase.as_deref() == Some("Running")).then_some(pod))
        })
        .await?;
    let spec = running.spec.context("pod has no spec")?;
    ensure!(
        spec.node_name.as_deref() == Some(node_name.as_str()),
        "bound to {:?}, expected {node_name}",
        spec.node_name
    );
    let status = running.status.context("pod has no status")?;
    ensure!(
        status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "PodScheduled" && c.status == "True"),
        "PodScheduled condition missing"
    );
    ensure!(status.pod_ip.is_some(), "kwok should assign a pod IP");

    // Binding was the scheduler's doing: it records a Scheduled event (asynchronously, so poll).
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    cluster
        .wait_for(WAIT, "Scheduled event from default-scheduler", || async {
            let found = events
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Scheduled")
                        && e.reporting_controller.as_deref() == Some("default-scheduler")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("web")
                });
            Ok::<_, kube::Error>(found.then_some(()))
        })
        .await?;

    ns.cleanup().await?;
    delete_node(&cluster, &node_name).await;
    Ok(())
}
