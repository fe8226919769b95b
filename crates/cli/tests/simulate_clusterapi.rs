//! `karpenter simulate --catalog clusterapi`: the input's MachineDeployments are the catalog,
//! shaped as the `clusterapi` provider shapes them (taints only for NodePools declaring them;
//! unreadable ones left out with a warning naming the annotation).

mod common;

use common::{TestResult, f64_of, json, listed_pods, repo_root, simulate};
use serde_json::Value;

/// An opted-in MachineDeployment with these annotations (YAML flow-mapping entries).
fn md(name: &str, annotations: &str) -> String {
    format!(
        r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: MachineDeployment
metadata:
  name: {name}
  labels: {{node.cluster.x-k8s.io/karpenter-member: ""}}
  annotations: {{{annotations}}}
spec:
  clusterName: w1
  replicas: 0
  selector: {{matchLabels: {{cluster.x-k8s.io/deployment-name: {name}}}}}
  template:
    metadata: {{labels: {{cluster.x-k8s.io/deployment-name: {name}}}}}
    spec:
      clusterName: w1
      bootstrap: {{dataSecretName: w1-bootstrap}}
      infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachineTemplate, name: dev}}
"#
    )
}

fn shape(it: &str, zone: &str, cpu: &str, memory: &str, price: &str, extra: &str) -> String {
    format!(
        r#"capacity.cluster-autoscaler.kubernetes.io/cpu: "{cpu}", capacity.cluster-autoscaler.kubernetes.io/memory: "{memory}", capacity.cluster-autoscaler.kubernetes.io/labels: "node.kubernetes.io/instance-type={it},topology.kubernetes.io/zone={zone}", clusterapi.karpenter.sh/price-per-hour: "{price}"{extra}"#
    )
}

const POOLS: &str = r#"---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.cluster.x-k8s.io, kind: ClusterAPINodeClass, name: default}
      requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}]
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: gpu}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.cluster.x-k8s.io, kind: ClusterAPINodeClass, name: default}
      requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}]
      taints: [{key: dedicated, value: gpu, effect: NoSchedule}]
"#;

