//! NodeOverlays scoped to a NodePool (`karpenter.sh/nodepool` or a template label in their
//! requirements): they change the catalog of that NodePool only. Expected prices by hand:
//! `fake_it` prices 0.1·cpu + 0.1·GB, so small-instance-type (2 cpu, 2 GiB) costs
//! 0.2 + 0.1·2.147483648 = 0.4147483648 and default-instance-type (4 cpu, 4 GiB)
//! 0.4 + 0.1·4.294967296 = 0.8294967296.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use karpenter_solver::instance_type::{CatalogIndex, find_for_pool};
use karpenter_solver::overlay::{Overlay, PriceChange, apply_overlays_to_problem};
use karpenter_solver::*;

const SMALL: &str = "small-instance-type";
const DEFAULT: &str = "default-instance-type";
const SMALL_PRICE: f64 = 0.4147483648;
const DEFAULT_PRICE: f64 = 0.8294967296;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn req(key: &str, op: Operator, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement::new(key, op, values)
}

fn overlay(
    name: &str,
    weight: i32,
    reqs: &[NodeSelectorRequirement],
    price: Option<&str>,
    capacity: &[(&str, &str)],
) -> Overlay {
    let price = price.map(|p| PriceChange::price(p).unwrap());
    Overlay::new(name, weight, reqs, price, res(capacity)).unwrap()
}

/// Pools `a` and `b` over small and default; pod `in-a` pinned to a, `in-b` to b (1 cpu).
fn two_pools() -> Problem {
    let pinned = |name: &str, pool: &str| {
        let mut p = pod(name, &[("cpu", "1")]);
        p.node_selector = labels(&[("karpenter.sh/nodepool", pool)]);
        p
    };
    problem(
        vec![fake_it(SMALL, 2, "2Gi", 5), fake_it(DEFAULT, 4, "4Gi", 5)],
        vec![pool_p("a"), pool_p("b")],
        vec![pinned("in-a", "a"), pinned("in-b", "b")],
    )
}

#[test]
fn a_price_overlay_for_one_pool_changes_only_its_choice() {
    let mut p = two_pools();
    let cheap_default_in_a = overlay(
        "cheap-default-in-a",
        0,
        &[
            req("karpenter.sh/nodepool", Operator::In, &["a"]),
            req("node.kubernetes.io/instance-type", Operator::In, &[DEFAULT]),
        ],
        Some("0.01"),
        &[],
    );
    let evaluation = apply_overlays_to_problem(&mut p, &[cheap_default_in_a]);
    assert!(evaluation.conflicts.is_empty());
    // small is the same in both pools: one shared entry; default differs: one copy per pool.
    let names: Vec<(&str, Option<&str>)> = p
        .instance_types
        .iter()
        .map(|it| {
            let pool = it.labels.get("karpenter.sh/nodepool").map(String::as_str);
            (it.name.as_str(), pool)
        })
        .collect();
    assert_eq!(
        names,
        [(SMALL, None), (DEFAULT, Some("a")), (DEFAULT, Some("b"))]
    );
    let in_a = find_for_pool(&p.instance_types, "a", DEFAULT).unwrap();
    let in_b = find_for_pool(&p.instance_types, "b", DEFAULT).unwrap();
    assert!(in_a.offerings.iter().all(|o| close(o.price, 0.01)));
    assert!(in_b.offerings.iter().all(|o| close(o.price, DEFAULT_PRICE)));
    let index = CatalogIndex::new(&p.instance_types);
    assert_eq!(index.get(Some("a"), DEFAULT), Some(1));
    assert_eq!(index.get(Some("b"), DEFAULT), Some(2));
    assert_eq!(index.get(Some("b"), SMALL), Some(0));

    let plan = solve_default(&p);
    assert!(plan.unschedulable.is_empty());
    // Pool a: default at 0.01 beats small at 0.4147; pool b: small at 0.4147 beats default.
    let a = claim_of(&plan, "default/in-a").unwrap();
    assert_eq!(
        (a.node_pool.as_str(), a.instance_type.as_str()),
        ("a", DEFAULT)
    );
    assert!(close(a.price, 0.01), "{}", a.price);
    assert_eq!(
        a.labels
            .get("node.kubernetes.io/instance-type")
            .map(String::as_str),
        Some(DEFAULT)
    );
    let b = claim_of(&plan, "default/in-b").unwrap();
    assert_eq!(
        (b.node_pool.as_str(), b.instance_type.as_str()),
        ("b", SMALL)
    );
    assert!(close(b.price, SMALL_PRICE), "{}", b.price);
    assert!(close(plan.total_price, 0.01 + SMALL_PRICE));
}

