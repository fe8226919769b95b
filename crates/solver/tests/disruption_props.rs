//! Property tests of the disruption planner on random fleets and budgets: every command is
//! checked by an independent replay (every pod keeps a place with room, consolidation never
//! raises the price), budgets are never exceeded, protected nodes are never touched.
// The shared builders in `common` unwrap parsed test literals.
#![allow(clippy::unwrap_used)]

mod common;
mod disruption_common;

use std::collections::BTreeSet;

use common::*;
use disruption_common::*;
use karpenter_solver::disruption::*;
use karpenter_solver::*;
use proptest::prelude::*;

const TYPES: [(&str, i64, &str); 4] = [
    ("c2", 2, "4Gi"),
    ("c4", 4, "8Gi"),
    ("c8", 8, "16Gi"),
    ("c16", 16, "32Gi"),
];
const CPUS: [&str; 5] = ["0", "100m", "500m", "1", "1500m"];

#[derive(Debug, Clone)]
struct NodeSpec {
    ty: usize,
    pool: usize,
    spot: bool,
    initialized: bool,
    pods: Vec<(usize, bool)>, // (cpu index, do-not-disrupt)
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        0..TYPES.len(),
        0..2usize,
        any::<bool>(),
        prop::bool::weighted(0.9),
        prop::collection::vec((0..CPUS.len(), prop::bool::weighted(0.1)), 0..6),
    )
        .prop_map(|(ty, pool, spot, initialized, pods)| NodeSpec {
            ty,
            pool,
            spot,
            initialized,
            pods,
        })
}

fn budget() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..4u32).prop_map(|n| n.to_string()),
        (0..=100u32).prop_map(|p| format!("{p}%")),
    ]
}

const POOLS: [&str; 2] = ["a", "b"];

fn build(specs: &[NodeSpec], budgets: &[String]) -> Fleet {
    let its: Vec<InstanceType> = TYPES
        .iter()
        .map(|(n, cpu, mem)| fake_it(n, *cpu, mem, 8))
        .collect();
    let mut f = Fleet::new(its, POOLS.iter().map(|p| pool_p(p)).collect());
    for (i, p) in POOLS.iter().enumerate() {
        f.policy(p).budgets = vec![Budget::nodes(&budgets[i])];
    }
    for (n, s) in specs.iter().enumerate() {
        let name = format!("n{n:02}");
        let (ty, cpu, _) = TYPES[s.ty];
        let mut used = 0;
        let mut pods = Vec::new();
        let mut protected = Vec::new();
        for (k, (c, dnd)) in s.pods.iter().enumerate() {
            let req = res(&[("cpu", CPUS[*c])]);
            // Keep bound pods within the node (pods slots: 8; cpu: allocatable).
            if used + req.get("cpu") > cpu * 1000 - 100 {
                continue;
            }
            used += req.get("cpu");
            let pname = format!("{name}-p{k}");
            if *dnd {
                protected.push(format!("default/{pname}"));
            }
            let mut p = pod(&pname, &[("cpu", CPUS[*c])]);
            p.labels = labels(&[("app", "x")]);
            pods.push(p);
        }
        let ct = if s.spot { "spot" } else { "on-demand" };
        f.node(&name, ty, Z1, ct, POOLS[s.pool], pods).initialized = s.initialized;
        for k in protected {
            f.pod_state(&k).do_not_disrupt = DoNotDisrupt::Always;
        }
    }
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn commands_are_valid_and_within_budget(
        specs in prop::collection::vec(node_spec(), 1..14),
        budgets in prop::collection::vec(budget(), 2),
    ) {
        let f = build(&specs, &budgets);
        let p = f.plan(1000);
        if let Err(e) = check_commands(&f.dp, &p) {
            return Err(TestCaseError::fail(format!("{e}\n{:?}", summary(&p))));
        }
        // Budgets, computed independently: count, or percentage of initialized nodes rounded up.
        let disrupted = disrupted_per_pool(&f.dp, &p);
        for (i, pool) in POOLS.iter().enumerate() {
            let n = specs.iter().filter(|s| s.pool == i && s.initialized).count() as u32;
            let b = &budgets[i];
            let allowed = match b.strip_suffix('%') {
                Some(pct) => (pct.parse::<u32>().expect("pct") * n).div_ceil(100),
                None => b.parse().expect("count"),
            };
            let got = disrupted.get(*pool).copied().unwrap_or(0);
            prop_assert!(got <= allowed, "pool {} disrupted {} > {} ({})", pool, got, allowed, b);
        }
        // Protected or uninitialized nodes are never disrupted.
        let touched: BTreeSet<&String> = p.commands.iter().flat_map(|c| c.nodes.iter()).collect();
        for (n, s) in specs.iter().enumerate() {
            let name = format!("n{n:02}");
            let node = f.dp.problem.existing_nodes.iter().find(|x| x.name == name).expect("node");
            let protected = node.pods.iter().any(|pod| {
                f.dp.pods.iter().any(|st| st.key == pod.key() && st.do_not_disrupt == DoNotDisrupt::Always)
            });
            if protected || !s.initialized {
                prop_assert!(!touched.contains(&name), "{} is protected", name);
            }
        }
        // Deterministic.
        prop_assert_eq!(&p, &f.plan(1000));
        // The planner working on the input itself (the controller's way) plans the same.
        let opts = DisruptionOptions { now: 1000, ..Default::default() };
        prop_assert_eq!(&p, &plan_owned(f.dp.clone(), &opts).expect("plan_owned"));
    }
}

/// The checker itself must catch a bad command (so the property above can fail).
#[test]
fn the_independent_check_rejects_a_pod_left_behind_and_a_price_rise() {
    let specs = vec![
        NodeSpec {
            ty: 0,
            pool: 0,
            spot: false,
            initialized: true,
            pods: vec![(3, false)],
        },
        NodeSpec {
            ty: 3,
            pool: 0,
            spot: false,
            initialized: true,
            pods: vec![(1, false)],
        },
    ];
    let f = build(&specs, &["100%".into(), "100%".into()]);
    let p = f.plan(1000);
    check_commands(&f.dp, &p).expect("planner output is valid");
    assert!(!p.commands.is_empty(), "the c16 node goes");
    let mut bad = p.clone();
    bad.commands[0].placements.clear();
    bad.commands[0].replacements.clear();
    assert!(
        check_commands(&f.dp, &bad).is_err(),
        "pods left without a place"
    );
    let mut bad = p.clone();
    if let Some(r) = bad.commands[0].replacements.first_mut() {
        r.instance_type = "c16".into();
        r.price = f.dp.problem.instance_types[3].offerings[0].price;
        r.zone = f.dp.problem.instance_types[3].offerings[0].zone.clone();
        r.capacity_type = f.dp.problem.instance_types[3].offerings[0]
            .capacity_type
            .clone();
    } else {
        bad.commands[0].placements.clear();
    }
    assert!(
        check_commands(&f.dp, &bad).is_err(),
        "price rise or lost pods"
    );
}
