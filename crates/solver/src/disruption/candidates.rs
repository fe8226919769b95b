//! Which managed nodes may be disrupted, and in which order (upstream `NewCandidate`,
//! `ShouldDisrupt`, disruption cost and savings ratio).

use std::collections::HashMap;

use crate::model::PodView;

use super::model::DO_NOT_DISRUPT;
use super::model::{
    Blocked, DisruptionOptions, DisruptionProblem, Drift, Pdb, PodState, PoolPolicy, Unhealthy,
};
use super::state::Work;

/// Upstream `PerNodeBaseDisruptionCost`.
pub(crate) const BASE_COST: f64 = 1.0;

/// A managed node with everything the methods need to pick and rank it.
#[derive(Debug, Clone)]
pub(crate) struct Cand {
    /// Stable id in [`Work`].
    pub id: usize,
    pub name: String,
    pub pool: String,
    pub instance_type: String,
    pub capacity_type: String,
    pub price: Option<f64>,
    pub created: i64,
    /// No reschedulable pod with a positive eviction cost (upstream `IsEmpty`).
    pub empty: bool,
    /// Price / reschedule disruption cost: higher goes first.
    pub ratio: f64,
    /// Upstream `RescheduleDisruptionCost`: 1 + Σ max(0, eviction cost) of the pods that would
    /// move (not DaemonSet pods); what a `Balanced` score charges for disrupting the node.
    pub reschedule_cost: f64,
    /// Σ eviction cost × lifetime remaining (upstream's older ranking, used for ties).
    pub legacy_cost: f64,
    /// `consolidateAfter` is not Never and has elapsed since the last pod event.
    pub consolidatable: bool,
    /// Why graceful methods (emptiness, consolidation) may not touch it.
    pub graceful: Result<(), String>,
    /// Why drift may not touch it.
    pub eventual: Result<(), String>,
    pub drift: Option<Drift>,
    pub expired: bool,
    pub policy: PoolPolicy,
    pub initialized: bool,
    /// A condition matching a repair policy.
    pub unhealthy: Option<Unhealthy>,
    pub do_not_repair: bool,
    /// Why repair may not touch it: only a missing NodePool or a disruption in flight (repair
    /// ignores do-not-disrupt, PDBs and initialization, as upstream's forceful repair).
    pub repairable: Result<(), String>,
}

impl Cand {
    /// Eligible for consolidation (not emptiness: empty nodes are emptiness' business).
    pub fn consolidation_ok(&self) -> bool {
        self.policy
            .consolidation_policy
            .consolidates_underutilized()
            && self.consolidatable
            && !self.empty
            && self.price.is_some()
            && self.graceful.is_ok()
    }

    /// Eligible for emptiness.
    pub fn emptiness_ok(&self) -> bool {
        self.consolidatable && self.empty && self.graceful.is_ok()
    }
}

/// Upstream `EvictionCost`: clamp(1 + deletionCost/2^27 + priority/2^25, −10, 10).
pub fn eviction_cost(s: Option<&PodState>) -> f64 {
    let Some(s) = s else { return 1.0 };
    (1.0 + s.deletion_cost as f64 / 2f64.powi(27) + f64::from(s.priority) / 2f64.powi(25))
        .clamp(-10.0, 10.0)
}

/// Orders indices into `cands`: savings ratio desc, then legacy cost asc, then name.
pub(crate) fn rank(cands: &[Cand], idx: &mut [usize]) {
    idx.sort_by(|&a, &b| {
        let (a, b) = (&cands[a], &cands[b]);
        b.ratio
            .total_cmp(&a.ratio)
            .then_with(|| a.legacy_cost.total_cmp(&b.legacy_cost))
            .then_with(|| a.name.cmp(&b.name))
    });
}

fn pdb_block(pod: &PodView, pdbs: &[Pdb]) -> Option<String> {
    let matching: Vec<&Pdb> = pdbs
        .iter()
        .filter(|b| b.namespace == pod.namespace && b.selector.matches(&pod.labels))
        .collect();
    match matching.as_slice() {
        [] => None,
        [one] if one.disruptions_allowed > 0 => None,
        [_] => Some(format!(
            "pod {} cannot be evicted: its PodDisruptionBudget allows no disruption",
            pod.key()
        )),
        _ => Some(format!(
            "pod {} is selected by {} PodDisruptionBudgets (eviction is refused)",
            pod.key(),
            matching.len()
        )),
    }
}

