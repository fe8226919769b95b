//! Selectors, offerings, taints, reasons, explain and validation.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use karpenter_solver::*;

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

#[test]
fn s44_min_values_keeps_two_instance_types_per_claim() {
    // it-1: 1 cpu / 1Gi at 0.52, it-2: 4 cpu / 4Gi at 1.00, one spot offering each. Two pods of
    // 0.9 cpu / 921Mi: together they fit only it-2, leaving one instance type, fewer than
    // minValues 2; alone each fits both. So two claims, each listing both types (launched as
    // it-1); without minValues the pods share one it-2.
    let it = |name: &str, cpu: i64, mem: &str, price: f64| {
        let mut t = fake_it(name, cpu, mem, 10);
        t.labels.insert("kubernetes.io/arch".into(), "arm64".into());
        t.offerings = vec![Offering::new("test-zone-1-spot", "spot", price)];
        t
    };
    let its = vec![it("it-1", 1, "1Gi", 0.52), it("it-2", 4, "4Gi", 1.0)];
    let mut pool = pool_p("default");
    pool.requirements.push(NodeSelectorRequirement::new(
        "node.kubernetes.io/instance-type",
        Operator::In,
        &["it-1", "it-2"],
    ));
    let pods: Vec<PodView> = (0..2)
        .map(|i| pod(&format!("p{i}"), &[("cpu", "900m"), ("memory", "921Mi")]))
        .collect();
    let mut p = problem(its, vec![pool], pods);
    let plan = solve_default(&p);
    assert_eq!(
        plan.node_claims.len(),
        1,
        "control: without minValues they share"
    );
    assert_eq!(plan.node_claims[0].instance_type, "it-2");

    p.min_values.insert(
        "default".into(),
        [("node.kubernetes.io/instance-type".to_string(), 2)].into(),
    );
    let plan = solve_default(&p);
    assert!(plan.unschedulable.is_empty());
    assert_eq!(plan.node_claims.len(), 2);
    for c in &plan.node_claims {
        assert_eq!(c.pods.len(), 1);
        assert_eq!(c.instance_type, "it-1");
        assert_eq!(c.instance_type_options, ["it-1", "it-2"]);
    }
    assert!((plan.total_price - 1.04).abs() < 1e-9);

    // minValues 3 cannot be met by two types: nothing is launched, and the reason says why.
    p.min_values.insert(
        "default".into(),
        [("node.kubernetes.io/instance-type".to_string(), 3)].into(),
    );
    let plan = solve_default(&p);
    assert!(plan.node_claims.is_empty());
    assert_eq!(plan.unschedulable.len(), 2);
    assert!(
        plan.unschedulable[0]
            .reason
            .contains("node.kubernetes.io/instance-type minValues 3"),
        "{}",
        plan.unschedulable[0].reason
    );
}

#[test]
fn daemon_pods_bound_to_an_existing_node_use_its_room() {
    // The conversion layer adds the daemon pods an existing node should run but whose pods are
    // not listed (karpenter_api::solver_input::problem); the solver must count them like any
    // bound pod. Node: 4 cpu; bound: app 1 cpu + daemon 1 cpu → 2 cpu free.
    let node = |pods: Vec<PodView>| ExistingNode {
        name: "n1".into(),
        labels: labels(&[("kubernetes.io/hostname", "n1")]),
        allocatable: res(&[("cpu", "4"), ("memory", "8Gi"), ("pods", "110")]),
        pods,
        ..Default::default()
    };
    let bound = vec![
        pod("app", &[("cpu", "1")]),
        pod("node-agent-n1", &[("cpu", "1")]),
    ];
    for (cpu, on_node) in [("2500m", false), ("2", true)] {
        let mut p = problem(
            catalog_f(),
            vec![pool_p("default")],
            vec![pod("x", &[("cpu", cpu)])],
        );
        p.existing_nodes.push(node(bound.clone()));
        let plan = solve_default(&p);
        assert_eq!(plan.existing_nodes.len(), usize::from(on_node), "cpu {cpu}");
        assert_eq!(plan.node_claims.len(), usize::from(!on_node), "cpu {cpu}");
        // Control: without the daemon pod 2.5 cpu fits (3 free).
        let mut p = problem(
            catalog_f(),
            vec![pool_p("default")],
            vec![pod("x", &[("cpu", cpu)])],
        );
        p.existing_nodes.push(node(bound[..1].to_vec()));
        assert_eq!(solve_default(&p).existing_nodes.len(), 1);
    }
}

#[test]
fn a_resource_no_instance_type_offers_is_named_as_such() {
    let pods = vec![
        pod("gpu", &[("cpu", "1"), ("nvidia.com/gpu", "1")]),
        pod("vendor", &[("cpu", "1"), ("fake.com/vendor-a", "3")]),
    ];
    let plan = solve_default(&problem(catalog_f(), vec![pool_p("default")], pods));
    let reason = |k: &str| {
        plan.unschedulable
            .iter()
            .find(|u| u.pod == k)
            .map(|u| u.reason.clone())
            .unwrap()
    };
    assert_eq!(
        reason("default/gpu"),
        "nodePool \"default\": no instance type offers nvidia.com/gpu"
    );
    // Offered, but not enough: the largest type is still named.
    let r = reason("default/vendor");
    assert!(
        r.contains("no instance type has 3 fake.com/vendor-a (largest: gpu-vendor-instance-type"),
        "{r}"
    );
}

#[test]
fn each_unschedulable_pod_gets_its_own_reason_among_replicas() {
    // Reasons are worked out once per NodePool and requirement set: replicas share one, pods
    // with other requirements must not inherit it.
    let nowhere = |name: &str| {
        let mut p = pod(name, &[("cpu", "1")]);
        p.node_selector = labels(&[("topology.kubernetes.io/zone", "zone-that-does-not-exist")]);
        p
    };
    let mut arm = pod("arm", &[("cpu", "1")]);
    arm.node_selector = labels(&[("node.kubernetes.io/instance-type", "no-such-type")]);
    let huge = pod("huge", &[("cpu", "500")]);
    let plan = solve_default(&problem(
        catalog_f(),
        vec![pool_p("default")],
        vec![nowhere("a"), arm, nowhere("b"), huge, nowhere("c")],
    ));
    let reason = |name: &str| {
        plan.unschedulable
            .iter()
            .find(|u| u.pod == format!("default/{name}"))
            .map(|u| u.reason.clone())
            .unwrap_or_else(|| panic!("{name} should be unschedulable"))
    };
    let zone =
        "nodePool \"default\": no available offering matches the zone/capacity-type requirements";
    for name in ["a", "b", "c"] {
        assert_eq!(reason(name), zone);
    }
    assert!(
        reason("arm").starts_with(
            "nodePool \"default\": no instance type satisfies node.kubernetes.io/instance-type"
        ),
        "{}",
        reason("arm")
    );
    assert!(
        reason("huge").starts_with("nodePool \"default\": no instance type has 500 cpu"),
        "{}",
        reason("huge")
    );
}
