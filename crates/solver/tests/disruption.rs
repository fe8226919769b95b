//! Disruption scenarios of karpenter-core §10.6 (45–52, 55 and the drift/expiry ones), on
//! catalog F and NodePool P, with outcomes reasoned from the catalog.
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

fn pods(prefix: &str, n: usize, reqs: &[(&str, &str)]) -> Vec<PodView> {
    (0..n)
        .map(|i| pod(&format!("{prefix}-{i}"), reqs))
        .collect()
}

#[test]
fn s45_empty_nodes_respect_percentage_budgets() {
    for (budget, deleted, allowed) in [("30%", 3, 3), ("100%", 10, 10), ("0%", 0, 0)] {
        let mut f = fleet();
        for i in 0..10 {
            f.node(
                &format!("n{i:02}"),
                DEFAULT,
                Z1,
                "on-demand",
                "default",
                vec![],
            );
        }
        f.policy("default").budgets = vec![Budget::nodes(budget)];
        let p = f.plan(100);
        let got: usize = p.commands.iter().map(|c| c.nodes.len()).sum();
        assert_eq!(got, deleted, "budget {budget}");
        assert!(p.commands.iter().all(|c| c.reason == Reason::Empty));
        assert!(p.commands.len() <= 1, "one delete command");
        let a = p
            .allowed
            .iter()
            .find(|a| a.node_pool == "default" && a.reason == Reason::Empty)
            .map(|a| a.nodes);
        assert_eq!(a, Some(allowed), "budget {budget}");
        check_commands(&f.dp, &p).expect("valid commands");
    }
}

#[test]
fn s46_multi_node_consolidation_stops_at_the_budget() {
    let mut f = fleet();
    for i in 0..10 {
        f.node(
            &format!("n{i:02}"),
            ARM,
            Z1,
            "on-demand",
            "default",
            pods(&format!("p{i}"), 1, &[("cpu", "100m")]),
        );
    }
    f.policy("default").budgets = vec![Budget::nodes("30%")];
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    let deleted: usize = p.commands.iter().map(|c| c.nodes.len()).sum();
    assert_eq!(deleted, 3, "{:?}", summary(&p));
    assert!(
        p.commands
            .iter()
            .all(|c| c.reason == Reason::Underutilized && c.replacements.is_empty())
    );
}

#[test]
fn s47_the_node_with_fewer_pods_goes() {
    let mut f = fleet();
    f.node("a", SMALL, Z1, "on-demand", "default", pods("a", 2, &[]));
    f.node("b", SMALL, Z1, "on-demand", "default", pods("b", 1, &[]));
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(Reason::Underutilized, vec!["b".to_string()], vec![])]
    );
    assert_eq!(p.commands[0].placements[0].node, "a");
}

#[test]
fn s48_an_expensive_node_is_replaced_by_a_cheaper_one() {
    let mut f = fleet();
    f.node(
        "big",
        ARM,
        Z1,
        "on-demand",
        "default",
        pods("p", 1, &[("cpu", "100m")]),
    );
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(p.commands.len(), 1, "{:?}", summary(&p));
    let c = &p.commands[0];
    assert_eq!(
        (c.reason, c.nodes.clone()),
        (Reason::Underutilized, vec!["big".to_string()])
    );
    assert_eq!(c.replacements.len(), 1);
    let r = &c.replacements[0];
    assert_eq!(r.instance_type, SMALL, "cheapest type that holds the pod");
    assert!(
        !r.instance_type_options.contains(&ARM.to_string()),
        "old type excluded"
    );
    assert!(
        (c.savings_per_hour - (15.3439 - 0.4147)).abs() < 1e-3,
        "{}",
        c.savings_per_hour
    );
}

/// Catalog F plus 20 cheap types, so a spot node has ≥ 15 cheaper spot options.
fn wide_catalog() -> Vec<InstanceType> {
    let mut its = catalog_f();
    for i in 0..20 {
        its.push(fake_it(&format!("extra-{i:02}"), 2, "2Gi", 5));
    }
    its
}

