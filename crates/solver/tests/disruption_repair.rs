//! Node repair as a disruption method (upstream v1.15 `Repair`), on catalog F and NodePool P:
//! nodes of `default-instance-type` (4 cpu) each running one 3-cpu pod, so a moved pod fits on
//! no other node (1 cpu free each) and needs a new one. Emptiness, consolidation and expiry are
//! off (`consolidateAfter`/`expireAfter: Never`) so only repair acts.
#![allow(clippy::unwrap_used)]

mod common;
mod disruption_common;

use common::*;
use disruption_common::*;
use karpenter_solver::disruption::*;

const DEFAULT: &str = "default-instance-type";
const NOW: i64 = 1_000;

/// `n` nodes `n00`.. of pool `default`, each with one 3-cpu pod `p00`...
fn fleet(n: usize) -> Fleet {
    let mut f = Fleet::new(catalog_f(), vec![pool_p("default")]);
    let pol = f.policy("default");
    pol.consolidate_after = None;
    pol.expire_after = None;
    for i in 0..n {
        f.node(
            &format!("n{i:02}"),
            DEFAULT,
            Z1,
            "on-demand",
            "default",
            vec![pod(&format!("p{i:02}"), &[("cpu", "3")])],
        );
    }
    f
}

fn state<'a>(f: &'a mut Fleet, node: &str) -> &'a mut NodeState {
    f.dp.nodes.iter_mut().find(|n| n.name == node).unwrap()
}

fn unhealthy<'a>(f: &'a mut Fleet, node: &str, due: Option<i64>) -> &'a mut NodeState {
    let s = state(f, node);
    s.unhealthy = Some(Unhealthy {
        condition: "Ready".into(),
        due,
    });
    s
}

fn repaired(p: &DisruptionPlan) -> Vec<Vec<String>> {
    p.commands
        .iter()
        .filter(|c| c.reason == Reason::Unhealthy)
        .map(|c| c.nodes.clone())
        .collect()
}

#[test]
fn a_due_node_is_replaced_and_one_not_yet_due_is_not() {
    // 10 nodes, 3 unhealthy: 3 > ceil(20% × 10) = 2 would trip the cap, so two only.
    let mut f = fleet(10);
    unhealthy(&mut f, "n03", Some(NOW - 1));
    unhealthy(&mut f, "n05", Some(NOW + 1));
    let p = f.plan(NOW);
    assert_eq!(repaired(&p), [["n03"]]);
    let cmd = &p.commands[0];
    // The 3-cpu pod fits on no other node (1 cpu free each): one new 4-cpu node.
    assert_eq!(cmd.replacements.len(), 1);
    assert!(cmd.placements.is_empty(), "{:?}", cmd.placements);
    assert!(cmd.unschedulable.is_empty());
    check_commands(&f.dp, &p).expect("valid commands");
    assert!(p.repair_blocked.is_empty(), "{:?}", p.repair_blocked);
}

#[test]
fn a_condition_without_transition_time_is_never_due() {
    let mut f = fleet(5);
    unhealthy(&mut f, "n01", None);
    assert!(f.plan(NOW).commands.is_empty());
}

#[test]
fn the_node_due_longest_goes_first_and_only_one_per_plan() {
    let mut f = fleet(10);
    unhealthy(&mut f, "n01", Some(NOW - 10));
    unhealthy(&mut f, "n07", Some(NOW - 600));
    let p = f.plan(NOW);
    assert_eq!(repaired(&p), [["n07"]]);
}

#[test]
fn ties_go_to_the_cheaper_node_to_disrupt_then_by_name() {
    // Same due time: n04 holds one pod less (n04 loses its pod), so it is cheaper to disrupt.
    let mut f = fleet(10);
    unhealthy(&mut f, "n02", Some(NOW - 5));
    unhealthy(&mut f, "n04", Some(NOW - 5));
    f.dp.problem.existing_nodes[4].pods.clear();
    assert_eq!(repaired(&f.plan(NOW)), [["n04"]]);
    // Both with their pod: by name.
    let mut f = fleet(10);
    unhealthy(&mut f, "n04", Some(NOW - 5));
    unhealthy(&mut f, "n02", Some(NOW - 5));
    assert_eq!(repaired(&f.plan(NOW)), [["n02"]]);
}

#[test]
fn do_not_repair_vetoes_and_is_reported_but_do_not_disrupt_does_not() {
    let mut f = fleet(10);
    unhealthy(&mut f, "n01", Some(NOW - 100)).do_not_repair = true;
    let s = unhealthy(&mut f, "n02", Some(NOW - 50));
    s.do_not_disrupt = DoNotDisrupt::Always;
    // A pod with do-not-disrupt and one blocked by a PDB hold back neither.
    f.pod_state("default/p02").do_not_disrupt = DoNotDisrupt::Always;
    f.dp.pdbs.push(Pdb {
        namespace: "default".into(),
        selector: Default::default(),
        disruptions_allowed: 0,
    });
    let p = f.plan(NOW);
    assert_eq!(repaired(&p), [["n02"]]);
    assert_eq!(
        p.repair_blocked,
        [RepairBlocked {
            node: "n01".into(),
            node_pool: "default".into(),
            why: RepairBlock::DoNotRepair,
        }]
    );
}

