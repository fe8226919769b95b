//! The gauges read off the cluster state on a tick, as upstream's metrics controllers do
//! (`pkg/controllers/metrics/{node,nodepool,pod}`, `pkg/controllers/state`): per-node
//! allocatable / pod requests / daemon requests / overhead, cluster utilization, NodePool
//! usage, limits and cost per hour, the cluster state's node count and sync, and pod startup
//! durations.
//!
//! Cost: one pass over the Nodes, one over the pods (through the node → pods index, never a
//! pods × nodes product, never an API List), every [`TICK`]. Series of nodes and NodePools
//! that are gone are removed; a scrape never sees a family half rebuilt (new values are set
//! before stale series go).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Node;
use karpenter_api::labels::{
    ARCH_LABEL, CAPACITY_TYPE_LABEL, INSTANCE_TYPE_LABEL, NODE_POOL_LABEL, OS_LABEL, REGION_LABEL,
    WINDOWS_BUILD_LABEL, ZONE_LABEL,
};
use karpenter_api::solver_input::{add_pool_usage, node_capacity, parse_resources, pod_requests};
use karpenter_providers::OfferingKey;
use karpenter_solver::Resources;
use karpenter_solver::resources::{CPU, MEMORY};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::labels::resource_type;
use super::{Metrics, NodeLabels, Pool, ResourcePool, ResourceType};
use crate::context::Context;
use crate::pods::is_daemon_set_pod;
use crate::state::StoredPod as Pod;
use crate::state::legacy::effective_node_pools;

/// How often the gauges are recomputed (upstream's node metrics controller: 5 s).
pub const TICK: Duration = Duration::from_secs(5);
/// How long offering prices are reused before the provider is asked again.
const PRICES_TTL: Duration = Duration::from_secs(60);

type FloatFamily<L> = Family<L, Gauge<f64, AtomicU64>>;

/// Recomputes the gauges every [`TICK`] until dropped; the series it set go with it (a replica
/// that stops leading no longer reports them).
pub async fn run(ctx: Arc<Context>) {
    let mut recorder = Recorder::new(ctx.metrics.clone());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        recorder.record(&ctx).await;
    }
}

/// The series set by the last pass, per family, so the next pass removes those gone.
#[derive(Default)]
struct Set {
    allocatable: BTreeSet<NodeLabels>,
    pod_requests: BTreeSet<NodeLabels>,
    daemon_requests: BTreeSet<NodeLabels>,
    overhead: BTreeSet<NodeLabels>,
    utilization: BTreeSet<ResourceType>,
    usage: BTreeSet<ResourcePool>,
    limit: BTreeSet<ResourcePool>,
    cost: BTreeSet<Pool>,
}

/// The tick's memory: what it set, which pods' startup it recorded, the offering prices.
pub struct Recorder {
    metrics: Arc<Metrics>,
    set: Set,
    /// Pods (by UID) whose startup was observed; pruned to the live pods each pass.
    started: HashSet<String>,
    /// Pods that became Ready before this (milliseconds since the epoch) are not observed: a
    /// restarted controller must not count the whole cluster's pods again.
    since_ms: i64,
    prices: HashMap<OfferingKey, f64>,
    prices_at: Option<Instant>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let m = &self.metrics;
        let empty = Set::default();
        retire(
            &m.nodes_allocatable,
            &self.set.allocatable,
            &empty.allocatable,
        );
        retire(
            &m.nodes_total_pod_requests,
            &self.set.pod_requests,
            &empty.pod_requests,
        );
        retire(
            &m.nodes_total_daemon_requests,
            &self.set.daemon_requests,
            &empty.daemon_requests,
        );
        retire(
            &m.nodes_system_overhead,
            &self.set.overhead,
            &empty.overhead,
        );
        retire(
            &m.cluster_utilization,
            &self.set.utilization,
            &empty.utilization,
        );
        retire(&m.nodepools_usage, &self.set.usage, &empty.usage);
        retire(&m.nodepools_limit, &self.set.limit, &empty.limit);
        retire(&m.nodepools_cost_per_hour, &self.set.cost, &empty.cost);
    }
}

