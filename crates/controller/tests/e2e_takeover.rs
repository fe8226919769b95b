//! e2e (issue 14, "take over from upstream"): a cluster that upstream Karpenter (v1.x, kwok
//! provider) ran switches to karpenter-rs. Upstream's CRDs are installed from upstream's own
//! published Go module (`hack/upstream/module` prints where the Go module cache holds it; the
//! repository copies none of it), then a NodePool, a KWOKNodeClass, NodeClaims and Nodes are
//! written the way upstream v1.15 writes them (hash annotations of hash version `v3`, the
//! kwok provider's labels from upstream's own instance-type catalog, finalizers, owner
//! references, Launched/Registered/Initialized), with pods running on the Nodes; upstream had
//! marked one NodeClaim Drifted (its Node protected by `karpenter.sh/do-not-disrupt`). Then
//! the take-over: our chart's CRDs are applied over upstream's as the README says, and our
//! controller starts (disruption on, as the chart runs it). It must adopt every NodeClaim
//! (stamp the NodePool and re-stamp the NodeClaims with its own hash version; the drifted one
//! keeps its stale hash and stays Drifted, as upstream keeps it), launch nothing and delete
//! nothing, mark nothing else drifted and taint nothing for disruption, and then give a new
//! pending pod capacity: exactly one new NodeClaim.
//!
//! Upstream's module comes from `KARPENTER_UPSTREAM_MODULE` (hack/test.sh exports it) or else
//! from running `hack/upstream/module`; without it (no Go, no module proxy) the test prints
//! SKIPPED, except under `CI=true`, where it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use common::{Env, POOL_LABEL, TIMEOUT, disruption_options, pod_running, start_controller};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use karpenter_controller::drift::hash::HASH_VERSION;
use karpenter_solver::quantity::parse_for_resource;
use karpenter_solver::resources::format_quantity;
use karpenter_testkit::{TestCluster, control_plane_required, unique_name};
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

/// Where hack/test.sh puts upstream's module directory.
const MODULE_ENV: &str = "KARPENTER_UPSTREAM_MODULE";
/// Upstream's NodePool hash version (`NodePoolHashVersion` in upstream v1.15).
const UPSTREAM_HASH_VERSION: &str = "v3";
/// Upstream's hash of the NodePool's template: a decimal uint64 from Go's hashstructure. Its
/// value is opaque to us: hashes of another version are never compared (upstream's own rule
/// when its hash version changes), so any such number stands for it.
const UPSTREAM_HASH: &str = "6821555240594823858";
/// The instance type upstream "launched" (from upstream's kwok catalog), and where.
const INSTANCE_TYPE: &str = "c-2x-amd64-linux";
const ZONE: &str = "test-zone-a";
/// Each upstream node runs one pod of this size; a pending pod of [`BIG_CPU`] fits on neither.
const POD_CPU: &str = "1500m";
const BIG_CPU: &str = "3";
/// Upstream's NodeClaims (one Node and one pod each); the last one upstream had marked
/// Drifted (its NodePool's template changed since), and an operator protects its Node with
/// `karpenter.sh/do-not-disrupt`.
const NODES: usize = 3;
/// That claim's hash: upstream's hash of the template it was made from, no longer the
/// NodePool's.
const STALE_UPSTREAM_HASH: &str = "1170312485236624071";
const FINALIZER: &str = "karpenter.sh/termination";

/// The controller acts on the whole cluster: any other test of this file must not run beside it.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Upstream's module directory: `$KARPENTER_UPSTREAM_MODULE`, or what `hack/upstream/module`
/// prints. `None`: skip (reported); an error under `CI=true`.
fn upstream_module() -> Result<Option<PathBuf>> {
    if let Some(dir) = std::env::var_os(MODULE_ENV).filter(|d| !d.is_empty()) {
        return Ok(Some(PathBuf::from(dir)));
    }
    let out = Command::new(repo_root().join("hack/upstream/module")).output();
    let why = match out {
        Ok(o) if o.status.success() => {
            let stdout = String::from_utf8(o.stdout)?;
            if let Some(dir) = stdout.lines().last().filter(|l| !l.is_empty()) {
                return Ok(Some(PathBuf::from(dir)));
            }
            "hack/upstream/module printed nothing".to_string()
        }
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(e) => e.to_string(),
    };
    if control_plane_required() {
        bail!("no upstream Karpenter module, and CI=true forbids skipping: {why}");
    }
    eprintln!("\n******** SKIPPED: no upstream Karpenter module: {why} ********\n");
    Ok(None)
}

