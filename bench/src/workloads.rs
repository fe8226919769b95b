//! Workload and catalog generators (seeded, deterministic).

use karpenter_solver::*;

/// SplitMix64: tiny seeded generator so the bench needs no RNG crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[(self.next() % v.len() as u64) as usize]
    }
}

const GI: i64 = 1 << 30;

fn res(pairs: &[(&str, &str)]) -> Resources {
    Resources::parse(pairs.iter().copied()).unwrap_or_default()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Upstream `fake.InstanceTypes(400)`: type i has cpu i+1, memory 2(i+1) GiB, pods 10(i+1).
pub fn upstream_catalog(n: i64) -> Vec<InstanceType> {
    (0..n)
        .map(|i| {
            let k = i + 1;
            let mut capacity = Resources::new();
            capacity.set("cpu", k * 1000);
            capacity.set("memory", 2 * k * GI);
            capacity.set("pods", 10 * k);
            let price = k as f64 * 0.31475;
            InstanceType {
                name: format!("fake-it-{i}"),
                capacity,
                overhead: Overhead {
                    kube_reserved: res(&[("cpu", "100m"), ("memory", "10Mi")]),
                    ..Default::default()
                },
                labels: labels(&[
                    ("kubernetes.io/arch", "amd64"),
                    ("kubernetes.io/os", "linux"),
                ]),
                offerings: vec![
                    Offering::new("test-zone-1", "spot", price),
                    Offering::new("test-zone-2", "spot", price),
                    Offering::new("test-zone-1", "on-demand", price),
                    Offering::new("test-zone-2", "on-demand", price),
                    Offering::new("test-zone-3", "on-demand", price),
                ],
            }
        })
        .collect()
}

/// One NodePool with huge limits.
pub fn upstream_pool() -> NodePoolView {
    NodePoolView {
        name: "default".into(),
        limits: Some(res(&[("cpu", "10000000"), ("memory", "10000000Gi")])),
        ..Default::default()
    }
}

const CPUS: [&str; 5] = ["100m", "250m", "500m", "1", "1.5"];
const MEMS: [&str; 6] = ["100Mi", "256Mi", "512Mi", "1Gi", "2Gi", "4Gi"];
const LETTERS: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];

fn random_pod(rng: &mut Rng, name: String) -> PodView {
    let cpu = *rng.pick(&CPUS);
    let mem = *rng.pick(&MEMS);
    PodView {
        namespace: "default".into(),
        name,
        requests: res(&[("cpu", cpu), ("memory", mem)]),
        ..Default::default()
    }
}

fn sel(k: &str, v: &str) -> Option<LabelSelector> {
    Some(LabelSelector::labels(&[(k, v)]))
}

/// Upstream `makeDiversePods(n)`.
pub fn diverse_pods(n: usize, rng: &mut Rng) -> Vec<PodView> {
    let slice = n / 5;
    let mut out = Vec::with_capacity(n);
    let mut idx = 0;
    let mut next = |rng: &mut Rng, kind: &str| {
        idx += 1;
        random_pod(rng, format!("{kind}-{idx}"))
    };
    for _ in 0..slice {
        let mut p = next(rng, "generic");
        p.labels = labels(&[("my-label", *rng.pick(&LETTERS))]);
        out.push(p);
    }
    for key in ["topology.kubernetes.io/zone", "kubernetes.io/hostname"] {
        for _ in 0..slice {
            let mut p = next(rng, "spread");
            p.labels = labels(&[("my-label", *rng.pick(&LETTERS))]);
            p.topology_spread.push(TopologySpreadConstraint {
                max_skew: 1,
                topology_key: key.into(),
                when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
                label_selector: sel("my-label", LETTERS[(rng.next() % 7) as usize]),
                ..Default::default()
            });
            out.push(p);
        }
    }
    for _ in 0..slice {
        let mut p = next(rng, "affinity");
        let v = *rng.pick(&LETTERS);
        p.labels = labels(&[("my-affininity", v)]);
        p.pod_affinity.push(PodAffinityTerm {
            label_selector: sel("my-affininity", v),
            topology_key: "topology.kubernetes.io/zone".into(),
            ..Default::default()
        });
        out.push(p);
    }
    for _ in 0..slice {
        let mut p = next(rng, "anti");
        p.labels = labels(&[("app", "nginx")]);
        p.pod_anti_affinity.push(PodAffinityTerm {
            label_selector: sel("app", "nginx"),
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        });
        out.push(p);
    }
    while out.len() < n {
        let mut p = next(rng, "generic");
        p.labels = labels(&[("my-label", *rng.pick(&LETTERS))]);
        out.push(p);
    }
    out
}

/// Upstream `makePreferencePods(n)`.
pub fn preference_pods(n: usize, rng: &mut Rng) -> Vec<PodView> {
    (0..n)
        .map(|i| {
            let mut p = random_pod(rng, format!("pref-{i}"));
            p.labels = labels(&[("app", "nginx")]);
            p.preferred_node_affinity.push(WeightedNodeSelectorTerm {
                weight: 1,
                term: NodeSelectorTerm {
                    match_expressions: vec![NodeSelectorRequirement::new(
                        "topology.kubernetes.io/zone",
                        Operator::In,
                        &["test-zone-1"],
                    )],
                },
            });
            for (w, key) in [
                (10, "topology.kubernetes.io/zone"),
                (1, "kubernetes.io/hostname"),
            ] {
                p.preferred_pod_anti_affinity.push(WeightedPodAffinityTerm {
                    weight: w,
                    term: PodAffinityTerm {
                        label_selector: sel("app", "nginx"),
                        topology_key: key.into(),
                        ..Default::default()
                    },
                });
            }
            p
        })
        .collect()
}

