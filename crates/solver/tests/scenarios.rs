//! Behavioural scenarios, most ported from karpenter-core.md §10.1–10.5 (upstream suites).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use karpenter_solver::*;

#[test]
fn s01_one_small_pod_gets_cheapest_type() {
    let p = problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![pod("a", &[("memory", "100M")])],
    );
    let plan = solve_default(&p);
    assert_eq!(plan.node_claims.len(), 1);
    assert_eq!(plan.node_claims[0].instance_type, "small-instance-type");
    assert!(plan.unschedulable.is_empty());
}

#[test]
fn s03_init_container_requests_raise_the_type() {
    let req = effective_pod_requests(
        &[res(&[("cpu", "1"), ("memory", "1Gi")])],
        &[ContainerRequests {
            requests: res(&[("cpu", "2"), ("memory", "1Gi")]),
            sidecar: false,
        }],
        &Resources::new(),
    );
    let mut pd = pod("a", &[]);
    pd.requests = req;
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![pd]));
    assert_eq!(plan.node_claims[0].instance_type, "default-instance-type");
}

fn amd64(mut p: PodView) -> PodView {
    p.node_selector
        .insert("kubernetes.io/arch".into(), "amd64".into());
    p
}

fn names(plan: &Plan) -> Vec<&str> {
    plan.node_claims
        .iter()
        .map(|c| c.instance_type.as_str())
        .collect()
}

fn zone_req(op: Operator, zones: &[&str]) -> NodeSelectorRequirement {
    NodeSelectorRequirement::new("topology.kubernetes.io/zone", op, zones)
}

#[test]
fn s02_runtime_class_overhead_counts() {
    let mut pd = pod("a", &[]);
    pd.requests = effective_pod_requests(&[res(&[("cpu", "1")])], &[], &res(&[("cpu", "2")]));
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![pd]));
    assert_eq!(names(&plan), vec!["default-instance-type"]);
}

#[test]
fn s04_s05_packing_two_large_one_small_per_node() {
    let mut pods: Vec<PodView> = (0..40)
        .map(|i| amd64(pod(&format!("big-{i}"), &[("memory", "1.8G")])))
        .collect();
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods.clone()));
    assert_eq!(plan.node_claims.len(), 20);
    assert!(names(&plan).iter().all(|n| *n == "default-instance-type"));
    pods.extend((0..20).map(|i| amd64(pod(&format!("small-{i}"), &[("memory", "400M")]))));
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
    assert_eq!(plan.node_claims.len(), 20);
    assert!(
        plan.node_claims
            .iter()
            .all(|c| c.pods.len() == 3 && c.instance_type == "default-instance-type")
    );
}

#[test]
fn s06_pod_slots_limit_packing() {
    let pods = (0..25)
        .map(|i| amd64(pod(&format!("p-{i}"), &[("cpu", "1m"), ("memory", "1M")])))
        .collect();
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
    assert_eq!(plan.node_claims.len(), 5);
    assert!(names(&plan).iter().all(|n| *n == "small-instance-type"));
}

#[test]
fn s07_five_small_pods_one_node() {
    let pods = (0..5)
        .map(|i| pod(&format!("p-{i}"), &[("memory", "10M")]))
        .collect();
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
    assert_eq!(names(&plan), vec!["small-instance-type"]);
}

#[test]
fn s08_impossible_pod_has_a_precise_reason() {
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![pod("huge", &[("cpu", "512")])],
    ));
    assert!(plan.node_claims.is_empty());
    assert_eq!(plan.unschedulable.len(), 1);
    let r = &plan.unschedulable[0].reason;
    assert!(
        r.contains("nodePool \"default\": no instance type has 512 cpu"),
        "{r}"
    );
    assert!(
        r.contains("largest: arm-instance-type, 15.9 cpu allocatable"),
        "{r}"
    );
}