#[test]
fn s48_spot_to_spot_needs_fifteen_cheaper_spot_types_and_the_gate() {
    // Catalog F has only 4 spot types cheaper than the arm node: no action.
    let mut f = fleet();
    f.node(
        "big",
        ARM,
        Z1,
        "spot",
        "default",
        pods("p", 1, &[("cpu", "100m")]),
    );
    assert!(f.plan(100).commands.is_empty());

    let mut f = Fleet::new(wide_catalog(), vec![pool_p("default")]);
    f.node(
        "big",
        ARM,
        Z1,
        "spot",
        "default",
        pods("p", 1, &[("cpu", "100m")]),
    );
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(p.commands.len(), 1);
    let r = &p.commands[0].replacements[0];
    assert_eq!(r.capacity_type, "spot");
    assert_eq!(
        r.instance_type_options.len(),
        15,
        "truncated to the 15 cheapest"
    );

    let gated = plan(
        &f.dp,
        &DisruptionOptions {
            now: 100,
            spot_to_spot: false,
            ..Default::default()
        },
    )
    .expect("plan");
    assert!(gated.commands.is_empty(), "gate off: no spot-to-spot");
}

#[test]
fn s49_three_expensive_nodes_become_one_cheap_one() {
    let mut f = fleet();
    for i in 0..3 {
        f.node(
            &format!("n{i}"),
            ARM,
            Z1,
            "on-demand",
            "default",
            pods(&format!("p{i}"), 1, &[]),
        );
    }
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(
            Reason::Underutilized,
            vec!["n0".to_string(), "n1".to_string(), "n2".to_string()],
            vec![SMALL.to_string()]
        )]
    );
}

#[test]
fn s50_hostname_anti_affinity_blocks_consolidation() {
    let mut f = fleet();
    for i in 0..3 {
        let mut p = pod(&format!("anti-{i}"), &[("cpu", "1")]);
        p.labels = labels(&[("app", "anti")]);
        p.pod_anti_affinity = vec![term("kubernetes.io/hostname", &[("app", "anti")])];
        f.node(&format!("n{i}"), SMALL, Z1, "on-demand", "default", vec![p]);
    }
    let p = f.plan(100);
    assert!(p.commands.is_empty(), "{:?}", summary(&p));
}

/// Two half-used default nodes: either could be deleted into the other.
fn pair() -> Fleet {
    let mut f = fleet();
    f.node(
        "a",
        DEFAULT,
        Z1,
        "on-demand",
        "default",
        pods("a", 1, &[("cpu", "1")]),
    );
    f.node(
        "b",
        DEFAULT,
        Z1,
        "on-demand",
        "default",
        pods("b", 1, &[("cpu", "1")]),
    );
    f
}

#[test]
fn s51_do_not_disrupt_and_pdbs_protect_nodes() {
    // Baseline: one of the two goes.
    assert_eq!(pair().plan(1000).commands.len(), 1);

    let mut f = pair();
    f.pod_state("default/a-0").do_not_disrupt = DoNotDisrupt::Always;
    f.pod_state("default/b-0").do_not_disrupt = DoNotDisrupt::Always;
    let p = f.plan(1000);
    assert!(p.commands.is_empty());
    assert_eq!(p.blocked.len(), 2);

    // Node annotation "true" blocks; "false" does not.
    let mut f = pair();
    for n in &mut f.dp.nodes {
        n.do_not_disrupt = DoNotDisrupt::parse("true").expect("valid");
    }
    assert!(f.plan(1000).commands.is_empty());
    let mut f = pair();
    for n in &mut f.dp.nodes {
        n.do_not_disrupt = DoNotDisrupt::parse("false").expect("valid");
    }
    assert_eq!(f.plan(1000).commands.len(), 1);

    // Duration form: protects until the pod is 5m old.
    let mut f = pair();
    for k in ["default/a-0", "default/b-0"] {
        let s = f.pod_state(k);
        s.do_not_disrupt = DoNotDisrupt::parse("5m").expect("valid");
        s.created = 1000;
    }
    assert!(f.plan(1000 + 299).commands.is_empty());
    assert_eq!(f.plan(1000 + 300).commands.len(), 1);
    assert!(
        DoNotDisrupt::parse("soon").is_err(),
        "invalid values are reported, then ignored"
    );

    // A PDB allowing no disruption blocks; one allowing some does not; two on a pod block.
    for (allowed, count, blocked) in [(0, 1, true), (1, 1, false), (1, 2, true)] {
        let mut f = pair();
        for p in &mut f.dp.problem.existing_nodes {
            for pod in &mut p.pods {
                pod.labels = labels(&[("app", "x")]);
            }
        }
        for _ in 0..count {
            f.dp.pdbs.push(Pdb {
                namespace: "default".into(),
                selector: LabelSelector::labels(&[("app", "x")]),
                disruptions_allowed: allowed,
            });
        }
        assert_eq!(
            f.plan(1000).commands.is_empty(),
            blocked,
            "allowed {allowed} x{count}"
        );
    }
}

