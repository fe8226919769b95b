//! The `simulate` report (design.md §6, a stable contract other tools parse) and its JSON and
//! YAML renderings.

use std::collections::BTreeMap;

use karpenter_solver::disruption::{DisruptionPlan, MoveScore};
use karpenter_solver::labels::{CAPACITY_TYPE, INSTANCE_TYPE, NODEPOOL, ZONE};
use karpenter_solver::{Plan, PlannedNodeClaim};
use serde::Serialize;

/// The whole report.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// New NodeClaims, in the solver's creation order.
    pub node_claims: Vec<NodeClaimReport>,
    /// Existing nodes that receive pending pods, by node name.
    pub existing_nodes: Vec<ExistingNodeReport>,
    /// Pods that cannot be placed, with the reason.
    pub unschedulable: Vec<UnschedulableReport>,
    /// The pending pods that are CapacityBuffers' virtual pods (`namespace/name`), placed like
    /// the others but never run; absent without buffers, so other documents are unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buffer_pods: Vec<String>,
    /// Disruption commands for the input's Karpenter-managed nodes (empty without any).
    pub disruptions: Vec<DisruptionReport>,
    /// The consolidation moves `Balanced` NodePools scored, approved or declined (why a
    /// Balanced pool keeps an underused node); absent without any, so other documents are
    /// unchanged.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub balanced_scores: Vec<BalancedScoreReport>,
    /// Managed nodes no voluntary disruption may touch, and why (`node`, `reason`): shown in
    /// the table and the HTML page only, the JSON contract has no such field.
    #[serde(skip)]
    pub protected: Vec<(String, String)>,
    /// Totals.
    pub summary: Summary,
    /// `--repack`: every running pod planned from scratch against today's node cost; absent
    /// without the flag, so the default document is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repack: Option<super::repack::RepackReport>,
    /// Each node's requested cpu and memory of its allocatable, before and after the plan
    /// (an addition to the §6 document: the fields above are unchanged).
    pub utilization: super::utilization::Utilization,
}

/// One new NodeClaim.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeClaimReport {
    /// Deterministic name.
    pub name: String,
    /// NodePool.
    pub node_pool: String,
    /// Chosen instance type.
    pub instance_type: String,
    /// Chosen offering's zone.
    pub zone: String,
    /// Chosen offering's capacity type.
    pub capacity_type: String,
    /// The capacity reservation the NodeClaim launches into (capacity type `reserved`
    /// only; absent otherwise, so documents without reservations are unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    /// Chosen offering's price, rounded to [`DECIMALS`] places.
    pub price_per_hour: f64,
    /// Every label the Node will carry.
    pub labels: BTreeMap<String, String>,
    /// The NodePool's taints.
    pub taints: Vec<TaintReport>,
    /// Instance types that could host the same pods, cheapest first.
    pub instance_type_options: Vec<String>,
    /// Pods (`namespace/name`).
    pub pods: Vec<String>,
}

/// A taint.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct TaintReport {
    /// Key.
    pub key: String,
    /// Value (empty when the taint has none).
    pub value: String,
    /// Effect.
    pub effect: String,
}

/// Pending pods placed on an existing node.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ExistingNodeReport {
    /// Node name.
    pub name: String,
    /// Pods (`namespace/name`).
    pub pods: Vec<String>,
}

/// A pod that cannot be placed.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct UnschedulableReport {
    /// `namespace/name`.
    pub pod: String,
    /// What ruled it out.
    pub reason: String,
}

/// One disruption command: remove `nodes`, launching `replacements` first.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionReport {
    /// `empty`, `underutilized`, `drifted` or `expired`.
    pub reason: String,
    /// Nodes removed.
    pub nodes: Vec<String>,
    /// NodeClaims launched instead (0 or 1 for consolidation), with the pods they take.
    pub replacements: Vec<NodeClaimReport>,
    /// Σ removed node prices − Σ replacement prices, rounded to [`DECIMALS`] places.
    pub savings_per_hour: f64,
}

/// A consolidation move a `Balanced` NodePool scored: its share of the pool's cost saved over
/// its share of the pool's disruption cost, approved at `threshold` (1/2) or more.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BalancedScoreReport {
    /// NodePool.
    pub node_pool: String,
    /// The move's nodes of that pool.
    pub nodes: Vec<String>,
    /// Whether the move went ahead (`approved`) or not (`rejected`).
    pub decision: String,
    /// The score, rounded; absent when infinite (the move disrupts nothing).
    pub score: Option<f64>,
    /// The score needed.
    pub threshold: f64,
    /// Share of the pool's cost the move saves, rounded.
    pub savings_fraction: f64,
    /// Share of the pool's disruption cost the move causes, rounded.
    pub disruption_fraction: f64,
}