/// A small GPU catalog (the kwok catalog has no GPUs).
pub fn gpu_catalog() -> Vec<InstanceType> {
    [(1, 8, 32), (2, 16, 64), (4, 32, 128), (8, 64, 256)]
        .iter()
        .map(|&(gpus, cpu, mem_gi)| {
            let mut capacity = Resources::new();
            capacity.set("cpu", cpu * 1000);
            capacity.set("memory", mem_gi * GI);
            capacity.set("pods", 110);
            capacity.set("nvidia.com/gpu", gpus);
            let od = 0.025 * cpu as f64 + 0.001 * (mem_gi * GI) as f64 / 1e9 + 0.9 * gpus as f64;
            InstanceType {
                name: format!("g-{gpus}gpu-amd64-linux"),
                capacity,
                overhead: Overhead {
                    kube_reserved: res(&[("cpu", "100m"), ("memory", "10Mi")]),
                    ..Default::default()
                },
                labels: labels(&[
                    ("kubernetes.io/arch", "amd64"),
                    ("kubernetes.io/os", "linux"),
                    ("karpenter.kwok.sh/instance-family", "g"),
                ]),
                offerings: ["test-zone-a", "test-zone-b", "test-zone-c", "test-zone-d"]
                    .iter()
                    .flat_map(|z| {
                        [
                            Offering::new(z, "spot", 0.7 * od),
                            Offering::new(z, "on-demand", od),
                        ]
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Mixed realistic workload on the kwok catalog (+ GPU types): web (zone-spread, some
/// hostname anti-affinity), batch (spot only), memory-heavy, GPU (tainted pool), a DaemonSet.
pub fn mixed(scale: usize, rng: &mut Rng) -> Problem {
    let mut its = karpenter_providers::kwok::catalog();
    its.extend(gpu_catalog());
    let default = NodePoolView {
        name: "default".into(),
        requirements: vec![NodeSelectorRequirement::new(
            "karpenter.kwok.sh/instance-family",
            Operator::In,
            &["c", "s", "m"],
        )],
        ..Default::default()
    };
    let gpu = NodePoolView {
        name: "gpu".into(),
        requirements: vec![NodeSelectorRequirement::new(
            "karpenter.kwok.sh/instance-family",
            Operator::In,
            &["g"],
        )],
        taints: vec![Taint::new(
            "nvidia.com/gpu",
            "true",
            TaintEffect::NoSchedule,
        )],
        ..Default::default()
    };
    let mut pods = Vec::new();
    let on_demand_only =
        NodeSelectorRequirement::new("karpenter.sh/capacity-type", Operator::In, &["on-demand"]);
    for d in 0..(scale * 2) {
        let app = format!("web-{d}");
        let cpu = *rng.pick(&["250m", "500m", "1"]);
        let mem = *rng.pick(&["512Mi", "1Gi", "2Gi"]);
        let replicas = 3 + (rng.next() % 8) as usize;
        for r in 0..replicas {
            let mut p = PodView {
                namespace: "web".into(),
                name: format!("{app}-{r}"),
                labels: labels(&[("app", &app)]),
                requests: res(&[("cpu", cpu), ("memory", mem)]),
                ..Default::default()
            };
            p.required_node_affinity.push(NodeSelectorTerm {
                match_expressions: vec![on_demand_only.clone()],
            });
            p.topology_spread.push(TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "topology.kubernetes.io/zone".into(),
                when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
                label_selector: sel("app", &app),
                ..Default::default()
            });
            if d % 4 == 0 {
                p.pod_anti_affinity.push(PodAffinityTerm {
                    label_selector: sel("app", &app),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                });
            }
            pods.push(p);
        }
    }
    for j in 0..scale {
        let cpu = *rng.pick(&["1", "2", "4"]);
        let mem = *rng.pick(&["2Gi", "4Gi", "8Gi"]);
        for r in 0..10 {
            let mut p = PodView {
                namespace: "batch".into(),
                name: format!("job-{j}-{r}"),
                labels: labels(&[("job", &format!("job-{j}"))]),
                requests: res(&[("cpu", cpu), ("memory", mem)]),
                ..Default::default()
            };
            p.node_selector = labels(&[("karpenter.sh/capacity-type", "spot")]);
            pods.push(p);
        }
    }
    for m in 0..scale {
        let mem = *rng.pick(&["8Gi", "16Gi", "30Gi"]);
        for r in 0..3 {
            pods.push(PodView {
                namespace: "data".into(),
                name: format!("cache-{m}-{r}"),
                labels: labels(&[("app", &format!("cache-{m}"))]),
                requests: res(&[("cpu", "1"), ("memory", mem)]),
                ..Default::default()
            });
        }
    }
    for g in 0..scale.div_ceil(2) {
        let gpus = *rng.pick(&["1", "1", "2"]);
        let mut p = PodView {
            namespace: "ml".into(),
            name: format!("train-{g}"),
            requests: res(&[("cpu", "3"), ("memory", "12Gi"), ("nvidia.com/gpu", gpus)]),
            ..Default::default()
        };
        p.tolerations.push(Toleration::exists("nvidia.com/gpu"));
        pods.push(p);
    }
    let ds = DaemonSetView {
        namespace: "kube-system".into(),
        name: "node-agent".into(),
        pod: PodView {
            requests: res(&[("cpu", "100m"), ("memory", "128Mi")]),
            ..Default::default()
        },
    };
    Problem {
        instance_types: its,
        node_pools: vec![default, gpu],
        pods,
        existing_nodes: vec![],
        daemon_sets: vec![ds],
        ..Default::default()
    }
}
