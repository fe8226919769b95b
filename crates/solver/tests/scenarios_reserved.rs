//! Reserved capacity (karpenter-core.md §3.8): reserved offerings win on price, a plan never
//! puts more new nodes on a reservation than it has left, and the rest falls back.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use karpenter_solver::*;

const EPS: f64 = 1e-9;

/// `name`: `cpu` vCPUs, 4Gi per vCPU, 10 pods, kubeReserved 100m (allocatable cpu − 0.1), and
/// the offerings given.
fn it(name: &str, cpu: i64, offerings: Vec<Offering>) -> InstanceType {
    let mut capacity = res(&[("memory", &format!("{}Gi", 4 * cpu)), ("pods", "10")]);
    capacity.set("cpu", cpu * 1000);
    InstanceType {
        name: name.into(),
        capacity,
        overhead: Overhead {
            kube_reserved: res(&[("cpu", "100m")]),
            ..Default::default()
        },
        labels: labels(&[("kubernetes.io/arch", "amd64")]),
        offerings,
    }
}

/// `small` (2 vCPU): on-demand 0.10, spot 0.07, and reservation `cr-1` with `slots` left at
/// 0.001 (reserved instances are paid for up front; providers price them near zero).
fn small(slots: i64) -> InstanceType {
    it(
        "small",
        2,
        vec![
            Offering::new(Z1, "on-demand", 0.10),
            Offering::new(Z1, "spot", 0.07),
            Offering::reserved(Z1, 0.001, "cr-1", slots),
        ],
    )
}

/// A pool admitting `capacity_types`.
fn pool(capacity_types: &[&str]) -> NodePoolView {
    NodePoolView {
        name: "default".into(),
        requirements: vec![NodeSelectorRequirement::new(
            "karpenter.sh/capacity-type",
            Operator::In,
            capacity_types,
        )],
        ..Default::default()
    }
}

/// `n` pods of 1.5 cpu: one per `small` node (allocatable 1.9 cpu).
fn pods(n: usize) -> Vec<PodView> {
    (0..n)
        .map(|i| pod(&format!("p{i}"), &[("cpu", "1.5")]))
        .collect()
}

/// (capacity type, reservation) of every claim, sorted.
fn kinds(plan: &Plan) -> Vec<(String, Option<String>)> {
    let mut v: Vec<_> = plan
        .node_claims
        .iter()
        .map(|c| (c.capacity_type.clone(), c.reservation_id.clone()))
        .collect();
    v.sort();
    v
}

fn reserved() -> (String, Option<String>) {
    ("reserved".into(), Some("cr-1".into()))
}

fn od() -> (String, Option<String>) {
    ("on-demand".into(), None)
}

#[test]
fn reservation_is_used_first_and_the_claim_is_pinned_to_it() {
    let all = pool(&["on-demand", "spot", "reserved"]);
    let plan = solve_default(&problem(vec![small(5)], vec![all], pods(1)));
    assert_eq!(kinds(&plan), vec![reserved()]);
    let c = &plan.node_claims[0];
    assert!((c.price - 0.001).abs() < EPS, "{}", c.price);
    assert_eq!(c.labels["karpenter.sh/capacity-type"], "reserved");
    assert_eq!(c.zone, Z1);
}

#[test]
fn capacity_is_respected_and_the_overflow_falls_back() {
    // 2 slots, 3 nodes needed: 2 reserved + 1 on-demand = 0.001 + 0.001 + 0.10.
    let pool = pool(&["on-demand", "reserved"]);
    let plan = solve_default(&problem(vec![small(2)], vec![pool], pods(3)));
    assert_eq!(kinds(&plan), vec![od(), reserved(), reserved()]);
    assert!(
        (plan.total_price - 0.102).abs() < EPS,
        "{}",
        plan.total_price
    );
    assert!(plan.unschedulable.is_empty());
    // With spot allowed too, the overflow takes the cheaper spot (0.07).
    let all = super_pool();
    let plan = solve_default(&problem(vec![small(2)], vec![all], pods(3)));
    assert!(
        (plan.total_price - 0.072).abs() < EPS,
        "{}",
        plan.total_price
    );
}

fn super_pool() -> NodePoolView {
    pool(&["on-demand", "spot", "reserved"])
}

