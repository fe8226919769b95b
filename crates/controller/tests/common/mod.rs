//! Shared set-up of the e2e tests: a real control plane (testkit), our CRDs, a KWOKNodeClass
//! and a NodePool with names unique to the test, and the controller running in-process.
//!
//! Each test's NodePool stamps a unique label on its nodes and the test's pods select it, so a
//! pool left over by another test can never serve them. Cluster-scoped objects are removed by
//! [`Env::cleanup`] while the controller still runs (it owns the finalizers).

#![allow(dead_code, clippy::unwrap_used)]

pub mod overlay;
pub mod repair;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use karpenter_api::kwok::{KWOKNodeClass, KWOKNodeClassSpec};
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_api::v1::{
    NodeClaim, NodeClaimTemplate, NodeClaimTemplateSpec, NodeClassReference, NodePool,
    NodePoolSpec, NodeSelectorRequirementWithMinValues, Operator, TemplateMetadata,
};
use karpenter_controller::{Clients, Metrics, Options, Running};
use karpenter_providers::kwok::KwokProvider;
use karpenter_solver::InstanceType;
use karpenter_testkit::proxy::{DelayingProxy, Lag};
use karpenter_testkit::{TestCluster, TestNamespace, unique_name, workloads};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, ResourceExt};

/// Label each test's NodePool puts on its nodes; the test's pods select it.
pub const POOL_LABEL: &str = "e2e.example.com/pool";
/// Generous: a cold local control plane can be slow, and a deadline only bounds a failure.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// One test's world.
pub struct Env {
    pub cluster: TestCluster,
    pub client: Client,
    pub ns: Option<TestNamespace>,
    pub pool: String,
    pub class: String,
    pub controller: Running,
    /// The proxy the controller sees the cluster through, if any (stops when dropped).
    _proxy: Option<DelayingProxy>,
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "karpenter_controller=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Options for tests: upstream's batch windows, quick garbage collection, no disruption (the
/// tests of other loops must not see their nodes consolidated under them).
pub fn test_options() -> Options {
    Options {
        gc_interval: Duration::from_secs(1),
        gc_grace: Duration::from_secs(3),
        disruption: false,
        ..Options::default()
    }
}

/// [`test_options`] with the disruption loop on, planning every second and validating
/// emptiness and consolidation commands for `validation`.
pub fn disruption_options(validation: Duration) -> Options {
    Options {
        disruption: true,
        disruption_poll_period: Duration::from_secs(1),
        disruption_validation_period: validation,
        ..test_options()
    }
}

impl Env {
    /// Connects (or skips: `None`), installs the CRDs, creates the NodeClass and NodePool and
    /// starts the controller with [`test_options`].
    pub async fn start() -> Result<Option<Env>> {
        Self::start_with(test_options()).await
    }

    /// [`Env::start`] with these controller options.
    pub async fn start_with(options: Options) -> Result<Option<Env>> {
        Self::start_seeing(options, None).await
    }

    /// [`Env::start_with`], the controller seeing the cluster through a proxy that makes the
    /// watches `lag` names late (the test reads the cluster directly).
    pub async fn start_lagging(options: Options, lag: Lag) -> Result<Option<Env>> {
        Self::start_seeing(options, Some(lag)).await
    }

    /// [`Env::start_with`], the kwok provider launching from `catalog` (e.g. the generated one
    /// plus reservations) and the NodePool adjusted by `pool` before it is created.
    pub async fn start_with_catalog(
        options: Options,
        catalog: Vec<InstanceType>,
        pool: impl FnOnce(&mut NodePool),
    ) -> Result<Option<Env>> {
        Self::start_full(options, None, Some(catalog), pool).await
    }

    async fn start_seeing(options: Options, lag: Option<Lag>) -> Result<Option<Env>> {
        Self::start_full(options, lag, None, |_| {}).await
    }

