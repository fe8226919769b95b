//! Provisioning and bin-packing scenarios (karpenter-core.md §10.1): types, packing, host
//! ports, existing nodes, zone pinning, custom labels.

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
