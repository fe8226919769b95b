//! Kubernetes objects → the disruption planner's facts ([`NodeState`], [`PodState`],
//! [`PoolPolicy`], [`Pdb`]).
//!
//! Shared by `karpenter simulate` (objects from files) and the controller's disruption loop
//! (objects from the watch cache), so both judge a node, a pod, a NodePool's disruption
//! settings and a PodDisruptionBudget the same way. What only one of them knows (a live
//! NodeClaim's `lastPodEventTime` and conditions; simulate's "newest timestamp is now") comes
//! in as [`NodeFacts`].

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1 as k8s;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use karpenter_solver::disruption::{
    Budget, ConsolidationPolicy, DISRUPTION_COST, DO_NOT_DISRUPT, DO_NOT_REPAIR, DoNotDisrupt,
    Drift, NodeState, POD_DELETION_COST, Pdb, PodState, PoolPolicy, Reason, parse_go_duration,
};
use karpenter_solver::instance_type::CatalogIndex;
use karpenter_solver::labels::{CAPACITY_TYPE, INSTANCE_TYPE, NODEPOOL, ZONE};
use karpenter_solver::{
    InstanceType, LabelSelector, PodView, Requirements, SelectorOperator, SelectorRequirement,
};

use super::pods::PodObject;
use super::pools::requirement;
use super::problem::daemon_set_owner;
use crate::labels::DISRUPTED_TAINT_KEY;
use crate::v1;

/// Seconds since the epoch of an optional timestamp.
pub fn secs(t: Option<&meta::Time>) -> Option<i64> {
    t.map(|t| t.0.as_second())
}

/// A NodePool's disruption settings (from a NodePool or a converted Provisioner).
pub fn pool_policy(np: &v1::NodePool) -> PoolPolicy {
    let name = np.metadata.name.clone().unwrap_or_default();
    let mut p = PoolPolicy::new(&name);
    let d = &np.spec.disruption;
    let never = |s: &str| s.trim() == "Never";
    p.consolidation_policy = match d.consolidation_policy {
        v1::nodepool::ConsolidationPolicy::WhenEmpty => ConsolidationPolicy::WhenEmpty,
        v1::nodepool::ConsolidationPolicy::WhenEmptyOrUnderutilized => {
            ConsolidationPolicy::WhenEmptyOrUnderutilized
        }
        v1::nodepool::ConsolidationPolicy::Balanced => ConsolidationPolicy::Balanced,
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
                        v1::nodepool::DisruptionReason::Unhealthy => Reason::Unhealthy,
                    })
                    .collect()
            }),
            schedule: b.schedule.clone(),
            // An unreadable duration closes the window to nothing (the CRD pattern rejects
            // such values anyway).
            duration_seconds: b.duration.as_deref().and_then(parse_go_duration),
        })
        .collect();
    p
}

fn annotation<'a>(md: &'a meta::ObjectMeta, key: &str) -> Option<&'a str> {
    md.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A `karpenter.sh/do-not-disrupt` value; an invalid one is ignored with a warning naming
/// `what`.
pub fn do_not_disrupt(
    md: &meta::ObjectMeta,
    what: &str,
    warnings: &mut Vec<String>,
) -> DoNotDisrupt {
    match annotation(md, DO_NOT_DISRUPT).map(DoNotDisrupt::parse) {
        None => DoNotDisrupt::No,
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            warnings.push(format!("warning: {what}: {e}; ignored"));
            DoNotDisrupt::No
        }
    }
}

