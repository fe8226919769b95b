//! One e2e test's world on the real Cluster API: its namespace with a workload `Cluster`, an
//! in-memory `DevMachineTemplate`, the VM stand-in, a NodePool, and the controller running
//! in-process with the Cluster API provider scoped to that namespace, acting as a service account
//! that holds only the rules of `examples/clusterapi/rbac.yaml` ([`super::grant_example_rbac`]).
//!
//! Tests of this binary run one at a time ([`CapiEnv::start`] takes a lock): every
//! controller acts on every NodePool's NodeClaims, and a provider scoped to another test's
//! namespace would launch them from that test's MachineDeployments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use karpenter_api::labels::{NODE_POOL_LABEL, ZONE_LABEL};
use karpenter_api::v1::{
    Budget, ConsolidationPolicy, Disruption, NodeClaim, NodeClaimTemplate, NodeClaimTemplateSpec,
    NodeClassReference, NodePool, NodePoolSpec, TemplateMetadata,
};
use karpenter_clusterapi::ClusterApiProvider;
use karpenter_clusterapi::machine::MACHINE_DEPLOYMENT_LABEL;
use karpenter_clusterapi::provider::{machine_deployment_resource, machine_resource};
use karpenter_controller::{Clients, Metrics, Options, Running};
use karpenter_testkit::{TestCluster, TestNamespace, unique_name, workloads};
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Mutex, MutexGuard};

use super::{
    VmStandIn, create_machine_deployment, create_machine_template, create_workload_cluster,
    dev_resource, ensure_capi, grant_example_rbac,
};

/// Generous: CAPI reconciles on a loaded 2-core machine; a deadline only bounds a failure.
pub const TIMEOUT: Duration = Duration::from_secs(180);
/// Label each test's NodePool puts on its nodes; the test's pods select it.
pub const POOL_LABEL: &str = "e2e.example.com/pool";
/// The workload `Cluster` of every test (one per namespace).
pub const CLUSTER: &str = "w1";
/// The `DevMachineTemplate` every MachineDeployment of a test uses.
pub const TEMPLATE: &str = "dev";

static SERIAL: Mutex<()> = Mutex::const_new(());

/// How a test's NodePool disrupts.
pub fn disruption(policy: ConsolidationPolicy, after: &str) -> Disruption {
    Disruption {
        consolidate_after: after.into(),
        consolidation_policy: policy,
        // Every node at once: scale-to-zero must not wait for one node after another.
        budgets: vec![Budget {
            nodes: "100%".into(),
            ..Budget::default()
        }],
    }
}

/// Controller options: quick garbage collection, and the disruption loop planning every
/// second (validating commands for 2 s) when `disruption` is on.
pub fn options(disruption: bool) -> Options {
    Options {
        disruption,
        disruption_poll_period: Duration::from_secs(1),
        disruption_validation_period: Duration::from_secs(2),
        gc_interval: Duration::from_secs(2),
        ..Options::default()
    }
}

fn node_pool(name: &str, disruption: Disruption) -> NodePool {
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
            disruption,
            limits: BTreeMap::new(),
            weight: None,
            replicas: None,
        },
    )
}

/// Whether a pod is bound and Running.
pub fn pod_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
}

/// One test's world (see the module docs).
pub struct CapiEnv {
    pub cluster: TestCluster,
    pub client: Client,
    pub ns: Option<TestNamespace>,
    pub pool: String,
    /// The provider's launch timeout, when not its default (set before starting the
    /// controller).
    pub launch_timeout: Option<Duration>,
    /// The user the controller's provider impersonates ([`grant_example_rbac`]).
    provider_user: String,
    controller: Option<Running>,
    _vms: VmStandIn,
    _serial: MutexGuard<'static, ()>,
}