#[test]
fn a_full_reservation_is_skipped() {
    let plan = solve_default(&problem(
        vec![small(0)],
        vec![pool(&["on-demand", "reserved"])],
        pods(2),
    ));
    assert_eq!(kinds(&plan), vec![od(), od()]);
    assert!((plan.total_price - 0.20).abs() < EPS);
    // A negative count (more running than the provider thinks the reservation holds) too.
    let plan = solve_default(&problem(
        vec![small(-1)],
        vec![pool(&["on-demand", "reserved"])],
        pods(1),
    ));
    assert_eq!(kinds(&plan), vec![od()]);
}

#[test]
fn pods_requiring_on_demand_skip_reservations() {
    let mut p = pods(1);
    p[0].node_selector = labels(&[("karpenter.sh/capacity-type", "on-demand")]);
    let plan = solve_default(&problem(vec![small(5)], vec![super_pool()], p));
    assert_eq!(kinds(&plan), vec![od()]);
    // A NodePool without `reserved` never uses one either.
    let plan = solve_default(&problem(
        vec![small(5)],
        vec![pool(&["on-demand", "spot"])],
        pods(1),
    ));
    assert_eq!(plan.node_claims[0].capacity_type, "spot");
    assert_eq!(plan.node_claims[0].reservation_id, None);
}

#[test]
fn pods_requiring_reserved_wait_when_the_reservation_is_full() {
    let mut p = pods(3);
    for x in &mut p {
        x.node_selector = labels(&[("karpenter.sh/capacity-type", "reserved")]);
    }
    let plan = solve_default(&problem(vec![small(2)], vec![super_pool()], p));
    assert_eq!(kinds(&plan), vec![reserved(), reserved()]);
    assert_eq!(plan.unschedulable.len(), 1);
}

#[test]
fn capacity_is_counted_per_reservation_across_instance_types() {
    // One reservation offered by two types; 1 slot. Pod a needs `large` (3 cpu), pods b and
    // c fit `small`: only one of the three nodes may be reserved.
    let large = it(
        "large",
        4,
        vec![
            Offering::new(Z1, "on-demand", 0.20),
            Offering::reserved(Z1, 0.002, "cr-1", 1),
        ],
    );
    let mut small = small(1);
    small.offerings.truncate(1);
    small
        .offerings
        .push(Offering::reserved(Z1, 0.001, "cr-1", 1));
    let p = vec![
        pod("a", &[("cpu", "3")]),
        pod("b", &[("cpu", "1.5")]),
        pod("c", &[("cpu", "1.5")]),
    ];
    let plan = solve_default(&problem(vec![small, large], vec![super_pool()], p));
    let on_reservation = plan
        .node_claims
        .iter()
        .filter(|c| c.reservation_id.is_some())
        .count();
    assert_eq!(on_reservation, 1, "{:?}", kinds(&plan));
    // The largest pod is placed first and takes the slot (0.002); b and c then cost 0.20 on
    // demand whether they share a `large` or take a `small` each.
    assert!(
        (plan.total_price - 0.202).abs() < EPS,
        "{}",
        plan.total_price
    );
}

#[test]
fn instance_type_options_of_a_reserved_claim_are_the_reservations_types() {
    // `big` fits the pod too but is not in the reservation: a claim launching into cr-1 must
    // not offer it as an alternative (the launch would leave the reservation).
    let big = it("big", 4, vec![Offering::new(Z1, "on-demand", 0.20)]);
    let plan = solve_default(&problem(vec![small(1), big], vec![super_pool()], pods(2)));
    assert_eq!(kinds(&plan), vec![reserved(), ("spot".into(), None)]);
    for c in &plan.node_claims {
        if c.reservation_id.is_some() {
            assert_eq!(c.instance_type_options, vec!["small".to_string()]);
        } else {
            assert_eq!(
                c.instance_type_options,
                vec!["small".to_string(), "big".to_string()]
            );
        }
    }
}

#[test]
fn unavailable_reserved_offerings_are_skipped() {
    let mut s = small(3);
    s.offerings[2].available = false;
    let plan = solve_default(&problem(vec![s], vec![super_pool()], pods(1)));
    assert_eq!(plan.node_claims[0].capacity_type, "spot");
}
