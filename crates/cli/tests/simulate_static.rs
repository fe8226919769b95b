//! `karpenter simulate` with a static NodePool (`spec.replicas`; catalog
//! `data/balanced-catalog.json`: `large` 4 cpu at $1.00, `medium` 2 cpu at $0.90, no overhead).
//!
//! The static pool `fixed` (replicas 3) has two nodes in the input: `s1` (large) and `s2`
//! (medium), both empty. Two pending pods ask 3 cpu each: one fits on `s1` (not on `s2`); the
//! other needs a new node, which only the dynamic pool `default` may launch (a `large`).
//! The static pool's third replica is in the plan, planned from its template alone: the
//! cheapest type, `medium`, with no pods. The empty static node `s2` is not removed.

mod common;

use common::*;

const T0: &str = "2026-11-01T00:00:00Z";

fn pool(name: &str, extra: &str) -> String {
    format!(
        r"---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: {name}}}
spec:
  disruption: {{consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 0s}}
  template:
    spec:
      nodeClassRef: {{group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}}
      requirements:
      - {{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}}
{extra}"
    )
}

fn node(name: &str, pool: &str, it: &str, cpu: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Node
metadata:
  name: {name}
  creationTimestamp: "{T0}"
  labels:
    karpenter.sh/nodepool: {pool}
    karpenter.sh/capacity-type: on-demand
    node.kubernetes.io/instance-type: {it}
    topology.kubernetes.io/zone: zone-a
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
status:
  allocatable: {{cpu: "{cpu}", memory: 16Gi, pods: "110"}}
"#
    )
}

fn pending(name: &str, cpu: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, creationTimestamp: \"{T0}\"}}\nspec:\n  containers:\n  - name: c\n    resources: {{requests: {{cpu: {cpu}, memory: 1Gi}}}}\n"
    )
}

fn run(fixed_extra: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let input = [
        pool("default", ""),
        pool("fixed", fixed_extra),
        node("s1", "fixed", "large", "4"),
        node("s2", "fixed", "medium", "2"),
        pending("p0", "3"),
        pending("p1", "3"),
    ]
    .concat();
    json(
        &["-f", "-", "--catalog", &data("balanced-catalog.json")],
        Some(&input),
    )
}

#[test]
fn static_nodes_take_pods_the_missing_replica_is_planned_and_nothing_is_removed() -> TestResult {
    let v = run("  replicas: 3\n")?;
    let claims = v["nodeClaims"].as_array().cloned().unwrap_or_default();
    assert_eq!(claims.len(), 2, "{v}");
    // The pod that does not fit on s1 gets a node of the dynamic pool.
    assert_eq!(claims[0]["nodePool"], "default");
    assert_eq!(claims[0]["instanceType"], "large");
    assert_eq!(strings(&claims[0]["pods"]).len(), 1);
    // The static pool's missing replica: its cheapest type, no pods.
    assert_eq!(claims[1]["nodePool"], "fixed");
    assert_eq!(claims[1]["instanceType"], "medium");
    assert_eq!(strings(&claims[1]["pods"]).len(), 0);
    // The other pod runs on the static node that holds it.
    let existing = v["existingNodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(existing.len(), 1, "{v}");
    assert_eq!(existing[0]["name"], "s1");
    assert!(
        (f64_of(&v["summary"]["pricePerHour"]) - 1.90).abs() < 1e-9,
        "{v}"
    );
    // s2 is empty, but static: never an emptiness or consolidation candidate.
    assert_eq!(v["disruptions"].as_array().map(Vec::len), Some(0), "{v}");
    Ok(())
}

#[test]
fn the_node_limit_caps_the_missing_replicas_and_a_surplus_is_noted() -> TestResult {
    // limits.nodes 2: the two nodes are all there may be.
    let v = run("  replicas: 3\n  limits: {nodes: \"2\"}\n")?;
    let pools: Vec<String> = v["nodeClaims"]
        .as_array()
        .map(|a| a.iter().map(|c| c["nodePool"].to_string()).collect())
        .unwrap_or_default();
    assert_eq!(pools, ["\"default\""], "{v}");
    // replicas 1: nothing to add; the static loop would remove one (a note on stderr).
    let input = [
        pool("fixed", "  replicas: 1\n"),
        node("s1", "fixed", "large", "4"),
        node("s2", "fixed", "medium", "2"),
    ]
    .concat();
    let out = simulate(
        &[
            "-f",
            "-",
            "--catalog",
            &data("balanced-catalog.json"),
            "-o",
            "json",
        ],
        Some(&input),
    )?;
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("static NodePool fixed has 2 nodes for 1 replicas: 1 would be removed"),
        "{stderr}"
    );
    Ok(())
}