/// The report's `balancedScores`: the planner's scored moves of `Balanced` NodePools.
pub fn balanced_scores(plan: &DisruptionPlan) -> Vec<BalancedScoreReport> {
    plan.moves
        .iter()
        .filter_map(|m| {
            let s = m.score?;
            let score = s.score();
            Some(BalancedScoreReport {
                node_pool: m.node_pool.clone(),
                nodes: m.nodes.clone(),
                decision: m.decision.as_str().to_owned(),
                score: score.is_finite().then(|| round(score)),
                threshold: MoveScore::threshold(),
                savings_fraction: round(s.savings_fraction),
                disruption_fraction: round(s.disruption_fraction),
            })
        })
        .collect()
}

/// Totals.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Σ `nodeClaims[].pricePerHour` (of the rounded prices, so the sum checks out exactly).
    pub price_per_hour: f64,
    /// A proven lower bound on the price of any fleet for the pods placed on new nodes,
    /// rounded down (so it stays a lower bound).
    pub lower_bound_per_hour: f64,
    /// `pricePerHour / lowerBoundPerHour` (≥ 1); 1 when nothing is bought, `null` when the
    /// bound is 0 but something is bought.
    pub cost_ratio: Option<f64>,
    /// Number of new NodeClaims.
    pub node_claims: usize,
    /// Pending pods placed (on new NodeClaims or existing nodes); `pods + unschedulable` is
    /// the number of pending pods.
    pub pods: usize,
    /// Pending pods that cannot be placed.
    pub unschedulable: usize,
}

/// Decimal places kept in prices: sub-micro-dollar precision means nothing per hour, and a
/// fixed precision keeps the JSON stable across platforms and free of float noise.
pub const DECIMALS: i32 = 6;

/// `x` rounded to [`DECIMALS`] places.
pub(crate) fn round(x: f64) -> f64 {
    let scale = 10f64.powi(DECIMALS);
    // `+ 0.0` turns -0.0 (the sum of no prices, or a rounded tiny negative) into 0.0, so the
    // JSON never says `-0.0`.
    (x * scale).round() / scale + 0.0
}

/// `x` rounded down to [`DECIMALS`] places (a lower bound stays one).
pub(crate) fn floor(x: f64) -> f64 {
    let scale = 10f64.powi(DECIMALS);
    (x * scale).floor() / scale
}

/// Builds the report from the solver's plan.
pub fn report(plan: &Plan) -> Report {
    let node_claims: Vec<NodeClaimReport> = plan.node_claims.iter().map(claim).collect();
    // Summing the rounded prices (then rounding away float noise) keeps the documented
    // invariant summary.pricePerHour == Σ nodeClaims[].pricePerHour true on the JSON itself.
    let price = round(node_claims.iter().map(|c| c.price_per_hour).sum());
    // An LP solved to a tolerance can land a hair above the plan it bounds; never report a
    // bound above the plan's price.
    let bound = floor(plan.lower_bound.max(0.0).min(price));
    let cost_ratio = if bound > 0.0 {
        Some(round(price / bound).max(1.0))
    } else if price == 0.0 {
        Some(1.0)
    } else {
        None
    };
    let existing_nodes: Vec<ExistingNodeReport> = plan
        .existing_nodes
        .iter()
        .map(|e| ExistingNodeReport {
            name: e.node.clone(),
            pods: e.pods.clone(),
        })
        .collect();
    let placed = node_claims.iter().map(|c| c.pods.len()).sum::<usize>()
        + existing_nodes.iter().map(|e| e.pods.len()).sum::<usize>();
    let unschedulable: Vec<UnschedulableReport> = plan
        .unschedulable
        .iter()
        .map(|u| UnschedulableReport {
            pod: u.pod.clone(),
            reason: u.reason.clone(),
        })
        .collect();
    Report {
        summary: Summary {
            price_per_hour: price,
            lower_bound_per_hour: bound,
            cost_ratio,
            node_claims: node_claims.len(),
            pods: placed,
            unschedulable: unschedulable.len(),
        },
        node_claims,
        existing_nodes,
        unschedulable,
        buffer_pods: Vec::new(),
        disruptions: Vec::new(),
        balanced_scores: Vec::new(),
        protected: Vec::new(),
        repack: None,
        utilization: Default::default(),
    }
}

/// The report's `disruptions`, in the planner's decision order.
pub fn disruptions(plan: &DisruptionPlan) -> Vec<DisruptionReport> {
    plan.commands
        .iter()
        .map(|c| DisruptionReport {
            reason: c.reason.to_string(),
            nodes: c.nodes.clone(),
            replacements: c.replacements.iter().map(claim).collect(),
            savings_per_hour: round(c.savings_per_hour),
        })
        .collect()
}