/// What the planner knows about a bound pod keyed `key` (`namespace/name`); `created`
/// stands in for a missing creation time.
pub fn pod_state(
    pod: &(impl PodObject + ?Sized),
    key: String,
    created: i64,
    warnings: &mut Vec<String>,
) -> PodState {
    let md = pod.metadata();
    // Upstream reads its own annotation first; an invalid one is ignored, not replaced by the
    // other (both are int32, like the ReplicaSet controller's).
    let (name, value) = match annotation(md, DISRUPTION_COST) {
        Some(v) => (DISRUPTION_COST, Some(v)),
        None => (POD_DELETION_COST, annotation(md, POD_DELETION_COST)),
    };
    let deletion_cost = match value {
        None => 0,
        Some(v) => v.trim().parse::<i32>().map(i64::from).unwrap_or_else(|_| {
            warnings.push(format!(
                "warning: pod {key}: {name} {v:?} is not a 32-bit integer; ignored"
            ));
            0
        }),
    };
    PodState {
        daemon_set: daemon_set_owner(pod).is_some(),
        do_not_disrupt: do_not_disrupt(md, &format!("pod {key}"), warnings),
        deletion_cost,
        priority: pod.spec().and_then(|s| s.priority).unwrap_or(0),
        created: secs(md.creation_timestamp.as_ref()).unwrap_or(created),
        key,
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

/// A PodDisruptionBudget. `status.disruptionsAllowed` when the API reported it; otherwise
/// (objects from files) it is derived from the spec over `pods` (the bound pods).
pub fn pdb<'a>(o: &PodDisruptionBudget, pods: impl IntoIterator<Item = &'a PodView>) -> Pdb {
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
            let matching = pods
                .into_iter()
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
}

/// `RequirementsDrifted`: a label the node has that its NodePool's requirements no longer
/// allow (labels the node lacks are not checked, as upstream allows undefined keys).
pub fn requirements_drifted(np: &v1::NodePool, node: &BTreeMap<String, String>) -> Option<String> {
    let reqs: Vec<_> = np
        .spec
        .template
        .spec
        .requirements
        .iter()
        .map(requirement)
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

/// What the caller knows about a node beyond the Node object: from its NodeClaim in a live
/// cluster, from the Node and its pods in `simulate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// Creation time.
    pub created: i64,
    /// Last pod bound to or removed from it.
    pub last_pod_event: Option<i64>,
    /// Initialized.
    pub initialized: bool,
    /// Drifted, and since when.
    pub drifted: Option<Drift>,
    /// Disrupting for a reason the Node does not show (e.g. its NodeClaim is being deleted).
    pub disrupting: bool,
}

/// A round's catalog, indexed once: [`node_state`] looks every node's instance type up in it
/// (a scan of the catalog per node grows with nodes x types).
#[derive(Debug, Clone)]
pub struct NodeCatalog<'a> {
    instance_types: &'a [InstanceType],
    index: CatalogIndex,
}

impl<'a> NodeCatalog<'a> {
    /// Indexes `instance_types` (a catalog from `merge_catalogs`: per-NodePool copies allowed).
    pub fn new(instance_types: &'a [InstanceType]) -> Self {
        Self {
            instance_types,
            index: CatalogIndex::new(instance_types),
        }
    }

    /// Whether the catalog has instance type `name` at all (for any NodePool).
    pub fn lists(&self, name: &str) -> bool {
        self.index.get(None, name).is_some()
    }

    /// The entry of instance type `name` NodePool `pool` sees (as `find_for_pool`).
    fn find(&self, pool: &str, name: &str) -> Option<&'a InstanceType> {
        let i = self.index.get(Some(pool), name)?;
        self.instance_types.get(i)
    }
}