    async fn start_full(
        options: Options,
        lag: Option<Lag>,
        catalog: Option<Vec<InstanceType>>,
        adjust: impl FnOnce(&mut NodePool),
    ) -> Result<Option<Env>> {
        init_logs();
        let Some(cluster) = TestCluster::start().await else {
            return Ok(None);
        };
        cluster.apply_crds(&karpenter_api::all_crds()).await?;
        let client = cluster.client();
        let ns = cluster.namespace().await?;
        let pool = unique_name("e2e");
        let class = unique_name("e2e-class");
        Api::<KWOKNodeClass>::all(client.clone())
            .create(
                &PostParams::default(),
                &KWOKNodeClass::new(&class, KWOKNodeClassSpec::default()),
            )
            .await
            .context("creating the KWOKNodeClass")?;
        let mut np = node_pool(&pool, &class);
        adjust(&mut np);
        Api::<NodePool>::all(client.clone())
            .create(&PostParams::default(), &np)
            .await
            .context("creating the NodePool")?;
        let (controller, proxy) = match (lag, catalog) {
            (None, Some(catalog)) => (
                start_controller_on(&cluster.config().await?, options, catalog)?,
                None,
            ),
            (None, None) => (start_controller(&cluster, options).await?, None),
            (Some(lag), _) => {
                let proxy = DelayingProxy::start(client.clone(), lag).await?;
                let controller = start_controller_with(&proxy.config()?, options)?;
                (controller, Some(proxy))
            }
        };
        Ok(Some(Env {
            cluster,
            client,
            ns: Some(ns),
            pool,
            class,
            controller,
            _proxy: proxy,
        }))
    }

    /// An `Env` over a world the test made itself (e.g. objects another installation left),
    /// so [`Env::cleanup`] and the helpers below work on it.
    pub fn from_parts(
        cluster: TestCluster,
        ns: TestNamespace,
        pool: String,
        class: String,
        controller: Running,
    ) -> Env {
        let client = cluster.client();
        Env {
            cluster,
            client,
            ns: Some(ns),
            pool,
            class,
            controller,
            _proxy: None,
        }
    }

    pub fn ns(&self) -> &str {
        self.ns.as_ref().map(|n| n.name()).unwrap_or_default()
    }

