//! Overlays on a hand-made catalog; every expected price is worked out in the comments.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use super::*;
use crate::instance_type::{Offering, Overhead};
use crate::requirements::Operator;

/// `small` (0.2 spot in a, 0.3 on-demand in a and b) and `large` (0.4 spot in a, 0.6
/// on-demand in a), both amd64; `large` also has label `family=l`.
fn catalog() -> Vec<InstanceType> {
    let it = |name: &str, offerings: Vec<Offering>, extra: &[(&str, &str)]| {
        let mut labels = BTreeMap::from([("kubernetes.io/arch".to_owned(), "amd64".to_owned())]);
        labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        InstanceType {
            name: name.to_owned(),
            capacity: Resources::parse([("cpu", "2"), ("memory", "4Gi")]).unwrap(),
            overhead: Overhead::default(),
            labels,
            offerings,
        }
    };
    vec![
        it(
            "small",
            vec![
                Offering::new("a", "spot", 0.2),
                Offering::new("a", "on-demand", 0.3),
                Offering::new("b", "on-demand", 0.3),
            ],
            &[],
        ),
        it(
            "large",
            vec![
                Offering::new("a", "spot", 0.4),
                Offering::new("a", "on-demand", 0.6),
            ],
            &[("family", "l")],
        ),
    ]
}

fn req(key: &str, op: Operator, values: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement::new(key, op, values)
}

fn price_overlay(
    name: &str,
    weight: i32,
    reqs: &[NodeSelectorRequirement],
    change: &str,
) -> Overlay {
    let price = if change.starts_with(['+', '-']) {
        PriceChange::adjustment(change).unwrap()
    } else {
        PriceChange::price(change).unwrap()
    };
    Overlay::new(name, weight, reqs, Some(price), Resources::new()).unwrap()
}

fn capacity_overlay(
    name: &str,
    weight: i32,
    reqs: &[NodeSelectorRequirement],
    cap: &[(&str, &str)],
) -> Overlay {
    Overlay::new(
        name,
        weight,
        reqs,
        None,
        Resources::parse(cap.iter().copied()).unwrap(),
    )
    .unwrap()
}

fn prices(catalog: &[InstanceType]) -> Vec<(String, String, String, f64)> {
    catalog
        .iter()
        .flat_map(|it| {
            it.offerings.iter().map(|o| {
                (
                    it.name.clone(),
                    o.zone.clone(),
                    o.capacity_type.clone(),
                    o.price,
                )
            })
        })
        .collect()
}

fn assert_prices(catalog: &[InstanceType], want: &[f64]) {
    let got: Vec<f64> = prices(catalog).iter().map(|p| p.3).collect();
    assert_eq!(got.len(), want.len(), "{:?}", prices(catalog));
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() < 1e-12,
            "got {:?}, want {want:?}",
            prices(catalog)
        );
    }
}

#[test]
fn percent_adjustment_on_spot_only() {
    let mut c = catalog();
    let o = price_overlay(
        "spot",
        1,
        &[req(labels::CAPACITY_TYPE, Operator::In, &["spot"])],
        "-10%",
    );
    let e = apply_overlays(&mut c, &[o]);
    assert!(e.conflicts.is_empty());
    // Spot: 0.2 - 10% = 0.18, 0.4 - 10% = 0.36; on-demand unchanged.
    assert_prices(&c, &[0.18, 0.3, 0.3, 0.36, 0.6]);
}

#[test]
fn absolute_price_by_instance_type_and_zone() {
    let mut c = catalog();
    let o = price_overlay(
        "small-b",
        1,
        &[
            req(labels::INSTANCE_TYPE, Operator::In, &["small"]),
            req(labels::ZONE, Operator::In, &["b"]),
        ],
        "5",
    );
    apply_overlays(&mut c, &[o]);
    // Only small's zone-b offering becomes 5.
    assert_prices(&c, &[0.2, 0.3, 5.0, 0.4, 0.6]);
}

#[test]
fn amounts_never_go_below_zero() {
    let mut c = catalog();
    apply_overlays(&mut c, &[price_overlay("cut", 1, &[], "-0.35")]);
    // 0.2-0.35 <0 → 0; 0.3-0.35 <0 → 0; 0.4-0.35 = 0.05; 0.6-0.35 = 0.25.
    assert_prices(&c, &[0.0, 0.0, 0.0, 0.05, 0.25]);
}