#[test]
fn a_capacity_overlay_for_one_pool_makes_room_only_there() {
    let mut p = two_pools();
    p.pods.clear();
    let fuse = |name: &str, pool: Option<&str>| {
        let mut p = pod(name, &[("cpu", "1"), ("example.com/fuse", "1")]);
        if let Some(pool) = pool {
            p.node_selector = labels(&[("karpenter.sh/nodepool", pool)]);
        }
        p
    };
    p.pods = vec![fuse("anywhere", None), fuse("in-b", Some("b"))];
    let fuse_in_a = overlay(
        "fuse-in-a",
        0,
        &[req("karpenter.sh/nodepool", Operator::In, &["a"])],
        None,
        &[("example.com/fuse", "1")],
    );
    apply_overlays_to_problem(&mut p, &[fuse_in_a]);
    let plan = solve_default(&p);
    // Only pool a's types have the resource: the unpinned pod goes there (on the cheaper
    // small), the pod pinned to b fits nowhere.
    let anywhere = claim_of(&plan, "default/anywhere").unwrap();
    assert_eq!(
        (anywhere.node_pool.as_str(), anywhere.instance_type.as_str()),
        ("a", SMALL)
    );
    let unschedulable: Vec<&str> = plan.unschedulable.iter().map(|u| u.pod.as_str()).collect();
    assert_eq!(unschedulable, ["default/in-b"]);
}

#[test]
fn a_template_label_scopes_an_overlay_to_the_pools_carrying_it() {
    let mut p = two_pools();
    p.node_pools[1].labels = labels(&[("team", "ml")]);
    // +100% on every type of pools labelled team=ml (b): small 0.8295 there, 0.4147 in a.
    let dear_for_ml = Overlay::new(
        "dear-for-ml",
        0,
        &[req("team", Operator::In, &["ml"])],
        Some(PriceChange::adjustment("+100%").unwrap()),
        Resources::new(),
    )
    .unwrap();
    apply_overlays_to_problem(&mut p, &[dear_for_ml]);
    assert_eq!(p.instance_types.len(), 4);
    let small_b = find_for_pool(&p.instance_types, "b", SMALL).unwrap();
    let small_a = find_for_pool(&p.instance_types, "a", SMALL).unwrap();
    assert!(close(small_b.offerings[0].price, 2.0 * SMALL_PRICE));
    assert!(close(small_a.offerings[0].price, SMALL_PRICE));
    let plan = solve_default(&p);
    let b = claim_of(&plan, "default/in-b").unwrap();
    assert!(close(b.price, 2.0 * SMALL_PRICE), "{}", b.price);
}

#[test]
fn overlays_without_pool_keys_keep_one_shared_catalog() {
    let mut p = two_pools();
    let everywhere = overlay(
        "cheap-default",
        0,
        &[req(
            "node.kubernetes.io/instance-type",
            Operator::In,
            &[DEFAULT],
        )],
        Some("0.01"),
        &[],
    );
    apply_overlays_to_problem(&mut p, &[everywhere]);
    assert_eq!(p.instance_types.len(), 2);
    assert!(
        p.instance_types
            .iter()
            .all(|it| !it.labels.contains_key("karpenter.sh/nodepool"))
    );
    let plan = solve_default(&p);
    for pod in ["default/in-a", "default/in-b"] {
        assert_eq!(claim_of(&plan, pod).unwrap().instance_type, DEFAULT);
    }
}

#[test]
fn a_conflict_in_one_pool_leaves_the_overlay_out_of_all() {
    let mut p = two_pools();
    // Equal weights go in reverse name order: "z-all" first, then "y-in-a". In pool a both
    // price default's offerings: y-in-a conflicts there, so it is left out of b as well.
    let z_all = overlay(
        "z-all",
        5,
        &[req(
            "node.kubernetes.io/instance-type",
            Operator::In,
            &[DEFAULT],
        )],
        Some("0.5"),
        &[],
    );
    let y_in_a = overlay(
        "y-in-a",
        5,
        &[req("karpenter.sh/nodepool", Operator::In, &["a"])],
        Some("0.02"),
        &[],
    );
    let evaluation = apply_overlays_to_problem(&mut p, &[y_in_a, z_all]);
    let conflict = &evaluation.conflicts["y-in-a"];
    assert_eq!(
        (conflict.with.as_str(), conflict.instance_type.as_str()),
        ("z-all", DEFAULT)
    );
    // Only z-all applies, alike in both pools: one shared entry per type, default at 0.5.
    assert_eq!(p.instance_types.len(), 2);
    let small = find_for_pool(&p.instance_types, "a", SMALL).unwrap();
    assert!(close(small.offerings[0].price, SMALL_PRICE));
    let default = find_for_pool(&p.instance_types, "b", DEFAULT).unwrap();
    assert!(default.offerings.iter().all(|o| close(o.price, 0.5)));
}