/// Removes the series of `old` that `new` no longer has.
fn retire<L: Ord + Clone + Hash + Eq, M>(
    family: &Family<L, M>,
    old: &BTreeSet<L>,
    new: &BTreeSet<L>,
) where
    M: prometheus_client::metrics::TypedMetric,
{
    for gone in old.difference(new) {
        family.remove(gone);
    }
}

/// Sets one float gauge per resource, remembering the series in `set`. Resources named in
/// `zeros` but absent from `resources` are reported as 0 (rather than missing), so that sums and
/// ratios over nodes and NodePools without pods, daemons or nodes still have a value.
fn set_resources<'a, L: Clone + Hash + Eq + Ord>(
    family: &FloatFamily<L>,
    set: &mut BTreeSet<L>,
    resources: &'a Resources,
    zeros: impl IntoIterator<Item = &'a str>,
    labels: impl Fn(String) -> L,
) {
    let names: BTreeSet<&str> = resources
        .0
        .keys()
        .map(String::as_str)
        .chain(zeros)
        .collect();
    for name in names {
        let l = labels(resource_type(name));
        family
            .get_or_create(&l)
            .set(value(name, resources.get(name)));
        set.insert(l);
    }
}

/// A resource amount as upstream reports it: cpu in cores, everything else in base units.
fn value(name: &str, v: i64) -> f64 {
    if name == CPU {
        v as f64 / 1000.0
    } else {
        v as f64
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A node's labels for its gauges, without `resource_type`.
fn node_labels(node: &Node, managed: bool) -> NodeLabels {
    let labels = node.metadata.labels.as_ref();
    let get = |k: &str| labels.and_then(|l| l.get(k)).cloned().unwrap_or_default();
    NodeLabels {
        node_name: node.metadata.name.clone().unwrap_or_default(),
        phase: node
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        managed: managed.to_string(),
        nodepool: get(NODE_POOL_LABEL),
        zone: get(ZONE_LABEL),
        region: get(REGION_LABEL),
        instance_type: get(INSTANCE_TYPE_LABEL),
        arch: get(ARCH_LABEL),
        os: get(OS_LABEL),
        capacity_type: get(CAPACITY_TYPE_LABEL),
        windows_build: get(WINDOWS_BUILD_LABEL),
        resource_type: String::new(),
    }
}

/// When the pod became Ready (milliseconds since the epoch), if it is.
fn ready_at_ms(pod: &Pod) -> Option<i64> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref()?.0.as_millisecond())
}

