//! The `Balanced` consolidation policy (upstream v1.14+ "balanced scoring"): a consolidation of
//! a `Balanced` NodePool's nodes goes ahead only when the share of the NodePool's cost it saves
//! is at least `1 / BALANCED_K` of the share of the NodePool's disruption cost it causes.
//!
//! A node's disruption cost is upstream's `RescheduleDisruptionCost`: 1 (the node itself) plus
//! the positive eviction costs of the pods that would move ([`super::candidates::eviction_cost`]:
//! deletion cost and priority). The NodePool totals are taken once per planning call over every
//! managed node of the NodePool (candidates or not), as upstream normalises against the whole
//! pool; its cost is the sum of the known prices of those nodes.

use std::collections::HashMap;

use super::candidates::Cand;
use super::model::{ConsolidationPolicy, MoveDecision, MoveScore, ScoredMove};

/// A NodePool's cost and disruption cost, the denominators of a score.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PoolTotals {
    /// Σ price per hour of the NodePool's nodes whose price is known.
    pub cost: f64,
    /// Σ reschedule disruption cost of the NodePool's nodes.
    pub disruption: f64,
}

/// Totals per NodePool over every evaluated node (`cands` holds every managed node).
pub(crate) fn pool_totals(cands: &[Cand]) -> HashMap<String, PoolTotals> {
    let mut totals: HashMap<String, PoolTotals> = HashMap::new();
    for c in cands {
        let t = totals.entry(c.pool.clone()).or_default();
        t.cost += c.price.unwrap_or(0.0);
        t.disruption += c.reschedule_cost;
    }
    totals
}

/// Upstream `ScoreMove`: the move's shares of the NodePool's cost and disruption cost; both 0
/// when the pool has no cost or no disruption cost to normalise against (score 0: rejected).
pub(crate) fn score_move(savings: f64, disruption: f64, totals: PoolTotals) -> MoveScore {
    if totals.cost <= 0.0 || totals.disruption <= 0.0 {
        return MoveScore {
            savings_fraction: 0.0,
            disruption_fraction: 0.0,
        };
    }
    MoveScore {
        savings_fraction: savings / totals.cost,
        disruption_fraction: disruption / totals.disruption,
    }
}

/// Upstream `ScoreMove(..).Score()`: (savings / pool cost) ÷ (disruption / pool disruption).
pub(crate) fn score(savings: f64, disruption: f64, totals: PoolTotals) -> f64 {
    score_move(savings, disruption, totals).score()
}

/// Whether a move's score passes (`score ≥ 1 / BALANCED_K`).
pub(crate) fn approved(score: f64) -> bool {
    score >= MoveScore::threshold()
}

/// One NodePool's part in a move: its candidates and, for a `Balanced` pool, its score.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PoolPart {
    pub pool: String,
    pub policy: ConsolidationPolicy,
    pub nodes: Vec<String>,
    pub score: Option<MoveScore>,
}

/// A move's parts, and whether every `Balanced` NodePool among them approved it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evaluation {
    pub approved: bool,
    pub parts: Vec<PoolPart>,
}

impl Evaluation {
    /// The move as upstream reports it: one [`ScoredMove`] per NodePool.
    pub(crate) fn report(self, multi_node: bool) -> impl Iterator<Item = ScoredMove> {
        let decision = if self.approved {
            MoveDecision::Approved
        } else {
            MoveDecision::Rejected
        };
        self.parts.into_iter().map(move |p| ScoredMove {
            node_pool: p.pool,
            policy: p.policy,
            decision,
            score: p.score,
            nodes: p.nodes,
            multi_node,
        })
    }
}

/// Upstream `EvaluateBalancedMove`: every `Balanced` NodePool among the candidates `idx` must
/// approve the move saving `savings` per hour; other NodePools are not scored. When the move
/// spans several NodePools, each is credited with the savings in proportion to its share of
/// the removed nodes' prices.
pub(crate) fn evaluate_move(
    cands: &[Cand],
    idx: &[usize],
    savings: f64,
    totals: &HashMap<String, PoolTotals>,
) -> Evaluation {
    let mut pools: Vec<&str> = idx.iter().map(|&i| cands[i].pool.as_str()).collect();
    pools.sort_unstable();
    pools.dedup();
    let several = pools.len() > 1;
    let source: f64 = idx.iter().filter_map(|&i| cands[i].price).sum();
    let mut approved = true;
    let mut parts = Vec::with_capacity(pools.len());
    for pool in pools {
        let mine: Vec<&Cand> = idx
            .iter()
            .map(|&i| &cands[i])
            .filter(|c| c.pool == pool)
            .collect();
        let policy = mine[0].policy.consolidation_policy;
        let score = (policy == ConsolidationPolicy::Balanced).then(|| {
            let pool_source: f64 = mine.iter().filter_map(|c| c.price).sum();
            let pool_savings = if several && source > 0.0 {
                savings * pool_source / source
            } else {
                savings
            };
            let disruption: f64 = mine.iter().map(|c| c.reschedule_cost).sum();
            let totals = totals.get(pool).copied().unwrap_or_default();
            score_move(pool_savings, disruption, totals)
        });
        approved &= score.is_none_or(|s| s.approved());
        parts.push(PoolPart {
            pool: pool.to_string(),
            policy,
            nodes: mine.iter().map(|c| c.name.clone()).collect(),
            score,
        });
    }
    Evaluation { approved, parts }
}

/// Upstream `CanPassThreshold`: whether deleting candidate `c` outright (the best any move of
/// it alone can do) would pass; always true outside `Balanced` NodePools.
pub(crate) fn can_pass(c: &Cand, totals: &HashMap<String, PoolTotals>) -> bool {
    if c.policy.consolidation_policy != ConsolidationPolicy::Balanced {
        return true;
    }
    match totals.get(&c.pool) {
        Some(t) if t.cost > 0.0 => approved(score(c.price.unwrap_or(0.0), c.reschedule_cost, *t)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(cost: f64, disruption: f64) -> PoolTotals {
        PoolTotals { cost, disruption }
    }

    #[test]
    fn score_is_share_saved_over_share_disrupted() {
        // Saves 1 of 4 $/h (25%) and causes 3 of 12 disruption (25%): score 1.
        assert_eq!(score(1.0, 3.0, totals(4.0, 12.0)), 1.0);
        // Saves 0.5 of 4 (12.5%) for 6 of 12 (50%): score 0.25, below 1/2.
        assert_eq!(score(0.5, 6.0, totals(4.0, 12.0)), 0.25);
        assert!(!approved(0.25));
        // Exactly the threshold passes.
        assert!(approved(0.5));
    }

    #[test]
    fn score_guards_zero_and_negative() {
        assert_eq!(score(0.0, 1.0, totals(4.0, 4.0)), 0.0);
        assert_eq!(score(-1.0, 1.0, totals(4.0, 4.0)), 0.0);
        assert_eq!(score(1.0, 0.0, totals(4.0, 4.0)), f64::INFINITY);
        // Nothing to normalise against: upstream scores 0 (rejected).
        assert_eq!(score(1.0, 1.0, totals(0.0, 4.0)), 0.0);
        assert_eq!(score(1.0, 1.0, totals(4.0, 0.0)), 0.0);
    }
}