#[test]
fn higher_weight_wins_without_conflict() {
    let mut c = catalog();
    let e = apply_overlays(
        &mut c,
        &[
            price_overlay("low", 1, &[], "+1"),
            price_overlay("high", 50, &[], "0.5"),
        ],
    );
    assert!(e.conflicts.is_empty(), "{e:?}");
    // "high" (weight 50) sets every price to 0.5; "low" matches the same offerings but loses.
    assert_prices(&c, &[0.5; 5]);
}

#[test]
fn lower_weight_fills_what_higher_weight_leaves() {
    let mut c = catalog();
    let high = price_overlay(
        "high",
        50,
        &[req(labels::INSTANCE_TYPE, Operator::In, &["large"])],
        "1",
    );
    let low = price_overlay("low", 1, &[], "+0.1");
    apply_overlays(&mut c, &[low, high]);
    // small: 0.2+0.1, 0.3+0.1, 0.3+0.1; large: set to 1.
    assert_prices(&c, &[0.3, 0.4, 0.4, 1.0, 1.0]);
}

#[test]
fn equal_weight_overlap_leaves_the_alphabetically_earlier_out() {
    let mut c = catalog();
    let a = price_overlay(
        "a",
        10,
        &[req(labels::CAPACITY_TYPE, Operator::In, &["spot"])],
        "1",
    );
    let b = price_overlay(
        "b",
        10,
        &[req(labels::INSTANCE_TYPE, Operator::In, &["small"])],
        "2",
    );
    let e = apply_overlays(&mut c, &[a, b]);
    // Equal weights go in reverse name order: "b" first (all of small's offerings → 2), then
    // "a" hits small's spot offering, already changed at weight 10 → conflict, "a" is left out
    // entirely (large's spot stays 0.4).
    assert_prices(&c, &[2.0, 2.0, 2.0, 0.4, 0.6]);
    let conflict = &e.conflicts["a"];
    assert_eq!(conflict.with, "b");
    assert_eq!(conflict.kind, ConflictKind::Price);
    assert_eq!(conflict.instance_type, "small");
    assert!(conflict.to_string().contains("\"b\""), "{conflict}");
    assert_eq!(e.conflicts.len(), 1);
}

#[test]
fn equal_weight_disjoint_offerings_do_not_conflict() {
    let mut c = catalog();
    let spot = price_overlay(
        "spot",
        10,
        &[req(labels::CAPACITY_TYPE, Operator::In, &["spot"])],
        "1",
    );
    let od = price_overlay(
        "od",
        10,
        &[req(labels::CAPACITY_TYPE, Operator::In, &["on-demand"])],
        "2",
    );
    let e = apply_overlays(&mut c, &[spot, od]);
    assert!(e.conflicts.is_empty(), "{e:?}");
    assert_prices(&c, &[1.0, 2.0, 2.0, 1.0, 2.0]);
}

#[test]
fn price_and_capacity_are_resolved_independently() {
    let mut c = catalog();
    let p = price_overlay("price", 10, &[], "+1");
    let cap = capacity_overlay("cap", 10, &[], &[("smarter-devices/fuse", "1")]);
    let e = apply_overlays(&mut c, &[p, cap]);
    assert!(e.conflicts.is_empty(), "{e:?}");
    assert_prices(&c, &[1.2, 1.3, 1.3, 1.4, 1.6]);
    assert!(
        c.iter()
            .all(|it| it.capacity.get("smarter-devices/fuse") == 1)
    );
}

