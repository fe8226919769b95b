//! `consolidationPolicy: Balanced`: a consolidation must save at least half its share of the
//! NodePool's disruption (upstream's score ≥ 1/`BalancedK`). Expected decisions are worked out
//! by hand in each test from the prices and pod counts.
#![allow(clippy::unwrap_used)]

mod common;
mod disruption_common;

use common::*;
use disruption_common::*;
use karpenter_solver::disruption::*;
use karpenter_solver::*;

/// An instance type with `cpu` cores (100m reserved), plenty of memory, 10 pods, and one
/// on-demand offering in Z1 at `price`.
fn it(name: &str, cpu: i64, price: f64) -> InstanceType {
    let mut t = fake_it(name, cpu, "64Gi", 10);
    t.offerings = vec![Offering::new(Z1, "on-demand", price)];
    t
}

fn cpu_pods(prefix: &str, n: usize, cpu: &str) -> Vec<PodView> {
    (0..n)
        .map(|i| pod(&format!("{prefix}-{i}"), &[("cpu", cpu)]))
        .collect()
}

/// Pool "p" (policy `policy`) with two `large` nodes (4 cpu, $1.00):
/// - `busy`: 3 pods of 500m — reschedule cost 1 + 3 = 4; fits on a `medium` (1900m allocatable);
/// - `full`: 1 pod of 3600m — cost 1 + 1 = 2; nothing cheaper holds it, and busy's 500m pods do
///   not fit in its 300m left.
///
/// Pool totals: cost 2.00 $/h, disruption 6. Replacing `busy` by a `medium` at `medium_price`
/// saves 1.00 − medium_price, so its score is ((1 − medium_price) / 2) / (4 / 6).
fn two_large(policy: ConsolidationPolicy, medium_price: f64) -> Fleet {
    let mut f = Fleet::new(
        vec![it("large", 4, 1.0), it("medium", 2, medium_price)],
        vec![pool_p("p")],
    );
    f.node(
        "busy",
        "large",
        Z1,
        "on-demand",
        "p",
        cpu_pods("b", 3, "500m"),
    );
    f.node(
        "full",
        "large",
        Z1,
        "on-demand",
        "p",
        cpu_pods("f", 1, "3600m"),
    );
    f.policy("p").consolidation_policy = policy;
    f
}

#[test]
fn balanced_declines_a_replacement_that_saves_little_for_much_disruption() {
    // medium at $0.90: savings 0.10 → 0.10 / 2.00 = 5 % of the cost, for 4 / 6 = 67 % of the
    // disruption: score 0.075 < 0.5.
    let p = two_large(ConsolidationPolicy::Balanced, 0.90).plan(100);
    assert_eq!(summary(&p), vec![], "Balanced must decline");

    // The same cluster under WhenEmptyOrUnderutilized takes it (0.90 < 1.00 is cheaper).
    let f = two_large(ConsolidationPolicy::WhenEmptyOrUnderutilized, 0.90);
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(
            Reason::Underutilized,
            vec!["busy".to_string()],
            vec!["medium".to_string()]
        )]
    );
}

#[test]
fn balanced_accepts_a_replacement_that_saves_enough() {
    // medium at $0.30: savings 0.70 → 35 % of the cost for 67 % of the disruption:
    // score 0.525 ≥ 0.5.
    let f = two_large(ConsolidationPolicy::Balanced, 0.30);
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(
            Reason::Underutilized,
            vec!["busy".to_string()],
            vec!["medium".to_string()]
        )]
    );
    assert!((p.commands[0].savings_per_hour - 0.70).abs() < 1e-9);
}

#[test]
fn balanced_threshold_is_one_half() {
    // Savings needed for score exactly 0.5: (s / 2) / (4 / 6) = 0.5 → s = 2/3, i.e. a medium
    // at $1/3. A cent either side flips the decision.
    let decides = |price: f64| {
        !two_large(ConsolidationPolicy::Balanced, price)
            .plan(100)
            .commands
            .is_empty()
    };
    assert!(decides(1.0 / 3.0 - 0.01));
    assert!(!decides(1.0 / 3.0 + 0.01));
}

#[test]
fn pod_priority_and_deletion_cost_weigh_on_the_score() {
    // At $0.30 the move passes with plain pods (previous test). Raising one of busy's pods to
    // deletion cost 2^27 adds 1 to its eviction cost: busy costs 5 of a total 7, so the score
    // is 0.35 / (5 / 7) = 0.49 < 0.5.
    let mut f = two_large(ConsolidationPolicy::Balanced, 0.30);
    f.pod_state("default/b-0").deletion_cost = 1 << 27;
    assert_eq!(summary(&f.plan(100)), vec![]);
    // A negative eviction cost counts as 0 (not below the node's own 1): with a pod at
    // priority −2^27 (eviction cost 1 − 4 = −3 → 0) busy costs 3 of 5: 0.35 / 0.6 = 0.58.
    let mut f = two_large(ConsolidationPolicy::Balanced, 0.30);
    f.pod_state("default/b-0").priority = -(1 << 27);
    assert_eq!(f.plan(100).commands.len(), 1);
}

