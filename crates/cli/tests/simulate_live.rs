//! `karpenter simulate --from-cluster` against the local control plane (hack/control-plane):
//! what it reads gives the same JSON as `simulate -f` on the same objects dumped with the real
//! `kubectl` (or, on a machine without one, listed through the API), with Karpenter's CRDs
//! absent and present; `--snapshot` replays to the same JSON; the ClusterRole `--print-rbac`
//! prints is enough to run it.
//!
//! The plane is shared with other tests, so everything made here carries a unique run label,
//! and pending pods select it: other tests' leftovers can neither take these pods nor be
//! taken into the assertions (except the whole-output equalities, which hold for any content).
//! Pending pods name a scheduler that does not exist, so kube-scheduler leaves them Pending;
//! running pods are bound by `spec.nodeName` to kwok nodes, which kwok keeps Ready.
//! The tests run one at a time (one of them removes Karpenter's CRDs).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use karpenter_testkit::{TestCluster, TestNamespace, unique_name};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::config::Kubeconfig;
use kube::{Api, Client};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const RUN_LABEL: &str = "sim-live/run";
const KARPENTER_GROUPS: [&str; 3] = ["karpenter.sh", "karpenter.k8s.aws", "karpenter.kwok.sh"];
/// (group, version, kind, plural) of what `--from-cluster` reads, in the order it reads them.
type Kind = (&'static str, &'static str, &'static str, &'static str);
const KARPENTER_KINDS: [Kind; 4] = [
    ("karpenter.sh", "v1", "NodePool", "nodepools"),
    ("karpenter.sh", "v1alpha5", "Provisioner", "provisioners"),
    ("karpenter.k8s.aws", "v1", "EC2NodeClass", "ec2nodeclasses"),
    (
        "karpenter.kwok.sh",
        "v1alpha1",
        "KWOKNodeClass",
        "kwoknodeclasses",
    ),
];
const CORE_KINDS: [Kind; 8] = [
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
];

/// One test at a time: they change which CRDs the shared plane serves.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn karpenter(args: &[&str], env: &[(&str, &Path)]) -> Result<Output> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_karpenter"));
    cmd.args(args).env_remove("KUBECONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.output()?)
}

