//! Topology scenarios (karpenter-core.md §10.4): zone / hostname / capacity-type spread, pod
//! affinity and anti-affinity.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use karpenter_solver::*;

#[test]
fn s31_s32_zone_spread() {
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_any_capacity()],
        spread_pods(4, "topology.kubernetes.io/zone", 1),
    ));
    assert_eq!(zone_counts(&plan), vec![1, 1, 2]);
    let mut np = pool_any_capacity();
    np.requirements.push(zone_req(Operator::In, &[Z1, Z2]));
    let plan = solve_default(&problem(
        catalog_f(),
        vec![np],
        spread_pods(4, "topology.kubernetes.io/zone", 1),
    ));
    assert_eq!(zone_counts(&plan), vec![2, 2]);
    let mut np = pool_any_capacity();
    np.labels = labels(&[("topology.kubernetes.io/zone", Z1)]);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![np],
        spread_pods(4, "topology.kubernetes.io/zone", 1),
    ));
    assert_eq!(zone_counts(&plan), vec![4]);
}

#[test]
fn s36_hostname_spread() {
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_any_capacity()],
        spread_pods(4, "kubernetes.io/hostname", 1),
    ));
    assert_eq!(plan.node_claims.len(), 4);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_any_capacity()],
        spread_pods(4, "kubernetes.io/hostname", 4),
    ));
    assert_eq!(plan.node_claims.len(), 1);
}

#[test]
fn s37_capacity_type_spread() {
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_any_capacity()],
        spread_pods(4, "karpenter.sh/capacity-type", 1),
    ));
    let spot: usize = plan
        .node_claims
        .iter()
        .filter(|c| c.capacity_type == "spot")
        .map(|c| c.pods.len())
        .sum();
    assert_eq!(spot, 2);
}

#[test]
fn s39_unknown_topology_key_blocks_only_that_pod() {
    let mut a = spread_pods(1, "unknown", 1).remove(0);
    a.name = "constrained".into();
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![a, pod("free", &[])],
    ));
    assert_eq!(plan.unschedulable.len(), 1);
    assert_eq!(plan.unschedulable[0].pod, "default/constrained");
}

#[test]
fn s40_self_affinity_collocates() {
    for key in ["kubernetes.io/hostname", "topology.kubernetes.io/zone"] {
        let pods: Vec<PodView> = (0..3)
            .map(|i| {
                let mut p = pod(&format!("a{i}"), &[("cpu", "1")]);
                p.labels = labels(&[("security", "s2")]);
                p.pod_affinity.push(term(key, &[("security", "s2")]));
                p
            })
            .collect();
        let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
        assert!(plan.unschedulable.is_empty());
        let zones: std::collections::BTreeSet<&str> =
            plan.node_claims.iter().map(|c| c.zone.as_str()).collect();
        assert_eq!(zones.len(), 1, "{key}");
        if key == "kubernetes.io/hostname" {
            assert_eq!(plan.node_claims.len(), 1);
        }
    }
}

#[test]
fn s41_s42_anti_affinity() {
    let mut x = pod("x", &[]);
    x.labels = labels(&[("security", "s2")]);
    let mut y = pod("y", &[]);
    y.pod_anti_affinity
        .push(term("kubernetes.io/hostname", &[("security", "s2")]));
    for pods in [vec![x.clone(), y.clone()], vec![y.clone(), x.clone()]] {
        let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
        assert_ne!(
            claim_of(&plan, "default/x").unwrap().name,
            claim_of(&plan, "default/y").unwrap().name
        );
    }
    let mut pods: Vec<PodView> = [Z1, Z2, Z3]
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let mut p = pod(&format!("p{i}"), &[("cpu", "2")]);
            p.labels = labels(&[("security", "s2")]);
            p.node_selector = labels(&[("topology.kubernetes.io/zone", z)]);
            p
        })
        .collect();
    let mut anti = pod("anti", &[]);
    anti.pod_anti_affinity
        .push(term("topology.kubernetes.io/zone", &[("security", "s2")]));
    pods.push(anti);
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
    assert_eq!(plan.unschedulable.len(), 1);
    assert_eq!(plan.unschedulable[0].pod, "default/anti");
}

#[test]
fn preferred_pod_affinity_joins_the_target_when_possible() {
    let mut x = pod("x", &[("cpu", "1")]);
    x.labels = labels(&[("app", "db")]);
    let mut y = pod("y", &[("cpu", "500m")]);
    y.preferred_pod_affinity.push(WeightedPodAffinityTerm {
        weight: 10,
        term: term("kubernetes.io/hostname", &[("app", "db")]),
    });
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![x, y]));
    assert_eq!(plan.node_claims.len(), 1);
    // Preferred anti-affinity that cannot hold is relaxed rather than failing the pod.
    let mut z = pod("z", &[]);
    z.labels = labels(&[("app", "db")]);
    z.preferred_pod_anti_affinity.push(WeightedPodAffinityTerm {
        weight: 10,
        term: term("unknown-key", &[("app", "db")]),
    });
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![z]));
    assert!(plan.unschedulable.is_empty());
}
