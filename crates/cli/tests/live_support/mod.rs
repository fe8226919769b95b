//! Helpers of `simulate_live.rs`: running the binary, dumping the cluster, making kwok nodes
//! and pods, waiting for the plane to settle.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use karpenter_testkit::{TestCluster, TestNamespace};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::config::Kubeconfig;
use kube::{Api, Client};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(60);
pub const RUN_LABEL: &str = "sim-live/run";
pub const KARPENTER_GROUPS: [&str; 3] = ["karpenter.sh", "karpenter.k8s.aws", "karpenter.kwok.sh"];
/// (group, version, kind, plural) of what `--from-cluster` reads, in the order it reads them.
pub type Kind = (&'static str, &'static str, &'static str, &'static str);
pub const KARPENTER_KINDS: [Kind; 6] = [
    ("karpenter.sh", "v1", "NodePool", "nodepools"),
    ("karpenter.sh", "v1alpha5", "Provisioner", "provisioners"),
    ("karpenter.k8s.aws", "v1", "EC2NodeClass", "ec2nodeclasses"),
    (
        "karpenter.kwok.sh",
        "v1alpha1",
        "KWOKNodeClass",
        "kwoknodeclasses",
    ),
    ("karpenter.sh", "v1alpha1", "NodeOverlay", "nodeoverlays"),
    (
        "autoscaling.x-k8s.io",
        "v1beta1",
        "CapacityBuffer",
        "capacitybuffers",
    ),
];
pub const CORE_KINDS: [Kind; 9] = [
    ("", "v1", "Namespace", "namespaces"),
    ("", "v1", "Node", "nodes"),
    ("", "v1", "Pod", "pods"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
    ),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "v1", "PersistentVolume", "persistentvolumes"),
    ("storage.k8s.io", "v1", "StorageClass", "storageclasses"),
    ("", "v1", "PodTemplate", "podtemplates"),
];

/// One test at a time: they change which CRDs the shared plane serves.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn karpenter(args: &[&str], env: &[(&str, &Path)]) -> Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_karpenter"));
    cmd.args(args).env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