#[test]
fn s09_price_not_size_decides_and_all_options_listed() {
    let mk = |name: &str, cpu: i64, mem: &str, price: f64| {
        let mut it = fake_it(name, cpu, mem, 10);
        it.offerings = vec![Offering::new("test-zone-1a", "on-demand", price)];
        it
    };
    let its = vec![
        mk("medium", 2, "2Gi", 3.0),
        mk("small", 1, "1Gi", 2.0),
        mk("large", 4, "4Gi", 1.0),
    ];
    let plan = solve_default(&problem(
        its,
        vec![pool_p("default")],
        vec![pod("a", &[("cpu", "1m"), ("memory", "1Mi")])],
    ));
    assert_eq!(plan.node_claims[0].instance_type, "large");
    assert_eq!(
        plan.node_claims[0].instance_type_options,
        vec!["large", "small", "medium"]
    );
    assert!((plan.total_price - 1.0).abs() < 1e-12);
}

#[test]
fn s10_host_port_conflict_needs_two_nodes() {
    let mut a = pod("a", &[]);
    a.host_ports.push(HostPort::tcp(8080));
    let mut b = pod("b", &[]);
    b.host_ports.push(HostPort::tcp(8080));
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![a, b]));
    assert_eq!(plan.node_claims.len(), 2);
}

#[test]
fn s11_existing_node_with_room_is_used_first() {
    let mut p = problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![pod("a", &[("cpu", "10m")])],
    );
    p.existing_nodes.push(ExistingNode {
        name: "node-1".into(),
        labels: labels(&[("kubernetes.io/hostname", "node-1")]),
        allocatable: res(&[("cpu", "10"), ("memory", "10Gi"), ("pods", "110")]),
        ..Default::default()
    });
    let plan = solve_default(&p);
    assert!(plan.node_claims.is_empty());
    assert_eq!(
        plan.existing_nodes,
        vec![ExistingPlacement {
            node: "node-1".into(),
            pods: vec!["default/a".into()]
        }]
    );
}

#[test]
fn existing_node_without_room_is_skipped() {
    let mut p = problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![pod("a", &[("cpu", "1")])],
    );
    let mut running = pod("running", &[("cpu", "9.5")]);
    running.namespace = "other".into();
    p.existing_nodes.push(ExistingNode {
        name: "node-1".into(),
        allocatable: res(&[("cpu", "10"), ("memory", "10Gi"), ("pods", "110")]),
        pods: vec![running],
        ..Default::default()
    });
    let plan = solve_default(&p);
    assert_eq!(plan.node_claims.len(), 1);
    assert!(plan.existing_nodes.is_empty());
}

#[test]
fn s14_zone_pinning_shares_compatible_claims() {
    let mut a = pod("a", &[]);
    a.required_node_affinity
        .push(node_term(&[zone_req(Operator::In, &[Z2])]));
    let mut b = pod("b", &[]);
    b.required_node_affinity
        .push(node_term(&[zone_req(Operator::In, &[Z1, Z2])]));
    let mut c = pod("c", &[]);
    c.required_node_affinity
        .push(node_term(&[zone_req(Operator::In, &[Z1, Z3])]));
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![a, b, c],
    ));
    let ca = claim_of(&plan, "default/a").unwrap();
    assert_eq!(ca.zone, Z2);
    assert_eq!(claim_of(&plan, "default/b").unwrap().name, ca.name);
    let cc = claim_of(&plan, "default/c").unwrap();
    assert_ne!(cc.name, ca.name);
    assert!(cc.zone == Z1 || cc.zone == Z3);
}