/// Evaluates every managed node; marks destinations that must stay closed in `work`.
pub(crate) fn evaluate(
    input: &DisruptionProblem,
    work: &mut Work,
    opts: &DisruptionOptions,
    pod_state: &HashMap<String, &PodState>,
) -> (Vec<Cand>, Vec<Blocked>) {
    let now = opts.now;
    let mut cands = Vec::new();
    let mut blocked = Vec::new();
    let floors = super::floors::Floors::new(input);
    for ns in &input.nodes {
        let Some(id) = work.id(&ns.name) else {
            continue;
        };
        let policy = input
            .policies
            .iter()
            .find(|p| p.name == ns.node_pool)
            .cloned()
            .unwrap_or_else(|| super::model::PoolPolicy::new(&ns.node_pool));
        let since = ns.last_pod_event.unwrap_or(ns.created).max(ns.created);
        let consolidatable = policy
            .consolidate_after
            .is_some_and(|after| now.saturating_sub(since) >= after);
        let meta = &mut work.meta[id];
        meta.closed = !ns.initialized || ns.disrupting;
        // Destinations refuse rescheduled pods until their own pods settled (upstream
        // `IsConsolidationSimulation`); a `Never` pool's nodes do not wait for anything.
        meta.recent = policy
            .consolidate_after
            .is_some_and(|after| now.saturating_sub(since) < after);
        let Some(node) = work.node(id) else { continue };

        let mut cost = BASE_COST;
        let mut all_cost = 0.0;
        let mut pod_block: Option<String> = None;
        for p in &node.pods {
            let key = p.key();
            let st = pod_state.get(&key).copied();
            let created = st.map_or(ns.created, |s| s.created);
            if pod_block.is_none() && st.is_some_and(|s| s.do_not_disrupt.active(created, now)) {
                pod_block = Some(format!("pod {key} has {DO_NOT_DISRUPT}"));
            }
            if st.is_some_and(|s| s.daemon_set) {
                continue;
            }
            let e = eviction_cost(st);
            all_cost += e;
            cost += e.max(0.0);
            if pod_block.is_none() {
                pod_block = pdb_block(p, &input.pdbs);
            }
        }
        let lifetime = match policy.expire_after {
            Some(e) if e > 0 => {
                (1.0 - now.saturating_sub(ns.created) as f64 / e as f64).clamp(0.0, 1.0)
            }
            _ => 1.0,
        };
        let pool_known = work
            .problem
            .node_pools
            .iter()
            .any(|p| p.name == ns.node_pool);
        let repairable = if !pool_known {
            Err(format!(
                "its NodePool {:?} is not in the input",
                ns.node_pool
            ))
        } else if ns.disrupting {
            Err("it is already being disrupted".to_string())
        } else {
            Ok(())
        };
        let node_block = if let Err(why) = &repairable {
            Some(why.clone())
        } else if !ns.initialized {
            Some("it is not initialized".to_string())
        } else if ns.do_not_disrupt.active(ns.created, now) {
            Some(format!("the node has {DO_NOT_DISRUPT}"))
        } else {
            None
        };
        let scale_down_blocked = ns
            .scale_down_blocked
            .clone()
            .or_else(|| floors.blocked(&ns.name));
        let graceful = match (&node_block, &scale_down_blocked, &pod_block) {
            (Some(b), _, _) | (None, Some(b), _) | (None, None, Some(b)) => Err(b.clone()),
            (None, None, None) => Ok(()),
        };
        let eventual = match (&node_block, &pod_block) {
            (Some(b), _) => Err(b.clone()),
            (None, Some(b)) if policy.termination_grace_period.is_none() => Err(b.clone()),
            _ => Ok(()),
        };
        if let Err(why) = &graceful {
            blocked.push(Blocked {
                node: ns.name.clone(),
                reason: why.clone(),
            });
        }
        let expired = !ns.disrupting
            && policy
                .expire_after
                .is_some_and(|e| now.saturating_sub(ns.created) >= e);
        cands.push(Cand {
            id,
            name: ns.name.clone(),
            pool: ns.node_pool.clone(),
            instance_type: ns.instance_type.clone(),
            capacity_type: ns.capacity_type.clone(),
            price: ns.price,
            created: ns.created,
            empty: cost <= BASE_COST,
            ratio: ns.price.unwrap_or(0.0) / cost,
            reschedule_cost: cost,
            legacy_cost: all_cost * lifetime,
            consolidatable,
            graceful,
            eventual,
            drift: ns.drifted.clone(),
            expired,
            policy,
            initialized: ns.initialized,
            unhealthy: ns.unhealthy.clone(),
            do_not_repair: ns.do_not_repair,
            repairable,
        });
    }
    (cands, blocked)
}
