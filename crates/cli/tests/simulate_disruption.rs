//! `karpenter simulate` shows disruption for Karpenter-managed Nodes (design.md §6
//! `disruptions`), checked against prices computed here from the kwok catalog's formula.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// kwok on-demand price: 0.025/vCPU + 0.001/GB.
fn kwok_price(cpu: f64, mem_gib: f64) -> f64 {
    0.025 * cpu + 0.001 * mem_gib * (1u64 << 30) as f64 / 1e9
}

fn example() -> String {
    repo_root()
        .join("examples/disruption")
        .display()
        .to_string()
}

fn reasons(v: &Value) -> Vec<String> {
    v["disruptions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["reason"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_disruption_example_removes_empty_drifted_and_underused_nodes() -> TestResult {
    let v = json(&["-f", &example()], None)?;
    assert_eq!(reasons(&v), ["empty", "drifted", "underutilized"]);
    let d = &v["disruptions"];
    assert_eq!(strings(&d[0]["nodes"]), ["node-d"]);
    assert_eq!(strings(&d[1]["nodes"]), ["node-f"]);
    let consolidated: BTreeSet<String> = strings(&d[2]["nodes"]).into_iter().collect();
    assert_eq!(consolidated, ["node-b", "node-c"].map(String::from).into());
    // Savings = removed prices − replacement prices, from the catalog formula.
    let c4 = kwok_price(4.0, 8.0);
    assert!((f64_of(&d[0]["savingsPerHour"]) - c4).abs() < 1e-5);
    let removed = kwok_price(8.0, 16.0) + kwok_price(16.0, 128.0);
    let repl = &d[2]["replacements"];
    assert_eq!(
        repl.as_array().map(Vec::len),
        Some(1),
        "one replacement at most"
    );
    let price = f64_of(&repl[0]["pricePerHour"]);
    assert!(price < removed, "strictly cheaper");
    assert!((f64_of(&d[2]["savingsPerHour"]) - (removed - price)).abs() < 1e-5);
    // The replacement takes only pods of the removed nodes, and carries the §6 claim fields.
    let moved: BTreeSet<String> = strings(&repl[0]["pods"]).into_iter().collect();
    assert!(
        moved.is_subset(
            &["default/db-0", "default/db-1", "default/worker-0"]
                .map(String::from)
                .into()
        )
    );
    assert_eq!(repl[0]["labels"]["karpenter.sh/nodepool"], "default");
    assert!(
        repl[0]["instanceTypeOptions"]
            .as_array()
            .is_some_and(|o| !o.is_empty())
    );
    // The do-not-disrupt node is never touched.
    let all: Vec<String> = d
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| strings(&c["nodes"]))
        .collect();
    assert!(!all.contains(&"node-e".to_owned()));
    Ok(())
}

#[test]
fn output_is_deterministic_and_the_table_shows_savings() -> TestResult {
    let a = simulate(&["-f", &example(), "-o", "json"], None)?;
    let b = simulate(&["-f", &example(), "-o", "json"], None)?;
    assert_eq!(a.stdout, b.stdout);
    let t = simulate(&["-f", &example()], None)?;
    let text = String::from_utf8(t.stdout)?;
    assert!(text.contains("$/HOUR SAVED"), "{text}");
    assert!(
        text.contains("node-e: pod default/batch-0 has karpenter.sh/do-not-disrupt"),
        "{text}"
    );
    assert!(text.contains("3 command(s) remove 4 node(s)"), "{text}");
    Ok(())
}

fn managed_node(name: &str, created: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Node
metadata:
  name: {name}
  creationTimestamp: "{created}"
  labels:
    karpenter.sh/nodepool: default
    karpenter.sh/capacity-type: on-demand
    node.kubernetes.io/instance-type: c-4x-amd64-linux
    topology.kubernetes.io/zone: test-zone-a
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
status:
  allocatable: {{cpu: 3900m, memory: 7900Mi, pods: "110"}}
"#
    )
}

fn bound_pod(name: &str, node: &str, created: &str, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, creationTimestamp: \"{created}\"{annotations}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}\n"
    )
}

const T0: &str = "2026-11-01T00:00:00Z";
const T1: &str = "2026-11-02T00:00:00Z";

#[test]
fn two_underused_nodes_become_one() -> TestResult {
    let input = [
        KWOK_POOL.to_owned(),
        managed_node("n1", T0),
        managed_node("n2", T0),
        bound_pod("a", "n1", T1, ""),
        bound_pod("b", "n2", T1, ""),
    ]
    .concat();
    let v = json(&["-f", "-"], Some(&input))?;
    assert_eq!(reasons(&v), ["underutilized"]);
    let d = &v["disruptions"][0];
    assert_eq!(
        strings(&d["nodes"]).len(),
        1,
        "one node goes, its pod fits on the other"
    );
    assert_eq!(d["replacements"], Value::Array(vec![]));
    assert!((f64_of(&d["savingsPerHour"]) - kwok_price(4.0, 8.0)).abs() < 1e-5);
    Ok(())
}

#[test]
fn do_not_disrupt_pods_keep_their_nodes_and_expiry_uses_the_newest_timestamp() -> TestResult {
    let protect = ", annotations: {karpenter.sh/do-not-disrupt: \"true\"}";
    let input = [
        KWOK_POOL.to_owned(),
        managed_node("n1", T0),
        managed_node("n2", T0),
        bound_pod("a", "n1", T1, protect),
        bound_pod("b", "n2", T1, protect),
    ]
    .concat();
    let v = json(&["-f", "-"], Some(&input))?;
    assert_eq!(v["disruptions"], Value::Array(vec![]));

    // A pod created 31 days after the nodes makes "now" late enough for the default
    // expireAfter (720h): both nodes expire, forcefully, do-not-disrupt or not.
    let late = bound_pod("c", "n2", "2026-12-02T00:00:00Z", "");
    let v = json(&["-f", "-"], Some(&[input, late].concat()))?;
    assert_eq!(reasons(&v), ["expired", "expired"]);
    Ok(())
}