fn read_crd(path: &Path) -> Result<CustomResourceDefinition> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {path:?}"))
}

/// The YAML files of a directory, sorted.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {dir:?}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Upstream's CRDs as its kwok installation ships them: the kwok chart's `crds/` (NodePool,
/// NodeClaim, NodeOverlay, CapacityBuffer, with the kwok label-domain rules) and the
/// KWOKNodeClass CRD.
fn upstream_crds(module: &Path) -> Result<Vec<CustomResourceDefinition>> {
    let mut files = yaml_files(&module.join("kwok/charts/crds"))?;
    files.push(module.join("kwok/apis/crds/karpenter.kwok.sh_kwoknodeclasses.yaml"));
    files.iter().map(|f| read_crd(f)).collect()
}

/// Our chart's CRDs (`charts/karpenter/crds`, the `karpenter crds` output).
fn chart_crds() -> Result<Vec<CustomResourceDefinition>> {
    yaml_files(&repo_root().join("charts/karpenter/crds"))?
        .iter()
        .map(|f| read_crd(f))
        .collect()
}

/// Makes each CRD exactly `crds` (create, or replace whatever is there), as `helm install`
/// of upstream's chart leaves them, and waits until they are served.
async fn install_upstream_crds(
    cluster: &TestCluster,
    crds: &[CustomResourceDefinition],
) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let params = PostParams {
        field_manager: Some("helm".into()),
        ..PostParams::default()
    };
    for crd in crds {
        let name = crd.name_any();
        let mut body = crd.clone();
        match api.get_opt(&name).await? {
            Some(live) => {
                body.metadata.resource_version = live.resource_version();
                api.replace(&name, &params, &body).await
            }
            None => api.create(&params, &body).await,
        }
        .with_context(|| format!("installing upstream's CRD {name}"))?;
    }
    for crd in crds {
        karpenter_testkit::wait_crd_established(&api, &crd.name_any(), TIMEOUT).await?;
    }
    Ok(())
}