#[test]
fn s16_custom_labels_must_be_defined_by_the_pool() {
    let mut labelled = pool_p("labelled");
    labelled.labels = labels(&[("test-key", "test-value")]);
    let mut wrong = pod("wrong", &[]);
    wrong.node_selector = labels(&[("test-key", "different-value")]);
    let mut right = pod("right", &[]);
    right.node_selector = labels(&[("test-key", "test-value")]);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![labelled],
        vec![wrong.clone(), right.clone()],
    ));
    assert_eq!(plan.unschedulable.len(), 1);
    assert_eq!(plan.unschedulable[0].pod, "default/wrong");
    assert_eq!(
        claim_of(&plan, "default/right")
            .unwrap()
            .labels
            .get("test-key")
            .map(String::as_str),
        Some("test-value")
    );
    // A pool without the label: selecting it fails, NotIn / DoesNotExist pass.
    let mut notin = pod("notin", &[]);
    notin
        .required_node_affinity
        .push(node_term(&[NodeSelectorRequirement::new(
            "test-key",
            Operator::NotIn,
            &["x"],
        )]));
    let mut dne = pod("dne", &[]);
    dne.required_node_affinity
        .push(node_term(&[NodeSelectorRequirement::new(
            "test-key",
            Operator::DoesNotExist,
            &[],
        )]));
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_p("plain")],
        vec![right, notin, dne],
    ));
    assert_eq!(plan.unschedulable.len(), 1);
    assert!(
        plan.unschedulable[0]
            .reason
            .contains("label test-key is not defined by the NodePool"),
        "{}",
        plan.unschedulable[0].reason
    );
}

#[test]
fn s17_s18_weights_and_explicit_pool_selection() {
    let mut w20 = pool_p("w20");
    w20.weight = 20;
    let mut w100 = pool_p("w100");
    w100.weight = 100;
    let pools = vec![pool_p("a-unweighted"), w20, w100];
    let pods: Vec<PodView> = (0..3).map(|i| pod(&format!("p{i}"), &[])).collect();
    let plan = solve_default(&problem(catalog_f(), pools.clone(), pods));
    assert!(plan.node_claims.iter().all(|c| c.node_pool == "w100"));
    let mut sel = pod("sel", &[]);
    sel.node_selector = labels(&[("karpenter.sh/nodepool", "a-unweighted")]);
    let plan = solve_default(&problem(catalog_f(), pools, vec![sel]));
    assert_eq!(plan.node_claims[0].node_pool, "a-unweighted");
}

#[test]
fn s19_prefer_no_schedule_pool_is_avoided() {
    let mut a = pool_p("a");
    a.taints
        .push(Taint::new("foo", "bar", TaintEffect::PreferNoSchedule));
    let plan = solve_default(&problem(
        catalog_f(),
        vec![a, pool_p("b")],
        vec![pod("x", &[])],
    ));
    assert_eq!(plan.node_claims[0].node_pool, "b");
    // Alone, the PreferNoSchedule pool is still used (relaxation adds a toleration).
    let mut a = pool_p("a");
    a.taints
        .push(Taint::new("foo", "bar", TaintEffect::PreferNoSchedule));
    let plan = solve_default(&problem(catalog_f(), vec![a], vec![pod("x", &[])]));
    assert_eq!(plan.node_claims.len(), 1);
}

#[test]
fn s20_s21_limits_are_never_exceeded() {
    let mut p = pool_p("default");
    p.limits = Some(res(&[("cpu", "2")]));
    let plan = solve_default(&problem(
        catalog_f(),
        vec![p.clone()],
        vec![pod("a", &[("cpu", "1.75")])],
    ));
    assert_eq!(names(&plan), vec!["small-instance-type"]);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![p.clone()],
        vec![pod("a", &[("cpu", "1.75")]), pod("b", &[("cpu", "1.75")])],
    ));
    assert_eq!(plan.node_claims.len(), 1);
    assert_eq!(plan.unschedulable.len(), 1);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![p.clone()],
        vec![pod("c", &[("cpu", "2.1")])],
    ));
    assert!(plan.node_claims.is_empty());
    // Existing usage counts too.
    p.usage = res(&[("cpu", "2")]);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![p],
        vec![pod("d", &[("cpu", "100m")])],
    ));
    assert!(plan.node_claims.is_empty());
    assert!(
        plan.unschedulable[0].reason.contains("limits"),
        "{}",
        plan.unschedulable[0].reason
    );
}

fn anti_pod(name: &str, cpu: &str) -> PodView {
    let mut p = pod(name, &[("cpu", cpu)]);
    p.labels = labels(&[("app", "foo")]);
    p.pod_anti_affinity
        .push(term("kubernetes.io/hostname", &[("app", "foo")]));
    p
}

