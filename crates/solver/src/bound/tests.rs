//! Property tests of the bound's internals on small random problems: aggregating identical pods
//! into groups does not change the LP relaxation, column generation finds the same LP value as
//! the LP over every column, and with both (and the cuts) the bound stays below a real plan.

use proptest::prelude::*;

use super::{Settings, bound_with};
use crate::scheduling::prepare::Prepared;
use crate::{
    InstanceType, LabelSelector, NodePoolView, Offering, Options, Overhead, PodAffinityTerm,
    PodView, Problem, Resources,
};

const ZONES: [&str; 3] = ["z1", "z2", "z3"];
const CPUS: [i64; 5] = [100, 500, 1000, 2000, 3000];
const MEMS: [i64; 4] = [128, 1024, 2048, 4096];

fn mib(v: i64) -> i64 {
    v << 20
}

/// An instance type: cpu, memory GiB, max pods, price per offering (one offering per zone,
/// spot or on-demand by parity).
pub(crate) fn arb_it() -> impl Strategy<Value = (i64, i64, i64, Vec<u32>)> {
    (
        1i64..17,
        1i64..33,
        4i64..60,
        prop::collection::vec(1u32..400, 1..4),
    )
}

/// A pod: cpu and memory from small menus (so identical pods are common), and whether it
/// has self anti-affinity on hostname.
pub(crate) fn arb_pod() -> impl Strategy<Value = (usize, usize, bool)> {
    (0..CPUS.len(), 0..MEMS.len(), prop::bool::weighted(0.25))
}

pub(crate) fn problem(its: &[(i64, i64, i64, Vec<u32>)], pods: &[(usize, usize, bool)]) -> Problem {
    let instance_types = its
        .iter()
        .enumerate()
        .map(|(i, (cpu, gib, max_pods, prices))| {
            let mut capacity = Resources::new();
            capacity.set("cpu", cpu * 1000);
            capacity.set("memory", gib << 30);
            capacity.set("pods", *max_pods);
            let mut kube_reserved = Resources::new();
            kube_reserved.set("cpu", 100);
            InstanceType {
                name: format!("it-{i}"),
                capacity,
                overhead: Overhead {
                    kube_reserved,
                    ..Default::default()
                },
                labels: [("kubernetes.io/arch".to_owned(), "amd64".to_owned())].into(),
                offerings: prices
                    .iter()
                    .enumerate()
                    .map(|(z, p)| {
                        let ct = if z % 2 == 0 { "on-demand" } else { "spot" };
                        Offering::new(ZONES[z], ct, f64::from(*p) / 100.0)
                    })
                    .collect(),
            }
        })
        .collect();
    let pods = pods
        .iter()
        .enumerate()
        .map(|(i, (c, m, anti))| {
            let mut requests = Resources::new();
            requests.set("cpu", CPUS[*c]);
            requests.set("memory", mib(MEMS[*m]));
            let mut p = PodView {
                namespace: "default".into(),
                name: format!("p{i}"),
                requests,
                ..Default::default()
            };
            if *anti {
                p.labels = [("app".to_owned(), "a".to_owned())].into();
                p.pod_anti_affinity.push(PodAffinityTerm {
                    label_selector: Some(LabelSelector::labels(&[("app", "a")])),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                });
            }
            p
        })
        .collect();
    Problem {
        instance_types,
        node_pools: vec![NodePoolView {
            name: "default".into(),
            ..Default::default()
        }],
        pods,
        ..Default::default()
    }
}

fn bound(p: &Problem, settings: Settings) -> Result<f64, TestCaseError> {
    let prep = Prepared::new(p).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let all: Vec<usize> = (0..p.pods.len()).collect();
    Ok(bound_with(p, &prep, &all, settings))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0)
}

const LP_ONLY: Settings = Settings {
    per_pod: false,
    colgen_min_cols: usize::MAX,
    cuts: false,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn aggregated_lp_equals_the_per_pod_lp(
        its in prop::collection::vec(arb_it(), 1..5),
        pods in prop::collection::vec(arb_pod(), 1..16),
    ) {
        let p = problem(&its, &pods);
        let grouped = bound(&p, LP_ONLY)?;
        let per_pod = bound(&p, Settings { per_pod: true, ..LP_ONLY })?;
        prop_assert!(close(grouped, per_pod), "grouped {grouped} per pod {per_pod}");
    }

    #[test]
    fn column_generation_finds_the_full_lp(
        its in prop::collection::vec(arb_it(), 1..13),
        pods in prop::collection::vec(arb_pod(), 1..20),
    ) {
        let p = problem(&its, &pods);
        let full = bound(&p, LP_ONLY)?;
        let generated = bound(&p, Settings { colgen_min_cols: 0, ..LP_ONLY })?;
        prop_assert!(close(full, generated), "full {full} generated {generated}");
    }

    #[test]
    fn the_bound_with_column_generation_and_cuts_is_below_a_plan(
        its in prop::collection::vec(arb_it(), 1..9),
        pods in prop::collection::vec(arb_pod(), 1..20),
    ) {
        let p = problem(&its, &pods);
        let plan = crate::solve(&p, &Options { lower_bound: false, ..Options::default() })
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let placed: Vec<usize> = (0..p.pods.len())
            .filter(|i| plan.node_claims.iter().any(|c| c.pods.contains(&p.pods[*i].key())))
            .collect();
        let prep = Prepared::new(&p).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let forced = Settings { colgen_min_cols: 0, ..Settings::default() };
        let b = bound_with(&p, &prep, &placed, forced);
        prop_assert!(b <= plan.total_price + 1e-9, "bound {b} > plan {}", plan.total_price);
    }
}

#[test]
fn identical_pods_make_one_group() {
    // Ten identical 1-cpu pods and two with anti-affinity: two groups.
    let pods: Vec<(usize, usize, bool)> = (0..12).map(|i| (2, 1, i >= 10)).collect();
    let p = problem(&[(4, 8, 30, vec![100])], &pods);
    let Ok(prep) = Prepared::new(&p) else {
        panic!("the problem prepares");
    };
    let all: Vec<usize> = (0..12).collect();
    let (groups, n_anti) = super::group_pods(&p, &prep, &all, false);
    assert_eq!(groups.len(), 2);
    assert_eq!(n_anti, 1);
    let counts: Vec<f64> = groups.iter().map(|g| g.count).collect();
    assert_eq!(counts, [10.0, 2.0]);
}
