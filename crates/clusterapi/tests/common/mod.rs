//! Shared set-up of the Cluster API e2e tests: the local control plane (testkit) with the real
//! Cluster API controllers beside it (hack/capi/up), a workload cluster `Cluster` whose
//! kubeconfig Secret points back at the same plane, and a stand-in for booting VMs.
//!
//! Everything CAPI does here is done by the real `capi-manager` and `capd-manager` (the
//! in-memory backend of CAPD as the infrastructure provider). The one stand-in is
//! [`VmStandIn`]: CAPD's in-memory "VMs" register their Nodes in a fake API server inside CAPD,
//! so when a Machine gets its providerID the stand-in registers the kwok Node a booted VM's
//! kubelet would (that providerID, the labels and capacity its MachineDeployment promises, the
//! `karpenter.sh/unregistered` taint a kubeadm join would carry).

#![allow(dead_code, clippy::unwrap_used)]

mod env;
pub use env::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Secret, ServiceAccount, Taint};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use karpenter_api::labels::{
    CAPACITY_TYPE_LABEL, HOSTNAME_LABEL, INSTANCE_TYPE_LABEL, UNREGISTERED_TAINT_KEY, ZONE_LABEL,
};
use karpenter_clusterapi::machine::{MACHINE_DEPLOYMENT_LABEL, provider_id};
use karpenter_clusterapi::provider::{machine_deployment_resource, machine_resource};
use karpenter_clusterapi::scale::{DEPLOYMENT_NAME_LABEL, Ledger, replicas};
use karpenter_clusterapi::shape::Shape;
use karpenter_providers::kwok::launch::resource_list;
use karpenter_testkit::{TestCluster, control_plane_required};
use kube::api::{ApiResource, DynamicObject, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

/// Env var naming the directory `hack/capi/up` printed (set by hack/test.sh).
pub const CAPI_ENV: &str = "KARPENTER_TEST_CAPI";
/// Set to `1` (hack/test.sh, when `up` failed) to never start CAPI from a test binary.
pub const NO_START_ENV: &str = "KARPENTER_TEST_CAPI_NO_START";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Makes sure CAPI runs beside the plane: `KARPENTER_TEST_CAPI` when hack/test.sh started it,
/// else `hack/capi/up` on the plane's directory (idempotent; the first run builds the
/// managers). `None` (with a SKIPPED line) when it cannot start, except under `CI=true`, where
/// that panics.
pub fn ensure_capi(cluster: &TestCluster) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(CAPI_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    let reason = if std::env::var(NO_START_ENV).is_ok_and(|v| v == "1") {
        format!("{CAPI_ENV} is unset and {NO_START_ENV}=1")
    } else {
        match start(cluster) {
            Ok(dir) => return Some(dir),
            Err(reason) => reason,
        }
    };
    assert!(
        !control_plane_required(),
        "Cluster API unavailable and CI=true: {reason}"
    );
    eprintln!("\n******** SKIPPED: no Cluster API: {reason} ********\n");
    None
}

/// Runs `hack/capi/up` on the plane's directory.
fn start(cluster: &TestCluster) -> Result<PathBuf, String> {
    let cp_dir = cluster
        .kubeconfig_path()
        .parent()
        .ok_or("the plane's kubeconfig has no directory")?
        .to_path_buf();
    let out = Command::new(repo_root().join("hack/capi/up"))
        .arg(&cp_dir)
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| "hack/capi/up printed nothing".to_string()),
        Ok(o) => Err(format!(
            "hack/capi/up failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )),
        Err(e) => Err(format!("cannot run hack/capi/up: {e}")),
    }
}

/// `infrastructure.cluster.x-k8s.io/v1beta2` kinds of CAPD.
pub fn dev_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "infrastructure.cluster.x-k8s.io".into(),
        version: "v1beta2".into(),
        api_version: "infrastructure.cluster.x-k8s.io/v1beta2".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn capi(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "cluster.x-k8s.io".into(),
        version: "v1beta2".into(),
        api_version: "cluster.x-k8s.io/v1beta2".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

fn object(ar: &ApiResource, name: &str, body: serde_json::Value) -> Result<DynamicObject> {
    let mut v = body;
    v["apiVersion"] = json!(ar.api_version);
    v["kind"] = json!(ar.kind);
    v["metadata"]["name"] = json!(name);
    Ok(serde_json::from_value(v)?)
}

/// Creates a workload `Cluster` named `cluster` in `ns` whose workload API server is the test
/// plane itself: its kubeconfig Secret (which CAPI only writes when absent) holds the plane's
/// admin kubeconfig, and its infrastructure is an in-memory DevCluster. Machines get a
/// `bootstrap.dataSecretName`, so no bootstrap or control-plane provider is needed.
pub async fn create_workload_cluster(
    client: &Client,
    kubeconfig: &Path,
    ns: &str,
    cluster: &str,
) -> Result<()> {
    let kubeconfig = std::fs::read(kubeconfig).context("reading the plane's kubeconfig")?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for (name, data) in [
        (format!("{cluster}-kubeconfig"), kubeconfig),
        // What a bootstrap provider would render (cloud-init); nothing runs it here.
        (format!("{cluster}-bootstrap"), b"#cloud-config\n".to_vec()),
    ] {
        secrets
            .create(
                &PostParams::default(),
                &Secret {
                    metadata: ObjectMeta {
                        name: Some(name),
                        labels: Some(BTreeMap::from([(
                            "cluster.x-k8s.io/cluster-name".to_string(),
                            cluster.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    type_: Some("cluster.x-k8s.io/secret".into()),
                    data: Some(BTreeMap::from([("value".to_string(), ByteString(data))])),
                    ..Secret::default()
                },
            )
            .await
            .context("creating a Secret")?;
    }
    let dev_cluster = dev_resource("DevCluster", "devclusters");
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &dev_cluster)
        .create(
            &PostParams::default(),
            // CAPD v1.14.2's in-memory backend writes into metadata.annotations without making
            // the map first (a nil-map panic on every reconcile): give it one.
            &object(
                &dev_cluster,
                cluster,
                json!({"metadata": {"annotations": {"e2e.example.com/created-by": "karpenter-rs"}},
                       "spec": {"backend": {"inMemory": {}}}}),
            )?,
        )
        .await
        .context("creating the DevCluster")?;
    let cl = capi("Cluster", "clusters");
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &cl)
        .create(
            &PostParams::default(),
            &object(
                &cl,
                cluster,
                json!({"spec": {"infrastructureRef": {
                    "apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DevCluster", "name": cluster}}}),
            )?,
        )
        .await
        .context("creating the Cluster")?;
    Ok(())
}

/// An in-memory DevMachineTemplate whose "VMs" boot in `startup`.
pub async fn create_machine_template(
    client: &Client,
    ns: &str,
    name: &str,
    startup: &str,
) -> Result<()> {
    let ar = dev_resource("DevMachineTemplate", "devmachinetemplates");
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .create(
            &PostParams::default(),
            &object(
                &ar,
                name,
                json!({"spec": {"template": {"spec": {"backend": {"inMemory": {
                    "vm": {"provisioning": {"startupDuration": startup}},
                    "node": {"provisioning": {"startupDuration": "0s"}},
                    "apiServer": {"provisioning": {"startupDuration": "0s"}},
                    "etcd": {"provisioning": {"startupDuration": "0s"}},
                }}}}}}),
            )?,
        )
        .await
        .context("creating the DevMachineTemplate")?;
    Ok(())
}

/// An opted-in MachineDeployment of `cluster` with `replicas: 0`, written fully specified
/// (CAPI's defaulting webhook is not registered here), with these annotations.
pub async fn create_machine_deployment(
    client: &Client,
    ns: &str,
    cluster: &str,
    name: &str,
    template: &str,
    annotations: &[(&str, &str)],
) -> Result<()> {
    let ar = machine_deployment_resource();
    let selector = json!({"cluster.x-k8s.io/cluster-name": cluster,
                          "cluster.x-k8s.io/deployment-name": name});
    let annotations: BTreeMap<&str, &str> = annotations.iter().copied().collect();
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
        .create(
            &PostParams::default(),
            &object(
                &ar,
                name,
                json!({
                    "metadata": {"labels": {karpenter_clusterapi::shape::MEMBER_LABEL: ""},
                                 "annotations": annotations},
                    "spec": {
                        "clusterName": cluster, "replicas": 0,
                        "selector": {"matchLabels": selector},
                        // What CAPI's defaulting webhook would fill in.
                        "rollout": {"strategy": {"type": "RollingUpdate",
                            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
                        "template": {
                            "metadata": {"labels": selector},
                            "spec": {
                                "clusterName": cluster,
                                "bootstrap": {"dataSecretName": format!("{cluster}-bootstrap")},
                                "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io",
                                                      "kind": "DevMachineTemplate", "name": template},
                            }
                        }
                    }
                }),
            )?,
        )
        .await
        .with_context(|| format!("creating MachineDeployment {name}"))?;
    Ok(())
}

/// Plays the booting VM of every Machine in a namespace (see the module docs). Stops when
/// dropped.
pub struct VmStandIn {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for VmStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl VmStandIn {
    /// Starts watching the Machines of `ns`.
    pub fn start(client: Client, ns: &str) -> Self {
        let machines: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &machine_resource());
        let mds: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns, &machine_deployment_resource());
        let nodes: Api<Node> = Api::all(client);
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(machines, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let machine = match event {
                    Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => m,
                    Ok(_) => continue,
                    Err(e) => {
                        eprintln!("VM stand-in: watch error: {e}");
                        continue;
                    }
                };
                if let Err(e) = boot(&mds, &nodes, &machine).await {
                    eprintln!("VM stand-in: Machine {}: {e:#}", machine.name_any());
                }
            }
        });
        Self { task }
    }
}

/// Registers the Node of one Machine once it has a providerID (once: an existing Node is kept).
async fn boot(mds: &Api<DynamicObject>, nodes: &Api<Node>, machine: &DynamicObject) -> Result<()> {
    let Some(pid) = provider_id(machine) else {
        return Ok(());
    };
    if machine.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let name = machine.name_any();
    if nodes.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    // Ours (machine mode, or taken in scale mode), else its MachineSet's: a VM boots whether
    // or not a NodeClaim took its Machine yet.
    let Some(md_name) = machine
        .labels()
        .get(MACHINE_DEPLOYMENT_LABEL)
        .or_else(|| machine.labels().get(DEPLOYMENT_NAME_LABEL))
    else {
        bail!("no {MACHINE_DEPLOYMENT_LABEL} or {DEPLOYMENT_NAME_LABEL} label");
    };
    let md = mds.get(md_name).await?;
    let shape = Shape::from_machine_deployment(&md)?;
    let mut labels = shape.labels.clone();
    labels.insert(INSTANCE_TYPE_LABEL.into(), shape.instance_type.clone());
    labels.insert(ZONE_LABEL.into(), shape.zone.clone());
    labels.insert(CAPACITY_TYPE_LABEL.into(), shape.capacity_type.clone());
    labels.insert(HOSTNAME_LABEL.into(), name.clone());
    labels.insert("kwok.x-k8s.io/node".into(), "fake".into());
    let resources = resource_list(&shape.capacity);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "kwok.x-k8s.io/node".to_string(),
                "fake".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            provider_id: Some(pid),
            taints: Some(vec![Taint {
                key: UNREGISTERED_TAINT_KEY.into(),
                effect: "NoExecute".into(),
                ..Taint::default()
            }]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            ..NodeStatus::default()
        }),
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The identity the controller's Cluster API provider acts as in a test's namespace: a
/// ServiceAccount bound (by a Role there) to exactly the rules of
/// `examples/clusterapi/rbac.yaml`, which the README tells users to grant and the chart grants
/// (crates/controller/tests/e2e_chart_clusterapi.rs). Returns the user name to impersonate.
pub async fn grant_example_rbac(client: &Client, ns: &str) -> Result<String> {
    let path = repo_root().join("examples/clusterapi/rbac.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)?;
    let rules = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .map(|d| d["rules"].clone())
        .context("no ClusterRole in examples/clusterapi/rbac.yaml")?;
    let rules: Vec<PolicyRule> = serde_json::from_value(rules)?;
    let name = "karpenter-clusterapi";
    let meta = || ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..ObjectMeta::default()
    };
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta(),
                ..ServiceAccount::default()
            },
        )
        .await
        .context("creating the provider's ServiceAccount")?;
    Api::<Role>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &Role {
                metadata: meta(),
                rules: Some(rules),
            },
        )
        .await
        .context("creating the example's Role")?;
    let binding = RoleBinding {
        metadata: meta(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.into(),
            namespace: Some(ns.into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&pp, &binding)
        .await
        .context("binding the example's Role")?;
    Ok(format!("system:serviceaccount:{ns}:{name}"))
}

/// The MachineDeployment `name` of the env's namespace as the API server has it: its replicas
/// and its scale-mode ledger.
pub async fn md_state(env: &CapiEnv, name: &str) -> Result<(i64, Ledger)> {
    let md = env.machine_deployments().get(name).await?;
    Ok((replicas(&md), Ledger::read(&md)?))
}

/// Requests the API server counted (`apiserver_request_total` on its `/metrics`) on the lines
/// holding every one of `labels` (e.g. `verb="LIST"`), summed.
pub async fn api_requests(client: &Client, labels: &[&str]) -> Result<u64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| labels.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .map(|n| n as u64)
        .sum())
}
