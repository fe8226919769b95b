//! Property tests: every plan respects every constraint, checked by an independent validator
//! written here (it shares no code with the solver beyond the input/output types).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use karpenter_solver::*;
use proptest::prelude::*;

const ZONES: [&str; 3] = ["z1", "z2", "z3"];

#[derive(Debug, Clone)]
struct Case {
    problem: Problem,
}

fn arb_it() -> impl Strategy<Value = InstanceType> {
    (
        prop::sample::select(vec![1i64, 2, 4, 8]),
        prop::sample::select(vec![1i64, 2, 4]),
        2i64..12,
        prop::bool::ANY,
        prop::collection::vec(prop::bool::weighted(0.85), 6),
        0usize..1000,
    )
        .prop_map(|(cpu, f, pods, arm, avail, id)| {
            let mut capacity = Resources::new();
            capacity.set("cpu", cpu * 1000);
            capacity.set("memory", (cpu * f) << 30);
            capacity.set("pods", pods);
            let od = 0.03 * cpu as f64 + 0.004 * (cpu * f) as f64;
            let mut offerings = Vec::new();
            for (i, z) in ZONES.iter().enumerate() {
                offerings.push(Offering {
                    zone: z.to_string(),
                    capacity_type: "spot".into(),
                    price: 0.7 * od,
                    available: avail[2 * i],
                    reservation: None,
                });
                offerings.push(Offering {
                    zone: z.to_string(),
                    capacity_type: "on-demand".into(),
                    price: od,
                    available: avail[2 * i + 1],
                    reservation: None,
                });
            }
            InstanceType {
                name: format!(
                    "it-{cpu}-{f}-{pods}-{}-{id}",
                    if arm { "arm64" } else { "amd64" }
                ),
                capacity,
                overhead: Overhead {
                    kube_reserved: res(&[("cpu", "100m"), ("memory", "10Mi")]),
                    ..Default::default()
                },
                labels: labels(&[("kubernetes.io/arch", if arm { "arm64" } else { "amd64" })]),
                offerings,
            }
        })
}

fn arb_pool(i: usize) -> impl Strategy<Value = NodePoolView> {
    (
        0i32..3,
        prop::bool::weighted(0.3),
        prop::option::weighted(0.3, 4i64..20),
        prop::option::weighted(0.3, 0usize..3),
        prop::option::weighted(0.2, 2i64..6),
    )
        .prop_map(move |(weight, tainted, cpu_limit, zone, nodes)| {
            let mut np = NodePoolView {
                name: format!("pool-{i}"),
                weight,
                ..Default::default()
            };
            if tainted {
                np.taints
                    .push(Taint::new("dedicated", "x", TaintEffect::NoSchedule));
            }
            let mut limits = Resources::new();
            if let Some(c) = cpu_limit {
                limits.set("cpu", c * 1000);
            }
            if let Some(n) = nodes {
                limits.set("nodes", n);
            }
            if !limits.is_zero() {
                np.limits = Some(limits);
            }
            if let Some(z) = zone {
                np.requirements.push(NodeSelectorRequirement::new(
                    "topology.kubernetes.io/zone",
                    Operator::NotIn,
                    &[ZONES[z]],
                ));
            }
            np
        })
}

