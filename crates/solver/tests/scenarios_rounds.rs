//! Multi-round topology scenarios (karpenter-core.md §10.4: 33, 34, 35, 38, 43). Upstream runs
//! several provisioning rounds against one cluster; here each later round gets the earlier
//! rounds' pods as pods bound to existing nodes ([`promote`] turns a plan's NodeClaims into
//! such nodes), which is exactly what the next round's solver input is.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use karpenter_solver::*;

const ZONE: &str = "topology.kubernetes.io/zone";
const HOSTNAME: &str = "kubernetes.io/hostname";
const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";

/// A pod labelled `test=test` with `cpu` and the given spread constraints.
fn tpod(name: &str, cpu: &str, spreads: &[TopologySpreadConstraint]) -> PodView {
    let mut p = if cpu.is_empty() {
        pod(name, &[])
    } else {
        pod(name, &[("cpu", cpu)])
    };
    p.labels = labels(&[("test", "test")]);
    p.topology_spread = spreads.to_vec();
    p
}

/// A small-instance-type node (1.9 cpu allocatable) already running `pods`, with `node_labels`.
fn running_node(name: &str, node_labels: &[(&str, &str)], pods: Vec<PodView>) -> ExistingNode {
    let small = catalog_f()
        .into_iter()
        .find(|i| i.name == "small-instance-type")
        .unwrap();
    let mut l = labels(node_labels);
    l.insert(HOSTNAME.into(), name.into());
    ExistingNode {
        name: name.into(),
        labels: l,
        allocatable: small.allocatable(),
        pods,
        ..Default::default()
    }
}

/// The plan's NodeClaims as running nodes named `<round>-<claim>` (claim names restart every
/// round; node names must not), with their labels, the type's allocatable and their pods bound,
/// plus the plan's pods on existing nodes bound there: the next round's cluster.
fn promote(p: &Problem, plan: &Plan, round: &str) -> Vec<ExistingNode> {
    let by_key: BTreeMap<String, &PodView> = p.pods.iter().map(|x| (x.key(), x)).collect();
    let mut nodes = p.existing_nodes.clone();
    for e in &plan.existing_nodes {
        let n = nodes.iter_mut().find(|n| n.name == e.node).unwrap();
        n.pods.extend(e.pods.iter().map(|k| by_key[k].clone()));
    }
    for c in &plan.node_claims {
        let it = p
            .instance_types
            .iter()
            .find(|i| i.name == c.instance_type)
            .unwrap();
        let name = format!("{round}-{}", c.name);
        let mut l = c.labels.clone();
        l.insert(HOSTNAME.into(), name.clone());
        nodes.push(ExistingNode {
            name,
            labels: l,
            taints: c.taints.clone(),
            allocatable: it.allocatable(),
            pods: c.pods.iter().map(|k| by_key[k].clone()).collect(),
        });
    }
    nodes
}

/// Pods per value of `key` over the existing nodes and the plan's claims, sorted.
fn counts(key: &str, nodes: &[ExistingNode], plan: &Plan) -> Vec<usize> {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for n in nodes {
        if let Some(v) = n.labels.get(key) {
            *m.entry(v.clone()).or_default() += n.pods.len();
        }
    }
    for e in &plan.existing_nodes {
        let n = nodes.iter().find(|n| n.name == e.node).unwrap();
        *m.entry(n.labels[key].clone()).or_default() += e.pods.len();
    }
    for c in &plan.node_claims {
        *m.entry(c.labels[key].clone()).or_default() += c.pods.len();
    }
    let mut v: Vec<usize> = m.into_values().filter(|n| *n > 0).collect();
    v.sort_unstable();
    v
}

fn pool_in_zones(zones: &[&str]) -> NodePoolView {
    let mut p = pool_any_capacity();
    p.requirements
        .push(NodeSelectorRequirement::new(ZONE, Operator::In, zones));
    p
}

#[test]
fn s33_skew_counts_a_running_pod_the_pool_can_no_longer_reach() {
    // Round 1 put one 1.1-cpu pod in zone 3 (its small node has 0.8 cpu left: no room for
    // another). The pool now only reaches zones 1–2. The global minimum is 1 (zone 3), so
    // zones 1 and 2 may each reach 2 (2 − 1 ≤ 1): four pods fit, two do not.
    let zone_spread = spread(ZONE, 1, &[("test", "test")]);
    let first = tpod("first", "1.1", &[]);
    let mut p = problem(
        catalog_f(),
        vec![pool_in_zones(&[Z1, Z2])],
        (0..6)
            .map(|i| tpod(&format!("p{i}"), "1.1", std::slice::from_ref(&zone_spread)))
            .collect(),
    );
    p.existing_nodes
        .push(running_node("n-z3", &[(ZONE, Z3)], vec![first]));
    let plan = solve_default(&p);
    assert_eq!(plan.unschedulable.len(), 2, "{:?}", plan.unschedulable);
    assert_eq!(counts(ZONE, &p.existing_nodes, &plan), vec![1, 2, 2]);
    assert!(plan.node_claims.iter().all(|c| c.zone != Z3));
}