#[test]
fn s52_pods_never_move_onto_uninitialized_nodes() {
    let mut f = fleet();
    f.node(
        "cand",
        SMALL,
        Z1,
        "on-demand",
        "default",
        pods("p", 1, &[("cpu", "1")]),
    );
    f.node("fresh", DEFAULT, Z1, "on-demand", "default", vec![])
        .initialized = false;
    let p = f.plan(100);
    assert!(p.commands.is_empty(), "{:?}", summary(&p));

    // The same with the node initialized (and kept by do-not-disrupt so emptiness leaves it):
    // the pod moves there and the candidate goes.
    let mut f = fleet();
    f.node(
        "cand",
        SMALL,
        Z1,
        "on-demand",
        "default",
        pods("p", 1, &[("cpu", "1")]),
    );
    f.node("fresh", DEFAULT, Z1, "on-demand", "default", vec![])
        .do_not_disrupt = DoNotDisrupt::Always;
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(Reason::Underutilized, vec!["cand".to_string()], vec![])]
    );
    assert_eq!(p.commands[0].placements[0].node, "fresh");
}

#[test]
fn s55_consolidate_after_waits_for_pod_events_and_never_means_never() {
    let mut f = pair();
    f.policy("default").consolidate_after = Some(30);
    for n in &mut f.dp.nodes {
        n.last_pod_event = Some(1000);
    }
    assert!(
        f.plan(1010).commands.is_empty(),
        "10 s after the last pod event"
    );
    assert_eq!(f.plan(1030).commands.len(), 1, "30 s after");

    let mut f = pair();
    f.policy("default").consolidate_after = None;
    f.node("empty", DEFAULT, Z1, "on-demand", "default", vec![]);
    assert!(
        f.plan(1000).commands.is_empty(),
        "Never: no consolidation, no emptiness"
    );
    f.dp.nodes[0].drifted = Some(Drift {
        reason: "NodePoolDrifted".into(),
        since: 10,
    });
    let p = f.plan(1000);
    assert_eq!(
        p.commands.iter().map(|c| c.reason).collect::<Vec<_>>(),
        vec![Reason::Drifted],
        "drift still applies"
    );
}

#[test]
fn s53_drift_replaces_with_as_many_nodes_as_needed() {
    let mut gone = fake_it("eight", 8, "16Gi", 10);
    gone.capacity.set("cpu", 8100);
    for o in &mut gone.offerings {
        o.available = false;
    }
    let three = fake_it("three", 3, "8Gi", 10);
    let mut f = Fleet::new(vec![gone, three], vec![pool_p("default")]);
    // The node was bought before its offering went away: price it from the catalog entry.
    f.node(
        "old",
        "eight",
        Z1,
        "on-demand",
        "default",
        pods("p", 3, &[("cpu", "2")]),
    );
    f.dp.nodes[0].price = Some(1.0);
    f.dp.nodes[0].drifted = Some(Drift {
        reason: "InstanceTypeNotFound".into(),
        since: 5,
    });
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(
            Reason::Drifted,
            vec!["old".to_string()],
            vec!["three".to_string(); 3]
        )]
    );
}

