//! NodePool scenarios (karpenter-core.md §10.2–10.3): weights, taints, limits, DaemonSet
//! overhead, required and preferred node affinity.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use karpenter_solver::*;

#[test]
fn s17_s18_weights_and_explicit_pool_selection() {
    let mut w20 = pool_p("w20");
    w20.weight = 20;
    let mut w100 = pool_p("w100");
    w100.weight = 100;
    let pools = vec![pool_p("a-unweighted"), w20, w100];
    let pods: Vec<PodView> = (0..3).map(|i| pod(&format!("p{i}"), &[])).collect();
    let plan = solve_default(&problem(catalog_f(), pools.clone(), pods));
    assert!(plan.node_claims.iter().all(|c| c.node_pool == "w100"));
    let mut sel = pod("sel", &[]);
    sel.node_selector = labels(&[("karpenter.sh/nodepool", "a-unweighted")]);
    let plan = solve_default(&problem(catalog_f(), pools, vec![sel]));
    assert_eq!(plan.node_claims[0].node_pool, "a-unweighted");
}

#[test]
fn s19_prefer_no_schedule_pool_is_avoided() {
    let mut a = pool_p("a");
    a.taints
        .push(Taint::new("foo", "bar", TaintEffect::PreferNoSchedule));
    let plan = solve_default(&problem(
        catalog_f(),
        vec![a, pool_p("b")],
        vec![pod("x", &[])],
    ));
    assert_eq!(plan.node_claims[0].node_pool, "b");
    // Alone, the PreferNoSchedule pool is still used (relaxation adds a toleration).
    let mut a = pool_p("a");
    a.taints
        .push(Taint::new("foo", "bar", TaintEffect::PreferNoSchedule));
    let plan = solve_default(&problem(catalog_f(), vec![a], vec![pod("x", &[])]));
    assert_eq!(plan.node_claims.len(), 1);
}

#[test]
fn s20_s21_limits_are_never_exceeded() {
    let mut p = pool_p("default");
    p.limits = Some(res(&[("cpu", "2")]));
    let plan = solve_default(&problem(
        catalog_f(),
        vec![p.clone()],
        vec![pod("a", &[("cpu", "1.75")])],
    ));
    assert_eq!(names(&plan), vec!["small-instance-type"]);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![p.clone()],
        vec![pod("a", &[("cpu", "1.75")]), pod("b", &[("cpu", "1.75")])],
    ));
    assert_eq!(plan.node_claims.len(), 1);
    assert_eq!(plan.unschedulable.len(), 1);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![p.clone()],
        vec![pod("c", &[("cpu", "2.1")])],
    ));
    assert!(plan.node_claims.is_empty());
    // Existing usage counts too.
    p.usage = res(&[("cpu", "2")]);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![p],
        vec![pod("d", &[("cpu", "100m")])],
    ));
    assert!(plan.node_claims.is_empty());
    assert!(
        plan.unschedulable[0].reason.contains("limits"),
        "{}",
        plan.unschedulable[0].reason
    );
}

#[test]
fn s22_s23_node_and_cpu_limits_with_anti_affinity() {
    let mut p = pool_p("default");
    p.limits = Some(res(&[("nodes", "2")]));
    let pods = (0..3).map(|i| anti_pod(&format!("p{i}"), "1.5")).collect();
    let plan = solve_default(&problem(catalog_f(), vec![p], pods));
    assert_eq!(plan.node_claims.len(), 2);
    assert_eq!(plan.unschedulable.len(), 1);
    let mut p = pool_p("default");
    p.limits = Some(res(&[("cpu", "3")]));
    let pods = (0..2).map(|i| anti_pod(&format!("p{i}"), "1.5")).collect();
    let plan = solve_default(&problem(catalog_f(), vec![p], pods));
    assert_eq!(plan.node_claims.len(), 1);
}

