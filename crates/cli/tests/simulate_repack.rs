//! `karpenter simulate --repack`: every running pod planned from scratch, against what today's
//! nodes cost. Expected prices come from the kwok catalog's formula (on-demand 0.025/vCPU +
//! 0.001/GB, spot 0.7 x on-demand), worked out by hand for the input
//! `tests/data/repack-cluster.yaml`: three c-4x nodes each running one 1-vCPU/1Gi pod, one
//! DaemonSet pod (100m) and one mirror pod.

mod common;

use common::*;
use serde_json::Value;

/// kwok on-demand price of `cpu` vCPUs with `gib` GiB.
fn on_demand(cpu: f64, gib: f64) -> f64 {
    0.025 * cpu + 0.001 * gib * (1u64 << 30) as f64 / 1e9
}

fn repack(extra: Option<&str>) -> Result<Value, Box<dyn std::error::Error>> {
    let file = data("repack-cluster.yaml");
    let mut args = vec!["-f", file.as_str(), "--repack"];
    if extra.is_some() {
        args.extend(["-f", "-"]);
    }
    Ok(json(&args, extra)?["repack"].clone())
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 2e-6)
}

#[test]
fn without_node_pools_the_whole_catalog_repacks_three_pods_onto_one_spot_node() -> TestResult {
    let r = repack(None)?;
    // Only the three web pods move: DaemonSet pods are overhead on every new node, mirror
    // pods belong to their node.
    assert_eq!(r["pods"], 3);
    assert_eq!(r["nodes"], 3);
    let today = 3.0 * on_demand(4.0, 8.0);
    assert!(close(&r["currentPricePerHour"], today), "{r:#}");
    // 3 vCPU of pods + 100m DaemonSet + 100m kube-reserved: a 4-vCPU type is the smallest that
    // holds them all (a 2-vCPU one holds one pod, so three of them would cost 1.5x more), and
    // spot is cheaper than on-demand; c is the cheapest family per vCPU.
    let fleet = r["fleet"].as_array().ok_or("no fleet")?;
    assert_eq!(fleet.len(), 1, "{r:#}");
    assert_eq!(fleet[0]["count"], 1);
    assert_eq!(fleet[0]["capacityType"], "spot");
    assert!(
        fleet[0]["instanceType"]
            .as_str()
            .is_some_and(|t| t.starts_with("c-4x-")),
        "{r:#}"
    );
    let best = 0.7 * on_demand(4.0, 8.0);
    assert!(close(&r["pricePerHour"], best), "{r:#}");
    assert!(close(&r["savingsPerHour"], today - best), "{r:#}");
    let bound = r["lowerBoundPerHour"].as_f64().ok_or("no bound")?;
    assert!(bound > 0.0 && bound <= best, "{r:#}");
    assert!(r["unpricedNodes"].as_array().is_some_and(Vec::is_empty));
    Ok(())
}

#[test]
fn a_node_pool_constrains_the_fleet() -> TestResult {
    let pool = "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: od}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.kwok.sh, kind: KWOKNodeClass, name: default}
      requirements:
      - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
";
    let r = repack(Some(pool))?;
    let fleet = r["fleet"].as_array().ok_or("no fleet")?;
    assert_eq!(fleet.len(), 1, "{r:#}");
    assert_eq!(fleet[0]["capacityType"], "on-demand");
    let best = on_demand(4.0, 8.0);
    assert!(close(&r["pricePerHour"], best), "{r:#}");
    assert!(
        close(&r["savingsPerHour"], 2.0 * on_demand(4.0, 8.0)),
        "{r:#}"
    );
    Ok(())
}

#[test]
fn a_node_outside_the_catalog_is_unpriced_and_no_saving_is_claimed() -> TestResult {
    let node = "apiVersion: v1
kind: Node
metadata:
  name: node-x
  labels: {node.kubernetes.io/instance-type: custom-big, kubernetes.io/hostname: node-x}
status:
  allocatable: {cpu: '8', memory: 16Gi, pods: '64'}
";
    let r = repack(Some(node))?;
    assert_eq!(strings(&r["unpricedNodes"]), ["node-x"]);
    assert_eq!(r["nodes"], 4);
    assert!(close(&r["currentPricePerHour"], 3.0 * on_demand(4.0, 8.0)));
    assert!(r["savingsPerHour"].is_null(), "{r:#}");
    Ok(())
}

#[test]
fn without_the_flag_the_document_has_no_repack() -> TestResult {
    let v = json(&["-f", &data("repack-cluster.yaml")], None)?;
    assert!(v.get("repack").is_none());
    Ok(())
}

#[test]
fn a_node_in_a_zone_the_catalog_lacks_is_priced_at_its_capacity_types_cheapest_offering()
-> TestResult {
    // Spot c-8x: the catalog offers it in test-zone-a..d only, at 0.7 x on-demand everywhere.
    let node = "apiVersion: v1
kind: Node
metadata:
  name: node-s
  labels:
    node.kubernetes.io/instance-type: c-8x-arm64-linux
    topology.kubernetes.io/zone: elsewhere-1a
    karpenter.sh/capacity-type: spot
    kubernetes.io/hostname: node-s
status:
  allocatable: {cpu: '8', memory: 16Gi, pods: '64'}
";
    let r = repack(Some(node))?;
    assert!(r["unpricedNodes"].as_array().is_some_and(Vec::is_empty));
    let today = 3.0 * on_demand(4.0, 8.0) + 0.7 * on_demand(8.0, 16.0);
    assert!(close(&r["currentPricePerHour"], today), "{r:#}");
    Ok(())
}
