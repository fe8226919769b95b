//! Validating a planned command on a cluster that moved on (`validate_command`): the still-valid
//! part of the command goes; the planner choosing a different set now is no reason to drop it.
// The shared builders in `common` unwrap parsed test literals.
#![allow(clippy::unwrap_used)]

mod common;
mod disruption_common;

use common::*;
use disruption_common::*;
use karpenter_solver::disruption::*;
use karpenter_solver::*;

const DEFAULT: &str = "default-instance-type";
const SMALL: &str = "small-instance-type";
const ARM: &str = "arm-instance-type";

fn fleet() -> Fleet {
    Fleet::new(catalog_f(), vec![pool_p("default")])
}

fn pods(prefix: &str, n: usize) -> Vec<PodView> {
    (0..n).map(|i| pod(&format!("{prefix}-{i}"), &[])).collect()
}

fn opts() -> DisruptionOptions {
    DisruptionOptions {
        now: 100,
        ..Default::default()
    }
}

fn validate(f: &Fleet, c: &Command) -> Validation {
    let v = validate_command(&f.dp, &opts(), c).expect("validation");
    // The controller's way (the cluster taken, not copied) decides the same.
    let mut taken = f.dp.clone();
    let t = validate_command_taking(&mut taken, &opts(), c).expect("validation");
    assert_eq!(
        t, v,
        "validate_command_taking differs from validate_command"
    );
    assert!(
        taken.problem.existing_nodes.is_empty(),
        "the cluster was taken"
    );
    v
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Three arm nodes, one pod each: one command replaces them with a small node (s49).
fn three_arm() -> Fleet {
    let mut f = fleet();
    for i in 0..3 {
        f.node(
            &format!("n{i}"),
            ARM,
            Z1,
            "on-demand",
            "default",
            pods(&format!("p{i}"), 1),
        );
    }
    f
}

fn only_command(f: &Fleet) -> Command {
    let p = f.plan(100);
    assert_eq!(p.commands.len(), 1, "{:?}", summary(&p));
    p.commands[0].clone()
}

#[test]
fn an_unchanged_cluster_validates_the_command_as_planned() {
    let f = three_arm();
    let c = only_command(&f);
    let v = validate(&f, &c);
    assert!(v.dropped.is_empty(), "{:?}", v.dropped);
    let got = v.command.expect("still valid");
    assert_eq!(got.nodes, c.nodes);
    assert_eq!(got.replacements.len(), 1);
    assert_eq!(got.replacements[0].instance_type, SMALL);
}

#[test]
fn a_candidate_that_gained_a_do_not_disrupt_pod_is_dropped_and_the_rest_goes() {
    let mut f = three_arm();
    let c = only_command(&f);
    assert_eq!(c.nodes, names(&["n0", "n1", "n2"]));
    f.pod_state("default/p1-0").do_not_disrupt = DoNotDisrupt::Always;
    let v = validate(&f, &c);
    let got = v.command.expect("the rest is still valid");
    assert_eq!(got.nodes, names(&["n0", "n2"]));
    // n1 stays, and its free pod slots take the other two pods: no replacement needed.
    assert!(got.replacements.is_empty(), "{:?}", got.replacements);
    assert_eq!(got.placements.len(), 1);
    assert_eq!(got.placements[0].node, "n1");
    assert_eq!(v.dropped.len(), 1);
    assert_eq!(v.dropped[0].node, "n1");
    assert!(
        v.dropped[0].reason.contains(DO_NOT_DISRUPT),
        "{:?}",
        v.dropped
    );
}

#[test]
fn one_more_empty_node_does_not_invalidate_an_emptiness_command() {
    let mut f = fleet();
    for i in 0..5 {
        f.node(
            &format!("e{i}"),
            DEFAULT,
            Z1,
            "on-demand",
            "default",
            vec![],
        );
    }
    // A sixth node kept busy by a protected pod while planning.
    f.node("busy", DEFAULT, Z1, "on-demand", "default", pods("b", 1));
    f.pod_state("default/b-0").do_not_disrupt = DoNotDisrupt::Always;
    let c = only_command(&f);
    assert_eq!(c.reason, Reason::Empty);
    assert_eq!(c.nodes.len(), 5);

    // Its pod goes: a fresh plan would now pick six nodes, not the planned five.
    f.dp.problem.existing_nodes[5].pods.clear();
    let fresh = only_command(&f);
    assert_eq!(fresh.nodes.len(), 6, "the planner's choice moved on");
    let v = validate(&f, &c);
    let got = v.command.expect("still valid");
    assert_eq!(got.reason, Reason::Empty);
    assert_eq!(got.nodes, c.nodes);
    assert!(got.replacements.is_empty());
    assert!(v.dropped.is_empty());
}

#[test]
fn a_node_that_is_no_longer_empty_leaves_an_emptiness_command() {
    let mut f = fleet();
    for i in 0..3 {
        f.node(
            &format!("e{i}"),
            DEFAULT,
            Z1,
            "on-demand",
            "default",
            vec![],
        );
    }
    let c = only_command(&f);
    assert_eq!(c.nodes, names(&["e0", "e1", "e2"]));
    f.dp.problem.existing_nodes[1].pods = pods("new", 1);
    let v = validate(&f, &c);
    assert_eq!(
        v.command.expect("the others go").nodes,
        names(&["e0", "e2"])
    );
    assert_eq!(v.dropped.len(), 1);
    assert_eq!(v.dropped[0].node, "e1");
    assert!(v.dropped[0].reason.contains("no longer empty"));
}

#[test]
fn an_unavailable_replacement_type_gives_a_fresh_replacement() {
    let mut f = three_arm();
    let c = only_command(&f);
    for it in &mut f.dp.problem.instance_types {
        if it.name == SMALL {
            for o in &mut it.offerings {
                o.available = false;
            }
        }
    }
    let v = validate(&f, &c);
    let got = v
        .command
        .expect("a pricier but still cheaper type holds three empty pods");
    assert_eq!(got.nodes, c.nodes);
    assert_eq!(got.replacements[0].instance_type, DEFAULT);
}

#[test]
fn when_no_cheaper_replacement_is_left_the_longest_valid_prefix_goes() {
    let mut f = three_arm();
    let c = only_command(&f);
    for it in &mut f.dp.problem.instance_types {
        if it.name != ARM {
            for o in &mut it.offerings {
                o.available = false;
            }
        }
    }
    // Only arm nodes can be launched: replacing three arm nodes with one arm node does not
    // beat deleting two of them into the third (5 pod slots hold all three pods).
    let v = validate(&f, &c);
    let got = v.command.expect("a smaller delete still holds");
    assert_eq!(got.nodes, names(&["n0", "n1"]));
    assert!(got.replacements.is_empty());
    assert_eq!(v.dropped.len(), 1);
    assert_eq!(v.dropped[0].node, "n2");
}

#[test]
fn a_budget_used_up_by_another_command_trims_the_command() {
    let mut f = fleet();
    for i in 0..5 {
        f.node(
            &format!("e{i}"),
            DEFAULT,
            Z1,
            "on-demand",
            "default",
            vec![],
        );
    }
    f.policy("default").budgets = vec![Budget::nodes("3")];
    let c = only_command(&f);
    assert_eq!(c.nodes, names(&["e0", "e1", "e2"]));
    // Another command in flight now takes one node of the same NodePool.
    f.dp.nodes[4].disrupting = true;
    let v = validate(&f, &c);
    assert_eq!(
        v.command.expect("two still fit").nodes,
        names(&["e0", "e1"])
    );
    assert_eq!(v.dropped.len(), 1);
    assert!(v.dropped[0].reason.contains("budget"));
}

#[test]
fn a_node_now_disrupting_or_gone_is_dropped() {
    let mut f = three_arm();
    let c = only_command(&f);
    f.dp.nodes[0].disrupting = true;
    f.dp.nodes.remove(2);
    let v = validate(&f, &c);
    let got = v.command.expect("n1 alone still consolidates");
    assert_eq!(got.nodes, names(&["n1"]));
    let dropped: Vec<&str> = v.dropped.iter().map(|b| b.node.as_str()).collect();
    assert_eq!(dropped, vec!["n0", "n2"]);
}

#[test]
fn every_command_of_a_plan_validates_unchanged_once_the_earlier_ones_are_in_flight() {
    // Several commands in one plan: emptiness, then multi-node consolidation.
    let mut f = fleet();
    for i in 0..3 {
        f.node(
            &format!("e{i}"),
            DEFAULT,
            Z1,
            "on-demand",
            "default",
            vec![],
        );
    }
    for i in 0..3 {
        f.node(
            &format!("a{i}"),
            ARM,
            Z1,
            "on-demand",
            "default",
            pods(&format!("a{i}"), 1),
        );
    }
    let plan = f.plan(100);
    assert!(plan.commands.len() >= 2, "{:?}", summary(&plan));
    for (k, c) in plan.commands.iter().enumerate() {
        let mut g = Fleet { dp: f.dp.clone() };
        for earlier in &plan.commands[..k] {
            for n in &mut g.dp.nodes {
                if earlier.nodes.contains(&n.name) {
                    n.disrupting = true;
                }
            }
        }
        let v = validate(&g, c);
        let got = v.command.expect("valid");
        assert_eq!(got.nodes, c.nodes, "command {k}");
        let types = |c: &Command| -> Vec<String> {
            c.replacements
                .iter()
                .map(|r| r.instance_type.clone())
                .collect()
        };
        assert_eq!(types(&got), types(c), "command {k}");
    }
}

#[test]
fn pods_of_nodes_already_disrupting_keep_their_room() {
    // Only the default type can be launched, 5 pod slots each.
    let mut f = fleet();
    for it in &mut f.dp.problem.instance_types {
        if it.name != DEFAULT {
            for o in &mut it.offerings {
                o.available = false;
            }
        }
    }
    f.node("b", DEFAULT, Z1, "on-demand", "default", pods("b", 2));
    f.node("c", DEFAULT, Z1, "on-demand", "default", pods("c", 2));
    // b and c together hold 4 pods: one of them can go into the other.
    let p = f.plan(100);
    assert_eq!(p.commands.len(), 1, "{:?}", summary(&p));
    assert!(p.commands[0].replacements.is_empty());

    // A node being disrupted with 3 pods: they need 3 of the 6 free slots, so neither b nor
    // c can go now (7 pods, 5 slots on one node).
    f.node("leaving", DEFAULT, Z1, "on-demand", "default", pods("l", 3))
        .disrupting = true;
    let p = f.plan(100);
    assert!(p.commands.is_empty(), "{:?}", summary(&p));
    check_commands(&f.dp, &p).expect("valid");
}
