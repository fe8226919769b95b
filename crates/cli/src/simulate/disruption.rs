//! `simulate` shows disruption: the Karpenter-managed Nodes of the input (label
//! `karpenter.sh/nodepool`) with their pods → the solver's disruption planner → the
//! `disruptions` array of the report (design.md §6).
//!
//! What a Node tells: NodePool, instance type, capacity type and zone from its labels (the
//! price is that offering's in the catalog), creation time from `metadata.creationTimestamp`,
//! `karpenter.sh/do-not-disrupt` from its annotations; it is initialized unless its `Ready`
//! condition says otherwise, and already disrupting when it is being deleted or carries the
//! `karpenter.sh/disrupted` taint. It is drifted when its labels no longer satisfy its
//! NodePool's requirements or its instance type is not in the catalog.
//!
//! **Time.** The planner needs "now" (consolidateAfter, expireAfter, do-not-disrupt
//! durations, budget windows). So that the output depends on the input only, `now` is the
//! newest `metadata.creationTimestamp` in the input (Nodes, Pods, DaemonSets, PDBs, NodePools),
//! or the Unix epoch when there is none; an object without a timestamp is taken as created at
//! `now`. A pod's last event on a node is the newest creation time of the pods running there.
//!
//! Pending pods that the provisioning plan puts on existing nodes are bound there first, so a
//! disruption never counts on room the plan already gave away; the plan's new NodeClaims are
//! not part of the cluster yet and are neither candidates nor destinations.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use karpenter_api::read::{KarpenterObject, object_from_value};
use karpenter_api::v1;
use karpenter_solver::disruption::{
    self as planner, Budget, ConsolidationPolicy, DO_NOT_DISRUPT, DisruptionOptions,
    DisruptionPlan, DisruptionProblem, DoNotDisrupt, Drift, NodeState, POD_DELETION_COST, Pdb,
    PodState, PoolPolicy, Reason, parse_go_duration,
};
use karpenter_solver::labels::{CAPACITY_TYPE, INSTANCE_TYPE, NODEPOOL, ZONE};
use karpenter_solver::{LabelSelector, Plan, Requirements, SelectorOperator, SelectorRequirement};

use super::convert::Converted;
use super::manifests::Manifests;

/// The taint Karpenter puts on nodes it is disrupting.
const DISRUPTED_TAINT: &str = "karpenter.sh/disrupted";

/// Seconds since the epoch of an optional timestamp.
fn secs(t: Option<&meta::Time>) -> Option<i64> {
    t.map(|t| t.0.as_second())
}

/// The newest `metadata.creationTimestamp` of the input, or 0 (the Unix epoch).
pub fn reference_now(m: &Manifests) -> i64 {
    let metas = m
        .nodes
        .iter()
        .map(|n| &n.object.metadata)
        .chain(m.pods.iter().map(|p| &p.object.metadata))
        .chain(m.daemon_sets.iter().map(|d| &d.object.metadata))
        .chain(m.pdbs.iter().map(|d| &d.object.metadata));
    let pools = node_pools(m);
    metas
        .chain(pools.iter().map(|p| &p.metadata))
        .filter_map(|md| secs(md.creation_timestamp.as_ref()))
        .max()
        .unwrap_or(0)
}

/// A NodePool's disruption settings, from a NodePool or a converted Provisioner.
fn policy(np: &v1::NodePool) -> PoolPolicy {
    let name = np.metadata.name.clone().unwrap_or_default();
    let mut p = PoolPolicy::new(&name);
    let d = &np.spec.disruption;
    let never = |s: &str| s.trim() == "Never";
    p.consolidation_policy = match d.consolidation_policy {
        v1::nodepool::ConsolidationPolicy::WhenEmpty => ConsolidationPolicy::WhenEmpty,
        _ => ConsolidationPolicy::WhenEmptyOrUnderutilized,
    };
    p.consolidate_after = if never(&d.consolidate_after) {
        None
    } else {
        Some(parse_go_duration(&d.consolidate_after).unwrap_or(0))
    };
    let t = &np.spec.template.spec;
    p.expire_after = if never(&t.expire_after) {
        None
    } else {
        parse_go_duration(&t.expire_after)
    };
    p.termination_grace_period = t
        .termination_grace_period
        .as_deref()
        .and_then(parse_go_duration);
    p.budgets = d
        .budgets
        .iter()
        .map(|b| Budget {
            nodes: b.nodes.clone(),
            reasons: b.reasons.as_ref().map(|rs| {
                rs.iter()
                    .map(|r| match r {
                        v1::nodepool::DisruptionReason::Underutilized => Reason::Underutilized,
                        v1::nodepool::DisruptionReason::Empty => Reason::Empty,
                        v1::nodepool::DisruptionReason::Drifted => Reason::Drifted,
                    })
                    .collect()
            }),
            schedule: b.schedule.clone(),
            // An unreadable duration closes the window to nothing (fail closed is the
            // schedule's job: the CRD pattern rejects such values anyway).
            duration_seconds: b.duration.as_deref().and_then(parse_go_duration),
        })
        .collect();
    p
}

