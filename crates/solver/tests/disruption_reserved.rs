//! Consolidation with reserved capacity: a node on a reservation is cheap to keep, and moving
//! an on-demand node onto a reservation with room is a saving.

#![allow(clippy::unwrap_used)]

mod common;
mod disruption_common;

use common::*;
use disruption_common::*;
use karpenter_solver::disruption::*;
use karpenter_solver::*;

/// `small`: 2 vCPU (1.9 allocatable), on-demand 0.10, spot 0.07, reservation `cr-1` at 0.001
/// with `slots` left.
fn small(slots: i64) -> InstanceType {
    let mut it = fake_it("small", 2, "4Gi", 10);
    it.offerings = vec![
        Offering::new(Z1, "on-demand", 0.10),
        Offering::new(Z1, "spot", 0.07),
        Offering::reserved(Z1, 0.001, "cr-1", slots),
    ];
    it
}

fn fleet(slots: i64) -> Fleet {
    let mut pool = pool_p("default");
    pool.requirements = vec![NodeSelectorRequirement::new(
        "karpenter.sh/capacity-type",
        Operator::In,
        &["on-demand", "spot", "reserved"],
    )];
    Fleet::new(vec![small(slots)], vec![pool])
}

#[test]
fn an_on_demand_node_moves_onto_a_reservation_with_room() {
    let mut f = fleet(1);
    f.node(
        "od",
        "small",
        Z1,
        "on-demand",
        "default",
        vec![pod("p", &[("cpu", "1.5")])],
    );
    let p = f.plan(100);
    check_commands(&f.dp, &p).expect("valid commands");
    assert_eq!(p.commands.len(), 1, "{:?}", summary(&p));
    let c = &p.commands[0];
    assert_eq!(c.reason, Reason::Underutilized);
    assert_eq!(c.replacements.len(), 1);
    let r = &c.replacements[0];
    assert_eq!(
        (r.capacity_type.as_str(), r.reservation_id.as_deref()),
        ("reserved", Some("cr-1"))
    );
    // 0.10 on demand − 0.001 reserved.
    assert!(
        (c.savings_per_hour - 0.099).abs() < 1e-9,
        "{}",
        c.savings_per_hour
    );
}

#[test]
fn a_node_on_a_full_reservation_is_kept() {
    // The only replacement left is spot at 0.07, dearer than the 0.001 the node costs.
    let mut f = fleet(0);
    f.node(
        "r",
        "small",
        Z1,
        "reserved",
        "default",
        vec![pod("p", &[("cpu", "1.5")])],
    );
    assert_eq!(f.dp.nodes[0].price, Some(0.001));
    let p = f.plan(100);
    assert!(p.commands.is_empty(), "{:?}", summary(&p));
}

#[test]
fn with_the_reservation_full_an_on_demand_node_goes_to_spot() {
    // Spot (0.07) is still cheaper than on-demand (0.10): the replacement is spot, not the
    // full reservation.
    let mut f = fleet(0);
    f.node(
        "od",
        "small",
        Z1,
        "on-demand",
        "default",
        vec![pod("p", &[("cpu", "1.5")])],
    );
    let p = f.plan(100);
    assert_eq!(p.commands.len(), 1, "{:?}", summary(&p));
    let r = &p.commands[0].replacements[0];
    assert_eq!(
        (r.capacity_type.as_str(), r.reservation_id.as_deref()),
        ("spot", None)
    );
}