/// The versions of a CRD, by name, for comparison.
fn versions(crd: &CustomResourceDefinition) -> BTreeMap<String, CustomResourceDefinitionVersion> {
    crd.spec
        .versions
        .iter()
        .map(|v| (v.name.clone(), v.clone()))
        .collect()
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn node_pools() -> ApiResource {
    resource("karpenter.sh", "v1", "NodePool", "nodepools")
}

fn node_claims() -> ApiResource {
    resource("karpenter.sh", "v1", "NodeClaim", "nodeclaims")
}

fn node_classes() -> ApiResource {
    resource(
        "karpenter.kwok.sh",
        "v1alpha1",
        "KWOKNodeClass",
        "kwoknodeclasses",
    )
}

fn now() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A True condition as upstream's status library writes it (reason = type when none is given).
fn condition(type_: &str) -> Value {
    json!({"type": type_, "status": "True", "reason": type_, "message": "",
           "lastTransitionTime": now(), "observedGeneration": 1})
}

/// One instance type of upstream's kwok catalog (`kwok/cloudprovider/instance_types.json`).
struct UpstreamType {
    name: String,
    arch: String,
    os: Vec<String>,
    /// Capacity, with upstream's default of 110 pods.
    resources: BTreeMap<String, String>,
    /// `(zone, capacity type, price)`.
    offerings: Vec<(String, String, f64)>,
}

fn upstream_catalog(module: &Path) -> Result<Vec<UpstreamType>> {
    let path = module.join("kwok/cloudprovider/instance_types.json");
    let raw: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for t in raw
        .as_array()
        .context("instance_types.json is not a list")?
    {
        let mut resources: BTreeMap<String, String> = t["resources"]
            .as_object()
            .context("instance type without resources")?
            .iter()
            .map(|(k, v)| (k.clone(), str_of(v)))
            .collect();
        resources
            .entry("pods".into())
            .or_insert_with(|| "110".into());
        let mut offerings = Vec::new();
        for o in t["offerings"].as_array().into_iter().flatten() {
            let value_of = |key: &str| {
                o["Requirements"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["key"] == key)
                    .and_then(|r| r["values"][0].as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            offerings.push((
                value_of("topology.kubernetes.io/zone"),
                value_of("karpenter.sh/capacity-type"),
                o["Price"].as_f64().context("offering without a price")?,
            ));
        }
        out.push(UpstreamType {
            name: str_of(&t["name"]),
            arch: str_of(&t["architecture"]),
            os: t["operatingSystems"]
                .as_array()
                .into_iter()
                .flatten()
                .map(str_of)
                .collect(),
            resources,
            offerings,
        });
    }
    Ok(out)
}

impl UpstreamType {
    fn quantity(&self, resource: &str) -> Result<i64> {
        let q = self.resources.get(resource).map(String::as_str);
        Ok(parse_for_resource(resource, q.unwrap_or("0"))?)
    }

    /// Capacity less upstream kwok's overhead (kube-reserved 100m CPU, 10Mi memory).
    fn allocatable(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for name in self.resources.keys() {
            let reserved = match name.as_str() {
                "cpu" => 100,
                "memory" => 10 << 20,
                _ => 0,
            };
            out.insert(
                name.clone(),
                format_quantity(name, self.quantity(name)? - reserved),
            );
        }
        Ok(out)
    }

    /// The labels upstream's kwok provider derives from the type: its single-valued
    /// requirements (name, arch, a single OS, and size/family/cpu/memory as
    /// `karpenter.kwok.sh/instance-*`).
    fn labels(&self) -> BTreeMap<String, String> {
        let cpu = self.resources.get("cpu").cloned().unwrap_or_default();
        let memory = self.resources.get("memory").cloned().unwrap_or_default();
        // AWS-style names (`m5.large`) give the size; kwok's own names fall back to the CPUs.
        let size = self
            .name
            .split_once('.')
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| cpu.clone());
        let family = self
            .name
            .split(['.', '-'])
            .next()
            .unwrap_or_default()
            .to_string();
        let mut labels = BTreeMap::from([
            ("node.kubernetes.io/instance-type".into(), self.name.clone()),
            ("kubernetes.io/arch".into(), self.arch.clone()),
            ("karpenter.kwok.sh/instance-size".into(), size),
            ("karpenter.kwok.sh/instance-family".into(), family),
            ("karpenter.kwok.sh/instance-cpu".into(), cpu),
            ("karpenter.kwok.sh/instance-memory".into(), memory),
        ]);
        if let [os] = self.os.as_slice() {
            labels.insert("kubernetes.io/os".into(), os.clone());
        }
        labels
    }
}

/// The world upstream left: its names, and the objects it made.
struct Upstream {
    pool: String,
    class: String,
    /// NodeClaim name -> uid.
    claims: BTreeMap<String, String>,
    /// The NodeClaim upstream had marked Drifted.
    drifted: String,
    /// Node name -> (uid, pod running on it).
    nodes: BTreeMap<String, (String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_adopts_an_upstream_cluster_and_then_provisions() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(module) = upstream_module()? else {
        return Ok(());
    };
    let Some(cluster) = TestCluster::start().await else {
        return Ok(());
    };
    let client = cluster.client();
    let ns = cluster.namespace().await?;

    // 1. Upstream's installation: its CRDs, and the objects its controller wrote.
    install_upstream_crds(&cluster, &upstream_crds(&module)?).await?;
    let catalog = upstream_catalog(&module)?;
    // On failure the cluster-scoped objects made so far stay (no controller runs to remove
    // their finalizers); each test's names are unique, so they get in no other test's way.
    let upstream = write_upstream_objects(&cluster, ns.name(), &catalog).await?;

    // 2. The take-over: our CRDs over upstream's (README), then our controller.
    let observer = Observer::start(&client, &upstream);
    let ours = chart_crds()?;
    cluster.apply_crds(&ours).await?;
    let options = disruption_options(Duration::from_secs(1));
    let poll = options.disruption_poll_period;
    let controller = start_controller(&cluster, options).await?;
    let env = Env::from_parts(
        cluster,
        ns,
        upstream.pool.clone(),
        upstream.class.clone(),
        controller,
    );
    let result = take_over(&env, &upstream, &ours, &observer, poll).await;
    observer.stop();
    let cleaned = env.cleanup().await;
    result.and(cleaned)
}

/// Writes upstream's NodePool, KWOKNodeClass, NodeClaims and Nodes, and a pod on each Node.
async fn write_upstream_objects(
    cluster: &TestCluster,
    ns: &str,
    catalog: &[UpstreamType],
) -> Result<Upstream> {
    let client = cluster.client();
    let pool = unique_name("upstream");
    let class = unique_name("upstream-class");
    let it = catalog
        .iter()
        .find(|t| t.name == INSTANCE_TYPE)
        .with_context(|| format!("{INSTANCE_TYPE} is not in upstream's kwok catalog"))?;
    let price = it
        .offerings
        .iter()
        .find(|(z, ct, _)| z == ZONE && ct == "on-demand")
        .map(|(_, _, p)| *p)
        .with_context(|| format!("{INSTANCE_TYPE} has no on-demand offering in {ZONE}"))?;

    // A CRD just replaced may be served by the previous schema for a moment: retry creates.
    let create = |api: Api<DynamicObject>, obj: Value| async move {
        let obj: DynamicObject = serde_json::from_value(obj)?;
        cluster
            .wait_for(
                Duration::from_secs(30),
                "creating an upstream object",
                || {
                    let (api, obj) = (api.clone(), obj.clone());
                    async move { api.create(&PostParams::default(), &obj).await.map(Some) }
                },
            )
            .await
            .map_err(anyhow::Error::from)
    };

    let classes = Api::<DynamicObject>::all_with(client.clone(), &node_classes());
    create(
        classes,
        json!({"apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass",
               "metadata": {"name": class}, "spec": {}}),
    )
    .await?;

    let pools = Api::<DynamicObject>::all_with(client.clone(), &node_pools());
    let requirement =
        |key: &str, values: &[&str]| json!({"key": key, "operator": "In", "values": values});
    let pool_requirements = vec![
        requirement("karpenter.sh/capacity-type", &["on-demand"]),
        requirement("kubernetes.io/arch", &["amd64"]),
        requirement("kubernetes.io/os", &["linux"]),
    ];
    let class_ref = json!({"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": class});
    let hash_annotations = json!({
        "karpenter.sh/nodepool-hash": UPSTREAM_HASH,
        "karpenter.sh/nodepool-hash-version": UPSTREAM_HASH_VERSION,
    });
    let made = create(
        pools.clone(),
        json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
            "metadata": {"name": pool, "annotations": hash_annotations},
            "spec": {
                "template": {
                    "metadata": {"labels": {POOL_LABEL: pool}},
                    "spec": {"requirements": pool_requirements, "nodeClassRef": class_ref,
                             "expireAfter": "720h"}},
                // Consolidation off: this test is about what the take-over does, and
                // replacing two half-empty nodes would be consolidation doing its job.
                "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized",
                               "consolidateAfter": "Never", "budgets": [{"nodes": "10%"}]},
                "limits": {"cpu": "1000"},
            },
        }),
    )
    .await?;
    let pool_uid = made.uid().context("NodePool without uid")?;
    let cpu_total = parse_for_resource("cpu", POD_CPU)? * NODES as i64;
    let conditions = [
        "ValidationSucceeded",
        "NodeClassReady",
        "NodeRegistrationHealthy",
        "Ready",
    ]
    .map(condition);
    pools
        .patch_status(
            &pool,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "conditions": conditions,
                "resources": {"cpu": format_quantity("cpu", cpu_total),
                              "pods": NODES.to_string(), "nodes": NODES.to_string()},
                "nodes": NODES, "nodeClassObservedGeneration": 1,
            }})),
        )
        .await
        .context("writing the NodePool's status")?;

    // The instance types upstream's scheduler would have allowed (on-demand amd64 linux ones
    // whose allocatable CPU holds the pod), as it writes them: a set, sorted.
    let pod_milli = parse_for_resource("cpu", POD_CPU)?;
    let mut fitting = Vec::new();
    for t in catalog {
        let allocatable = t.allocatable()?;
        let cpu = parse_for_resource("cpu", allocatable.get("cpu").map_or("0", |s| s))?;
        if t.arch == "amd64" && t.os.iter().any(|o| o == "linux") && cpu >= pod_milli {
            fitting.push(t.name.as_str());
        }
    }
    fitting.sort_unstable();

    let class_label = "karpenter.kwok.sh/kwoknodeclass";
    let claims_api = Api::<DynamicObject>::all_with(client.clone(), &node_claims());
    let nodes_api: Api<Node> = Api::all(client.clone());
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let requests = json!({"cpu": POD_CPU, "pods": "1"});
    let mut claims = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    let mut drifted = String::new();
    for i in 0..NODES {
        let was_drifted = i == NODES - 1;
        let claim_hash = if was_drifted {
            STALE_UPSTREAM_HASH
        } else {
            UPSTREAM_HASH
        };
        // Created by the provisioner (template labels, NodePool and NodeClass labels; every
        // single value as a requirement; the instance types as options) ...
        let created_labels = BTreeMap::from([
            (POOL_LABEL.to_string(), pool.clone()),
            ("karpenter.sh/nodepool".to_string(), pool.clone()),
            (class_label.to_string(), class.clone()),
        ]);
        let mut requirements = pool_requirements.clone();
        requirements.extend([
            requirement(POOL_LABEL, &[pool.as_str()]),
            requirement("karpenter.sh/nodepool", &[pool.as_str()]),
            requirement(class_label, &[class.as_str()]),
            requirement("node.kubernetes.io/instance-type", &fitting),
        ]);
        requirements.sort_by_key(|r| r["key"].as_str().unwrap_or_default().to_string());
        let claim = create(
            claims_api.clone(),
            json!({
                "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
                "metadata": {
                    "generateName": format!("{pool}-"),
                    "labels": created_labels,
                    "annotations": {
                        "karpenter.sh/nodepool-hash": claim_hash,
                        "karpenter.sh/nodepool-hash-version": UPSTREAM_HASH_VERSION,
                        "karpenter.sh/nodeclaim-min-values-relaxed": "false",
                    },
                    "finalizers": [FINALIZER],
                    "ownerReferences": [{"apiVersion": "karpenter.sh/v1", "kind": "NodePool",
                                         "name": pool, "uid": pool_uid,
                                         "blockOwnerDeletion": true}],
                },
                "spec": {"requirements": requirements, "resources": {"requests": requests},
                         "nodeClassRef": class_ref, "expireAfter": "720h"},
            }),
        )
        .await?;
        let claim_name = claim.name_any();
        let claim_uid = claim.uid().context("NodeClaim without uid")?;

        // ... launched by the kwok provider: a Node named kwok-<claim>-<random>-<n>, labelled
        // with the claim's labels, its single-valued requirements, the type's and offering's
        // labels, the price, kwok's partition and marker, and the claim as hostname; the
        // claim takes all of those labels (its own win) and kwok's annotation ...
        let node_name = format!(
            "kwok-{claim_name}-{}-{}",
            unique_name("silly"),
            2_718_281 + i
        );
        let mut labels = created_labels.clone();
        labels.extend([
            (
                "karpenter.sh/capacity-type".to_string(),
                "on-demand".to_string(),
            ),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
        ]);
        labels.extend(it.labels());
        labels.extend([
            ("topology.kubernetes.io/zone".to_string(), ZONE.to_string()),
            (
                "eks-node-viewer/instance-price".to_string(),
                format!("{price:.6}"),
            ),
            ("kwok-partition".to_string(), "a".to_string()),
            ("kubernetes.io/hostname".to_string(), claim_name.clone()),
            ("kwok.x-k8s.io/node".to_string(), "fake".to_string()),
        ]);
        let mut annotations: BTreeMap<String, String> =
            serde_json::from_value(hash_annotations.clone())?;
        annotations.insert("karpenter.sh/nodepool-hash".into(), claim_hash.into());
        annotations.insert(
            "karpenter.sh/nodeclaim-min-values-relaxed".into(),
            "false".into(),
        );
        annotations.insert("kwok.x-k8s.io/node".into(), "fake".into());
        claims_api
            .patch(
                &claim_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels, "annotations": annotations}})),
            )
            .await
            .context("labelling the launched NodeClaim")?;

        // ... registered (the claim's labels, annotations, finalizer and owner synced onto the
        // Node, the unregistered taint gone, `registered`) and initialized. kwok's Nodes have
        // the claim's requests as capacity and the type's allocatable over them.
        let capacity: BTreeMap<String, Quantity> = serde_json::from_value(requests.clone())?;
        let mut allocatable = capacity.clone();
        allocatable.extend(it.allocatable()?.into_iter().map(|(k, v)| (k, Quantity(v))));
        let mut node_labels = labels.clone();
        node_labels.insert("karpenter.sh/registered".into(), "true".into());
        node_labels.insert("karpenter.sh/initialized".into(), "true".into());
        let node = Node {
            metadata: ObjectMeta {
                name: Some(node_name.clone()),
                labels: Some(node_labels),
                annotations: Some({
                    let mut a = annotations.clone();
                    if was_drifted {
                        a.insert("karpenter.sh/do-not-disrupt".into(), "true".into());
                    }
                    a
                }),
                finalizers: Some(vec![FINALIZER.into()]),
                owner_references: Some(vec![OwnerReference {
                    api_version: "karpenter.sh/v1".into(),
                    kind: "NodeClaim".into(),
                    name: claim_name.clone(),
                    uid: claim_uid.clone(),
                    block_owner_deletion: Some(true),
                    controller: None,
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(format!("kwok://{node_name}")),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                capacity: Some(capacity.clone()),
                allocatable: Some(allocatable.clone()),
                ..NodeStatus::default()
            }),
        };
        let node = nodes_api
            .create(&PostParams::default(), &node)
            .await
            .context("creating the upstream Node")?;
        let mut conditions = [
            "Launched",
            "Registered",
            "Initialized",
            "ConsistentStateFound",
            "Ready",
        ]
        .map(condition)
        .to_vec();
        if was_drifted {
            // Upstream's drift controller: reason and message both the drift reason.
            conditions.push(json!({"type": "Drifted", "status": "True",
                "reason": "NodePoolDrifted", "message": "NodePoolDrifted",
                "lastTransitionTime": now(), "observedGeneration": 1}));
            drifted = claim_name.clone();
        }
        claims_api
            .patch_status(
                &claim_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "providerID": format!("kwok://{node_name}"),
                    "nodeName": node_name,
                    "capacity": capacity,
                    "allocatable": allocatable,
                    "conditions": conditions,
                    "lastPodEventTime": now(),
                }})),
            )
            .await
            .context("writing the NodeClaim's status")?;

        // A workload pod on it (as kube-scheduler bound it).
        let pod_name = format!("steady-{i}");
        let mut spec = karpenter_testkit::workloads::pod_spec(POD_CPU, POOL_LABEL, &pool);
        spec.node_name = Some(node_name.clone());
        pods_api
            .create(
                &PostParams::default(),
                &Pod {
                    metadata: ObjectMeta {
                        name: Some(pod_name.clone()),
                        labels: Some(BTreeMap::from([("app".into(), "steady".into())])),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                    status: None,
                },
            )
            .await?;
        claims.insert(claim_name, claim_uid);
        nodes.insert(
            node_name,
            (node.uid().context("Node without uid")?, pod_name),
        );
    }
    cluster
        .wait_for(TIMEOUT, "upstream's pods Running on its Nodes", || async {
            let pods = pods_api.list(&ListParams::default()).await?.items;
            let running = pods.iter().filter(|p| pod_running(p)).count();
            Ok::<_, kube::Error>((running == NODES).then_some(()))
        })
        .await?;
    Ok(Upstream {
        pool,
        class,
        claims,
        drifted,
        nodes,
    })
}