#[test]
fn s22_s23_node_and_cpu_limits_with_anti_affinity() {
    let mut p = pool_p("default");
    p.limits = Some(res(&[("nodes", "2")]));
    let pods = (0..3).map(|i| anti_pod(&format!("p{i}"), "1.5")).collect();
    let plan = solve_default(&problem(catalog_f(), vec![p], pods));
    assert_eq!(plan.node_claims.len(), 2);
    assert_eq!(plan.unschedulable.len(), 1);
    let mut p = pool_p("default");
    p.limits = Some(res(&[("cpu", "3")]));
    let pods = (0..2).map(|i| anti_pod(&format!("p{i}"), "1.5")).collect();
    let plan = solve_default(&problem(catalog_f(), vec![p], pods));
    assert_eq!(plan.node_claims.len(), 1);
}

fn ds(reqs: &[(&str, &str)]) -> DaemonSetView {
    DaemonSetView {
        namespace: "kube-system".into(),
        name: "ds".into(),
        pod: pod("ds", reqs),
    }
}

#[test]
fn s24_s25_s26_daemonset_overhead() {
    let mut p = problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![pod("a", &[("cpu", "1"), ("memory", "1Gi")])],
    );
    p.daemon_sets.push(ds(&[("cpu", "2"), ("memory", "2Gi")]));
    let plan = solve_default(&p);
    assert_eq!(names(&plan), vec!["default-instance-type"]);
    assert_eq!(plan.node_claims[0].requests.get("cpu"), 3000);
    // Host port clash with the DaemonSet.
    let mut a = pod("a", &[]);
    a.host_ports.push(HostPort::tcp(8080));
    let mut p = problem(catalog_f(), vec![pool_p("default")], vec![a]);
    let mut d = ds(&[]);
    d.pod.host_ports.push(HostPort::tcp(8080));
    p.daemon_sets.push(d);
    let plan = solve_default(&p);
    assert!(plan.node_claims.is_empty());
    assert!(
        plan.unschedulable[0].reason.contains("host port"),
        "{}",
        plan.unschedulable[0].reason
    );
    // A DaemonSet bigger than any node.
    let mut p = problem(catalog_f(), vec![pool_p("default")], vec![pod("a", &[])]);
    p.daemon_sets.push(ds(&[("cpu", "10000")]));
    assert!(solve_default(&p).node_claims.is_empty());
}

#[test]
fn daemonset_that_does_not_tolerate_the_pool_is_not_overhead() {
    let mut tainted = pool_p("default");
    tainted
        .taints
        .push(Taint::new("dedicated", "x", TaintEffect::NoSchedule));
    let mut pd = pod("a", &[("cpu", "1"), ("memory", "1Gi")]);
    pd.tolerations.push(Toleration::exists("dedicated"));
    let mut p = problem(catalog_f(), vec![tainted], vec![pd]);
    p.daemon_sets.push(ds(&[("cpu", "2"), ("memory", "2Gi")]));
    assert_eq!(names(&solve_default(&p)), vec!["small-instance-type"]);
}

#[test]
fn s27_s28_required_terms_are_alternatives() {
    let mut np = pool_p("default");
    np.requirements.push(zone_req(Operator::In, &[Z1]));
    let mut a = pod("a", &[]);
    a.required_node_affinity
        .push(node_term(&[zone_req(Operator::In, &["invalid"])]));
    let plan = solve_default(&problem(catalog_f(), vec![np], vec![a]));
    assert_eq!(plan.unschedulable.len(), 1);
    let mut b = pod("b", &[]);
    for z in ["invalid", "invalid", Z1, Z2] {
        b.required_node_affinity
            .push(node_term(&[zone_req(Operator::In, &[z])]));
    }
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![b]));
    assert_eq!(plan.node_claims[0].zone, Z1);
}