#[test]
fn balanced_still_removes_empty_nodes() {
    // `tiny` ($0.01, empty) next to two busy `large` nodes: deleting it would score
    // (0.01 / 2.01) / (1 / 5) = 0.025 if it were scored, but emptiness is not scored.
    let mut f = Fleet::new(
        vec![it("large", 4, 1.0), it("tiny", 1, 0.01)],
        vec![pool_p("p")],
    );
    f.node(
        "a",
        "large",
        Z1,
        "on-demand",
        "p",
        cpu_pods("a", 1, "3600m"),
    );
    f.node(
        "b",
        "large",
        Z1,
        "on-demand",
        "p",
        cpu_pods("b", 1, "3600m"),
    );
    f.node("tiny", "tiny", Z1, "on-demand", "p", vec![]);
    f.policy("p").consolidation_policy = ConsolidationPolicy::Balanced;
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(Reason::Empty, vec!["tiny".to_string()], vec![])]
    );
}

#[test]
fn balanced_scores_only_its_own_pool() {
    // Two pools with the same two nodes each; "b" is Balanced, "w" is not. Each pool's
    // totals are its own (cost 2.00, disruption 6), so with medium at $0.90 only "w"'s busy
    // node is replaced.
    let mut f = Fleet::new(
        vec![it("large", 4, 1.0), it("medium", 2, 0.90)],
        vec![pool_p("b"), pool_p("w")],
    );
    for pool in ["b", "w"] {
        let mut busy = cpu_pods(&format!("{pool}b"), 3, "500m");
        for p in &mut busy {
            // Pin each pool's pods to it, so they cannot move across.
            p.node_selector
                .insert("karpenter.sh/nodepool".into(), pool.into());
        }
        let mut full = cpu_pods(&format!("{pool}f"), 1, "3600m");
        full[0]
            .node_selector
            .insert("karpenter.sh/nodepool".into(), pool.into());
        f.node(
            &format!("{pool}-busy"),
            "large",
            Z1,
            "on-demand",
            pool,
            busy,
        );
        f.node(
            &format!("{pool}-full"),
            "large",
            Z1,
            "on-demand",
            pool,
            full,
        );
    }
    f.policy("b").consolidation_policy = ConsolidationPolicy::Balanced;
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(
            Reason::Underutilized,
            vec!["w-busy".to_string()],
            vec!["medium".to_string()]
        )]
    );
}

/// The one scored move of a plan, as (pool, decision, score, nodes, multi-node).
fn only_move(p: &DisruptionPlan) -> &ScoredMove {
    assert_eq!(p.moves.len(), 1, "one scored move: {:?}", p.moves);
    &p.moves[0]
}

#[test]
fn scored_moves_report_rejections_and_approvals() {
    // Balanced at $0.90 (first test): busy's move is scored and rejected. Savings 0.10 of 2.00
    // = 0.05, disruption 4 of 6: score 0.075. `full` is never scored: nothing can take its pod,
    // and the two together do not fit on one new node.
    let p = two_large(ConsolidationPolicy::Balanced, 0.90).plan(100);
    let m = only_move(&p);
    assert_eq!(
        (
            m.node_pool.as_str(),
            m.decision,
            m.nodes.clone(),
            m.multi_node
        ),
        ("p", MoveDecision::Rejected, vec!["busy".to_string()], false)
    );
    let s = m.score.expect("a Balanced pool is scored");
    assert!((s.savings_fraction - 0.05).abs() < 1e-9);
    assert!((s.disruption_fraction - 4.0 / 6.0).abs() < 1e-9);
    assert!((s.score() - 0.075).abs() < 1e-9);
    assert!(!s.approved());

    // At $0.30 it is approved: 0.35 / (4 / 6) = 0.525.
    let p = two_large(ConsolidationPolicy::Balanced, 0.30).plan(100);
    let m = only_move(&p);
    assert_eq!(m.decision, MoveDecision::Approved);
    assert!((m.score.expect("scored").score() - 0.525).abs() < 1e-9);

    // WhenEmptyOrUnderutilized: the move is counted (approved) but not scored.
    let p = two_large(ConsolidationPolicy::WhenEmptyOrUnderutilized, 0.90).plan(100);
    let m = only_move(&p);
    assert_eq!(
        (m.decision, m.policy, m.score),
        (
            MoveDecision::Approved,
            ConsolidationPolicy::WhenEmptyOrUnderutilized,
            None
        )
    );
}

#[test]
fn a_multi_node_move_is_reported_once_for_the_chosen_set() {
    // Three `large` nodes ($1.00) with one 500m pod each: all three pods fit on one `medium`
    // ($0.30). The search tries [a, b] (delete: the pods fit on c) then [a, b, c] (replace by a
    // medium) and reports only the chosen set: savings 3.00 − 0.30 = 2.70 of 3.00 = 0.9, for
    // all of the pool's disruption (3 × (1 + 1) of 6): score 0.9, approved.
    let mut f = Fleet::new(
        vec![it("large", 4, 1.0), it("medium", 2, 0.30)],
        vec![pool_p("p")],
    );
    for n in ["a", "b", "c"] {
        f.node(n, "large", Z1, "on-demand", "p", cpu_pods(n, 1, "500m"));
    }
    f.policy("p").consolidation_policy = ConsolidationPolicy::Balanced;
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(p.commands.len(), 1);
    let m = only_move(&p);
    let mut nodes = m.nodes.clone();
    nodes.sort();
    assert_eq!(
        (m.decision, m.multi_node, nodes),
        (
            MoveDecision::Approved,
            true,
            vec!["a".into(), "b".into(), "c".into()]
        )
    );
    let s = m.score.expect("scored");
    assert!((s.savings_fraction - 0.9).abs() < 1e-9, "{s:?}");
    assert!((s.disruption_fraction - 1.0).abs() < 1e-9, "{s:?}");
}