/// After the controller started: adoption, nothing disturbed, then new capacity.
async fn take_over(
    env: &Env,
    up: &Upstream,
    ours: &[CustomResourceDefinition],
    observer: &Observer,
    poll: Duration,
) -> Result<()> {
    // The API server serves exactly our schemas now: nothing of upstream's lingers in them.
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    for crd in ours {
        let live = crds.get(&crd.name_any()).await?;
        ensure!(
            versions(&live) == versions(crd),
            "CRD {} does not serve our schema after the take-over",
            crd.name_any()
        );
    }

    let pools = Api::<DynamicObject>::all_with(env.client.clone(), &node_pools());
    let claims = Api::<DynamicObject>::all_with(env.client.clone(), &node_claims());
    let annotation = |o: &DynamicObject, k: &str| o.annotations().get(k).cloned();
    let hash = "karpenter.sh/nodepool-hash";
    let version = "karpenter.sh/nodepool-hash-version";

    // Adopted: the NodePool carries our hash version, and every upstream NodeClaim has been
    // re-stamped with the NodePool's hash of that version, except the drifted one, which keeps
    // its stale hash (with our version) so that it stays drifted, as upstream would keep it.
    env.cluster
        .wait_for(
            TIMEOUT,
            "the NodePool and NodeClaims re-stamped",
            || async {
                let pool = pools.get(&up.pool).await?;
                let pool_stamp = (annotation(&pool, hash), annotation(&pool, version));
                if pool_stamp.1.as_deref() != Some(HASH_VERSION) {
                    return Ok::<_, anyhow::Error>(None);
                }
                for name in up.claims.keys() {
                    let c = claims.get(name).await?;
                    let want = if *name == up.drifted {
                        (Some(STALE_UPSTREAM_HASH.to_string()), pool_stamp.1.clone())
                    } else {
                        pool_stamp.clone()
                    };
                    if (annotation(&c, hash), annotation(&c, version)) != want {
                        return Ok(None);
                    }
                }
                Ok(Some(()))
            },
        )
        .await
        .with_context(|| format!("disturbed meanwhile: {:?}", observer.seen().violations))?;
    let adopted_at = tokio::time::Instant::now();

    // Our schemas accept upstream's objects as they are, not only thanks to validation
    // ratcheting of unchanged fields (which older API servers lack): a copy of each passes a
    // server-side dry-run create.
    let classes = Api::<DynamicObject>::all_with(env.client.clone(), &node_classes());
    let mut originals = vec![
        (pools.clone(), pools.get(&up.pool).await?),
        (classes.clone(), classes.get(&up.class).await?),
    ];
    for name in up.claims.keys() {
        originals.push((claims.clone(), claims.get(name).await?));
    }
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    for (api, original) in originals {
        let mut copy = DynamicObject {
            types: original.types.clone(),
            metadata: ObjectMeta {
                name: Some(format!("{}-copy", original.name_any())),
                labels: original.metadata.labels.clone(),
                annotations: original.metadata.annotations.clone(),
                ..ObjectMeta::default()
            },
            data: original.data.clone(),
        };
        // Status is not part of a create.
        if let Some(data) = copy.data.as_object_mut() {
            data.remove("status");
        }
        api.create(&dry_run, &copy)
            .await
            .with_context(|| format!("our CRDs reject upstream's {}", original.name_any()))?;
    }

    // A new pending pod that fits on no upstream node gets a new node.
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), env.ns());
    pods.create(&PostParams::default(), &env.pod("fresh", BIG_CPU))
        .await?;
    env.wait_running("fresh", 1).await?;
    let fresh_node = env
        .app_pods("fresh")
        .await?
        .first()
        .and_then(|p| p.spec.as_ref()?.node_name.clone())
        .context("the fresh pod is not bound")?;
    ensure!(
        !up.nodes.contains_key(&fresh_node),
        "the fresh pod ({BIG_CPU} CPU) landed on upstream's node {fresh_node}"
    );

    // Watch for at least a few drift and disruption rounds after the adoption (they run every
    // `poll`) before concluding nothing was disturbed.
    let watched = poll * 5;
    env.cluster
        .wait_for(
            watched + TIMEOUT,
            "drift and disruption rounds after the adoption",
            || async { Ok::<_, anyhow::Error>((adopted_at.elapsed() >= watched).then_some(())) },
        )
        .await?;

    // Nothing deleted, drifted or tainted along the way (seen by the watches) ...
    let seen = observer.seen();
    ensure!(
        seen.violations.is_empty(),
        "the take-over disturbed upstream's objects: {:?}",
        seen.violations
    );
    // ... one NodeClaim launched, for the fresh pod ...
    let now: BTreeMap<String, String> = claims
        .list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={}", up.pool)))
        .await?
        .items
        .iter()
        .map(|c| (c.name_any(), c.uid().unwrap_or_default()))
        .collect();
    let new: BTreeSet<&String> = now.keys().filter(|n| !up.claims.contains_key(*n)).collect();
    ensure!(
        new.len() == 1 && seen.new_claims.len() == 1,
        "expected exactly one new NodeClaim, found {new:?} (watched: {:?})",
        seen.new_claims
    );
    // ... and every upstream NodeClaim, Node and pod still the same object, where it was.
    for (name, uid) in &up.claims {
        ensure!(
            now.get(name) == Some(uid),
            "upstream's NodeClaim {name} is gone or was replaced"
        );
    }
    let still_drifted = claims.get(&up.drifted).await?.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Drifted" && c["status"] == "True")
        });
    ensure!(
        still_drifted,
        "NodeClaim {}, drifted under upstream, is no longer Drifted",
        up.drifted
    );
    let nodes: Api<Node> = Api::all(env.client.clone());
    for (name, (uid, pod)) in &up.nodes {
        let node = nodes.get_opt(name).await?;
        ensure!(
            node.as_ref().and_then(|n| n.uid()).as_ref() == Some(uid),
            "upstream's Node {name} is gone or was replaced"
        );
        let p = pods.get(pod).await?;
        ensure!(
            pod_running(&p) && p.spec.as_ref().and_then(|s| s.node_name.as_ref()) == Some(name),
            "pod {pod} no longer runs on {name}"
        );
    }
    Ok(())
}

