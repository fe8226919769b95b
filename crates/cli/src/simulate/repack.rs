//! `simulate --repack`: "what would it save here". Every pod running now is planned from
//! scratch onto new nodes (as if the cluster were empty), and the cheapest fleet found is set
//! against what today's nodes cost and against the proven lower bound.
//!
//! - Pods repacked: those bound to a node of the input, except DaemonSet pods (their
//!   DaemonSets are overhead on every new node instead) and mirror pods of static manifests
//!   (owned by their Node: they go wherever a node goes).
//! - NodePools: the input's, with their usage cleared (the fleet replaces today's nodes); with
//!   none (a cluster run by Cluster Autoscaler or by hand), one unconstrained NodePool over the
//!   whole `--catalog`.
//! - Today's cost: each Node's `node.kubernetes.io/instance-type`, `topology.kubernetes.io/zone`
//!   and `karpenter.sh/capacity-type` (on-demand when absent) priced from the catalog; when the
//!   zone has no offering, the cheapest offering of that capacity type. Nodes whose type is not
//!   in the catalog are listed as unpriced, and then no saving is claimed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as k8s;
use karpenter_solver::instance_type::find_for_pool;
use karpenter_solver::labels::{CAPACITY_TYPE, INSTANCE_TYPE, NODEPOOL, ZONE};
use karpenter_solver::{InstanceType, NodePoolView, Options, Plan, Problem, SolveError, solve};
use serde::Serialize;

use super::convert::Converted;
use super::manifests::Manifests;
use super::output::{floor, round};

/// Name of the NodePool used when the input has none.
pub const UNCONSTRAINED_POOL: &str = "repack";

/// The `repack` section of the report.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepackReport {
    /// Running pods repacked.
    pub pods: usize,
    /// Nodes today.
    pub nodes: usize,
    /// Σ catalog price of today's priced nodes.
    pub current_price_per_hour: f64,
    /// Nodes whose instance type (or capacity type) has no price in the catalog.
    pub unpriced_nodes: Vec<String>,
    /// Σ price of the cheapest fleet found for the repacked pods.
    pub price_per_hour: f64,
    /// A proven lower bound on any fleet for the pods placed, rounded down.
    pub lower_bound_per_hour: f64,
    /// Nodes of that fleet, by instance type and capacity type.
    pub fleet: Vec<FleetEntry>,
    /// Running pods no NodePool could take, with the reason.
    pub unschedulable: Vec<super::output::UnschedulableReport>,
    /// `currentPricePerHour − pricePerHour`, only when every node is priced and every pod
    /// placed (otherwise the two prices are not for the same thing): `null` then.
    pub savings_per_hour: Option<f64>,
}

/// How many nodes of one shape the fleet has.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct FleetEntry {
    /// Instance type.
    pub instance_type: String,
    /// Capacity type.
    pub capacity_type: String,
    /// Nodes.
    pub count: usize,
}

/// Plans the repack of the input's running pods.
pub fn repack(
    m: &Manifests,
    converted: &Converted,
    options: &Options,
) -> Result<RepackReport, SolveError> {
    let problem = repack_problem(m, converted);
    let plan = solve(&problem, options)?;
    let (current, unpriced) = current_cost(m, &problem.instance_types);
    Ok(report(&problem, &plan, m.nodes.len(), current, unpriced))
}

/// The running pods (see the module doc), on no node, for the input's NodePools.
fn repack_problem(m: &Manifests, converted: &Converted) -> Problem {
    let repacked: BTreeSet<String> = m
        .pods
        .iter()
        .map(|p| &*p.object)
        .filter(|p| !owned_by(p, "DaemonSet") && !owned_by(p, "Node"))
        .map(pod_key)
        .filter(|key| converted.bound.contains_key(key))
        .collect();
    let mut problem = converted.problem.clone();
    let nodes = std::mem::take(&mut problem.existing_nodes);
    problem.pods = nodes
        .into_iter()
        .flat_map(|n| n.pods)
        .filter(|p| repacked.contains(&p.key()))
        .collect();
    for pool in &mut problem.node_pools {
        pool.usage = Default::default();
    }
    if problem.node_pools.is_empty() {
        problem.node_pools.push(NodePoolView {
            name: UNCONSTRAINED_POOL.to_owned(),
            ..NodePoolView::default()
        });
    }
    problem
}

