//! The cost lower bound: integrality cuts make it strictly better than the LP relaxation on
//! small or lumpy inputs, and it stays below the cost of a plan (properties.rs checks that on
//! random problems). Expected values are derived by hand from catalog-F prices
//! (0.1·cpu + 0.1·GB, allocatable = capacity − 100m cpu − 10Mi).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use karpenter_solver::*;

const GIB_GB: f64 = 1.073741824;

fn price(cpu: f64, gib: f64) -> f64 {
    0.1 * cpu + 0.1 * gib * GIB_GB
}

#[test]
fn one_pod_needs_a_whole_node_not_a_fraction_of_a_big_one() {
    // a: 2 cpu (1.9 allocatable) at 0.41475; b: 8 cpu (7.9) at 1.65899. A 1.5-cpu pod fits
    // either. The LP relaxation may buy 1.5/7.9 of b = 0.31501 (cheaper per cpu than a), but
    // any fleet holds at least one whole node able to host the pod: bound = price(a).
    // This also guards validity: pruning `a` as "dominated by 0.24 b" and then requiring a
    // whole node would give price(b) > cost.
    let its = vec![fake_it("a", 2, "2Gi", 10), fake_it("b", 8, "8Gi", 10)];
    let p = problem(
        its,
        vec![pool_p("default")],
        vec![pod("x", &[("cpu", "1500m")])],
    );
    let lp_only = 1.5 / 7.9 * price(8.0, 8.0);
    let want = price(2.0, 2.0);
    assert!(want > lp_only + 0.09);
    let bound = lower_bound(&p, &[0]);
    assert!((bound - want).abs() < 1e-6, "bound {bound}, want {want}");
    let plan = solve_default(&p);
    assert!((plan.total_price - want).abs() < 1e-9);
    assert!((plan.lower_bound - want).abs() < 1e-6);
}

#[test]
fn pods_that_pairwise_cannot_share_a_node_each_need_one() {
    // Only c: 4 cpu (3.9 allocatable) at 0.82950. Two 2-cpu pods plus one 2-cpu pod with a
    // node selector (a different pod class): no two fit together (4 > 3.9), so three nodes.
    // LP alone: 6/3.9 nodes = 1.27615; per-class node counts alone: ⌈2/1⌉ = 2 nodes = 1.65899;
    // the clique of all three pods: 3 × 0.82950 = 2.48849.
    let its = vec![fake_it("c", 4, "4Gi", 10)];
    let mut y = pod("y", &[("cpu", "2")]);
    y.node_selector = labels(&[("kubernetes.io/arch", "amd64")]);
    let pods = vec![pod("x0", &[("cpu", "2")]), pod("x1", &[("cpu", "2")]), y];
    let p = problem(its, vec![pool_p("default")], pods);
    let want = 3.0 * price(4.0, 4.0);
    let bound = lower_bound(&p, &[0, 1, 2]);
    assert!((bound - want).abs() < 1e-6, "bound {bound}, want {want}");
    assert!(bound > 2.0 * price(4.0, 4.0) + 0.8);
    let plan = solve_default(&p);
    assert_eq!(plan.node_claims.len(), 3);
    assert!(plan.lower_bound <= plan.total_price + 1e-9);
}

#[test]
fn cover_cut_binds_even_when_the_lp_buys_almost_a_whole_node() {
    // Five 1.5-cpu pods; a (1.9 allocatable, 0.41475) holds 1, b (7.9, 1.65899) holds 5.
    // Plain LP: 7.5 cpu at b's 0.21000/cpu = 7.5/7.9 b = 1.57499. The cover cut says at least
    // ⌈5/5⌉ = 1 whole node: n_a + n_b ≥ 1 with 1.9 n_a + 7.9 n_b ≥ 7.5. Both bind at the
    // optimum: n_b = 5.6/6, n_a = 0.4/6, price (0.4 a + 5.6 b)/6 = 1.57604 — above the plain
    // LP, below the true optimum (one b, 1.65899).
    let its = vec![fake_it("a", 2, "2Gi", 10), fake_it("b", 8, "8Gi", 10)];
    let pods = (0..5)
        .map(|i| pod(&format!("x{i}"), &[("cpu", "1500m")]))
        .collect();
    let p = problem(its, vec![pool_p("default")], pods);
    let plain_lp = 7.5 / 7.9 * price(8.0, 8.0);
    let want = (0.4 * price(2.0, 2.0) + 5.6 * price(8.0, 8.0)) / 6.0;
    assert!(want > plain_lp + 1e-3 && want < price(8.0, 8.0));
    let bound = lower_bound(&p, &[0, 1, 2, 3, 4]);
    assert!((bound - want).abs() < 1e-5, "bound {bound}, want {want}");
    let plan = solve_default(&p);
    assert!((plan.total_price - price(8.0, 8.0)).abs() < 1e-9);
}