/// What the watches saw from the take-over on.
#[derive(Debug, Default)]
struct Seen {
    /// Any deletion, deletion mark, Drifted condition or disruption taint on the test pool's
    /// NodeClaims and Nodes.
    violations: Vec<String>,
    /// NodeClaims of the test pool that upstream did not make.
    new_claims: BTreeSet<String>,
}

/// Watches the test pool's NodeClaims and Nodes, so that a change undone before the test looks
/// (a Drifted condition set then cleared, a taint put and removed) is still seen.
struct Observer {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Observer {
    fn start(client: &Client, up: &Upstream) -> Observer {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let selector = format!("karpenter.sh/nodepool={}", up.pool);
        let config = watcher::Config::default().labels(&selector);
        let originals: BTreeSet<String> = up.claims.keys().cloned().collect();
        let was_drifted = up.drifted.clone();
        let claims = Api::<DynamicObject>::all_with(client.clone(), &node_claims());
        let claim_watch = {
            let seen = seen.clone();
            let mut events = watcher(claims, config.clone()).default_backoff().boxed();
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    let Ok(event) = event else { continue };
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    match event {
                        watcher::Event::Apply(c) | watcher::Event::InitApply(c) => {
                            let name = c.name_any();
                            if !originals.contains(&name) {
                                s.new_claims.insert(name.clone());
                            }
                            if c.metadata.deletion_timestamp.is_some() {
                                s.violations
                                    .push(format!("NodeClaim {name} marked for deletion"));
                            }
                            let conditions = c.data["status"]["conditions"].as_array();
                            let drifted = conditions
                                .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Drifted"));
                            let still_drifted = conditions.is_some_and(|cs| {
                                cs.iter()
                                    .any(|x| x["type"] == "Drifted" && x["status"] == "True")
                            });
                            if name == was_drifted {
                                if !still_drifted {
                                    s.violations.push(format!(
                                        "NodeClaim {name}, drifted under upstream, lost Drifted"
                                    ));
                                }
                            } else if drifted {
                                s.violations
                                    .push(format!("NodeClaim {name} has a Drifted condition"));
                            }
                        }
                        watcher::Event::Delete(c) => {
                            s.violations
                                .push(format!("NodeClaim {} deleted", c.name_any()));
                        }
                        watcher::Event::Init | watcher::Event::InitDone => {}
                    }
                }
            })
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let node_watch = {
            let seen = seen.clone();
            let mut events = watcher(nodes, config).default_backoff().boxed();
            tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    let Ok(event) = event else { continue };
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    match event {
                        watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                            let name = n.name_any();
                            if n.metadata.deletion_timestamp.is_some() {
                                s.violations
                                    .push(format!("Node {name} marked for deletion"));
                            }
                            if common::node_disrupting(&n) {
                                s.violations
                                    .push(format!("Node {name} tainted for disruption"));
                            }
                        }
                        watcher::Event::Delete(n) => {
                            s.violations.push(format!("Node {} deleted", n.name_any()));
                        }
                        watcher::Event::Init | watcher::Event::InitDone => {}
                    }
                }
            })
        };
        Observer {
            seen,
            tasks: vec![claim_watch, node_watch],
        }
    }

    fn seen(&self) -> Seen {
        let s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        Seen {
            violations: s.violations.clone(),
            new_claims: s.new_claims.clone(),
        }
    }

    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