fn claim(c: &PlannedNodeClaim) -> NodeClaimReport {
    // The solver already sets these; inserting them again is idempotent and keeps the
    // documented label set complete whatever the solver's plan assembly does.
    let mut labels = c.labels.clone();
    labels.insert(INSTANCE_TYPE.to_owned(), c.instance_type.clone());
    labels.insert(ZONE.to_owned(), c.zone.clone());
    labels.insert(CAPACITY_TYPE.to_owned(), c.capacity_type.clone());
    labels.insert(NODEPOOL.to_owned(), c.node_pool.clone());
    NodeClaimReport {
        name: c.name.clone(),
        node_pool: c.node_pool.clone(),
        instance_type: c.instance_type.clone(),
        zone: c.zone.clone(),
        capacity_type: c.capacity_type.clone(),
        reservation_id: c.reservation_id.clone(),
        price_per_hour: round(c.price),
        labels,
        taints: c
            .taints
            .iter()
            .map(|t| TaintReport {
                key: t.key.clone(),
                value: t.value.clone(),
                effect: t.effect.to_string(),
            })
            .collect(),
        instance_type_options: c.instance_type_options.clone(),
        pods: c.pods.clone(),
    }
}

/// Pretty-printed JSON with a trailing newline.
pub fn to_json(r: &Report) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(r)?;
    s.push('\n');
    Ok(s)
}

/// The same document as YAML.
pub fn to_yaml(r: &Report) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpenter_solver::{ExistingPlacement, Resources, Taint, TaintEffect, Unschedulable};

    fn claim_at(name: &str, price: f64) -> PlannedNodeClaim {
        PlannedNodeClaim {
            name: name.into(),
            node_pool: "default".into(),
            instance_type: "m.2x".into(),
            zone: "zone-a".into(),
            capacity_type: "spot".into(),
            reservation_id: None,
            price,
            instance_type_options: vec!["m.2x".into()],
            labels: BTreeMap::new(),
            taints: vec![Taint::new("k", "", TaintEffect::NoSchedule)],
            pods: vec![format!("default/{name}")],
            requests: Resources::new(),
        }
    }

    #[test]
    fn totals_are_sums_of_rounded_prices_and_the_bound_stays_below() {
        let plan = Plan {
            node_claims: vec![claim_at("a", 0.1 / 3.0), claim_at("b", 0.2 / 3.0)],
            existing_nodes: vec![ExistingPlacement {
                node: "n1".into(),
                pods: vec!["default/x".into()],
            }],
            unschedulable: vec![Unschedulable {
                pod: "default/big".into(),
                reason: "too big".into(),
            }],
            total_price: 0.1,
            lower_bound: 0.1000000001,
        };
        let r = report(&plan);
        let sum: f64 = r.node_claims.iter().map(|c| c.price_per_hour).sum();
        assert!((r.summary.price_per_hour - sum).abs() < 1e-12);
        assert!(r.summary.lower_bound_per_hour <= r.summary.price_per_hour);
        assert!(r.summary.cost_ratio.is_some_and(|x| x >= 1.0));
        assert_eq!((r.summary.pods, r.summary.unschedulable), (3, 1));
        let labels = &r.node_claims[0].labels;
        assert_eq!(labels.get(NODEPOOL).map(String::as_str), Some("default"));
        assert_eq!(r.node_claims[0].taints[0].effect, "NoSchedule");
    }

    #[test]
    fn json_uses_the_documented_keys() -> Result<(), serde_json::Error> {
        let plan = Plan {
            node_claims: vec![claim_at("a", 0.03)],
            existing_nodes: vec![],
            unschedulable: vec![],
            total_price: 0.03,
            lower_bound: 0.0,
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&report(&plan))?)?;
        for key in [
            "nodeClaims",
            "existingNodes",
            "unschedulable",
            "disruptions",
            "summary",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        for key in [
            "name",
            "nodePool",
            "instanceType",
            "zone",
            "capacityType",
            "pricePerHour",
            "labels",
            "taints",
            "instanceTypeOptions",
            "pods",
        ] {
            assert!(v["nodeClaims"][0].get(key).is_some(), "{key}");
        }
        for key in [
            "pricePerHour",
            "lowerBoundPerHour",
            "costRatio",
            "nodeClaims",
            "pods",
            "unschedulable",
        ] {
            assert!(v["summary"].get(key).is_some(), "{key}");
        }
        assert!(
            v["summary"]["costRatio"].is_null(),
            "bound 0 with a price: no ratio"
        );
        Ok(())
    }
}
