//! Reporting the consolidation moves the planner scored, as upstream's balanced evaluator does:
//! `karpenter_consolidation_moves_total` for every scored move (any policy), the `Balanced`
//! NodePools' scores in `karpenter_consolidation_score`, and a `ConsolidationApproved` event for
//! an approved score: on the node and its NodeClaim for a single-node move, on the NodePool for
//! a multi-node one.
//!
//! Upstream evaluates consolidation again only when the cluster changed since its last
//! evaluation; we plan every round, so a move scored exactly as in the previous round is not
//! reported again (else a declined move would be counted once per round for as long as the
//! cluster stays as it is).

use std::collections::{BTreeMap, BTreeSet};

use karpenter_solver::disruption::{BALANCED_K, MoveScore, ScoredMove};
use kube::Resource;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;

use crate::context::Context;
use crate::metrics::Move;

/// What identifies a move between rounds: NodePool, decision, multi-node, its nodes, and the
/// score's two fractions (bit patterns, so a changed cluster that scores it differently counts).
type MoveKey = (String, &'static str, bool, Vec<String>, Option<(u64, u64)>);

/// The moves reported in the last round.
#[derive(Debug, Default)]
pub struct Reported {
    last: BTreeSet<MoveKey>,
}

impl Reported {
    /// The moves of this round not reported in the last one; this round's become the last.
    fn fresh<'a>(&mut self, moves: &'a [ScoredMove]) -> Vec<&'a ScoredMove> {
        let keyed: Vec<(MoveKey, &ScoredMove)> = moves.iter().map(|m| (key(m), m)).collect();
        let fresh = keyed
            .iter()
            .filter(|(k, _)| !self.last.contains(k))
            .map(|(_, m)| *m)
            .collect();
        self.last = keyed.into_iter().map(|(k, _)| k).collect();
        fresh
    }
}

fn key(m: &ScoredMove) -> MoveKey {
    let mut nodes = m.nodes.clone();
    nodes.sort();
    (
        m.node_pool.clone(),
        m.decision.as_str(),
        m.multi_node,
        nodes,
        m.score.map(|s| {
            (
                s.savings_fraction.to_bits(),
                s.disruption_fraction.to_bits(),
            )
        }),
    )
}

/// Upstream's event note: `score 0.53 >= threshold 0.50 (k: 2, savings 35.0%, disruption 66.7%)`.
fn note(s: &MoveScore) -> String {
    format!(
        "score {:.2} >= threshold {:.2} (k: {}, savings {:.1}%, disruption {:.1}%)",
        s.score(),
        MoveScore::threshold(),
        BALANCED_K,
        s.savings_fraction * 100.0,
        s.disruption_fraction * 100.0
    )
}

/// Counts, observes and announces this round's fresh moves; `claims` maps node → NodeClaim.
pub(super) async fn report(
    ctx: &Context,
    moves: &[ScoredMove],
    claims: &BTreeMap<String, String>,
    reported: &mut Reported,
) {
    for m in reported.fresh(moves) {
        let policy = m.policy.as_str().to_string();
        ctx.metrics
            .consolidation_moves
            .get_or_create(&Move {
                decision: m.decision.as_str().into(),
                nodepool: m.node_pool.clone(),
                policy: policy.clone(),
            })
            .inc();
        let Some(score) = m.score else { continue };
        // The histogram's decision is this NodePool's own (a multi-pool move may be rejected
        // by another pool).
        let decision = if score.approved() {
            "approved"
        } else {
            "rejected"
        };
        ctx.metrics
            .consolidation_score
            .get_or_create(&Move {
                decision: decision.into(),
                nodepool: m.node_pool.clone(),
                policy,
            })
            .observe(score.score());
        if !score.approved() {
            // Upstream announces approvals only: rejections would bury them.
            continue;
        }
        for regarding in regarding(ctx, m, claims) {
            ctx.event(
                &regarding,
                EventType::Normal,
                "ConsolidationApproved",
                "Consolidate",
                note(&score),
            )
            .await;
        }
    }
}

/// The objects an approved move's event goes to.
fn regarding(
    ctx: &Context,
    m: &ScoredMove,
    claims: &BTreeMap<String, String>,
) -> Vec<k8s_openapi::api::core::v1::ObjectReference> {
    let state = &ctx.state;
    if m.multi_node {
        return state
            .node_pools
            .get(&ObjectRef::new(&m.node_pool))
            .map(|p| p.object_ref(&()))
            .into_iter()
            .collect();
    }
    let mut out = Vec::new();
    for node in &m.nodes {
        if let Some(n) = state.nodes.get(&ObjectRef::new(node)) {
            out.push(n.object_ref(&()));
        }
        let claim = claims
            .get(node)
            .and_then(|c| state.node_claims.get(&ObjectRef::new(c)));
        if let Some(c) = claim {
            out.push(c.object_ref(&()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use karpenter_solver::disruption::{ConsolidationPolicy, MoveDecision};

    use super::*;

    fn scored(nodes: &[&str], savings: f64, disruption: f64) -> ScoredMove {
        ScoredMove {
            node_pool: "p".into(),
            policy: ConsolidationPolicy::Balanced,
            decision: MoveDecision::Rejected,
            score: Some(MoveScore {
                savings_fraction: savings,
                disruption_fraction: disruption,
            }),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            multi_node: false,
        }
    }

    #[test]
    fn a_move_scored_as_in_the_last_round_is_not_reported_again() {
        let mut r = Reported::default();
        let a = scored(&["a"], 0.25, 2.0 / 3.0);
        let b = scored(&["b"], 0.1, 0.5);
        assert_eq!(r.fresh(std::slice::from_ref(&a)).len(), 1);
        // Same move, same score: nothing new; b is new.
        assert_eq!(r.fresh(&[a.clone(), b.clone()]), vec![&b]);
        // a's score changed (the cluster moved): reported again; b unchanged.
        let a2 = scored(&["a"], 0.3, 2.0 / 3.0);
        assert_eq!(r.fresh(&[a2.clone(), b.clone()]), vec![&a2]);
        // A round without a, then a again: reported again (upstream re-evaluates on change).
        assert!(r.fresh(std::slice::from_ref(&b)).is_empty());
        assert_eq!(r.fresh(std::slice::from_ref(&a2)), vec![&a2]);
    }

    #[test]
    fn the_note_is_upstreams() {
        // 35 % of the cost for 2/3 of the disruption: 0.35 / 0.6667 = 0.525.
        let s = MoveScore {
            savings_fraction: 0.35,
            disruption_fraction: 2.0 / 3.0,
        };
        assert_eq!(
            note(&s),
            "score 0.53 >= threshold 0.50 (k: 2, savings 35.0%, disruption 66.7%)"
        );
    }
}
