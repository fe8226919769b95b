//! What the suite runs: one NodePool over a KWOKNodeClass and three Deployments of mixed pod
//! shapes summing to N pods. The same objects go to the cluster and, as YAML, to
//! `karpenter simulate`, so the live fleet and the plan are priced for identical input.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use karpenter_api::v1::NodePool;
use karpenter_testkit::workloads;
use serde_json::json;

/// Namespace of the workloads.
pub const NAMESPACE: &str = "perf";
/// Name of the NodePool and of its KWOKNodeClass.
pub const POOL: &str = "perf";
/// Label the NodePool puts on its nodes and the pods select.
pub const POOL_LABEL: &str = "perf.example.com/pool";
/// The pool's default disruption budget, in percent of its nodes (upstream's default).
pub const DEFAULT_BUDGET_PERCENT: u64 = 10;

/// One Deployment's pod shape and share of N.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub name: &'static str,
    /// Percent of N.
    pub percent: usize,
    pub cpu: &'static str,
    pub memory: &'static str,
    /// Zone topology spread (maxSkew 1, DoNotSchedule).
    pub zone_spread: bool,
}

/// The mix: 40% plain small pods, 30% zone-spread medium pods, 30% larger pods.
pub const SHAPES: [Shape; 3] = [
    Shape {
        name: "plain",
        percent: 40,
        cpu: "250m",
        memory: "512Mi",
        zone_spread: false,
    },
    Shape {
        name: "spread",
        percent: 30,
        cpu: "500m",
        memory: "1Gi",
        zone_spread: true,
    },
    Shape {
        name: "large",
        percent: 30,
        cpu: "2",
        memory: "4Gi",
        zone_spread: false,
    },
];

/// Replicas of each shape for `total` pods; the last shape takes the rounding remainder.
pub fn replicas(total: usize) -> Vec<(Shape, i32)> {
    let mut left = total;
    let mut out = Vec::new();
    for (i, s) in SHAPES.iter().enumerate() {
        let n = if i + 1 == SHAPES.len() {
            left
        } else {
            total * s.percent / 100
        };
        left -= n;
        out.push((*s, n as i32));
    }
    out
}

/// The NodePool: on-demand amd64 linux kwok types of at most 32 vCPU (so N pods need a
/// production-like number of nodes rather than a handful of 256-vCPU ones), consolidation
/// WhenEmptyOrUnderutilized after 5 s, budget `nodes: "<budget_percent>%"`.
pub fn node_pool(budget_percent: u64) -> Result<NodePool> {
    serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": POOL},
        "spec": {
            "template": {
                "metadata": {"labels": {POOL_LABEL: POOL}},
                "spec": {
                    "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": POOL},
                    "requirements": [
                        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                        {"key": "karpenter.kwok.sh/instance-cpu", "operator": "Lt", "values": ["33"]}
                    ],
                    "expireAfter": "Never"
                }
            },
            "disruption": {
                "consolidationPolicy": "WhenEmptyOrUnderutilized",
                "consolidateAfter": "5s",
                "budgets": [{"nodes": format!("{budget_percent}%")}]
            }
        }
    }))
    .context("building the NodePool")
}

/// The Deployment of `shape` with `replicas` pods.
pub fn deployment(shape: &Shape, replicas: i32) -> Deployment {
    let mut spec = workloads::pod_spec(shape.cpu, POOL_LABEL, POOL);
    if let Some(c) = spec.containers.first_mut()
        && let Some(requests) = c.resources.as_mut().and_then(|r| r.requests.as_mut())
    {
        requests.insert("memory".into(), Quantity(shape.memory.into()));
    }
    if shape.zone_spread {
        spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "topology.kubernetes.io/zone".into(),
            when_unsatisfiable: "DoNotSchedule".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), shape.name.into())])),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        }]);
    }
    let mut d = workloads::deployment(shape.name, replicas, spec);
    d.metadata.namespace = Some(NAMESPACE.into());
    d
}

/// Writes the NodePool and the Deployments for `total` pods to `dir/manifests.yaml` (JSON
/// documents are YAML) for `karpenter simulate -f dir`.
pub fn write_manifests(dir: &Path, total: usize, budget_percent: u64) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut docs = vec![serde_json::to_string(&node_pool(budget_percent)?)?];
    for (shape, n) in replicas(total) {
        let mut d = serde_json::to_value(deployment(&shape, n))?;
        // simulate reads apiVersion/kind to pick the type; typed structs leave them out.
        d["apiVersion"] = json!("apps/v1");
        d["kind"] = json!("Deployment");
        docs.push(serde_json::to_string(&d)?);
    }
    let path = dir.join("manifests.yaml");
    std::fs::write(&path, docs.join("\n---\n"))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_sum_to_the_total() {
        for total in [1, 150, 1000, 1500, 12_000] {
            let sum: i32 = replicas(total).iter().map(|(_, n)| n).sum();
            assert_eq!(sum as usize, total);
        }
    }
}