/// NodePools (and Provisioners, converted) of the input; invalid ones were reported by the
/// provisioning conversion already and are skipped here.
fn node_pools(m: &Manifests) -> Vec<v1::NodePool> {
    m.karpenter
        .iter()
        .filter_map(|doc| match object_from_value(doc.value.clone()).ok()?? {
            KarpenterObject::NodePool(np) => Some(*np),
            KarpenterObject::Provisioner(p) => p.convert().ok().map(|c| c.node_pool),
            _ => None,
        })
        .collect()
}

fn annotation<'a>(md: &'a meta::ObjectMeta, key: &str) -> Option<&'a str> {
    md.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A `karpenter.sh/do-not-disrupt` value; an invalid one is ignored with a warning.
fn do_not_disrupt(md: &meta::ObjectMeta, what: &str, warnings: &mut Vec<String>) -> DoNotDisrupt {
    match annotation(md, DO_NOT_DISRUPT).map(DoNotDisrupt::parse) {
        None => DoNotDisrupt::No,
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            warnings.push(format!("warning: {what}: {e}; ignored"));
            DoNotDisrupt::No
        }
    }
}

fn selector(s: &meta::LabelSelector) -> LabelSelector {
    LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|e| SelectorRequirement {
                key: e.key.clone(),
                operator: match e.operator.as_str() {
                    "In" => SelectorOperator::In,
                    "NotIn" => SelectorOperator::NotIn,
                    "Exists" => SelectorOperator::Exists,
                    // Unknown operators select nothing: a key no pod has.
                    _ => SelectorOperator::DoesNotExist,
                },
                values: e.values.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// `n` scaled by an int-or-percent, rounded up (as the disruption controller does).
fn scaled(v: &IntOrString, n: i32) -> i32 {
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => s
            .trim_end_matches('%')
            .parse::<i64>()
            .map(|p| ((p.max(0) * i64::from(n.max(0))) as u64).div_ceil(100) as i32)
            .unwrap_or(0),
    }
}

/// The disruption problem of the input, or `None` when it has no Karpenter-managed Node.
pub fn problem(
    m: &Manifests,
    converted: &Converted,
    plan: &Plan,
    now: i64,
    warnings: &mut Vec<String>,
) -> Option<DisruptionProblem> {
    let managed: Vec<&k8s::Node> = m
        .nodes
        .iter()
        .map(|n| &n.object)
        .filter(|n| labels(&n.metadata).contains_key(NODEPOOL))
        .collect();
    if managed.is_empty() {
        return None;
    }
    let mut problem = converted.problem.clone();
    // Bind the plan's placements on existing nodes: that room is taken.
    let pending: BTreeMap<String, _> = problem.pods.drain(..).map(|p| (p.key(), p)).collect();
    for placement in &plan.existing_nodes {
        if let Some(node) = problem
            .existing_nodes
            .iter_mut()
            .find(|n| n.name == placement.node)
        {
            node.pods.extend(
                placement
                    .pods
                    .iter()
                    .filter_map(|k| pending.get(k).cloned()),
            );
        }
    }

    let objects: BTreeMap<String, &k8s::Pod> = m
        .pods
        .iter()
        .map(|p| {
            let md = &p.object.metadata;
            let key = format!(
                "{}/{}",
                md.namespace.as_deref().unwrap_or("default"),
                md.name.as_deref().unwrap_or_default()
            );
            (key, &p.object)
        })
        .collect();
    let mut pods = Vec::new();
    let mut last_event: BTreeMap<&str, i64> = BTreeMap::new();
    for node in &problem.existing_nodes {
        for p in &node.pods {
            let key = p.key();
            let Some(object) = objects.get(&key) else {
                // Not in the input: a DaemonSet pod the conversion added to the node.
                pods.push(PodState {
                    key,
                    daemon_set: true,
                    created: now,
                    ..Default::default()
                });
                continue;
            };
            let md = &object.metadata;
            let created = secs(md.creation_timestamp.as_ref()).unwrap_or(now);
            if md.creation_timestamp.is_some() {
                let e = last_event.entry(node.name.as_str()).or_insert(created);
                *e = (*e).max(created);
            }
            let deletion_cost = match annotation(md, POD_DELETION_COST) {
                None => 0,
                Some(v) => v.trim().parse().unwrap_or_else(|_| {
                    warnings.push(format!(
                        "warning: pod {key}: {POD_DELETION_COST} {v:?} is not an integer; ignored"
                    ));
                    0
                }),
            };
            pods.push(PodState {
                daemon_set: karpenter_api::solver_input::daemon_set_owner(object).is_some(),
                do_not_disrupt: do_not_disrupt(md, &format!("pod {key}"), warnings),
                deletion_cost,
                priority: object.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
                created,
                key,
            });
        }
    }

    let pools = node_pools(m);
    let mut nodes = Vec::new();
    for n in managed {
        let md = &n.metadata;
        let name = md.name.clone().unwrap_or_default();
        let l = labels(md);
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        let (pool, it, zone, ct) = (
            get(NODEPOOL),
            get(INSTANCE_TYPE),
            get(ZONE),
            get(CAPACITY_TYPE),
        );
        let entry = problem.instance_types.iter().find(|t| t.name == it);
        let price = entry.and_then(|t| {
            t.offerings
                .iter()
                .find(|o| o.zone == zone && o.capacity_type == ct)
                .map(|o| o.price)
        });
        let created = secs(md.creation_timestamp.as_ref()).unwrap_or(now);
        let drifted = if entry.is_none() {
            Some("InstanceTypeNotFound".to_owned())
        } else {
            pools
                .iter()
                .find(|p| p.metadata.name.as_deref() == Some(pool.as_str()))
                .and_then(|p| requirements_drifted(p, l))
        };
        let status = n.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_none_or(|c| c.status == "True");
        let taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or_default();
        nodes.push(NodeState {
            do_not_disrupt: do_not_disrupt(md, &format!("node {name}"), warnings),
            last_pod_event: last_event.get(name.as_str()).copied(),
            initialized: ready,
            disrupting: md.deletion_timestamp.is_some()
                || taints.iter().any(|t| t.key == DISRUPTED_TAINT),
            drifted: drifted.map(|reason| Drift {
                reason,
                since: created,
            }),
            name,
            node_pool: pool,
            instance_type: it,
            zone,
            capacity_type: ct,
            price,
            created,
        });
    }

    let pdbs = m
        .pdbs
        .iter()
        .map(|b| {
            let o = &b.object;
            let namespace = o
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into());
            let spec = o.spec.clone().unwrap_or_default();
            let sel = spec.selector.as_ref().map(selector).unwrap_or_default();
            let allowed = match o.status.as_ref() {
                Some(s) => s.disruptions_allowed,
                None => {
                    let matching = problem
                        .existing_nodes
                        .iter()
                        .flat_map(|n| &n.pods)
                        .filter(|p| p.namespace == namespace && sel.matches(&p.labels))
                        .count() as i32;
                    match (&spec.max_unavailable, &spec.min_available) {
                        (Some(max), _) => scaled(max, matching),
                        (None, Some(min)) => matching - scaled(min, matching),
                        (None, None) => i32::MAX,
                    }
                }
            };
            Pdb {
                namespace,
                selector: sel,
                disruptions_allowed: allowed,
            }
        })
        .collect();

    Some(DisruptionProblem {
        problem,
        nodes,
        pods,
        policies: pools.iter().map(policy).collect(),
        pdbs,
    })
}

fn labels(md: &meta::ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    md.labels.as_ref().unwrap_or(&EMPTY)
}

/// `RequirementsDrifted`: a label the node has that its NodePool's requirements no longer
/// allow (labels the node lacks are not checked, as upstream allows undefined keys).
fn requirements_drifted(np: &v1::NodePool, node: &BTreeMap<String, String>) -> Option<String> {
    let reqs: Vec<_> = np
        .spec
        .template
        .spec
        .requirements
        .iter()
        .map(karpenter_api::solver_input::requirement)
        .collect();
    let reqs = Requirements::from_selectors(&reqs).ok()?;
    let bad: BTreeSet<&str> = reqs
        .0
        .iter()
        .filter(|(k, r)| node.get(*k).is_some_and(|v| !r.has(v)))
        .map(|(k, _)| k.as_str())
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "RequirementsDrifted ({})",
            bad.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// Plans disruption for the input at `now`.
pub fn plan(dp: &DisruptionProblem, now: i64) -> Result<DisruptionPlan, planner::DisruptionError> {
    planner::plan(
        dp,
        &DisruptionOptions {
            now,
            ..DisruptionOptions::default()
        },
    )
}
