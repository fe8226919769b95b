//! `cargo run --release -p karpenter-bench [-- FILTER]`: runs every case (or those whose name
//! contains FILTER) and prints one JSON line per case. The `simulate-*` cases run the
//! `karpenter` binary built next to this one (see [`simulate`]).
//! `karpenter-bench --write-simulate-input N DIR` only writes such an input, for profiling.

mod consolidation;
mod simulate;
mod workloads;

use std::collections::BTreeMap;
use std::time::Instant;

use karpenter_solver::{Options, Problem, lower_bound, solve};
use workloads::Rng;

fn run(case: &str, p: &Problem, opts: &Options) {
    let cpu = simulate::cpu_seconds(false);
    let t = Instant::now();
    let plan = match solve(
        p,
        &Options {
            lower_bound: false,
            ..opts.clone()
        },
    ) {
        Ok(plan) => plan,
        Err(e) => {
            println!("{{\"case\":\"{case}\",\"error\":\"{e}\"}}");
            return;
        }
    };
    let secs = t.elapsed().as_secs_f64();
    let cpu_solve = simulate::cpu_seconds(false);
    let index: BTreeMap<String, usize> = p
        .pods
        .iter()
        .enumerate()
        .map(|(i, x)| (x.key(), i))
        .collect();
    let placed: Vec<usize> = plan
        .node_claims
        .iter()
        .flat_map(|c| c.pods.iter())
        .filter_map(|k| index.get(k).copied())
        .collect();
    let tb = Instant::now();
    let bound = lower_bound(p, &placed);
    let bound_secs = tb.elapsed().as_secs_f64();
    let cpu_bound = simulate::cpu_seconds(false);
    let diff = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", b - a),
        _ => "null".to_owned(),
    };
    let (solve_cpu, bound_cpu) = (diff(cpu, cpu_solve), diff(cpu_solve, cpu_bound));
    let ratio = if bound > 0.0 {
        plan.total_price / bound
    } else {
        f64::NAN
    };
    println!(
        "{{\"case\":\"{case}\",\"pods\":{},\"seconds\":{secs:.4},\"pods_per_sec\":{:.0},\"nodes\":{},\"unschedulable\":{},\"cost\":{:.4},\"bound\":{:.4},\"cost_over_bound\":{:.4},\"bound_seconds\":{bound_secs:.3},\"cpu_seconds\":{solve_cpu},\"bound_cpu_seconds\":{bound_cpu},\"optimise\":{}}}",
        p.pods.len(),
        p.pods.len() as f64 / secs.max(1e-9),
        plan.node_claims.len(),
        plan.unschedulable.len(),
        plan.total_price,
        bound,
        ratio,
        opts.optimise,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n, dir] = args.as_slice()
        && flag == "--write-simulate-input"
    {
        let n: usize = n.parse().unwrap_or_else(|_| {
            eprintln!("--write-simulate-input N DIR: N must be a number");
            std::process::exit(2)
        });
        if let Err(e) = simulate::write_input(n, std::path::Path::new(dir)) {
            eprintln!("cannot write {dir}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let filter = args.first().cloned().unwrap_or_default();
    let want = |name: &str| filter.is_empty() || name.contains(&filter);
    let its = workloads::upstream_catalog(400);
    let opts = Options::default();
    for n in [
        1usize, 50, 100, 500, 1000, 2000, 5000, 10000, 20000, 100_000,
    ] {
        let case = format!("diverse-{n}");
        if !want(&case) {
            continue;
        }
        let mut rng = Rng::new(42);
        let p = Problem {
            instance_types: its.clone(),
            node_pools: vec![workloads::upstream_pool()],
            pods: workloads::diverse_pods(n, &mut rng),
            ..Default::default()
        };
        run(&case, &p, &opts);
    }
    for (case, ignore) in [
        ("preferences-4000-respect", false),
        ("preferences-4000-ignore", true),
    ] {
        if !want(case) {
            continue;
        }
        let mut rng = Rng::new(42);
        let p = Problem {
            instance_types: its.clone(),
            node_pools: vec![workloads::upstream_pool()],
            pods: workloads::preference_pods(4000, &mut rng),
            ..Default::default()
        };
        run(
            case,
            &p,
            &Options {
                ignore_preferences: ignore,
                ..opts.clone()
            },
        );
    }
    for scale in [5usize, 50, 200] {
        for optimise in [false, true] {
            let case = format!("mixed-{scale}{}", if optimise { "" } else { "-greedy" });
            if !want(&case) {
                continue;
            }
            let mut rng = Rng::new(7);
            let p = workloads::mixed(scale, &mut rng);
            run(
                &case,
                &p,
                &Options {
                    optimise,
                    ..opts.clone()
                },
            );
        }
    }
    consolidation::run(&want);
    for n in [20_000usize, 100_000] {
        if want(&format!("simulate-diverse-{n}")) {
            simulate::run(n);
        }
    }
}