#[test]
fn s54_drift_takes_empty_nodes_first_then_oldest_drift_and_skips_stuck_ones() {
    let mut f = fleet();
    f.policy("default").consolidate_after = None; // isolate drift
    // An unmanaged node with room, first in order: drifted pods land there, so no drifted
    // node becomes a destination (destinations are nominated and not disrupted in the call).
    f.node("spare", ARM, Z1, "on-demand", "default", vec![]);
    f.dp.nodes.pop();
    f.node(
        "late",
        DEFAULT,
        Z1,
        "on-demand",
        "default",
        pods("l", 1, &[("cpu", "1")]),
    );
    f.node(
        "early",
        DEFAULT,
        Z1,
        "on-demand",
        "default",
        pods("e", 1, &[("cpu", "1")]),
    );
    f.node("empty", DEFAULT, Z1, "on-demand", "default", vec![]);
    // Needs more memory than any type has: cannot be rescheduled.
    f.node(
        "stuck",
        ARM,
        Z1,
        "on-demand",
        "default",
        pods("s", 1, &[("memory", "200Gi")]),
    );
    for (n, since) in [("late", 50), ("early", 10), ("empty", 90), ("stuck", 1)] {
        let i = f.dp.nodes.iter().position(|x| x.name == n).expect("node");
        f.dp.nodes[i].drifted = Some(Drift {
            reason: "NodePoolDrifted".into(),
            since,
        });
    }
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    let order: Vec<String> = p.commands.iter().map(|c| c.nodes[0].clone()).collect();
    assert_eq!(order, vec!["empty", "early", "late"]);
}

#[test]
fn s56_expiration_is_forceful() {
    let mut f = pair();
    f.policy("default").expire_after = Some(3600);
    f.policy("default").budgets = vec![Budget::nodes("0")];
    f.pod_state("default/a-0").do_not_disrupt = DoNotDisrupt::Always;
    f.dp.nodes[0].created = 100;
    f.dp.nodes[1].created = 200;
    assert!(f.plan(3699).commands.is_empty());
    let p = f.plan(3700);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(Reason::Expired, vec!["a".to_string()], vec![])]
    );
    assert_eq!(
        p.commands[0].placements[0].node, "b",
        "its pod moves to the other node"
    );
}

#[test]
fn budgets_follow_reasons_and_cron_windows() {
    // 2024-01-01T00:00:00Z.
    let midnight = 1_704_067_200;
    let make = || {
        let mut f = fleet();
        for i in 0..4 {
            f.node(
                &format!("e{i}"),
                DEFAULT,
                Z1,
                "on-demand",
                "default",
                vec![],
            );
        }
        // Created at 0: would have expired by 2024 (expiration ignores budgets).
        f.policy("default").expire_after = None;
        f
    };
    // A zero budget for Empty only during 00:00–01:00.
    let mut f = make();
    f.policy("default").budgets = vec![
        Budget::nodes("100%"),
        Budget {
            nodes: "0".into(),
            reasons: Some(vec![Reason::Empty]),
            schedule: Some("0 0 * * *".into()),
            duration_seconds: Some(3600),
        },
    ];
    assert!(
        f.plan(midnight + 60).commands.is_empty(),
        "inside the window"
    );
    assert_eq!(
        f.plan(midnight + 7200).commands[0].nodes.len(),
        4,
        "outside"
    );
    // A budget for Drifted only does not limit emptiness.
    let mut f = make();
    f.policy("default").budgets = vec![Budget {
        nodes: "1".into(),
        reasons: Some(vec![Reason::Drifted]),
        schedule: None,
        duration_seconds: None,
    }];
    assert_eq!(f.plan(midnight).commands[0].nodes.len(), 4);
    // Nodes already disrupting use the budget up.
    let mut f = make();
    f.policy("default").budgets = vec![Budget::nodes("2")];
    f.dp.nodes[0].disrupting = true;
    assert_eq!(f.plan(midnight).commands[0].nodes.len(), 1);
}

