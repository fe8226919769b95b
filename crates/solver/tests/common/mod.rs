//! Builders shared by the integration tests (catalog F of karpenter-core.md §10.0, pods, pools).
#![allow(dead_code)]

use std::collections::BTreeMap;

use karpenter_solver::*;

pub const Z1: &str = "test-zone-1";
pub const Z2: &str = "test-zone-2";
pub const Z3: &str = "test-zone-3";

pub fn res(pairs: &[(&str, &str)]) -> Resources {
    Resources::parse(pairs.iter().copied()).unwrap()
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Catalog-F style instance type: kubeReserved 100m/10Mi, 2 spot + 3 on-demand offerings,
/// price 0.1·cpu + 0.1·GB.
pub fn fake_it(name: &str, cpu: i64, mem: &str, pods: i64) -> InstanceType {
    let capacity = {
        let mut r = res(&[("memory", mem)]);
        r.set("cpu", cpu * 1000);
        r.set("pods", pods);
        r
    };
    let price = 0.1 * cpu as f64 + 0.1 * capacity.get("memory") as f64 / 1e9;
    let offerings = vec![
        Offering::new(Z1, "spot", price),
        Offering::new(Z2, "spot", price),
        Offering::new(Z1, "on-demand", price),
        Offering::new(Z2, "on-demand", price),
        Offering::new(Z3, "on-demand", price),
    ];
    InstanceType {
        name: name.to_string(),
        capacity,
        overhead: Overhead {
            kube_reserved: res(&[("cpu", "100m"), ("memory", "10Mi")]),
            ..Default::default()
        },
        labels: labels(&[
            ("kubernetes.io/arch", "amd64"),
            ("kubernetes.io/os", "linux"),
            ("integer", &cpu.to_string()),
        ]),
        offerings,
    }
}

/// Catalog F (subset used by the scenarios).
pub fn catalog_f() -> Vec<InstanceType> {
    let mut gpu = fake_it("gpu-vendor-instance-type", 4, "4Gi", 5);
    gpu.capacity.set("fake.com/vendor-a", 2);
    for o in &mut gpu.offerings {
        o.price += 1.0;
    }
    let mut arm = fake_it("arm-instance-type", 16, "128Gi", 5);
    arm.labels
        .insert("kubernetes.io/arch".into(), "arm64".into());
    vec![
        fake_it("default-instance-type", 4, "4Gi", 5),
        fake_it("small-instance-type", 2, "2Gi", 5),
        gpu,
        arm,
        fake_it("single-pod-instance-type", 4, "4Gi", 1),
    ]
}

/// NodePool P: capacity-type In [spot, on-demand], limits cpu 2000.
pub fn pool_p(name: &str) -> NodePoolView {
    NodePoolView {
        name: name.to_string(),
        requirements: vec![NodeSelectorRequirement::new(
            "karpenter.sh/capacity-type",
            Operator::In,
            &["spot", "on-demand"],
        )],
        limits: Some(res(&[("cpu", "2000")])),
        ..Default::default()
    }
}

pub fn pod(name: &str, reqs: &[(&str, &str)]) -> PodView {
    PodView {
        namespace: "default".into(),
        name: name.into(),
        requests: res(reqs),
        ..Default::default()
    }
}

pub fn problem(its: Vec<InstanceType>, pools: Vec<NodePoolView>, pods: Vec<PodView>) -> Problem {
    Problem {
        instance_types: its,
        node_pools: pools,
        pods,
        ..Default::default()
    }
}

pub fn solve_default(p: &Problem) -> Plan {
    solve(p, &Options::default()).unwrap()
}

pub fn claim_of<'a>(plan: &'a Plan, pod: &str) -> Option<&'a PlannedNodeClaim> {
    plan.node_claims
        .iter()
        .find(|c| c.pods.iter().any(|p| p == pod))
}

pub fn zone_counts(plan: &Plan) -> Vec<usize> {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &plan.node_claims {
        *m.entry(c.zone.as_str()).or_default() += c.pods.len();
    }
    let mut v: Vec<usize> = m.into_values().collect();
    v.sort();
    v
}

pub fn spread(key: &str, max_skew: i32, sel: &[(&str, &str)]) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew,
        topology_key: key.into(),
        when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        label_selector: Some(LabelSelector::labels(sel)),
        ..Default::default()
    }
}

pub fn term(key: &str, sel: &[(&str, &str)]) -> PodAffinityTerm {
    PodAffinityTerm {
        label_selector: Some(LabelSelector::labels(sel)),
        topology_key: key.into(),
        ..Default::default()
    }
}

pub fn node_term(reqs: &[NodeSelectorRequirement]) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: reqs.to_vec(),
    }
}

pub fn amd64(mut p: PodView) -> PodView {
    p.node_selector
        .insert("kubernetes.io/arch".into(), "amd64".into());
    p
}

pub fn names(plan: &Plan) -> Vec<&str> {
    plan.node_claims
        .iter()
        .map(|c| c.instance_type.as_str())
        .collect()
}

pub fn zone_req(op: Operator, zones: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement::new("topology.kubernetes.io/zone", op, zones)
}

pub fn anti_pod(name: &str, cpu: &str) -> PodView {
    let mut p = pod(name, &[("cpu", cpu)]);
    p.labels = labels(&[("app", "foo")]);
    p.pod_anti_affinity
        .push(term("kubernetes.io/hostname", &[("app", "foo")]));
    p
}

pub fn ds(reqs: &[(&str, &str)]) -> DaemonSetView {
    DaemonSetView {
        namespace: "kube-system".into(),
        name: "ds".into(),
        pod: pod("ds", reqs),
    }
}

pub fn spread_pods(n: usize, key: &str, skew: i32) -> Vec<PodView> {
    (0..n)
        .map(|i| {
            let mut p = pod(&format!("s{i}"), &[]);
            p.labels = labels(&[("test", "test")]);
            p.topology_spread
                .push(spread(key, skew, &[("test", "test")]));
            p
        })
        .collect()
}

pub fn pool_any_capacity() -> NodePoolView {
    NodePoolView {
        name: "default".into(),
        requirements: vec![NodeSelectorRequirement::new(
            "karpenter.sh/capacity-type",
            Operator::Exists,
            &[],
        )],
        ..Default::default()
    }
}