fn arb_pod(i: usize) -> impl Strategy<Value = PodView> {
    (
        prop::sample::select(vec!["0", "100m", "500m", "1", "2", "3"]),
        prop::sample::select(vec!["0", "256Mi", "1Gi", "3Gi"]),
        0u8..10,
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
    )
        .prop_map(move |(cpu, mem, kind, tolerate, port)| {
            let mut p = pod(&format!("p{i}"), &[("cpu", cpu), ("memory", mem)]);
            match kind {
                0 => p.node_selector = labels(&[("kubernetes.io/arch", "arm64")]),
                1 => p.node_selector = labels(&[("topology.kubernetes.io/zone", "z2")]),
                2 => {
                    p.labels = labels(&[("app", "anti")]);
                    p.pod_anti_affinity
                        .push(term("kubernetes.io/hostname", &[("app", "anti")]));
                }
                3 | 4 => {
                    p.labels = labels(&[("app", "sp")]);
                    p.topology_spread.push(spread(
                        "topology.kubernetes.io/zone",
                        1,
                        &[("app", "sp")],
                    ));
                }
                5 => p.node_selector = labels(&[("karpenter.sh/capacity-type", "spot")]),
                _ => {}
            }
            if tolerate {
                p.tolerations.push(Toleration::exists("dedicated"));
            }
            if port {
                p.host_ports.push(HostPort::tcp(80));
            }
            p
        })
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(arb_it(), 1..5),
        prop::collection::vec(prop::bool::ANY, 1..3),
        0usize..20,
        prop::option::weighted(0.3, prop::sample::select(vec!["100m", "300m"])),
        prop::option::weighted(0.3, (1i64..8, prop::collection::vec(arb_pod(1000), 0..3))),
    )
        .prop_flat_map(|(its, pools, npods, ds, existing)| {
            let pools = pools
                .iter()
                .enumerate()
                .map(|(i, _)| arb_pool(i))
                .collect::<Vec<_>>();
            let pods = (0..npods).map(arb_pod).collect::<Vec<_>>();
            (Just(its), pools, pods, Just(ds), Just(existing))
        })
        .prop_map(|(mut its, pools, pods, ds, existing)| {
            for (i, it) in its.iter_mut().enumerate() {
                it.name = format!("{}-{i}", it.name);
            }
            let mut problem = Problem {
                instance_types: its,
                node_pools: pools,
                pods,
                ..Default::default()
            };
            if let Some(cpu) = ds {
                problem.daemon_sets.push(DaemonSetView {
                    namespace: "ks".into(),
                    name: "ds".into(),
                    pod: pod("ds", &[("cpu", cpu), ("memory", "64Mi")]),
                });
            }
            if let Some((cpu, bound)) = existing {
                let bound: Vec<PodView> = bound
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut p)| {
                        p.namespace = "default".into();
                        p.name = format!("r{i}");
                        p.topology_spread.clear();
                        if i > 0 {
                            // At most one running anti-affinity pod: the input itself must be valid.
                            p.labels.clear();
                            p.pod_anti_affinity.clear();
                            p.host_ports.clear();
                        }
                        p
                    })
                    .collect();
                problem.existing_nodes.push(ExistingNode {
                    name: "existing-1".into(),
                    labels: labels(&[
                        ("kubernetes.io/arch", "amd64"),
                        ("topology.kubernetes.io/zone", "z1"),
                        ("kubernetes.io/hostname", "existing-1"),
                    ]),
                    allocatable: {
                        let mut r = res(&[("memory", "16Gi"), ("pods", "20")]);
                        r.set("cpu", cpu * 1000);
                        r
                    },
                    pods: bound,
                    ..Default::default()
                });
            }
            Case { problem }
        })
}

// ---------------- independent validity checker ----------------

fn sel_ok(sel: &BTreeMap<String, String>, l: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| l.get(k) == Some(v))
}

fn tolerated(t: &Taint, tols: &[Toleration]) -> bool {
    t.effect == TaintEffect::PreferNoSchedule
        || tols.iter().any(|x| {
            (x.key.is_empty() || x.key == t.key)
                && x.effect.is_none_or(|e| e == t.effect)
                && (x.operator == TolerationOperator::Exists || x.value == t.value)
        })
}

fn pool_reqs_ok(np: &NodePoolView, l: &BTreeMap<String, String>) -> bool {
    np.requirements.iter().all(|r| {
        let v = l.get(&r.key);
        match r.operator {
            Operator::In => v.is_some_and(|v| r.values.contains(v)),
            Operator::NotIn => v.is_none_or(|v| !r.values.contains(v)),
            Operator::Exists => v.is_some(),
            _ => true,
        }
    })
}