#[test]
fn s29_s30_preferred_node_affinity() {
    let mut np = pool_p("default");
    np.requirements.push(zone_req(Operator::In, &[Z1, Z2]));
    let mut a = pod("a", &[]);
    for (w, r) in [
        (
            100,
            NodeSelectorRequirement::new("node.kubernetes.io/instance-type", Operator::In, &[Z3]),
        ),
        (50, zone_req(Operator::In, &[Z2])),
        (1, zone_req(Operator::In, &[Z1])),
    ] {
        a.preferred_node_affinity.push(WeightedNodeSelectorTerm {
            weight: w,
            term: node_term(&[r]),
        });
    }
    let plan = solve_default(&problem(catalog_f(), vec![np], vec![a]));
    assert_eq!(plan.node_claims[0].zone, Z2);
    let mut b = pod("b", &[]);
    b.preferred_node_affinity.push(WeightedNodeSelectorTerm {
        weight: 1,
        term: node_term(&[zone_req(Operator::NotIn, &[Z3])]),
    });
    b.required_node_affinity
        .push(node_term(&[zone_req(Operator::In, &[Z3])]));
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![b]));
    assert_eq!(plan.node_claims[0].zone, Z3);
}

fn spread_pods(n: usize, key: &str, skew: i32) -> Vec<PodView> {
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

fn pool_any_capacity() -> NodePoolView {
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

#[test]
fn s31_s32_zone_spread() {
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_any_capacity()],
        spread_pods(4, "topology.kubernetes.io/zone", 1),
    ));
    assert_eq!(zone_counts(&plan), vec![1, 1, 2]);
    let mut np = pool_any_capacity();
    np.requirements.push(zone_req(Operator::In, &[Z1, Z2]));
    let plan = solve_default(&problem(
        catalog_f(),
        vec![np],
        spread_pods(4, "topology.kubernetes.io/zone", 1),
    ));
    assert_eq!(zone_counts(&plan), vec![2, 2]);
    let mut np = pool_any_capacity();
    np.labels = labels(&[("topology.kubernetes.io/zone", Z1)]);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![np],
        spread_pods(4, "topology.kubernetes.io/zone", 1),
    ));
    assert_eq!(zone_counts(&plan), vec![4]);
}

#[test]
fn s36_hostname_spread() {
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_any_capacity()],
        spread_pods(4, "kubernetes.io/hostname", 1),
    ));
    assert_eq!(plan.node_claims.len(), 4);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_any_capacity()],
        spread_pods(4, "kubernetes.io/hostname", 4),
    ));
    assert_eq!(plan.node_claims.len(), 1);
}

#[test]
fn s37_capacity_type_spread() {
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_any_capacity()],
        spread_pods(4, "karpenter.sh/capacity-type", 1),
    ));
    let spot: usize = plan
        .node_claims
        .iter()
        .filter(|c| c.capacity_type == "spot")
        .map(|c| c.pods.len())
        .sum();
    assert_eq!(spot, 2);
}

#[test]
fn s39_unknown_topology_key_blocks_only_that_pod() {
    let mut a = spread_pods(1, "unknown", 1).remove(0);
    a.name = "constrained".into();
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![a, pod("free", &[])],
    ));
    assert_eq!(plan.unschedulable.len(), 1);
    assert_eq!(plan.unschedulable[0].pod, "default/constrained");
}

#[test]
fn s40_self_affinity_collocates() {
    for key in ["kubernetes.io/hostname", "topology.kubernetes.io/zone"] {
        let pods: Vec<PodView> = (0..3)
            .map(|i| {
                let mut p = pod(&format!("a{i}"), &[("cpu", "1")]);
                p.labels = labels(&[("security", "s2")]);
                p.pod_affinity.push(term(key, &[("security", "s2")]));
                p
            })
            .collect();
        let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
        assert!(plan.unschedulable.is_empty());
        let zones: std::collections::BTreeSet<&str> =
            plan.node_claims.iter().map(|c| c.zone.as_str()).collect();
        assert_eq!(zones.len(), 1, "{key}");
        if key == "kubernetes.io/hostname" {
            assert_eq!(plan.node_claims.len(), 1);
        }
    }
}

