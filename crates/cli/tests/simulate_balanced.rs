//! `karpenter simulate` with a `consolidationPolicy: Balanced` NodePool (catalog
//! `data/balanced-catalog.json`: `large` 4 cpu at $1.00, `medium` 2 cpu at $0.90, no overhead).
//!
//! The cluster: two `large` nodes; `busy` runs 3 pods of 500m (reschedule cost 1 + 3 = 4) and
//! would fit on a `medium`; `full` runs one pod of 3600m (cost 2) and nothing cheaper holds it.
//! Replacing `busy` saves $0.10 of the pool's $2.00 (5 %) for 4 of its 6 disruption (67 %):
//! score 0.075, below Balanced's 0.5, while WhenEmptyOrUnderutilized takes any saving.

mod common;

use common::*;

const T0: &str = "2026-11-01T00:00:00Z";

fn pool(policy: &str) -> String {
    format!(
        r"---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: default}}
spec:
  disruption: {{consolidationPolicy: {policy}, consolidateAfter: 0s}}
  template:
    spec:
      nodeClassRef: {{group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}}
      requirements:
      - {{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}}
"
    )
}

fn large_node(name: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Node
metadata:
  name: {name}
  creationTimestamp: "{T0}"
  labels:
    karpenter.sh/nodepool: default
    karpenter.sh/capacity-type: on-demand
    node.kubernetes.io/instance-type: large
    topology.kubernetes.io/zone: zone-a
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
status:
  allocatable: {{cpu: "4", memory: 16Gi, pods: "110"}}
"#
    )
}

fn bound_pod(name: &str, node: &str, cpu: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, creationTimestamp: \"{T0}\"}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    resources: {{requests: {{cpu: {cpu}, memory: 1Gi}}}}\n"
    )
}

fn cluster(policy: &str) -> String {
    [
        pool(policy),
        large_node("busy"),
        large_node("full"),
        bound_pod("b0", "busy", "500m"),
        bound_pod("b1", "busy", "500m"),
        bound_pod("b2", "busy", "500m"),
        bound_pod("f0", "full", "3600m"),
    ]
    .concat()
}

fn disruptions(policy: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let catalog = data("balanced-catalog.json");
    let v = json(&["-f", "-", "--catalog", &catalog], Some(&cluster(policy)))?;
    Ok(v["disruptions"].clone())
}

#[test]
fn balanced_declines_the_replacement_that_when_empty_or_underutilized_takes() -> TestResult {
    let d = disruptions("WhenEmptyOrUnderutilized")?;
    assert_eq!(d.as_array().map(Vec::len), Some(1), "{d}");
    assert_eq!(d[0]["reason"], "underutilized");
    assert_eq!(strings(&d[0]["nodes"]), ["busy"]);
    assert_eq!(d[0]["replacements"][0]["instanceType"], "medium");
    assert!((f64_of(&d[0]["savingsPerHour"]) - 0.10).abs() < 1e-9);

    let d = disruptions("Balanced")?;
    assert_eq!(d.as_array().map(Vec::len), Some(0), "{d}");
    Ok(())
}

#[test]
fn the_declined_move_is_reported_with_its_score() -> TestResult {
    // Same cluster: busy's replacement saves 0.10 of 2.00 (0.05) for 4 of 6 disruption
    // (0.6667): score 0.075, below 0.5.
    let catalog = data("balanced-catalog.json");
    let v = json(
        &["-f", "-", "--catalog", &catalog],
        Some(&cluster("Balanced")),
    )?;
    let scores = v["balancedScores"].as_array().cloned().unwrap_or_default();
    assert_eq!(scores.len(), 1, "{v:#}");
    let s = &scores[0];
    assert_eq!(s["nodePool"], "default");
    assert_eq!(strings(&s["nodes"]), ["busy"]);
    assert_eq!(s["decision"], "rejected");
    assert!((f64_of(&s["score"]) - 0.075).abs() < 1e-6, "{s}");
    assert!((f64_of(&s["threshold"]) - 0.5).abs() < 1e-9, "{s}");
    assert!((f64_of(&s["savingsFraction"]) - 0.05).abs() < 1e-6, "{s}");
    assert!(
        (f64_of(&s["disruptionFraction"]) - 4.0 / 6.0).abs() < 1e-5,
        "{s}"
    );
    // The table says so too.
    let out = simulate(
        &["-f", "-", "--catalog", &catalog],
        Some(&cluster("Balanced")),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("busy in default: saves 5.0% of the pool's cost for 66.7% of its disruption"),
        "{text}"
    );
    // Not a Balanced pool: nothing scored, the field is absent.
    let v = json(
        &["-f", "-", "--catalog", &catalog],
        Some(&cluster("WhenEmptyOrUnderutilized")),
    )?;
    assert!(v.get("balancedScores").is_none(), "{v:#}");
    Ok(())
}