impl Recorder {
    /// A recorder that observes the startup of pods becoming Ready from now on.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            set: Set::default(),
            started: HashSet::new(),
            since_ms: now_ms(),
            prices: HashMap::new(),
            prices_at: None,
        }
    }

    /// One pass over the state.
    pub async fn record(&mut self, ctx: &Context) {
        let mut set = Set::default();
        self.nodes(ctx, &mut set);
        self.node_pools(ctx, &mut set).await;
        self.pod_startups(ctx);
        let m = &self.metrics;
        m.cluster_state_synced.set(i64::from(ctx.state.is_synced()));
        let old = std::mem::replace(&mut self.set, set);
        let new = &self.set;
        retire(&m.nodes_allocatable, &old.allocatable, &new.allocatable);
        retire(
            &m.nodes_total_pod_requests,
            &old.pod_requests,
            &new.pod_requests,
        );
        retire(
            &m.nodes_total_daemon_requests,
            &old.daemon_requests,
            &new.daemon_requests,
        );
        retire(&m.nodes_system_overhead, &old.overhead, &new.overhead);
        retire(&m.cluster_utilization, &old.utilization, &new.utilization);
        retire(&m.nodepools_usage, &old.usage, &new.usage);
        retire(&m.nodepools_limit, &old.limit, &new.limit);
        retire(&m.nodepools_cost_per_hour, &old.cost, &new.cost);
    }

    /// Per-node gauges, cluster utilization and the cluster state's node count.
    fn nodes(&self, ctx: &Context, set: &mut Set) {
        let m = &self.metrics;
        let state = &ctx.state;
        let (mut allocatable_sum, mut requests_sum) = (Resources::new(), Resources::new());
        let nodes = state.nodes.state();
        let mut node_count = nodes.len();
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let object = format!("Node {name}");
            let status = node.status.as_ref();
            let allocatable = status
                .and_then(|s| s.allocatable.as_ref())
                .map_or(Ok(Resources::new()), |a| {
                    parse_resources(&object, "status.allocatable", a)
                });
            let (Ok(allocatable), Ok(capacity)) = (allocatable, node_capacity(node)) else {
                // A node with unparsable resources has no meaningful gauges; the loops that
                // read it report the error.
                continue;
            };
            let (mut requests, mut daemons) = (Resources::new(), Resources::new());
            for pod in state.pods_on_node(&name) {
                // A pod whose requests do not parse is left out of the sums (the API server
                // validated them, so this does not happen in practice).
                let Ok(r) = pod_requests(&pod) else { continue };
                requests.add(&r);
                if is_daemon_set_pod(&pod) {
                    daemons.add(&r);
                }
            }
            let base = node_labels(node, state.node_claim_for_node(&name).is_some());
            let with = |resource_type: String| NodeLabels {
                resource_type,
                ..base.clone()
            };
            let none = || std::iter::empty::<&str>();
            let alloc_keys = || allocatable.0.keys().map(String::as_str);
            let (family, series) = (&m.nodes_allocatable, &mut set.allocatable);
            set_resources(family, series, &allocatable, none(), with);
            let (family, series) = (&m.nodes_total_pod_requests, &mut set.pod_requests);
            set_resources(family, series, &requests, alloc_keys(), with);
            let (family, series) = (&m.nodes_total_daemon_requests, &mut set.daemon_requests);
            set_resources(family, series, &daemons, alloc_keys(), with);
            let overhead = capacity.minus(&allocatable);
            let (family, series) = (&m.nodes_system_overhead, &mut set.overhead);
            set_resources(family, series, &overhead, none(), with);
            allocatable_sum.add(&allocatable);
            requests_sum.add(&requests);
        }
        for (name, total) in &allocatable_sum.0 {
            if *total <= 0 {
                continue;
            }
            let l = ResourceType {
                resource_type: resource_type(name),
            };
            let pct = 100.0 * requests_sum.get(name) as f64 / *total as f64;
            m.cluster_utilization.get_or_create(&l).set(pct);
            set.utilization.insert(l);
        }
        // NodeClaims not (yet) backed by a Node count too, as upstream's state nodes do.
        for claim in state.all_node_claims() {
            let pid = claim.status.as_ref().and_then(|s| s.provider_id.as_deref());
            if pid.is_none_or(|pid| state.nodes_for_provider_id(pid).is_empty()) {
                node_count += 1;
            }
        }
        m.cluster_state_node_count
            .set(i64::try_from(node_count).unwrap_or(i64::MAX));
    }

    /// NodePool usage (the capacity of its nodes), limits and cost per hour.
    async fn node_pools(&mut self, ctx: &Context, set: &mut Set) {
        let m = self.metrics.clone();
        let state = &ctx.state;
        let pools = effective_node_pools(state.node_pools.state(), &state.provisioners.state());
        let mut usage: BTreeMap<String, Resources> = BTreeMap::new();
        for node in state.nodes.state() {
            // Bad capacities are left out, as in the per-node gauges.
            let _ = add_pool_usage(&mut usage, &node);
        }
        let mut cost: BTreeMap<String, f64> = BTreeMap::new();
        for pool in &pools {
            let name = pool.metadata.name.clone().unwrap_or_default();
            let u = usage.remove(&name).unwrap_or_default();
            // A NodePool without nodes still reports 0 of what its limits usually name.
            let always = [CPU, MEMORY, karpenter_api::solver_input::NODES];
            let labels = |resource_type| ResourcePool {
                resource_type,
                nodepool: name.clone(),
            };
            set_resources(&m.nodepools_usage, &mut set.usage, &u, always, labels);
            let object = format!("NodePool {name}");
            if let Ok(limits) = parse_resources(&object, "spec.limits", &pool.spec.limits) {
                let none = std::iter::empty::<&str>();
                set_resources(&m.nodepools_limit, &mut set.limit, &limits, none, labels);
            }
            cost.insert(name, 0.0);
        }
        let claims = state.all_node_claims();
        let offering = |c: &karpenter_api::v1::NodeClaim| {
            let l = c.metadata.labels.as_ref()?;
            Some((
                l.get(NODE_POOL_LABEL)?.clone(),
                OfferingKey {
                    instance_type: l.get(INSTANCE_TYPE_LABEL)?.clone(),
                    zone: l.get(ZONE_LABEL)?.clone(),
                    capacity_type: l.get(CAPACITY_TYPE_LABEL)?.clone(),
                },
            ))
        };
        let launched: Vec<_> = claims.iter().filter_map(|c| offering(c)).collect();
        let stale = self.prices_at.is_none_or(|at| at.elapsed() >= PRICES_TTL);
        if stale || launched.iter().any(|(_, k)| !self.prices.contains_key(k)) {
            self.refresh_prices(ctx, &pools).await;
        }
        for (pool, key) in launched {
            if let Some(price) = self.prices.get(&key) {
                *cost.entry(pool).or_default() += price;
            }
        }
        for (nodepool, c) in cost {
            let l = Pool { nodepool };
            m.nodepools_cost_per_hour.get_or_create(&l).set(c);
            set.cost.insert(l);
        }
    }

    /// Asks the provider for every NodePool's offerings (at most once per [`PRICES_TTL`]
    /// unless a NodeClaim's offering is unknown, and then at most once per tick).
    async fn refresh_prices(&mut self, ctx: &Context, pools: &[Arc<karpenter_api::v1::NodePool>]) {
        let mut prices = HashMap::new();
        for pool in pools {
            match ctx.provider.instance_types(pool).await {
                Ok(types) => {
                    for it in types {
                        for o in it.offerings {
                            let key = OfferingKey {
                                instance_type: it.name.clone(),
                                zone: o.zone,
                                capacity_type: o.capacity_type,
                            };
                            prices.insert(key, o.price);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "instance types for the cost metric");
                }
            }
        }
        self.prices = prices;
        self.prices_at = Some(Instant::now());
    }

    /// Observes creation → Ready of every pod that became Ready since the last pass.
    fn pod_startups(&mut self, ctx: &Context) {
        let pods = ctx.state.pods.state();
        let mut live = HashSet::with_capacity(pods.len());
        for pod in &pods {
            let Some(uid) = pod.metadata.uid.as_deref() else {
                continue;
            };
            live.insert(uid);
            if self.started.contains(uid) {
                continue;
            }
            let Some(ready) = ready_at_ms(pod) else {
                continue;
            };
            self.started.insert(uid.to_string());
            let created = pod.metadata.creation_timestamp.as_ref();
            if ready < self.since_ms {
                continue;
            }
            if let Some(created) = created.map(|t| t.0.as_millisecond()) {
                let secs = (ready - created).max(0) as f64 / 1000.0;
                self.metrics.pods_startup_duration.observe(secs);
            }
        }
        self.started.retain(|uid| live.contains(uid.as_str()));
    }
}