#[test]
fn s41_s42_anti_affinity() {
    let mut x = pod("x", &[]);
    x.labels = labels(&[("security", "s2")]);
    let mut y = pod("y", &[]);
    y.pod_anti_affinity
        .push(term("kubernetes.io/hostname", &[("security", "s2")]));
    for pods in [vec![x.clone(), y.clone()], vec![y.clone(), x.clone()]] {
        let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
        assert_ne!(
            claim_of(&plan, "default/x").unwrap().name,
            claim_of(&plan, "default/y").unwrap().name
        );
    }
    let mut pods: Vec<PodView> = [Z1, Z2, Z3]
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let mut p = pod(&format!("p{i}"), &[("cpu", "2")]);
            p.labels = labels(&[("security", "s2")]);
            p.node_selector = labels(&[("topology.kubernetes.io/zone", z)]);
            p
        })
        .collect();
    let mut anti = pod("anti", &[]);
    anti.pod_anti_affinity
        .push(term("topology.kubernetes.io/zone", &[("security", "s2")]));
    pods.push(anti);
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
    assert_eq!(plan.unschedulable.len(), 1);
    assert_eq!(plan.unschedulable[0].pod, "default/anti");
}

#[test]
fn preferred_pod_affinity_joins_the_target_when_possible() {
    let mut x = pod("x", &[("cpu", "1")]);
    x.labels = labels(&[("app", "db")]);
    let mut y = pod("y", &[("cpu", "500m")]);
    y.preferred_pod_affinity.push(WeightedPodAffinityTerm {
        weight: 10,
        term: term("kubernetes.io/hostname", &[("app", "db")]),
    });
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![x, y]));
    assert_eq!(plan.node_claims.len(), 1);
    // Preferred anti-affinity that cannot hold is relaxed rather than failing the pod.
    let mut z = pod("z", &[]);
    z.labels = labels(&[("app", "db")]);
    z.preferred_pod_anti_affinity.push(WeightedPodAffinityTerm {
        weight: 10,
        term: term("unknown-key", &[("app", "db")]),
    });
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![z]));
    assert!(plan.unschedulable.is_empty());
}

#[test]
fn arch_and_gpu_selectors() {
    let mut arm = pod("arm", &[]);
    arm.node_selector = labels(&[("kubernetes.io/arch", "arm64")]);
    let gpu = pod("gpu", &[("fake.com/vendor-a", "1")]);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![arm, gpu],
    ));
    assert_eq!(
        claim_of(&plan, "default/arm").unwrap().instance_type,
        "arm-instance-type"
    );
    assert_eq!(
        claim_of(&plan, "default/gpu").unwrap().instance_type,
        "gpu-vendor-instance-type"
    );
}

#[test]
fn gt_and_lt_on_integer_labels() {
    let mut big = pod("big", &[]);
    big.required_node_affinity
        .push(node_term(&[NodeSelectorRequirement::new(
            "integer",
            Operator::Gt,
            &["3"],
        )]));
    let mut small = pod("small", &[]);
    small
        .required_node_affinity
        .push(node_term(&[NodeSelectorRequirement::new(
            "integer",
            Operator::Lt,
            &["3"],
        )]));
    let mut np = pool_p("default");
    np.requirements.push(NodeSelectorRequirement::new(
        "integer",
        Operator::Exists,
        &[],
    ));
    let plan = solve_default(&problem(catalog_f(), vec![np], vec![big, small]));
    assert_eq!(
        claim_of(&plan, "default/big").unwrap().instance_type,
        "default-instance-type"
    );
    assert_eq!(
        claim_of(&plan, "default/small").unwrap().instance_type,
        "small-instance-type"
    );
}

#[test]
fn unavailable_offerings_are_never_chosen() {
    let mut its = catalog_f();
    for o in &mut its[1].offerings {
        o.available = o.zone != Z1 || o.capacity_type != "spot";
    }
    its[1]
        .offerings
        .iter_mut()
        .for_each(|o| o.available = false);
    let plan = solve_default(&problem(its, vec![pool_p("default")], vec![pod("a", &[])]));
    assert_eq!(names(&plan), vec!["default-instance-type"]);
}