#[test]
fn capacity_merges_by_weight_and_matches_labels() {
    let mut c = catalog();
    let high = capacity_overlay(
        "high",
        20,
        &[req("family", Operator::In, &["l"])],
        &[("hugepages-2Mi", "100Mi")],
    );
    let low = capacity_overlay(
        "low",
        5,
        &[],
        &[("hugepages-2Mi", "50Mi"), ("smarter-devices/fuse", "2")],
    );
    let e = apply_overlays(&mut c, &[low, high]);
    assert!(e.conflicts.is_empty(), "{e:?}");
    // small has no `family` label: only "low" applies → 50Mi hugepages, 2 fuse.
    assert_eq!(c[0].capacity.get("hugepages-2Mi"), 50 << 20);
    assert_eq!(c[0].capacity.get("smarter-devices/fuse"), 2);
    // large: "high" sets hugepages to 100Mi first; "low" only adds fuse.
    assert_eq!(c[1].capacity.get("hugepages-2Mi"), 100 << 20);
    assert_eq!(c[1].capacity.get("smarter-devices/fuse"), 2);
    // cpu/memory untouched.
    assert_eq!(c[1].capacity.get("cpu"), 2000);
    assert_prices(&c, &[0.2, 0.3, 0.3, 0.4, 0.6]);
}

#[test]
fn equal_weight_capacity_on_the_same_resource_conflicts() {
    let mut c = catalog();
    let x = capacity_overlay("x", 3, &[], &[("example.com/dongle", "1")]);
    let y = capacity_overlay(
        "y",
        3,
        &[req(labels::INSTANCE_TYPE, Operator::In, &["large"])],
        &[("example.com/dongle", "4")],
    );
    let e = apply_overlays(&mut c, &[x, y]);
    // "y" first (reverse name order) sets large's dongle to 4; "x" then overlaps on large.
    assert_eq!(e.conflicts["x"].with, "y");
    assert_eq!(e.conflicts["x"].kind, ConflictKind::Capacity);
    assert_eq!(c[0].capacity.get("example.com/dongle"), 0);
    assert_eq!(c[1].capacity.get("example.com/dongle"), 4);
}

#[test]
fn requirements_on_absent_labels_match_only_absence() {
    let mut c = catalog();
    let pool = price_overlay(
        "pool",
        1,
        &[req(labels::NODEPOOL, Operator::In, &["x"])],
        "9",
    );
    let not_l = price_overlay("not-l", 2, &[req("family", Operator::NotIn, &["l"])], "+1");
    apply_overlays(&mut c, &[pool, not_l]);
    // No instance type carries karpenter.sh/nodepool: "pool" matches nothing. `family NotIn
    // [l]` matches small (no family label) only: 0.2+1, 0.3+1, 0.3+1.
    assert_prices(&c, &[1.2, 1.3, 1.3, 0.4, 0.6]);
}

#[test]
fn gt_on_integer_labels() {
    let mut c = catalog();
    c[0].labels.insert("cpu-count".into(), "2".into());
    c[1].labels.insert("cpu-count".into(), "8".into());
    apply_overlays(
        &mut c,
        &[price_overlay(
            "big",
            1,
            &[req("cpu-count", Operator::Gt, &["4"])],
            "+50%",
        )],
    );
    // Only large (8 > 4): 0.4*1.5 = 0.6, 0.6*1.5 = 0.9.
    assert_prices(&c, &[0.2, 0.3, 0.3, 0.6, 0.9]);
}

#[test]
fn malformed_requirement_is_an_error() {
    let e = Overlay::new(
        "bad",
        1,
        &[req("k", Operator::Gt, &["x"])],
        None,
        Resources::new(),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("spec.requirements:"), "{e}");
}

#[test]
fn per_pool_conflicts_are_judged_over_every_pool() {
    let mut catalogs = BTreeMap::new();
    let all = catalog();
    catalogs.insert("only-small".to_owned(), vec![all[0].clone()]);
    catalogs.insert("only-large".to_owned(), vec![all[1].clone()]);
    // "a" matches everything; "b" only large. Equal weight: "b" goes first and takes large's
    // offerings, so "a" conflicts on large, and is left out for small as well.
    let a = price_overlay("a", 1, &[], "+1");
    let b = price_overlay(
        "b",
        1,
        &[req(labels::INSTANCE_TYPE, Operator::In, &["large"])],
        "0.1",
    );
    let e = apply_overlays_per_pool(&mut catalogs, &PoolLabels::new(), &[a, b]);
    assert_eq!(e.conflicts["a"].with, "b");
    assert_prices(&catalogs["only-small"], &[0.2, 0.3, 0.3]);
    assert_prices(&catalogs["only-large"], &[0.1, 0.1]);
}