fn check(p: &Problem, plan: &Plan) -> Result<(), String> {
    let pods: BTreeMap<String, &PodView> = p.pods.iter().map(|x| (x.key(), x)).collect();
    // Exactly once.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for k in plan
        .node_claims
        .iter()
        .flat_map(|c| c.pods.iter())
        .chain(plan.existing_nodes.iter().flat_map(|e| e.pods.iter()))
        .chain(plan.unschedulable.iter().map(|u| &u.pod))
    {
        *seen.entry(k.clone()).or_default() += 1;
    }
    for k in pods.keys() {
        if seen.get(k) != Some(&1) {
            return Err(format!("pod {k} appears {:?} times", seen.get(k)));
        }
    }
    if seen.len() != pods.len() {
        return Err("unknown pod in plan".into());
    }
    let mut total = 0.0;
    let mut pool_cpu: BTreeMap<&str, i64> = BTreeMap::new();
    let mut pool_nodes: BTreeMap<&str, i64> = BTreeMap::new();
    let mut zone_sp: BTreeMap<String, i64> = BTreeMap::new();
    for c in &plan.node_claims {
        let it = p
            .instance_types
            .iter()
            .find(|i| i.name == c.instance_type)
            .ok_or("unknown type")?;
        let off = it
            .offerings
            .iter()
            .find(|o| o.zone == c.zone && o.capacity_type == c.capacity_type)
            .ok_or("unknown offering")?;
        if !off.available || off.price != c.price {
            return Err(format!(
                "{}: offering unavailable or price mismatch",
                c.name
            ));
        }
        total += c.price;
        let np = p
            .node_pools
            .iter()
            .find(|n| n.name == c.node_pool)
            .ok_or("unknown pool")?;
        let mut l = it.labels.clone();
        l.extend(np.labels.clone());
        l.insert("topology.kubernetes.io/zone".into(), c.zone.clone());
        l.insert("karpenter.sh/capacity-type".into(), c.capacity_type.clone());
        l.insert("node.kubernetes.io/instance-type".into(), it.name.clone());
        l.insert("karpenter.sh/nodepool".into(), np.name.clone());
        if !pool_reqs_ok(np, &l) {
            return Err(format!("{}: pool requirements violated", c.name));
        }
        let mut used = Resources::new();
        for d in &p.daemon_sets {
            if np.taints.iter().all(|t| tolerated(t, &d.pod.tolerations))
                && sel_ok(&d.pod.node_selector, &l)
            {
                used.add(&d.pod.requests);
                used.add_one("pods", 1);
            }
        }
        let mut ports = BTreeSet::new();
        let mut anti = 0;
        for k in &c.pods {
            let pd = pods[k];
            if !sel_ok(&pd.node_selector, &l) {
                return Err(format!("{k} selector violated on {}", c.name));
            }
            if !np.taints.iter().all(|t| tolerated(t, &pd.tolerations)) {
                return Err(format!("{k} does not tolerate {}", c.name));
            }
            used.add(&pd.requests);
            used.add_one("pods", 1);
            for h in &pd.host_ports {
                if !ports.insert(h.port) {
                    return Err(format!("port clash on {}", c.name));
                }
            }
            if pd.labels.get("app").is_some_and(|a| a == "anti") {
                anti += 1;
            }
            if pd.labels.get("app").is_some_and(|a| a == "sp") {
                *zone_sp.entry(c.zone.clone()).or_default() += 1;
            }
        }
        if anti > 1 {
            return Err(format!("anti-affinity violated on {}", c.name));
        }
        if !used.fits_in(&it.allocatable()) {
            return Err(format!(
                "{}: {:?} does not fit {:?}",
                c.name,
                used,
                it.allocatable()
            ));
        }
        *pool_cpu.entry(&np.name).or_default() += it.capacity.get("cpu");
        *pool_nodes.entry(&np.name).or_default() += 1;
    }
    for np in &p.node_pools {
        if let Some(l) = &np.limits {
            if l.0.contains_key("cpu")
                && pool_cpu.get(np.name.as_str()).copied().unwrap_or(0) > l.get("cpu")
            {
                return Err(format!("cpu limit of {} exceeded", np.name));
            }
            if l.0.contains_key("nodes")
                && pool_nodes.get(np.name.as_str()).copied().unwrap_or(0) > l.get("nodes")
            {
                return Err(format!("node limit of {} exceeded", np.name));
            }
        }
    }
    // Running pods count for spread too (kube-scheduler counts every bound pod).
    for n in &p.existing_nodes {
        for pd in &n.pods {
            if pd.labels.get("app").is_some_and(|a| a == "sp")
                && let Some(z) = n.labels.get("topology.kubernetes.io/zone")
            {
                *zone_sp.entry(z.clone()).or_default() += 1;
            }
        }
    }
    for e in &plan.existing_nodes {
        let n = p
            .existing_nodes
            .iter()
            .find(|n| n.name == e.node)
            .ok_or("unknown node")?;
        let mut used = Resources::new();
        let mut ports = BTreeSet::new();
        let mut anti = 0;
        for pd in n.pods.iter().chain(e.pods.iter().map(|k| pods[k])) {
            used.add(&pd.requests);
            used.add_one("pods", 1);
            for h in &pd.host_ports {
                if !ports.insert(h.port) {
                    return Err("port clash on existing".into());
                }
            }
            anti += usize::from(pd.labels.get("app").is_some_and(|a| a == "anti"));
        }
        for k in &e.pods {
            if !sel_ok(&pods[k].node_selector, &n.labels) {
                return Err(format!("{k} selector violated on existing"));
            }
            if pods[k].labels.get("app").is_some_and(|a| a == "sp") {
                *zone_sp
                    .entry(n.labels["topology.kubernetes.io/zone"].clone())
                    .or_default() += 1;
            }
        }
        if anti > 1 {
            return Err("anti-affinity violated on existing node".into());
        }
        if !used.fits_in(&n.allocatable) {
            return Err(format!(
                "existing node overcommitted: {used:?} > {:?}",
                n.allocatable
            ));
        }
    }
    // Spread: domains = zones some pool can launch into (+ existing nodes' zones).
    let mut domains: BTreeSet<String> = p
        .existing_nodes
        .iter()
        .filter_map(|n| n.labels.get("topology.kubernetes.io/zone").cloned())
        .collect();
    for np in &p.node_pools {
        for it in &p.instance_types {
            for o in it.offerings.iter().filter(|o| o.available) {
                let mut l = it.labels.clone();
                l.insert("topology.kubernetes.io/zone".into(), o.zone.clone());
                l.insert("karpenter.sh/capacity-type".into(), o.capacity_type.clone());
                if pool_reqs_ok(np, &l) {
                    domains.insert(o.zone.clone());
                }
            }
        }
    }
    if !zone_sp.is_empty() {
        let counts: Vec<i64> = domains
            .iter()
            .map(|d| zone_sp.get(d).copied().unwrap_or(0))
            .collect();
        let (mx, mn) = (
            counts.iter().max().copied().unwrap_or(0),
            counts.iter().min().copied().unwrap_or(0),
        );
        if mx - mn > 1 {
            return Err(format!(
                "zone spread skew {mx}-{mn} over {domains:?}: {zone_sp:?}"
            ));
        }
    }
    if (total - plan.total_price).abs() > 1e-6 {
        return Err("total price mismatch".into());
    }
    if plan.lower_bound > plan.total_price + 1e-6 {
        return Err(format!(
            "bound {} > cost {}",
            plan.lower_bound, plan.total_price
        ));
    }
    Ok(())
}