/// Runs `karpenter simulate ARGS -o json` and parses the JSON.
fn simulate_json(args: &[&str]) -> Result<Value> {
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
fn dump(kubeconfig: &Path, kinds: &[Kind], file: &Path) -> Result<()> {
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
fn api_dump(kubeconfig: &Path, kinds: &[Kind], file: &Path) -> Result<()> {
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

fn kwok_node(name: &str, run: &str, extra_labels: &[(&str, &str)]) -> Result<Node> {
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
async fn ready_node(cluster: &TestCluster, node: &Node) -> Result<()> {
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
fn pod(name: &str, run: &str, cpu: &str, node: Option<&str>) -> Result<Pod> {
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

async fn create_pods(cluster: &TestCluster, ns: &TestNamespace, pods: &[Pod]) -> Result<()> {
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
async fn remove_karpenter_crds(cluster: &TestCluster) -> Result<()> {
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
async fn agreeing<F>(cluster: &TestCluster, what: &str, mut reads: F) -> Result<(Value, Value)>
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
async fn clean_up(cluster: &TestCluster, ns: TestNamespace, nodes: &[&str]) -> Result<()> {
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

fn entries<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    common::strings(v)
}

#[tokio::test]
async fn without_karpenter_nodes_are_the_capacity_and_the_read_equals_kubectl() -> Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    remove_karpenter_crds(&cluster).await?;
    let ns = cluster.namespace().await?;
    let run = unique_name("run");
    let node_a = format!("{run}-a");
    ready_node(&cluster, &kwok_node(&node_a, &run, &[])?).await?;
    create_pods(
        &cluster,
        &ns,
        &[
            pod("running", &run, "1", Some(&node_a))?,
            pod("fits", &run, "1", None)?,
            pod("too-big", &run, "16", None)?,
        ],
    )
    .await?;

    let kc = cluster.kubeconfig_path().display().to_string();
    let dir = std::env::temp_dir().join(unique_name("sim-live"));
    std::fs::create_dir_all(&dir)?;
    let dumped_file = dir.join("dump.yaml");
    let (live, _) = agreeing(&cluster, "--from-cluster vs -f kubectl dump", || {
        // Pages of 2 objects: every kind with more than two objects takes continue tokens.
        let live = simulate_json(&[
            "--from-cluster",
            "--kubeconfig",
            &kc,
            "--repack",
            "--page-size",
            "2",
        ])?;
        dump(cluster.kubeconfig_path(), &CORE_KINDS, &dumped_file)?;
        let dumped = simulate_json(&["-f", &dumped_file.display().to_string(), "--repack"])?;
        Ok((live, dumped))
    })
    .await?;

    // Expected from the objects made above: the 1-cpu pod fits beside the running one on the
    // 4-cpu node; 16 cpu fits on no node, and without NodePools nothing is bought.
    let ns_name = ns.name().to_owned();
    let on_a: Vec<String> = entries(&live, "existingNodes")
        .iter()
        .filter(|e| e["name"] == node_a.as_str())
        .flat_map(|e| strings(&e["pods"]))
        .collect();
    ensure!(on_a == [format!("{ns_name}/fits")], "on {node_a}: {on_a:?}");
    ensure!(
        entries(&live, "unschedulable")
            .iter()
            .any(|u| u["pod"] == format!("{ns_name}/too-big").as_str()),
        "too-big must be unschedulable: {live:#}"
    );
    ensure!(
        entries(&live, "nodeClaims").is_empty(),
        "no NodePools, no claims"
    );
    // The node's own instance type is priced from the catalog; the running pod is repacked.
    let repack = &live["repack"];
    ensure!(
        !strings(&repack["unpricedNodes"]).contains(&node_a),
        "{node_a} is a kwok catalog type: {repack:#}"
    );
    ensure!(
        repack["pods"].as_u64().is_some_and(|n| n >= 1),
        "{repack:#}"
    );

    clean_up(&cluster, ns, &[&node_a]).await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn with_karpenter_the_read_equals_kubectl_and_the_snapshot_replays() -> Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let ns = cluster.namespace().await?;
    let run = unique_name("run");
    let pool = run.clone();
    let dynamic = |group: &str, version: &str, kind: &str, plural: &str| {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        Api::<DynamicObject>::all_with(
            cluster.client(),
            &ApiResource::from_gvk_with_plural(&gvk, plural),
        )
    };
    let class: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass",
        "metadata": {"name": run}, "spec": {}
    }))?;
    dynamic(
        "karpenter.kwok.sh",
        "v1alpha1",
        "KWOKNodeClass",
        "kwoknodeclasses",
    )
    .create(&PostParams::default(), &class)
    .await?;
    // Budgets allow no disruption at all: the empty node stays unless budgets are ignored.
    let node_pool: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": pool},
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
                           "consolidateAfter": "0s", "budgets": [{"nodes": "0"}]}
        }
    }))?;
    dynamic("karpenter.sh", "v1", "NodePool", "nodepools")
        .create(&PostParams::default(), &node_pool)
        .await?;
    let node_b = format!("{run}-b");
    let managed = [
        ("karpenter.sh/nodepool", pool.as_str()),
        ("karpenter.sh/capacity-type", "on-demand"),
    ];
    ready_node(&cluster, &kwok_node(&node_b, &run, &managed)?).await?;
    // 6 cpu does not fit on the 4-cpu node: a new NodeClaim of this run's NodePool.
    create_pods(&cluster, &ns, &[pod("grow", &run, "6", None)?]).await?;

    let kc = cluster.kubeconfig_path().display().to_string();
    let dir = std::env::temp_dir().join(unique_name("sim-live"));
    std::fs::create_dir_all(&dir)?;
    let snapshot = dir.join("snapshot.yaml");
    let snap = snapshot.display().to_string();
    let live = simulate_json(&["--from-cluster", "--kubeconfig", &kc, "--snapshot", &snap])?;
    let replayed = simulate_json(&["-f", &snap])?;
    ensure!(live == replayed, "live:\n{live:#}\nreplayed:\n{replayed:#}");
    let text = std::fs::read_to_string(&snapshot)?;
    ensure!(
        !text.contains("left out of the snapshot"),
        "container env must not be in the snapshot"
    );

    // The same cluster read through KUBECONFIG, budgets ignored, against kubectl's dump.
    let dumped_file = dir.join("dump.yaml");
    let (ignoring, _) = agreeing(&cluster, "--from-cluster vs -f kubectl dump", || {
        let out = karpenter(
            &[
                "simulate",
                "--from-cluster",
                "--ignore-budgets",
                "--repack",
                "-o",
                "json",
            ],
            &[("KUBECONFIG", cluster.kubeconfig_path())],
        )?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let live: Value = serde_json::from_slice(&out.stdout)?;
        let kinds: Vec<Kind> = KARPENTER_KINDS.iter().chain(&CORE_KINDS).copied().collect();
        dump(cluster.kubeconfig_path(), &kinds, &dumped_file)?;
        let dumped = simulate_json(&[
            "-f",
            &dumped_file.display().to_string(),
            "--ignore-budgets",
            "--repack",
        ])?;
        Ok((live, dumped))
    })
    .await?;

    // Expected from the objects: one claim of this run's NodePool for the 6-cpu pod, carrying
    // the template label and taint; the empty node is removed only when budgets are ignored.
    let ns_name = ns.name().to_owned();
    let claims: Vec<&Value> = entries(&live, "nodeClaims")
        .iter()
        .filter(|c| c["nodePool"] == pool.as_str())
        .collect();
    ensure!(claims.len() == 1, "claims of {pool}: {claims:?}");
    let claim = claims[0];
    ensure!(
        strings(&claim["pods"]) == [format!("{ns_name}/grow")],
        "{claim:#}"
    );
    ensure!(claim["labels"][RUN_LABEL] == run.as_str(), "{claim:#}");
    ensure!(claim["capacityType"] == "on-demand", "{claim:#}");
    ensure!(
        entries(claim, "taints")
            .iter()
            .any(|t| t["key"] == RUN_LABEL && t["effect"] == "NoSchedule"),
        "{claim:#}"
    );
    let removes_b = |v: &Value| -> Vec<String> {
        entries(v, "disruptions")
            .iter()
            .filter(|d| strings(&d["nodes"]).contains(&node_b))
            .filter_map(|d| d["reason"].as_str().map(str::to_owned))
            .collect()
    };
    ensure!(removes_b(&live).is_empty(), "budget 0 must hold: {live:#}");
    ensure!(removes_b(&ignoring) == ["empty"], "{ignoring:#}");
    // The managed node's labels name a kwok catalog type: it is in today's repack cost.
    ensure!(
        !strings(&ignoring["repack"]["unpricedNodes"]).contains(&node_b),
        "{ignoring:#}"
    );

    clean_up(&cluster, ns, &[&node_b]).await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn the_printed_cluster_role_is_enough_to_read_the_cluster() -> Result<()> {
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    cluster.apply_crds(&karpenter_api::all_crds()).await?;
    let ns = cluster.namespace().await?;
    let out = karpenter(&["simulate", "--print-rbac"], &[])?;
    ensure!(out.status.success(), "--print-rbac failed");
    let text = String::from_utf8(out.stdout)?;
    let mut docs = text.split("\n---\n");
    let (Some(role), Some(binding)) = (docs.next(), docs.next()) else {
        bail!("expected a ClusterRole and a ClusterRoleBinding:\n{text}");
    };
    let mut role: ClusterRole = serde_saphyr::from_str(role)?;
    let sa = "reader";
    let user = format!("system:serviceaccount:{}:{sa}", ns.name());
    let mut binding: ClusterRoleBinding =
        serde_saphyr::from_str(&binding.replace("REPLACE-WITH-YOUR-USER", &user))?;
    // Unique names: the plane may outlive this run.
    let name = unique_name("simulate-reader");
    role.metadata.name = Some(name.clone());
    binding.metadata.name = Some(name.clone());
    binding.role_ref.name = name.clone();
    Api::<ClusterRole>::all(cluster.client())
        .create(&PostParams::default(), &role)
        .await?;
    Api::<ClusterRoleBinding>::all(cluster.client())
        .create(&PostParams::default(), &binding)
        .await?;
    let accounts: Api<ServiceAccount> = ns.api();
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": sa}}))?;
    accounts.create(&PostParams::default(), &account).await?;
    let token = accounts
        .create_token_request(
            sa,
            &PostParams::default(),
            &TokenRequest {
                spec: TokenRequestSpec {
                    expiration_seconds: Some(600),
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await?
        .status
        .context("no token in the TokenRequest")?
        .token;

    // The admin kubeconfig's server and CA, with the ServiceAccount's token as the only
    // credential.
    let mut kubeconfig = Kubeconfig::read_from(cluster.kubeconfig_path())?;
    for auth in &mut kubeconfig.auth_infos {
        auth.auth_info = serde_json::from_value(json!({ "token": token }))?;
    }
    let dir = std::env::temp_dir().join(unique_name("sim-live"));
    std::fs::create_dir_all(&dir)?;
    let reader = dir.join("reader.kubeconfig");
    std::fs::write(&reader, serde_json::to_vec(&kubeconfig)?)?;
    let reader_arg = reader.display().to_string();

    // RBAC reaches the authorizer through its informers: poll until the role is in effect.
    cluster
        .wait_for(WAIT, "the read-only user's role in effect", || async {
            let out = karpenter(
                &[
                    "simulate",
                    "--from-cluster",
                    "--kubeconfig",
                    &reader_arg,
                    "-o",
                    "json",
                ],
                &[],
            )?;
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            if out.status.success() {
                Ok(Some(()))
            } else if stderr.contains("not allowed to list") {
                Ok(None) // not in effect yet
            } else {
                Err(anyhow::anyhow!("simulate failed: {stderr}"))
            }
        })
        .await?;
    let kc = cluster.kubeconfig_path().display().to_string();
    agreeing(&cluster, "the reader's and the admin's reads", || {
        let as_reader = simulate_json(&["--from-cluster", "--kubeconfig", &reader_arg])?;
        let as_admin = simulate_json(&["--from-cluster", "--kubeconfig", &kc])?;
        Ok((as_reader, as_admin))
    })
    .await?;

    // And the role allows nothing else: the reader may not create a pod.
    let mut config = cluster.config().await?;
    config.auth_info = serde_json::from_value(json!({ "token": token }))?;
    let reader_client = Client::try_from(config)?;
    let denied = Api::<Pod>::namespaced(reader_client, ns.name())
        .create(&PostParams::default(), &pod("p", "x", "1", None)?)
        .await;
    ensure!(
        matches!(&denied, Err(kube::Error::Api(s)) if s.code == 403),
        "create must be forbidden: {denied:?}"
    );
    std::fs::remove_dir_all(&dir)?;
    clean_up(&cluster, ns, &[]).await?;
    Ok(())
}