    /// A pod requesting `cpu`, selecting this test's pool.
    pub fn pod(&self, name: &str, cpu: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("app".to_string(), name.to_string())])),
                ..ObjectMeta::default()
            },
            spec: Some(self.pod_spec(cpu)),
            status: None,
        }
    }

    pub fn pod_spec(&self, cpu: &str) -> PodSpec {
        workloads::pod_spec(cpu, POOL_LABEL, &self.pool)
    }

    /// A Deployment of `replicas` pods requesting `cpu` each, labelled `app=<name>`, on this
    /// test's pool.
    pub fn deployment(&self, name: &str, replicas: i32, cpu: &str) -> Deployment {
        workloads::deployment(name, replicas, self.pod_spec(cpu))
    }

    /// The pods labelled `app=<app>` in the test namespace.
    pub async fn app_pods(&self, app: &str) -> Result<Vec<Pod>> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), self.ns())
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await?
            .items)
    }

    /// Limits the test's NodePool to kwok instance types of fewer than `below` vCPUs (the
    /// catalog goes up to 256, and tests that count or shape nodes want small ones).
    pub async fn limit_instance_cpu(&self, below: u32) -> Result<()> {
        let requirement = serde_json::json!([{
            "op": "add",
            "path": "/spec/template/spec/requirements/-",
            "value": {"key": "karpenter.kwok.sh/instance-cpu", "operator": "Lt", "values": [below.to_string()]}
        }]);
        Api::<NodePool>::all(self.client.clone())
            .patch(
                &self.pool,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Json::<()>(serde_json::from_value(requirement)?),
            )
            .await?;
        Ok(())
    }

    /// Disruption planning rounds the Env's controller has run so far (the evaluation-duration
    /// histogram's count: one observation per round that reached the planner).
    pub fn disruption_rounds(&self) -> u64 {
        self.controller
            .context
            .metrics
            .disruption_evaluation_duration
            .count()
    }

    /// Waits until exactly `n` pods of `app` are bound and Running.
    pub async fn wait_running(&self, app: &str, n: usize) -> Result<()> {
        self.cluster
            .wait_for(TIMEOUT, format!("{n} pods of {app} Running"), || async {
                let pods = self.app_pods(app).await?;
                let running = pods.iter().filter(|p| pod_running(p)).count();
                Ok::<_, anyhow::Error>((running == n && pods.len() == n).then_some(()))
            })
            .await?;
        Ok(())
    }

    /// kwok instances of this pool: Nodes the provider created (its managed label) for this
    /// pool's NodeClaims, found through the provider itself.
    pub async fn instances(&self) -> Result<Vec<NodeClaim>> {
        let provider = KwokProvider::new(self.client.clone());
        let all = karpenter_providers::CloudProvider::list(&provider).await?;
        Ok(all
            .into_iter()
            .filter(|i| {
                i.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(NODE_POOL_LABEL))
                    == Some(&self.pool)
            })
            .collect())
    }

    /// The node pod `name` (in the test namespace) runs on, once it runs.
    pub async fn running_on(&self, name: &str) -> Result<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), self.ns());
        self.cluster
            .wait_for(TIMEOUT, format!("pod {name} Running"), || async {
                let p = pods.get(name).await?;
                Ok::<_, kube::Error>(
                    pod_running(&p)
                        .then(|| p.spec.and_then(|s| s.node_name))
                        .flatten(),
                )
            })
            .await
            .map_err(Into::into)
    }

    /// This pool's NodeClaims.
    pub async fn node_claims(&self) -> Result<Vec<NodeClaim>> {
        Ok(Api::<NodeClaim>::all(self.client.clone())
            .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={}", self.pool)))
            .await?
            .items)
    }

    /// This pool's Nodes.
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        Ok(Api::<Node>::all(self.client.clone())
            .list(&ListParams::default().labels(&format!("{NODE_POOL_LABEL}={}", self.pool)))
            .await?
            .items)
    }

    /// Removes everything the test made: the namespace, then this pool's NodeClaims (the
    /// controller drains and deletes their nodes), then the NodePool and NodeClass; stops the
    /// controller last.
    pub async fn cleanup(mut self) -> Result<()> {
        if let Some(ns) = self.ns.take() {
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns.name());
            ns.cleanup().await?;
            // Until its pods are gone, a pod left pending (its node just went) would get a
            // NodeClaim after the pass below.
            self.cluster
                .wait_for(TIMEOUT, "the namespace's pods to be gone", || async {
                    let left = pods.list(&ListParams::default()).await?.items.len();
                    Ok::<_, anyhow::Error>((left == 0).then_some(()))
                })
                .await?;
        }
        let claims: Api<NodeClaim> = Api::all(self.client.clone());
        for c in self.node_claims().await? {
            let _ = claims
                .delete(&c.name_any(), &DeleteParams::background())
                .await;
        }
        self.cluster
            .wait_for(
                TIMEOUT,
                "the pool's NodeClaims and Nodes to be gone",
                || async {
                    let left = self.node_claims().await?.len() + self.nodes().await?.len();
                    Ok::<_, anyhow::Error>((left == 0).then_some(()))
                },
            )
            .await?;
        let _ = Api::<NodePool>::all(self.client.clone())
            .delete(&self.pool, &DeleteParams::background())
            .await;
        let _ = Api::<KWOKNodeClass>::all(self.client.clone())
            .delete(&self.class, &DeleteParams::background())
            .await;
        self.controller.stop();
        Ok(())
    }
}

/// Starts an in-process controller with the kwok provider.
pub async fn start_controller(cluster: &TestCluster, options: Options) -> Result<Running> {
    start_controller_with(&cluster.config().await?, options)
}

/// Starts an in-process controller with the kwok provider, on this client configuration.
pub fn start_controller_with(config: &kube::Config, options: Options) -> Result<Running> {
    start_controller_on(config, options, karpenter_providers::kwok::catalog())
}

/// Starts an in-process controller with the kwok provider over `catalog`.
pub fn start_controller_on(
    config: &kube::Config,
    options: Options,
    catalog: Vec<InstanceType>,
) -> Result<Running> {
    let clients = Clients::new(config)?;
    let provider = Arc::new(KwokProvider::with_catalog(clients.client.clone(), catalog));
    let (metrics, _registry) = Metrics::new();
    Ok(karpenter_controller::start(
        clients,
        provider,
        Arc::new(metrics),
        options,
    ))
}