#[test]
fn more_than_a_fifth_unhealthy_stops_repair_for_the_node_pool() {
    // 5 nodes: 2 unhealthy > ceil(20% × 5) = 1. The one not yet due counts too.
    let mut f = fleet(5);
    unhealthy(&mut f, "n00", Some(NOW - 100));
    unhealthy(&mut f, "n01", Some(NOW + 100));
    let p = f.plan(NOW);
    assert!(p.commands.is_empty(), "{:?}", summary(&p));
    assert_eq!(
        p.repair_blocked,
        [RepairBlocked {
            node: "n00".into(),
            node_pool: "default".into(),
            why: RepairBlock::TooManyUnhealthy {
                unhealthy: 2,
                nodes: 5
            },
        }]
    );
    // 6 nodes: 2 ≤ ceil(20% × 6) = 2, so n00 is repaired.
    let mut f = fleet(6);
    unhealthy(&mut f, "n00", Some(NOW - 100));
    unhealthy(&mut f, "n01", Some(NOW + 100));
    assert_eq!(repaired(&f.plan(NOW)), [["n00"]]);
}

#[test]
fn repair_takes_the_unhealthy_budget_but_an_uninitialized_node_needs_none() {
    let mut f = fleet(10);
    f.policy("default").budgets = vec![
        Budget::nodes("100%"),
        Budget {
            reasons: Some(vec![Reason::Unhealthy]),
            ..Budget::nodes("0")
        },
    ];
    unhealthy(&mut f, "n01", Some(NOW - 100));
    let p = f.plan(NOW);
    assert!(p.commands.is_empty(), "{:?}", summary(&p));
    let allowed = |reason| {
        p.allowed
            .iter()
            .find(|a| a.node_pool == "default" && a.reason == reason)
            .map(|a| a.nodes)
    };
    assert_eq!(allowed(Reason::Unhealthy), Some(0));
    assert_eq!(allowed(Reason::Drifted), Some(10));
    // The same node never initialized: repaired, budget or not.
    state(&mut f, "n01").initialized = false;
    assert_eq!(repaired(&f.plan(NOW)), [["n01"]]);
}

#[test]
fn a_node_already_disrupting_counts_against_the_budget() {
    // Budget 1 for every reason, one node already leaving: nothing left for repair.
    let mut f = fleet(10);
    f.policy("default").budgets = vec![Budget::nodes("1")];
    state(&mut f, "n09").disrupting = true;
    unhealthy(&mut f, "n01", Some(NOW - 100));
    assert!(f.plan(NOW).commands.is_empty());
    // Without it, the budget of 1 allows the repair.
    state(&mut f, "n09").disrupting = false;
    assert_eq!(repaired(&f.plan(NOW)), [["n01"]]);
}

#[test]
fn a_node_whose_pods_would_find_no_place_is_passed_over() {
    // p00 selects a label only n00 has: no other node and no new node can take it.
    let mut f = fleet(10);
    f.dp.problem.existing_nodes[0]
        .labels
        .insert("team".into(), "x".into());
    f.dp.problem.existing_nodes[0].pods[0]
        .node_selector
        .insert("team".into(), "x".into());
    unhealthy(&mut f, "n00", Some(NOW - 100));
    unhealthy(&mut f, "n01", Some(NOW - 50));
    let p = f.plan(NOW);
    assert_eq!(repaired(&p), [["n01"]]);
    assert_eq!(p.repair_blocked.len(), 1, "{:?}", p.repair_blocked);
    let b = &p.repair_blocked[0];
    assert_eq!(b.node, "n00");
    match &b.why {
        RepairBlock::Unschedulable(pods) => {
            assert_eq!(pods.len(), 1);
            assert!(pods[0].starts_with("default/p00: "), "{pods:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_budget_reason_parses_as_unhealthy() {
    assert_eq!(
        Reason::from_budget_reason("Unhealthy"),
        Some(Reason::Unhealthy)
    );
    assert_eq!(Reason::Unhealthy.as_str(), "unhealthy");
}

#[test]
fn a_repair_command_is_not_validated() {
    // Like drift: returned as it is, even once the node looks healthy again.
    let mut f = fleet(10);
    unhealthy(&mut f, "n03", Some(NOW - 1));
    let p = f.plan(NOW);
    let cmd = p.commands[0].clone();
    state(&mut f, "n03").unhealthy = None;
    let opts = DisruptionOptions {
        now: NOW,
        ..Default::default()
    };
    let v = validate_command(&f.dp, &opts, &cmd).unwrap();
    assert_eq!(v.command, Some(cmd));
    assert!(v.dropped.is_empty());
}