#[test]
fn s34_max_skew_five_with_two_running_pods() {
    // One running pod in each of zones 1 and 2; the pool reaches only zone 3. Zone 3 may hold
    // up to min + maxSkew = 1 + 5 = 6 pods; the other 4 of the 10 cannot be placed.
    let zone_spread = spread(ZONE, 5, &[("test", "test")]);
    let mut p = problem(
        catalog_f(),
        vec![pool_in_zones(&[Z3])],
        (0..10)
            .map(|i| tpod(&format!("p{i}"), "1.1", std::slice::from_ref(&zone_spread)))
            .collect(),
    );
    p.existing_nodes = vec![
        running_node("n-z1", &[(ZONE, Z1)], vec![tpod("r1", "1.1", &[])]),
        running_node("n-z2", &[(ZONE, Z2)], vec![tpod("r2", "1.1", &[])]),
    ];
    let plan = solve_default(&p);
    assert_eq!(plan.unschedulable.len(), 4);
    assert_eq!(counts(ZONE, &p.existing_nodes, &plan), vec![1, 1, 6]);
}

#[test]
fn s35_only_minimum_domains_are_accepted_while_skew_is_violated() {
    let zone_spread = spread(ZONE, 1, &[("test", "test")]);
    let mk = |prefix: &str, n: usize| -> Vec<PodView> {
        (0..n)
            .map(|i| {
                tpod(
                    &format!("{prefix}{i}"),
                    "",
                    std::slice::from_ref(&zone_spread),
                )
            })
            .collect()
    };
    // Round 1: nine pods spread {3, 3, 3}.
    let p1 = problem(catalog_f(), vec![pool_any_capacity()], mk("a", 9));
    let plan1 = solve_default(&p1);
    assert!(plan1.unschedulable.is_empty());
    assert_eq!(counts(ZONE, &[], &plan1), vec![3, 3, 3]);
    // Delete the six pods outside zone 1: keep only zone 1's nodes and pods.
    let kept: Vec<ExistingNode> = promote(&p1, &plan1, "r1")
        .into_iter()
        .filter(|n| n.labels[ZONE] == Z1)
        .collect();
    assert_eq!(kept.iter().map(|n| n.pods.len()).sum::<usize>(), 3);
    // Round 2: three more. Zone 1 (3) is over the minimum (0), so only zones 2 and 3 are
    // valid: the first goes to one of them, the next must go to the other (min still 0), the
    // third to either (min 1): {3, 1, 2} — nothing new in zone 1.
    let mut p2 = problem(catalog_f(), vec![pool_any_capacity()], mk("b", 3));
    p2.existing_nodes = kept;
    let plan2 = solve_default(&p2);
    assert!(plan2.unschedulable.is_empty());
    assert!(plan2.existing_nodes.is_empty());
    assert!(plan2.node_claims.iter().all(|c| c.zone != Z1));
    assert_eq!(counts(ZONE, &p2.existing_nodes, &plan2), vec![1, 2, 3]);
}

#[test]
fn s38_capacity_type_spread_with_a_running_spot_pod() {
    // A running spot pod; the pool is now on-demand only. min over {spot: 1, on-demand: 0} is
    // 0, so on-demand takes 1, then (min 1) a second; a third would make 3 − 1 > 1.
    let ct_spread = spread(CAPACITY_TYPE, 1, &[("test", "test")]);
    let mut pool = pool_p("default");
    pool.requirements = vec![NodeSelectorRequirement::new(
        CAPACITY_TYPE,
        Operator::In,
        &["on-demand"],
    )];
    let mut p = problem(
        catalog_f(),
        vec![pool],
        (0..5)
            .map(|i| tpod(&format!("p{i}"), "1.1", std::slice::from_ref(&ct_spread)))
            .collect(),
    );
    p.existing_nodes.push(running_node(
        "n-spot",
        &[(CAPACITY_TYPE, "spot"), (ZONE, Z1)],
        vec![tpod("r", "1.1", &[])],
    ));
    let plan = solve_default(&p);
    assert_eq!(plan.unschedulable.len(), 3);
    assert_eq!(counts(CAPACITY_TYPE, &p.existing_nodes, &plan), vec![1, 2]);
}

#[test]
fn s43_zone_and_hostname_spread_over_four_rounds() {
    let spreads = [
        spread(ZONE, 1, &[("test", "test")]),
        spread(HOSTNAME, 3, &[("test", "test")]),
    ];
    let mut nodes: Vec<ExistingNode> = Vec::new();
    let expected: [(usize, Vec<usize>); 4] = [
        (2, vec![1, 1]),
        (3, vec![1, 2, 2]),
        (5, vec![3, 3, 4]),
        (11, vec![7, 7, 7]),
    ];
    for (round, (n, want)) in expected.into_iter().enumerate() {
        let pods = (0..n)
            .map(|i| tpod(&format!("r{round}-{i}"), "", &spreads))
            .collect();
        let mut p = problem(catalog_f(), vec![pool_any_capacity()], pods);
        p.existing_nodes = nodes;
        let plan = solve_default(&p);
        assert!(plan.unschedulable.is_empty(), "round {round}");
        assert_eq!(
            counts(ZONE, &p.existing_nodes, &plan),
            want,
            "round {round}"
        );
        nodes = promote(&p, &plan, &format!("r{round}"));
        // Hostname maxSkew 3 with a minimum of 0 (a new node is always possible): ≤ 3 per node.
        for node in &nodes {
            assert!(
                node.pods.len() <= 3,
                "round {round}: {} holds {}",
                node.name,
                node.pods.len()
            );
        }
    }
}