fn owned_by(pod: &k8s::Pod, kind: &str) -> bool {
    pod.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| o.kind == kind)
}

fn pod_key(pod: &k8s::Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Today's node cost from the catalog, and the nodes it cannot price.
fn current_cost(m: &Manifests, catalog: &[InstanceType]) -> (f64, Vec<String>) {
    let mut total = 0.0;
    let mut unpriced = Vec::new();
    for n in &m.nodes {
        let md = &n.object.metadata;
        let label = |k: &str| md.labels.as_ref().and_then(|l| l.get(k)).cloned();
        let it = label(INSTANCE_TYPE).unwrap_or_default();
        let pool = label(NODEPOOL).unwrap_or_default();
        let zone = label(ZONE).unwrap_or_default();
        let ct = label(CAPACITY_TYPE).unwrap_or_else(|| "on-demand".to_owned());
        match node_price(catalog, &pool, &it, &zone, &ct) {
            Some(price) => total += round(price),
            None => unpriced.push(md.name.clone().unwrap_or_default()),
        }
    }
    (total, unpriced)
}

fn node_price(catalog: &[InstanceType], pool: &str, it: &str, zone: &str, ct: &str) -> Option<f64> {
    let offerings = &find_for_pool(catalog, pool, it)?.offerings;
    let same_type = offerings.iter().filter(|o| o.capacity_type == ct);
    match offerings
        .iter()
        .find(|o| o.zone == zone && o.capacity_type == ct)
    {
        Some(o) => Some(o.price),
        None => same_type.map(|o| o.price).min_by(f64::total_cmp),
    }
}

fn report(
    problem: &Problem,
    plan: &Plan,
    nodes: usize,
    current: f64,
    unpriced: Vec<String>,
) -> RepackReport {
    let price = round(plan.node_claims.iter().map(|c| round(c.price)).sum());
    let mut fleet: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in &plan.node_claims {
        *fleet
            .entry((c.instance_type.clone(), c.capacity_type.clone()))
            .or_default() += 1;
    }
    let unschedulable: Vec<_> = plan
        .unschedulable
        .iter()
        .map(|u| super::output::UnschedulableReport {
            pod: u.pod.clone(),
            reason: u.reason.clone(),
        })
        .collect();
    let current = round(current);
    let comparable = unpriced.is_empty() && unschedulable.is_empty();
    RepackReport {
        pods: problem.pods.len(),
        nodes,
        current_price_per_hour: current,
        savings_per_hour: comparable.then(|| round(current - price)),
        unpriced_nodes: unpriced,
        price_per_hour: price,
        lower_bound_per_hour: floor(plan.lower_bound.max(0.0).min(price)),
        fleet: fleet
            .into_iter()
            .map(|((instance_type, capacity_type), count)| FleetEntry {
                instance_type,
                capacity_type,
                count,
            })
            .collect(),
        unschedulable,
    }
}

/// Lines for the table output.
pub fn render(r: &RepackReport) -> String {
    let mut out = format!(
        "\nRepack: {} running pod(s) on {} node(s) cost ${:.4}/h today",
        r.pods, r.nodes, r.current_price_per_hour
    );
    if !r.unpriced_nodes.is_empty() {
        out.push_str(&format!(
            " (without {} node(s) not in the catalog: {})",
            r.unpriced_nodes.len(),
            r.unpriced_nodes.join(", ")
        ));
    }
    let nodes: usize = r.fleet.iter().map(|f| f.count).sum();
    out.push_str(&format!(
        ";\n  the cheapest fleet found for them: {nodes} node(s) at ${:.4}/h (lower bound ${:.4}/h)",
        r.price_per_hour, r.lower_bound_per_hour
    ));
    match r.savings_per_hour {
        Some(s) => out.push_str(&format!(", saving ${s:.4}/h\n")),
        None => out.push_str(", not comparable (see unpriced nodes / unschedulable pods)\n"),
    }
    for f in &r.fleet {
        out.push_str(&format!(
            "    {} x {} ({})\n",
            f.count, f.instance_type, f.capacity_type
        ));
    }
    for u in &r.unschedulable {
        out.push_str(&format!("    cannot place {}: {}\n", u.pod, u.reason));
    }
    out
}