/// A NodePool over the kwok NodeClass, on-demand linux amd64, labelling its nodes with
/// [`POOL_LABEL`].
pub fn node_pool(name: &str, class: &str) -> NodePool {
    let req = |key: &str, values: &[&str]| NodeSelectorRequirementWithMinValues {
        key: key.into(),
        operator: Operator::In,
        values: values.iter().map(|v| v.to_string()).collect(),
        min_values: None,
    };
    NodePool::new(
        name,
        NodePoolSpec {
            template: NodeClaimTemplate {
                metadata: TemplateMetadata {
                    labels: BTreeMap::from([(POOL_LABEL.to_string(), name.to_string())]),
                    annotations: BTreeMap::new(),
                },
                spec: NodeClaimTemplateSpec {
                    requirements: vec![
                        req("karpenter.sh/capacity-type", &["on-demand"]),
                        req("kubernetes.io/arch", &["amd64"]),
                    ],
                    node_class_ref: NodeClassReference {
                        group: "karpenter.kwok.sh".into(),
                        kind: "KWOKNodeClass".into(),
                        name: class.into(),
                    },
                    expire_after: "Never".into(),
                    ..NodeClaimTemplateSpec::default()
                },
            },
            disruption: Default::default(),
            limits: BTreeMap::new(),
            weight: None,
            replicas: None,
        },
    )
}

/// Whether a condition of the NodeClaim is True.
pub fn claim_condition(c: &NodeClaim, type_: &str) -> bool {
    c.status
        .as_ref()
        .and_then(|s| karpenter_api::v1::find_condition(&s.conditions, type_))
        .is_some_and(|c| c.is_true())
}

/// Whether the Node reports Ready.
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The hourly price of a kwok Node's offering (instance type, zone, capacity type labels).
pub fn node_price(n: &Node) -> Option<f64> {
    let l = n.metadata.labels.as_ref()?;
    let it = l.get("node.kubernetes.io/instance-type")?;
    let zone = l.get("topology.kubernetes.io/zone")?;
    let ct = l.get("karpenter.sh/capacity-type")?;
    karpenter_providers::kwok::catalog()
        .into_iter()
        .find(|t| &t.name == it)?
        .offerings
        .into_iter()
        .find(|o| &o.zone == zone && &o.capacity_type == ct)
        .map(|o| o.price)
}

/// The test pool's nodes now: how many, and their hourly price.
pub async fn fleet(env: &Env) -> Result<(usize, f64)> {
    let nodes = env.nodes().await?;
    let price = nodes.iter().filter_map(node_price).sum();
    Ok((nodes.len(), price))
}

/// Whether the Node is being disrupted: tainted `karpenter.sh/disrupted` or being deleted.
pub fn node_disrupting(n: &Node) -> bool {
    n.metadata.deletion_timestamp.is_some()
        || n.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == "karpenter.sh/disrupted"))
}

/// Whether the pod is bound and Running.
pub fn pod_running(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// A NodeClaim for one CPU on the kwok NodeClass `class` (no requirements), never expiring:
/// for tests that drive the provider directly.
pub fn one_cpu_claim(name: &str, class: &str) -> karpenter_api::v1::NodeClaim {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use karpenter_api::v1::{NodeClaim, NodeClaimSpec, NodeClassReference, ResourceRequirements};
    NodeClaim::new(
        name,
        NodeClaimSpec {
            taints: vec![],
            startup_taints: vec![],
            requirements: vec![],
            resources: ResourceRequirements {
                requests: BTreeMap::from([("cpu".to_string(), Quantity("1".into()))]),
            },
            node_class_ref: NodeClassReference {
                group: "karpenter.kwok.sh".into(),
                kind: "KWOKNodeClass".into(),
                name: class.to_string(),
            },
            termination_grace_period: None,
            expire_after: "Never".into(),
        },
    )
}