#[test]
fn s24_s25_s26_daemonset_overhead() {
    let mut p = problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![pod("a", &[("cpu", "1"), ("memory", "1Gi")])],
    );
    p.daemon_sets.push(ds(&[("cpu", "2"), ("memory", "2Gi")]));
    let plan = solve_default(&p);
    assert_eq!(names(&plan), vec!["default-instance-type"]);
    assert_eq!(plan.node_claims[0].requests.get("cpu"), 3000);
    // Host port clash with the DaemonSet.
    let mut a = pod("a", &[]);
    a.host_ports.push(HostPort::tcp(8080));
    let mut p = problem(catalog_f(), vec![pool_p("default")], vec![a]);
    let mut d = ds(&[]);
    d.pod.host_ports.push(HostPort::tcp(8080));
    p.daemon_sets.push(d);
    let plan = solve_default(&p);
    assert!(plan.node_claims.is_empty());
    assert!(
        plan.unschedulable[0].reason.contains("host port"),
        "{}",
        plan.unschedulable[0].reason
    );
    // A DaemonSet bigger than any node.
    let mut p = problem(catalog_f(), vec![pool_p("default")], vec![pod("a", &[])]);
    p.daemon_sets.push(ds(&[("cpu", "10000")]));
    assert!(solve_default(&p).node_claims.is_empty());
}

#[test]
fn daemonset_that_does_not_tolerate_the_pool_is_not_overhead() {
    let mut tainted = pool_p("default");
    tainted
        .taints
        .push(Taint::new("dedicated", "x", TaintEffect::NoSchedule));
    let mut pd = pod("a", &[("cpu", "1"), ("memory", "1Gi")]);
    pd.tolerations.push(Toleration::exists("dedicated"));
    let mut p = problem(catalog_f(), vec![tainted], vec![pd]);
    p.daemon_sets.push(ds(&[("cpu", "2"), ("memory", "2Gi")]));
    assert_eq!(names(&solve_default(&p)), vec!["small-instance-type"]);
}

#[test]
fn s27_s28_required_terms_are_alternatives() {
    let mut np = pool_p("default");
    np.requirements.push(zone_req(Operator::In, &[Z1]));
    let mut a = pod("a", &[]);
    a.required_node_affinity
        .push(node_term(&[zone_req(Operator::In, &["invalid"])]));
    let plan = solve_default(&problem(catalog_f(), vec![np], vec![a]));
    assert_eq!(plan.unschedulable.len(), 1);
    let mut b = pod("b", &[]);
    for z in ["invalid", "invalid", Z1, Z2] {
        b.required_node_affinity
            .push(node_term(&[zone_req(Operator::In, &[z])]));
    }
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![b]));
    assert_eq!(plan.node_claims[0].zone, Z1);
}

#[test]
fn s29_s30_preferred_node_affinity() {
    let mut np = pool_p("default");
    np.requirements.push(zone_req(Operator::In, &[Z1, Z2]));
    let mut a = pod("a", &[]);
    for (w, r) in [
        (
            100,
            NodeSelectorRequirement::new("node.kubernetes.io/instance-type", Operator::In, &[Z3]),
        ),
        (50, zone_req(Operator::In, &[Z2])),
        (1, zone_req(Operator::In, &[Z1])),
    ] {
        a.preferred_node_affinity.push(WeightedNodeSelectorTerm {
            weight: w,
            term: node_term(&[r]),
        });
    }
    let plan = solve_default(&problem(catalog_f(), vec![np], vec![a]));
    assert_eq!(plan.node_claims[0].zone, Z2);
    let mut b = pod("b", &[]);
    b.preferred_node_affinity.push(WeightedNodeSelectorTerm {
        weight: 1,
        term: node_term(&[zone_req(Operator::NotIn, &[Z3])]),
    });
    b.required_node_affinity
        .push(node_term(&[zone_req(Operator::In, &[Z3])]));
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![b]));
    assert_eq!(plan.node_claims[0].zone, Z3);
}