/// Baseline written here: each pod alone on the cheapest available offering of a type whose
/// allocatable fits it plus the DaemonSets (single pool, no constraints).
fn baseline(p: &Problem, placed: &[&PodView]) -> f64 {
    placed
        .iter()
        .map(|pd| {
            p.instance_types
                .iter()
                .filter(|it| {
                    let mut need = pd.requests.clone();
                    need.add_one("pods", 1);
                    for d in &p.daemon_sets {
                        need.add(&d.pod.requests);
                        need.add_one("pods", 1);
                    }
                    need.fits_in(&it.allocatable()) && sel_ok(&pd.node_selector, &it.labels)
                })
                .flat_map(|it| it.offerings.iter().filter(|o| o.available).map(|o| o.price))
                .fold(f64::INFINITY, f64::min)
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_valid_deterministic_and_bounded(case in arb_case()) {
        let p = &case.problem;
        let plan = solve(p, &Options::default()).unwrap();
        if let Err(e) = check(p, &plan) {
            return Err(TestCaseError::fail(format!("{e}\nplan: {plan:#?}")));
        }
        let again = solve(p, &Options::default()).unwrap();
        prop_assert_eq!(&plan, &again);
        let greedy = solve(p, &Options { optimise: false, ..Options::default() }).unwrap();
        if let Err(e) = check(p, &greedy) {
            return Err(TestCaseError::fail(format!("greedy: {e}")));
        }
    }

    #[test]
    fn never_worse_than_one_node_per_pod(pods in prop::collection::vec(arb_pod(0), 1..25), its in prop::collection::vec(arb_it(), 1..5)) {
        let mut its = its;
        for (i, it) in its.iter_mut().enumerate() { it.name = format!("{}-{i}", it.name); }
        let pods: Vec<PodView> = pods.into_iter().enumerate().map(|(i, mut p)| {
            p.name = format!("p{i}");
            p.topology_spread.clear(); p.pod_anti_affinity.clear(); p.labels.clear(); p.tolerations.clear();
            p
        }).collect();
        let p = problem(its, vec![NodePoolView { name: "only".into(), ..Default::default() }], pods);
        let plan = solve(&p, &Options::default()).unwrap();
        let placed: Vec<&PodView> = p.pods.iter().filter(|x| plan.node_claims.iter().any(|c| c.pods.contains(&x.key()))).collect();
        let base = baseline(&p, &placed);
        prop_assert!(plan.total_price <= base + 1e-9, "plan {} > baseline {}", plan.total_price, base);
        prop_assert!(plan.lower_bound <= plan.total_price + 1e-9);
    }

    #[test]
    fn quantity_round_trips(v in 0i64..(1i64 << 50), milli in 0i64..10_000_000) {
        prop_assert_eq!(quantity::parse_base(&quantity::format_bytes(v)), Ok(v));
        prop_assert_eq!(quantity::parse_milli(&quantity::format_milli(milli)), Ok(milli));
        prop_assert_eq!(quantity::parse_base(&format!("{v}")), Ok(v));
    }

    #[test]
    fn quantity_parser_never_panics(s in "\\PC{0,12}") {
        let _ = quantity::parse_base(&s);
        let _ = quantity::parse_milli(&s);
    }

    #[test]
    fn intersection_agrees_with_membership(a in prop::collection::btree_set("[a-d]", 0..3), b in prop::collection::btree_set("[a-d]", 0..3), ca in prop::bool::ANY, cb in prop::bool::ANY, v in "[a-e]") {
        let mk = |s: &BTreeSet<String>, c: bool| {
            let vals: Vec<&str> = s.iter().map(String::as_str).collect();
            Requirement::from_selector(&NodeSelectorRequirement::new("k", if c { Operator::NotIn } else { Operator::In }, &vals)).unwrap()
        };
        let (ra, rb) = (mk(&a, ca), mk(&b, cb));
        let i = ra.intersect(&rb);
        prop_assert_eq!(i.has(&v), ra.has(&v) && rb.has(&v));
        prop_assert_eq!(i.matches(None), ra.matches(None) && rb.matches(None));
        prop_assert_eq!(ra.intersect(&rb), rb.intersect(&ra));
    }
}