const PODS: &str = r#"---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, resources: {requests: {cpu: 1500m}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: db}
spec:
  nodeSelector: {topology.kubernetes.io/zone: zone-a}
  containers: [{name: c, resources: {requests: {cpu: 1500m}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: train}
spec:
  nodeSelector: {karpenter.sh/nodepool: gpu}
  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
  containers: [{name: c, resources: {requests: {cpu: "1"}}}]
"#;

fn input() -> String {
    let taint = r#", capacity.cluster-autoscaler.kubernetes.io/taints: "dedicated=gpu:NoSchedule""#;
    [
        md("c2-a", &shape("c2", "zone-a", "2", "4Gi", "0.10", "")),
        md("c2-b", &shape("c2", "zone-b", "2", "4Gi", "0.08", "")),
        md("c8-a", &shape("c8", "zone-a", "8", "16Gi", "0.30", "")),
        md("c8-b", &shape("c8", "zone-b", "8", "16Gi", "0.25", "")),
        // Far cheaper, but tainted: only for the NodePool declaring the taint.
        md(
            "gpu-a",
            &shape("gpu16", "zone-a", "16", "64Gi", "0.01", taint),
        ),
        // The cheapest of all, but unreadable: left out with a warning.
        md(
            "broken",
            &shape("cheap", "zone-a", "lots", "4Gi", "0.001", ""),
        ),
        TEMPLATE.to_string(),
        POOLS.to_string(),
        PODS.to_string(),
    ]
    .concat()
}

/// What a user's Cluster API manifests also hold: the MachineDeployments' templates.
const TEMPLATE: &str = r#"---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata: {name: dev}
spec: {template: {spec: {backend: {inMemory: {}}}}}
"#;

fn claims(plan: &Value) -> Vec<Value> {
    plan["nodeClaims"].as_array().cloned().unwrap_or_default()
}

/// Hand-derived: web-0..2 and db request 1.5 cpu each. A 2-cpu c2 holds one of them; an 8-cpu
/// c8 holds all four. db must be in zone-a, so one c8 in zone-a (0.30) holds all four, against
/// 3 × c2 in zone-b + 1 × c2 in zone-a (3 × 0.08 + 0.10 = 0.34) or c8 in zone-b for web and a c2
/// in zone-a for db (0.25 + 0.10 = 0.35). train (1 cpu, tolerating the taint, NodePool gpu)
/// gets gpu16 (0.01). Total 0.31.
#[test]
fn machine_deployments_are_the_catalog() -> TestResult {
    let text = input();
    let out = simulate(
        &["-f", "-", "--catalog", "clusterapi", "-o", "json"],
        Some(&text),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let plan: Value = serde_json::from_slice(&out.stdout)?;
    assert!(
        stderr.contains("default/broken")
            && stderr.contains("capacity.cluster-autoscaler.kubernetes.io/cpu"),
        "the unreadable MachineDeployment is named with its annotation: {stderr}"
    );
    assert!(
        !stderr.contains("DevMachineTemplate"),
        "templates come with the MachineDeployments: no warning: {stderr}"
    );
    let total = f64_of(&plan["summary"]["pricePerHour"]);
    assert!((total - 0.31).abs() < 1e-9, "total {total}: {plan}");
    let mut got: Vec<(String, String, String, f64, Vec<String>)> = claims(&plan)
        .iter()
        .map(|c| {
            let mut pods = common::strings(&c["pods"]);
            pods.sort();
            (
                c["nodePool"].as_str().unwrap_or("").to_string(),
                c["instanceType"].as_str().unwrap_or("").to_string(),
                c["zone"].as_str().unwrap_or("").to_string(),
                f64_of(&c["pricePerHour"]),
                pods,
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let pods = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        vec![
            (
                "default".into(),
                "c8".into(),
                "zone-a".into(),
                0.30,
                pods(&[
                    "default/db",
                    "default/web-0",
                    "default/web-1",
                    "default/web-2"
                ])
            ),
            (
                "gpu".into(),
                "gpu16".into(),
                "zone-a".into(),
                0.01,
                pods(&["default/train"])
            ),
        ],
        "{plan}"
    );
    assert!(listed_pods(&plan).values().all(|n| *n == 1));
    Ok(())
}

/// A pool that does not declare a MachineDeployment's taints never gets it, even when that is
/// all there is: its pods are unschedulable, with a reason.
#[test]
fn tainted_machine_deployments_only_serve_pools_declaring_the_taints() -> TestResult {
    let taint = r#", capacity.cluster-autoscaler.kubernetes.io/taints: "dedicated=gpu:NoSchedule""#;
    let text = [
        md(
            "gpu-a",
            &shape("gpu16", "zone-a", "16", "64Gi", "0.01", taint),
        ),
        POOLS.to_string(),
        common::pod("plain", "1", ""),
    ]
    .concat();
    let plan = json(&["-f", "-", "--catalog", "clusterapi"], Some(&text))?;
    assert!(claims(&plan).is_empty(), "{plan}");
    assert_eq!(plan["unschedulable"][0]["pod"], "default/plain", "{plan}");
    Ok(())
}

#[test]
fn no_opted_in_machine_deployment_is_an_error() -> TestResult {
    let text = [POOLS, &common::pod("plain", "1", "")].concat();
    let out = simulate(&["-f", "-", "--catalog", "clusterapi"], Some(&text))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("node.cluster.x-k8s.io/karpenter-member"),
        "{stderr}"
    );
    Ok(())
}

/// The example of examples/clusterapi/simulate plans every pod; its README states the cost.
#[test]
fn the_example_plans_at_the_documented_cost() -> TestResult {
    let dir = repo_root().join("examples/clusterapi/simulate");
    let plan = json(
        &["-f", &dir.display().to_string(), "--catalog", "clusterapi"],
        None,
    )?;
    assert_eq!(plan["summary"]["unschedulable"], 0, "{plan}");
    // Its README: batch (6 cpu) needs the m6i.2xlarge of us-east-1a (0.384), one api pod
    // (1.5 cpu) fits beside it, the zone spread puts the other on an m6i.large in us-east-1b
    // (0.096).
    let total = f64_of(&plan["summary"]["pricePerHour"]);
    assert!((total - 0.48).abs() < 1e-9, "total {total}: {plan}");
    Ok(())
}

/// Without `--catalog clusterapi`, Cluster API documents are skipped with warnings saying so.
#[test]
fn other_catalogs_skip_cluster_api_documents_with_warnings() -> TestResult {
    let text = input();
    let out = simulate(&["-f", "-", "-o", "json"], Some(&text))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("skipping DevMachineTemplate dev")
            && stderr.contains("skipping 6 MachineDeployment(s)")
            && stderr.contains("--catalog clusterapi"),
        "{stderr}"
    );
    Ok(())
}

/// A Machine the clusterapi provider launched from `md` whose node has not joined yet.
fn machine(name: &str, md: &str) -> String {
    format!(
        r#"---
apiVersion: cluster.x-k8s.io/v1beta2
kind: Machine
metadata:
  name: {name}
  labels: {{clusterapi.karpenter.sh/machine-deployment: {md}, cluster.x-k8s.io/cluster-name: w1}}
spec: {{clusterName: w1, bootstrap: {{dataSecretName: b}}, infrastructureRef: {{apiGroup: infrastructure.cluster.x-k8s.io, kind: DevMachine, name: {name}}}}}
"#
    )
}

/// A Machine the clusterapi provider launched for a NodeClaim of `md`, running as Node `name`.
fn machine_with_node(name: &str, md: &str) -> String {
    let machine = machine(name, md);
    format!(
        r#"{machine}status: {{nodeRef: {{name: {name}}}}}
---
apiVersion: v1
kind: Node
metadata:
  name: {name}
  creationTimestamp: "2026-01-01T00:00:00Z"
  labels: {{karpenter.sh/nodepool: default, node.kubernetes.io/instance-type: c2, topology.kubernetes.io/zone: zone-b, karpenter.sh/capacity-type: on-demand}}
status:
  allocatable: {{cpu: "2", memory: 4Gi, pods: "110"}}
  capacity: {{cpu: "2", memory: 4Gi, pods: "110"}}
"#
    )
}

/// A NodePool whose budget lets every node go at once (the default 10% would allow one).
const POOL_ALL_AT_ONCE: &str = r#"---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  disruption: {budgets: [{nodes: "100%"}]}
  template:
    spec:
      nodeClassRef: {group: karpenter.cluster.x-k8s.io, kind: ClusterAPINodeClass, name: default}
      requirements: [{key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}]
"#;

/// Three empty nodes of MachineDeployment c2-b, whose min size is 2: its size is 3 (replicas 0
/// plus our 3 Machines), so emptiness may remove exactly one of them, and says it cut the
/// rest (the controller's rule, from the same planner). Without the min size all three go.
#[test]
fn emptiness_keeps_a_machine_deployment_at_its_min_size() -> TestResult {
    let nodes = ["n1", "n2", "n3"]
        .map(|n| machine_with_node(n, "c2-b"))
        .concat();
    let with_min = |min: &str| {
        let extra = if min.is_empty() {
            String::new()
        } else {
            format!(r#", cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size: "{min}""#)
        };
        [
            md("c2-b", &shape("c2", "zone-b", "2", "4Gi", "0.08", &extra)),
            POOL_ALL_AT_ONCE.to_string(),
            nodes.clone(),
        ]
        .concat()
    };
    let removed = |text: &str| -> Result<(Vec<String>, String), Box<dyn std::error::Error>> {
        let out = simulate(
            &["-f", "-", "--catalog", "clusterapi", "-o", "json"],
            Some(text),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let nodes = v["disruptions"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| common::strings(&d["nodes"]))
            .collect();
        Ok((nodes, stderr))
    };
    let (all, _) = removed(&with_min(""))?;
    assert_eq!(all.len(), 3, "{all:?}");
    let (one, stderr) = removed(&with_min("2"))?;
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(
        stderr.contains("MachineDeployment default/c2-b (min size 2)")
            && stderr.contains("at its minimum size"),
        "{stderr}"
    );
    assert!(!stderr.contains("skipping Machine"), "{stderr}");
    Ok(())
}

/// A MachineDeployment's size counts our Machines (as the provider counts them): c2-b (0.08)
/// with max size 3 takes a 1-cpu pod while it has 2 Machines, and is full with 3, so the pod
/// goes to c2-a (0.10).
#[test]
fn machines_count_toward_a_machine_deployment_s_max_size() -> TestResult {
    let max = r#", cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size: "3""#;
    let plan_with = |machines: usize| -> Result<Value, Box<dyn std::error::Error>> {
        let text = [
            md("c2-a", &shape("c2", "zone-a", "2", "4Gi", "0.10", "")),
            md("c2-b", &shape("c2", "zone-b", "2", "4Gi", "0.08", max)),
            POOL_ALL_AT_ONCE.to_string(),
            common::pod("plain", "1", ""),
            (0..machines)
                .map(|i| machine(&format!("m{i}"), "c2-b"))
                .collect(),
        ]
        .concat();
        json(&["-f", "-", "--catalog", "clusterapi"], Some(&text))
    };
    let zone = |plan: &Value| {
        claims(plan).first().map(|c| {
            (
                c["zone"].as_str().unwrap_or("").to_string(),
                f64_of(&c["pricePerHour"]),
            )
        })
    };
    assert_eq!(zone(&plan_with(2)?), Some(("zone-b".to_string(), 0.08)));
    assert_eq!(zone(&plan_with(3)?), Some(("zone-a".to_string(), 0.10)));
    Ok(())
}