impl CapiEnv {
    /// Connects (or skips: `None`), makes sure CAPI runs, and creates the namespace, the
    /// workload Cluster, the template (its VMs boot in `vm_startup`), the stand-in and the
    /// NodePool. The controller is not started: create MachineDeployments first.
    pub async fn start(disruption: Disruption, vm_startup: &str) -> Result<Option<CapiEnv>> {
        let serial = SERIAL.lock().await;
        let _ = tracing_subscriber::fmt()
            .with_env_filter("karpenter_controller=info,karpenter_clusterapi=info")
            .with_test_writer()
            .try_init();
        let Some(cluster) = TestCluster::start().await else {
            return Ok(None);
        };
        // Blocking: the first `hack/capi/up` may build the managers.
        let for_capi = cluster.clone();
        if tokio::task::spawn_blocking(move || ensure_capi(&for_capi))
            .await?
            .is_none()
        {
            return Ok(None);
        }
        cluster.apply_crds(&karpenter_api::all_crds()).await?;
        let client = cluster.client();
        let ns = cluster.namespace().await?;
        let ns_name = ns.name().to_string();
        let pool = unique_name("capi");
        create_workload_cluster(&client, cluster.kubeconfig_path(), &ns_name, CLUSTER).await?;
        create_machine_template(&client, &ns_name, TEMPLATE, vm_startup).await?;
        let provider_user = grant_example_rbac(&client, &ns_name).await?;
        let vms = VmStandIn::start(client.clone(), &ns_name);
        Api::<NodePool>::all(client.clone())
            .create(&PostParams::default(), &node_pool(&pool, disruption))
            .await
            .context("creating the NodePool")?;
        Ok(Some(CapiEnv {
            cluster,
            client,
            ns: Some(ns),
            pool,
            launch_timeout: None,
            provider_user,
            controller: None,
            _vms: vms,
            _serial: serial,
        }))
    }

    pub fn ns(&self) -> &str {
        self.ns.as_ref().map(|n| n.name()).unwrap_or_default()
    }

    /// An opted-in MachineDeployment of this test's Cluster and template.
    pub async fn machine_deployment(&self, name: &str, annotations: &[(&str, &str)]) -> Result<()> {
        self.machine_deployment_of(name, TEMPLATE, annotations)
            .await
    }

    /// An opted-in MachineDeployment of this test's Cluster and another template.
    pub async fn machine_deployment_of(
        &self,
        name: &str,
        template: &str,
        annotations: &[(&str, &str)],
    ) -> Result<()> {
        create_machine_deployment(
            &self.client,
            self.ns(),
            CLUSTER,
            name,
            template,
            annotations,
        )
        .await
    }

    /// A provider scoped to this test's namespace (MachineDeployments other tests left behind
    /// are not ours).
    pub fn provider(&self) -> ClusterApiProvider {
        ClusterApiProvider::new(self.client.clone(), Some(self.ns().to_string()))
    }

    /// Starts the controller (stopping a running one first, as a crash would).
    pub async fn start_controller(&mut self, options: Options) -> Result<()> {
        self.stop_controller();
        let config = self.cluster.config().await?;
        let clients = Clients::new(&config)?;
        // The provider acts as a service account holding only the example's RBAC.
        let mut as_provider = config.clone();
        as_provider.auth_info.impersonate = Some(self.provider_user.clone());
        let management = Client::try_from(as_provider)?;
        let mut provider = ClusterApiProvider::new(management, Some(self.ns().to_string()));
        if let Some(timeout) = self.launch_timeout {
            provider = provider.with_launch_timeout(timeout);
        }
        let provider = Arc::new(provider);
        let (metrics, _registry) = Metrics::new();
        self.controller = Some(karpenter_controller::start(
            clients,
            provider,
            Arc::new(metrics),
            options,
        ));
        Ok(())
    }