#[test]
fn tainted_gpu_pool_needs_a_toleration() {
    let mut gpu = pool_p("gpu");
    gpu.weight = 10;
    gpu.taints.push(Taint::new(
        "nvidia.com/gpu",
        "true",
        TaintEffect::NoSchedule,
    ));
    let mut only_gpu = pool_p("default");
    only_gpu.requirements.push(NodeSelectorRequirement::new(
        "kubernetes.io/arch",
        Operator::In,
        &["amd64"],
    ));
    let plain = pod("plain", &[]);
    let mut tol = pod("tol", &[]);
    tol.tolerations.push(Toleration::exists("nvidia.com/gpu"));
    let plan = solve_default(&problem(
        catalog_f(),
        vec![gpu.clone(), only_gpu.clone()],
        vec![plain.clone()],
    ));
    assert_eq!(
        claim_of(&plan, "default/plain").unwrap().node_pool,
        "default"
    );
    // Alone, the tolerating pod prefers the heavier tainted pool.
    let plan = solve_default(&problem(
        catalog_f(),
        vec![gpu.clone(), only_gpu],
        vec![tol],
    ));
    assert_eq!(claim_of(&plan, "default/tol").unwrap().node_pool, "gpu");
    assert_eq!(claim_of(&plan, "default/tol").unwrap().taints.len(), 1);
    let plan = solve_default(&problem(catalog_f(), vec![gpu], vec![plain]));
    assert!(
        plan.unschedulable[0]
            .reason
            .contains("nodePool \"gpu\": taint nvidia.com/gpu=true:NoSchedule not tolerated")
    );
}

#[test]
fn explain_lists_pools_and_instance_types() {
    let p = problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![pod("huge", &[("cpu", "512")])],
    );
    let lines = explain(&p, "default/huge", &Options::default()).unwrap();
    assert!(
        lines.iter().any(|l| l
            .contains("instance type small-instance-type: 512 cpu needed, 1.9 cpu allocatable")),
        "{lines:?}"
    );
    assert!(lines.last().unwrap().starts_with("result: unschedulable"));
    assert!(matches!(
        explain(&p, "default/nope", &Options::default()),
        Err(SolveError::UnknownPod(_))
    ));
}

#[test]
fn restricted_hostname_selector_is_ignored() {
    let mut a = pod("a", &[]);
    a.node_selector = labels(&[("kubernetes.io/hostname", "x")]);
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], vec![a]));
    assert!(plan.unschedulable[0].reason.contains("restricted label"));
}

#[test]
fn duplicate_pods_and_bad_requirements_are_errors() {
    let p = problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![pod("a", &[]), pod("a", &[])],
    );
    assert!(matches!(
        solve(&p, &Options::default()),
        Err(SolveError::DuplicatePod(_))
    ));
    let mut b = pod("b", &[]);
    b.required_node_affinity
        .push(node_term(&[NodeSelectorRequirement::new(
            "integer",
            Operator::Gt,
            &["x"],
        )]));
    let p = problem(catalog_f(), vec![pool_p("default")], vec![b]);
    assert!(matches!(
        solve(&p, &Options::default()),
        Err(SolveError::InvalidRequirement { .. })
    ));
}

#[test]
fn claim_labels_include_everything_the_node_carries() {
    let mut np = pool_p("default");
    np.labels = labels(&[("team", "a")]);
    let plan = solve_default(&problem(catalog_f(), vec![np], vec![pod("a", &[])]));
    let l = &plan.node_claims[0].labels;
    for k in [
        "team",
        "karpenter.sh/nodepool",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/zone",
        "karpenter.sh/capacity-type",
        "kubernetes.io/arch",
    ] {
        assert!(l.contains_key(k), "{k} missing: {l:?}");
    }
    assert_eq!(l["topology.kubernetes.io/zone"], plan.node_claims[0].zone);
}
