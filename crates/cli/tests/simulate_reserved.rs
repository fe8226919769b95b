//! `karpenter simulate` with reserved offerings in the catalog (tests/data/reserved-catalog.json):
//! `std.2x` (2 cpu, no overhead) on demand at 0.2, spot 0.1, and reservation `cr-1` with 2
//! instances left at 0.001. Each 1.5-cpu pod needs a node of its own.

mod common;

use common::*;
use serde_json::Value;

/// A NodePool allowing `capacity_types`, and `n` pods of 1.5 cpu.
fn plan(capacity_types: &str, n: usize) -> Result<Value, Box<dyn std::error::Error>> {
    let pool = KWOK_POOL.replace(
        "values: [on-demand]",
        &format!("values: [{capacity_types}]"),
    );
    let pods: String = (0..n).map(|i| pod(&format!("p{i}"), "1.5", "")).collect();
    json(
        &["-f", "-", "--catalog", &data("reserved-catalog.json")],
        Some(&format!("{pool}{pods}")),
    )
}

/// (capacity type, reservation ID or "", price) of every claim, sorted by capacity type.
fn claims(plan: &Value) -> Vec<(String, String, f64)> {
    let mut v: Vec<_> = plan["nodeClaims"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["capacityType"].as_str().unwrap_or("").to_owned(),
                c["reservationId"].as_str().unwrap_or("").to_owned(),
                f64_of(&c["pricePerHour"]),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn reserved_offerings_are_used_up_to_their_capacity() -> TestResult {
    let p = plan("on-demand, reserved", 3)?;
    assert_eq!(
        claims(&p),
        vec![
            ("on-demand".into(), String::new(), 0.2),
            ("reserved".into(), "cr-1".into(), 0.001),
            ("reserved".into(), "cr-1".into(), 0.001),
        ],
        "{p:#}"
    );
    // 0.001 + 0.001 + 0.2.
    assert!(
        (f64_of(&p["summary"]["pricePerHour"]) - 0.202).abs() < 1e-9,
        "{p:#}"
    );
    // The Node label says it too.
    let reserved = p["nodeClaims"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c["labels"]["karpenter.sh/capacity-type"] == "reserved")
        .count();
    assert_eq!(reserved, 2);
    Ok(())
}

#[test]
fn a_pool_without_reserved_never_uses_the_reservation() -> TestResult {
    let p = plan("on-demand", 1)?;
    assert_eq!(claims(&p), vec![("on-demand".into(), String::new(), 0.2)]);
    assert!(p["nodeClaims"][0].get("reservationId").is_none(), "{p:#}");
    Ok(())
}