/// Runs `karpenter simulate ARGS -o json` and parses the JSON.
pub fn simulate_json(args: &[&str]) -> Result<Value> {
    let mut all = vec!["simulate"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let out = karpenter(&all, &[])?;
    ensure!(
        out.status.success(),
        "simulate {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `kubectl get KINDS -A -o yaml` into `file`; where there is no kubectl (it is not one of the
/// project's prerequisites), the same objects listed through the API into a `v1` List.
pub fn dump(kubeconfig: &Path, kinds: &[Kind], file: &Path) -> Result<()> {
    let names: Vec<String> = kinds
        .iter()
        .map(|(group, _, _, plural)| {
            if group.is_empty() {
                (*plural).to_owned()
            } else {
                format!("{plural}.{group}")
            }
        })
        .collect();
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let out = match Command::new(&kubectl)
        .args(["get", &names.join(","), "--all-namespaces", "-o", "yaml"])
        .env("KUBECONFIG", kubeconfig)
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("no {kubectl}: dumping through the API instead");
            return api_dump(kubeconfig, kinds, file);
        }
        other => other.context("running kubectl")?,
    };
    ensure!(
        out.status.success(),
        "kubectl get failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(file, out.stdout)?;
    Ok(())
}

/// Lists `kinds` with a client of its own (on a thread with its own runtime: the callers are
/// synchronous) into a `v1` List, as kubectl prints it.
pub fn api_dump(kubeconfig: &Path, kinds: &[Kind], file: &Path) -> Result<()> {
    let kubeconfig = kubeconfig.to_path_buf();
    let kinds = kinds.to_vec();
    let items = std::thread::spawn(move || -> Result<Vec<Value>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let config = kube::Config::from_custom_kubeconfig(
                Kubeconfig::read_from(&kubeconfig)?,
                &Default::default(),
            )
            .await?;
            let client = Client::try_from(config)?;
            let mut items = Vec::new();
            for (group, version, kind, plural) in kinds {
                let gvk = GroupVersionKind::gvk(group, version, kind);
                let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
                let list = match api.list(&ListParams::default()).await {
                    Err(kube::Error::Api(s)) if s.code == 404 => continue, // not served
                    other => other?,
                };
                for o in list.items {
                    let mut v = serde_json::to_value(&o)?;
                    v["apiVersion"] = json!(resource.api_version);
                    v["kind"] = json!(kind);
                    items.push(v);
                }
            }
            Ok(items)
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the API dump panicked"))??;
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(file, serde_json::to_vec_pretty(&list)?)?;
    Ok(())
}

pub fn kwok_node(name: &str, run: &str, extra_labels: &[(&str, &str)]) -> Result<Node> {
    let mut labels = json!({
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "c-4x-amd64-linux",
        "topology.kubernetes.io/zone": "test-zone-a",
        RUN_LABEL: run,
    });
    for (k, v) in extra_labels {
        labels[*k] = json!(v);
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kwok.x-k8s.io/node": "fake"}},
        "spec": {"taints": [{"key": RUN_LABEL, "value": run, "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}
        }
    }))?)
}

/// Creates a kwok Node and waits until kwok reports it Ready.
pub async fn ready_node(cluster: &TestCluster, node: &Node) -> Result<()> {
    let nodes: Api<Node> = Api::all(cluster.client());
    nodes.create(&PostParams::default(), node).await?;
    let name = node.metadata.name.clone().unwrap_or_default();
    cluster
        .wait_for(WAIT, format!("node {name} Ready"), || async {
            let n = nodes.get(&name).await?;
            let ready = n
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            Ok::<_, kube::Error>(ready.then_some(()))
        })
        .await?;
    Ok(())
}

/// A pod tolerating the run's taint. With `node`, bound there (kwok runs it); otherwise
/// pending for good (no scheduler has its name) and only placeable on the run's nodes.
pub fn pod(name: &str, run: &str, cpu: &str, node: Option<&str>) -> Result<Pod> {
    let mut spec = json!({
        "containers": [{"name": "c", "image": "registry.invalid/pause",
            "env": [{"name": "SECRET", "value": "left out of the snapshot"}],
            "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}],
        "tolerations": [{"key": RUN_LABEL, "operator": "Exists"}],
    });
    match node {
        Some(n) => spec["nodeName"] = json!(n),
        None => {
            spec["schedulerName"] = json!("sim-live-no-such-scheduler");
            spec["nodeSelector"] = json!({ RUN_LABEL: run });
        }
    }
    Ok(serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}),
    )?)
}

pub async fn create_pods(cluster: &TestCluster, ns: &TestNamespace, pods: &[Pod]) -> Result<()> {
    let api: Api<Pod> = ns.api();
    for p in pods {
        api.create(&PostParams::default(), p).await?;
    }
    // Wait until kwok reports the bound ones Running, so both reads see one settled state.
    for p in pods {
        let name = p.metadata.name.clone().unwrap_or_default();
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        let want = if bound { "Running" } else { "Pending" };
        cluster
            .wait_for(WAIT, format!("pod {name} {want}"), || async {
                let phase = api.get(&name).await?.status.and_then(|s| s.phase);
                Ok::<_, kube::Error>((phase.as_deref() == Some(want)).then_some(()))
            })
            .await?;
    }
    Ok(())
}

/// Deletes Karpenter's CRDs (left by earlier test binaries on a shared plane) and waits until
/// the API server no longer serves NodePools. Objects whose finalizers no controller will
/// remove any more (a NodeClaim of a test that failed) would hold their CRD forever, so their
/// finalizers are dropped while waiting.
pub async fn remove_karpenter_crds(cluster: &TestCluster) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let mut kinds = Vec::new();
    for crd in crds.list(&ListParams::default()).await?.items {
        if KARPENTER_GROUPS.contains(&crd.spec.group.as_str()) {
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.delete(&name, &DeleteParams::default()).await?;
            for v in &crd.spec.versions {
                let gvk = GroupVersionKind::gvk(&crd.spec.group, &v.name, &crd.spec.names.kind);
                kinds.push(ApiResource::from_gvk_with_plural(
                    &gvk,
                    &crd.spec.names.plural,
                ));
            }
        }
    }
    let no_finalizers = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    let release = || async {
        for kind in &kinds {
            let api: Api<DynamicObject> = Api::all_with(cluster.client(), kind);
            // Gone already, or not served in this version: nothing to release.
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for o in list
                .items
                .iter()
                .filter(|o| o.metadata.finalizers.is_some())
            {
                let name = o.metadata.name.clone().unwrap_or_default();
                let _ = api
                    .patch(&name, &PatchParams::default(), &no_finalizers)
                    .await;
            }
        }
    };
    let gvk = GroupVersionKind::gvk("karpenter.sh", "v1", "NodePool");
    let pools: Api<DynamicObject> = Api::all_with(
        cluster.client(),
        &ApiResource::from_gvk_with_plural(&gvk, "nodepools"),
    );
    cluster
        .wait_for(WAIT, "Karpenter's CRDs gone", || async {
            release().await;
            let left = crds
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|c| KARPENTER_GROUPS.contains(&c.spec.group.as_str()));
            match pools.list(&ListParams::default().limit(1)).await {
                Err(kube::Error::Api(s)) if s.code == 404 && !left => Ok(Some(())),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(e),
                Ok(_) => Ok(None),
            }
        })
        .await?;
    Ok(())
}