/// The planner's view of a Karpenter-managed Node: NodePool, instance type, zone and capacity
/// type from its labels (the price is that offering's in `catalog`), do-not-disrupt from
/// its annotations; disrupting when it is being deleted or carries the `karpenter.sh/disrupted`
/// taint (or `facts` says so).
pub fn node_state(
    n: &k8s::Node,
    facts: NodeFacts,
    catalog: &NodeCatalog<'_>,
    warnings: &mut Vec<String>,
) -> NodeState {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    let md = &n.metadata;
    let name = md.name.clone().unwrap_or_default();
    let l = md.labels.as_ref().unwrap_or(&EMPTY);
    let get = |k: &str| l.get(k).cloned().unwrap_or_default();
    let (pool, it, zone, ct) = (
        get(NODEPOOL),
        get(INSTANCE_TYPE),
        get(ZONE),
        get(CAPACITY_TYPE),
    );
    // The NodePool's own entry: NodeOverlays may price the type per NodePool.
    let price = catalog.find(&pool, &it).and_then(|t| {
        t.offerings
            .iter()
            .find(|o| o.zone == zone && o.capacity_type == ct)
            .map(|o| o.price)
    });
    let taints = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    NodeState {
        do_not_disrupt: do_not_disrupt(md, &format!("node {name}"), warnings),
        last_pod_event: facts.last_pod_event,
        initialized: facts.initialized,
        disrupting: facts.disrupting
            || md.deletion_timestamp.is_some()
            || taints.iter().any(|t| t.key == DISRUPTED_TAINT_KEY),
        drifted: facts.drifted,
        name,
        node_pool: pool,
        instance_type: it,
        zone,
        capacity_type: ct,
        price,
        created: facts.created,
        scale_down_blocked: None,
        unhealthy: None,
        do_not_repair: annotation(md, DO_NOT_REPAIR) == Some("true"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pdb_without_status_is_derived_from_the_spec() {
        let o: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b", "namespace": "ns"},
            "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "a"}}}
        }))
        .unwrap();
        let mut p = PodView {
            namespace: "ns".into(),
            name: "x".into(),
            ..PodView::default()
        };
        p.labels.insert("app".into(), "a".into());
        let pods = vec![p.clone(), p.clone(), p];
        assert_eq!(pdb(&o, &pods).disruptions_allowed, 2, "50% of 3 rounded up");
    }

    #[test]
    fn disruption_cost_annotation_wins_over_pod_deletion_cost() {
        let cost = |annotations: serde_json::Value| {
            let p: k8s::Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "annotations": annotations},
            }))
            .unwrap();
            let mut warnings = Vec::new();
            (
                pod_state(&p, "ns/p".into(), 0, &mut warnings).deletion_cost,
                warnings.len(),
            )
        };
        assert_eq!(cost(serde_json::json!({POD_DELETION_COST: "7"})), (7, 0));
        assert_eq!(
            cost(serde_json::json!({POD_DELETION_COST: "7", DISRUPTION_COST: "-3"})),
            (-3, 0)
        );
        // An invalid karpenter.sh/disruption-cost is ignored, not replaced by the other one.
        assert_eq!(
            cost(serde_json::json!({POD_DELETION_COST: "7", DISRUPTION_COST: "lots"})),
            (0, 1)
        );
        // Both are int32.
        assert_eq!(
            cost(serde_json::json!({DISRUPTION_COST: "4294967296"})),
            (0, 1)
        );
    }

    #[test]
    fn facts_and_taint_make_a_node_disrupting() {
        let mut n: k8s::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {NODEPOOL: "np"}},
        }))
        .unwrap();
        let facts = NodeFacts {
            created: 5,
            last_pod_event: None,
            initialized: true,
            drifted: None,
            disrupting: false,
        };
        let s = node_state(&n, facts.clone(), &NodeCatalog::new(&[]), &mut Vec::new());
        assert!(!s.disrupting);
        assert_eq!((s.node_pool.as_str(), s.created, s.price), ("np", 5, None));
        n.spec = Some(k8s::NodeSpec {
            taints: Some(vec![k8s::Taint {
                key: DISRUPTED_TAINT_KEY.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(node_state(&n, facts, &NodeCatalog::new(&[]), &mut Vec::new()).disrupting);
    }

    #[test]
    fn a_node_is_priced_from_its_own_nodepools_copy_of_its_type() {
        use karpenter_solver::{InstanceType, Offering, Resources};
        // A per-NodePool overlay made "x" cost 0.01 in pool a; pool b keeps 0.3; "y" is shared.
        let it = |name: &str, pool: Option<&str>, price: f64| InstanceType {
            name: name.into(),
            capacity: Resources::new(),
            overhead: Default::default(),
            labels: pool
                .map(|p| BTreeMap::from([(NODEPOOL.to_owned(), p.to_owned())]))
                .unwrap_or_default(),
            offerings: vec![Offering::new("z1", "on-demand", price)],
        };
        let catalog = [
            it("y", None, 0.2),
            it("x", Some("a"), 0.01),
            it("x", Some("b"), 0.3),
        ];
        let catalog = NodeCatalog::new(&catalog);
        let price = |pool: &str, ty: &str| {
            let n: k8s::Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n", "labels": {
                    NODEPOOL: pool, INSTANCE_TYPE: ty, ZONE: "z1", CAPACITY_TYPE: "on-demand"}},
            }))
            .unwrap();
            let facts = NodeFacts {
                created: 0,
                last_pod_event: None,
                initialized: true,
                drifted: None,
                disrupting: false,
            };
            node_state(&n, facts, &catalog, &mut Vec::new()).price
        };
        assert_eq!(price("a", "x"), Some(0.01));
        assert_eq!(price("b", "x"), Some(0.3));
        assert_eq!(price("b", "y"), Some(0.2));
        // A NodePool without a copy (gone since) gets the first one rather than nothing.
        assert_eq!(price("gone", "x"), Some(0.01));
    }
}