    /// Stops the controller at once, as a crash would.
    pub fn stop_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.stop();
        }
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    pub fn claims(&self) -> Api<NodeClaim> {
        Api::all(self.client.clone())
    }

    pub fn machines(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), self.ns(), &machine_resource())
    }

    pub fn machine_deployments(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            self.ns(),
            &machine_deployment_resource(),
        )
    }

    pub fn dev_machines(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            self.ns(),
            &dev_resource("DevMachine", "devmachines"),
        )
    }

    /// This test's NodeClaims.
    pub async fn pool_claims(&self) -> Result<Vec<NodeClaim>> {
        let by_pool = ListParams::default().labels(&format!("{NODE_POOL_LABEL}={}", self.pool));
        Ok(self.claims().list(&by_pool).await?.items)
    }

    /// Creates a Deployment `name` of `replicas` pods requesting `cpu`, on this test's pool
    /// and, if given, in `zone`.
    pub async fn deploy(
        &self,
        name: &str,
        replicas: i32,
        cpu: &str,
        zone: Option<&str>,
    ) -> Result<()> {
        let mut spec = workloads::pod_spec(cpu, POOL_LABEL, &self.pool);
        if let (Some(zone), Some(selector)) = (zone, spec.node_selector.as_mut()) {
            selector.insert(ZONE_LABEL.into(), zone.into());
        }
        self.deployments()
            .create(
                &PostParams::default(),
                &workloads::deployment(name, replicas, spec),
            )
            .await
            .with_context(|| format!("creating Deployment {name}"))?;
        Ok(())
    }

    /// The pods of Deployment `app`.
    pub async fn app_pods(&self, app: &str) -> Result<Vec<Pod>> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), self.ns())
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await?
            .items)
    }

    /// Waits until the `n` pods of `app` run, and returns the names of their nodes.
    pub async fn wait_running(&self, app: &str, n: usize) -> Result<Vec<String>> {
        Ok(self
            .cluster
            .wait_for(TIMEOUT, format!("{n} pods of {app} Running"), || async {
                let pods = self.app_pods(app).await?;
                let nodes: Vec<String> = pods
                    .iter()
                    .filter(|p| pod_running(p))
                    .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
                    .collect();
                Ok::<_, anyhow::Error>((nodes.len() == n && pods.len() == n).then_some(nodes))
            })
            .await?)
    }

    /// The MachineDeployment the Machine `name` was launched from.
    pub async fn origin(&self, machine: &str) -> Result<String> {
        let m = self.machines().get(machine).await?;
        m.labels()
            .get(MACHINE_DEPLOYMENT_LABEL)
            .cloned()
            .with_context(|| format!("Machine {machine} has no {MACHINE_DEPLOYMENT_LABEL} label"))
    }

    /// Waits for a `karpenter` Event with `reason` on MachineDeployment `md`, and returns its
    /// note.
    pub async fn wait_md_event(&self, md: &str, reason: &str) -> Result<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), self.ns());
        Ok(self
            .cluster
            .wait_for(
                TIMEOUT,
                format!("a {reason} Event on MachineDeployment {md}"),
                || async {
                    let list = events.list(&ListParams::default()).await?;
                    Ok::<_, kube::Error>(list.items.into_iter().find_map(|e| {
                        let regarding = e.regarding.as_ref();
                        let on_md = regarding.and_then(|r| r.name.as_deref()) == Some(md)
                            && regarding.and_then(|r| r.kind.as_deref())
                                == Some("MachineDeployment");
                        let ours = e.reporting_controller.as_deref() == Some("karpenter");
                        (on_md && ours && e.reason.as_deref() == Some(reason))
                            .then(|| e.note.unwrap_or_default())
                    }))
                },
            )
            .await?)
    }

    /// Checks that every Machine of the namespace is named after one of this test's
    /// NodeClaims, one per claim, and returns them by name.
    pub async fn machines_match_claims(&self) -> Result<BTreeMap<String, DynamicObject>> {
        let claims: BTreeSet<String> = self
            .pool_claims()
            .await?
            .iter()
            .map(|c| c.name_any())
            .collect();
        let machines: BTreeMap<String, DynamicObject> = self
            .machines()
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|m| (m.name_any(), m))
            .collect();
        let names: BTreeSet<String> = machines.keys().cloned().collect();
        ensure!(
            names == claims,
            "Machines {names:?} should be exactly one per NodeClaim {claims:?}"
        );
        Ok(machines)
    }

    /// Removes what the test made, the controller still running (it owns the finalizers):
    /// Deployments, NodeClaims (and so Machines and Nodes), the NodePool, the namespace.
    pub async fn cleanup(mut self) -> Result<()> {
        if self.controller.is_none() {
            self.start_controller(options(false)).await?;
        }
        for d in self.deployments().list(&ListParams::default()).await?.items {
            let _ = self
                .deployments()
                .delete(&d.name_any(), &DeleteParams::background())
                .await;
        }
        for c in self.pool_claims().await? {
            let _ = self
                .claims()
                .delete(&c.name_any(), &DeleteParams::background())
                .await;
        }
        let cleaned = self
            .cluster
            .wait_for(
                TIMEOUT,
                "this test's NodeClaims and Machines gone",
                || async {
                    let claims = self.pool_claims().await?.len();
                    let machines = self.machines().list(&ListParams::default()).await?.items;
                    Ok::<_, anyhow::Error>((claims == 0 && machines.is_empty()).then_some(()))
                },
            )
            .await;
        let _ = Api::<NodePool>::all(self.client.clone())
            .delete(&self.pool, &DeleteParams::background())
            .await;
        self.stop_controller();
        if let Some(ns) = self.ns.take() {
            ns.cleanup().await?;
        }
        cleaned?;
        Ok(())
    }

    /// Nodes named after any of `names` (Nodes are named after their Machines here).
    pub async fn nodes_named(&self, names: &BTreeSet<String>) -> Result<Vec<String>> {
        Ok(Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|n| n.name_any())
            .filter(|n| names.contains(n))
            .collect())
    }
}