/// Polls two reads of the cluster until they agree. Both read the same objects only while
/// nothing changes, and objects other tests are still deleting (their namespaces, say) may
/// change between them; once the cluster is quiet they must be equal.
pub async fn agreeing<F>(cluster: &TestCluster, what: &str, mut reads: F) -> Result<(Value, Value)>
where
    F: FnMut() -> Result<(Value, Value)>,
{
    let mut last = String::new();
    let agreed = cluster
        .wait_for(WAIT, what, || {
            let pair = reads();
            let out = match pair {
                Ok((a, b)) if a == b => Ok(Some((a, b))),
                Ok((a, b)) => {
                    last = format!("first:\n{a:#}\nsecond:\n{b:#}");
                    Ok(None)
                }
                Err(e) => Err(e),
            };
            async move { out }
        })
        .await;
    agreed.with_context(|| format!("{what}: the reads never agreed; last pair:\n{last}"))
}

/// Deletes the run's namespace and waits until it is gone (kwok removes its pods while their
/// nodes still exist), then deletes the nodes: the next test starts on a quiet cluster.
pub async fn clean_up(cluster: &TestCluster, ns: TestNamespace, nodes: &[&str]) -> Result<()> {
    let name = ns.name().to_owned();
    ns.cleanup().await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client());
    cluster
        .wait_for(WAIT, format!("namespace {name} gone"), || async {
            match namespaces.get_opt(&name).await {
                Ok(None) => Ok(Some(())),
                Ok(Some(_)) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?;
    let api: Api<Node> = Api::all(cluster.client());
    for n in nodes {
        api.delete(n, &DeleteParams::default()).await?;
    }
    Ok(())
}

pub fn entries<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

pub fn strings(v: &Value) -> Vec<String> {
    super::common::strings(v)
}

/// A dynamic client for one kind.
pub fn dynamic(cluster: &TestCluster, (group, version, kind, plural): Kind) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::all_with(
        cluster.client(),
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

/// A KWOKNodeClass and a NodePool, both named `run`, whose nodes carry the run label and a
/// taint only the run's pods tolerate; `budget` is its one disruption budget's `nodes`.
pub async fn kwok_pool(cluster: &TestCluster, run: &str, budget: &str) -> Result<()> {
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass",
        "metadata": {"name": run}, "spec": {}
    }))?;
    dynamic(
        cluster,
        (
            "karpenter.kwok.sh",
            "v1alpha1",
            "KWOKNodeClass",
            "kwoknodeclasses",
        ),
    )
    .create(&PostParams::default(), &class)
    .await?;
    let node_pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": run},
        "spec": {
            "template": {
                "metadata": {"labels": {RUN_LABEL: run}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": run},
                    "taints": [{"key": RUN_LABEL, "value": run, "effect": "NoSchedule"}],
                    "requirements": [
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                    ]
                }
            },
            "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized",
                           "consolidateAfter": "0s", "budgets": [{"nodes": budget}]}
        }
    }))?;
    dynamic(cluster, ("karpenter.sh", "v1", "NodePool", "nodepools"))
        .create(&PostParams::default(), &node_pool)
        .await?;
    Ok(())
}