#[test]
fn invalid_input_is_a_typed_error() {
    let mut f = pair();
    f.dp.nodes[0].name = "ghost".into();
    let err = plan(&f.dp, &DisruptionOptions::default()).expect_err("unknown node");
    assert_eq!(err, DisruptionError::UnknownNode("ghost".into()));
}

#[test]
fn daemon_pods_do_not_keep_a_node_busy() {
    let mut f = fleet();
    f.node(
        "n",
        DEFAULT,
        Z1,
        "on-demand",
        "default",
        pods("ds", 1, &[("cpu", "100m")]),
    );
    f.pod_state("default/ds-0").daemon_set = true;
    let p = f.plan(100);
    assert_eq!(
        summary(&p),
        vec![(Reason::Empty, vec!["n".to_string()], vec![])]
    );
}

#[test]
fn scale_down_blocked_nodes_are_kept_by_emptiness_and_consolidation_but_not_drift() {
    // Two empty nodes, one whose node group is at its minimum: emptiness removes the other.
    let mut f = fleet();
    f.node("kept", DEFAULT, Z1, "on-demand", "default", vec![])
        .scale_down_blocked = Some("at min size".into());
    f.node("gone", DEFAULT, Z1, "on-demand", "default", vec![]);
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(
        summary(&p),
        vec![(Reason::Empty, vec!["gone".to_string()], vec![])]
    );
    assert!(
        p.blocked
            .iter()
            .any(|b| b.node == "kept" && b.reason == "at min size"),
        "{:?}",
        p.blocked
    );

    // Drifted, it is still replaced (drift replaces, it does not scale down).
    f.dp.nodes[0].drifted = Some(Drift {
        reason: "NodePoolDrifted".into(),
        since: 10,
    });
    let p = f.plan(100);
    assert!(
        p.commands
            .iter()
            .any(|c| c.reason == Reason::Drifted && c.nodes == ["kept"]),
        "{:?}",
        summary(&p)
    );
}

#[test]
fn node_groups_keep_their_minimum_through_emptiness_and_consolidation() {
    // Four empty nodes; g1..g3 form a group that may lose one node, x is in no group. Emptiness
    // removes x and exactly one of the group, and the plan says why it cut the command.
    let mut f = fleet();
    for n in ["g1", "g2", "g3", "x"] {
        f.node(n, DEFAULT, Z1, "on-demand", "default", vec![]);
    }
    f.dp.node_groups = vec![NodeGroup {
        name: "MachineDeployment ns/md (min size 2)".into(),
        nodes: ["g1", "g2", "g3"].iter().map(|n| n.to_string()).collect(),
        removable: 1,
    }];
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    let gone: Vec<String> = p.commands.iter().flat_map(|c| c.nodes.clone()).collect();
    assert_eq!(gone.len(), 2, "{:?}", summary(&p));
    assert!(gone.contains(&"x".to_string()), "{gone:?}");
    assert_eq!(
        gone.iter().filter(|n| n.starts_with('g')).count(),
        1,
        "{gone:?}"
    );
    assert_eq!(p.notes.len(), 1, "{:?}", p.notes);

    // One of the group already leaving uses up its room: the others are blocked, and named so.
    f.dp.nodes[0].disrupting = true;
    let p = f.plan(100);
    let gone: Vec<String> = p.commands.iter().flat_map(|c| c.nodes.clone()).collect();
    assert_eq!(gone, ["x"], "{:?}", summary(&p));
    for n in ["g2", "g3"] {
        assert!(
            p.blocked.iter().any(|b| b.node == n
                && b.reason == "MachineDeployment ns/md (min size 2) is at its minimum size"),
            "{:?}",
            p.blocked
        );
    }
}
