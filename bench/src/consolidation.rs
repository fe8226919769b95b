//! `consolidation-1000x10000`: time for one disruption planning call on 1 000 nodes running
//! 10 000 pods (upstream-shape catalog, one NodePool with the default 10 % budget).
//!
//! Each node runs 10 pods (cpu from {100m, 250m, 500m, 1}, memory from {128Mi..1Gi}, 5 % of
//! them with hostname anti-affinity on `app=db`) and is the smallest of 4/8/16/32 vCPU that
//! holds them, one size larger for 40 % of the nodes: the over-sized ones are what
//! consolidation should find. Seeded, so every run sees the same cluster.

use std::time::Instant;

use karpenter_solver::disruption::{
    DisruptionOptions, DisruptionProblem, NodeState, PoolPolicy, plan_with_stats,
};
use karpenter_solver::*;

use crate::workloads::{Rng, upstream_catalog, upstream_pool};

const CPUS: [i64; 4] = [100, 250, 500, 1000];
const MEMS_MI: [i64; 4] = [128, 256, 512, 1024];
const SIZES: [usize; 4] = [3, 7, 15, 31]; // catalog index: cpu = index + 1
const ZONES: [&str; 2] = ["test-zone-1", "test-zone-2"];

/// The seeded cluster.
pub fn cluster(nodes: usize, pods_per_node: usize, seed: u64) -> DisruptionProblem {
    let its = upstream_catalog(400);
    let mut rng = Rng::new(seed);
    let mut existing = Vec::with_capacity(nodes);
    let mut states = Vec::with_capacity(nodes);
    for n in 0..nodes {
        let name = format!("node-{n:04}");
        let mut pods = Vec::with_capacity(pods_per_node);
        let (mut cpu, mut mem) = (0, 0);
        for k in 0..pods_per_node {
            let mut r = Resources::new();
            let c = *rng.pick(&CPUS);
            let m = *rng.pick(&MEMS_MI) << 20;
            r.set("cpu", c);
            r.set("memory", m);
            cpu += c;
            mem += m;
            let db = rng.next().is_multiple_of(20);
            let mut p = PodView {
                namespace: "default".into(),
                name: format!("{name}-pod-{k}"),
                requests: r,
                labels: [("app".to_string(), if db { "db" } else { "web" }.to_string())].into(),
                ..Default::default()
            };
            if db {
                p.pod_anti_affinity.push(PodAffinityTerm {
                    label_selector: Some(LabelSelector::labels(&[("app", "db")])),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                });
            }
            pods.push(p);
        }
        let fits = |i: usize| {
            let a = its[i].allocatable();
            a.get("cpu") >= cpu && a.get("memory") >= mem
        };
        let mut size = SIZES
            .iter()
            .position(|&i| fits(i))
            .unwrap_or(SIZES.len() - 1);
        if rng.next() % 10 < 4 {
            size = (size + 1).min(SIZES.len() - 1);
        }
        let it = &its[SIZES[size]];
        let zone = ZONES[n % ZONES.len()];
        let mut labels = it.labels.clone();
        for (k, v) in [
            ("node.kubernetes.io/instance-type", it.name.as_str()),
            ("topology.kubernetes.io/zone", zone),
            ("karpenter.sh/capacity-type", "on-demand"),
            ("karpenter.sh/nodepool", "default"),
            ("kubernetes.io/hostname", name.as_str()),
        ] {
            labels.insert(k.to_string(), v.to_string());
        }
        let price = it
            .offerings
            .iter()
            .find(|o| o.zone == zone && o.capacity_type == "on-demand")
            .map(|o| o.price);
        existing.push(ExistingNode {
            name: name.clone(),
            labels,
            taints: vec![],
            allocatable: it.allocatable(),
            pods,
        });
        states.push(NodeState {
            name,
            node_pool: "default".into(),
            instance_type: it.name.clone(),
            zone: zone.into(),
            capacity_type: "on-demand".into(),
            price,
            created: 0,
            last_pod_event: None,
            initialized: true,
            disrupting: false,
            drifted: None,
            do_not_disrupt: Default::default(),
            scale_down_blocked: None,
            unhealthy: None,
            do_not_repair: false,
        });
    }
    DisruptionProblem {
        problem: Problem {
            instance_types: its,
            node_pools: vec![upstream_pool()],
            existing_nodes: existing,
            ..Default::default()
        },
        nodes: states,
        policies: vec![PoolPolicy::new("default")],
        ..Default::default()
    }
}

/// Runs the case if `want` selects it; prints one JSON line.
/// Two cases: the default 10 % budget (one multi-node command fills it), and a 100 % budget
/// (the whole loop runs: repeated multi-node searches, then single-node over every candidate).
pub fn run(want: &dyn Fn(&str) -> bool) {
    for (case, budget) in [
        ("consolidation-1000x10000", None),
        ("consolidation-1000x10000-budget100", Some("100%")),
    ] {
        if want(case) {
            one(case, budget);
        }
    }
}

fn one(case: &str, budget: Option<&str>) {
    let mut dp = cluster(1000, 10, 42);
    if let Some(b) = budget {
        dp.policies[0].budgets = vec![karpenter_solver::disruption::Budget::nodes(b)];
    }
    let fleet: f64 = dp.nodes.iter().filter_map(|n| n.price).sum();
    let t = Instant::now();
    let result = plan_with_stats(&dp, &DisruptionOptions::default());
    let secs = t.elapsed().as_secs_f64();
    match result {
        Ok((plan, sims)) => {
            let nodes: usize = plan.commands.iter().map(|c| c.nodes.len()).sum();
            let replacements: usize = plan.commands.iter().map(|c| c.replacements.len()).sum();
            let (valid, validate_secs, validate_max) = validate_all(&dp, &plan.commands);
            println!(
                "{{\"case\":\"{case}\",\"nodes\":1000,\"pods\":10000,\"seconds\":{secs:.4},\"commands\":{},\"nodes_disrupted\":{nodes},\"replacements\":{replacements},\"savings_per_hour\":{:.4},\"fleet_per_hour\":{fleet:.4},\"simulations\":{sims},\"still_valid\":{valid},\"validate_seconds\":{validate_secs:.4},\"validate_max_seconds\":{validate_max:.4}}}",
                plan.commands.len(),
                plan.savings_per_hour(),
            );
        }
        Err(e) => println!("{{\"case\":\"{case}\",\"error\":\"{e}\"}}"),
    }
}

/// Validates every command of a plan as the controller does after its pause on an unchanged
/// cluster (the earlier commands in flight): how many still hold in full, the total time and
/// the longest single validation.
fn validate_all(
    dp: &DisruptionProblem,
    commands: &[karpenter_solver::disruption::Command],
) -> (usize, f64, f64) {
    let mut working = dp.clone();
    let (mut valid, mut total, mut longest) = (0, 0.0f64, 0.0f64);
    for c in commands {
        let t = Instant::now();
        let v = karpenter_solver::disruption::validate_command(
            &working,
            &DisruptionOptions::default(),
            c,
        );
        let secs = t.elapsed().as_secs_f64();
        total += secs;
        longest = longest.max(secs);
        if v.is_ok_and(|v| v.command.is_some_and(|k| k.nodes == c.nodes)) {
            valid += 1;
        }
        for n in &mut working.nodes {
            if c.nodes.contains(&n.name) {
                n.disrupting = true;
            }
        }
    }
    (valid, total, longest)
}
